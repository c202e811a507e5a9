/* Every error code and reason of docs/PROTOCOL.md that a request can cause,
 * sent on a raw connection: the answer, whether the connection stays open or
 * is closed as the table says, and that the server keeps serving. The
 * errors that come from the server's situation (backends down, idle, shut
 * down, lease lost, full disk) are in it_ops_errors.c. */
#include "harness.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* small limits, so that crossing them is cheap; the server gets them as
 * flags in group_setup */
#define MAX_FILE (1 * IT_MiB)
#define MAX_CHUNK (128 * IT_KiB)
#define MAX_LINE 4096
#define NO_SUCH_DOC INT64_C(900000000000)
#define NO_SUCH_USER INT64_C(900000000000)

static it_server srv;
static it_user u1, u2, udis;

static int group_setup(void **state)
{
    (void)state;
    it_fixture_server(&srv);
    if (it_init("it_errors") != 0 || it_user_create(&u1) != 0 || it_user_create(&u2) != 0 ||
        it_user_create(&udis) != 0 || it_user_set_disabled(udis.id, true) != 0)
        return -1;
    char max_file[32], max_chunk[32], max_line[32];
    snprintf(max_file, sizeof max_file, "%lld", (long long)MAX_FILE);
    snprintf(max_chunk, sizeof max_chunk, "%lld", (long long)MAX_CHUNK);
    snprintf(max_line, sizeof max_line, "%d", MAX_LINE);
    const char *const args[] = {"--workers",        "2",       "--max-file-size", max_file,
                                "--max-chunk-size", max_chunk, "--max-line",      max_line,
                                NULL};
    it_server_opts o = {.args = args};
    return it_server_start(&srv, &o);
}

static void connect_auth(it_sock *s, const it_user *u)
{
    assert_int_equal(it_sock_connect(s, srv.port), 0);
    if (u)
        it_sock_auth(s, u);
}

/* On a fresh connection (authenticated as `as` unless NULL): the answer,
 * then the server closes, and a new connection is served. */
static void expect_closed(const it_user *as, const char *line, int code, const char *reason)
{
    it_sock s;
    connect_auth(&s, as);
    json_t *r = it_sock_req(&s, line);
    it_assert_error(r, code, reason);
    json_decref(r);
    it_assert_closed(&s);
    it_sock_close(&s);
    it_assert_serves(srv.port, &u1);
}

/* ---- framing and request shape --------------------------------------------- */

static void test_request_shape(void **state)
{
    (void)state;
    it_sock s;
    connect_auth(&s, NULL);
    it_expect_error_open(&s, "{\"action\":\"list\"", 400, "malformed_json");
    it_expect_error_open(&s, "not json at all", 400, "malformed_json");
    it_expect_error_open(&s, "{\"action\":\"list\",}", 400, "malformed_json");
    it_expect_error_open(&s, "{\"action\":\"list\"}}", 400, "malformed_json");
    it_expect_error_open(&s, "[1,2,3]", 400, "invalid_request");
    it_expect_error_open(&s, "[]", 400, "invalid_request");
    it_expect_error_open(&s, "{}", 400, "invalid_request");
    it_expect_error_open(&s, "{\"v\":1}", 400, "invalid_request");
    it_expect_error_open(&s, "{\"action\":5}", 400, "invalid_request");
    it_expect_error_open(&s, "{\"action\":null}", 400, "invalid_request");
    it_expect_error_open(&s, "{\"action\":[\"list\"]}", 400, "invalid_request");
    it_expect_error_open(&s, "{\"action\":\"fly\"}", 400, "unknown_action");
    it_expect_error_open(&s, "{\"action\":\"\"}", 400, "unknown_action");
    it_expect_error_open(&s, "{\"action\":\"LIST\"}", 400, "unknown_action");
    it_expect_error_open(&s, "{\"action\":\"list\",\"v\":2}", 400, "unsupported_version");
    it_expect_error_open(&s, "{\"action\":\"list\",\"v\":0}", 400, "unsupported_version");
    it_expect_error_open(&s, "{\"action\":\"upload\",\"v\":2,\"filename\":\"a\",\"filesize\":1}", 400,
                "unsupported_version");
    it_sock_close(&s);
    it_assert_serves(srv.port, &u1);
    it_pass();
}

