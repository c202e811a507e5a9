/* The tus 1.0.0 protocol (https://tus.io/protocols/resumable-upload) as the
 * load generator speaks it to @tus/server: POST creates the upload with
 * Upload-Length, PATCHes send `chunk` bytes each at Upload-Offset and wait
 * for 204 (HTTP/1.1 has no pipelining a tus client could rely on), and a
 * HEAD at the end checks that the server's offset is the file size. The
 * upload's latency stops at the last PATCH's 204, when a tus client
 * considers the upload done; the HEAD only verifies. Keep-alive throughout. */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "lg.h"

typedef struct http_answer {
    int status;
    int64_t upload_offset;    /* -1 when absent */
    int64_t content_length;   /* 0 when absent */
    bool chunked;             /* Transfer-Encoding: chunked */
    char location[256];
} http_answer;

static int request(lg *g, lg_client *c, const char *method, const char *path, const char *extra)
{
    snprintf(c->last_method, sizeof c->last_method, "%s", method);
    snprintf(c->last_path, sizeof c->last_path, "%s", path);
    return lg_queue_head(c, "%s %s HTTP/1.1\r\nHost: %s:%d\r\nTus-Resumable: 1.0.0\r\n%s\r\n",
                         method, path, g->o.host, g->o.port, extra);
}

static int start(lg *g, lg_client *c)
{
    char extra[256];
    /* "bench.bin" in base64, as a tus client names the file. */
    snprintf(extra, sizeof extra,
             "Upload-Length: %" PRId64 "\r\nUpload-Metadata: filename YmVuY2guYmlu\r\n"
             "Content-Length: 0\r\n",
             c->size);
    c->path[0] = '\0';
    return request(g, c, "POST", g->o.tus_path, extra);
}

static int send_patch(lg *g, lg_client *c)
{
    int64_t len = c->size - c->sent < g->o.chunk ? c->size - c->sent : g->o.chunk;
    char extra[256];
    snprintf(extra, sizeof extra,
             "Upload-Offset: %" PRId64 "\r\nContent-Type: application/offset+octet-stream\r\n"
             "Content-Length: %" PRId64 "\r\n",
             c->sent, len);
    if (request(g, c, "PATCH", c->path, extra) != 0)
        return -1;
    lg_queue_body(c, c->sent, len);
    c->sent += len;
    c->inflight = 1;
    return 0;
}

static int fill(lg *g, lg_client *c)
{
    (void)g;
    (void)c;
    return 0; /* every request waits for the previous answer */
}

static int ping(lg *g, lg_client *c)
{
    return request(g, c, "HEAD", g->done_paths[lg_pick(g, c)], "");
}

/* A decimal number filling v[0, vlen) exactly; -1 if it is anything else. */
static int64_t parse_number(const char *v, size_t vlen)
{
    if (vlen == 0 || vlen > 18)
        return -1;
    int64_t n = 0;
    for (size_t i = 0; i < vlen; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        n = n * 10 + (v[i] - '0');
    }
    return n;
}

/* Parses the head in buf[0, head_len). -1 if it is not HTTP. */
static int parse_head(const char *buf, size_t head_len, http_answer *a)
{
    memset(a, 0, sizeof *a);
    a->upload_offset = -1;
    if (head_len < 13 || strncmp(buf, "HTTP/1.1 ", 9) != 0 || buf[12] != ' ')
        return -1;
    a->status = (int)parse_number(buf + 9, 3);
    if (a->status < 100)
        return -1;
    const char *p = memchr(buf, '\n', head_len);
    const char *end = buf + head_len;
    while (p && p + 1 < end) {
        const char *line = p + 1;
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol)
            break;
        size_t n = (size_t)(eol - line);
        if (n > 0 && line[n - 1] == '\r')
            n--;
        const char *colon = memchr(line, ':', n);
        if (colon) {
            size_t klen = (size_t)(colon - line);
            const char *v = colon + 1;
            while (v < line + n && *v == ' ')
                v++;
            size_t vlen = (size_t)(line + n - v);
            if (klen == 13 && strncasecmp(line, "upload-offset", klen) == 0)
                a->upload_offset = parse_number(v, vlen);
            else if (klen == 14 && strncasecmp(line, "content-length", klen) == 0 &&
                     (a->content_length = parse_number(v, vlen)) < 0)
                return -1;
            else if (klen == 17 && strncasecmp(line, "transfer-encoding", klen) == 0)
                a->chunked = vlen == 7 && strncasecmp(v, "chunked", 7) == 0;
            else if (klen == 8 && strncasecmp(line, "location", klen) == 0 &&
                     vlen < sizeof a->location) {
                memcpy(a->location, v, vlen);
                a->location[vlen] = '\0';
            }
        }
        p = eol;
    }
    return 0;
}

