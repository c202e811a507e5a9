/* chunkd going away in the middle of uploads: killed with SIGKILL and
 * restarted on the same port and storage, stopped with SIGTERM (chunks in
 * flight finish, everyone is told) and restarted, and a crashed instance's
 * lease lapsing so that another instance can take the upload over. Runs on
 * the shared stack: only chunkd processes of this program are stopped. */
#include "harness_fault.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHUNK (64 * IT_KiB)
#define CHUNKUP_TIMEOUT_MS 180000

static it_server srv, other;
static it_user user;
static it_chunkup cup;
static char workdir[IT_DIR_MAX];
static char shared_storage[IT_DIR_MAX];
/* Sockets and buffers of the current test, so that a failed assertion
 * leaves nothing open or allocated behind it. */
static it_sock sock_a, sock_b;
static unsigned char *bytes;

static int group_setup(void **state)
{
    (void)state;
    if (it_init("it_fault_crash") != 0 || it_user_create(&user) != 0 ||
        it_tmpdir("files", workdir, sizeof workdir) != 0)
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    it_rmtree(workdir);
    it_shutdown();
    return 0;
}

static int test_setup(void **state)
{
    (void)state;
    sock_a.fd = sock_b.fd = -1;
    it_test_begin(NULL);
    return 0;
}

static int test_teardown(void **state)
{
    (void)state;
    it_chunkup_cleanup(&cup);
    it_sock_close(&sock_a);
    it_sock_close(&sock_b);
    free(bytes);
    bytes = NULL;
    it_server *both[] = {&srv, &other};
    for (int i = 0; i < 2; i++) {
        if (both[i]->dir[0]) {
            it_test_end(both[i]);
            it_server_stop(both[i]);
        }
        memset(both[i], 0, sizeof *both[i]);
    }
    if (shared_storage[0])
        it_rmtree(shared_storage);
    shared_storage[0] = '\0';
    return 0;
}

static void make_upload_file(const char *name, int64_t size, char *path, size_t cap,
                             char sha[65])
{
    it_line(path, cap, "%s/%s", workdir, name);
    assert_int_equal(it_make_file(path, size, sha), 0);
}

/* The chunkup run finished on its own with exit status 0 and reported this
 * document complete with this checksum. */
static void assert_chunkup_succeeded(int64_t id, const char *sha)
{
    int code = -1;
    int rc = it_chunkup_wait(&cup, CHUNKUP_TIMEOUT_MS, &code);
    if (rc != 0 || code != 0) {
        it_chunkup_print(&cup);
        fail_msg("chunkup: %s, exit status %d", rc != 0 ? "still running" : "finished", code);
    }
    json_t *res = it_chunkup_result(&cup);
    if (!res)
        it_chunkup_print(&cup);
    assert_non_null(res);
    assert_string_equal(it_json_str(res, "status"), "SUCCESS");
    assert_int_equal(it_json_int(res, "document_id"), id);
    assert_string_equal(it_json_str(res, "sha256"), sha);
    json_decref(res);
}

/* The offset of chunkup's first resume of the document after the fault. */
static int64_t first_resume(int64_t id)
{
    int64_t offsets[16];
    int n = it_chunkup_resumes(&cup, id, offsets, 16);
    if (n < 1)
        it_chunkup_print(&cup);
    assert_true(n >= 1);
    return offsets[0];
}

/* ---- SIGKILL, then a restart on the same port and storage ------------------- */

