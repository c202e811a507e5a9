/* Framing parser: lines and bodies however the bytes are cut up. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "chunkd/proto.h"

/* A connection's input buffer as conn.c keeps it: bytes are appended as they
 * "arrive" and the consumed prefix is dropped after every item. A line of the
 * form "B<n>" announces a body of n bytes, the way a chunk header does. */
#define MAX_EVENTS 64
#define BUF_CAP 4096

typedef struct event {
    proto_kind kind;
    int body_done;
    size_t len;
    char data[512];
} event;

typedef struct stream {
    proto_parser p;
    char buf[BUF_CAP];
    size_t have;
    event ev[MAX_EVENTS];
    size_t nev;
} stream;

static void stream_init(stream *s, size_t max_line)
{
    memset(s, 0, sizeof *s);
    proto_init(&s->p, max_line);
}

/* Runs the parser over everything buffered; records every item other than
 * NEED_MORE. Returns the kind that stopped the loop. */
static proto_kind stream_drain(stream *s)
{
    for (;;) {
        proto_item it;
        size_t used = proto_next(&s->p, s->buf, s->have, &it);
        assert_true(used <= s->have);
        if (it.kind == PROTO_NEED_MORE || it.kind == PROTO_ERROR) {
            assert_int_equal(used, 0);
            if (it.kind == PROTO_ERROR) {
                assert_true(s->nev < MAX_EVENTS);
                s->ev[s->nev++].kind = PROTO_ERROR;
            }
            return it.kind;
        }
        assert_true(s->nev < MAX_EVENTS);
        event *e = &s->ev[s->nev++];
        e->kind = it.kind;
        e->body_done = it.body_done;
        e->len = it.len;
        assert_true(it.len < sizeof e->data);
        assert_ptr_equal(it.data, s->buf); /* items always start the buffer */
        memcpy(e->data, it.data, it.len);
        e->data[it.len] = '\0';
        if (it.kind == PROTO_LINE && it.len > 1 && it.data[0] == 'B')
            proto_expect_body(&s->p, strtoull(e->data + 1, NULL, 10));
        memmove(s->buf, s->buf + used, s->have - used);
        s->have -= used;
    }
}

static proto_kind stream_feed(stream *s, const char *data, size_t len)
{
    assert_true(s->have + len <= BUF_CAP);
    memcpy(s->buf + s->have, data, len);
    s->have += len;
    return stream_drain(s);
}

static void assert_line(const event *e, const char *text)
{
    assert_int_equal(e->kind, PROTO_LINE);
    assert_int_equal(e->len, strlen(text));
    assert_memory_equal(e->data, text, e->len);
}

static void assert_body(const event *e, const char *text, int done)
{
    assert_int_equal(e->kind, PROTO_BODY);
    assert_int_equal(e->len, strlen(text));
    assert_memory_equal(e->data, text, e->len);
    assert_int_equal(e->body_done, done);
}

static void test_line_one_byte_at_a_time(void **state)
{
    (void)state;
    const char *wire = "{\"action\":\"status\",\"document_id\":42}\r\n";
    size_t n = strlen(wire);
    stream s;
    stream_init(&s, 1024);
    for (size_t i = 0; i + 1 < n; i++) {
        assert_int_equal(stream_feed(&s, wire + i, 1), PROTO_NEED_MORE);
        assert_int_equal(s.nev, 0);
    }
    assert_int_equal(stream_feed(&s, wire + n - 1, 1), PROTO_NEED_MORE);
    assert_int_equal(s.nev, 1);
    assert_line(&s.ev[0], "{\"action\":\"status\",\"document_id\":42}");
    assert_int_equal(s.have, 0);
}

/* Every cut of the stream into two reads gives the same items. */
static void test_every_split_point(void **state)
{
    (void)state;
    const char *wire = "first\r\nB5\nhellosecond\n";
    size_t n = strlen(wire);
    for (size_t cut = 0; cut <= n; cut++) {
        stream s;
        stream_init(&s, 64);
        stream_feed(&s, wire, cut);
        stream_feed(&s, wire + cut, n - cut);
        /* The body may arrive as one slice or two, depending on the cut. */
        size_t k = 0;
        assert_true(s.nev >= 4);
        assert_line(&s.ev[k++], "first");
        assert_line(&s.ev[k++], "B5");
        char body[6] = {0};
        size_t got = 0;
        while (k < s.nev && s.ev[k].kind == PROTO_BODY) {
            memcpy(body + got, s.ev[k].data, s.ev[k].len);
            got += s.ev[k].len;
            assert_int_equal(s.ev[k].body_done, got == 5);
            k++;
        }
        assert_int_equal(got, 5);
        assert_string_equal(body, "hello");
        assert_int_equal(k + 1, s.nev);
        assert_line(&s.ev[k], "second");
        assert_int_equal(s.have, 0);
    }
}

