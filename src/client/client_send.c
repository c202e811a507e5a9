/* cu_send_file: streams a file as pipelined chunks.
 *
 * One poll() loop both writes the next chunk and reads progress events, so
 * neither side can stall the other: if we only wrote, the server's answers
 * would fill our receive buffer and then its send buffer, and it would stop
 * reading our chunks. Up to `window` chunks are unacknowledged at a time. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client_io.h"

/* Default window: about 2 MiB of chunks in flight, at least 8 chunks.
 * Chunks are acknowledged once the server saved their offset, so the
 * window must cover that round trip at full speed: 8 chunks of 64 KiB
 * (512 KiB) held a single upload at ~520 MB/s on loopback, 32 (2 MiB) at
 * ~700 (docs/PERFORMANCE.md). A larger window costs the client nothing:
 * after a drop it resumes from the server's offset, reading the file
 * again. */
#define DEFAULT_WINDOW_BYTES (2 * 1024 * 1024)
#define MIN_DEFAULT_WINDOW 8
#define MAX_WINDOW 64
#define MIN_RATE_CHUNK 4096
/* Bounds our buffer whatever max_chunk_size the server announces. */
#define MAX_CHUNK ((int64_t)16 * 1024 * 1024)
#define HEADER_MAX 160

typedef struct sender {
    cu_conn *c;
    int fd;
    cu_upload_info *info;
    cu_progress_fn progress;
    void *arg;
    cu_error *err;

    int window;
    int64_t chunk;
    int64_t next;                /* first byte not yet put in a chunk */
    int64_t acked;               /* last offset the server confirmed */

    /* Ends of the chunks written in full and not yet acknowledged, oldest
     * first, as a ring. */
    int64_t ends[MAX_WINDOW];
    int head, count;

    char *out;                   /* the chunk being written: header + bytes */
    size_t out_len, out_pos;
    int64_t out_end;

    int64_t rate;                /* bytes per second, 0 for no limit */
    int64_t rate_start_ms;
    int64_t rate_bytes;          /* bytes scheduled since rate_start_ms */
    int64_t last_activity_ms;
} sender;

static bool writing(const sender *s)
{
    return s->out_pos < s->out_len;
}

/* How long to wait before the next chunk may start, 0 if now. */
static int64_t rate_wait_ms(const sender *s, int64_t now)
{
    int64_t due;

    if (s->rate <= 0)
        return 0;
    due = s->rate_start_ms + s->rate_bytes * 1000 / s->rate;
    return due > now ? due - now : 0;
}

static int read_exact(sender *s, char *dst, int64_t off, size_t len)
{
    size_t got = 0;

    while (got < len) {
        ssize_t n = pread(s->fd, dst + got, len - got, (off_t)(off + (int64_t)got));

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            cu_err_set(s->err, 0, "file", "read at offset %" PRId64 ": %s",
                       off + (int64_t)got, strerror(errno));
            return -1;
        }
        if (n == 0) {
            cu_err_set(s->err, 0, "file", "file shrank to %" PRId64 " bytes during the upload",
                       off + (int64_t)got);
            return -1;
        }
        got += (size_t)n;
    }
    return 0;
}

/* Builds the next chunk (header line + bytes) in s->out. */
static int prepare_chunk(sender *s)
{
    int64_t len = s->info->filesize - s->next;
    int hlen;

    if (len > s->chunk)
        len = s->chunk;
    hlen = snprintf(s->out, HEADER_MAX,
                    "{\"v\":1,\"action\":\"chunk\",\"document_id\":%" PRId64
                    ",\"offset\":%" PRId64 ",\"length\":%" PRId64 "}\n",
                    s->info->document_id, s->next, len);
    if (hlen < 0 || hlen >= HEADER_MAX) {
        cu_err_set(s->err, 0, "internal", "chunk header does not fit");
        return -1;
    }
    if (read_exact(s, s->out + hlen, s->next, (size_t)len) < 0)
        return -1;
    s->out_len = (size_t)hlen + (size_t)len;
    s->out_pos = 0;
    s->next += len;
    s->out_end = s->next;
    s->rate_bytes += len;
    return 0;
}

