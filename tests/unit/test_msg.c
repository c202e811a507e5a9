/* Control messages: every validation row of docs/PROTOCOL.md that msg.c owns,
 * and the exact text of the answers it builds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "chunkd/msg.h"

/* The default max_file_size (500 MiB). */
#define TEST_MAX_FILE_SIZE INT64_C(524288000)

static msg_request req;
static msg_error err;

static int parse(const char *json)
{
    memset(&err, 0, sizeof err);
    return msg_parse(json, strlen(json), TEST_MAX_FILE_SIZE, &req, &err);
}

/* The line must be refused with this code and reason, leaving the
 * connection open. */
static void expect_error(const char *json, int code, const char *reason)
{
    int rc = parse(json);
    if (rc != -1 || err.code != code || !err.reason || strcmp(err.reason, reason) != 0)
        print_error("line %s: got rc=%d code=%d reason=%s, want %d %s\n", json, rc, err.code,
                    err.reason ? err.reason : "(null)", code, reason);
    assert_int_equal(rc, -1);
    assert_int_equal(err.code, code);
    assert_string_equal(err.reason, reason);
    assert_false(err.close);
    assert_int_equal(err.expected_offset, -1);
    assert_true(err.message[0] != '\0');
}

static void expect_ok(const char *json)
{
    int rc = parse(json);
    if (rc != 0)
        print_error("line %s: %s %s\n", json, err.reason, err.message);
    assert_int_equal(rc, 0);
}

/* {"action":"upload","filename":<name>,"filesize":10} */
static void upload_with_name(char *out, size_t size, const char *name_json)
{
    int n = snprintf(out, size, "{\"action\":\"upload\",\"filename\":%s,\"filesize\":10}",
                     name_json);
    assert_true(n > 0 && (size_t)n < size);
}

static void upload_with_size(char *out, size_t size, const char *filesize_json)
{
    int n = snprintf(out, size, "{\"action\":\"upload\",\"filename\":\"f\",\"filesize\":%s}",
                     filesize_json);
    assert_true(n > 0 && (size_t)n < size);
}

static void upload_with_sha(char *out, size_t size, const char *sha_json)
{
    int n = snprintf(out, size,
                     "{\"action\":\"upload\",\"filename\":\"f\",\"filesize\":1,\"sha256\":%s}",
                     sha_json);
    assert_true(n > 0 && (size_t)n < size);
}

/* ---- upload ------------------------------------------------------------ */

static void test_upload_ok(void **state)
{
    (void)state;
    expect_ok("{\"action\":\"upload\",\"filename\":\"doc.pdf\",\"filesize\":1048576,"
              "\"user_id\":123,\"credential\":\"tok-en\",\"v\":1}");
    assert_int_equal(req.action, ACT_UPLOAD);
    assert_string_equal(req.filename, "doc.pdf");
    assert_int_equal(req.filesize, 1048576);
    assert_int_equal(req.user_id, 123);
    assert_true(req.has_credential);
    assert_string_equal(req.credential, "tok-en");
    assert_false(req.has_sha256);
    assert_int_equal(req.document_id, -1);
    assert_int_equal(req.offset, -1);
    assert_int_equal(req.length, -1);
    assert_int_equal(req.limit, 0);
}

static void test_upload_bad_filenames(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "\"\"",         "\".\"",       "\"..\"",      "\"a/b\"",        "\"/\"",
        "\"a\\\\b\"",   "\"a\\u0001b\"", "\"a\\tb\"", "\"a\\nb\"",      "\"a\\u001fb\"",
        "\"a\\u007fb\"", "\"a\\u0000b\"", "\"\\u0000\"", "\"abc\\u0000\"", "\"../x\"",
        "123",          "null",        "true",        "[\"a\"]",        "{\"a\":1}",
    };
    char line[512];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        upload_with_name(line, sizeof line, bad[i]);
        expect_error(line, 400, "invalid_filename");
    }
    expect_error("{\"action\":\"upload\",\"filesize\":10}", 400, "invalid_filename");
}

