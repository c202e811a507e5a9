/* WebSocket framing: client frames however the bytes are cut up, every
 * protocol error with its close code, limits, UTF-8, the handshake value
 * and the server-side encoder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "chunkd/ws.h"

/* ---- building client frames -------------------------------------------- */

typedef struct frame_opts {
    bool fin;
    uint8_t opcode;
    bool unmasked;
    uint8_t rsv;        /* bits 0x70 */
    int len_form;       /* 0: shortest; 16 or 64: force that length field */
} frame_opts;

static const uint8_t MASK[4] = {0x37, 0xfa, 0x21, 0x3d};

/* Appends one frame to out; returns its size. */
static size_t put_frame(uint8_t *out, frame_opts o, const void *payload, size_t len)
{
    size_t n = 0;
    out[n++] = (uint8_t)((o.fin ? 0x80 : 0) | o.rsv | o.opcode);
    uint8_t m = o.unmasked ? 0 : 0x80;
    if (o.len_form == 0 && len < 126) {
        out[n++] = (uint8_t)(m | len);
    } else if (o.len_form == 16 || (o.len_form == 0 && len <= 0xFFFF)) {
        out[n++] = m | 126;
        out[n++] = (uint8_t)(len >> 8);
        out[n++] = (uint8_t)len;
    } else {
        out[n++] = m | 127;
        for (int i = 0; i < 8; i++)
            out[n++] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    }
    if (!o.unmasked) {
        memcpy(out + n, MASK, 4);
        n += 4;
    }
    const uint8_t *p = payload;
    for (size_t i = 0; i < len; i++)
        out[n + i] = o.unmasked ? p[i] : (uint8_t)(p[i] ^ MASK[i & 3]);
    return n + len;
}

static size_t text_frame(uint8_t *out, const char *s)
{
    return put_frame(out, (frame_opts){.fin = true, .opcode = WS_OP_TEXT}, s, strlen(s));
}

/* ---- feeding the parser the way conn_web.c does ------------------------ */

#define MAX_EV 64

typedef struct event {
    ws_kind kind;
    uint16_t code;
    char data[256];     /* a message's joined slices, or a control payload */
    size_t len;
    bool done;          /* a message's last slice arrived; always true for others */
} event;

typedef struct stream {
    ws_parser p;
    uint8_t *buf;
    size_t have, cap;
    event ev[MAX_EV];
    size_t nev;
    bool in_msg;        /* joining slices into ev[msg] */
    size_t msg;
    int slices;
} stream;

static void stream_init(stream *s, uint64_t max_text, uint64_t max_binary)
{
    memset(s, 0, sizeof *s);
    ws_init(&s->p, max_text, max_binary);
    s->cap = 1 << 18;
    s->buf = malloc(s->cap);
    assert_non_null(s->buf);
}

static void stream_free(stream *s)
{
    free(s->buf);
}

static event *add_event(stream *s, ws_kind kind)
{
    assert_true(s->nev < MAX_EV);
    event *e = &s->ev[s->nev++];
    memset(e, 0, sizeof *e);
    e->kind = kind;
    return e;
}

static void drain(stream *s)
{
    for (;;) {
        ws_item it;
        size_t used = ws_next(&s->p, (char *)s->buf, s->have, &it);
        assert_true(used <= s->have);
        if (it.kind == WS_ERROR) {
            assert_int_equal(used == 0 || s->p.error != 0, 1);
            if (s->nev == 0 || s->ev[s->nev - 1].kind != WS_ERROR) {
                event *e = add_event(s, WS_ERROR);
                e->code = it.close_code;
                e->done = true;
            }
            return;
        }
        if (it.kind == WS_TEXT || it.kind == WS_BINARY) {
            s->slices++;
            assert_true(it.frame_rest >= it.len);
            assert_int_equal(it.first, !s->in_msg);
            if (it.first)
                s->msg = (size_t)(add_event(s, it.kind) - s->ev);
            event *e = &s->ev[s->msg];
            assert_int_equal(e->kind, it.kind);
            if (e->len + it.len <= sizeof e->data)
                memcpy(e->data + e->len, it.data, it.len);
            e->len += it.len;
            e->done = it.fin;
            s->in_msg = !it.fin;
        } else if (it.kind != WS_NEED_MORE) {
            event *e = add_event(s, it.kind);
            e->code = it.close_code;
            e->done = true;
            assert_true(it.len <= sizeof e->data);
            memcpy(e->data, it.data, it.len);
            e->len = it.len;
        }
        memmove(s->buf, s->buf + used, s->have - used);
        s->have -= used;
        if (it.kind == WS_NEED_MORE && (used == 0 || s->have == 0))
            return;
    }
}