static int on_progress(sender *s, const json_t *ev)
{
    json_t *doc = json_object_get(ev, "document_id");
    json_t *rec = json_object_get(ev, "received");
    int64_t received;

    if (!json_is_integer(doc) || json_integer_value(doc) != s->info->document_id ||
        !json_is_integer(rec)) {
        cu_err_set(s->err, 0, "protocol", "progress event for another document or without received");
        return -1;
    }
    received = json_integer_value(rec);
    /* Events come one per chunk, in order; tolerate a server that merges
     * several, but never accept an offset we did not send. */
    while (s->count > 0 && s->ends[s->head] < received) {
        s->head = (s->head + 1) % MAX_WINDOW;
        s->count--;
    }
    if (s->count == 0 || s->ends[s->head] != received) {
        cu_err_set(s->err, 0, "protocol", "progress to offset %" PRId64 " matches no chunk sent",
                   received);
        return -1;
    }
    s->head = (s->head + 1) % MAX_WINDOW;
    s->count--;
    s->acked = received;
    s->info->offset = received;
    if (s->progress != NULL && !s->progress(s->arg, received, s->info->filesize)) {
        cu_err_set(s->err, 0, "cancelled", "upload stopped at offset %" PRId64, received);
        return -1;
    }
    return 0;
}

static int on_line(sender *s, const char *line, size_t len)
{
    json_t *msg;
    const char *event, *status;
    int rc = -1;

    if (cu_parse_reply(line, len, &msg, s->err) < 0)
        return -1;
    event = json_string_value(json_object_get(msg, "event"));
    status = json_string_value(json_object_get(msg, "status"));
    if (event != NULL && strcmp(event, "progress") == 0) {
        rc = on_progress(s, msg);
    } else if (status != NULL && strcmp(status, "error") == 0) {
        cu_err_from_reply(msg, s->err);
        /* The error answers the oldest chunk still unacknowledged. */
        if (s->count > 0) {
            s->head = (s->head + 1) % MAX_WINDOW;
            s->count--;
        }
    } else {
        cu_err_set(s->err, 0, "protocol", "unexpected answer while sending chunks");
    }
    json_decref(msg);
    return rc;
}

/* Reads what the socket has and handles every complete line. */
static int receive(sender *s)
{
    for (;;) {
        char *line;
        size_t len;

        while ((line = cu_io_take_line(s->c, &len)) != NULL) {
            if (on_line(s, line, len) < 0)
                return -1;
        }
        /* All acknowledged: what follows belongs to the next request, and
         * a server closing now has not failed this transfer. */
        if (s->acked >= s->info->filesize)
            return 0;
        switch (cu_io_fill(s->c, s->err)) {
        case CU_IO_OK:
            s->last_activity_ms = cu_now_ms();
            continue;
        case CU_IO_AGAIN:
            return 0;
        case CU_IO_EOF:
            cu_err_set(s->err, 0, "io", "server closed the connection at offset %" PRId64,
                       s->acked);
            return -1;
        default:
            return -1;
        }
    }
}

/* A send failed: the server may have explained why just before closing
 * (503 shutting_down, 401); report that rather than a bare EPIPE. */
static void salvage_reason(sender *s)
{
    cu_error io = *s->err;

    s->c->broken = false;
    if (receive(s) == 0 || s->err->code == 0)
        *s->err = io;
    s->c->broken = true;
}

static int send_more(sender *s)
{
    size_t sent;

    switch (cu_io_send_some(s->c, s->out + s->out_pos, s->out_len - s->out_pos, &sent, s->err)) {
    case CU_IO_OK:
        s->out_pos += sent;
        s->last_activity_ms = cu_now_ms();
        if (!writing(s)) {
            s->ends[(s->head + s->count) % MAX_WINDOW] = s->out_end;
            s->count++;
            s->out_pos = s->out_len = 0;
        }
        return 0;
    case CU_IO_AGAIN:
        return 0;
    default:
        salvage_reason(s);
        return -1;
    }
}

