/* chunkup command line: numbers, sizes, servers, options against the
 * environment, exit statuses. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

#define ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])) - 1)

static int clear_env(void **state)
{
    (void)state;
    unsetenv("CHUNKUP_SERVER");
    unsetenv("CHUNKUP_USER");
    unsetenv("CHUNKUP_CREDENTIAL");
    return 0;
}

static void test_parse_size(void **state)
{
    int64_t v;

    (void)state;
    assert_int_equal(cu_parse_size("1048576", &v), 0);
    assert_int_equal(v, 1048576);
    assert_int_equal(cu_parse_size("64k", &v), 0);
    assert_int_equal(v, 65536);
    assert_int_equal(cu_parse_size("10M", &v), 0);
    assert_int_equal(v, 10 * 1024 * 1024);
    assert_int_equal(cu_parse_size("2g", &v), 0);
    assert_int_equal(v, (int64_t)2 << 30);
    assert_int_equal(cu_parse_size("0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(cu_parse_size("", &v), -1);
    assert_int_equal(cu_parse_size("k", &v), -1);
    assert_int_equal(cu_parse_size("-5", &v), -1);
    assert_int_equal(cu_parse_size(" 5", &v), -1);
    assert_int_equal(cu_parse_size("5kb", &v), -1);
    assert_int_equal(cu_parse_size("5x", &v), -1);
    assert_int_equal(cu_parse_size("9223372036854775807k", &v), -1);
    assert_int_equal(cu_parse_size("99999999999999999999", &v), -1);
}

static void test_parse_int(void **state)
{
    int64_t v;

    (void)state;
    assert_int_equal(cu_parse_int("42", 1, 100, &v), 0);
    assert_int_equal(v, 42);
    assert_int_equal(cu_parse_int("0", 1, 100, &v), -1);
    assert_int_equal(cu_parse_int("101", 1, 100, &v), -1);
    assert_int_equal(cu_parse_int("4x", 1, 100, &v), -1);
    assert_int_equal(cu_parse_int("+4", 1, 100, &v), -1);
    assert_int_equal(cu_parse_int("", 1, 100, &v), -1);
    assert_int_equal(cu_parse_int("-3", -5, 5, &v), 0);
    assert_int_equal(v, -3);
    assert_int_equal(cu_parse_int("9223372036854775808", 0, INT64_MAX, &v), -1);
}

static void expect_server(const char *in, const char *host, const char *port)
{
    char h[64], p[16];

    assert_int_equal(cu_parse_server(in, h, sizeof h, p, sizeof p), 0);
    assert_string_equal(h, host);
    assert_string_equal(p, port);
}

static void test_parse_server(void **state)
{
    char h[64], p[16];

    (void)state;
    expect_server("127.0.0.1:9400", "127.0.0.1", "9400");
    expect_server("upload.example:80", "upload.example", "80");
    expect_server("localhost", "localhost", "9400");
    expect_server("[::1]:9401", "::1", "9401");
    expect_server("[::1]", "::1", "9400");
    expect_server("::1", "::1", "9400");
    assert_int_equal(cu_parse_server("", h, sizeof h, p, sizeof p), -1);
    assert_int_equal(cu_parse_server(":9400", h, sizeof h, p, sizeof p), -1);
    assert_int_equal(cu_parse_server("host:", h, sizeof h, p, sizeof p), -1);
    assert_int_equal(cu_parse_server("host:0", h, sizeof h, p, sizeof p), -1);
    assert_int_equal(cu_parse_server("host:65536", h, sizeof h, p, sizeof p), -1);
    assert_int_equal(cu_parse_server("host:http", h, sizeof h, p, sizeof p), -1);
    assert_int_equal(cu_parse_server("[::1", h, sizeof h, p, sizeof p), -1);
    assert_int_equal(cu_parse_server("[::1]x", h, sizeof h, p, sizeof p), -1);
    assert_int_equal(cu_parse_server("averyveryveryverylonghostname:1", h, 8, p, sizeof p), -1);
}

static void test_options_defaults_and_env(void **state)
{
    char *argv[] = { "chunkup", "upload", "a.bin", "b.bin", NULL };
    char msg[256];
    cu_options o;

    (void)state;
    assert_int_equal(setenv("CHUNKUP_USER", "7", 1), 0);
    assert_int_equal(setenv("CHUNKUP_CREDENTIAL", "envtoken", 1), 0);
    assert_int_equal(cu_options_parse(ARGC(argv), argv, &o, msg, sizeof msg), CU_EXIT_OK);
    assert_string_equal(o.command, "upload");
    assert_int_equal(o.nargs, 2);
    assert_string_equal(o.args[0], "a.bin");
    assert_string_equal(o.host, "127.0.0.1");
    assert_string_equal(o.port, "9400");
    assert_string_equal(o.server, "127.0.0.1:9400");
    assert_int_equal(o.user_id, 7);
    assert_string_equal(o.credential, "envtoken");
    assert_null(o.state_path);
    assert_int_equal(o.retries, 10);
    assert_int_equal(o.limit_rate, 0);
    assert_int_equal(o.window, 0);
    assert_false(o.quiet);
    assert_false(o.json);
    cu_options_free(&o);

    assert_int_equal(setenv("CHUNKUP_SERVER", "[::1]:9500", 1), 0);
    assert_int_equal(cu_options_parse(ARGC(argv), argv, &o, msg, sizeof msg), CU_EXIT_OK);
    assert_string_equal(o.host, "::1");
    assert_string_equal(o.server, "[::1]:9500");
    cu_options_free(&o);
}

static void test_flags_win_over_env(void **state)
{
    char *argv[] = { "chunkup", "--server", "h:1", "-u", "9", "--credential", "flagtoken",
                     "--state", "/tmp/s.json", "--retries", "3", "--limit-rate", "64k",
                     "--window", "4", "--timeout", "2", "--quiet", "--json", "status", "12",
                     NULL };
    char msg[256];
    cu_options o;

    (void)state;
    assert_int_equal(setenv("CHUNKUP_SERVER", "env:2", 1), 0);
    assert_int_equal(setenv("CHUNKUP_USER", "7", 1), 0);
    assert_int_equal(setenv("CHUNKUP_CREDENTIAL", "envtoken", 1), 0);
    assert_int_equal(cu_options_parse(ARGC(argv), argv, &o, msg, sizeof msg), CU_EXIT_OK);
    assert_string_equal(o.command, "status");
    assert_string_equal(o.server, "h:1");
    assert_int_equal(o.user_id, 9);
    assert_string_equal(o.credential, "flagtoken");
    assert_string_equal(o.state_path, "/tmp/s.json");
    assert_int_equal(o.retries, 3);
    assert_int_equal(o.limit_rate, 65536);
    assert_int_equal(o.window, 4);
    assert_int_equal(o.timeout_ms, 2000);
    assert_true(o.quiet);
    assert_true(o.json);
    cu_options_free(&o);
}

static void test_options_after_command(void **state)
{
    char *argv[] = { "chunkup", "upload", "f", "--user", "5", "-c", "t", "--", "--odd-name",
                     NULL };
    char msg[256];
    cu_options o;

    (void)state;
    assert_int_equal(cu_options_parse(ARGC(argv), argv, &o, msg, sizeof msg), CU_EXIT_OK);
    assert_int_equal(o.user_id, 5);
    assert_int_equal(o.nargs, 2);
    assert_string_equal(o.args[0], "f");
    assert_string_equal(o.args[1], "--odd-name");
    cu_options_free(&o);
}

static void expect_usage(char **argv, int argc, const char *needle)
{
    char msg[256];
    cu_options o;

    assert_int_equal(cu_options_parse(argc, argv, &o, msg, sizeof msg), CU_EXIT_USAGE);
    if (strstr(msg, needle) == NULL)
        fail_msg("message '%s' lacks '%s'", msg, needle);
    cu_options_free(&o);
}

static void test_usage_errors(void **state)
{
    char *none[] = { "chunkup", NULL };
    char *nofile[] = { "chunkup", "-u", "1", "-c", "t", "upload", NULL };
    char *badcmd[] = { "chunkup", "-u", "1", "-c", "t", "fly", NULL };
    char *badid[] = { "chunkup", "-u", "1", "-c", "t", "status", "0", NULL };
    char *twoids[] = { "chunkup", "-u", "1", "-c", "t", "abort", "1", "2", NULL };
    char *listarg[] = { "chunkup", "-u", "1", "-c", "t", "list", "x", NULL };
    char *nouser[] = { "chunkup", "-c", "t", "list", NULL };
    char *baduser[] = { "chunkup", "-u", "-1", "-c", "t", "list", NULL };
    char *nocred[] = { "chunkup", "-u", "1", "list", NULL };
    char *badrate[] = { "chunkup", "-u", "1", "-c", "t", "--limit-rate", "fast", "list", NULL };
    char *badwin[] = { "chunkup", "-u", "1", "-c", "t", "--window", "65", "list", NULL };
    char *unknown[] = { "chunkup", "--frobnicate", "list", NULL };
    char *missing[] = { "chunkup", "list", "--server", NULL };
    char *both[] = { "chunkup", "-u", "1", "-c", "t", "--credential-file", "/x", "list", NULL };
    char *badserver[] = { "chunkup", "-u", "1", "-c", "t", "-s", "h:0", "list", NULL };

    (void)state;
    expect_usage(none, ARGC(none), "no command");
    expect_usage(nofile, ARGC(nofile), "FILE");
    expect_usage(badcmd, ARGC(badcmd), "unknown command");
    expect_usage(badid, ARGC(badid), "document ID");
    expect_usage(twoids, ARGC(twoids), "document ID");
    expect_usage(listarg, ARGC(listarg), "no operands");
    expect_usage(nouser, ARGC(nouser), "CHUNKUP_USER");
    expect_usage(baduser, ARGC(baduser), "user id");
    expect_usage(nocred, ARGC(nocred), "CHUNKUP_CREDENTIAL");
    expect_usage(badrate, ARGC(badrate), "--limit-rate");
    expect_usage(badwin, ARGC(badwin), "--window");
    expect_usage(unknown, ARGC(unknown), "--frobnicate");
    expect_usage(missing, ARGC(missing), "--server");
    expect_usage(both, ARGC(both), "mutually exclusive");
    expect_usage(badserver, ARGC(badserver), "server");
}

static void test_help(void **state)
{
    char *argv[] = { "chunkup", "--help", NULL };
    char msg[256];
    cu_options o;

    (void)state;
    assert_int_equal(cu_options_parse(ARGC(argv), argv, &o, msg, sizeof msg), CU_EXIT_OK);
    assert_true(o.help);
    cu_options_free(&o);
}

/* Replaces path's content with len bytes of text. */
static void rewrite(const char *path, const char *text, size_t len)
{
    int fd = open(path, O_WRONLY | O_TRUNC);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
}

