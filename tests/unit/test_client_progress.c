/* chunkup progress: number formatting, the plain line, the bar, and how
 * often each is drawn. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "progress.h"

static void test_fmt_bytes(void **state)
{
    char b[32];

    (void)state;
    cu_fmt_bytes(b, sizeof b, 0);
    assert_string_equal(b, "0 B");
    cu_fmt_bytes(b, sizeof b, 999);
    assert_string_equal(b, "999 B");
    cu_fmt_bytes(b, sizeof b, 1000);
    assert_string_equal(b, "1.0 kB");
    cu_fmt_bytes(b, sizeof b, 655360);
    assert_string_equal(b, "655.4 kB");
    cu_fmt_bytes(b, sizeof b, 12.3e6);
    assert_string_equal(b, "12.3 MB");
    /* Never "1000.0 kB": that is 1.0 MB. */
    cu_fmt_bytes(b, sizeof b, 999999);
    assert_string_equal(b, "1.0 MB");
    cu_fmt_bytes(b, sizeof b, 524288000);
    assert_string_equal(b, "524.3 MB");
    cu_fmt_bytes(b, sizeof b, 2.5e9);
    assert_string_equal(b, "2.5 GB");
}

static void test_fmt_duration(void **state)
{
    char b[32];

    (void)state;
    cu_fmt_duration(b, sizeof b, 0);
    assert_string_equal(b, "0s");
    /* Rounded up: bytes still to go never show as 0s. */
    cu_fmt_duration(b, sizeof b, 0.03);
    assert_string_equal(b, "1s");
    cu_fmt_duration(b, sizeof b, 59.0);
    assert_string_equal(b, "59s");
    cu_fmt_duration(b, sizeof b, 187);
    assert_string_equal(b, "3m07s");
    cu_fmt_duration(b, sizeof b, 7500);
    assert_string_equal(b, "2h05m");
    cu_fmt_duration(b, sizeof b, -1);
    assert_string_equal(b, "--");
    cu_fmt_duration(b, sizeof b, 1e12);
    assert_string_equal(b, "--");
}

static void test_plain_line(void **state)
{
    char b[256];

    (void)state;
    cu_progress_line(b, sizeof b, "doc.pdf", 655360, 1048576, 12.3e6);
    assert_string_equal(b, "doc.pdf: 655360/1048576 bytes (62%) 12.3 MB/s ETA 1s");
    cu_progress_line(b, sizeof b, "doc.pdf", 0, 1048576, 0);
    assert_string_equal(b, "doc.pdf: 0/1048576 bytes (0%) 0 B/s ETA --");
    cu_progress_line(b, sizeof b, "doc.pdf", 1048576, 1048576, 2e6);
    assert_string_equal(b, "doc.pdf: 1048576/1048576 bytes (100%) 2.0 MB/s ETA 0s");
    cu_progress_line(b, sizeof b, "empty", 0, 0, 0);
    assert_string_equal(b, "empty: 0/0 bytes (100%) 0 B/s ETA 0s");
    /* 99.99% is not 100% until the last byte is in. */
    cu_progress_line(b, sizeof b, "x", 9999, 10000, 1000);
    assert_string_equal(b, "x: 9999/10000 bytes (99%) 1.0 kB/s ETA 1s");
}

static void test_bar(void **state)
{
    char b[256];

    (void)state;
    cu_progress_bar(b, sizeof b, "doc.pdf", 524288, 1048576, 1e6);
    assert_string_equal(b, "doc.pdf [==========>         ]  50% 524.3 kB/1.0 MB 1.0 MB/s ETA 1s");
    cu_progress_bar(b, sizeof b, "doc.pdf", 1048576, 1048576, 1e6);
    assert_string_equal(b, "doc.pdf [====================] 100% 1.0 MB/1.0 MB 1.0 MB/s ETA 0s");
    /* Long names keep 21 bytes plus "..." so the bar stays on one line; a
     * 2-byte é across the cut is dropped whole, never cut in half. */
    cu_progress_bar(b, sizeof b, "aaaaaaaaaaaaaaaaaaaa\xc3\xa9zzzzzzzzzzzzzzzz", 0, 10, 0);
    assert_memory_equal(b, "aaaaaaaaaaaaaaaaaaaa... [", 25);
    cu_progress_bar(b, sizeof b, "aaaaaaaaaaaaaaaaaaa\xc3\xa9zzzzzzzzzzzzzzzzz", 0, 10, 0);
    assert_memory_equal(b, "aaaaaaaaaaaaaaaaaaa\xc3\xa9... [", 26);
}

