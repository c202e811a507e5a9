/* The upload rules that answer before any backend is consulted: malformed
 * lines, chunk headers that cannot be accepted, completion of an upload that
 * is not open or not finished. Backends are real handles: the Redis client
 * points at a local port where nothing listens (so every call fails fast),
 * and no MySQL call is reachable from these paths. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chunkd/log.h"
#include "chunkd/upload.h"

#define MAX_LINES 16

typedef struct sink {
    char *lines[MAX_LINES];
    size_t n;
    int fail; /* make emit refuse, as a full output buffer would */
} sink;

typedef struct fixture {
    chunkd_config cfg;
    metrics metrics;
    upload_env env;
    session s;
    sink out;
    int hold_fd; /* keeps the dead Redis port ours, so nothing else binds it */
    char root[64];
} fixture;

static int emit_cb(void *arg, const char *data, size_t len)
{
    sink *k = arg;
    if (k->fail || k->n == MAX_LINES)
        return -1;
    char *copy = malloc(len + 1);
    if (!copy)
        return -1;
    memcpy(copy, data, len);
    copy[len] = '\0';
    k->lines[k->n++] = copy;
    return 0;
}

/* A mkdtemp template: the prefix and six 'X' for mkdtemp to replace. */
static void tmp_template(char *out, size_t size, const char *prefix)
{
    size_t n = strlen(prefix);
    assert_true(n + 7 <= size);
    memcpy(out, prefix, n);
    memset(out + n, 'X', 6);
    out[n + 6] = '\0';
}