static void test_upload_good_filenames(void **state)
{
    (void)state;
    static const struct {
        const char *json, *want;
    } good[] = {
        {"\"...\"", "..."},
        {"\".hidden\"", ".hidden"},
        {"\"a..b\"", "a..b"},
        {"\"with space.txt\"", "with space.txt"},
        {"\"r\\u00e9sum\\u00e9.pdf\"", "r\xc3\xa9sum\xc3\xa9.pdf"},
        {"\"\\u0080\"", "\xc2\x80"}, /* only U+0000-U+001F and U+007F are refused */
    };
    char line[512];
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        upload_with_name(line, sizeof line, good[i].json);
        expect_ok(line);
        assert_string_equal(req.filename, good[i].want);
    }
}

/* The limit counts bytes, not characters. */
static void test_upload_filename_length(void **state)
{
    (void)state;
    char name[600], line[700];
    name[0] = '"';
    memset(name + 1, 'n', 255);
    strcpy(name + 256, "\"");
    upload_with_name(line, sizeof line, name);
    expect_ok(line);
    assert_int_equal(strlen(req.filename), 255);

    memset(name + 1, 'n', 256);
    strcpy(name + 257, "\"");
    upload_with_name(line, sizeof line, name);
    expect_error(line, 400, "invalid_filename");

    /* 127 two-byte characters + 1 = 255 bytes, 128 of them = 256 bytes. */
    size_t n = 1;
    for (int i = 0; i < 127; i++, n += 2)
        memcpy(name + n, "\xc3\xa9", 2);
    strcpy(name + n, "x\"");
    upload_with_name(line, sizeof line, name);
    expect_ok(line);
    assert_int_equal(strlen(req.filename), 255);
    strcpy(name + n, "\xc3\xa9\"");
    upload_with_name(line, sizeof line, name);
    expect_error(line, 400, "invalid_filename");
}

static void test_filename_valid_direct(void **state)
{
    (void)state;
    assert_true(msg_filename_valid("a", 1));
    assert_false(msg_filename_valid("a", 0));
    assert_false(msg_filename_valid("a\0b", 3));
    assert_true(msg_filename_valid("..a", 3));
    assert_false(msg_filename_valid("..", 2));
    /* The length given is what counts, not a terminator further on. */
    assert_true(msg_filename_valid("ab/", 2));
    assert_false(msg_filename_valid("ab/", 3));
    assert_false(msg_filename_valid("..x", 2));
    assert_false(msg_filename_valid(".x", 1));
}

static void test_upload_filesize(void **state)
{
    (void)state;
    char line[256];
    static const char *const bad[] = {"-1", "1.5", "1.0", "1e3", "\"10\"", "null", "true", "[]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        upload_with_size(line, sizeof line, bad[i]);
        expect_error(line, 400, "invalid_filesize");
    }
    expect_error("{\"action\":\"upload\",\"filename\":\"f\"}", 400, "invalid_filesize");

    /* Beyond int64 the JSON itself cannot be read. */
    upload_with_size(line, sizeof line, "99999999999999999999");
    expect_error(line, 400, "malformed_json");

    upload_with_size(line, sizeof line, "0");
    expect_ok(line);
    assert_int_equal(req.filesize, 0);
    /* The limit itself is accepted; one byte more is 413. */
    upload_with_size(line, sizeof line, "524288000");
    expect_ok(line);
    assert_true(req.filesize == TEST_MAX_FILE_SIZE);
    upload_with_size(line, sizeof line, "524288001");
    expect_error(line, 413, "file_too_large");
    upload_with_size(line, sizeof line, "9223372036854775807");
    expect_error(line, 413, "file_too_large");
}