static void test_crlf_and_inner_cr(void **state)
{
    (void)state;
    stream s;
    stream_init(&s, 64);
    stream_feed(&s, "a\r\nb\rc\nd\r\r\n", 11);
    assert_int_equal(s.nev, 3);
    assert_line(&s.ev[0], "a");
    assert_line(&s.ev[1], "b\rc"); /* only a '\r' right before '\n' goes */
    assert_line(&s.ev[2], "d\r");
}

static void test_several_lines_in_one_buffer(void **state)
{
    (void)state;
    stream s;
    stream_init(&s, 64);
    const char *wire = "one\ntwo\r\n\nthree\npart";
    assert_int_equal(stream_feed(&s, wire, strlen(wire)), PROTO_NEED_MORE);
    assert_int_equal(s.nev, 4);
    assert_line(&s.ev[0], "one");
    assert_line(&s.ev[1], "two");
    assert_line(&s.ev[2], "");
    assert_line(&s.ev[3], "three");
    assert_int_equal(s.have, 4); /* "part" waits for its newline */
    stream_feed(&s, "ial\n", 4);
    assert_int_equal(s.nev, 5);
    assert_line(&s.ev[4], "partial");
}

static void test_zero_length_lines(void **state)
{
    (void)state;
    proto_parser p;
    proto_init(&p, 16);
    proto_item it;
    assert_int_equal(proto_next(&p, "\n", 1, &it), 1);
    assert_int_equal(it.kind, PROTO_LINE);
    assert_int_equal(it.len, 0);
    assert_int_equal(proto_next(&p, "\r\n", 2, &it), 2);
    assert_int_equal(it.kind, PROTO_LINE);
    assert_int_equal(it.len, 0);
    assert_int_equal(proto_next(&p, "", 0, &it), 0);
    assert_int_equal(it.kind, PROTO_NEED_MORE);
}

static void test_body_in_slices(void **state)
{
    (void)state;
    stream s;
    stream_init(&s, 64);
    stream_feed(&s, "B10\n", 4);
    assert_int_equal(s.nev, 1);
    assert_true(proto_in_body(&s.p));
    assert_int_equal(s.p.body_left, 10);

    stream_feed(&s, "abc", 3);
    stream_feed(&s, "def", 3);
    assert_int_equal(s.p.body_left, 4);
    stream_feed(&s, "ghij", 4);
    assert_int_equal(s.nev, 4);
    assert_body(&s.ev[1], "abc", 0);
    assert_body(&s.ev[2], "def", 0);
    assert_body(&s.ev[3], "ghij", 1);
    assert_false(proto_in_body(&s.p));

    /* Body bytes that look like a line are still body bytes. */
    stream_feed(&s, "B3\n", 3);
    stream_feed(&s, "x\ny", 3);
    assert_int_equal(s.nev, 6);
    assert_body(&s.ev[5], "x\ny", 1);
}

static void test_body_then_line_same_buffer(void **state)
{
    (void)state;
    stream s;
    stream_init(&s, 64);
    const char *wire = "B5\nhelloNEXT\nB2\nokB0\nlast\n";
    stream_feed(&s, wire, strlen(wire));
    assert_int_equal(s.nev, 7);
    assert_line(&s.ev[0], "B5");
    assert_body(&s.ev[1], "hello", 1);
    assert_line(&s.ev[2], "NEXT");
    assert_line(&s.ev[3], "B2");
    assert_body(&s.ev[4], "ok", 1);
    assert_line(&s.ev[5], "B0"); /* an empty body is no body at all */
    assert_line(&s.ev[6], "last");
    assert_int_equal(s.have, 0);
}

/* The body counter is 64-bit: a body larger than any buffer is sliced. */
static void test_huge_body_counts_down(void **state)
{
    (void)state;
    proto_parser p;
    proto_init(&p, 16);
    proto_expect_body(&p, UINT64_C(1) << 40);
    char buf[100];
    memset(buf, 'z', sizeof buf);
    proto_item it;
    assert_int_equal(proto_next(&p, buf, sizeof buf, &it), 100);
    assert_int_equal(it.kind, PROTO_BODY);
    assert_int_equal(it.len, 100);
    assert_int_equal(it.body_done, 0);
    assert_true(p.body_left == (UINT64_C(1) << 40) - 100);
    assert_int_equal(proto_next(&p, buf, 0, &it), 0);
    assert_int_equal(it.kind, PROTO_NEED_MORE);
}

static void fill_line(char *buf, size_t len)
{
    memset(buf, 'a', len);
    buf[len] = '\n';
}

static void test_line_of_max_length_passes(void **state)
{
    (void)state;
    char buf[40];
    proto_parser p;
    proto_init(&p, 32);
    fill_line(buf, 32);
    proto_item it;
    assert_int_equal(proto_next(&p, buf, 33, &it), 33);
    assert_int_equal(it.kind, PROTO_LINE);
    assert_int_equal(it.len, 32);
    assert_int_equal(p.error, PROTO_OK);
}

