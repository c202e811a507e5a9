/* Interrupted uploads continue where the server's acknowledged bytes end:
 * after the chunkup process is killed, after a connection drops in the
 * middle of a chunk, and after the Redis state is lost. */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHUNK (64 * IT_KiB)

static it_server srv;
static it_user user;
static char workdir[IT_DIR_MAX];

static int group_setup(void **state)
{
    (void)state;
    it_fixture_server(&srv);
    if (it_init("it_resume") != 0 || it_user_create(&user) != 0 ||
        it_tmpdir("files", workdir, sizeof workdir) != 0)
        return -1;
    static const char *const args[] = {"--workers", "2", NULL};
    it_server_opts o = {.args = args};
    return it_server_start(&srv, &o);
}

static int group_teardown(void **state)
{
    it_fixture_group_teardown(state);
    it_rmtree(workdir);
    return 0;
}

static int64_t file_size_at(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
}

/* The upload's Redis offset once it has stopped moving (the server may
 * still be writing chunks that were in flight when the client went away). */
static int64_t settled_offset(int64_t id)
{
    int64_t last = -2, deadline = it_now_ms() + 10000;
    while (it_now_ms() < deadline) {
        it_rkey k;
        assert_int_equal(it_redis_upload(id, &k), 0);
        assert_true(k.exists);
        if (k.offset == last)
            return last;
        last = k.offset;
        it_sleep_ms(300);
    }
    fail_msg("the offset of upload %lld kept moving for 10 s", (long long)id);
    return -1;
}

/* The document_id recorded in chunkup's state file, or 0. */
static int64_t state_file_document(const char *path)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root) {
        fprintf(stderr, "it: state file %s: %s\n", path, jerr.text);
        return 0;
    }
    int64_t id = 0;
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(root, "uploads"), i, e)
    {
        json_t *d = json_object_get(e, "document_id");
        if (json_is_integer(d))
            id = (int64_t)json_integer_value(d);
    }
    json_decref(root);
    return id;
}

static void test_cli_killed_then_resumed(void **state)
{
    (void)state;
    const int64_t size = 8 * IT_MiB;
    it_user u;
    assert_int_equal(it_user_create(&u), 0);
    char path[IT_PATH_MAX + 64], state_path[IT_PATH_MAX + 64], sha[65];
    char out1[IT_PATH_MAX + 64], err1[IT_PATH_MAX + 64], err2[IT_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/killed.bin", workdir);
    snprintf(state_path, sizeof state_path, "%s/uploads_state.json", workdir);
    snprintf(out1, sizeof out1, "%s/run1.out", workdir);
    snprintf(err1, sizeof err1, "%s/run1.err", workdir);
    snprintf(err2, sizeof err2, "%s/run2.err", workdir);
    assert_int_equal(it_make_file(path, size, sha), 0);

    const char *bin = it_bin("CHUNKUP_BIN");
    assert_non_null(bin);
    char server[64], uid[32];
    snprintf(server, sizeof server, "127.0.0.1:%d", srv.port);
    snprintf(uid, sizeof uid, "%lld", (long long)u.id);
    const char *argv1[] = {bin,     "upload", path,           "--server",     server,
                           "--user", uid,     "--credential", u.credential, "--state",
                           state_path, "--limit-rate", "2m",  "--json",       NULL};
    pid_t pid;
    assert_int_equal(it_spawn(argv1, NULL, out1, err1, &pid), 0);

    /* wait until the server has acknowledged some bytes, then kill */
    int64_t id = 0, seen = 0, deadline = it_now_ms() + 30000;
    while (it_now_ms() < deadline && seen <= 0) {
        if (id <= 0)
            id = it_doc_newest(u.id);
        if (id > 0) {
            it_rkey k;
            assert_int_equal(it_redis_upload(id, &k), 0);
            seen = k.exists ? k.offset : 0;
        }
        if (seen <= 0)
            it_sleep_ms(10);
    }
    if (seen <= 0) {
        it_print_file("chunkup stderr", err1);
        fail_msg("no acknowledged bytes within 30 s (document %lld)", (long long)id);
    }
    assert_int_equal(kill(-pid, SIGKILL), 0);
    int st;
    assert_int_equal(it_wait(pid, 10000, &st), 0);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);

    int64_t offset = settled_offset(id);
    it_assert_doc_status(id, "uploading", NULL);
    fprintf(stderr, "it: chunkup killed with document %lld at offset %lld of %lld\n",
            (long long)id, (long long)offset, (long long)size);
    assert_true(offset > 0);
    assert_true(offset < size);
    assert_int_equal(offset % CHUNK, 0);
    assert_int_equal(state_file_document(state_path), id);

    /* the same command again: it must continue the same document */
    const char *argv2[] = {bin,      "upload",     path,         "--server",
                           server,   "--user",     uid,          "--credential",
                           u.credential, "--state", state_path,  "--json",
                           NULL};
    char *out = NULL;
    int rc = it_run(argv2, NULL, err2, 120000, &out);
    if (rc != 0) {
        it_print_file("second chunkup stderr", err2);
        fprintf(stderr, "it: second chunkup stdout: %s\n", out ? out : "(none)");
    }
    assert_int_equal(rc, 0);
    json_error_t jerr;
    json_t *res = json_loads(out, JSON_DISABLE_EOF_CHECK, &jerr);
    if (!res)
        fprintf(stderr, "it: chunkup --json printed: %s\n", out);
    free(out);
    assert_non_null(res);
    assert_int_equal(it_json_int(res, "document_id"), id);
    assert_string_equal(it_json_str(res, "status"), "SUCCESS");
    assert_string_equal(it_json_str(res, "sha256"), sha);
    json_decref(res);

    /* and say it resumed at the server's offset, not at 0 */
    FILE *f = fopen(err2, "r");
    assert_non_null(f);
    char line[1024], want[128];
    snprintf(want, sizeof want, "resuming document_id=%lld at ", (long long)id);
    long long resumed_at = -1;
    while (fgets(line, sizeof line, f)) {
        char *p = strstr(line, want);
        if (p)
            resumed_at = strtoll(p + strlen(want), NULL, 10);
    }
    fclose(f);
    if (resumed_at != offset) {
        it_print_file("second chunkup stderr", err2);
        fail_msg("chunkup resumed at %lld, the server had %lld", resumed_at, (long long)offset);
    }

    it_assert_stored(&srv, id, size, sha);
    assert_int_equal(it_doc_count(u.id, NULL), 1);
    assert_int_equal(state_file_document(state_path), 0);
    unlink(path);
    unlink(out1);
    unlink(err1);
    unlink(err2);
    it_pass();
}