static void test_upload_validation_order(void **state)
{
    (void)state;
    expect_error("{\"action\":\"upload\",\"filename\":\"a/b\",\"filesize\":-1,\"sha256\":\"x\"}", 400,
                 "invalid_filename");
    expect_error("{\"action\":\"upload\",\"filename\":\"ok\",\"filesize\":-1,\"sha256\":\"x\"}", 400,
                 "invalid_filesize");
    /* The size limit comes before the hash, as the table in PROTOCOL.md says. */
    expect_error("{\"action\":\"upload\",\"filename\":\"ok\",\"filesize\":524288001,"
                 "\"sha256\":\"x\"}",
                 413, "file_too_large");
    expect_error("{\"action\":\"upload\",\"filename\":\"ok\",\"filesize\":1,\"sha256\":\"x\","
                 "\"user_id\":0}",
                 400, "invalid_sha256");
}

#define HEX64 "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

static void test_upload_sha256(void **state)
{
    (void)state;
    char line[256];
    static const char *const bad[] = {
        "\"" "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a" "\"",   /* 63 */
        "\"" HEX64 "0\"",                                                               /* 65 */
        "\"" "ga7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" "\"",   /* g */
        "\"" "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a " "\"",   /* space */
        "\"" "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a\\u0000" "\"",
        "\"" HEX64 "\\u0000ab\"", /* 64 digits, then more after a NUL */
        "\"\"",
        "12",
        "[\"" HEX64 "\"]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        upload_with_sha(line, sizeof line, bad[i]);
        expect_error(line, 400, "invalid_sha256");
    }

    upload_with_sha(line, sizeof line, "\"" HEX64 "\"");
    expect_ok(line);
    assert_true(req.has_sha256);
    assert_string_equal(req.sha256, HEX64);

    upload_with_sha(line, sizeof line,
                    "\"BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD\"");
    expect_ok(line);
    assert_true(req.has_sha256);
    assert_string_equal(req.sha256, HEX64);

    upload_with_sha(line, sizeof line, "null");
    expect_ok(line);
    assert_false(req.has_sha256);
    assert_string_equal(req.sha256, "");
}

/* ---- chunk ------------------------------------------------------------- */

static void test_chunk_ok(void **state)
{
    (void)state;
    expect_ok("{\"action\":\"chunk\",\"document_id\":42,\"offset\":65536,\"length\":1024}");
    assert_int_equal(req.action, ACT_CHUNK);
    assert_int_equal(req.document_id, 42);
    assert_int_equal(req.offset, 65536);
    assert_int_equal(req.length, 1024);
}

/* Chunk lines in the clients' exact shape are read without jansson
 * (msg.c, parse_chunk_line). Each line here must come out of msg_parse
 * exactly as the same line with a space after its brace does, which only
 * jansson reads: the same request, or the same refusal. */