/* A port on 127.0.0.1 that is bound but not listening refuses connections. */
static int dead_port(int *fd_out)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &alen) != 0) {
        close(fd);
        return -1;
    }
    *fd_out = fd;
    return ntohs(a.sin_port);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    config_defaults(&f->cfg);
    tmp_template(f->root, sizeof f->root, "/tmp/chunkd-upload-");
    if (!mkdtemp(f->root)) {
        free(f);
        return -1;
    }
    int port = dead_port(&f->hold_fd);
    if (port > 0) {
        f->cfg.redis_port = port;
        f->cfg.backend_timeout_ms = 500;
        snprintf(f->cfg.storage_dir, sizeof f->cfg.storage_dir, "%s", f->root);
        f->env.rs = rstate_new(&f->cfg);
    }
    if (!f->env.rs) {
        if (port > 0)
            close(f->hold_fd);
        rmdir(f->root);
        free(f);
        return -1;
    }
    f->env.cfg = &f->cfg;
    f->env.node_id = "unit";
    f->env.ds = NULL; /* no path exercised here reaches MySQL */
    f->env.metrics = &f->metrics;
    f->env.boot_id = "";
    rstate_set_metrics(f->env.rs, &f->metrics);
    session_init(&f->s, "unit", "test-peer", emit_cb, &f->out);
    *state = f;
    return 0;
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static int teardown(void **state)
{
    fixture *f = *state;
    session_release(&f->env, &f->s);
    rstate_free(f->env.rs);
    for (size_t i = 0; i < f->out.n; i++)
        free(f->out.lines[i]);
    close(f->hold_fd);
    int rc = nftw(f->root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return rc;
}

static uint64_t feed(fixture *f, const char *line)
{
    uint64_t body = upload_on_line(&f->env, &f->s, line, strlen(line));
    if (session_parked(&f->s)) {
        /* As the worker does at the end of its loop turn. */
        session *group[1] = {&f->s};
        upload_run_deferred(&f->env, group, 1);
        assert_false(session_parked(&f->s));
    }
    return body;
}

/* Checks answer number i is one error line with this code and reason. */
static json_t *assert_error_line(fixture *f, size_t i, int code, const char *reason)
{
    assert_true(i < f->out.n);
    const char *line = f->out.lines[i];
    size_t len = strlen(line);
    assert_true(len > 0);
    assert_int_equal(line[len - 1], '\n');
    assert_null(memchr(line, '\n', len - 1));
    json_error_t jerr;
    json_t *o = json_loads(line, 0, &jerr);
    assert_non_null(o);
    assert_int_equal(json_integer_value(json_object_get(o, "v")), 1);
    assert_string_equal(json_string_value(json_object_get(o, "status")), "error");
    if (json_integer_value(json_object_get(o, "code")) != code ||
        strcmp(json_string_value(json_object_get(o, "reason")), reason) != 0)
        print_error("answer %zu: %s", i, line);
    assert_int_equal(json_integer_value(json_object_get(o, "code")), code);
    assert_string_equal(json_string_value(json_object_get(o, "reason")), reason);
    return o; /* caller decrefs */
}

static void expect_error_line(fixture *f, size_t i, int code, const char *reason)
{
    json_decref(assert_error_line(f, i, code, reason));
}

/* An open upload as upload/resume would leave it: document 42 of 100
 * bytes, 40 acknowledged, its file on disk. */
static void open_upload_42(fixture *f)
{
    open_upload *up = calloc(1, sizeof *up);
    assert_non_null(up);
    up->st.document_id = 42;
    up->st.user_id = 9;
    up->st.filesize = 100;
    up->st.offset = 40;
    up->saved_offset = 40;
    storage_rel_path(42, up->st.path);
    up->fd = storage_create(f->root, 42);
    assert_true(up->fd >= 0);
    char zeros[40] = {0};
    assert_int_equal(storage_pwrite_all(up->fd, zeros, sizeof zeros, 0), STORAGE_OK);
    f->s.user_id = 9;
    f->s.up = up;
}

static void test_malformed_line_keeps_connection(void **state)
{
    fixture *f = *state;
    assert_int_equal(feed(f, "this is not json"), 0);
    assert_int_equal(f->out.n, 1);
    expect_error_line(f, 0, 400, "malformed_json");
    assert_false(f->s.close);
    assert_false(f->s.chunk.active);
    assert_int_equal(f->metrics.counter[M_ERRORS_SENT], 1);

    assert_int_equal(feed(f, "{\"v\":2,\"action\":\"list\"}"), 0);
    assert_int_equal(feed(f, "{\"action\":\"teleport\"}"), 0);
    assert_int_equal(f->out.n, 3);
    expect_error_line(f, 1, 400, "unsupported_version");
    expect_error_line(f, 2, 400, "unknown_action");
    assert_false(f->s.close);
    assert_int_equal(f->metrics.counter[M_ERRORS_SENT], 3);
}

/* The answer goes out at once; the announced bytes are read and dropped,
 * and the connection carries on. */
static void test_chunk_without_open_upload(void **state)
{
    fixture *f = *state;
    assert_int_equal(feed(f, "{\"action\":\"chunk\",\"document_id\":7,\"offset\":0,\"length\":10}"), 10);
    assert_int_equal(f->out.n, 1);
    json_t *o = assert_error_line(f, 0, 409, "upload_not_open");
    assert_null(json_object_get(o, "expected_offset"));
    json_decref(o);
    assert_true(f->s.chunk.active);
    assert_false(f->s.chunk.accepted);

    upload_on_body(&f->env, &f->s, "0123", 4, false);
    upload_on_body(&f->env, &f->s, "456789", 6, true);
    assert_int_equal(f->out.n, 1);
    assert_false(f->s.chunk.active);
    assert_false(f->s.close);

    /* In step: the next line is read as a line. */
    assert_int_equal(feed(f, "{\"action\":\"upload_complete\",\"document_id\":7}"), 0);
    assert_int_equal(f->out.n, 2);
    expect_error_line(f, 1, 409, "upload_not_open");
    assert_false(f->s.close);
}

static void test_chunk_at_max_size_is_skipped_not_closed(void **state)
{
    fixture *f = *state;
    char line[160];
    snprintf(line, sizeof line, "{\"action\":\"chunk\",\"document_id\":7,\"offset\":0,\"length\":%lld}",
             (long long)f->cfg.max_chunk_size);
    assert_int_equal(feed(f, line), (uint64_t)f->cfg.max_chunk_size);
    expect_error_line(f, 0, 409, "upload_not_open");
    assert_false(f->s.close);
}

static void test_chunk_too_large_closes(void **state)
{
    fixture *f = *state;
    char line[160];
    snprintf(line, sizeof line, "{\"action\":\"chunk\",\"document_id\":7,\"offset\":0,\"length\":%lld}",
             (long long)f->cfg.max_chunk_size + 1);
    assert_int_equal(feed(f, line), 0);
    assert_int_equal(f->out.n, 1);
    expect_error_line(f, 0, 413, "chunk_too_large");
    assert_true(f->s.close);
    assert_false(f->s.chunk.active);
}

/* Too large wins over a bad header: reading the bytes to skip them is
 * exactly what must not happen. */
static void test_chunk_too_large_with_bad_header_closes(void **state)
{
    fixture *f = *state;
    assert_int_equal(feed(f, "{\"action\":\"chunk\",\"document_id\":\"x\",\"length\":1099511627776}"), 0);
    assert_int_equal(f->out.n, 1);
    expect_error_line(f, 0, 413, "chunk_too_large");
    assert_true(f->s.close);
}

static void test_invalid_length_closes(void **state)
{
    fixture *f = *state;
    assert_int_equal(feed(f, "{\"action\":\"chunk\",\"document_id\":7,\"offset\":0}"), 0);
    assert_int_equal(f->out.n, 1);
    expect_error_line(f, 0, 400, "invalid_length");
    assert_true(f->s.close);
}

static void test_negative_length_closes(void **state)
{
    fixture *f = *state;
    assert_int_equal(feed(f, "{\"action\":\"chunk\",\"document_id\":7,\"offset\":0,\"length\":-5}"), 0);
    expect_error_line(f, 0, 400, "invalid_length");
    assert_true(f->s.close);
}

static void test_zero_length_stays_open(void **state)
{
    fixture *f = *state;
    assert_int_equal(feed(f, "{\"action\":\"chunk\",\"document_id\":7,\"offset\":0,\"length\":0}"), 0);
    assert_int_equal(f->out.n, 1);
    expect_error_line(f, 0, 400, "invalid_length");
    assert_false(f->s.close);
    assert_false(f->s.chunk.active);
}

static void test_bad_document_id_skips_body(void **state)
{
    fixture *f = *state;
    assert_int_equal(feed(f, "{\"action\":\"chunk\",\"document_id\":0,\"offset\":0,\"length\":5}"), 5);
    assert_int_equal(f->out.n, 1);
    expect_error_line(f, 0, 400, "invalid_document_id");
    assert_true(f->s.chunk.active);
    upload_on_body(&f->env, &f->s, "abcde", 5, true);
    assert_int_equal(f->out.n, 1);
    assert_false(f->s.chunk.active);
    assert_false(f->s.close);

    assert_int_equal(feed(f, "{\"action\":\"chunk\",\"document_id\":7,\"length\":3}"), 3);
    expect_error_line(f, 1, 400, "invalid_offset");
    upload_on_body(&f->env, &f->s, "abc", 3, true);
    assert_int_equal(f->out.n, 2);
    assert_false(f->s.close);
}

/* Who is asking is settled before anything else; nobody signed in and no
 * credential given is a 401 that ends the connection. */
static void test_unauthenticated_requests_close(void **state)
{
    fixture *f = *state;
    static const char *const lines[] = {
        "{\"action\":\"status\",\"document_id\":1}",
        "{\"action\":\"list\"}",
        "{\"action\":\"abort\",\"document_id\":1}",
        "{\"action\":\"resume\",\"document_id\":1}",
        "{\"action\":\"upload\",\"filename\":\"a\",\"filesize\":1}",
        "{\"action\":\"status\",\"document_id\":1,\"user_id\":5}",
    };
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        f->s.close = false;
        assert_int_equal(feed(f, lines[i]), 0);
        assert_int_equal(f->out.n, i + 1);
        expect_error_line(f, i, 401, "unauthorized");
        assert_true(f->s.close);
    }
    assert_int_equal(f->s.user_id, 0);
}