static int count(const char *s, char c)
{
    int n = 0;

    for (; *s; s++)
        n += *s == c;
    return n;
}

static void test_plain_throttle(void **state)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    cu_progress p;

    (void)state;
    assert_non_null(out);
    cu_progress_init(&p, out, false, "f", 1000000, 0, 10000);
    /* At most one line a second, the first after a full second. */
    assert_false(cu_progress_update(&p, 100000, 10000, false));
    assert_false(cu_progress_update(&p, 200000, 10999, false));
    assert_true(cu_progress_update(&p, 300000, 11000, false));
    assert_false(cu_progress_update(&p, 400000, 11500, false));
    assert_false(cu_progress_update(&p, 500000, 11999, false));
    assert_true(cu_progress_update(&p, 600000, 12000, false));
    /* The final line always. */
    assert_true(cu_progress_update(&p, 1000000, 12001, true));
    fclose(out);
    assert_int_equal(count(text, '\n'), 3);
    assert_null(strchr(text, '\r'));
    assert_non_null(strstr(text, "f: 300000/1000000 bytes (30%) 300.0 kB/s ETA 3s\n"));
    assert_non_null(strstr(text, "f: 1000000/1000000 bytes (100%)"));
    free(text);
}

static void test_tty_redraw(void **state)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    cu_progress p;

    (void)state;
    assert_non_null(out);
    cu_progress_init(&p, out, true, "f", 1000, 0, 0);
    /* A bar shows at once, then at most ten times a second. */
    assert_true(cu_progress_update(&p, 10, 0, false));
    assert_false(cu_progress_update(&p, 20, 50, false));
    assert_false(cu_progress_update(&p, 30, 99, false));
    assert_true(cu_progress_update(&p, 40, 100, false));
    assert_true(p.on_screen);
    assert_true(cu_progress_update(&p, 1000, 120, true));
    assert_false(p.on_screen);
    fclose(out);
    assert_int_equal(count(text, '\r'), 3);
    assert_int_equal(count(text, '\n'), 1);
    assert_non_null(strstr(text, "\033[K"));
    assert_int_equal(text[strlen(text) - 1], '\n');
    free(text);
}

static void test_break_and_rebase(void **state)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    cu_progress p;

    (void)state;
    assert_non_null(out);
    cu_progress_init(&p, out, true, "f", 1000, 0, 0);
    cu_progress_break(&p);   /* nothing drawn: nothing to end */
    assert_true(cu_progress_update(&p, 100, 0, false));
    cu_progress_break(&p);
    assert_false(p.on_screen);
    /* After a reconnect at offset 500, the rate counts only new bytes:
     * 100 bytes in 1 s is 100 B/s, not 600. */
    cu_progress_rebase(&p, 500, 10000);
    assert_true(cu_progress_update(&p, 600, 11000, false));
    fclose(out);
    assert_int_equal(count(text, '\n'), 1);
    assert_non_null(strstr(text, "100 B/s"));
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fmt_bytes),
        cmocka_unit_test(test_fmt_duration),
        cmocka_unit_test(test_plain_line),
        cmocka_unit_test(test_bar),
        cmocka_unit_test(test_plain_throttle),
        cmocka_unit_test(test_tty_redraw),
        cmocka_unit_test(test_break_and_rebase),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