static void test_line_too_long(void **state)
{
    (void)state;
    /* a line that ends, but too late */
    size_t n = MAX_LINE + 1000;
    char *line = malloc(n + 1);
    assert_non_null(line);
    int head = snprintf(line, n, "{\"action\":\"list\",\"pad\":\"");
    memset(line + head, 'a', n - (size_t)head - 2);
    memcpy(line + n - 2, "\"}", 2);
    line[n] = '\0';
    expect_closed(&u1, line, 400, "line_too_long");

    /* no newline at all: the server must not wait for one forever */
    it_sock s;
    connect_auth(&s, &u1);
    memset(line, 'b', n);
    assert_int_equal(it_sock_send(&s, line, n), 0);
    json_t *r;
    assert_int_equal(it_sock_read_json(&s, IT_REPLY_TIMEOUT_MS, &r), IT_READ_OK);
    it_assert_error(r, 400, "line_too_long");
    json_decref(r);
    it_assert_closed(&s);
    it_sock_close(&s);

    /* exactly at the limit is fine: max_line counts the line without '\n' */
    memset(line, 0, n + 1);
    head = snprintf(line, n, "{\"action\":\"it_probe\",\"pad\":\"");
    memset(line + head, 'c', (size_t)MAX_LINE - (size_t)head - 2);
    memcpy(line + MAX_LINE - 2, "\"}", 2);
    line[MAX_LINE] = '\0';
    connect_auth(&s, NULL);
    it_expect_error_open(&s, line, 400, "unknown_action");
    it_sock_close(&s);
    free(line);
    it_assert_serves(srv.port, &u1);
    it_pass();
}

/* ---- upload validation ------------------------------------------------------- */

static void test_upload_filename(void **state)
{
    (void)state;
    it_sock s;
    connect_auth(&s, &u1);
    static const char *const bad_names[] = {
        "\"filesize\":10",                          /* missing */
        "\"filename\":5,\"filesize\":10",
        "\"filename\":null,\"filesize\":10",
        "\"filename\":\"\",\"filesize\":10",
        "\"filename\":\".\",\"filesize\":10",
        "\"filename\":\"..\",\"filesize\":10",
        "\"filename\":\"a/b\",\"filesize\":10",
        "\"filename\":\"/etc/passwd\",\"filesize\":10",
        "\"filename\":\"../x\",\"filesize\":10",
        "\"filename\":\"a\\\\b\",\"filesize\":10",
        "\"filename\":\"a\\u0001b\",\"filesize\":10",
        "\"filename\":\"tab\\there\",\"filesize\":10",
        "\"filename\":\"new\\nline\",\"filesize\":10",
        "\"filename\":\"a\\u001fb\",\"filesize\":10",
        "\"filename\":\"a\\u007fb\",\"filesize\":10",
        "\"filename\":\"a\\u0000b\",\"filesize\":10",
    };
    char line[1024];
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        it_line(line, sizeof line, "{\"action\":\"upload\",%s}", bad_names[i]);
        it_expect_error_open(&s, line, 400, "invalid_filename");
    }
    /* 256 bytes, in ASCII and in two-byte characters */
    char name[600];
    memset(name, 'n', 256);
    name[256] = '\0';
    it_line(line, sizeof line, "{\"action\":\"upload\",\"filename\":\"%s\",\"filesize\":10}",
            name);
    it_expect_error_open(&s, line, 400, "invalid_filename");
    name[0] = '\0';
    for (int i = 0; i < 128; i++)
        strcat(name, "\xc3\xa9");
    it_line(line, sizeof line, "{\"action\":\"upload\",\"filename\":\"%s\",\"filesize\":10}",
            name);
    it_expect_error_open(&s, line, 400, "invalid_filename");
    /* 255 bytes is the largest name accepted, and it is kept as given */
    memset(name, 'n', 255);
    name[255] = '\0';
    it_line(line, sizeof line, "{\"action\":\"upload\",\"filename\":\"%s\",\"filesize\":10}",
            name);
    json_t *r = it_sock_req(&s, line);
    it_assert_ok(r, "upload");
    it_doc d;
    it_assert_doc_status(it_json_int(r, "document_id"), "uploading", &d);
    assert_string_equal(d.filename, name);
    json_decref(r);
    it_sock_close(&s);
    it_assert_serves(srv.port, &u1);
    it_pass();
}

