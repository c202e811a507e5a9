/* The web side of a client connection: the web UI's static files over
 * HTTP, and the chunkd protocol over WebSocket (docs/PROTOCOL.md, section
 * "WebSocket transport").
 *
 * conn.c hands a connection over when its first bytes read "GET " or
 * "HEAD "; from then on conn.c still owns the socket, the buffers and the
 * one close path, and asks this module what to do with the bytes. A text
 * message goes to upload_on_line and binary bytes to upload_on_body exactly
 * as a control line and a chunk's bytes do on the line protocol, so every
 * rule, limit and error is the same on both transports. */
#ifndef CHUNKD_CONN_WEB_H
#define CHUNKD_CONN_WEB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunkd/conn.h"

/* Makes c a web connection (its request head is in c->in). -1 when out of
 * memory. */
int conn_web_start(conn *c);

/* Runs everything complete in c->in through HTTP or WebSocket and drops
 * what was consumed. Returns true when at least one item (a request, a
 * message, a chunk's last byte) was finished. */
bool conn_web_input(conn *c);

/* The session's answer lines, each sent as one text message. */
int conn_web_emit(conn *c, const char *data, size_t len);

/* Chunk bytes are streaming: read in large pieces. */
bool conn_web_in_body(const conn *c);

/* Part of a frame, message or chunk has arrived (the request clock runs). */
bool conn_web_unfinished(const conn *c);

/* After conn_close's goodbye on an open WebSocket: its close frame, with
 * the code that goes with the error. Nothing on plain HTTP. */
void conn_web_close_after(conn *c, int code, const char *reason);

void conn_web_free(conn *c);

#endif
