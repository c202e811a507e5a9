/* HTTP and WebSocket on a client connection. See conn_web.h.
 *
 * States: HTTP (reading one request head) answers a static file and closes,
 * or switches to WS_OPEN with a 101. WS_OPEN carries the protocol. Our
 * close frame moves it to WS_CLOSING; once that frame is sent, the
 * connection lingers (conn.c) until the peer closes too, unless the peer's
 * close frame came first. */
#include "chunkd/conn_web.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>

#include "chunkd/http.h"
#include "chunkd/log.h"
#include "chunkd/util.h"
#include "chunkd/ws.h"

enum {
    REASON_MAX = 48,
};

typedef enum web_state {
    WEB_HTTP,
    WEB_WS_OPEN,
    WEB_WS_CLOSING,  /* our close frame is queued */
} web_state;

struct conn_web {
    web_state state;
    size_t head_scanned;          /* http_parse_head's search position */
    ws_parser ws;
    uint64_t body_left;           /* chunk bytes announced and not yet received */
    char *text;                   /* a fragmented text message being joined */
    size_t text_len, text_cap;
    bool head_only;               /* the request is a HEAD: answers carry no body */
    int last_error;               /* the current request's error answer, if any */
    char last_reason[REASON_MAX];
};

int conn_web_start(conn *c)
{
    struct conn_web *w = calloc(1, sizeof *w);
    if (!w)
        return -1;
    w->state = WEB_HTTP;
    c->web = w;
    c->transport = CONN_WEB;
    return 0;
}

void conn_web_free(conn *c)
{
    if (!c->web)
        return;
    free(c->web->text);
    free(c->web);
    c->web = NULL;
}

/* ---- HTTP ------------------------------------------------------------- */

static void http_answer(conn *c, int status, const char *type, const char *body, size_t len,
                        const char *extra, bool head_only)
{
    char head[1024];
    int n = http_format_head(head, sizeof head, status, type, len, extra);
    struct iovec answer[2] = {{.iov_base = head, .iov_len = n < 0 ? 0 : (size_t)n},
                              {.iov_base = (void *)body, .iov_len = head_only ? 0 : len}};
    if (n < 0 || conn_out_appendv(c, answer, 2) != 0)
        log_error("event=http_answer_failed peer=%s status=%d", c->peer, status);
    c->sess.close = true;
}

static void http_error(conn *c, int status, const char *why, const char *extra)
{
    char body[160];
    int n = snprintf(body, sizeof body, "%d %s: %s\n", status, http_status_text(status), why);
    size_t len = n < 0 ? 0 : (size_t)n < sizeof body ? (size_t)n : sizeof body - 1;
    log_debug("event=http_refused peer=%s status=%d why=\"%s\"", c->peer, status, why);
    http_answer(c, status, "text/plain; charset=utf-8", body, len, extra, c->web->head_only);
}

static void serve_static(conn *c, const http_request *req, bool head_only)
{
    char rel[HTTP_PATH_MAX + 16];
    http_file f;
    int status = http_safe_path(req->path, rel, sizeof rel) == 0
                     ? http_open_static(c->owner->cfg->web_root, rel, &f)
                     : 404;
    if (status != 200) {
        if (status == 500)
            log_warn("event=web_file_unreadable peer=%s path=\"%s\" error=\"%s\"", c->peer,
                     req->path, strerror(errno));
        http_error(c, status, status == 404 ? "no such file" : "cannot read the file", NULL);
        return;
    }
    char *body = NULL;
    size_t got = 0;
    if (!head_only && f.size > 0) {
        body = malloc((size_t)f.size);
        while (body && got < f.size) {
            ssize_t r = read(f.fd, body + got, (size_t)f.size - got);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break; /* failed, or shrank while being read */
            got += (size_t)r;
        }
    }
    int e = errno;
    if (close(f.fd) != 0)
        log_warn("event=close_failed peer=%s error=\"%s\"", c->peer, strerror(errno));
    if (!head_only && got != f.size) {
        log_warn("event=web_file_unreadable peer=%s path=\"%s\" error=\"%s\"", c->peer,
                 req->path, body ? strerror(e) : "out of memory");
        free(body);
        http_error(c, 500, "cannot read the file", NULL);
        return;
    }
    log_debug("event=http_file peer=%s path=\"%s\" bytes=%llu", c->peer, req->path,
              (unsigned long long)f.size);
    http_answer(c, 200, f.content_type, body, (size_t)f.size, NULL, head_only);
    free(body);
}