static int run(sender *s)
{
    while (s->acked < s->info->filesize) {
        int64_t now = cu_now_ms();
        int64_t wait = 0;
        int timeout = -1;
        short events = POLLIN, rev = 0;
        int r;

        if (!writing(s) && s->count < s->window && s->next < s->info->filesize) {
            wait = rate_wait_ms(s, now);
            if (wait == 0 && prepare_chunk(s) < 0)
                return -1;
        }
        if (writing(s))
            events |= POLLOUT;
        /* The idle clock runs only while the server owes us something, so a
         * long pause imposed by the rate limit is not taken for a hang. */
        if (!writing(s) && s->count == 0)
            s->last_activity_ms = now;
        if (s->c->timeout_ms > 0) {
            int64_t idle = s->c->timeout_ms - (now - s->last_activity_ms);

            if (idle <= 0) {
                cu_err_set(s->err, 0, "timeout",
                           "no progress from the server for %d ms at offset %" PRId64,
                           s->c->timeout_ms, s->acked);
                return -1;
            }
            timeout = (int)idle;
        }
        if (wait > 0 && (timeout < 0 || wait < timeout))
            timeout = (int)wait;
        r = cu_io_poll(s->c, events, timeout, &rev, s->err);
        if (r < 0)
            return -1;
        if (r == 0)
            continue;
        if ((rev & (POLLIN | POLLHUP | POLLERR)) && receive(s) < 0)
            return -1;
        if ((rev & POLLOUT) && writing(s) && send_more(s) < 0)
            return -1;
    }
    return 0;
}

int cu_send_file(cu_conn *c, int fd, cu_upload_info *info, int window, int64_t rate_limit_bps,
                 cu_progress_fn progress, void *arg, cu_error *err)
{
    cu_error scratch;
    sender s;
    int rc;

    if (err == NULL)
        err = &scratch;
    cu_err_clear(err);
    if (cu_io_check(c, err) < 0)
        return -1;
    if (info == NULL || info->offset < 0 || info->offset > info->filesize) {
        cu_err_set(err, 0, "protocol", "upload offset outside the file");
        return -1;
    }
    if (info->offset == info->filesize)
        return 0;
    memset(&s, 0, sizeof s);
    s.c = c;
    s.fd = fd;
    s.info = info;
    s.progress = progress;
    s.arg = arg;
    s.err = err;
    s.chunk = info->chunk_size > 0 ? info->chunk_size : 65536;
    s.rate = rate_limit_bps > 0 ? rate_limit_bps : 0;
    /* Under a low limit, chunks of about one second's worth keep progress
     * steady instead of bursting a whole chunk every few seconds. */
    if (s.rate > 0 && s.rate < s.chunk)
        s.chunk = s.rate > MIN_RATE_CHUNK ? s.rate : MIN_RATE_CHUNK;
    if (window <= 0) {
        int64_t w = DEFAULT_WINDOW_BYTES / s.chunk;
        window = w < MIN_DEFAULT_WINDOW ? MIN_DEFAULT_WINDOW : w > MAX_WINDOW ? MAX_WINDOW : (int)w;
    }
    s.window = window > MAX_WINDOW ? MAX_WINDOW : window;
    if (info->max_chunk_size > 0 && s.chunk > info->max_chunk_size)
        s.chunk = info->max_chunk_size;
    if (s.chunk > MAX_CHUNK)
        s.chunk = MAX_CHUNK;
    s.next = s.acked = info->offset;
    s.rate_start_ms = s.last_activity_ms = cu_now_ms();
    s.out = malloc(HEADER_MAX + (size_t)s.chunk);
    if (s.out == NULL) {
        cu_err_set(err, 0, "io", "out of memory for a %" PRId64 "-byte chunk", s.chunk);
        return -1;
    }
    rc = run(&s);
    free(s.out);
    info->offset = s.acked;
    /* Answers still owed for chunks in flight, or a half-written chunk, would
     * be read as answers to the next request. */
    if (rc < 0 && (s.count > 0 || s.out_pos > 0))
        c->broken = true;
    return rc;
}