static void test_upload_filesize(void **state)
{
    (void)state;
    it_sock s;
    connect_auth(&s, &u1);
    static const char *const bad_sizes[] = {
        "",  ",\"filesize\":-1", ",\"filesize\":\"10\"", ",\"filesize\":1.5",
        ",\"filesize\":1e3", ",\"filesize\":true", ",\"filesize\":null",
        ",\"filesize\":-9223372036854775808",
    };
    char line[1024];
    for (size_t i = 0; i < sizeof bad_sizes / sizeof bad_sizes[0]; i++) {
        it_line(line, sizeof line, "{\"action\":\"upload\",\"filename\":\"f\"%s}", bad_sizes[i]);
        it_expect_error_open(&s, line, 400, "invalid_filesize");
    }
    it_line(line, sizeof line, "{\"action\":\"upload\",\"filename\":\"f\",\"filesize\":%lld}",
            (long long)MAX_FILE + 1);
    it_expect_error_open(&s, line, 413, "file_too_large");
    it_line(line, sizeof line,
            "{\"action\":\"upload\",\"filename\":\"f\",\"filesize\":9223372036854775807}");
    it_expect_error_open(&s, line, 413, "file_too_large");
    /* max_file_size itself is accepted */
    it_line(line, sizeof line, "{\"action\":\"upload\",\"filename\":\"f\",\"filesize\":%lld}",
            (long long)MAX_FILE);
    json_t *r = it_sock_req(&s, line);
    it_assert_ok(r, "upload");
    json_decref(r);
    it_sock_close(&s);
    it_assert_serves(srv.port, &u1);
    it_pass();
}

static void test_upload_sha256(void **state)
{
    (void)state;
    it_sock s;
    connect_auth(&s, &u1);
    char hex63[64], hex65[66], nonhex[65];
    memset(hex63, 'a', 63);
    hex63[63] = '\0';
    memset(hex65, 'b', 65);
    hex65[65] = '\0';
    memset(nonhex, 'g', 64);
    nonhex[64] = '\0';
    char q63[80], q65[80], qnon[80];
    snprintf(q63, sizeof q63, "\"%s\"", hex63);
    snprintf(q65, sizeof q65, "\"%s\"", hex65);
    snprintf(qnon, sizeof qnon, "\"%s\"", nonhex);
    const char *const bad_sha[] = {"\"abc\"", "\"\"", "12345", "[]", q63, q65, qnon};
    char line[1024];
    for (size_t i = 0; i < sizeof bad_sha / sizeof bad_sha[0]; i++) {
        it_line(line, sizeof line,
                "{\"action\":\"upload\",\"filename\":\"f\",\"filesize\":10,\"sha256\":%s}",
                bad_sha[i]);
        it_expect_error_open(&s, line, 400, "invalid_sha256");
    }
    it_sock_close(&s);
    it_assert_serves(srv.port, &u1);
    it_pass();
}

/* "Validation, in this order, each with its own reason": a request with two
 * faults is answered with the first one in the table. */
static void test_upload_validation_order(void **state)
{
    (void)state;
    it_sock s;
    connect_auth(&s, &u1);
    char line[1024];
    it_expect_error_open(&s, "{\"action\":\"upload\",\"filename\":\"a/b\",\"filesize\":-1}", 400,
                "invalid_filename");
    it_expect_error_open(&s, "{\"action\":\"upload\",\"filename\":\"f\",\"filesize\":-1,"
                    "\"sha256\":\"nothex\"}",
                400, "invalid_filesize");
    it_line(line, sizeof line,
            "{\"action\":\"upload\",\"filename\":\"f\",\"filesize\":%lld,\"sha256\":\"x\"}",
            (long long)MAX_FILE + 1);
    it_expect_error_open(&s, line, 413, "file_too_large");
    it_sock_close(&s);

    /* validation comes before authentication: no 401, no close */
    connect_auth(&s, NULL);
    it_line(line, sizeof line,
            "{\"action\":\"upload\",\"filename\":\"f\",\"filesize\":10,\"sha256\":\"x\","
            "\"user_id\":%lld,\"credential\":\"wrong\"}",
            (long long)u1.id);
    it_expect_error_open(&s, line, 400, "invalid_sha256");
    it_sock_close(&s);
    it_assert_serves(srv.port, &u1);
    it_pass();
}

/* ---- authentication ------------------------------------------------------------ */