/* Returns true when the connection now speaks WebSocket. */
static bool upgrade(conn *c, const http_request *req)
{
    if (strcmp(req->method, "GET") != 0) {
        http_error(c, 405, "the WebSocket endpoint takes GET", "Allow: GET\r\n");
        return false;
    }
    if (!req->upgrade_websocket || !req->connection_upgrade) {
        http_error(c, 426, "this is the WebSocket endpoint",
                   "Upgrade: websocket\r\nConnection: Upgrade\r\n");
        return false;
    }
    if (req->minor < 1 || req->has_body) {
        http_error(c, 400, "a WebSocket upgrade is an HTTP/1.1 GET without a body", NULL);
        return false;
    }
    if (req->ws_version != 13) {
        http_error(c, 426, "WebSocket version 13 only", "Sec-WebSocket-Version: 13\r\n");
        return false;
    }
    char accept[29];
    if (!ws_key_valid(req->ws_key, req->ws_key_len)) {
        http_error(c, 400, "a missing or malformed Sec-WebSocket-Key", NULL);
        return false;
    }
    if (ws_accept_value(req->ws_key, req->ws_key_len, accept) != 0) {
        http_error(c, 500, "cannot compute Sec-WebSocket-Accept", NULL);
        return false;
    }
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                     accept);
    if (n < 0 || (size_t)n >= sizeof head || conn_out_append(c, head, (size_t)n) != 0) {
        c->sess.close = true;
        return false;
    }
    struct conn_web *w = c->web;
    w->state = WEB_WS_OPEN;
    ws_init(&w->ws, (uint64_t)c->owner->cfg->max_line_unauth,
            (uint64_t)c->owner->cfg->max_chunk_size);
    log_debug("event=ws_open peer=%s", c->peer);
    return true;
}

/* Returns the bytes of c->in consumed by a complete head, 0 when more are
 * needed. */
static size_t http_input(conn *c)
{
    http_request req;
    http_parse r = http_parse_head(c->in, c->in_len, &c->web->head_scanned, &req);
    if (r == HTTP_NEED_MORE)
        return 0;
    /* sniff() lets only "GET " and "HEAD " in, one request a connection:
     * the first byte tells, also for a request too bad to parse. */
    bool head_only = c->in[0] == 'H';
    c->web->head_only = head_only;
    if (r == HTTP_BAD) {
        http_error(c, req.status, req.error, NULL);
        return c->in_len;
    }
    if (strcmp(req.path, "/ws") == 0) {
        if (upgrade(c, &req))
            return req.head_len; /* frames may follow the head at once */
    } else if (!head_only && strcmp(req.method, "GET") != 0) {
        http_error(c, 405, "only GET and HEAD", "Allow: GET, HEAD\r\n");
    } else if (req.has_body) {
        http_error(c, 400, "a request body is not accepted", NULL);
    } else {
        serve_static(c, &req, head_only);
    }
    return c->in_len;
}

/* ---- WebSocket: sending ---------------------------------------------- */

static int ws_send(conn *c, uint8_t opcode, const char *data, size_t len)
{
    uint8_t h[WS_MAX_HEADER];
    size_t hl = ws_frame_header(h, opcode, len);
    struct iovec frame[2] = {{.iov_base = h, .iov_len = hl},
                             {.iov_base = (void *)data, .iov_len = len}};
    return conn_out_appendv(c, frame, 2);
}

/* Queues our close frame; nothing is sent after it. */
static void ws_begin_close(conn *c, uint16_t code, const char *reason)
{
    struct conn_web *w = c->web;
    /* Chunks already written are answered before the close frame. */
    upload_drain(&c->owner->env, &c->sess);
    uint8_t frame[4 + WS_MAX_CLOSE_REASON];
    size_t n = ws_close_frame(frame, code, reason);
    if (conn_out_append(c, frame, n) != 0)
        log_error("event=ws_close_not_queued peer=%s", c->peer);
    w->state = WEB_WS_CLOSING;
    c->sess.close = true;
}

/* Remembers the current request's error: if it ends the session, the close
 * frame carries a code that says why. Only error answers are parsed. */