static void test_chunk_fast_path_agrees(void **state)
{
    (void)state;
    static const char *const lines[] = {
        "{\"action\":\"chunk\",\"document_id\":42,\"offset\":65536,\"length\":1024}",
        "{\"v\":1,\"action\":\"chunk\",\"document_id\":1,\"offset\":0,\"length\":1}",
        ("{\"action\":\"chunk\",\"document_id\":999999999999999999,"
         "\"offset\":999999999999999999,\"length\":1048576}"),
        /* 19 digits: too long for the fast path, fine for jansson */
        "{\"action\":\"chunk\",\"document_id\":9223372036854775807,\"offset\":0,\"length\":5}",
        /* 19 digits past INT64_MAX: must not overflow on the way */
        "{\"action\":\"chunk\",\"document_id\":9999999999999999999,\"offset\":0,\"length\":5}",
        /* 20 digits: jansson refuses it too */
        "{\"action\":\"chunk\",\"document_id\":92233720368547758070,\"offset\":0,\"length\":5}",
        "{\"action\":\"chunk\",\"document_id\":0,\"offset\":0,\"length\":5}",
        "{\"action\":\"chunk\",\"document_id\":7,\"offset\":0,\"length\":0}",
        "{\"action\":\"chunk\",\"document_id\":07,\"offset\":0,\"length\":5}",
        "{\"action\":\"chunk\",\"document_id\":7,\"offset\":00,\"length\":5}",
        "{\"action\":\"chunk\",\"document_id\":7,\"offset\":-1,\"length\":5}",
        "{\"action\":\"chunk\",\"document_id\":7,\"offset\":1.5,\"length\":5}",
        "{\"action\":\"chunk\",\"document_id\":7,\"offset\":1,\"length\":5}x",
        "{\"action\":\"chunk\",\"document_id\":7,\"offset\":1,\"length\":5,\"length\":6}",
        "{\"action\":\"chunk\",\"document_id\":7,\"offset\":1,\"length\":5,\"user_id\":3}",
        "{\"v\":2,\"action\":\"chunk\",\"document_id\":7,\"offset\":1,\"length\":5}",
        "{\"v\":1,\"v\":1,\"action\":\"chunk\",\"document_id\":7,\"offset\":1,\"length\":5}",
        "{\"action\":\"chunk\",\"document_id\":7,\"offset\":1,\"length\":\"5\"}",
        "{\"action\":\"chunk\",\"document_id\":7,\"offset\":1}",
    };
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        char spaced[256];
        snprintf(spaced, sizeof spaced, "{ %s", lines[i] + 1);
        msg_request fast, slow;
        msg_error efast, eslow;
        memset(&efast, 0, sizeof efast);
        memset(&eslow, 0, sizeof eslow);
        int rfast = msg_parse(lines[i], strlen(lines[i]), TEST_MAX_FILE_SIZE, &fast, &efast);
        int rslow = msg_parse(spaced, strlen(spaced), TEST_MAX_FILE_SIZE, &slow, &eslow);
        if (rfast != rslow || memcmp(&fast, &slow, sizeof fast) != 0 ||
            (rfast != 0 && (efast.code != eslow.code || strcmp(efast.reason, eslow.reason) != 0 ||
                            efast.close != eslow.close)))
            fail_msg("%s: rc %d/%d, doc %lld/%lld, offset %lld/%lld, length %lld/%lld", lines[i],
                     rfast, rslow, (long long)fast.document_id, (long long)slow.document_id,
                     (long long)fast.offset, (long long)slow.offset, (long long)fast.length,
                     (long long)slow.length);
    }
    /* And the fast path did read the first one right. */
    expect_ok(lines[0]);
    assert_int_equal(req.action, ACT_CHUNK);
    assert_int_equal(req.document_id, 42);
    assert_int_equal(req.offset, 65536);
    assert_int_equal(req.length, 1024);
}

/* Without a length the body cannot be skipped: the connection must close. */
static void test_chunk_length_unreadable_closes(void **state)
{
    (void)state;
    static const char *const lines[] = {
        "{\"action\":\"chunk\",\"document_id\":42,\"offset\":0}",
        "{\"action\":\"chunk\",\"document_id\":42,\"offset\":0,\"length\":-1}",
        "{\"action\":\"chunk\",\"document_id\":42,\"offset\":0,\"length\":\"10\"}",
        "{\"action\":\"chunk\",\"document_id\":42,\"offset\":0,\"length\":1.5}",
        "{\"action\":\"chunk\",\"document_id\":42,\"offset\":0,\"length\":null}",
        /* length is checked before everything else */
        "{\"action\":\"chunk\",\"document_id\":-3,\"offset\":\"x\"}",
    };
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        assert_int_equal(parse(lines[i]), -1);
        assert_int_equal(req.action, ACT_CHUNK);
        assert_int_equal(err.code, 400);
        assert_string_equal(err.reason, "invalid_length");
        assert_true(err.close);
        assert_int_equal(req.length, -1);
    }
}

