/* Backends going away under uploads, on a private Redis and MariaDB of this
 * program's own (the shared stack is never stopped): Redis restarted with
 * its AOF, Redis losing every key, MariaDB stopped and started again; and
 * the expiry sweep with two instances, which must not see other programs'
 * rows either. */
#include "harness_fault.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHUNK (64 * IT_KiB)
#define CHUNKUP_TIMEOUT_MS 180000
/* private ports: the shared stack's plus this */
#define PORT_OFFSET 20

static it_stack stack;
static it_server srv, other;
static it_user user;
static it_chunkup cup;
static char workdir[IT_DIR_MAX];
static char shared_storage[IT_DIR_MAX];
/* a backend of the private stack was stopped and not yet started again */
static bool stack_down;
/* Sockets and buffers of the current test, so that a failed assertion
 * leaves nothing open or allocated behind it. */
static it_sock sock_a, sock_b;
static unsigned char *bytes;

static int group_setup(void **state)
{
    (void)state;
    if (it_init("it_fault_stack") != 0)
        return -1;
    /* Everything from here on (probes, users, chunkd) uses the private
     * stack. */
    if (it_stack_start(&stack, "it_fault_stack", PORT_OFFSET) != 0 ||
        it_user_create(&user) != 0 || it_tmpdir("files", workdir, sizeof workdir) != 0) {
        it_stack_destroy(&stack);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    it_rmtree(workdir);
    it_stack_destroy(&stack);
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
    /* A test that failed half-way must not leave a backend stopped for the
     * next one. */
    if (stack_down && it_stack_up(&stack) != 0)
        fprintf(stderr, "it: the private stack does not come back up\n");
    stack_down = false;
    return 0;
}

/* ---- requests ------------------------------------------------------------------ */

static json_t *sock_upload_as(it_sock *s, const it_user *u, const char *name, int64_t size)
{
    return it_sock_req_json(s, json_pack("{s:s, s:s, s:I, s:I, s:s}", "action", "upload",
                                         "filename", name, "filesize", (json_int_t)size,
                                         "user_id", (json_int_t)u->id, "credential",
                                         u->credential));
}

static json_t *sock_complete(it_sock *s, int64_t id)
{
    char line[128];
    it_line(line, sizeof line, "{\"action\":\"upload_complete\",\"document_id\":%lld}",
            (long long)id);
    return it_sock_req(s, line);
}

/* Fails unless r is the SUCCESS answer for id with this checksum. Takes
 * ownership of r. */
static void expect_success(json_t *r, int64_t id, const char *sha)
{
    const char *status = json_string_value(json_object_get(r, "status"));
    const char *got = json_string_value(json_object_get(r, "sha256"));
    json_t *doc = json_object_get(r, "document_id");
    bool ok = status && strcmp(status, "SUCCESS") == 0 && got && strcmp(got, sha) == 0 &&
              json_is_integer(doc) && json_integer_value(doc) == id;
    if (!ok) {
        char *dump = json_dumps(r, JSON_COMPACT);
        fprintf(stderr, "it: expected SUCCESS for document %lld with sha256 %s, got %s\n",
                (long long)id, sha, dump ? dump : "?");
        free(dump);
    }
    json_decref(r);
    assert_true(ok);
}

/* ---- Redis --------------------------------------------------------------------- */

enum redis_fault { REDIS_RESTART, REDIS_RESTART_EMPTY, REDIS_FLUSHALL };

/* chunkup uploads 8 MiB at 2 MiB/s; once 1 MiB is acknowledged the fault
 * hits; chunkup's own retries must carry the upload to the end. */
static void redis_fault_case(enum redis_fault fault)
{
    static const char *const args[] = {"--workers", "2", NULL};
    it_server_opts o = {.args = args};
    assert_int_equal(it_server_start(&srv, &o), 0);
    it_test_begin(&srv);
    it_user u;
    assert_int_equal(it_user_create(&u), 0);
    const int64_t size = 8 * IT_MiB;
    char path[IT_PATH_MAX], sha[65];
    it_line(path, sizeof path, "%s/redis-fault-%d.bin", workdir, (int)fault);
    assert_int_equal(it_make_file(path, size, sha), 0);

    static const char *const extra[] = {"--limit-rate", "2m", "--retries", "30", NULL};
    assert_int_equal(it_chunkup_start(&cup, &srv, &u, path, extra), 0);
    int64_t id = 0;
    int64_t seen = it_wait_acked(u.id, IT_MiB, 60000, &id);
    if (seen < 0)
        it_chunkup_print(&cup);
    assert_true(seen >= IT_MiB);

    if (fault == REDIS_FLUSHALL) {
        assert_int_equal(it_redis_flushall(), 0);
    } else {
        stack_down = true;
        assert_int_equal(it_stack_redis_stop(&stack, fault == REDIS_RESTART), 0);
        assert_int_equal(it_stack_up(&stack), 0);
        stack_down = false;
    }
    if (fault == REDIS_RESTART) {
        /* The AOF brought the upload's state back (chunkup may have
         * resumed it already, which rewrites it, never lowers it). */
        it_rkey k;
        assert_int_equal(it_redis_upload(id, &k), 0);
        if (!k.exists)
            fprintf(stderr, "it: upload %lld has no Redis state after the restart\n",
                    (long long)id);
        assert_true(k.exists);
        assert_true(k.offset >= seen);
    }

    int code = -1;
    int rc = it_chunkup_wait(&cup, CHUNKUP_TIMEOUT_MS, &code);
    if (rc != 0 || code != 0)
        it_chunkup_print(&cup);
    assert_int_equal(rc, 0);
    assert_int_equal(code, 0);
    json_t *res = it_chunkup_result(&cup);
    assert_non_null(res);
    assert_string_equal(it_json_str(res, "status"), "SUCCESS");
    assert_int_equal(it_json_int(res, "document_id"), id);
    assert_string_equal(it_json_str(res, "sha256"), sha);
    json_decref(res);

    /* Acknowledged bytes survive: with the AOF from Redis, without it
     * from the file (docs/DURABILITY.md). */
    int64_t resumed[16];
    int n = it_chunkup_resumes(&cup, id, resumed, 16);
    if (n < 1)
        it_chunkup_print(&cup);
    assert_true(n >= 1);
    fprintf(stderr, "it: chunkup resumed at %lld (%lld acknowledged before the fault)\n",
            (long long)resumed[0], (long long)seen);
    assert_true(resumed[0] >= seen);
    char rebuilt[96];
    it_line(rebuilt, sizeof rebuilt, "event=resume_rebuilt_state doc=%lld ", (long long)id);
    int nrebuilt = it_log_count(&srv, rebuilt);
    if (fault == REDIS_RESTART)
        assert_int_equal(nrebuilt, 0);
    else
        assert_true(nrebuilt >= 1);
    it_assert_stored(&srv, id, size, sha);
    assert_int_equal(it_redis_lease_exists(id), 0);
    assert_int_equal(it_doc_count(u.id, NULL), 1);
    it_assert_server_stops_cleanly(&srv);
}

static void test_redis_restart_with_aof(void **state)
{
    (void)state;
    redis_fault_case(REDIS_RESTART);
    it_pass();
}

static void test_redis_restart_without_data(void **state)
{
    (void)state;
    redis_fault_case(REDIS_RESTART_EMPTY);
    it_pass();
}

static void test_redis_flushall(void **state)
{
    (void)state;
    redis_fault_case(REDIS_FLUSHALL);
    it_pass();
}

/* Redis goes away between the last chunks and the completions. A
 * completion within half a lease of its last offset save needs no Redis
 * for its lease: the row is completed and SUCCESS sent, and only the Redis
 * clean-up fails (the key is dropped later, here by a resume that finds
 * the row completed). A completion whose lease was renewed longer ago has
 * to ask Redis, and is answered 503 unavailable with its row still
 * uploading; once Redis is back the same connection completes it. */
static void test_redis_down_at_completion(void **state)
{
    (void)state;
    static const char *const args[] = {"--workers", "1", "--lease-ttl-ms", "10000",
                                       "--backend-timeout-ms", "2000", NULL};
    it_server_opts o = {.args = args};
    assert_int_equal(it_server_start(&srv, &o), 0);
    it_test_begin(&srv);
    bytes = malloc(CHUNK);
    assert_non_null(bytes);
    it_random_bytes(bytes, CHUNK);
    char sha[65];
    it_sha256_hex(bytes, CHUNK, sha);

    assert_int_equal(it_sock_connect(&sock_a, srv.port), 0);
    it_sock_auth(&sock_a, &user);
    int64_t stale = it_sock_upload(&sock_a, "stale-lease.bin", CHUNK);
    it_sock_chunk_ok(&sock_a, stale, 0, bytes, CHUNK);
    it_sleep_ms(5500); /* past half of lease_ttl_ms since that chunk's save */
    assert_int_equal(it_sock_connect(&sock_b, srv.port), 0);
    it_sock_auth(&sock_b, &user);
    int64_t fresh = it_sock_upload(&sock_b, "fresh-lease.bin", CHUNK);
    it_sock_chunk_ok(&sock_b, fresh, 0, bytes, CHUNK);

    stack_down = true;
    assert_int_equal(it_stack_redis_stop(&stack, true), 0);
    expect_success(sock_complete(&sock_b, fresh), fresh, sha);
    it_assert_doc_status(fresh, "completed", NULL);
    json_t *r = sock_complete(&sock_a, stale);
    it_assert_error(r, 503, "unavailable");
    json_decref(r);
    it_assert_doc_status(stale, "uploading", NULL);
    assert_true(it_log_count(&srv, "event=redis_finish_failed uploads=1 ") >= 1);

    assert_int_equal(it_stack_up(&stack), 0);
    stack_down = false;
    expect_success(sock_complete(&sock_a, stale), stale, sha);
    it_assert_stored(&srv, stale, CHUNK, sha);
    /* The completed upload's state outlived it in Redis's AOF; a resume
     * finds the row completed and drops it. */
    assert_int_equal(it_redis_exists(fresh), 1);
    char line[128];
    it_line(line, sizeof line, "{\"action\":\"resume\",\"document_id\":%lld}",
            (long long)fresh);
    r = it_sock_req(&sock_b, line);
    it_assert_error(r, 409, "not_resumable");
    json_decref(r);
    it_assert_stored(&srv, fresh, CHUNK, sha); /* which asks that the key be gone */
    it_assert_server_stops_cleanly(&srv);
    it_pass();
}

/* ---- MariaDB ------------------------------------------------------------------- */

/* Chunks need only Redis and keep flowing; whatever needs MySQL is
 * refused with 503 and leaves nothing behind; once MariaDB is back the
 * same connection completes the upload. */
static void test_mysql_down(void **state)
{
    (void)state;
    static const char *const args[] = {"--workers", "1", "--backend-timeout-ms", "2000", NULL};
    it_server_opts o = {.args = args};
    assert_int_equal(it_server_start(&srv, &o), 0);
    it_test_begin(&srv);
    const int64_t size = 4 * CHUNK;
    bytes = malloc((size_t)size);
    assert_non_null(bytes);
    it_random_bytes(bytes, (size_t)size);
    char sha[65], empty_sha[65];
    it_sha256_hex(bytes, (size_t)size, sha);
    it_sha256_hex("", 0, empty_sha);

    assert_int_equal(it_sock_connect(&sock_a, srv.port), 0);
    it_sock_auth(&sock_a, &user);
    int64_t id = it_sock_upload(&sock_a, "db-down.bin", size);
    it_sock_chunk_ok(&sock_a, id, 0, bytes, CHUNK);
    it_sock_chunk_ok(&sock_a, id, CHUNK, bytes + CHUNK, CHUNK);
    int files = it_count_files(srv.storage_dir);
    assert_int_equal(files, 1);

    stack_down = true;
    assert_int_equal(it_stack_mysql_stop(&stack), 0);
    it_sock_chunk_ok(&sock_a, id, 2 * CHUNK, bytes + 2 * CHUNK, CHUNK);
    /* a new upload on the authenticated connection: the row cannot be made */
    json_t *r = sock_upload_as(&sock_a, &user, "refused.bin", 10);
    it_assert_error(r, 503, "unavailable");
    json_decref(r);
    it_assert_open(&sock_a);
    /* a new connection cannot even be authenticated */
    assert_int_equal(it_sock_connect(&sock_b, srv.port), 0);
    r = sock_upload_as(&sock_b, &user, "refused-too.bin", 10);
    it_assert_error(r, 503, "unavailable");
    json_decref(r);
    it_assert_open(&sock_b);
    assert_int_equal(it_count_files(srv.storage_dir), files);
    /* the open upload is still open on a: its last chunk is taken... */
    it_sock_chunk_ok(&sock_a, id, 3 * CHUNK, bytes + 3 * CHUNK, CHUNK);
    it_rkey k;
    assert_int_equal(it_redis_upload(id, &k), 0);
    assert_int_equal(k.offset, size);
    /* ...but it cannot be declared complete: its UPDATE, chained to the
     * file's sync on the syncer, fails and says so */
    r = sock_complete(&sock_a, id);
    it_assert_error(r, 503, "unavailable");
    json_decref(r);
    assert_int_equal(it_redis_exists(id), 1);
    assert_int_equal(it_log_count(&srv, "event=commit_after_sync_failed uploads=1 "), 1);

    assert_int_equal(it_stack_up(&stack), 0);
    stack_down = false;
    it_assert_doc_status(id, "uploading", NULL);
    r = sock_complete(&sock_a, id);
    expect_success(r, id, sha);
    it_assert_stored(&srv, id, size, sha);
    /* and the refused connection is served now */
    r = sock_upload_as(&sock_b, &user, "empty.bin", 0);
    it_assert_ok(r, "upload");
    int64_t id2 = it_json_int(r, "document_id");
    json_decref(r);
    r = sock_complete(&sock_b, id2);
    expect_success(r, id2, empty_sha);
    it_assert_stored(&srv, id2, 0, empty_sha);
    assert_int_equal(it_count_files(srv.storage_dir), files + 1);
    it_sock_close(&sock_a);
    it_sock_close(&sock_b);
    it_assert_server_stops_cleanly(&srv);
    it_pass();
}

/* MariaDB restarts while nothing asks it anything: the worker's connection
 * is stale, and the first request that needs it must still succeed
 * (docstore_mysql.c retries once on a connection the server closed). */
static void test_mysql_restart_while_idle(void **state)
{
    (void)state;
    static const char *const args[] = {"--workers", "1", NULL};
    it_server_opts o = {.args = args};
    assert_int_equal(it_server_start(&srv, &o), 0);
    it_test_begin(&srv);
    const int64_t size = 2 * CHUNK;
    bytes = malloc((size_t)size);
    assert_non_null(bytes);
    it_random_bytes(bytes, (size_t)size);
    char sha[65];
    it_sha256_hex(bytes, (size_t)size, sha);

    assert_int_equal(it_sock_connect(&sock_a, srv.port), 0);
    it_sock_auth(&sock_a, &user);
    int64_t id = it_sock_upload(&sock_a, "db-restart.bin", size);
    it_sock_chunk_ok(&sock_a, id, 0, bytes, CHUNK);
    stack_down = true;
    assert_int_equal(it_stack_mysql_stop(&stack), 0);
    assert_int_equal(it_stack_up(&stack), 0);
    stack_down = false;
    it_sock_chunk_ok(&sock_a, id, CHUNK, bytes + CHUNK, CHUNK);
    json_t *r = sock_complete(&sock_a, id);
    expect_success(r, id, sha);
    it_assert_stored(&srv, id, size, sha);
    it_sock_close(&sock_a);
    it_assert_server_stops_cleanly(&srv);
    it_pass();
}

/* ---- the expiry sweep, two instances --------------------------------------------- */

static void test_expiry_two_instances(void **state)
{
    (void)state;
    assert_int_equal(it_tmpdir("shared-storage", shared_storage, sizeof shared_storage), 0);
    static const char *const args[] = {"--workers", "1", "--upload-expiry-s", "2",
                                       "--sweep-interval-s", "1", NULL};
    it_server_opts o = {.args = args, .storage_dir = shared_storage};
    assert_int_equal(it_server_start(&srv, &o), 0);
    assert_int_equal(it_server_start(&other, &o), 0);
    it_test_begin(&srv);
    it_test_begin(&other);
    it_user u;
    assert_int_equal(it_user_create(&u), 0);

    /* idle: a chunk and a half on the second instance, then the client is
     * gone */
    assert_int_equal(it_sock_connect(&sock_b, other.port), 0);
    it_sock_auth(&sock_b, &u);
    int64_t idle = it_sock_upload(&sock_b, "abandoned.bin", 4 * CHUNK);
    it_sock_chunk_ok(&sock_b, idle, 0, NULL, CHUNK);
    char hdr[160];
    it_line(hdr, sizeof hdr,
            "{\"action\":\"chunk\",\"document_id\":%lld,\"offset\":%lld,\"length\":%lld}",
            (long long)idle, (long long)CHUNK, (long long)CHUNK);
    assert_int_equal(it_sock_send_chunk(&sock_b, hdr, NULL, CHUNK / 2), 0);
    char idle_path[IT_PATH_MAX + 64];
    it_upload_path(&srv, idle, idle_path, sizeof idle_path);
    int64_t deadline = it_now_ms() + IT_REPLY_TIMEOUT_MS;
    while (it_file_size(idle_path) < CHUNK + CHUNK / 2 && it_now_ms() < deadline)
        it_sleep_ms(5);
    assert_int_equal(it_file_size(idle_path), CHUNK + CHUNK / 2);
    it_sock_close(&sock_b);
    assert_int_equal(it_redis_reserved(idle), 1);

    /* active: a small chunk every 500 ms on the first instance, for
     * longer than the expiry */
    enum { STEP = 4096, STEPS = 10 };
    unsigned char payload[STEP * STEPS];
    it_random_bytes(payload, sizeof payload);
    char sha[65];
    it_sha256_hex(payload, sizeof payload, sha);
    assert_int_equal(it_sock_connect(&sock_a, srv.port), 0);
    it_sock_auth(&sock_a, &u);
    int64_t active = it_sock_upload(&sock_a, "busy.bin", sizeof payload);
    int64_t expired_at = 0;
    it_doc d;
    for (int s = 0; s < STEPS - 1; s++) {
        it_sock_chunk_ok(&sock_a, active, (int64_t)s * STEP, payload + s * STEP, STEP);
        if (!expired_at && it_doc_get(idle, &d) == 1 && strcmp(d.status, "failed") == 0)
            expired_at = it_now_ms();
        it_sleep_ms(500);
    }
    it_assert_doc_status(active, "uploading", NULL);
    deadline = it_now_ms() + 20000;
    while (!expired_at && it_now_ms() < deadline) {
        assert_int_equal(it_doc_get(idle, &d), 1);
        if (strcmp(d.status, "failed") == 0)
            expired_at = it_now_ms();
        else
            it_sleep_ms(50);
    }
    it_assert_doc_status(idle, "failed", &d);
    assert_false(d.failure_reason_null);
    assert_string_equal(d.failure_reason, "expired");
    assert_int_equal(it_file_size(idle_path), -1);
    assert_int_equal(it_redis_exists(idle), 0);
    assert_int_equal(it_redis_lease_exists(idle), 0);
    assert_int_equal(it_redis_reserved(idle), 0);

    /* the busy one was left alone and finishes */
    it_sock_chunk_ok(&sock_a, active, (int64_t)(STEPS - 1) * STEP,
                     payload + (STEPS - 1) * STEP, STEP);
    json_t *r = sock_complete(&sock_a, active);
    expect_success(r, active, sha);
    it_assert_stored(&srv, active, sizeof payload, sha);
    /* the expired one cannot be resumed anywhere */
    char line[128];
    it_line(line, sizeof line, "{\"action\":\"resume\",\"document_id\":%lld}", (long long)idle);
    r = it_sock_req(&sock_a, line);
    it_assert_error(r, 409, "not_resumable");
    assert_string_equal(it_json_str(r, "document_status"), "failed");
    json_decref(r);
    it_sock_close(&sock_a);

    /* Both sweepers had further passes since; exactly one of them expired
     * the upload, and neither touched the busy one. */
    int64_t settle = expired_at + 2500 - it_now_ms();
    if (settle > 0)
        it_sleep_ms((int)settle);
    char needle[96];
    it_line(needle, sizeof needle, "event=upload_expired doc=%lld ", (long long)idle);
    int n1 = it_log_count(&srv, needle), n2 = it_log_count(&other, needle);
    fprintf(stderr, "it: upload_expired for %lld: %d line(s) on the first instance, %d on "
                    "the second\n", (long long)idle, n1, n2);
    assert_int_equal(n1 + n2, 1);
    it_line(needle, sizeof needle, "event=upload_expired doc=%lld ", (long long)active);
    assert_int_equal(it_log_count(&srv, needle) + it_log_count(&other, needle), 0);
    it_assert_server_stops_cleanly(&srv);
    it_assert_server_stops_cleanly(&other);
    it_pass();
}

/* Waits up to timeout_ms for the row to be failed with reason `expired`. */
static void wait_expired(int64_t id, int timeout_ms)
{
    it_doc d;
    int64_t deadline = it_now_ms() + timeout_ms;
    while (it_doc_get(id, &d) == 1 && strcmp(d.status, "uploading") == 0 &&
           it_now_ms() < deadline)
        it_sleep_ms(50);
    it_assert_doc_status(id, "failed", &d);
    assert_string_equal(d.failure_reason, "expired");
}

/* An upload of 4 chunks on srv with its first one sent, then left: the
 * connection closed and its lease let go. */
static int64_t abandoned_upload(const char *name)
{
    assert_int_equal(it_sock_connect(&sock_a, srv.port), 0);
    it_sock_auth(&sock_a, &user);
    int64_t id = it_sock_upload(&sock_a, name, 4 * CHUNK);
    it_sock_chunk_ok(&sock_a, id, 0, NULL, CHUNK);
    it_sock_close(&sock_a);
    assert_int_equal(it_redis_wait_lease_free(id, IT_REPLY_TIMEOUT_MS), 0);
    return id;
}

/* A sweep whose reads outlast the lease it took (Redis's reply to the
 * lease held by a proxy past the lease's 500 ms): a resume may have taken
 * the upload meanwhile (here another writer's lease), so the sweep leaves
 * it, file and lease untouched; once nobody holds it, a later sweep
 * expires it. */
static void test_expiry_after_a_lease_gap(void **state)
{
    (void)state;
    assert_int_equal(it_docs_fail_uploading(), 0); /* the sweep sees this test's rows only */
    char redis_env[48];
    it_proxy *px = it_proxy_for("CHUNKD_REDIS_PORT", redis_env, sizeof redis_env);
    const char *env[] = {redis_env, NULL};
    static const char *const args[] = {"--workers", "1", "--upload-expiry-s", "1",
                                       "--sweep-interval-s", "1", "--lease-ttl-ms", "500", NULL};
    it_server_opts o = {.args = args, .env = env};
    assert_int_equal(it_server_start(&srv, &o), 0);
    it_test_begin(&srv);
    int64_t id = abandoned_upload("gap.bin");

    it_proxy_hold(px, true);
    /* the sweep takes the lease; the answer it waits for is held */
    int64_t deadline = it_now_ms() + 10000;
    while (it_redis_lease_exists(id) != 1 && it_now_ms() < deadline)
        it_sleep_ms(10);
    assert_int_equal(it_redis_lease_exists(id), 1);
    assert_int_equal(it_redis_wait_lease_free(id, IT_REPLY_TIMEOUT_MS), 0);
    assert_int_equal(it_redis_set_lease(id, "resumer/1", 60000), 0);
    off_t mark = it_log_size(&srv);
    it_proxy_hold(px, false);
    char needle[96];
    it_line(needle, sizeof needle, "event=expiry_deferred doc=%lld reason=lease_gap",
            (long long)id);
    assert_int_equal(it_log_wait(&srv, mark, needle, 10000), 0);
    it_assert_doc_status(id, "uploading", NULL);
    assert_int_equal(it_redis_lease_exists(id), 1);
    char path[IT_PATH_MAX + 64];
    it_upload_path(&srv, id, path, sizeof path);
    assert_int_equal(it_file_size(path), CHUNK);

    assert_int_equal(it_redis_del_lease(id), 0);
    wait_expired(id, 10000);
    assert_int_equal(it_file_size(path), -1);
    it_assert_server_stops_cleanly(&srv);
    it_proxy_stop(px);
}

/* n uploads of a user of their own, in MySQL only (no file, no Redis
 * state), with every other upload of the stack failed first, so that the
 * sweep sees these alone; the first one's id (they follow one another). */
static int64_t insert_uploads_alone(int n)
{
    assert_int_equal(it_docs_fail_uploading(), 0);
    it_user u;
    assert_int_equal(it_user_create(&u), 0);
    int64_t first = 0;
    assert_int_equal(it_docs_insert(u.id, n, false, &first), 0);
    return first;
}

/* srv, sweeping every second for uploads idle for expiry_s ("1", "3"). */
static void start_sweeping_server(const char *expiry_s)
{
    const char *const args[] = {"--workers", "1", "--upload-expiry-s", expiry_s,
                                "--sweep-interval-s", "1", NULL};
    it_server_opts o = {.args = args};
    assert_int_equal(it_server_start(&srv, &o), 0);
    it_test_begin(&srv);
}

/* More uploads older than the expiry that are still alive (leases held)
 * than one page of the sweep (500): the sweep pages on past them and
 * expires the idle upload behind them, and leaves them alone. */
static void test_expiry_pages_past_live_uploads(void **state)
{
    (void)state;
    enum { LIVE = 500 };
    int64_t first = insert_uploads_alone(LIVE);
    for (int64_t id = first; id < first + LIVE; id++)
        assert_int_equal(it_redis_set_lease(id, "alive/1", 120000), 0);
    start_sweeping_server("1");
    /* another user's: u has as many uploads in progress as a user may */
    assert_int_equal(it_sock_connect(&sock_a, srv.port), 0);
    it_sock_auth(&sock_a, &user);
    int64_t idle = it_sock_upload(&sock_a, "behind.bin", 4 * CHUNK);
    assert_true(idle > first + LIVE - 1);
    it_sock_chunk_ok(&sock_a, idle, 0, NULL, CHUNK);
    it_sock_close(&sock_a);

    wait_expired(idle, 15000);
    it_assert_doc_status(first, "uploading", NULL);
    it_assert_doc_status(first + LIVE - 1, "uploading", NULL);
    it_assert_server_stops_cleanly(&srv);
    for (int64_t id = first; id < first + LIVE; id++)
        assert_int_equal(it_redis_del_lease(id), 0);
    assert_int_equal(it_docs_fail_uploading(), 0);
}

/* The bucket folder that holds the file at path, swapped for a plain file
 * (made at <bucket>.plain) at once, or back when `back`: a sweep between
 * a rename and a create would see no file at all, which is a verdict
 * (ENOENT: nothing was written). The file cannot be looked at meanwhile
 * (ENOTDIR). */
static void swap_bucket(const char *path, bool back)
{
    char bucket[IT_PATH_MAX + 64], plain[IT_PATH_MAX + 80];
    snprintf(bucket, sizeof bucket, "%s", path);
    char *slash = strrchr(bucket, '/');
    assert_non_null(slash);
    *slash = '\0';
    snprintf(plain, sizeof plain, "%s.plain", bucket);
    if (!back) {
        int fd = open(plain, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        assert_int_equal(close(fd), 0);
    }
    assert_int_equal(renameat2(AT_FDCWD, plain, AT_FDCWD, bucket, RENAME_EXCHANGE), 0);
    if (back)
        assert_int_equal(unlink(plain), 0);
}

/* An upload older than the expiry whose file cannot be looked at (here its
 * bucket folder swapped for a plain file: ENOTDIR; on a server, EIO or a
 * stale NFS handle) may still be written: the sweep leaves it and says so.
 * Once the file can be seen again, a later sweep expires it. */
static void test_expiry_skips_a_file_it_cannot_see(void **state)
{
    (void)state;
    assert_int_equal(it_docs_fail_uploading(), 0);
    start_sweeping_server("3"); /* the file is hidden well before */
    int64_t id = abandoned_upload("hidden.bin");
    char path[IT_PATH_MAX + 64];
    it_upload_path(&srv, id, path, sizeof path);
    off_t mark = it_log_size(&srv);
    swap_bucket(path, false);
    char needle[96];
    it_line(needle, sizeof needle, "event=expiry_skipped doc=%lld ", (long long)id);
    int seen = it_log_wait(&srv, mark, needle, 10000);
    it_assert_doc_status(id, "uploading", NULL);
    swap_bucket(path, true);
    assert_int_equal(seen, 0);
    assert_int_equal(it_file_size(path), CHUNK);

    wait_expired(id, 10000);
    assert_int_equal(it_file_size(path), -1);
    it_assert_server_stops_cleanly(&srv);
}

/* An upload aborted while its file could not be reached (its bucket
 * swapped for a plain file: remove_failed) leaves the file behind a failed
 * row, which no expiry sweep lists; the sweep's leftover pass removes it
 * once it can. */
static void test_sweep_removes_what_a_failure_left(void **state)
{
    (void)state;
    start_sweeping_server("3600");
    int64_t id = abandoned_upload("left.bin");
    char path[IT_PATH_MAX + 64];
    it_upload_path(&srv, id, path, sizeof path);
    off_t mark = it_log_size(&srv);
    swap_bucket(path, false);
    assert_int_equal(it_sock_connect(&sock_a, srv.port), 0);
    it_sock_auth(&sock_a, &user);
    char line[128], needle[96];
    it_line(line, sizeof line, "{\"action\":\"abort\",\"document_id\":%lld}\n", (long long)id);
    assert_int_equal(it_sock_send_str(&sock_a, line), 0);
    json_t *r = NULL;
    int got = it_sock_read_json(&sock_a, IT_REPLY_TIMEOUT_MS, &r);
    swap_bucket(path, true);
    assert_int_equal(got, IT_READ_OK);
    it_assert_ok(r, "abort");
    json_decref(r);
    it_line(needle, sizeof needle, "event=remove_failed doc=%lld ", (long long)id);
    assert_int_equal(it_log_wait(&srv, mark, needle, 1000), 0);
    it_assert_doc_status(id, "failed", NULL);

    it_line(needle, sizeof needle, "event=leftover_removed doc=%lld\n", (long long)id);
    assert_int_equal(it_log_wait(&srv, mark, needle, 10000), 0);
    assert_int_equal(it_file_size(path), -1);
    it_assert_server_stops_cleanly(&srv);
}

/* A stop asked for while the sweep pages through idle uploads older than
 * the expiry (1,500: three pages) ends it after the page it is on, so
 * shutdown does not wait for every page; the rest stay for the next
 * sweep, of this instance or another. */
static void test_sweep_stops_between_pages(void **state)
{
    (void)state;
    enum { IDLE = 1500 };
    int64_t first = insert_uploads_alone(IDLE);
    start_sweeping_server("1");
    char needle[96];
    it_line(needle, sizeof needle, "event=upload_expired doc=%lld ", (long long)first);
    /* Each expiry commits its row: a page of 500 takes far longer than
     * this wait's 10 ms polls and the signal. */
    assert_int_equal(it_log_wait(&srv, srv.log_mark, needle, 20000), 0);
    int st = 0;
    assert_int_equal(it_server_kill(&srv, SIGTERM, 20000, &st), 0);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    /* the page it was on, whole; not the last one; and not for a failure */
    it_assert_doc_status(first + IDLE / 3 - 1, "failed", NULL);
    it_assert_doc_status(first + IDLE - 1, "uploading", NULL);
    assert_int_equal(it_log_count(&srv, "event=sweep_failed"), 0);
    assert_int_equal(it_docs_fail_uploading(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_redis_restart_with_aof, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_redis_restart_without_data, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_redis_flushall, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_redis_down_at_completion, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_mysql_down, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_mysql_restart_while_idle, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_expiry_two_instances, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_expiry_after_a_lease_gap, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_expiry_skips_a_file_it_cannot_see, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_sweep_stops_between_pages, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_sweep_removes_what_a_failure_left, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_expiry_pages_past_live_uploads, test_setup,
                                        test_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