static void note_error(struct conn_web *w, const char *line, size_t len)
{
    static const char marker[] = "\"status\":\"error\"";
    if (!memmem(line, len, marker, sizeof marker - 1))
        return;
    json_t *j = json_loadb(line, len, 0, NULL);
    json_t *code = j ? json_object_get(j, "code") : NULL;
    json_t *reason = j ? json_object_get(j, "reason") : NULL;
    if (json_is_integer(code) && json_is_string(reason)) {
        w->last_error = (int)json_integer_value(code);
        util_strlcpy(w->last_reason, json_string_value(reason), sizeof w->last_reason);
    }
    json_decref(j);
}

int conn_web_emit(conn *c, const char *data, size_t len)
{
    struct conn_web *w = c->web;
    if (w->state != WEB_WS_OPEN)
        return 0; /* after our close frame nothing more may be sent */
    while (len > 0) {
        const char *nl = memchr(data, '\n', len);
        size_t n = nl ? (size_t)(nl - data) : len;
        note_error(w, data, n);
        if (ws_send(c, WS_OP_TEXT, data, n) != 0)
            return -1;
        data += n + (nl ? 1 : 0);
        len -= n + (nl ? 1 : 0);
    }
    return 0;
}

/* The close code for a session that closes after an error answer. */
static uint16_t close_code_for(int code, const char *reason)
{
    if (strcmp(reason, "line_too_long") == 0 || strcmp(reason, "chunk_too_large") == 0)
        return WS_CLOSE_TOO_BIG;
    if (code == 503)
        return WS_CLOSE_GOING_AWAY;
    if (strcmp(reason, "invalid_length") == 0)
        return WS_CLOSE_PROTOCOL;
    return WS_CLOSE_POLICY;
}

/* ---- WebSocket: receiving --------------------------------------------- */

/* A protocol error of the peer's: say so and close. */
static void ws_fail(conn *c, uint16_t code, const char *why)
{
    log_info("event=ws_protocol_error peer=%s close_code=%u why=\"%s\"", c->peer, code, why);
    if (code == WS_CLOSE_TOO_BIG && c->web->ws.error_opcode == WS_OP_TEXT) {
        /* The same answer a too long control line gets on TCP. */
        msg_error err;
        msg_fail(&err, 400, "line_too_long", "a text message exceeds %llu bytes",
                 (unsigned long long)c->web->ws.max_text);
        err.close = true;
        upload_send_error(&c->owner->env, &c->sess, &err);
    }
    ws_begin_close(c, code, why);
}

/* Returns true when a request was finished. */
static bool on_text(conn *c, const ws_item *it)
{
    struct conn_web *w = c->web;
    if (w->body_left > 0) {
        ws_fail(c, WS_CLOSE_PROTOCOL, "a text message before the chunk's bytes were complete");
        return false;
    }
    const char *line = it->data;
    size_t len = it->len;
    if (!(it->first && it->fin)) {
        /* A fragmented message: join it (its size is bounded by the parser). */
        if (w->text_len + it->len > w->text_cap) {
            size_t cap = w->text_cap ? w->text_cap : 4096;
            while (cap < w->text_len + it->len)
                cap *= 2;
            char *p = realloc(w->text, cap);
            if (!p) {
                log_error("event=conn_oom peer=%s", c->peer);
                c->sess.close = true;
                return false;
            }
            w->text = p;
            w->text_cap = cap;
        }
        if (it->len)
            memcpy(w->text + w->text_len, it->data, it->len);
        w->text_len += it->len;
        if (!it->fin)
            return false;
        line = w->text ? w->text : ""; /* fragments all empty: nothing was kept */
        len = w->text_len;
    }
    uint64_t body = upload_on_line(&c->owner->env, &c->sess, line, len);
    free(w->text);
    w->text = NULL;
    w->text_len = w->text_cap = 0;
    w->body_left = body;
    return body == 0;
}

/* Returns true when a chunk's last byte arrived. */
static bool on_binary(conn *c, const ws_item *it)
{
    struct conn_web *w = c->web;
    if (it->first && w->body_left == 0) {
        ws_fail(c, WS_CLOSE_UNSUPPORTED, "a binary message without a chunk announcing it");
        return false;
    }
    if (it->frame_rest > w->body_left) {
        ws_fail(c, WS_CLOSE_PROTOCOL, "binary bytes past the length the chunk announced");
        return false;
    }
    if (it->len == 0)
        return false;
    w->body_left -= it->len;
    upload_on_body(&c->owner->env, &c->sess, it->data, it->len, w->body_left == 0);
    return w->body_left == 0;
}