static void test_credential_file(void **state)
{
    char path[] = "/tmp/chunkup-cred-XXXXXX";
    char arg_missing[] = "/tmp/chunkup-cred-does-not-exist";
    char *argv[] = { "chunkup", "-u", "1", "--credential-file", path, "list", NULL };
    char *argv_missing[] = { "chunkup", "-u", "1", "--credential-file", arg_missing, "list", NULL };
    const char *text = "s3cret token\t \nsecond line\n";
    char msg[256];
    cu_options o;
    int fd = mkstemp(path);

    (void)state;
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    assert_int_equal(cu_options_parse(ARGC(argv), argv, &o, msg, sizeof msg), CU_EXIT_OK);
    /* First line only, trailing blanks removed, inner ones kept. */
    assert_string_equal(o.credential, "s3cret token");
    cu_options_free(&o);

    rewrite(path, " \n", 2);
    assert_int_equal(cu_options_parse(ARGC(argv), argv, &o, msg, sizeof msg), CU_EXIT_FILE);
    assert_non_null(strstr(msg, "empty"));
    cu_options_free(&o);

    /* not UTF-8: a usage error naming the file, before anything is sent */
    rewrite(path, "\xff\xfe\n", 3);
    assert_int_equal(cu_options_parse(ARGC(argv), argv, &o, msg, sizeof msg), CU_EXIT_USAGE);
    assert_non_null(strstr(msg, "not valid UTF-8"));
    assert_non_null(strstr(msg, path));
    cu_options_free(&o);
    unlink(path);

    assert_int_equal(cu_options_parse(ARGC(argv_missing), argv_missing, &o, msg, sizeof msg),
                     CU_EXIT_FILE);
    assert_non_null(strstr(msg, arg_missing));
    cu_options_free(&o);
}