/* Shape errors come before authentication and leave the connection open. */
static void test_validation_before_auth(void **state)
{
    fixture *f = *state;
    assert_int_equal(feed(f, "{\"action\":\"upload\",\"filename\":\"a/b\",\"filesize\":1}"), 0);
    expect_error_line(f, 0, 400, "invalid_filename");
    assert_int_equal(feed(f, "{\"action\":\"status\"}"), 0);
    expect_error_line(f, 1, 400, "invalid_document_id");
    assert_int_equal(feed(f, "{\"action\":\"list\",\"limit\":0}"), 0);
    expect_error_line(f, 2, 400, "invalid_limit");
    assert_false(f->s.close);
}

static void test_emit_failure_closes(void **state)
{
    fixture *f = *state;
    f->out.fail = 1;
    assert_int_equal(feed(f, "nope"), 0);
    assert_int_equal(f->out.n, 0);
    assert_true(f->s.close);
}

static void test_offset_mismatch(void **state)
{
    fixture *f = *state;
    open_upload_42(f);
    assert_int_equal(feed(f, "{\"action\":\"chunk\",\"document_id\":42,\"offset\":0,\"length\":8}"), 8);
    json_t *o = assert_error_line(f, 0, 409, "offset_mismatch");
    assert_int_equal(json_integer_value(json_object_get(o, "expected_offset")), 40);
    json_decref(o);
    upload_on_body(&f->env, &f->s, "dddddddd", 8, true);
    assert_int_equal(f->out.n, 1);
    assert_false(f->s.close);
    /* The dropped bytes never reached the file. */
    struct stat sb;
    assert_int_equal(fstat(f->s.up->fd, &sb), 0);
    assert_int_equal(sb.st_size, 40);
    assert_int_equal(f->s.up->st.offset, 40);
}

