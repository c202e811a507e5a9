/* Harness: raw protocol connections and assertions on answers. */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int it_sock_connect(it_sock *s, int port)
{
    memset(s, 0, sizeof *s);
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s->fd < 0) {
        fprintf(stderr, "it: socket: %s\n", strerror(errno));
        return -1;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s->fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        fprintf(stderr, "it: connect 127.0.0.1:%d: %s\n", port, strerror(errno));
        close(s->fd);
        s->fd = -1;
        return -1;
    }
    int one = 1;
    if (setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
        fprintf(stderr, "it: TCP_NODELAY: %s\n", strerror(errno));
    return 0;
}

void it_sock_close(it_sock *s)
{
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    free(s->buf);
    s->buf = NULL;
    s->len = s->cap = 0;
}

int it_sock_send(it_sock *s, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = send(s->fd, c, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

int it_sock_send_str(it_sock *s, const char *str)
{
    return it_sock_send(s, str, strlen(str));
}

/* Takes one complete line out of the buffer, or NULL. */
static char *take_line(it_sock *s)
{
    char *nl = s->len ? memchr(s->buf, '\n', s->len) : NULL;
    if (!nl)
        return NULL;
    size_t n = (size_t)(nl - s->buf);
    char *line = malloc(n + 1);
    if (!line)
        return NULL;
    memcpy(line, s->buf, n);
    line[n] = '\0';
    memmove(s->buf, nl + 1, s->len - n - 1);
    s->len -= n + 1;
    return line;
}

enum it_read it_sock_read_json(it_sock *s, int timeout_ms, json_t **out)
{
    *out = NULL;
    int64_t deadline = it_now_ms() + timeout_ms;
    char *line;
    while (!(line = take_line(s))) {
        if (s->cap - s->len < 4096) {
            size_t ncap = s->cap ? s->cap * 2 : 65536;
            char *nb = realloc(s->buf, ncap);
            if (!nb)
                return IT_READ_ERROR;
            s->buf = nb;
            s->cap = ncap;
        }
        int left = (int)(deadline - it_now_ms());
        if (left <= 0)
            return IT_READ_TIMEOUT;
        struct pollfd pfd = {.fd = s->fd, .events = POLLIN};
        int pr = poll(&pfd, 1, left);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr < 0)
            return IT_READ_ERROR;
        if (pr == 0)
            return IT_READ_TIMEOUT;
        ssize_t r = recv(s->fd, s->buf + s->len, s->cap - s->len, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == ECONNRESET)
            return IT_READ_EOF;
        if (r < 0)
            return IT_READ_ERROR;
        if (r == 0)
            return IT_READ_EOF;
        s->len += (size_t)r;
    }
    json_error_t jerr;
    json_t *j = json_loads(line, 0, &jerr);
    if (!j || !json_is_object(j)) {
        fprintf(stderr, "it: the server sent a line that is not a JSON object: %.300s\n", line);
        json_decref(j);
        free(line);
        return IT_READ_BADJSON;
    }
    free(line);
    *out = j;
    return IT_READ_OK;
}

static const char *read_result_name(enum it_read r)
{
    switch (r) {
    case IT_READ_OK: return "ok";
    case IT_READ_EOF: return "connection closed";
    case IT_READ_TIMEOUT: return "timeout";
    case IT_READ_ERROR: return "socket error";
    case IT_READ_BADJSON: return "not JSON";
    }
    return "?";
}

/* The last request line, printed when an answer is not the expected one. */
static char last_request[400];

json_t *it_sock_complete(it_sock *s, int64_t id)
{
    char line[96];
    it_line(line, sizeof line, "{\"action\":\"upload_complete\",\"document_id\":%lld}",
            (long long)id);
    return it_sock_req(s, line);
}

json_t *it_sock_req(it_sock *s, const char *line)
{
    size_t n = strlen(line);
    snprintf(last_request, sizeof last_request, "%s", line);
    char *buf = malloc(n + 2);
    assert_non_null(buf);
    memcpy(buf, line, n);
    buf[n] = '\n';
    buf[n + 1] = '\0';
    int w = it_sock_send(s, buf, n + 1);
    free(buf);
    if (w != 0)
        fprintf(stderr, "it: sending %.200s: %s\n", line, strerror(errno));
    assert_int_equal(w, 0);
    json_t *reply;
    enum it_read r = it_sock_read_json(s, IT_REPLY_TIMEOUT_MS, &reply);
    if (r != IT_READ_OK)
        fprintf(stderr, "it: no answer to %.200s: %s\n", line, read_result_name(r));
    assert_int_equal(r, IT_READ_OK);
    return reply;
}

int it_sock_send_chunk(it_sock *s, const char *header, const void *payload, size_t n)
{
    snprintf(last_request, sizeof last_request, "%s + %zu bytes", header, n);
    if (it_sock_send_str(s, header) != 0 || it_sock_send_str(s, "\n") != 0)
        return -1;
    if (payload)
        return it_sock_send(s, payload, n);
    char filler[4096];
    memset(filler, 'z', sizeof filler);
    while (n > 0) {
        size_t step = n < sizeof filler ? n : sizeof filler;
        if (it_sock_send(s, filler, step) != 0)
            return -1;
        n -= step;
    }
    return 0;
}

size_t it_upload_stream(int64_t id, const void *data, size_t n, size_t chunk, char **out)
{
    assert_true(chunk > 0);
    size_t cap = n + (n / chunk + 2) * 128, len = 0;
    char *p = malloc(cap);
    if (!p) {
        fprintf(stderr, "it: out of memory for a %zu-byte upload stream\n", cap);
        abort();
    }
    for (size_t off = 0; off < n; off += chunk) {
        size_t part = n - off < chunk ? n - off : chunk;
        it_line(p + len, cap - len,
                "{\"action\":\"chunk\",\"document_id\":%lld,\"offset\":%zu,\"length\":%zu}\n",
                (long long)id, off, part);
        len += strlen(p + len);
        memcpy(p + len, (const char *)data + off, part);
        len += part;
    }
    it_line(p + len, cap - len, "{\"action\":\"upload_complete\",\"document_id\":%lld}\n",
            (long long)id);
    len += strlen(p + len);
    *out = p;
    return len;
}

void it_sock_send_whole_and_complete(it_sock *s, int64_t id, const void *data, size_t n)
{
    char *stream;
    size_t len = it_upload_stream(id, data, n, n > 0 ? n : 1, &stream);
    snprintf(last_request, sizeof last_request, "upload %lld whole (%zu bytes) and complete",
             (long long)id, n);
    int rc = it_sock_send(s, stream, len);
    free(stream);
    assert_int_equal(rc, 0);
}

json_t *it_sock_chunk(it_sock *s, const char *header, const void *payload, size_t n)
{
    int w = it_sock_send_chunk(s, header, payload, n);
    if (w != 0)
        fprintf(stderr, "it: sending %s: %s\n", last_request, strerror(errno));
    assert_int_equal(w, 0);
    json_t *reply;
    enum it_read r = it_sock_read_json(s, IT_REPLY_TIMEOUT_MS, &reply);
    if (r != IT_READ_OK)
        fprintf(stderr, "it: no answer to %s: %s\n", last_request, read_result_name(r));
    assert_int_equal(r, IT_READ_OK);
    return reply;
}

char *it_json_line(const json_t *req)
{
    char *s = json_dumps(req, JSON_COMPACT);
    assert_non_null(s);
    size_t n = strlen(s);
    char *line = realloc(s, n + 2);
    assert_non_null(line);
    line[n] = '\n';
    line[n + 1] = '\0';
    return line;
}

json_t *it_sock_req_json(it_sock *s, json_t *req)
{
    assert_non_null(req);
    char *str = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    assert_non_null(str);
    json_t *reply = it_sock_req(s, str);
    free(str);
    return reply;
}

static void dump(const char *what, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    fprintf(stderr, "it: %s: %s\n", what, s ? s : "(unprintable)");
    free(s);
}

void it_assert_error(json_t *reply, int code, const char *reason)
{
    assert_non_null(reply);
    json_t *st = json_object_get(reply, "status");
    json_t *c = json_object_get(reply, "code");
    json_t *r = json_object_get(reply, "reason");
    bool ok = st && json_is_string(st) && strcmp(json_string_value(st), "error") == 0 &&
              json_is_integer(c) && json_integer_value(c) == code && json_is_string(r) &&
              strcmp(json_string_value(r), reason) == 0;
    if (!ok) {
        fprintf(stderr, "it: request: %.300s\n", last_request);
        fprintf(stderr, "it: expected error %d %s\n", code, reason);
        dump("got", reply);
    }
    assert_true(ok);
    assert_int_equal(it_json_int(reply, "v"), 1);
    assert_true(json_is_string(json_object_get(reply, "message")));
}

void it_assert_ok(json_t *reply, const char *action)
{
    assert_non_null(reply);
    json_t *st = json_object_get(reply, "status");
    json_t *a = json_object_get(reply, "action");
    bool ok = json_is_string(st) && strcmp(json_string_value(st), "ok") == 0 &&
              json_is_string(a) && strcmp(json_string_value(a), action) == 0;
    if (!ok) {
        fprintf(stderr, "it: request: %.300s\n", last_request);
        fprintf(stderr, "it: expected an ok answer to %s\n", action);
        dump("got", reply);
    }
    assert_true(ok);
    assert_int_equal(it_json_int(reply, "v"), 1);
}

void it_assert_open(it_sock *s)
{
    /* An unknown action needs no authentication and no upload, so its
     * answer proves only that the connection reads control lines in step:
     * stray bytes left over from an earlier request would be answered
     * first, as malformed JSON. */
    json_t *reply = it_sock_req(s, "{\"action\":\"it_probe\",\"v\":1}");
    it_assert_error(reply, 400, "unknown_action");
    json_decref(reply);
}

void it_assert_closed(it_sock *s)
{
    json_t *extra = NULL;
    enum it_read r = it_sock_read_json(s, IT_REPLY_TIMEOUT_MS, &extra);
    if (r == IT_READ_OK)
        dump("expected the connection closed, but the server sent", extra);
    else if (r != IT_READ_EOF)
        fprintf(stderr, "it: expected the connection closed: %s\n", read_result_name(r));
    json_decref(extra);
    assert_int_equal(r, IT_READ_EOF);
}

int it_sock_send_resume(it_sock *s, int64_t id, const it_user *u)
{
    char line[512];
    if (u)
        it_line(line, sizeof line,
                "{\"action\":\"resume\",\"document_id\":%lld,\"user_id\":%lld,"
                "\"credential\":\"%s\"}\n",
                (long long)id, (long long)u->id, u->credential);
    else
        it_line(line, sizeof line, "{\"action\":\"resume\",\"document_id\":%lld}\n",
                (long long)id);
    return it_sock_send_str(s, line);
}

void it_line(char *buf, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
    assert_true(n > 0 && (size_t)n < cap);
}

int64_t it_sock_upload(it_sock *s, const char *name, int64_t size)
{
    json_t *r = it_sock_req_json(
        s, json_pack("{s:s, s:s, s:I}", "action", "upload", "filename", name, "filesize",
                     (json_int_t)size));
    it_assert_ok(r, "upload");
    int64_t id = it_json_int(r, "document_id");
    assert_int_equal(it_json_int(r, "offset"), 0);
    json_decref(r);
    return id;
}

void it_sock_chunk_ok(it_sock *s, int64_t id, int64_t off, const void *p, size_t n)
{
    char hdr[160];
    it_line(hdr, sizeof hdr,
            "{\"action\":\"chunk\",\"document_id\":%lld,\"offset\":%lld,\"length\":%zu}",
            (long long)id, (long long)off, n);
    json_t *r = it_sock_chunk(s, hdr, p, n);
    const char *ev = json_string_value(json_object_get(r, "event"));
    if (!ev || strcmp(ev, "progress") != 0) {
        fprintf(stderr, "it: request: %.300s\n", last_request);
        dump("expected a progress event, got", r);
    }
    assert_non_null(ev);
    assert_string_equal(ev, "progress");
    assert_int_equal(it_json_int(r, "document_id"), id);
    assert_int_equal(it_json_int(r, "received"), off + (int64_t)n);
    json_decref(r);
}

void it_expect_error_open(it_sock *s, const char *line, int code, const char *reason)
{
    json_t *r = it_sock_req(s, line);
    it_assert_error(r, code, reason);
    json_decref(r);
    it_assert_open(s);
}

void it_expect_chunk_error_open(it_sock *s, const char *hdr, size_t n, int code,
                                const char *reason)
{
    json_t *r = it_sock_chunk(s, hdr, NULL, n);
    it_assert_error(r, code, reason);
    json_decref(r);
    it_assert_open(s);
}

void it_sock_auth(it_sock *s, const it_user *u)
{
    json_t *reply = it_sock_req_json(
        s, json_pack("{s:s, s:i, s:I, s:s, s:i}", "action", "list", "v", 1, "user_id",
                     (json_int_t)u->id, "credential", u->credential, "limit", 1));
    it_assert_ok(reply, "list");
    assert_true(json_is_array(json_object_get(reply, "documents")));
    json_decref(reply);
}

void it_assert_serves(int port, const it_user *u)
{
    it_sock s;
    assert_int_equal(it_sock_connect(&s, port), 0);
    it_sock_auth(&s, u);
    it_sock_close(&s);
}

int64_t it_json_int(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v)) {
        fprintf(stderr, "it: field \"%s\" is not an integer\n", key);
        dump("in", obj);
    }
    assert_true(json_is_integer(v));
    return (int64_t)json_integer_value(v);
}

