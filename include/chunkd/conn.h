/* A client connection: socket buffers, the framing parser and the session,
 * driven by its worker's epoll loop. conn_close() is the one way a
 * connection ends, so all cleanup happens in one place. */
#ifndef CHUNKD_CONN_H
#define CHUNKD_CONN_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunkd/proto.h"
#include "chunkd/upload.h"

typedef struct conn conn;

/* What a worker lends its connections. */
typedef struct conn_owner {
    int epfd;
    const chunkd_config *cfg;
    upload_env env;
    conn *head;                 /* live connections, for idle checks and shutdown */
    size_t count;
    atomic_long *open_total;    /* across workers, for max_connections */
} conn_owner;

struct conn {
    conn_owner *owner;
    int fd;
    char peer[64];
    proto_parser parser;
    session sess;
    char *in;                   /* received bytes not yet consumed */
    size_t in_len, in_cap;
    char *out;                  /* answers not yet sent: out[out_off..out_len) */
    size_t out_off, out_len, out_cap;
    uint32_t events;            /* epoll interest currently registered */
    int64_t last_active_ms;
    conn *prev, *next;
};

/* Takes ownership of fd (closed on failure). Registers with owner->epfd. */
conn *conn_open(conn_owner *owner, int fd, const char *peer);

void conn_handle_event(conn *c, uint32_t events);

/* Sends a last error line if the socket takes it, then frees everything.
 * reason (may be NULL) is a protocol reason such as "idle_timeout". */
void conn_close(conn *c, const char *why, const char *goodbye_reason);

/* Shutdown: closes (with a 503 shutting_down line) every connection that is
 * not in the middle of a chunk's bytes, so no accepted chunk is cut short.
 * Returns how many are still busy. */
size_t conn_close_unbusy(conn_owner *owner);

/* Closes connections idle for longer than the configured timeout. */
void conn_sweep_idle(conn_owner *owner, int64_t now_ms);

#endif
