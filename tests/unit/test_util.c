/* Shared helpers: hex, sha256 text, integers, bounded copies, clocks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "chunkd/util.h"

static void test_hex(void **state)
{
    (void)state;
    static const unsigned char in[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xff};
    char out[2 * sizeof in + 1];
    memset(out, 'X', sizeof out);
    util_hex(in, sizeof in, out);
    assert_string_equal(out, "00017f80abff");
    util_hex(in, 0, out);
    assert_string_equal(out, "");
}

static void test_parse_sha256_hex(void **state)
{
    (void)state;
    char out[65];
    const char *lower = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    assert_int_equal(util_parse_sha256_hex(lower, out), 1);
    assert_string_equal(out, lower);
    assert_int_equal(
        util_parse_sha256_hex("BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD", out),
        1);
    assert_string_equal(out, lower);

    assert_int_equal(util_parse_sha256_hex("ba7816bf", out), 0);
    assert_int_equal(
        util_parse_sha256_hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad0", out),
        0);
    assert_int_equal(
        util_parse_sha256_hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015aG", out),
        0);
    assert_int_equal(util_parse_sha256_hex("", out), 0);
}

static void test_parse_i64(void **state)
{
    (void)state;
    int64_t v = 0;
    assert_int_equal(util_parse_i64("0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(util_parse_i64("42", &v), 0);
    assert_int_equal(v, 42);
    assert_int_equal(util_parse_i64("-7", &v), 0);
    assert_int_equal(v, -7);
    assert_int_equal(util_parse_i64("9223372036854775807", &v), 0);
    assert_true(v == INT64_MAX);

    v = 99;
    static const char *const junk[] = {"", "x", "12x", "1 ", "9223372036854775808", "1.0"};
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++)
        assert_int_equal(util_parse_i64(junk[i], &v), -1);
    assert_int_equal(util_parse_i64(NULL, &v), -1);
    assert_int_equal(v, 99); /* untouched on failure */
}

static void test_strlcpy(void **state)
{
    (void)state;
    char buf[6];
    memset(buf, 'Z', sizeof buf);
    util_strlcpy(buf, "abc", sizeof buf);
    assert_string_equal(buf, "abc");
    util_strlcpy(buf, "abcdefgh", sizeof buf);
    assert_string_equal(buf, "abcde");
    util_strlcpy(buf, "", sizeof buf);
    assert_string_equal(buf, "");
    buf[0] = 'Q';
    util_strlcpy(buf, "abc", 0);
    assert_int_equal(buf[0], 'Q');
    util_strlcpy(buf, "abc", 1);
    assert_string_equal(buf, "");
}

static void test_clocks(void **state)
{
    (void)state;
    int64_t a = util_mono_ms();
    int64_t b = util_mono_ms();
    assert_true(a > 0);
    assert_true(b >= a);
    /* Wall clock in milliseconds since 1970: after 2020, before 2100. */
    int64_t w = util_wall_ms();
    assert_true(w > INT64_C(1577836800000));
    assert_true(w < INT64_C(4102444800000));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hex),
        cmocka_unit_test(test_parse_sha256_hex),
        cmocka_unit_test(test_parse_i64),
        cmocka_unit_test(test_strlcpy),
        cmocka_unit_test(test_clocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