static void test_chunk_past_end(void **state)
{
    fixture *f = *state;
    open_upload_42(f);
    assert_int_equal(feed(f, "{\"action\":\"chunk\",\"document_id\":42,\"offset\":40,\"length\":61}"), 61);
    expect_error_line(f, 0, 413, "chunk_past_end");
    char body[61];
    memset(body, 'p', sizeof body);
    upload_on_body(&f->env, &f->s, body, sizeof body, true);
    assert_int_equal(f->out.n, 1);
    assert_false(f->s.close);
    assert_int_equal(f->s.up->st.offset, 40);
}

static void test_chunk_for_other_document(void **state)
{
    fixture *f = *state;
    open_upload_42(f);
    assert_int_equal(feed(f, "{\"action\":\"chunk\",\"document_id\":43,\"offset\":40,\"length\":1}"), 1);
    expect_error_line(f, 0, 409, "upload_not_open");
    upload_on_body(&f->env, &f->s, "q", 1, true);
    assert_int_equal(feed(f, "{\"action\":\"upload_complete\",\"document_id\":43}"), 0);
    expect_error_line(f, 1, 409, "upload_not_open");
    assert_int_equal(f->out.n, 2);
    assert_non_null(f->s.up); /* the open upload is untouched */
}

static void test_complete_before_all_bytes(void **state)
{
    fixture *f = *state;
    open_upload_42(f);
    assert_int_equal(feed(f, "{\"action\":\"upload_complete\",\"document_id\":42}"), 0);
    json_t *o = assert_error_line(f, 0, 409, "incomplete");
    assert_int_equal(json_integer_value(json_object_get(o, "expected_offset")), 40);
    json_decref(o);
    assert_false(f->s.close);
    assert_non_null(f->s.up);
}

/* Redis cannot take the new offset: the chunk is undone on disk too, so
 * the file never holds bytes past the saved offset, and the client hears
 * 503 and may resume. */
