/* Fuzzes the WebSocket frame parser (src/ws.c) the way conn_web.c drives
 * it, and the HTTP request-head parser (src/http.c) that comes before it.
 *
 * Input: byte 0 picks the mode and limits (bit 7 set: HTTP head; else bits
 * 0-6 scale max_text and max_binary), byte 1 seeds the piece sizes, the
 * rest is the stream. The WebSocket stream is fed three ways (whole, in
 * random pieces, byte by byte) into a buffer whose consumed front is
 * dropped after every call. Each call is checked against the parser's
 * contract, and the three runs must finish the same messages with the same
 * bytes, see the same control frames and end with the same error. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chunkd/http.h"
#include "chunkd/ws.h"
#include "fuzz_util.h"

typedef struct rec {
    ws_kind kind;
    uint16_t code;
    size_t off, len;    /* into trace.bytes */
    bool done;          /* a message's last slice arrived */
} rec;

typedef struct trace {
    rec *r;
    size_t n, cap;
    char *bytes;
    size_t blen, bcap;
} trace;

typedef struct feeder {
    ws_parser p;
    char *buf;
    size_t have, cap;
    bool errored, closed;
    size_t msg;         /* the open message's record */
    bool in_msg;
    trace t;
} feeder;

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    FUZZ_CHECK(q != NULL, "out of memory");
    return q;
}

static rec *trace_add(trace *t, ws_kind kind)
{
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 16;
        t->r = xrealloc(t->r, t->cap * sizeof *t->r);
    }
    rec *r = &t->r[t->n++];
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->off = t->blen;
    return r;
}

static void feeder_init(feeder *f, uint64_t max_text, uint64_t max_binary, size_t total)
{
    memset(f, 0, sizeof *f);
    ws_init(&f->p, max_text, max_binary);
    f->cap = total ? total : 1;
    f->buf = xrealloc(NULL, f->cap);
    fuzz_poison_tail(f->buf, 0, f->cap);
}

static void feeder_free(feeder *f)
{
    fuzz_unpoison(f->buf, f->cap);
    free(f->buf);
    free(f->t.r);
    free(f->t.bytes);
}

static bool close_code_ok(uint16_t c)
{
    return c == WS_CLOSE_PROTOCOL || c == WS_CLOSE_INVALID_DATA || c == WS_CLOSE_TOO_BIG;
}

static void on_data(feeder *f, const ws_item *it, size_t used)
{
    FUZZ_CHECK(it->len <= used, "a slice of %zu from %zu consumed bytes", it->len, used);
    FUZZ_CHECK(it->data + it->len == f->buf + used, "a slice ends where consumption ends");
    FUZZ_CHECK(it->frame_rest >= it->len, "frame_rest %llu below the slice's %zu",
               (unsigned long long)it->frame_rest, it->len);
    FUZZ_CHECK(it->first == !f->in_msg, "first is %d inside=%d", it->first, f->in_msg);
    if (it->first) {
        /* A message's record may follow control records of the one before. */
        rec *r = trace_add(&f->t, it->kind);
        f->msg = (size_t)(r - f->t.r);
        /* Slices of an unfinished message are always the last bytes. */
        f->t.r[f->msg].off = f->t.blen;
    }
    rec *m = &f->t.r[f->msg];
    FUZZ_CHECK(m->kind == it->kind, "a slice of another kind inside a message");
    FUZZ_CHECK(!m->done, "a slice after the message ended");
    /* Control records between slices carry no bytes, so appending stays
     * contiguous. */
    if (it->len) {
        if (f->t.blen + it->len > f->t.bcap) {
            while (f->t.blen + it->len > f->t.bcap)
                f->t.bcap = f->t.bcap ? f->t.bcap * 2 : 256;
            f->t.bytes = xrealloc(f->t.bytes, f->t.bcap);
        }
        FUZZ_CHECK(m->off + m->len == f->t.blen, "message bytes not contiguous");
        memcpy(f->t.bytes + f->t.blen, it->data, it->len);
        f->t.blen += it->len;
        m->len += it->len;
    }
    uint64_t max = it->kind == WS_TEXT ? f->p.max_text : f->p.max_binary;
    FUZZ_CHECK(m->len <= max, "a message of %zu bytes past the limit %llu", m->len,
               (unsigned long long)max);
    f->in_msg = !it->fin;
    if (it->fin) {
        m->done = true;
        if (it->kind == WS_TEXT)
            FUZZ_CHECK(m->len == 0 || ws_utf8_valid(f->t.bytes + m->off, m->len),
                       "a finished text message that is not UTF-8");
        FUZZ_CHECK(!ws_in_message(&f->p), "still in a message after its last slice");
    }
}