static cu_error server_error(int code, const char *reason)
{
    cu_error e;

    memset(&e, 0, sizeof e);
    e.code = code;
    snprintf(e.reason, sizeof e.reason, "%s", reason);
    snprintf(e.message, sizeof e.message, "msg");
    e.expected_offset = -1;
    return e;
}

static void test_exit_status(void **state)
{
    cu_error e;

    (void)state;
    e = server_error(401, "unauthorized");
    assert_int_equal(cu_exit_status(&e), CU_EXIT_AUTH);
    e = server_error(403, "forbidden");
    assert_int_equal(cu_exit_status(&e), CU_EXIT_REFUSED);
    e = server_error(413, "file_too_large");
    assert_int_equal(cu_exit_status(&e), CU_EXIT_REFUSED);
    e = server_error(422, "checksum_mismatch");
    assert_int_equal(cu_exit_status(&e), CU_EXIT_CHECKSUM);
    e = server_error(422, "file_invalid");
    assert_int_equal(cu_exit_status(&e), CU_EXIT_REFUSED);
    e = server_error(503, "unavailable");
    assert_int_equal(cu_exit_status(&e), CU_EXIT_UNAVAILABLE);
    e = server_error(500, "internal");
    assert_int_equal(cu_exit_status(&e), CU_EXIT_UNAVAILABLE);
    e = server_error(507, "insufficient_storage");
    assert_int_equal(cu_exit_status(&e), CU_EXIT_STORAGE);
    e = server_error(0, "connect");
    assert_int_equal(cu_exit_status(&e), CU_EXIT_UNAVAILABLE);
    e = server_error(0, "timeout");
    assert_int_equal(cu_exit_status(&e), CU_EXIT_UNAVAILABLE);
    e = server_error(0, "file");
    assert_int_equal(cu_exit_status(&e), CU_EXIT_FILE);
}