static void test_kill9_mid_upload(void **state)
{
    (void)state;
    /* A short lease: the killed instance never gives its lease back, so
     * the restarted one must wait for it to lapse (chunkup waits as told
     * by 409 locked). */
    static const char *const args[] = {"--workers", "2", "--lease-ttl-ms", "1000", NULL};
    it_server_opts o = {.args = args};
    assert_int_equal(it_server_start(&srv, &o), 0);
    it_test_begin(&srv);
    it_user u;
    assert_int_equal(it_user_create(&u), 0);
    const int64_t size = 8 * IT_MiB;
    char path[IT_PATH_MAX], sha[65];
    make_upload_file("kill9.bin", size, path, sizeof path, sha);

    static const char *const extra[] = {"--limit-rate", "2m", "--retries", "30", NULL};
    assert_int_equal(it_chunkup_start(&cup, &srv, &u, path, extra), 0);
    int64_t id = 0;
    int64_t seen = it_wait_acked(u.id, IT_MiB, 60000, &id);
    if (seen < 0)
        it_chunkup_print(&cup);
    assert_true(seen >= IT_MiB);

    int st = 0;
    assert_int_equal(it_server_kill(&srv, SIGKILL, 10000, &st), 0);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);

    /* Nothing writes the upload now: what Redis holds is what was
     * acknowledged, and the file holds at least that. */
    it_rkey k;
    assert_int_equal(it_redis_upload(id, &k), 0);
    assert_true(k.exists);
    int64_t acked = k.offset;
    fprintf(stderr, "it: chunkd killed with document %lld at offset %lld of %lld\n",
            (long long)id, (long long)acked, (long long)size);
    assert_true(acked >= seen);
    assert_true(acked < size);
    char data[IT_PATH_MAX + 64];
    it_upload_path(&srv, id, data, sizeof data);
    assert_true(it_file_size(data) >= acked);
    it_assert_doc_status(id, "uploading", NULL);

    assert_int_equal(it_server_restart(&srv, &o), 0);
    assert_chunkup_succeeded(id, sha);
    /* Same boot: every acknowledged byte is in the page cache even though
     * the writer died, so the resume loses none of them
     * (docs/DURABILITY.md), and it never goes past them. */
    int64_t resumed = first_resume(id);
    fprintf(stderr, "it: chunkup resumed at %lld\n", (long long)resumed);
    assert_int_equal(resumed, acked);
    it_assert_stored(&srv, id, size, sha);
    assert_int_equal(it_redis_lease_exists(id), 0);
    /* the same document all along, never a second upload */
    assert_int_equal(it_doc_count(u.id, NULL), 1);
    it_assert_server_stops_cleanly(&srv);
    it_pass();
}

/* ---- SIGTERM: chunks in flight finish, clients are told, exit 0 -------------- */

static void test_sigterm_mid_upload(void **state)
{
    (void)state;
    static const char *const args[] = {"--workers", "2", NULL};
    it_server_opts o = {.args = args};
    assert_int_equal(it_server_start(&srv, &o), 0);
    it_test_begin(&srv);
    it_user u;
    assert_int_equal(it_user_create(&u), 0);
    const int64_t size = 8 * IT_MiB;
    char path[IT_PATH_MAX], sha[65];
    make_upload_file("sigterm.bin", size, path, sizeof path, sha);

    static const char *const extra[] = {"--limit-rate", "2m", "--retries", "30", NULL};
    assert_int_equal(it_chunkup_start(&cup, &srv, &u, path, extra), 0);
    int64_t id = 0;
    int64_t seen = it_wait_acked(u.id, IT_MiB, 60000, &id);
    if (seen < 0)
        it_chunkup_print(&cup);
    assert_true(seen >= IT_MiB);

    int st = 0;
    assert_int_equal(it_server_kill(&srv, SIGTERM, 20000, &st), 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        it_server_log_tail(&srv, 0, 60);
        fail_msg("chunkd did not exit 0 on SIGTERM (wait status %d)", st);
    }
    assert_true(it_log_count(&srv, "event=stopped ") >= 1);

    /* The connection closed cleanly: its lease went back, and no partial
     * chunk was left in the file. */
    it_rkey k;
    assert_int_equal(it_redis_upload(id, &k), 0);
    assert_true(k.exists);
    assert_true(k.offset >= seen && k.offset < size);
    assert_int_equal(it_redis_lease_exists(id), 0);
    char data[IT_PATH_MAX + 64];
    it_upload_path(&srv, id, data, sizeof data);
    assert_int_equal(it_file_size(data), k.offset);
    it_assert_doc_status(id, "uploading", NULL);

    assert_int_equal(it_server_restart(&srv, &o), 0);
    assert_chunkup_succeeded(id, sha);
    bool told = it_chunkup_said(&cup, "503 shutting_down") ||
                it_chunkup_said(&cup, "server closed the connection") ||
                it_chunkup_said(&cup, "Connection reset") ||
                it_chunkup_said(&cup, "Broken pipe");
    if (!told)
        it_chunkup_print(&cup);
    assert_true(told);
    assert_int_equal(first_resume(id), k.offset);
    it_assert_stored(&srv, id, size, sha);
    assert_int_equal(it_doc_count(u.id, NULL), 1);
    it_assert_server_stops_cleanly(&srv);
    it_pass();
}