/* When the session has ended (its request's error answer, 401,
 * chunk_too_large, ..., says why), starts the close frame that says so
 * too. Without an error answer, one could not be queued. True when it
 * did. */
static bool close_if_session_ended(conn *c)
{
    struct conn_web *w = c->web;
    if (!c->sess.close || w->state != WEB_WS_OPEN)
        return false;
    if (w->last_error)
        ws_begin_close(c, close_code_for(w->last_error, w->last_reason), w->last_reason);
    else
        ws_begin_close(c, WS_CLOSE_INTERNAL, "internal_error");
    return true;
}

/* Handles everything complete in c->in from pos on; returns the new pos. */
static size_t ws_input(conn *c, size_t pos, bool *finished)
{
    struct conn_web *w = c->web;
    const chunkd_config *cfg = c->owner->cfg;
    /* A parked request (an upload's credential is checked with its group)
     * may have ended the session since the last call. */
    if (close_if_session_ended(c))
        return pos;
    while (!c->sess.close && !session_parked(&c->sess) && w->state == WEB_WS_OPEN &&
           (conn_web_in_body(c) || !conn_output_full(c))) {
        /* Until it has authenticated, a connection gets the short limit. */
        w->ws.max_text = (uint64_t)(c->sess.user_id ? cfg->max_line : cfg->max_line_unauth);
        ws_item it;
        /* NULL + 0 is undefined: an idle connection's buffer is freed. */
        size_t used = ws_next(&w->ws, c->in ? c->in + pos : NULL, c->in_len - pos, &it);
        pos += used;
        w->last_error = 0;
        switch (it.kind) {
        case WS_NEED_MORE:
            if (used == 0 || pos == c->in_len)
                return pos;
            break;
        case WS_ERROR:
            ws_fail(c, it.close_code, w->ws.error_reason);
            return pos;
        case WS_PING:
            if (ws_send(c, WS_OP_PONG, it.data, it.len) != 0)
                c->sess.close = true;
            break;
        case WS_PONG:
            break;
        case WS_CLOSE:
            /* Echo the peer's code, as RFC 6455 asks; a close without one
             * is answered with a plain normal closure. */
            c->peer_done = true; /* nothing may follow a close frame */
            log_debug("event=ws_peer_close peer=%s code=%u", c->peer, it.close_code);
            ws_begin_close(c, it.close_code == WS_CLOSE_NO_STATUS ? WS_CLOSE_NORMAL : it.close_code,
                           "");
            return pos;
        case WS_TEXT:
            *finished |= on_text(c, &it);
            break;
        case WS_BINARY:
            *finished |= on_binary(c, &it);
            break;
        }
        if (close_if_session_ended(c))
            return pos;
    }
    return pos;
}

bool conn_web_input(conn *c)
{
    struct conn_web *w = c->web;
    size_t pos = 0;
    bool finished = false;
    if (w->state == WEB_HTTP) {
        pos = http_input(c);
        finished = pos > 0;
    }
    if (w->state == WEB_WS_OPEN)
        pos = ws_input(c, pos, &finished);
    else if (c->sess.close)
        pos = c->in_len; /* nothing more will be read from this input */
    if (pos > 0) {
        memmove(c->in, c->in + pos, c->in_len - pos);
        c->in_len -= pos;
    }
    return finished;
}

bool conn_web_in_body(const conn *c)
{
    const struct conn_web *w = c->web;
    return w->state == WEB_WS_OPEN && (w->body_left > 0 || ws_in_binary(&w->ws));
}

bool conn_web_unfinished(const conn *c)
{
    const struct conn_web *w = c->web;
    return w->state == WEB_WS_OPEN && (w->body_left > 0 || ws_in_message(&w->ws));
}

/* ---- closing ---------------------------------------------------------- */

void conn_web_close_after(conn *c, int code, const char *reason)
{
    if (c->web->state == WEB_WS_OPEN)
        ws_begin_close(c, close_code_for(code, reason), reason);
}