/* With a readable length, a bad header leaves the stream usable. */
static void test_chunk_bad_fields_keep_length(void **state)
{
    (void)state;
    static const struct {
        const char *line, *reason;
    } rows[] = {
        {"{\"action\":\"chunk\",\"offset\":0,\"length\":77}", "invalid_document_id"},
        {"{\"action\":\"chunk\",\"document_id\":0,\"offset\":0,\"length\":77}", "invalid_document_id"},
        {"{\"action\":\"chunk\",\"document_id\":-4,\"offset\":0,\"length\":77}", "invalid_document_id"},
        {"{\"action\":\"chunk\",\"document_id\":\"42\",\"offset\":0,\"length\":77}",
         "invalid_document_id"},
        {"{\"action\":\"chunk\",\"document_id\":4.0,\"offset\":0,\"length\":77}", "invalid_document_id"},
        {"{\"action\":\"chunk\",\"document_id\":42,\"length\":77}", "invalid_offset"},
        {"{\"action\":\"chunk\",\"document_id\":42,\"offset\":-1,\"length\":77}", "invalid_offset"},
        {"{\"action\":\"chunk\",\"document_id\":42,\"offset\":\"0\",\"length\":77}", "invalid_offset"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        expect_error(rows[i].line, 400, rows[i].reason);
        assert_int_equal(req.action, ACT_CHUNK);
        assert_int_equal(req.length, 77);
    }
}

static void test_chunk_length_zero(void **state)
{
    (void)state;
    expect_error("{\"action\":\"chunk\",\"document_id\":42,\"offset\":0,\"length\":0}", 400,
                 "invalid_length");
    assert_int_equal(req.length, 0);
    assert_int_equal(req.document_id, 42);
}

/* ---- envelope ------------------------------------------------------------ */

static void test_version(void **state)
{
    (void)state;
    expect_error("{\"v\":2,\"action\":\"list\"}", 400, "unsupported_version");
    expect_error("{\"v\":0,\"action\":\"list\"}", 400, "unsupported_version");
    expect_error("{\"v\":\"1\",\"action\":\"list\"}", 400, "unsupported_version");
    expect_error("{\"v\":1.0,\"action\":\"list\"}", 400, "unsupported_version");
    /* The version is judged before the action. */
    expect_error("{\"v\":2,\"action\":\"fly\"}", 400, "unsupported_version");
    expect_ok("{\"v\":1,\"action\":\"list\"}");
    expect_ok("{\"action\":\"list\"}");
}

static void test_malformed_and_shape(void **state)
{
    (void)state;
    expect_error("", 400, "malformed_json");
    expect_error("{", 400, "malformed_json");
    expect_error("{\"action\":\"list\"} x", 400, "malformed_json");
    expect_error("{\"action\":\"list\",}", 400, "malformed_json");
    expect_error("{\"action\":\"list\",\"action\":\"list\"}", 400, "malformed_json");
    expect_error("{\"action\":\"list\",\"limit\":1,\"limit\":2}", 400, "malformed_json");
    expect_error("[]", 400, "invalid_request");
    expect_error("[{\"action\":\"list\"}]", 400, "invalid_request");
    expect_error("{}", 400, "invalid_request");
    expect_error("{\"action\":5}", 400, "invalid_request");
    expect_error("{\"action\":null}", 400, "invalid_request");
    expect_error("{\"action\":\"fly\"}", 400, "unknown_action");
    expect_error("{\"action\":\"\"}", 400, "unknown_action");
    expect_error("{\"action\":\"UPLOAD\"}", 400, "unknown_action");
}

/* Only len bytes are parsed: the buffer need not end after the line. */
static void test_parse_respects_length(void **state)
{
    (void)state;
    const char *buf = "{\"action\":\"list\",\"limit\":7}{garbage";
    size_t len = (size_t)(strchr(buf, '}') - buf) + 1;
    memset(&err, 0, sizeof err);
    assert_int_equal(msg_parse(buf, len, TEST_MAX_FILE_SIZE, &req, &err), 0);
    assert_int_equal(req.action, ACT_LIST);
    assert_int_equal(req.limit, 7);
}

static void test_document_id_actions(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        msg_action act;
    } acts[] = {
        {"upload_complete", ACT_COMPLETE},
        {"resume", ACT_RESUME},
        {"status", ACT_STATUS},
        {"abort", ACT_ABORT},
    };
    char line[128];
    for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++) {
        snprintf(line, sizeof line, "{\"action\":\"%s\",\"document_id\":42}", acts[i].name);
        expect_ok(line);
        assert_int_equal(req.action, acts[i].act);
        assert_int_equal(req.document_id, 42);
        assert_string_equal(msg_action_name(acts[i].act), acts[i].name);

        snprintf(line, sizeof line, "{\"action\":\"%s\"}", acts[i].name);
        expect_error(line, 400, "invalid_document_id");
        snprintf(line, sizeof line, "{\"action\":\"%s\",\"document_id\":0}", acts[i].name);
        expect_error(line, 400, "invalid_document_id");
        snprintf(line, sizeof line, "{\"action\":\"%s\",\"document_id\":\"42\"}", acts[i].name);
        expect_error(line, 400, "invalid_document_id");
    }
    assert_string_equal(msg_action_name(ACT_UPLOAD), "upload");
    assert_string_equal(msg_action_name(ACT_CHUNK), "chunk");
    assert_string_equal(msg_action_name(ACT_LIST), "list");
}