static void test_line_over_max_fails_and_sticks(void **state)
{
    (void)state;
    char buf[40];
    proto_parser p;
    proto_init(&p, 32);
    fill_line(buf, 33);
    proto_item it;
    assert_int_equal(proto_next(&p, buf, 34, &it), 0);
    assert_int_equal(it.kind, PROTO_ERROR);
    assert_int_equal(p.error, PROTO_ERR_LINE_TOO_LONG);
    /* Nothing after it is trusted, not even a well-formed line or a body. */
    assert_int_equal(proto_next(&p, "ok\n", 3, &it), 0);
    assert_int_equal(it.kind, PROTO_ERROR);
    proto_expect_body(&p, 4);
    assert_int_equal(proto_next(&p, "abcd", 4, &it), 0);
    assert_int_equal(it.kind, PROTO_ERROR);
    assert_int_equal(p.error, PROTO_ERR_LINE_TOO_LONG);
}

/* A client that never sends '\n' is caught at max_line + 1 bytes, not when
 * its buffer fills. */
static void test_partial_line_detected_early(void **state)
{
    (void)state;
    stream s;
    stream_init(&s, 32);
    for (size_t i = 0; i < 32; i++)
        assert_int_equal(stream_feed(&s, "a", 1), PROTO_NEED_MORE);
    assert_int_equal(stream_feed(&s, "a", 1), PROTO_ERROR);
    assert_int_equal(s.p.error, PROTO_ERR_LINE_TOO_LONG);
    assert_int_equal(stream_feed(&s, "\n", 1), PROTO_ERROR);
    assert_int_equal(s.nev, 2); /* the error, reported again after the newline */
    assert_int_equal(s.ev[0].kind, PROTO_ERROR);
}

/* All at once, the same partial line is refused too. */
static void test_partial_line_in_one_read(void **state)
{
    (void)state;
    char buf[64];
    memset(buf, 'b', sizeof buf);
    proto_parser p;
    proto_init(&p, 32);
    proto_item it;
    assert_int_equal(proto_next(&p, buf, 32, &it), 0);
    assert_int_equal(it.kind, PROTO_NEED_MORE);
    assert_int_equal(proto_next(&p, buf, 64, &it), 0);
    assert_int_equal(it.kind, PROTO_ERROR);
}

/* The newline search resumes where it stopped, but a line found after a
 * partial scan still starts at the buffer's first byte. */
static void test_resumed_scan_finds_whole_line(void **state)
{
    (void)state;
    char buf[16] = "abcdef";
    proto_parser p;
    proto_init(&p, 32);
    proto_item it;
    assert_int_equal(proto_next(&p, buf, 6, &it), 0);
    assert_int_equal(it.kind, PROTO_NEED_MORE);
    memcpy(buf + 6, "g\nh\n", 4);
    assert_int_equal(proto_next(&p, buf, 10, &it), 8);
    assert_int_equal(it.kind, PROTO_LINE);
    assert_int_equal(it.len, 7);
    assert_memory_equal(it.data, "abcdefg", 7);
    assert_int_equal(proto_next(&p, buf + 8, 2, &it), 2);
    assert_int_equal(it.kind, PROTO_LINE);
    assert_int_equal(it.len, 1);
    assert_int_equal(it.data[0], 'h');
}

/* A connection whose input buffer was freed asks with (NULL, 0), e.g. when
 * it goes on after a parked request: nothing to read, and no memchr on a
 * NULL pointer (UBSan fails the sanitizer build on that). */
static void test_empty_input_needs_more(void **state)
{
    (void)state;
    proto_parser p;
    proto_init(&p, 64);
    proto_item it;
    assert_int_equal(proto_next(&p, NULL, 0, &it), 0);
    assert_int_equal(it.kind, PROTO_NEED_MORE);
    /* and the parser still reads the next line whole */
    const char *wire = "{\"a\":1}\n";
    assert_int_equal(proto_next(&p, wire, strlen(wire), &it), strlen(wire));
    assert_int_equal(it.kind, PROTO_LINE);
    assert_int_equal(it.len, strlen(wire) - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_line_one_byte_at_a_time),
        cmocka_unit_test(test_every_split_point),
        cmocka_unit_test(test_crlf_and_inner_cr),
        cmocka_unit_test(test_several_lines_in_one_buffer),
        cmocka_unit_test(test_zero_length_lines),
        cmocka_unit_test(test_body_in_slices),
        cmocka_unit_test(test_body_then_line_same_buffer),
        cmocka_unit_test(test_huge_body_counts_down),
        cmocka_unit_test(test_line_of_max_length_passes),
        cmocka_unit_test(test_line_over_max_fails_and_sticks),
        cmocka_unit_test(test_partial_line_detected_early),
        cmocka_unit_test(test_partial_line_in_one_read),
        cmocka_unit_test(test_resumed_scan_finds_whole_line),
        cmocka_unit_test(test_empty_input_needs_more),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