/* Raw protocol: half a chunk is in flight when SIGTERM arrives; its other
 * half, sent during the grace period, still counts. */
static void test_sigterm_lets_chunk_finish(void **state)
{
    (void)state;
    static const char *const args[] = {"--workers", "1", "--shutdown-grace-ms", "10000", NULL};
    it_server_opts o = {.args = args};
    assert_int_equal(it_server_start(&srv, &o), 0);
    it_test_begin(&srv);
    const int64_t size = 3 * CHUNK;
    bytes = malloc((size_t)size);
    assert_non_null(bytes);
    it_random_bytes(bytes, (size_t)size);
    char sha[65];
    it_sha256_hex(bytes, (size_t)size, sha);

    assert_int_equal(it_sock_connect(&sock_a, srv.port), 0);
    it_sock_auth(&sock_a, &user);
    int64_t id = it_sock_upload(&sock_a, "grace.bin", size);
    it_sock_chunk_ok(&sock_a, id, 0, bytes, CHUNK);
    char hdr[160];
    it_line(hdr, sizeof hdr,
            "{\"action\":\"chunk\",\"document_id\":%lld,\"offset\":%lld,\"length\":%lld}",
            (long long)id, (long long)CHUNK, (long long)CHUNK);
    assert_int_equal(it_sock_send_chunk(&sock_a, hdr, bytes + CHUNK, CHUNK / 2), 0);
    char data[IT_PATH_MAX + 64];
    it_upload_path(&srv, id, data, sizeof data);
    int64_t deadline = it_now_ms() + IT_REPLY_TIMEOUT_MS;
    while (it_file_size(data) < CHUNK + CHUNK / 2 && it_now_ms() < deadline)
        it_sleep_ms(5);
    assert_int_equal(it_file_size(data), CHUNK + CHUNK / 2);

    off_t mark = it_log_size(&srv);
    assert_int_equal(kill(srv.pid, SIGTERM), 0);
    assert_int_equal(it_log_wait(&srv, mark, "event=stopping ", IT_REPLY_TIMEOUT_MS), 0);
    /* It stops accepting at once... */
    fprintf(stderr, "it: probing the listener; \"Connection refused\" is expected\n");
    deadline = it_now_ms() + 5000;
    bool refused = false;
    while (!refused && it_now_ms() < deadline) {
        it_sock probe;
        refused = it_sock_connect(&probe, srv.port) != 0;
        if (!refused) {
            it_sock_close(&probe);
            it_sleep_ms(10);
        }
    }
    assert_true(refused);
    /* ...but waits for the chunk in flight. */
    int64_t sent_at = it_now_ms();
    assert_int_equal(it_sock_send(&sock_a, bytes + CHUNK + CHUNK / 2, CHUNK / 2), 0);
    json_t *r;
    assert_int_equal(it_sock_read_json(&sock_a, IT_REPLY_TIMEOUT_MS, &r), IT_READ_OK);
    assert_string_equal(it_json_str(r, "event"), "progress");
    assert_int_equal(it_json_int(r, "received"), 2 * CHUNK);
    json_decref(r);
    assert_int_equal(it_sock_read_json(&sock_a, IT_REPLY_TIMEOUT_MS, &r), IT_READ_OK);
    it_assert_error(r, 503, "shutting_down");
    json_decref(r);
    it_assert_closed(&sock_a);
    it_sock_close(&sock_a);

    int st = 0;
    assert_int_equal(it_server_wait(&srv, 20000, &st), 0);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    /* done when the last chunk was, not when the grace period ran out */
    int64_t took = it_now_ms() - sent_at;
    fprintf(stderr, "it: chunkd exited %lld ms after the chunk's last byte\n", (long long)took);
    assert_true(took < 8000);

    it_rkey k;
    assert_int_equal(it_redis_upload(id, &k), 0);
    assert_int_equal(k.offset, 2 * CHUNK);
    assert_int_equal(it_file_size(data), 2 * CHUNK);
    assert_int_equal(it_redis_lease_exists(id), 0);
    it_assert_doc_status(id, "uploading", NULL);

    assert_int_equal(it_server_restart(&srv, &o), 0);
    assert_int_equal(it_sock_connect(&sock_a, srv.port), 0);
    it_sock_auth(&sock_a, &user);
    char line[160];
    it_line(line, sizeof line, "{\"action\":\"resume\",\"document_id\":%lld}", (long long)id);
    r = it_sock_req(&sock_a, line);
    it_assert_ok(r, "resume");
    assert_int_equal(it_json_int(r, "offset"), 2 * CHUNK);
    json_decref(r);
    it_sock_chunk_ok(&sock_a, id, 2 * CHUNK, bytes + 2 * CHUNK, CHUNK);
    r = it_sock_complete(&sock_a, id);
    assert_string_equal(it_json_str(r, "status"), "SUCCESS");
    assert_string_equal(it_json_str(r, "sha256"), sha);
    json_decref(r);
    it_sock_close(&sock_a);
    it_assert_stored(&srv, id, size, sha);
    it_assert_server_stops_cleanly(&srv);
    it_pass();
}