static int64_t raw_upload(it_sock *s, const it_user *u, const char *name, int64_t size)
{
    json_t *r = it_sock_req_json(
        s, json_pack("{s:s, s:s, s:I, s:I, s:s}", "action", "upload", "filename", name,
                     "filesize", (json_int_t)size, "user_id", (json_int_t)u->id, "credential",
                     u->credential));
    it_assert_ok(r, "upload");
    int64_t id = it_json_int(r, "document_id");
    json_decref(r);
    return id;
}

static void raw_chunk_ok(it_sock *s, int64_t id, int64_t off, const unsigned char *p,
                         int64_t n)
{
    char hdr[160];
    snprintf(hdr, sizeof hdr,
             "{\"action\":\"chunk\",\"document_id\":%lld,\"offset\":%lld,\"length\":%lld}",
             (long long)id, (long long)off, (long long)n);
    json_t *r = it_sock_chunk(s, hdr, p, (size_t)n);
    assert_string_equal(it_json_str(r, "event"), "progress");
    assert_int_equal(it_json_int(r, "received"), off + n);
    json_decref(r);
}

/* Finishes an upload from its resume answer with the client library. */
static void finish_with_library(int64_t id, int64_t expect_offset, int fd, int64_t size,
                                const char *sha)
{
    cu_conn *c = it_cu_connect(&srv);
    cu_auth auth = {.user_id = user.id, .credential = user.credential};
    cu_error err;
    cu_upload_info info;
    IT_CU_OK(it_cu_resume(c, &auth, id, &info, &err), err);
    assert_int_equal(info.document_id, id);
    assert_int_equal(info.offset, expect_offset);
    assert_int_equal(info.filesize, size);
    char part[IT_PATH_MAX + 64];
    it_upload_path(&srv, id, part, sizeof part);
    /* bytes of an unacknowledged chunk are cut off by the resume */
    assert_int_equal(file_size_at(part), expect_offset);
    it_rkey k;
    assert_int_equal(it_redis_upload(id, &k), 0);
    assert_true(k.exists);
    assert_int_equal(k.offset, expect_offset);
    assert_true(k.ttl > 0);
    IT_CU_OK(cu_send_file(c, fd, &info, 0, 0, NULL, NULL, &err), err);
    cu_complete_info done;
    IT_CU_OK(cu_complete(c, id, &done, &err), err);
    assert_string_equal(done.sha256, sha);
    cu_close(c);
    it_assert_stored(&srv, id, size, sha);
}