static void feed(stream *s, const void *data, size_t len, size_t piece)
{
    const uint8_t *p = data;
    while (len > 0) {
        size_t n = piece && piece < len ? piece : len;
        assert_true(s->have + n <= s->cap);
        memcpy(s->buf + s->have, p, n);
        s->have += n;
        p += n;
        len -= n;
        drain(s);
    }
}

/* Keeps the finished events: slices of a message cut short by an error
 * come out or not depending on how the bytes were cut. */
static void keep_done(stream *s)
{
    size_t k = 0;
    for (size_t i = 0; i < s->nev; i++)
        if (s->ev[i].done)
            s->ev[k++] = s->ev[i];
    s->nev = k;
}

/* The same bytes fed whole, byte by byte and in 7-byte pieces must give
 * the same finished events. Returns the whole run's events in *out. */
static void feed_all_ways(const void *data, size_t len, uint64_t max_text, uint64_t max_binary,
                          stream *out)
{
    stream_init(out, max_text, max_binary);
    feed(out, data, len, 0);
    keep_done(out);
    static const size_t pieces[] = {1, 7};
    for (size_t k = 0; k < 2; k++) {
        stream t;
        stream_init(&t, max_text, max_binary);
        feed(&t, data, len, pieces[k]);
        keep_done(&t);
        assert_int_equal(t.nev, out->nev);
        for (size_t i = 0; i < t.nev; i++) {
            assert_int_equal(t.ev[i].kind, out->ev[i].kind);
            assert_int_equal(t.ev[i].code, out->ev[i].code);
            assert_int_equal(t.ev[i].len, out->ev[i].len);
            size_t cmp = t.ev[i].len < sizeof t.ev[i].data ? t.ev[i].len : sizeof t.ev[i].data;
            assert_memory_equal(t.ev[i].data, out->ev[i].data, cmp);
        }
        stream_free(&t);
    }
}

static uint16_t error_code_of(const void *data, size_t len)
{
    stream s;
    feed_all_ways(data, len, 1000, 100000, &s);
    assert_true(s.nev > 0);
    event last = s.ev[s.nev - 1];
    stream_free(&s);
    return last.kind == WS_ERROR ? last.code : 0;
}

/* ---- tests ------------------------------------------------------------- */