/* ---- leases across instances ------------------------------------------------- */

/* Sends resume until it is not refused as locked, sleeping as told; returns
 * the answer. *first_locked says whether the first answer was 409 locked. */
static json_t *resume_until_unlocked(it_sock *s, int64_t id, int64_t lease_ms, int timeout_ms,
                                     bool *first_locked)
{
    char line[160];
    it_line(line, sizeof line, "{\"action\":\"resume\",\"document_id\":%lld}", (long long)id);
    int64_t deadline = it_now_ms() + timeout_ms;
    for (int i = 0;; i++) {
        json_t *r = it_sock_req(s, line);
        const char *reason = json_string_value(json_object_get(r, "reason"));
        bool locked = reason && strcmp(reason, "locked") == 0;
        if (i == 0)
            *first_locked = locked;
        if (!locked || it_now_ms() >= deadline)
            return r;
        int64_t retry = it_json_int(r, "retry_after_ms");
        json_decref(r);
        assert_true(retry > 0 && retry <= lease_ms && retry <= 2000);
        it_sleep_ms((int)(retry < 50 ? retry : 50));
    }
}

/* Two instances share the storage volume. An upload open on the first is
 * locked for the second; when the first is killed mid-chunk, its lease
 * outlives it until lease_ttl_ms runs out, then the second resumes from the
 * acknowledged offset and the half chunk is cut off. */