static void test_list_limit(void **state)
{
    (void)state;
    expect_ok("{\"action\":\"list\"}");
    assert_int_equal(req.action, ACT_LIST);
    assert_int_equal(req.limit, 0);
    expect_ok("{\"action\":\"list\",\"limit\":5}");
    assert_int_equal(req.limit, 5);
    expect_error("{\"action\":\"list\",\"limit\":0}", 400, "invalid_limit");
    expect_error("{\"action\":\"list\",\"limit\":-1}", 400, "invalid_limit");
    expect_error("{\"action\":\"list\",\"limit\":\"5\"}", 400, "invalid_limit");
    expect_error("{\"action\":\"list\",\"limit\":2.5}", 400, "invalid_limit");
    expect_error("{\"action\":\"list\",\"limit\":null}", 400, "invalid_limit");
}

static void test_auth_fields(void **state)
{
    (void)state;
    expect_ok("{\"action\":\"list\",\"user_id\":7,\"credential\":\"secret\"}");
    assert_int_equal(req.user_id, 7);
    assert_true(req.has_credential);
    assert_string_equal(req.credential, "secret");

    expect_ok("{\"action\":\"list\"}");
    assert_int_equal(req.user_id, 0);
    assert_false(req.has_credential);

    expect_error("{\"action\":\"list\",\"user_id\":0}", 400, "invalid_request");
    expect_error("{\"action\":\"list\",\"user_id\":-7}", 400, "invalid_request");
    expect_error("{\"action\":\"list\",\"user_id\":\"7\"}", 400, "invalid_request");
    expect_error("{\"action\":\"list\",\"user_id\":7.0}", 400, "invalid_request");
    expect_error("{\"action\":\"status\",\"document_id\":1,\"user_id\":0}", 400,
                 "invalid_request");
    expect_error("{\"action\":\"list\",\"credential\":5}", 400, "invalid_request");
    expect_error("{\"action\":\"list\",\"credential\":null}", 400, "invalid_request");
    expect_error("{\"action\":\"list\",\"credential\":[\"x\"]}", 400, "invalid_request");
}

/* A credential that cannot be valid is kept as "present but empty", so the
 * server answers it like any wrong credential. */
