/* A client connection: socket buffers, the framing parser and the session,
 * driven by its worker's epoll loop. conn_close() is the one way a
 * connection ends, so all cleanup happens in one place. */
#ifndef CHUNKD_CONN_H
#define CHUNKD_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "chunkd/conn_limits.h"
#include "chunkd/proto.h"
#include "chunkd/upload.h"

typedef struct conn conn;
struct conn_web;

/* How a connection speaks, decided by its first bytes (see conn_web.h). */
typedef enum conn_transport {
    CONN_SNIFF,   /* nothing decisive received yet */
    CONN_LINES,   /* the line protocol over raw TCP */
    CONN_WEB,     /* HTTP, then possibly WebSocket */
} conn_transport;

/* What a worker lends its connections. */
typedef struct conn_owner {
    int epfd;
    const chunkd_config *cfg;
    upload_env env;
    conn *head;                 /* live connections, for idle checks and shutdown */
    conn *parked, *parked_tail; /* sessions waiting for conn_run_parked, oldest first */
    conn *unsent;               /* answered outside their own event (offset saves):
                                 * conn_send_pending writes them out */
    size_t count;
    conn_limits *limits;        /* shared admission counts; given back on close */
    char *body_buf;             /* owned: the read buffer its connections share
                                 * while a chunk body streams in (conn.c) */
    size_t turn_read_left;      /* bytes this loop turn may still read (conn_begin_turn) */
} conn_owner;

struct conn {
    conn_owner *owner;
    int fd;
    char peer[64];
    char ip[CONN_IP_MAX];       /* the peer's address, as counted in limits */
    proto_parser parser;
    session sess;
    char *in;                   /* received bytes not yet consumed */
    size_t in_len, in_cap;
    bool in_shared;             /* in is owner->body_buf, lent for one read */
    char *out;                  /* answers not yet sent: out[out_off..out_len) */
    size_t out_off, out_len, out_cap;
    uint32_t events;            /* epoll interest currently registered */
    int64_t last_active_ms;
    int64_t item_started_ms;    /* when the unfinished line or body began; 0 if none */
    conn_transport transport;
    struct conn_web *web;       /* owned; NULL unless transport is CONN_WEB */
    bool parked;                /* on owner->parked: input waits for the group run */
    conn *parked_next;
    bool unsent;                /* on owner->unsent */
    conn *unsent_next;
    bool peer_done;             /* end of stream, a read error or a WebSocket close
                                 * frame: nothing more comes */
    bool lingering;             /* answered and shut for writing; reading to drop */
    bool input_waits;           /* requests left in `in` until the client reads its
                                 * answers (conn_output_full) */
    int64_t linger_until_ms;
    conn *prev, *next;
};

/* Whether the answers not yet sent passed max_output_buffer: the next
 * request waits until the client reads them (each transport's request
 * loop asks before it takes one). */
bool conn_output_full(const conn *c);

/* Takes ownership of fd and of the connection's count in owner->limits
 * (both given back on failure). Registers with owner->epfd. */
conn *conn_open(conn_owner *owner, int fd, const char *ip, const char *peer);

/* Starts a loop turn's reading budget. A turn reads at most that much in
 * all, so the requests parked in it (conn_run_parked), the offsets it saves
 * and the syncs it hands over wait for a few MiB of other connections'
 * bytes, not for hundreds of files' worth: 500 uploads of 1 MiB at once
 * otherwise made a turn of up to 256 whole files, and each completion
 * waited for it before its sync even began. */
void conn_begin_turn(conn_owner *owner);

/* Handles the readiness of c. Returns false when c had bytes to read but
 * the turn's budget was spent: they stay in the socket, and the next
 * epoll_wait reports c again (level-triggered). */
bool conn_handle_event(conn *c, uint32_t events);

/* Sends the answers that offset saves produced outside their
 * connection's own events (see offset_saver.h). The loop calls it once a
 * turn, after events and parked requests. */
void conn_send_pending(conn_owner *owner);

/* Runs the requests that connections parked during this loop turn (see
 * upload_run_deferred), then lets each go on with its buffered input; a
 * connection that parks again waits for the next turn, so the next group
 * can gather more. The loop calls it after handling its events, and must
 * not sleep in epoll_wait while owner->parked is set. */
void conn_run_parked(conn_owner *owner);

/* Queues bytes to send (the transports frame into this). -1 when out of
 * memory. */
int conn_out_append(conn *c, const void *data, size_t len);
/* Queues all the pieces or none of them (a frame's header and payload: half
 * a frame would garble the stream). */
int conn_out_appendv(conn *c, const struct iovec *iov, int n);
static inline size_t conn_pending_out(const conn *c) { return c->out_len - c->out_off; }

/* Sends a last error line (goodbye_code and goodbye_reason, e.g. 503
 * "idle_timeout"; none when the reason is NULL) if the socket takes it, then
 * frees everything. */
void conn_close(conn *c, const char *why, int goodbye_code, const char *goodbye_reason);

/* Shutdown: closes (with a 503 shutting_down line) every connection that is
 * not in the middle of a chunk's bytes, a parked request or the save of its
 * chunks' offset, so no accepted chunk is cut short or left unanswered.
 * Returns how many are still busy. */
size_t conn_close_unbusy(conn_owner *owner);

/* Closes connections idle for longer than the configured timeout, and those
 * whose current line or chunk has taken longer than request_timeout_ms (a
 * slow sender cannot hold a connection by trickling bytes). */
void conn_sweep_idle(conn_owner *owner, int64_t now_ms);
/* Frees what the owner holds for its connections, once they are all
 * closed. */
void conn_owner_release(conn_owner *owner);

#endif