static void test_lease_lapses_after_crash(void **state)
{
    (void)state;
    const int64_t lease_ms = 1500;
    assert_int_equal(it_tmpdir("shared-storage", shared_storage, sizeof shared_storage), 0);
    static const char *const args[] = {"--workers", "1", "--lease-ttl-ms", "1500", NULL};
    it_server_opts o = {.args = args, .storage_dir = shared_storage};
    assert_int_equal(it_server_start(&srv, &o), 0);
    assert_int_equal(it_server_start(&other, &o), 0);
    it_test_begin(&srv);
    it_test_begin(&other);

    const int64_t size = 3 * CHUNK;
    bytes = malloc((size_t)size);
    assert_non_null(bytes);
    it_random_bytes(bytes, (size_t)size);
    char sha[65];
    it_sha256_hex(bytes, (size_t)size, sha);

    assert_int_equal(it_sock_connect(&sock_a, srv.port), 0);
    assert_int_equal(it_sock_connect(&sock_b, other.port), 0);
    it_sock_auth(&sock_a, &user);
    it_sock_auth(&sock_b, &user);
    int64_t id = it_sock_upload(&sock_a, "crashed-writer.bin", size);

    /* the lease lives in Redis: the other instance sees it too */
    char line[160], hdr[160];
    it_line(line, sizeof line, "{\"action\":\"resume\",\"document_id\":%lld}", (long long)id);
    json_t *r = it_sock_req(&sock_b, line);
    it_assert_error(r, 409, "locked");
    int64_t retry = it_json_int(r, "retry_after_ms");
    assert_true(retry > 0 && retry <= lease_ms);
    json_decref(r);
    it_line(hdr, sizeof hdr, "{\"action\":\"chunk\",\"document_id\":%lld,\"offset\":0,"
                             "\"length\":%lld}", (long long)id, (long long)CHUNK);
    it_expect_chunk_error_open(&sock_b, hdr, CHUNK, 409, "upload_not_open");

    /* a writes one chunk (renewing its lease) and half of the next */
    it_sock_chunk_ok(&sock_a, id, 0, bytes, CHUNK);
    it_line(hdr, sizeof hdr, "{\"action\":\"chunk\",\"document_id\":%lld,\"offset\":%lld,"
                             "\"length\":%lld}", (long long)id, (long long)CHUNK, (long long)CHUNK);
    assert_int_equal(it_sock_send_chunk(&sock_a, hdr, bytes + CHUNK, CHUNK / 2), 0);
    char data[IT_PATH_MAX + 64];
    it_upload_path(&srv, id, data, sizeof data);
    int64_t deadline = it_now_ms() + IT_REPLY_TIMEOUT_MS;
    while (it_file_size(data) < CHUNK + CHUNK / 2 && it_now_ms() < deadline)
        it_sleep_ms(5);
    assert_int_equal(it_file_size(data), CHUNK + CHUNK / 2);

    int st = 0;
    int64_t killed_at = it_now_ms();
    assert_int_equal(it_server_kill(&srv, SIGKILL, 10000, &st), 0);
    assert_true(WIFSIGNALED(st));
    it_sock_close(&sock_a);
    /* the dead connection never gave its lease back */
    bool first_locked = false;
    r = resume_until_unlocked(&sock_b, id, lease_ms, (int)lease_ms + 10000, &first_locked);
    int64_t waited = it_now_ms() - killed_at;
    fprintf(stderr, "it: resumed on the second instance %lld ms after the kill\n",
            (long long)waited);
    assert_true(first_locked);
    it_assert_ok(r, "resume");
    assert_int_equal(it_json_int(r, "offset"), CHUNK);
    json_decref(r);
    /* lapsed, not held forever: within the lease and some slack */
    assert_true(waited <= lease_ms + 3000);
    /* the half chunk the dead instance wrote is cut off */
    assert_int_equal(it_file_size(data), CHUNK);

    it_sock_chunk_ok(&sock_b, id, CHUNK, bytes + CHUNK, CHUNK);
    it_sock_chunk_ok(&sock_b, id, 2 * CHUNK, bytes + 2 * CHUNK, CHUNK);
    r = it_sock_complete(&sock_b, id);
    assert_string_equal(it_json_str(r, "status"), "SUCCESS");
    assert_string_equal(it_json_str(r, "sha256"), sha);
    json_decref(r);
    it_sock_close(&sock_b);
    it_assert_stored(&other, id, size, sha);
    it_assert_server_stops_cleanly(&other);
    it_pass();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_kill9_mid_upload, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_mid_upload, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_lets_chunk_finish, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_lease_lapses_after_crash, test_setup,
                                        test_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