static void on_control(feeder *f, const ws_item *it, size_t used)
{
    FUZZ_CHECK(it->len <= WS_MAX_CONTROL, "a control payload of %zu", it->len);
    FUZZ_CHECK(used >= 6 + it->len, "a control frame of %zu bytes from %zu", it->len, used);
    rec *r = trace_add(&f->t, it->kind);
    r->done = true;
    r->code = it->close_code;
    /* Control payloads are compared by length only: their bytes would break
     * the contiguity of a message they interrupt. */
    r->len = it->len;
    r->off = 0;
    if (it->kind == WS_CLOSE) {
        FUZZ_CHECK(it->close_code == WS_CLOSE_NO_STATUS || ws_close_code_valid(it->close_code),
                   "close code %u", it->close_code);
        FUZZ_CHECK(ws_utf8_valid(it->data, it->len), "a close reason that is not UTF-8");
        f->closed = true;
    }
}

static void drain(feeder *f)
{
    for (;;) {
        ws_parser before = f->p;
        ws_item it;
        size_t used = ws_next(&f->p, f->buf, f->have, &it);
        FUZZ_CHECK(used <= f->have, "consumed %zu of %zu", used, f->have);
        if (f->errored) {
            FUZZ_CHECK(it.kind == WS_ERROR && used == 0, "the error did not stick");
            return;
        }
        if (f->closed && it.kind != WS_ERROR) {
            FUZZ_CHECK(it.kind == WS_NEED_MORE && used == f->have,
                       "bytes after the close frame were not dropped");
        }
        switch (it.kind) {
        case WS_NEED_MORE:
            FUZZ_CHECK(it.len == 0, "NEED_MORE with data");
            break;
        case WS_ERROR:
            FUZZ_CHECK(close_code_ok(it.close_code), "error close code %u", it.close_code);
            FUZZ_CHECK(f->p.error == it.close_code && f->p.error_reason, "no sticky error");
            FUZZ_CHECK(before.error == 0, "a second error");
            f->errored = true;
            {
                rec *r = trace_add(&f->t, WS_ERROR);
                r->code = it.close_code;
                r->done = true;
            }
            break;
        case WS_TEXT:
        case WS_BINARY:
            on_data(f, &it, used);
            break;
        case WS_PING:
        case WS_PONG:
        case WS_CLOSE:
            on_control(f, &it, used);
            break;
        }
        fuzz_unpoison(f->buf, f->cap);
        memmove(f->buf, f->buf + used, f->have - used);
        f->have -= used;
        fuzz_poison_tail(f->buf, f->have, f->cap);
        if (it.kind == WS_ERROR || (it.kind == WS_NEED_MORE && (used == 0 || f->have == 0)))
            return;
    }
}

static void feed(feeder *f, const char *data, size_t len)
{
    fuzz_unpoison(f->buf, f->cap);
    memcpy(f->buf + f->have, data, len);
    f->have += len;
    fuzz_poison_tail(f->buf, f->have, f->cap);
    drain(f);
}

static void run(feeder *f, const char *data, size_t len, int piece, uint64_t seed)
{
    fuzz_rng rng;
    fuzz_rng_seed(&rng, seed);
    size_t pos = 0;
    while (pos < len) {
        size_t n = piece == 0 ? len - pos : piece == 1 ? 1 : fuzz_piece_size(&rng, len - pos);
        feed(f, data + pos, n);
        pos += n;
    }
}

/* Finished records only: slices of a message that an error cut short come
 * out or not depending on where the bytes were cut. */