static void test_unauthorized(void **state)
{
    (void)state;
    char line[512];
    static const char *const actions[] = {
        "\"action\":\"upload\",\"filename\":\"f\",\"filesize\":1",
        "\"action\":\"resume\",\"document_id\":1",
        "\"action\":\"status\",\"document_id\":1",
        "\"action\":\"list\"",
        "\"action\":\"abort\",\"document_id\":1",
    };
    for (size_t i = 0; i < sizeof actions / sizeof actions[0]; i++) {
        /* wrong credential */
        it_line(line, sizeof line, "{%s,\"user_id\":%lld,\"credential\":\"%.63s0\"}",
                actions[i], (long long)u1.id, u2.credential);
        expect_closed(NULL, line, 401, "unauthorized");
        /* unknown user */
        it_line(line, sizeof line, "{%s,\"user_id\":%lld,\"credential\":\"%s\"}", actions[i],
                (long long)NO_SUCH_USER, u1.credential);
        expect_closed(NULL, line, 401, "unauthorized");
        /* disabled user with its right credential */
        it_line(line, sizeof line, "{%s,\"user_id\":%lld,\"credential\":\"%s\"}", actions[i],
                (long long)udis.id, udis.credential);
        expect_closed(NULL, line, 401, "unauthorized");
        /* nothing at all on a fresh connection */
        it_line(line, sizeof line, "{%s}", actions[i]);
        expect_closed(NULL, line, 401, "unauthorized");
        /* another user's id without its credential, on an authenticated
         * connection */
        it_line(line, sizeof line, "{%s,\"user_id\":%lld}", actions[i], (long long)u2.id);
        expect_closed(&u1, line, 401, "unauthorized");
    }
    /* a user id with the credential of another user */
    it_line(line, sizeof line, "{\"action\":\"list\",\"user_id\":%lld,\"credential\":\"%s\"}",
            (long long)u1.id, u2.credential);
    expect_closed(NULL, line, 401, "unauthorized");
    /* an authenticated connection may switch user with that user's credential */
    it_sock s;
    connect_auth(&s, &u1);
    it_sock_auth(&s, &u2);
    it_sock_close(&s);
    it_pass();
}

/* ---- documents: 403, 404, invalid ids, limits ---------------------------------- */

static void test_documents(void **state)
{
    (void)state;
    it_sock s1, s2;
    connect_auth(&s1, &u1);
    int64_t id = it_sock_upload(&s1, "mine.bin", 100);
    connect_auth(&s2, &u2);
    char line[256];
    static const char *const acts[] = {"status", "resume", "abort"};
    for (size_t i = 0; i < 3; i++) {
        it_line(line, sizeof line, "{\"action\":\"%s\",\"document_id\":%lld}", acts[i],
                (long long)id);
        it_expect_error_open(&s2, line, 403, "forbidden");
        it_line(line, sizeof line, "{\"action\":\"%s\",\"document_id\":%lld}", acts[i],
                (long long)NO_SUCH_DOC);
        it_expect_error_open(&s2, line, 404, "not_found");
        static const char *const bad_ids[] = {"", ",\"document_id\":\"1\"", ",\"document_id\":0",
                                              ",\"document_id\":-5", ",\"document_id\":1.5",
                                              ",\"document_id\":null"};
        for (size_t j = 0; j < sizeof bad_ids / sizeof bad_ids[0]; j++) {
            it_line(line, sizeof line, "{\"action\":\"%s\"%s}", acts[i], bad_ids[j]);
            it_expect_error_open(&s2, line, 400, "invalid_document_id");
        }
    }
    /* u2's abort did not touch u1's upload, which u1 can still finish */
    it_assert_doc_status(id, "uploading", NULL);
    assert_int_equal(it_redis_exists(id), 1);
    char data[100];
    it_random_bytes(data, sizeof data);
    it_sock_chunk_ok(&s1, id, 0, data, sizeof data);
    it_line(line, sizeof line, "{\"action\":\"upload_complete\",\"document_id\":%lld}",
            (long long)id);
    json_t *r = it_sock_req(&s1, line);
    assert_string_equal(it_json_str(r, "status"), "SUCCESS");
    json_decref(r);
    it_expect_error_open(&s2, "{\"action\":\"upload_complete\"}", 400, "invalid_document_id");
    it_expect_error_open(&s2, "{\"action\":\"upload_complete\",\"document_id\":\"x\"}", 400,
                "invalid_document_id");

    static const char *const bad_limits[] = {"0", "1001", "-1", "\"5\"", "1.5", "null",
                                             "99999999999"};
    for (size_t i = 0; i < sizeof bad_limits / sizeof bad_limits[0]; i++) {
        it_line(line, sizeof line, "{\"action\":\"list\",\"limit\":%s}", bad_limits[i]);
        it_expect_error_open(&s2, line, 400, "invalid_limit");
    }
    r = it_sock_req(&s2, "{\"action\":\"list\",\"limit\":1000}");
    it_assert_ok(r, "list");
    json_decref(r);
    r = it_sock_req(&s2, "{\"action\":\"list\",\"limit\":1}");
    it_assert_ok(r, "list");
    json_decref(r);
    it_sock_close(&s1);
    it_sock_close(&s2);
    it_assert_serves(srv.port, &u1);
    it_pass();
}

/* ---- chunks -------------------------------------------------------------------- */