static void test_chunk_undone_when_redis_is_down(void **state)
{
    fixture *f = *state;
    open_upload_42(f);
    assert_int_equal(feed(f, "{\"action\":\"chunk\",\"document_id\":42,\"offset\":40,\"length\":60}"), 60);
    assert_int_equal(f->out.n, 0); /* accepted: the answer waits for the bytes */
    assert_true(f->s.chunk.accepted);
    char body[60];
    memset(body, 'd', sizeof body);
    upload_on_body(&f->env, &f->s, body, 25, false);
    upload_on_body(&f->env, &f->s, body + 25, 35, true);
    assert_int_equal(f->out.n, 1);
    expect_error_line(f, 0, 503, "unavailable");
    assert_false(f->s.close);
    assert_int_equal(f->s.up->st.offset, 40);
    struct stat sb;
    assert_int_equal(fstat(f->s.up->fd, &sb), 0);
    assert_int_equal(sb.st_size, 40);
    assert_int_equal(f->metrics.counter[M_CHUNKS_RECEIVED], 0);
    assert_int_equal(f->metrics.counter[M_REDIS_ERRORS], 1);
}

/* A completion hashes the file once and keeps the digest for a retry. A
 * cut-back (here: a checkpoint that failed in the background) makes it
 * stale: the bytes sent again may differ, and the next completion must
 * hash what the file holds then. */
static void test_cut_back_forgets_the_digest(void **state)
{
    fixture *f = *state;
    open_upload_42(f);
    open_upload *up = f->s.up;
    char bytes[100];
    memset(bytes, 'a', sizeof bytes);
    assert_int_equal(storage_pwrite_all(up->fd, bytes, sizeof bytes, 0), STORAGE_OK);
    up->st.offset = up->saved_offset = 100;
    /* Redis is down: the completion hashes, then fails at the lease check. */
    feed(f, "{\"action\":\"upload_complete\",\"document_id\":42}");
    expect_error_line(f, 0, 503, "unavailable");
    assert_true(up->digest[0] != '\0');
    /* A checkpoint's sync had failed: the next completion cuts back to
     * the last good checkpoint (40 bytes). */
    up->st.synced_offset = 40;
    up->sync_error = EIO;
    feed(f, "{\"action\":\"upload_complete\",\"document_id\":42}");
    assert_int_equal(f->out.n, 2);
    assert_int_equal(up->st.offset, 40);
    /* Other bytes arrive for the rest (as accepted chunks would leave
     * them), and the upload completes again. */
    memset(bytes, 'b', sizeof bytes);
    assert_int_equal(storage_pwrite_all(up->fd, bytes, 60, 40), STORAGE_OK);
    up->st.offset = up->saved_offset = 100;
    feed(f, "{\"action\":\"upload_complete\",\"document_id\":42}");
    char want[65];
    assert_int_equal(storage_sha256(up->fd, 100, want), 0);
    assert_string_equal(up->digest, want);
}

int main(void)
{
    /* Quiet: the paths under test log every 401 and backend failure. */
    if (log_set_level("error") != 0)
        return 1;
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_malformed_line_keeps_connection),
        T(test_chunk_without_open_upload),
        T(test_chunk_at_max_size_is_skipped_not_closed),
        T(test_chunk_too_large_closes),
        T(test_chunk_too_large_with_bad_header_closes),
        T(test_invalid_length_closes),
        T(test_negative_length_closes),
        T(test_zero_length_stays_open),
        T(test_bad_document_id_skips_body),
        T(test_unauthenticated_requests_close),
        T(test_validation_before_auth),
        T(test_emit_failure_closes),
        T(test_offset_mismatch),
        T(test_chunk_past_end),
        T(test_chunk_for_other_document),
        T(test_complete_before_all_bytes),
        T(test_chunk_undone_when_redis_is_down),
        T(test_cut_back_forgets_the_digest),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