/* The wait before a retry: the backoff, or the server's retry_after_ms
 * plus the margin, bounded by the longest lease a chunkd grants (600 s),
 * whatever the server sends. */
static void test_retry_wait(void **state)
{
    (void)state;
    assert_int_equal(cu_retry_wait_ms(400, 0, 200), 400);
    assert_int_equal(cu_retry_wait_ms(400, -5, 200), 400);
    assert_int_equal(cu_retry_wait_ms(400, 1500, 200), 1700);
    /* a lease of two minutes is waited for in full, not cut to the backoff */
    assert_int_equal(cu_retry_wait_ms(400, 120000, 200), 120200);
    assert_int_equal(cu_retry_wait_ms(400, CU_LOCK_WAIT_MAX_MS, 200), CU_LOCK_WAIT_MAX_MS + 200);
    assert_int_equal(cu_retry_wait_ms(400, CU_LOCK_WAIT_MAX_MS + 1, 200), CU_LOCK_WAIT_MAX_MS + 200);
    assert_int_equal(cu_retry_wait_ms(400, INT64_MAX, 200), CU_LOCK_WAIT_MAX_MS + 200);
}

static void test_describe_error(void **state)
{
    char buf[256];
    cu_error e = server_error(413, "file_too_large");

    (void)state;
    cu_describe_error(buf, sizeof buf, &e);
    assert_string_equal(buf, "server answered 413 file_too_large: msg");
    e = server_error(0, "connect");
    snprintf(e.message, sizeof e.message, "cannot connect to h:1: Connection refused");
    cu_describe_error(buf, sizeof buf, &e);
    assert_string_equal(buf, "cannot connect to h:1: Connection refused");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_parse_int),
        cmocka_unit_test(test_parse_server),
        cmocka_unit_test_setup(test_options_defaults_and_env, clear_env),
        cmocka_unit_test_setup(test_flags_win_over_env, clear_env),
        cmocka_unit_test_setup(test_options_after_command, clear_env),
        cmocka_unit_test_setup(test_usage_errors, clear_env),
        cmocka_unit_test_setup(test_help, clear_env),
        cmocka_unit_test_setup(test_credential_file, clear_env),
        cmocka_unit_test(test_exit_status),
        cmocka_unit_test(test_retry_wait),
        cmocka_unit_test(test_describe_error),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