static void test_credential_bounds(void **state)
{
    (void)state;
    char cred[MSG_CREDENTIAL_MAX + 2], line[400];
    memset(cred, 'c', MSG_CREDENTIAL_MAX);
    cred[MSG_CREDENTIAL_MAX] = '\0';
    snprintf(line, sizeof line, "{\"action\":\"list\",\"credential\":\"%s\"}", cred);
    expect_ok(line);
    assert_true(req.has_credential);
    assert_string_equal(req.credential, cred);

    memset(cred, 'c', MSG_CREDENTIAL_MAX + 1);
    cred[MSG_CREDENTIAL_MAX + 1] = '\0';
    snprintf(line, sizeof line, "{\"action\":\"list\",\"credential\":\"%s\"}", cred);
    expect_ok(line);
    assert_true(req.has_credential);
    assert_string_equal(req.credential, "");

    expect_ok("{\"action\":\"list\",\"credential\":\"ab\\u0000cd\"}");
    assert_true(req.has_credential);
    assert_string_equal(req.credential, "");
}

/* Chunk lines carry no credentials; their presence changes nothing. */
static void test_chunk_ignores_auth(void **state)
{
    (void)state;
    expect_ok("{\"action\":\"chunk\",\"document_id\":1,\"offset\":0,\"length\":1,\"user_id\":\"x\"}");
    assert_int_equal(req.user_id, 0);
    assert_false(req.has_credential);
}

/* An action name is the whole JSON string: "list" followed by a NUL and
 * more bytes is not "list". */
static void test_action_with_nul_is_unknown(void **state)
{
    (void)state;
    expect_error("{\"action\":\"list\\u0000junk\"}", 400, "unknown_action");
}

/* ---- answers -------------------------------------------------------------- */

static void test_error_json(void **state)
{
    (void)state;
    msg_error e;
    assert_int_equal(msg_fail(&e, 409, "offset_mismatch", "chunk offset %d does not match %d", 0,
                              65536),
                     -1);
    assert_false(e.close);
    assert_null(e.document_status);
    e.expected_offset = 65536;
    json_t *o = msg_error_json(&e);
    assert_non_null(o);
    assert_int_equal(json_object_size(o), 5);
    assert_string_equal(json_string_value(json_object_get(o, "status")), "error");
    assert_int_equal(json_integer_value(json_object_get(o, "code")), 409);
    assert_string_equal(json_string_value(json_object_get(o, "reason")), "offset_mismatch");
    assert_string_equal(json_string_value(json_object_get(o, "message")),
                        "chunk offset 0 does not match 65536");
    assert_int_equal(json_integer_value(json_object_get(o, "expected_offset")), 65536);
    json_decref(o);

    /* 0 is a real expected offset; only negative means "none". */
    e.expected_offset = 0;
    o = msg_error_json(&e);
    assert_non_null(o);
    assert_true(json_is_integer(json_object_get(o, "expected_offset")));
    assert_int_equal(json_integer_value(json_object_get(o, "expected_offset")), 0);
    json_decref(o);

    msg_fail(&e, 404, "not_found", "no such document");
    o = msg_error_json(&e);
    assert_non_null(o);
    assert_int_equal(json_object_size(o), 4);
    assert_null(json_object_get(o, "expected_offset"));
    assert_null(json_object_get(o, "document_status"));
    json_decref(o);

    msg_fail(&e, 409, "not_resumable", "done");
    e.document_status = "completed";
    o = msg_error_json(&e);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "document_status")), "completed");
    json_decref(o);
}