static void test_chunk_errors_keep_connection(void **state)
{
    (void)state;
    it_sock s, other;
    connect_auth(&s, &u1);
    connect_auth(&other, &u1);
    const int64_t size = 1000;
    int64_t id = it_sock_upload(&s, "chunks.bin", size);
    int64_t elsewhere = it_sock_upload(&other, "other.bin", 10);
    char hdr[256];

    it_line(hdr, sizeof hdr, "{\"action\":\"chunk\",\"offset\":0,\"length\":3}");
    it_expect_chunk_error_open(&s, hdr, 3, 400, "invalid_document_id");
    it_line(hdr, sizeof hdr, "{\"action\":\"chunk\",\"document_id\":\"%lld\",\"offset\":0,"
                             "\"length\":3}", (long long)id);
    it_expect_chunk_error_open(&s, hdr, 3, 400, "invalid_document_id");
    it_line(hdr, sizeof hdr, "{\"action\":\"chunk\",\"document_id\":0,\"offset\":0,\"length\":3}");
    it_expect_chunk_error_open(&s, hdr, 3, 400, "invalid_document_id");
    /* order: the document before the offset */
    it_line(hdr, sizeof hdr, "{\"action\":\"chunk\",\"document_id\":-1,\"offset\":\"x\","
                             "\"length\":3}");
    it_expect_chunk_error_open(&s, hdr, 3, 400, "invalid_document_id");

    it_line(hdr, sizeof hdr, "{\"action\":\"chunk\",\"document_id\":%lld,\"offset\":0,"
                             "\"length\":7}", (long long)elsewhere);
    it_expect_chunk_error_open(&s, hdr, 7, 409, "upload_not_open");
    it_line(hdr, sizeof hdr, "{\"action\":\"chunk\",\"document_id\":%lld,\"offset\":0,"
                             "\"length\":7}", (long long)NO_SUCH_DOC);
    it_expect_chunk_error_open(&s, hdr, 7, 409, "upload_not_open");

    it_line(hdr, sizeof hdr, "{\"action\":\"chunk\",\"document_id\":%lld,\"length\":5}",
            (long long)id);
    it_expect_chunk_error_open(&s, hdr, 5, 400, "invalid_offset");
    it_line(hdr, sizeof hdr, "{\"action\":\"chunk\",\"document_id\":%lld,\"offset\":\"0\","
                             "\"length\":5}", (long long)id);
    it_expect_chunk_error_open(&s, hdr, 5, 400, "invalid_offset");
    /* an offset is a position in the file: a negative one is not an offset */
    it_line(hdr, sizeof hdr, "{\"action\":\"chunk\",\"document_id\":%lld,\"offset\":-1,"
                             "\"length\":5}", (long long)id);
    it_expect_chunk_error_open(&s, hdr, 5, 400, "invalid_offset");
    it_line(hdr, sizeof hdr, "{\"action\":\"chunk\",\"document_id\":%lld,\"offset\":0.5,"
                             "\"length\":5}", (long long)id);
    it_expect_chunk_error_open(&s, hdr, 5, 400, "invalid_offset");

    static const int64_t wrong_offsets[] = {5, 1, 1000};
    for (size_t i = 0; i < 3; i++) {
        it_line(hdr, sizeof hdr, "{\"action\":\"chunk\",\"document_id\":%lld,\"offset\":%lld,"
                                 "\"length\":5}", (long long)id, (long long)wrong_offsets[i]);
        json_t *r = it_sock_chunk(&s, hdr, NULL, 5);
        it_assert_error(r, 409, "offset_mismatch");
        assert_int_equal(it_json_int(r, "expected_offset"), 0);
        json_decref(r);
        it_assert_open(&s);
    }

    it_line(hdr, sizeof hdr, "{\"action\":\"chunk\",\"document_id\":%lld,\"offset\":0,"
                             "\"length\":%lld}", (long long)id, (long long)size + 1);
    it_expect_chunk_error_open(&s, hdr, (size_t)size + 1, 413, "chunk_past_end");
    it_line(hdr, sizeof hdr, "{\"action\":\"chunk\",\"document_id\":%lld,\"offset\":0,"
                             "\"length\":0}", (long long)id);
    it_expect_chunk_error_open(&s, hdr, 0, 400, "invalid_length");

    /* nothing above moved the upload: the bytes that count are these */
    it_rkey k;
    assert_int_equal(it_redis_upload(id, &k), 0);
    assert_int_equal(k.offset, 0);
    unsigned char data[1000];
    it_random_bytes(data, sizeof data);
    char sha[65];
    it_sha256_hex(data, sizeof data, sha);
    it_sock_chunk_ok(&s, id, 0, data, 600);
    it_line(hdr, sizeof hdr, "{\"action\":\"chunk\",\"document_id\":%lld,\"offset\":600,"
                             "\"length\":401}", (long long)id);
    it_expect_chunk_error_open(&s, hdr, 401, 413, "chunk_past_end");
    it_line(hdr, sizeof hdr, "{\"action\":\"chunk\",\"document_id\":%lld,\"offset\":0,"
                             "\"length\":400}", (long long)id);
    json_t *r = it_sock_chunk(&s, hdr, NULL, 400);
    it_assert_error(r, 409, "offset_mismatch");
    assert_int_equal(it_json_int(r, "expected_offset"), 600);
    json_decref(r);

    /* incomplete: row unchanged, then finish */
    char line[128];
    it_line(line, sizeof line, "{\"action\":\"upload_complete\",\"document_id\":%lld}",
            (long long)id);
    r = it_sock_req(&s, line);
    it_assert_error(r, 409, "incomplete");
    assert_int_equal(it_json_int(r, "expected_offset"), 600);
    json_decref(r);
    it_assert_open(&s);
    it_assert_doc_status(id, "uploading", NULL);
    it_sock_chunk_ok(&s, id, 600, data + 600, 400);
    it_line(line, sizeof line, "{\"action\":\"upload_complete\",\"document_id\":%lld}",
            (long long)elsewhere);
    it_expect_error_open(&s, line, 409, "upload_not_open");
    it_line(line, sizeof line, "{\"action\":\"upload_complete\",\"document_id\":%lld}",
            (long long)id);
    r = it_sock_req(&s, line);
    assert_string_equal(it_json_str(r, "status"), "SUCCESS");
    assert_string_equal(it_json_str(r, "sha256"), sha);
    json_decref(r);
    it_assert_stored(&srv, id, size, sha);
    /* completed: no longer open, and not resumable */
    it_expect_error_open(&s, line, 409, "upload_not_open");
    it_line(line, sizeof line, "{\"action\":\"resume\",\"document_id\":%lld}", (long long)id);
    r = it_sock_req(&s, line);
    it_assert_error(r, 409, "not_resumable");
    assert_string_equal(it_json_str(r, "document_status"), "completed");
    json_decref(r);
    it_line(line, sizeof line, "{\"action\":\"abort\",\"document_id\":%lld}", (long long)id);
    it_expect_error_open(&s, line, 409, "not_resumable");
    it_assert_doc_status(id, "completed", NULL);
    it_sock_close(&s);
    it_sock_close(&other);
    it_assert_serves(srv.port, &u1);
    it_pass();
}