static void test_drop_mid_chunk(void **state)
{
    (void)state;
    const int64_t size = 4 * CHUNK;
    char sha[65];
    int fd = it_make_memfd(size, sha);
    assert_true(fd >= 0);
    unsigned char *data = malloc((size_t)size);
    assert_non_null(data);
    assert_int_equal(pread(fd, data, (size_t)size, 0), size);

    it_sock s;
    assert_int_equal(it_sock_connect(&s, srv.port), 0);
    int64_t id = raw_upload(&s, &user, "dropped.bin", size);
    raw_chunk_ok(&s, id, 0, data, CHUNK);
    /* the second chunk: its header and half its bytes, then the connection
     * is gone */
    char hdr[160];
    snprintf(hdr, sizeof hdr,
             "{\"action\":\"chunk\",\"document_id\":%lld,\"offset\":%lld,\"length\":%lld}",
             (long long)id, (long long)CHUNK, (long long)CHUNK);
    assert_int_equal(it_sock_send_chunk(&s, hdr, data + CHUNK, CHUNK / 2), 0);
    it_sleep_ms(200);
    it_sock_close(&s);
    it_sleep_ms(300);

    it_assert_doc_status(id, "uploading", NULL);
    it_rkey k;
    assert_int_equal(it_redis_upload(id, &k), 0);
    assert_int_equal(k.offset, CHUNK);
    finish_with_library(id, CHUNK, fd, size, sha);
    close(fd);
    free(data);
    it_pass();
}

/* The Redis key is gone (expired, or Redis lost its data) while the row
 * says uploading: resume rebuilds it from the row and the file. */
static void test_lost_redis_state(void **state)
{
    (void)state;
    const int64_t size = 5 * CHUNK + 123;
    char sha[65];
    int fd = it_make_memfd(size, sha);
    assert_true(fd >= 0);
    unsigned char *data = malloc((size_t)size);
    assert_non_null(data);
    assert_int_equal(pread(fd, data, (size_t)size, 0), size);

    it_sock s;
    assert_int_equal(it_sock_connect(&s, srv.port), 0);
    int64_t id = raw_upload(&s, &user, "lost.bin", size);
    for (int i = 0; i < 3; i++)
        raw_chunk_ok(&s, id, i * CHUNK, data + i * CHUNK, CHUNK);
    it_sock_close(&s);
    it_sleep_ms(200);
    assert_int_equal(it_redis_del_upload(id), 0);
    assert_int_equal(it_redis_exists(id), 0);
    finish_with_library(id, 3 * CHUNK, fd, size, sha);
    close(fd);
    free(data);
    it_pass();
}

/* A chunk that arrives whole but whose connection closes before the
 * progress event is read still counts: it was acknowledged to Redis. */
static void test_close_after_whole_chunk(void **state)
{
    (void)state;
    const int64_t size = 2 * CHUNK;
    char sha[65];
    int fd = it_make_memfd(size, sha);
    assert_true(fd >= 0);
    unsigned char *data = malloc((size_t)size);
    assert_non_null(data);
    assert_int_equal(pread(fd, data, (size_t)size, 0), size);
    it_sock s;
    assert_int_equal(it_sock_connect(&s, srv.port), 0);
    int64_t id = raw_upload(&s, &user, "whole.bin", size);
    char hdr[160];
    snprintf(hdr, sizeof hdr,
             "{\"action\":\"chunk\",\"document_id\":%lld,\"offset\":0,\"length\":%lld}",
             (long long)id, (long long)CHUNK);
    assert_int_equal(it_sock_send_chunk(&s, hdr, data, CHUNK), 0);
    shutdown(s.fd, SHUT_WR);
    /* wait for the server to finish with the chunk */
    int64_t deadline = it_now_ms() + 10000;
    it_rkey k = {0};
    while (it_now_ms() < deadline) {
        assert_int_equal(it_redis_upload(id, &k), 0);
        if (k.offset == CHUNK)
            break;
        it_sleep_ms(20);
    }
    assert_int_equal(k.offset, CHUNK);
    it_sock_close(&s);
    finish_with_library(id, CHUNK, fd, size, sha);
    close(fd);
    free(data);
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
        IT_FIXTURE_TEST(test_cli_killed_then_resumed),
        IT_FIXTURE_TEST(test_drop_mid_chunk),
        IT_FIXTURE_TEST(test_lost_redis_state),
        IT_FIXTURE_TEST(test_close_after_whole_chunk),
        IT_FIXTURE_TEST(test_server_stops_cleanly),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