static void same_outcome(const feeder *a, const feeder *b, const char *how)
{
    size_t i = 0, j = 0;
    for (;;) {
        while (i < a->t.n && !a->t.r[i].done)
            i++;
        while (j < b->t.n && !b->t.r[j].done)
            j++;
        if (i == a->t.n || j == b->t.n)
            break;
        const rec *x = &a->t.r[i], *y = &b->t.r[j];
        FUZZ_CHECK(x->kind == y->kind && x->code == y->code && x->len == y->len,
                   "%s: record differs (kind %d/%d code %u/%u len %zu/%zu)", how, x->kind,
                   y->kind, x->code, y->code, x->len, y->len);
        if (x->kind == WS_TEXT || x->kind == WS_BINARY)
            FUZZ_CHECK(x->len == 0 || memcmp(a->t.bytes + x->off, b->t.bytes + y->off, x->len) == 0,
                       "%s: a message has other bytes", how);
        i++;
        j++;
    }
    FUZZ_CHECK(i == a->t.n && j == b->t.n, "%s: a different number of finished records", how);
    FUZZ_CHECK(a->p.error == b->p.error && a->p.closed == b->p.closed,
               "%s: the parser ends in another state", how);
}

/* The head parser: the same answer whole and trickled, and what it fills
 * in holds what conn_web.c relies on. */
static void fuzz_http(const char *data, size_t len)
{
    http_request whole, trickled;
    size_t scanned = 0;
    http_parse r = http_parse_head(data, len, &scanned, &whole);
    http_parse t = HTTP_NEED_MORE;
    scanned = 0;
    size_t n = 0;
    while (n < len && t == HTTP_NEED_MORE) {
        n++;
        t = http_parse_head(data, n, &scanned, &trickled);
    }
    FUZZ_CHECK(r == t, "whole %d, trickled %d", r, t);
    if (r == HTTP_BAD) {
        FUZZ_CHECK(whole.status >= 400 && whole.status < 600 && whole.error, "a bad head's status");
        FUZZ_CHECK(trickled.status == whole.status, "statuses differ: %d %d", trickled.status,
                   whole.status);
        return;
    }
    if (r != HTTP_DONE)
        return;
    FUZZ_CHECK(whole.head_len == trickled.head_len && whole.head_len <= len &&
                   whole.head_len <= HTTP_HEAD_MAX,
               "head length");
    FUZZ_CHECK(whole.path[0] == '/' && !strchr(whole.path, '?'), "path '%s'", whole.path);
    FUZZ_CHECK(strlen(whole.path) < HTTP_PATH_MAX, "path too long");
    FUZZ_CHECK(whole.method[0] != '\0', "no method");
    FUZZ_CHECK(whole.ws_key_len == strlen(whole.ws_key), "key length");
    char rel[HTTP_PATH_MAX + 16];
    if (http_safe_path(whole.path, rel, sizeof rel) == 0) {
        /* No segment empty or starting with '.' ("a..b" is a name, not a
         * way up). */
        FUZZ_CHECK(rel[0] != '/' && rel[0] != '.', "unsafe '%s'", rel);
        FUZZ_CHECK(!strstr(rel, "/.") && !strstr(rel, "//"), "unsafe '%s'", rel);
        FUZZ_CHECK(http_content_type(rel) != NULL, "no content type for '%s'", rel);
    }
    if (ws_key_valid(whole.ws_key, whole.ws_key_len)) {
        char accept[29];
        FUZZ_CHECK(ws_accept_value(whole.ws_key, whole.ws_key_len, accept) == 0 &&
                       strlen(accept) == 28,
                   "accept value");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    const char *stream = (const char *)data + 2;
    size_t len = size - 2;
    if (data[0] & 0x80) {
        fuzz_http(stream, len);
        return 0;
    }
    /* Small limits make "too big" reachable; 0 keeps the server defaults. */
    uint64_t max_text = data[0] == 0 ? 65536 : (uint64_t)(data[0] & 0x7F) * 8;
    uint64_t max_binary = data[0] == 0 ? 1048576 : (uint64_t)(data[0] & 0x7F) * 64;
    uint64_t seed = data[1];

    feeder whole, pieces, bytes;
    feeder_init(&whole, max_text, max_binary, len);
    feeder_init(&pieces, max_text, max_binary, len);
    feeder_init(&bytes, max_text, max_binary, len);
    run(&whole, stream, len, 0, seed);
    run(&pieces, stream, len, 2, seed);
    run(&bytes, stream, len, 1, seed);
    same_outcome(&whole, &pieces, "pieces");
    same_outcome(&whole, &bytes, "byte by byte");
    feeder_free(&whole);
    feeder_free(&pieces);
    feeder_free(&bytes);
    return 0;
}