/* A chunk header whose byte count cannot be trusted ends the connection.
 * Only the header is sent: the server must answer without the bytes. */
static void test_chunk_errors_close(void **state)
{
    (void)state;
    static const char *const bad_lengths[] = {"", ",\"length\":\"5\"", ",\"length\":-1",
                                              ",\"length\":1.5", ",\"length\":null"};
    char hdr[256];
    for (size_t i = 0; i < sizeof bad_lengths / sizeof bad_lengths[0]; i++) {
        it_sock s;
        connect_auth(&s, &u1);
        int64_t id = it_sock_upload(&s, "len.bin", 100);
        it_line(hdr, sizeof hdr, "{\"action\":\"chunk\",\"document_id\":%lld,\"offset\":0%s}",
                (long long)id, bad_lengths[i]);
        json_t *r = it_sock_req(&s, hdr);
        it_assert_error(r, 400, "invalid_length");
        json_decref(r);
        it_assert_closed(&s);
        it_sock_close(&s);
        /* the upload itself survives the closed connection */
        it_assert_doc_status(id, "uploading", NULL);
    }
    it_sock s;
    connect_auth(&s, &u1);
    int64_t id = it_sock_upload(&s, "big.bin", MAX_FILE);
    it_line(hdr, sizeof hdr, "{\"action\":\"chunk\",\"document_id\":%lld,\"offset\":0,"
                             "\"length\":%lld}", (long long)id, (long long)MAX_CHUNK + 1);
    json_t *r = it_sock_req(&s, hdr);
    it_assert_error(r, 413, "chunk_too_large");
    json_decref(r);
    it_assert_closed(&s);
    it_sock_close(&s);
    /* a chunk of exactly max_chunk_size is fine */
    connect_auth(&s, &u1);
    it_line(hdr, sizeof hdr, "{\"action\":\"resume\",\"document_id\":%lld}", (long long)id);
    r = it_sock_req(&s, hdr);
    it_assert_ok(r, "resume");
    assert_int_equal(it_json_int(r, "offset"), 0);
    json_decref(r);
    it_sock_chunk_ok(&s, id, 0, NULL, (size_t)MAX_CHUNK);
    it_sock_close(&s);
    it_assert_serves(srv.port, &u1);
    it_pass();
}