static void test_rfc_examples(void **state)
{
    (void)state;
    /* RFC 6455 section 5.7: a masked "Hello". */
    static const uint8_t hello[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                    0x7f, 0x9f, 0x4d, 0x51, 0x58};
    stream s;
    feed_all_ways(hello, sizeof hello, 1000, 1000, &s);
    assert_int_equal(s.nev, 1);
    assert_int_equal(s.ev[0].kind, WS_TEXT);
    assert_int_equal(s.ev[0].len, 5);
    assert_memory_equal(s.ev[0].data, "Hello", 5);
    assert_false(ws_in_message(&s.p));
    stream_free(&s);

    char accept[29];
    assert_true(ws_key_valid("dGhlIHNhbXBsZSBub25jZQ==", 24));
    assert_int_equal(ws_accept_value("dGhlIHNhbXBsZSBub25jZQ==", 24, accept), 0);
    assert_string_equal(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static void test_key_validation(void **state)
{
    (void)state;
    assert_false(ws_key_valid("dGhlIHNhbXBsZSBub25jZQ=", 23));
    assert_false(ws_key_valid("dGhlIHNhbXBsZSBub25jZQ==x", 25));
    assert_false(ws_key_valid("dGhlIHNhbXBsZSBub25jZ===", 24));  /* padding too early */
    assert_false(ws_key_valid("dGhlIHNhbXBsZSBub25jZR==", 24));  /* stray low bits */
    assert_false(ws_key_valid("dGhlIHNhbXBsZSBub2 jZQ==", 24));
    assert_true(ws_key_valid("AAAAAAAAAAAAAAAAAAAAAA==", 24));
    assert_true(ws_key_valid("+/+/+/+/+/+/+/+/+/+/+w==", 24));
}

static void test_fragments_with_control_between(void **state)
{
    (void)state;
    uint8_t b[256];
    size_t n = 0;
    n += put_frame(b + n, (frame_opts){.opcode = WS_OP_TEXT}, "{\"act", 5);
    n += put_frame(b + n, (frame_opts){.fin = true, .opcode = WS_OP_PING}, "hi", 2);
    n += put_frame(b + n, (frame_opts){.opcode = WS_OP_CONT}, "", 0);
    n += put_frame(b + n, (frame_opts){.fin = true, .opcode = WS_OP_CONT}, "ion\"}", 5);
    n += put_frame(b + n, (frame_opts){.fin = true, .opcode = WS_OP_PONG}, "", 0);
    stream s;
    feed_all_ways(b, n, 1000, 1000, &s);
    assert_int_equal(s.nev, 3);
    /* The ping comes out when it arrives, inside the text message. */
    assert_int_equal(s.ev[0].kind, WS_TEXT);
    assert_int_equal(s.ev[1].kind, WS_PING);
    assert_int_equal(s.ev[1].len, 2);
    assert_memory_equal(s.ev[1].data, "hi", 2);
    assert_int_equal(s.ev[0].len, 10);
    assert_memory_equal(s.ev[0].data, "{\"action\"}", 10);
    assert_int_equal(s.ev[2].kind, WS_PONG);
    stream_free(&s);
}

static void test_empty_messages(void **state)
{
    (void)state;
    uint8_t b[64];
    size_t n = text_frame(b, "");
    n += put_frame(b + n, (frame_opts){.fin = true, .opcode = WS_OP_BINARY}, "", 0);
    stream s;
    feed_all_ways(b, n, 10, 10, &s);
    assert_int_equal(s.nev, 2);
    assert_int_equal(s.ev[0].kind, WS_TEXT);
    assert_int_equal(s.ev[0].len, 0);
    assert_int_equal(s.ev[1].kind, WS_BINARY);
    assert_false(ws_in_message(&s.p));
    stream_free(&s);
}

static void test_binary_streams_in_slices(void **state)
{
    (void)state;
    enum { LEN = 70000 }; /* needs the 64-bit length form */
    uint8_t *payload = malloc(LEN);
    uint8_t *b = malloc(LEN + 64);
    assert_non_null(payload);
    assert_non_null(b);
    for (size_t i = 0; i < LEN; i++)
        payload[i] = (uint8_t)(i * 7 + 3);
    size_t n = put_frame(b, (frame_opts){.fin = true, .opcode = WS_OP_BINARY}, payload, LEN);
    assert_int_equal(n, LEN + 14);

    stream s;
    stream_init(&s, 100, LEN);
    uint8_t *joined = malloc(LEN);
    assert_non_null(joined);
    size_t got = 0, pos = 0;
    bool saw_first = false, saw_fin = false;
    uint64_t last_rest = UINT64_MAX;
    /* Bytes arrive in pieces of 1000: each slice is what has arrived. */
    while (pos < n) {
        size_t k = n - pos < 1000 ? n - pos : 1000;
        memcpy(s.buf + s.have, b + pos, k);
        s.have += k;
        pos += k;
        for (;;) {
            ws_item it;
            size_t used = ws_next(&s.p, (char *)s.buf, s.have, &it);
            if (it.kind == WS_BINARY) {
                assert_int_equal(it.first, !saw_first);
                saw_first = true;
                assert_true(it.frame_rest < last_rest);
                assert_int_equal(it.frame_rest, LEN - got);
                last_rest = it.frame_rest;
                memcpy(joined + got, it.data, it.len);
                got += it.len;
                saw_fin = it.fin;
                assert_int_equal(ws_in_binary(&s.p), !it.fin);
            } else {
                assert_int_equal(it.kind, WS_NEED_MORE);
            }
            memmove(s.buf, s.buf + used, s.have - used);
            s.have -= used;
            if (it.kind == WS_NEED_MORE && (used == 0 || s.have == 0))
                break;
        }
    }
    assert_true(saw_fin);
    assert_int_equal(got, LEN);
    assert_memory_equal(joined, payload, LEN);
    free(joined);
    free(payload);
    free(b);
    stream_free(&s);
}

static void test_protocol_errors(void **state)
{
    (void)state;
    uint8_t b[512];
    char big[200];
    memset(big, 'x', sizeof big);
    size_t n;

    n = put_frame(b, (frame_opts){.fin = true, .opcode = WS_OP_TEXT, .unmasked = true}, "{}", 2);
    assert_int_equal(error_code_of(b, n), WS_CLOSE_PROTOCOL);
    n = put_frame(b, (frame_opts){.fin = true, .opcode = WS_OP_TEXT, .rsv = 0x40}, "{}", 2);
    assert_int_equal(error_code_of(b, n), WS_CLOSE_PROTOCOL);
    for (uint8_t op = 3; op <= 0xF; op++) {
        if (op >= 8 && op <= 0xA)
            continue;
        n = put_frame(b, (frame_opts){.fin = true, .opcode = op}, "x", 1);
        assert_int_equal(error_code_of(b, n), WS_CLOSE_PROTOCOL);
    }
    n = put_frame(b, (frame_opts){.opcode = WS_OP_PING}, "x", 1); /* fragmented control */
    assert_int_equal(error_code_of(b, n), WS_CLOSE_PROTOCOL);
    n = put_frame(b, (frame_opts){.fin = true, .opcode = WS_OP_PING}, big, 126);
    assert_int_equal(error_code_of(b, n), WS_CLOSE_PROTOCOL);
    n = put_frame(b, (frame_opts){.fin = true, .opcode = WS_OP_CONT}, "x", 1);
    assert_int_equal(error_code_of(b, n), WS_CLOSE_PROTOCOL);
    n = put_frame(b, (frame_opts){.opcode = WS_OP_TEXT}, "x", 1);
    n += text_frame(b + n, "y"); /* a new message inside a fragmented one */
    assert_int_equal(error_code_of(b, n), WS_CLOSE_PROTOCOL);
    /* lengths not in their shortest form */
    n = put_frame(b, (frame_opts){.fin = true, .opcode = WS_OP_BINARY, .len_form = 16}, "ab", 2);
    assert_int_equal(error_code_of(b, n), WS_CLOSE_PROTOCOL);
    n = put_frame(b, (frame_opts){.fin = true, .opcode = WS_OP_BINARY, .len_form = 64}, big, 200);
    assert_int_equal(error_code_of(b, n), WS_CLOSE_PROTOCOL);
    /* a 64-bit length with the top bit set */
    static const uint8_t huge[] = {0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4};
    assert_int_equal(error_code_of(huge, sizeof huge), WS_CLOSE_PROTOCOL);
}

static void test_errors_are_sticky(void **state)
{
    (void)state;
    uint8_t b[64];
    size_t n = put_frame(b, (frame_opts){.fin = true, .opcode = WS_OP_TEXT, .unmasked = true}, "a", 1);
    n += text_frame(b + n, "fine");
    ws_parser p;
    ws_init(&p, 100, 100);
    ws_item it;
    assert_int_equal(ws_next(&p, (char *)b, n, &it), 0);
    assert_int_equal(it.kind, WS_ERROR);
    assert_int_equal(it.close_code, WS_CLOSE_PROTOCOL);
    assert_non_null(p.error_reason);
    assert_int_equal(ws_next(&p, (char *)b + 3, n - 3, &it), 0);
    assert_int_equal(it.kind, WS_ERROR);
}

static void test_size_limits(void **state)
{
    (void)state;
    uint8_t b[256];
    char x[64];
    memset(x, 'x', sizeof x);
    stream s;
    /* Exactly the limit passes; one more byte is 1009, for text and binary. */
    size_t n = put_frame(b, (frame_opts){.fin = true, .opcode = WS_OP_TEXT}, x, 10);
    feed_all_ways(b, n, 10, 5, &s);
    assert_int_equal(s.ev[0].kind, WS_TEXT);
    stream_free(&s);
    n = put_frame(b, (frame_opts){.fin = true, .opcode = WS_OP_TEXT}, x, 11);
    feed_all_ways(b, n, 10, 100, &s);
    assert_int_equal(s.ev[s.nev - 1].kind, WS_ERROR);
    assert_int_equal(s.ev[s.nev - 1].code, WS_CLOSE_TOO_BIG);
    assert_int_equal(s.p.error_opcode, WS_OP_TEXT);
    stream_free(&s);
    /* Fragments add up: 6 + 6 > 10, refused at the second header. */
    n = put_frame(b, (frame_opts){.opcode = WS_OP_TEXT}, x, 6);
    n += put_frame(b + n, (frame_opts){.fin = true, .opcode = WS_OP_CONT}, x, 6);
    feed_all_ways(b, n, 10, 100, &s);
    assert_int_equal(s.ev[s.nev - 1].code, WS_CLOSE_TOO_BIG);
    stream_free(&s);
    n = put_frame(b, (frame_opts){.opcode = WS_OP_BINARY}, x, 30);
    n += put_frame(b + n, (frame_opts){.fin = true, .opcode = WS_OP_CONT}, x, 30);
    feed_all_ways(b, n, 100, 50, &s);
    assert_int_equal(s.ev[s.nev - 1].code, WS_CLOSE_TOO_BIG);
    assert_int_equal(s.p.error_opcode, WS_OP_BINARY);
    stream_free(&s);
    /* Control frames are not data: a 100-byte ping passes a 10-byte limit. */
    n = put_frame(b, (frame_opts){.fin = true, .opcode = WS_OP_PING}, x, 60);
    feed_all_ways(b, n, 10, 10, &s);
    assert_int_equal(s.ev[0].kind, WS_PING);
    stream_free(&s);
}

static void test_utf8(void **state)
{
    (void)state;
    assert_true(ws_utf8_valid("", 0));
    assert_true(ws_utf8_valid("plain", 5));
    assert_true(ws_utf8_valid("\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80", 9)); /* é € 😀 */
    assert_true(ws_utf8_valid("\xED\x9F\xBF\xF4\x8F\xBF\xBF", 7));         /* U+D7FF U+10FFFF */
    assert_false(ws_utf8_valid("\xC0\x80", 2));          /* overlong NUL */
    assert_false(ws_utf8_valid("\xE0\x80\x80", 3));      /* overlong */
    assert_false(ws_utf8_valid("\xED\xA0\x80", 3));      /* surrogate */
    assert_false(ws_utf8_valid("\xF4\x90\x80\x80", 4));  /* past U+10FFFF */
    assert_false(ws_utf8_valid("\xF5\x80\x80\x80", 4));
    assert_false(ws_utf8_valid("\x80", 1));
    assert_false(ws_utf8_valid("\xE2\x82", 2));          /* cut short */
    assert_false(ws_utf8_valid("\xFF", 1));

    uint8_t b[64];
    size_t n;
    /* "€" split across two fragments is fine... */
    n = put_frame(b, (frame_opts){.opcode = WS_OP_TEXT}, "\xE2", 1);
    n += put_frame(b + n, (frame_opts){.fin = true, .opcode = WS_OP_CONT}, "\x82\xAC", 2);
    assert_int_equal(error_code_of(b, n), 0);
    /* ...a message that ends inside a character is not */
    n = put_frame(b, (frame_opts){.fin = true, .opcode = WS_OP_TEXT}, "ok\xE2\x82", 4);
    assert_int_equal(error_code_of(b, n), WS_CLOSE_INVALID_DATA);
    n = put_frame(b, (frame_opts){.fin = true, .opcode = WS_OP_TEXT}, "\xFF\xFE", 2);
    assert_int_equal(error_code_of(b, n), WS_CLOSE_INVALID_DATA);
    /* Binary data is never checked. */
    n = put_frame(b, (frame_opts){.fin = true, .opcode = WS_OP_BINARY}, "\xFF\xFE", 2);
    assert_int_equal(error_code_of(b, n), 0);
}

static void test_close_frames(void **state)
{
    (void)state;
    uint8_t b[256];
    size_t n;
    stream s;

    n = put_frame(b, (frame_opts){.fin = true, .opcode = WS_OP_CLOSE}, "\x03\xE8" "bye", 5);
    n += text_frame(b + n, "ignored after close");
    feed_all_ways(b, n, 100, 100, &s);
    assert_int_equal(s.nev, 1);
    assert_int_equal(s.ev[0].kind, WS_CLOSE);
    assert_int_equal(s.ev[0].code, 1000);
    assert_int_equal(s.ev[0].len, 3);
    assert_memory_equal(s.ev[0].data, "bye", 3);
    assert_int_equal(s.have, 0); /* the rest was consumed and dropped */
    stream_free(&s);

    n = put_frame(b, (frame_opts){.fin = true, .opcode = WS_OP_CLOSE}, "", 0);
    feed_all_ways(b, n, 100, 100, &s);
    assert_int_equal(s.ev[0].code, WS_CLOSE_NO_STATUS);
    stream_free(&s);

    n = put_frame(b, (frame_opts){.fin = true, .opcode = WS_OP_CLOSE}, "\x03", 1);
    assert_int_equal(error_code_of(b, n), WS_CLOSE_PROTOCOL);
    static const uint16_t bad[] = {0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char p[2] = {(char)(bad[i] >> 8), (char)bad[i]};
        n = put_frame(b, (frame_opts){.fin = true, .opcode = WS_OP_CLOSE}, p, 2);
        assert_int_equal(error_code_of(b, n), WS_CLOSE_PROTOCOL);
        assert_false(ws_close_code_valid(bad[i]));
    }
    assert_true(ws_close_code_valid(1000));
    assert_true(ws_close_code_valid(1011));
    assert_true(ws_close_code_valid(3000));
    assert_true(ws_close_code_valid(4999));
    n = put_frame(b, (frame_opts){.fin = true, .opcode = WS_OP_CLOSE}, "\x03\xE8\xFF", 3);
    assert_int_equal(error_code_of(b, n), WS_CLOSE_INVALID_DATA);
}

static void test_encoder(void **state)
{
    (void)state;
    uint8_t h[WS_MAX_HEADER];
    assert_int_equal(ws_frame_header(h, WS_OP_TEXT, 5), 2);
    assert_int_equal(h[0], 0x81);
    assert_int_equal(h[1], 5);
    assert_int_equal(ws_frame_header(h, WS_OP_BINARY, 126), 4);
    assert_int_equal(h[0], 0x82);
    assert_int_equal(h[1], 126);
    assert_int_equal((h[2] << 8) | h[3], 126);
    assert_int_equal(ws_frame_header(h, WS_OP_TEXT, 65536), 10);
    assert_int_equal(h[1], 127);
    assert_int_equal(h[7], 1);
    assert_int_equal(h[8], 0);

    uint8_t f[4 + WS_MAX_CLOSE_REASON];
    size_t n = ws_close_frame(f, 1009, "too big");
    assert_int_equal(n, 2 + 2 + 7);
    assert_int_equal(f[0], 0x88);
    assert_int_equal(f[1], 9);
    assert_int_equal((f[2] << 8) | f[3], 1009);
    /* A long reason is cut at 123 bytes, never inside a character. */
    char reason[200];
    memset(reason, 'a', sizeof reason);
    memcpy(reason + 121, "\xE2\x82\xAC", 3);
    reason[sizeof reason - 1] = '\0';
    n = ws_close_frame(f, 1000, reason);
    assert_int_equal(f[1], 2 + 121);
    assert_true(ws_utf8_valid((char *)f + 4, n - 4));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc_examples),
        cmocka_unit_test(test_key_validation),
        cmocka_unit_test(test_fragments_with_control_between),
        cmocka_unit_test(test_empty_messages),
        cmocka_unit_test(test_binary_streams_in_slices),
        cmocka_unit_test(test_protocol_errors),
        cmocka_unit_test(test_errors_are_sticky),
        cmocka_unit_test(test_size_limits),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_close_frames),
        cmocka_unit_test(test_encoder),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