static void test_fail_message_truncated(void **state)
{
    (void)state;
    msg_error e;
    char big[600];
    memset(big, 'm', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    msg_fail(&e, 500, "internal", "%s", big);
    assert_int_equal(strlen(e.message), sizeof e.message - 1);
}

static void test_dump_line(void **state)
{
    (void)state;
    json_t *o = json_pack("{s:s, s:i}", "status", "ok", "document_id", 42);
    assert_non_null(o);
    size_t len = 0;
    char *line = msg_dump_line(o, &len);
    assert_non_null(line);
    assert_string_equal(line, "{\"status\":\"ok\",\"document_id\":42,\"v\":1}\n");
    assert_int_equal(len, strlen(line));
    free(line);
    json_decref(o);

    /* Text with newlines inside is escaped: the answer stays one line. */
    msg_error e;
    msg_fail(&e, 400, "malformed_json", "bad\nline\r");
    o = msg_error_json(&e);
    assert_non_null(o);
    line = msg_dump_line(o, &len);
    assert_non_null(line);
    assert_int_equal(len, strlen(line));
    assert_true(len > 1);
    assert_int_equal(line[len - 1], '\n');
    assert_null(memchr(line, '\n', len - 1));
    assert_null(memchr(line, '\r', len));
    assert_non_null(strstr(line, "\"v\":1"));
    json_t *back = json_loads(line, 0, NULL);
    assert_non_null(back);
    assert_string_equal(json_string_value(json_object_get(back, "message")), "bad\nline\r");
    assert_int_equal(json_integer_value(json_object_get(back, "v")), 1);
    json_decref(back);
    free(line);
    json_decref(o);

    /* A "v" already there is replaced, not doubled. */
    o = json_pack("{s:i}", "v", 7);
    assert_non_null(o);
    line = msg_dump_line(o, &len);
    assert_non_null(line);
    assert_string_equal(line, "{\"v\":1}\n");
    free(line);
    json_decref(o);
}

static void test_progress_line(void **state)
{
    (void)state;
    static const char want[] = "{\"v\":1,\"event\":\"progress\",\"document_id\":42,"
                               "\"received\":65536,\"total\":1048576,"
                               "\"progress\":\"65536/1048576 bytes\"}\n";
    char buf[256];
    int n = msg_progress_line(buf, sizeof buf, 42, 65536, 1048576);
    assert_int_equal(n, (int)strlen(want));
    assert_string_equal(buf, want);

    /* Exactly enough room (text + NUL) works; one byte less does not. */
    char exact[sizeof want];
    assert_int_equal(msg_progress_line(exact, sizeof exact, 42, 65536, 1048576),
                     (int)sizeof want - 1);
    assert_string_equal(exact, want);
    assert_int_equal(msg_progress_line(exact, sizeof exact - 1, 42, 65536, 1048576), -1);

    n = msg_progress_line(buf, sizeof buf, INT64_MAX, INT64_MAX, INT64_MAX);
    assert_true(n > 0);
    assert_non_null(strstr(buf, "\"document_id\":9223372036854775807,"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_upload_ok),
        cmocka_unit_test(test_upload_bad_filenames),
        cmocka_unit_test(test_upload_good_filenames),
        cmocka_unit_test(test_upload_filename_length),
        cmocka_unit_test(test_filename_valid_direct),
        cmocka_unit_test(test_upload_filesize),
        cmocka_unit_test(test_upload_validation_order),
        cmocka_unit_test(test_upload_sha256),
        cmocka_unit_test(test_chunk_ok),
        cmocka_unit_test(test_chunk_fast_path_agrees),
        cmocka_unit_test(test_chunk_length_unreadable_closes),
        cmocka_unit_test(test_chunk_bad_fields_keep_length),
        cmocka_unit_test(test_chunk_length_zero),
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_malformed_and_shape),
        cmocka_unit_test(test_parse_respects_length),
        cmocka_unit_test(test_document_id_actions),
        cmocka_unit_test(test_list_limit),
        cmocka_unit_test(test_auth_fields),
        cmocka_unit_test(test_credential_bounds),
        cmocka_unit_test(test_chunk_ignores_auth),
        cmocka_unit_test(test_action_with_nul_is_unknown),
        cmocka_unit_test(test_error_json),
        cmocka_unit_test(test_fail_message_truncated),
        cmocka_unit_test(test_dump_line),
        cmocka_unit_test(test_progress_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