/* Reads what the server sends until it ends the stream: 0 for an orderly
 * end (FIN), the errno of a reset (ECONNRESET) or another error, or -1
 * when nothing ends within the reply timeout. The bytes go to buf
 * (NUL-terminated, the rest dropped). */
static int read_until_end(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    int64_t deadline = it_now_ms() + IT_REPLY_TIMEOUT_MS;
    for (;;) {
        int64_t left = deadline - it_now_ms();
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            return -1;
        char tmp[4096];
        ssize_t n = recv(fd, tmp, sizeof tmp, 0);
        if (n == 0)
            break;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno;
        size_t take = (size_t)n < cap - 1 - len ? (size_t)n : cap - 1 - len;
        memcpy(buf + len, tmp, take);
        len += take;
        buf[len] = '\0';
    }
    buf[len] = '\0';
    return 0;
}

/* A request refused with a close while the client is still sending (a
 * chunk over the limit with its bytes behind it, an HTTP request with a
 * body it will not take): the answer, then an orderly end of the stream,
 * never a reset, which could destroy the answer before the client or a
 * proxy reads it; the bytes still coming are read and dropped, and the
 * upload is let go at once, not when the client finally closes. */
static void test_error_close_is_orderly(void **state)
{
    (void)state;
    static char filler[128 * 1024];
    memset(filler, 'x', sizeof filler);
    char got[1024];

    it_sock s;
    connect_auth(&s, &u1);
    int64_t id = it_sock_upload(&s, "orderly.bin", MAX_FILE);
    char hdr[256];
    it_line(hdr, sizeof hdr, "{\"action\":\"chunk\",\"document_id\":%lld,\"offset\":0,"
                             "\"length\":%lld}\n", (long long)id, (long long)MAX_CHUNK + 1);
    assert_int_equal(it_sock_send_str(&s, hdr), 0);
    assert_int_equal(it_sock_send(&s, filler, sizeof filler), 0);
    assert_int_equal(read_until_end(s.fd, got, sizeof got), 0);
    assert_non_null(strstr(got, "\"reason\":\"chunk_too_large\""));
    /* the client still holds its end open: the upload is free already */
    it_sock s2;
    connect_auth(&s2, &u1);
    it_line(hdr, sizeof hdr, "{\"action\":\"resume\",\"document_id\":%lld}", (long long)id);
    json_t *r = it_sock_req(&s2, hdr);
    it_assert_ok(r, "resume");
    assert_int_equal(it_json_int(r, "offset"), 0);
    json_decref(r);
    it_sock_close(&s2);
    /* more bytes are dropped, not answered with a reset */
    assert_int_equal(it_sock_send(&s, filler, sizeof filler), 0);
    assert_int_equal(read_until_end(s.fd, got, sizeof got), 0);
    it_sock_close(&s);

    assert_int_equal(it_sock_connect(&s, srv.port), 0);
    assert_int_equal(it_sock_send_str(&s, "GET /x HTTP/1.1\r\nHost: x\r\n"
                                          "Content-Length: 1000000\r\n\r\n"),
                     0);
    assert_int_equal(it_sock_send(&s, filler, sizeof filler), 0);
    assert_int_equal(read_until_end(s.fd, got, sizeof got), 0);
    assert_int_equal(strncmp(got, "HTTP/1.1 400 ", 13), 0);
    /* A client that never closes is not waited for long (2 s): once the
     * server has closed, what the client sends is answered with a reset. */
    int64_t deadline = it_now_ms() + IT_REPLY_TIMEOUT_MS;
    int end = 0;
    while (end == 0 && it_now_ms() < deadline) {
        if (send(s.fd, "x", 1, MSG_NOSIGNAL) < 0) {
            end = errno;
            break;
        }
        it_sleep_ms(100);
        struct pollfd p = {.fd = s.fd, .events = POLLIN};
        char c;
        if (poll(&p, 1, 0) == 1 && recv(s.fd, &c, 1, MSG_DONTWAIT) < 0 && errno != EAGAIN)
            end = errno;
    }
    assert_true(end == ECONNRESET || end == EPIPE);
    it_sock_close(&s);
    it_assert_serves(srv.port, &u1);
    it_pass();
}

/* ---- 422 file_invalid: the file changed behind the server's back --------------- */

