/* The load generator's shared types: one event loop drives many client
 * connections, each speaking one protocol through a driver (lg_chunkd.c,
 * lg_tus.c, lg_raw.c). The loop owns sockets, buffers, timing and counts;
 * a driver only says what to send next and what an answer means. */
#ifndef BENCH_LG_H
#define BENCH_LG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "lg_payload.h"

enum {
    LG_IN_CAP = 64 * 1024, /* one answer (a line or HTTP head) always fits */
    LG_HDR_CAP = 1024,     /* one request head (a control line, HTTP headers) */
    LG_DONE_KEEP = 1024,   /* completed uploads remembered for idle questions */
    LG_PATH_MAX = 128,     /* a tus upload's URL path */
};

typedef enum lg_role {
    ROLE_UPLOADER, /* runs uploads one after another */
    ROLE_IDLE,     /* held open; asks one question at the end */
} lg_role;

typedef enum lg_phase {
    PH_CONNECTING,
    PH_READY,   /* connected, nothing in flight */
    PH_BUSY,    /* an upload or a ping is in flight */
    PH_CLOSED,
} lg_phase;

typedef struct lg lg;

typedef struct lg_client {
    int fd;
    int id;
    lg_role role;
    lg_phase phase;
    uint32_t events;          /* epoll interest registered now */

    /* Output: a request head, then optionally a body slice of the payload.
     * The driver's fill() queues the next item when both are drained. */
    char hdr[LG_HDR_CAP];
    size_t hdr_len, hdr_off;
    int64_t body_pos;         /* payload offset of the next body byte */
    int64_t body_left;
    bool shut_after;          /* shutdown(SHUT_WR) once the output drains */

    char in[LG_IN_CAP];
    size_t in_len;

    /* The upload in flight. */
    bool assigned;            /* counts as one of the run's uploads */
    int64_t size;
    int64_t t_start_ns;
    int64_t t_sent_ns;        /* its last body byte left; 0 before */
    int64_t sent;             /* bytes queued as chunk bodies */
    int64_t acked;            /* bytes the server confirmed */
    int inflight;             /* chunks sent and not yet confirmed */
    bool finishing;           /* completion requested */
    bool timed;               /* latency already recorded for this upload */

    /* Driver state. */
    bool pinged;              /* idle: its one question has been asked */
    bool authed;              /* chunkd: this connection has authenticated */
    int64_t doc_id;           /* chunkd: the open upload */
    char path[LG_PATH_MAX];   /* tus: the upload's URL path */
    char last_method[8];      /* tus: the request whose answer comes next */
    char last_path[LG_PATH_MAX];
} lg_client;

typedef struct lg_driver {
    const char *name;
    /* The connection closes after each upload (the raw sink reads to EOF). */
    bool one_upload_per_connection;
    /* Queues the first request of a new upload (c->size is set). */
    int (*start)(lg *g, lg_client *c);
    /* Called whenever the output is drained: queue more (a chunk, the
     * completion) or nothing. */
    int (*fill)(lg *g, lg_client *c);
    /* Consumes complete answers in c->in; returns the bytes consumed, or
     * -1 after lg_fail(). Calls lg_upload_done() when the upload is done. */
    long (*consume)(lg *g, lg_client *c);
    /* Queues the closing question of an idle connection. */
    int (*ping)(lg *g, lg_client *c);
} lg_driver;

typedef struct lg_opts {
    const char *proto;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char host[64];            /* Host header */
    int port;
    int64_t size;
    int uploads;
    int concurrency;
    int idle;
    int64_t chunk;
    int window;
    int64_t user_id;
    const char *credential;
    int server_pid;
    int timeout_s;
    int max_connecting;
    const char *tus_path;
    const char *label;
    int64_t warm_mib;         /* memory to warm before the clock starts (lg_warm.h) */
    const char *trace;        /* a line per upload to this file: when it began, sent, ended */
} lg_opts;

struct lg {
    lg_opts o;
    const lg_driver *drv;
    lg_payload pay;
    char sha[65];             /* SHA-256 of one file of o.size bytes */

    /* Uploads that completed, for the idle connections' questions: spread
     * over many uploads, since a server may serialise questions about one
     * (@tus/server locks an upload for each HEAD). */
    int64_t done_ids[LG_DONE_KEEP];
    char done_paths[LG_DONE_KEEP][LG_PATH_MAX];
    int ndone;

    int ok, failed, pings_ok, pings_failed;
    int next_upload;          /* uploads handed out so far */
    int64_t bytes_ok;
    int64_t *lat_ns;          /* latency of each successful upload */
    int nlat;
    int shown_errors;
    FILE *trace;              /* o.trace, open; NULL without */
};

/* Queue helpers for drivers. printf-like; -1 if the head does not fit. */
int lg_queue_head(lg_client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void lg_queue_body(lg_client *c, int64_t pos, int64_t len);

/* The upload on c succeeded; its latency is recorded unless already done
 * with lg_mark_latency(). */
void lg_upload_done(lg *g, lg_client *c);
/* Ends the latency clock of c's upload now (later steps only verify). */
void lg_mark_latency(lg *g, lg_client *c);
/* Remembers a completed upload (document id or URL path) for the idle
 * connections' questions. */
void lg_remember(lg *g, int64_t id, const char *path);
/* The completed upload the idle connection c asks about. */
int lg_pick(const lg *g, const lg_client *c);
/* The idle connection's question was answered. */
void lg_ping_done(lg *g, lg_client *c);
/* The upload (or ping) on c failed: counted, reason shown (first few), and
 * the connection is closed. Returns -1 for the caller to pass on. */
int lg_fail(lg *g, lg_client *c, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

extern const lg_driver lg_chunkd_driver;
extern const lg_driver lg_tus_driver;
extern const lg_driver lg_raw_driver;

#endif