const char *it_json_str(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_string(v)) {
        fprintf(stderr, "it: field \"%s\" is not a string\n", key);
        dump("in", obj);
    }
    assert_true(json_is_string(v));
    return json_string_value(v);
}

bool it_json_is_null(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (!v) {
        fprintf(stderr, "it: field \"%s\" is missing\n", key);
        dump("in", obj);
    }
    assert_non_null(v);
    return json_is_null(v);
}

cu_conn *it_cu_connect(const it_server *s)
{
    cu_error err;
    memset(&err, 0, sizeof err);
    cu_conn *c = cu_connect("127.0.0.1", s->port_str, IT_REPLY_TIMEOUT_MS, &err);
    if (!c)
        it_print_cu_error("cu_connect", &err);
    assert_non_null(c);
    return c;
}

void it_print_cu_error(const char *what, const cu_error *e)
{
    fprintf(stderr, "it: %s: code %d reason %s message %s expected_offset %lld\n", what,
            e->code, e->reason, e->message, (long long)e->expected_offset);
}

int it_cu_resume(cu_conn *c, const cu_auth *auth, int64_t id, cu_upload_info *info,
                 cu_error *err)
{
    int64_t deadline = it_now_ms() + IT_REPLY_TIMEOUT_MS;
    for (;;) {
        int rc = cu_resume(c, auth, id, info, err);
        if (rc == 0 || err->code != 409 || strcmp(err->reason, "locked") != 0 ||
            it_now_ms() >= deadline)
            return rc;
        it_sleep_ms(50);
    }
}