static void file_invalid_case(int how)
{
    it_sock s;
    connect_auth(&s, &u1);
    int64_t id = it_sock_upload(&s, "tampered.bin", 1000);
    it_sock_chunk_ok(&s, id, 0, NULL, 1000);
    char part[IT_PATH_MAX + 64];
    it_upload_path(&srv, id, part, sizeof part);
    if (how == 0)
        assert_int_equal(chmod(part, 0600), 0);
    else if (how == 1)
        assert_int_equal(truncate(part, 500), 0);
    else
        assert_int_equal(unlink(part), 0);
    char line[128];
    it_line(line, sizeof line, "{\"action\":\"upload_complete\",\"document_id\":%lld}",
            (long long)id);
    it_expect_error_open(&s, line, 422, "file_invalid");
    it_doc d;
    it_assert_doc_status(id, "failed", &d);
    assert_false(d.failure_reason_null);
    assert_true(d.file_path_null || d.file_path[0] != '\0');
    assert_int_equal(access(part, F_OK), -1);
    assert_int_equal(it_redis_exists(id), 0);
    it_sock_close(&s);
}

static void test_file_invalid(void **state)
{
    (void)state;
    file_invalid_case(0); /* permissions */
    file_invalid_case(1); /* size */
    file_invalid_case(2); /* gone */
    it_assert_serves(srv.port, &u1);
    it_pass();
}

/* ---- leases: one writer per upload -------------------------------------------- */

static void test_locked(void **state)
{
    (void)state;
    it_sock a, b;
    connect_auth(&a, &u1);
    connect_auth(&b, &u1);
    int64_t id = it_sock_upload(&a, "leased.bin", 2000);
    char line[160];
    it_line(line, sizeof line, "{\"action\":\"resume\",\"document_id\":%lld}", (long long)id);
    json_t *r = it_sock_req(&b, line);
    it_assert_error(r, 409, "locked");
    int64_t retry = it_json_int(r, "retry_after_ms");
    assert_true(retry > 0 && retry <= 10000);
    json_decref(r);
    it_assert_open(&b);
    /* b has not opened it, and a keeps writing undisturbed */
    char hdr[160];
    it_line(hdr, sizeof hdr, "{\"action\":\"chunk\",\"document_id\":%lld,\"offset\":0,"
                             "\"length\":1000}", (long long)id);
    it_expect_chunk_error_open(&b, hdr, 1000, 409, "upload_not_open");
    it_sock_chunk_ok(&a, id, 0, NULL, 1000);

    /* once a closes, its lease goes back and b takes over */
    it_sock_close(&a);
    int64_t deadline = it_now_ms() + 10000;
    for (;;) {
        r = it_sock_req(&b, line);
        const char *reason = json_string_value(json_object_get(r, "reason"));
        if (!reason || strcmp(reason, "locked") != 0 || it_now_ms() > deadline)
            break;
        json_decref(r);
        it_sleep_ms(50);
    }
    it_assert_ok(r, "resume");
    assert_int_equal(it_json_int(r, "offset"), 1000);
    json_decref(r);
    it_sock_chunk_ok(&b, id, 1000, NULL, 1000);
    it_line(line, sizeof line, "{\"action\":\"upload_complete\",\"document_id\":%lld}",
            (long long)id);
    r = it_sock_req(&b, line);
    assert_string_equal(it_json_str(r, "status"), "SUCCESS");
    json_decref(r);
    it_sock_close(&b);
    it_pass();
}

static void test_server_stops_cleanly(void **state)
{
    (void)state;
    it_assert_server_stops_cleanly(&srv);
    it_pass();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        IT_FIXTURE_TEST(test_request_shape),
        IT_FIXTURE_TEST(test_line_too_long),
        IT_FIXTURE_TEST(test_upload_filename),
        IT_FIXTURE_TEST(test_upload_filesize),
        IT_FIXTURE_TEST(test_upload_sha256),
        IT_FIXTURE_TEST(test_upload_validation_order),
        IT_FIXTURE_TEST(test_unauthorized),
        IT_FIXTURE_TEST(test_documents),
        IT_FIXTURE_TEST(test_chunk_errors_keep_connection),
        IT_FIXTURE_TEST(test_chunk_errors_close),
        IT_FIXTURE_TEST(test_error_close_is_orderly),
        IT_FIXTURE_TEST(test_file_invalid),
        IT_FIXTURE_TEST(test_locked),
        IT_FIXTURE_TEST(test_server_stops_cleanly),
    };
    return cmocka_run_group_tests(tests, group_setup, it_fixture_group_teardown);
}