/* The path of an absolute or relative Location; -1 if it does not fit. */
static int location_path(const char *loc, char *out, size_t size)
{
    const char *p = loc;
    const char *scheme = strstr(loc, "://");
    if (scheme) {
        p = strchr(scheme + 3, '/');
        if (!p)
            p = "/";
    }
    int n = snprintf(out, size, "%s", p);
    return n >= 0 && (size_t)n < size ? 0 : -1;
}

static int on_answer(lg *g, lg_client *c, const http_answer *a)
{
    if (c->role == ROLE_IDLE) {
        if (a->status != 200 || a->upload_offset != g->o.size)
            return lg_fail(g, c, "HEAD %s: status %d, Upload-Offset %" PRId64, c->last_path,
                           a->status, a->upload_offset);
        lg_ping_done(g, c);
        return 0;
    }
    if (strcmp(c->last_method, "POST") == 0) {
        if (a->status != 201 || !a->location[0])
            return lg_fail(g, c, "POST: status %d, Location '%s'", a->status, a->location);
        if (location_path(a->location, c->path, sizeof c->path) != 0)
            return lg_fail(g, c, "POST: Location '%s' is too long", a->location);
        if (c->size == 0) {
            lg_mark_latency(g, c);
            return request(g, c, "HEAD", c->path, "");
        }
        return send_patch(g, c);
    }
    if (strcmp(c->last_method, "PATCH") == 0) {
        if (a->status != 204 || a->upload_offset != c->sent)
            return lg_fail(g, c, "PATCH %s: status %d, Upload-Offset %" PRId64 ", expected %" PRId64,
                           c->path, a->status, a->upload_offset, c->sent);
        c->inflight = 0;
        c->acked = c->sent;
        if (c->sent < c->size)
            return send_patch(g, c);
        lg_mark_latency(g, c);
        c->finishing = true;
        return request(g, c, "HEAD", c->path, "");
    }
    if (a->status != 200 || a->upload_offset != c->size)
        return lg_fail(g, c, "HEAD %s: status %d, Upload-Offset %" PRId64 ", expected %" PRId64,
                       c->path, a->status, a->upload_offset, c->size);
    lg_remember(g, 0, c->path);
    lg_upload_done(g, c);
    return 0;
}

/* Length of a complete chunked body at p[0, len) (the chunks and the last,
 * empty one; no trailers), 0 while incomplete, -1 if malformed. */
static long chunked_length(const char *p, size_t len)
{
    size_t pos = 0;
    for (;;) {
        size_t size = 0, digits = 0;
        while (pos < len && digits < 8) {
            char ch = p[pos];
            int d = ch >= '0' && ch <= '9' ? ch - '0'
                    : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                    : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                    : -1;
            if (d < 0)
                break;
            size = size * 16 + (size_t)d;
            digits++;
            pos++;
        }
        if (pos + 2 > len)
            return 0;
        if (digits == 0 || p[pos] != '\r' || p[pos + 1] != '\n')
            return -1;
        pos += 2;
        if (pos + size + 2 > len)
            return 0;
        if (p[pos + size] != '\r' || p[pos + size + 1] != '\n')
            return -1;
        pos += size + 2;
        if (size == 0)
            return (long)pos;
    }
}

static long consume(lg *g, lg_client *c)
{
    char *end = NULL;
    for (size_t i = 0; i + 3 < c->in_len; i++) {
        if (memcmp(c->in + i, "\r\n\r\n", 4) == 0) {
            end = c->in + i + 4;
            break;
        }
    }
    if (!end) {
        if (c->in_len == LG_IN_CAP)
            return lg_fail(g, c, "HTTP answer head larger than %d bytes", LG_IN_CAP);
        return 0;
    }
    size_t head_len = (size_t)(end - c->in);
    http_answer a;
    if (parse_head(c->in, head_len, &a) != 0)
        return lg_fail(g, c, "not an HTTP answer: %.*s", (int)(head_len < 200 ? head_len : 200),
                       c->in);
    /* A HEAD answer announces a length but carries no body. */
    size_t body = 0;
    if (strcmp(c->last_method, "HEAD") == 0) {
        body = 0;
    } else if (a.chunked) {
        long n = chunked_length(c->in + head_len, c->in_len - head_len);
        if (n < 0)
            return lg_fail(g, c, "malformed chunked body in the answer to %s", c->last_method);
        if (n == 0) {
            if (c->in_len == LG_IN_CAP)
                return lg_fail(g, c, "HTTP answer longer than %d bytes", LG_IN_CAP);
            return 0;
        }
        body = (size_t)n;
    } else {
        body = (size_t)a.content_length;
        if (body > LG_IN_CAP - head_len)
            return lg_fail(g, c, "HTTP answer body of %zu bytes", body);
        if (c->in_len < head_len + body)
            return 0;
    }
    if (on_answer(g, c, &a) != 0)
        return -1;
    return (long)(head_len + body);
}

const lg_driver lg_tus_driver = {
    .name = "tus",
    .one_upload_per_connection = false,
    .start = start,
    .fill = fill,
    .consume = consume,
    .ping = ping,
};
