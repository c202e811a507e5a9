/* The refusals and closes that come from the server's situation rather
 * than from a request: a backend that is down (503 unavailable), an idle
 * connection, a shutdown, a writer that lost its lease, too many
 * connections, a full disk (507). Each test starts its own chunkd. */
#include "harness_fault.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* the servers of the current test; teardown stops them when the test fails */
static it_server aux, second;
static int hold_fd = -1;
static it_user u1;

static int group_setup(void **state)
{
    (void)state;
    return it_init("it_ops_errors") != 0 || it_user_create(&u1) != 0 ? -1 : 0;
}

static int group_teardown(void **state)
{
    (void)state;
    it_shutdown();
    return 0;
}

static int test_setup(void **state)
{
    (void)state;
    it_test_begin(NULL);
    return 0;
}

static int test_teardown(void **state)
{
    (void)state;
    /* A gate first: a server held in an open() by it could not stop. */
    if (hold_fd >= 0)
        close(hold_fd);
    hold_fd = -1;
    if (aux.pid > 0) {
        it_test_end(&aux);
        it_server_stop(&aux);
    }
    if (second.pid > 0) {
        it_test_end(&second);
        it_server_stop(&second);
    }
    return 0;
}

/* Starts aux (opts may be NULL) and begins the test on it. */
static void start_aux(const it_server_opts *o)
{
    assert_int_equal(it_server_start(&aux, o), 0);
    it_test_begin(&aux);
}

/* The next answer on b (fails the test when none comes). */
static json_t *answer_on(it_sock *b)
{
    json_t *r = NULL;
    assert_int_equal(it_sock_read_json(b, IT_REPLY_TIMEOUT_MS, &r), IT_READ_OK);
    return r;
}

/* ---- 503: a backend that is not there ------------------------------------------ */

/* A loopback port bound but not listening: connections to it are refused
 * for as long as the socket is held. */
static int closed_port(int *fd)
{
    *fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(*fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(*fd, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t len = sizeof sa;
    assert_int_equal(getsockname(*fd, (struct sockaddr *)&sa, &len), 0);
    return ntohs(sa.sin_port);
}

static void unavailable_case(const char *port_var)
{
    int port = closed_port(&hold_fd);
    char env_entry[64];
    snprintf(env_entry, sizeof env_entry, "%s=%d", port_var, port);
    const char *env[] = {env_entry, NULL};
    static const char *const args[] = {"--workers", "1", "--backend-timeout-ms", "1000", NULL};
    it_server_opts o = {.args = args, .env = env};
    int started = it_server_start(&aux, &o);
    if (started != 0)
        fprintf(stderr, "it: chunkd must start with %s unreachable and answer 503\n", port_var);
    assert_int_equal(started, 0);
    it_test_begin(&aux);

    it_sock s;
    assert_int_equal(it_sock_connect(&s, aux.port), 0);
    char line[512];
    it_line(line, sizeof line,
            "{\"action\":\"upload\",\"filename\":\"f\",\"filesize\":10,\"user_id\":%lld,"
            "\"credential\":\"%s\"}",
            (long long)u1.id, u1.credential);
    for (int i = 0; i < 2; i++)
        it_expect_error_open(&s, line, 503, "unavailable");
    it_sock_close(&s);
    it_assert_server_stops_cleanly(&aux);
}

static void test_unavailable_redis(void **state)
{
    (void)state;
    unavailable_case("CHUNKD_REDIS_PORT");
    it_pass();
}

static void test_unavailable_mysql(void **state)
{
    (void)state;
    unavailable_case("CHUNKD_MYSQL_PORT");
    it_pass();
}

/* ---- closes announced by the server ---------------------------------------------- */

static void test_idle_timeout(void **state)
{
    (void)state;
    static const char *const args[] = {"--workers", "1", "--idle-timeout-ms", "1000", NULL};
    it_server_opts o = {.args = args};
    start_aux(&o);

    /* a busy connection is not idle */
    it_sock busy, quiet;
    assert_int_equal(it_sock_connect(&busy, aux.port), 0);
    assert_int_equal(it_sock_connect(&quiet, aux.port), 0);
    int64_t start = it_now_ms();
    for (int i = 0; i < 8; i++) {
        it_sleep_ms(300);
        it_assert_open(&busy);
    }
    json_t *r;
    assert_int_equal(it_sock_read_json(&quiet, IT_REPLY_TIMEOUT_MS, &r), IT_READ_OK);
    it_assert_error(r, 503, "idle_timeout");
    json_decref(r);
    it_assert_closed(&quiet);
    int64_t waited = it_now_ms() - start;
    assert_true(waited >= 900);
    it_sock_close(&quiet);
    it_sock_close(&busy);
    it_assert_server_stops_cleanly(&aux);
    it_pass();
}

static void test_shutting_down(void **state)
{
    (void)state;
    static const char *const args[] = {"--workers", "2", NULL};
    it_server_opts o = {.args = args};
    start_aux(&o);
    it_sock a, b;
    assert_int_equal(it_sock_connect(&a, aux.port), 0);
    it_sock_auth(&a, &u1);
    int64_t id = it_sock_upload(&a, "interrupted.bin", 100);
    assert_int_equal(it_sock_connect(&b, aux.port), 0);
    it_assert_open(&b);
    assert_int_equal(kill(aux.pid, SIGTERM), 0);
    it_sock *both[] = {&a, &b};
    for (int i = 0; i < 2; i++) {
        json_t *r;
        assert_int_equal(it_sock_read_json(both[i], IT_REPLY_TIMEOUT_MS, &r), IT_READ_OK);
        it_assert_error(r, 503, "shutting_down");
        json_decref(r);
        it_assert_closed(both[i]);
        it_sock_close(both[i]);
    }
    /* the open upload is left to be resumed elsewhere */
    it_assert_doc_status(id, "uploading", NULL);
    assert_int_equal(it_redis_exists(id), 1);
    it_assert_server_stops_cleanly(&aux);
    it_pass();
}

/* A writer that stalls longer than the lease loses the upload to a
 * resume elsewhere; its late bytes never reach the file. */
static void test_lease_lost(void **state)
{
    (void)state;
    static const char *const args[] = {"--workers", "2", "--lease-ttl-ms", "500", NULL};
    it_server_opts o = {.args = args};
    start_aux(&o);
    it_sock a, b;
    assert_int_equal(it_sock_connect(&a, aux.port), 0);
    assert_int_equal(it_sock_connect(&b, aux.port), 0);
    it_sock_auth(&a, &u1);
    it_sock_auth(&b, &u1);
    unsigned char good[2000];
    it_random_bytes(good, sizeof good);
    char sha[65];
    it_sha256_hex(good, sizeof good, sha);
    int64_t id = it_sock_upload(&a, "stalled.bin", 2000);
    it_sock_chunk_ok(&a, id, 0, good, 1000);
    it_sleep_ms(1500);

    char line[160], hdr[160];
    it_line(line, sizeof line, "{\"action\":\"resume\",\"document_id\":%lld}", (long long)id);
    json_t *r = it_sock_req(&b, line);
    it_assert_ok(r, "resume");
    assert_int_equal(it_json_int(r, "offset"), 1000);
    json_decref(r);

    it_line(hdr, sizeof hdr, "{\"action\":\"chunk\",\"document_id\":%lld,\"offset\":1000,"
                             "\"length\":1000}", (long long)id);
    it_expect_chunk_error_open(&a, hdr, 1000, 409, "lease_lost");
    /* and the upload is no longer open on a */
    it_expect_chunk_error_open(&a, hdr, 1000, 409, "upload_not_open");
    it_line(line, sizeof line, "{\"action\":\"upload_complete\",\"document_id\":%lld}",
            (long long)id);
    it_expect_error_open(&a, line, 409, "upload_not_open");

    it_sock_chunk_ok(&b, id, 1000, good + 1000, 1000);
    r = it_sock_req(&b, line);
    assert_string_equal(it_json_str(r, "status"), "SUCCESS");
    assert_string_equal(it_json_str(r, "sha256"), sha);
    json_decref(r);
    it_assert_stored(&aux, id, 2000, sha);
    it_sock_close(&a);
    it_sock_close(&b);
    it_assert_server_stops_cleanly(&aux);
    it_pass();
}

/* For the lease tests: starts a server with args, authenticates a (as u1)
 * and uploads 1,000 random bytes in one chunk, its progress read. The
 * document id; the bytes' SHA-256 in sha. */
static int64_t upload_one_chunk(const char *const *args, it_sock *a, const char *name,
                                char sha[65])
{
    it_server_opts o = {.args = args};
    start_aux(&o);
    assert_int_equal(it_sock_connect(a, aux.port), 0);
    it_sock_auth(a, &u1);
    unsigned char body[1000];
    it_random_bytes(body, sizeof body);
    it_sha256_hex(body, sizeof body, sha);
    int64_t id = it_sock_upload(a, name, sizeof body);
    it_sock_chunk_ok(a, id, 0, body, sizeof body);
    return id;
}

/* upload_complete of id on s is answered SUCCESS, and the file is stored. */
static void complete_ok(it_sock *s, int64_t id, int64_t size, const char *sha)
{
    json_t *r = it_sock_complete(s, id);
    assert_string_equal(it_json_str(r, "status"), "SUCCESS");
    assert_string_equal(it_json_str(r, "sha256"), sha);
    json_decref(r);
    it_assert_stored(&aux, id, size, sha);
}

/* `chunkctl fail ID` against the test's server: 0 on exit 0. */
static int chunkctl_fail(int64_t id)
{
    char ids[24], err_path[IT_PATH_MAX + 32];
    snprintf(ids, sizeof ids, "%lld", (long long)id);
    snprintf(err_path, sizeof err_path, "%s/chunkctl.err", aux.dir);
    char *out = NULL;
    int rc = it_chunkctl(&aux, (const char *const[]){"fail", ids, NULL}, err_path, &out);
    if (rc != 0)
        it_print_file("chunkctl stderr", err_path);
    free(out);
    return rc;
}

/* ---- a resume held inside its open() of the file ------------------------- */

enum { HELD_SIZE = 3000, HELD_SENT = 1000 };

/* An upload of HELD_SIZE bytes of data whose first HELD_SENT were sent on
 * a connection that then closed; its id, once its lease is free. */
static int64_t closed_partial_upload(const unsigned char *data)
{
    it_sock a;
    assert_int_equal(it_sock_connect(&a, aux.port), 0);
    it_sock_auth(&a, &u1);
    int64_t id = it_sock_upload(&a, "held.bin", HELD_SIZE);
    it_sock_chunk_ok(&a, id, 0, data, HELD_SENT);
    it_sock_close(&a);
    assert_int_equal(it_redis_wait_lease_free(id, IT_REPLY_TIMEOUT_MS), 0);
    return id;
}

/* closed_partial_upload of random bytes that the test has no use for. */
static int64_t closed_random_upload(void)
{
    char sha[65];
    unsigned char *data = it_random_payload(HELD_SIZE, sha);
    int64_t id = closed_partial_upload(data);
    free(data);
    return id;
}

/* Waits until the resume sent a moment ago of the document at path is
 * held in its open() of the file (an open gate, hold_fd). fenced: the
 * resume fences, and its bucket is marked: that open is let through, and
 * its copy's create is held instead. The held event's fd. */
static int resume_held_at(const char *path, bool fenced)
{
    int held = -1;
    assert_int_equal(it_gate_wait_for(hold_fd, aux.pid, path, IT_REPLY_TIMEOUT_MS, &held), 0);
    if (fenced) {
        /* the copy is unnamed till it is whole: the kernel calls it
         * `#<inode> (deleted)` in the bucket */
        char copy[IT_PATH_MAX + 64];
        snprintf(copy, sizeof copy, "%s", path);
        snprintf(strrchr(copy, '/'), sizeof copy - (size_t)(strrchr(copy, '/') - copy), "/#*");
        assert_int_equal(it_gate_release(hold_fd, held), 0);
        assert_int_equal(it_gate_wait_for(hold_fd, aux.pid, copy, IT_REPLY_TIMEOUT_MS, &held),
                         0);
    }
    return held;
}

/* Sends a resume of id on a new connection *b and waits until chunkd is
 * held in its open() of the file, or with fenced (the last writer died
 * holding the upload, so the resume fences) in its copy's create. The held
 * event's fd. */
static int resume_held(int64_t id, bool fenced, it_sock *b)
{
    char path[IT_PATH_MAX + 64];
    it_upload_path(&aux, id, path, sizeof path);
    hold_fd = it_gate_open_or_skip(path);
    if (fenced) {
        assert_int_equal(it_redis_set_upload_field(id, "writer", "gone-node/0"), 0);
        char bucket[IT_PATH_MAX + 64];
        snprintf(bucket, sizeof bucket, "%s", path);
        *strrchr(bucket, '/') = '\0';
        assert_int_equal(it_gate_mark(hold_fd, bucket, true), 0);
    }
    assert_int_equal(it_sock_connect(b, aux.port), 0);
    assert_int_equal(it_sock_send_resume(b, id, &u1), 0);
    return resume_held_at(path, fenced);
}

/* Ends the gate; the open it held goes on (allow) or fails (deny). */
static void gate_end(int held, bool allow)
{
    assert_int_equal(allow ? it_gate_release(hold_fd, held) : it_gate_deny(hold_fd, held), 0);
    close(hold_fd);
    hold_fd = -1;
}

/* Resumes id on b (signed in) at `at` and sends the rest to SUCCESS. */
static void resume_and_finish(it_sock *b, int64_t id, int64_t at, const unsigned char *data,
                              const char *sha)
{
    assert_int_equal(it_sock_send_resume(b, id, NULL), 0);
    json_t *r = answer_on(b);
    it_assert_ok(r, "resume");
    assert_int_equal(it_json_int(r, "offset"), at);
    json_decref(r);
    it_sock_chunk_ok(b, id, at, data + at, (size_t)(HELD_SIZE - at));
    complete_ok(b, id, HELD_SIZE, sha);
}

/* A shutdown while a chunk's offset save is in flight (Redis's reply held
 * by a proxy). 0: the reply comes within the shutdown's grace period,
 * which waits for it; 1: no grace period: the goodbye itself waits for
 * the save. Either way the chunk is answered before 503 shutting_down, and
 * a resume on the next instance starts after it. 2: the reply is held past
 * backend_timeout_ms: the save counts as failed (Redis may or may not have
 * applied it), the chunk is answered 503 unavailable, still before the
 * goodbye, and cut from the file, so the resume starts where the last
 * acknowledged chunk ended. The upload then finishes intact. */
static void test_goodbye_waits_for_a_save(void **state)
{
    (void)state;
    char sha[65];
    unsigned char *data = it_random_payload(HELD_SIZE, sha);
    for (int how = 0; how < 3; how++) {
        bool late = how == 2;
        /* the next instance, on the same storage */
        assert_int_equal(it_server_start(&second, NULL), 0);
        char redis_env[48];
        it_proxy *px = it_proxy_for("CHUNKD_REDIS_PORT", redis_env, sizeof redis_env);
        const char *env[] = {redis_env, NULL};
        /* no sweep: only the upload's traffic goes through the proxy */
        const char *args[] = {"--workers",           "1",
                              "--backend-timeout-ms", "1000",
                              "--shutdown-grace-ms",  how == 1 ? "0" : "5000",
                              "--sweep-interval-s",   "0",
                              NULL};
        it_server_opts o = {.args = args, .env = env, .storage_dir = second.storage_dir};
        start_aux(&o);
        it_sock a;
        assert_int_equal(it_sock_connect(&a, aux.port), 0);
        it_sock_auth(&a, &u1);
        int64_t id = it_sock_upload(&a, "goodbye.bin", HELD_SIZE);
        it_sock_chunk_ok(&a, id, 0, data, 1000);

        it_proxy_hold(px, true);
        int64_t before = it_proxy_sent(px);
        char hdr[160];
        it_line(hdr, sizeof hdr,
                "{\"action\":\"chunk\",\"document_id\":%lld,\"offset\":1000,\"length\":1000}",
                (long long)id);
        assert_int_equal(it_sock_send_chunk(&a, hdr, data + 1000, 1000), 0);
        /* the chunk is written and its save sent: the proxy saw it go */
        int64_t until = it_now_ms() + IT_REPLY_TIMEOUT_MS;
        while (it_proxy_sent(px) == before && it_now_ms() < until)
            it_sleep_ms(5);
        assert_true(it_proxy_sent(px) > before);
        assert_int_equal(kill(aux.pid, SIGTERM), 0);
        /* late: the timeout is seen on a loop tick (1 s) after it passed */
        it_sleep_ms(late ? 3000 : 300);
        it_proxy_hold(px, false);

        json_t *r = answer_on(&a);
        if (late) {
            it_assert_error(r, 503, "unavailable");
        } else {
            assert_string_equal(it_json_str(r, "event"), "progress");
            assert_int_equal(it_json_int(r, "received"), 2000);
        }
        json_decref(r);
        r = answer_on(&a);
        it_assert_error(r, 503, "shutting_down");
        json_decref(r);
        it_assert_closed(&a);
        it_sock_close(&a);
        it_assert_server_stops_cleanly(&aux);
        it_proxy_stop(px);

        it_assert_doc_status(id, "uploading", NULL);
        if (!late) {
            it_rkey k;
            assert_int_equal(it_redis_upload(id, &k), 0);
            assert_int_equal(k.offset, 2000);
        }
        assert_int_equal(it_redis_wait_lease_free(id, IT_REPLY_TIMEOUT_MS), 0);

        it_test_begin(&second);
        assert_int_equal(it_sock_connect(&a, second.port), 0);
        it_sock_auth(&a, &u1);
        resume_and_finish(&a, id, late ? 1000 : 2000, data, sha);
        it_sock_close(&a);
        it_assert_server_stops_cleanly(&second);
    }
    free(data);
    it_pass();
}

/* A shutdown with no grace period while a completion's UPDATE is on its
 * way (MySQL's reply held by a proxy): the connection is cut (503
 * shutting_down), but the upload's lease stays taken until the statement
 * is back, so no other instance resumes a document that is being declared
 * complete; the server waits for it before it exits. The row is then
 * completed, the file stored and the Redis state and lease gone, and a
 * resume elsewhere learns that it is complete. */
static void test_shutdown_while_completion_commits(void **state)
{
    (void)state;
    char mysql_env[48];
    it_proxy *px = it_proxy_for("CHUNKD_MYSQL_PORT", mysql_env, sizeof mysql_env);
    const char *env[] = {mysql_env, NULL};
    static const char *const args[] = {"--workers", "1", "--shutdown-grace-ms", "0",
                                       "--sweep-interval-s", "0", NULL};
    /* the next instance, on the same storage */
    assert_int_equal(it_server_start(&second, NULL), 0);
    it_server_opts o = {.args = args, .env = env, .storage_dir = second.storage_dir};
    start_aux(&o);
    char sha[65];
    unsigned char *data = it_random_payload(HELD_SIZE, sha);
    it_sock a;
    assert_int_equal(it_sock_connect(&a, aux.port), 0);
    it_sock_auth(&a, &u1);
    int64_t id = it_sock_upload(&a, "commit.bin", HELD_SIZE);
    it_sock_chunk_ok(&a, id, 0, data, HELD_SIZE);

    it_proxy_hold(px, true);
    int64_t before = it_proxy_sent(px);
    char line[96];
    it_line(line, sizeof line, "{\"action\":\"upload_complete\",\"document_id\":%lld}\n",
            (long long)id);
    assert_int_equal(it_sock_send_str(&a, line), 0);
    /* the UPDATE went out: the proxy saw it */
    int64_t until = it_now_ms() + IT_REPLY_TIMEOUT_MS;
    while (it_proxy_sent(px) == before && it_now_ms() < until)
        it_sleep_ms(5);
    assert_true(it_proxy_sent(px) > before);
    assert_int_equal(kill(aux.pid, SIGTERM), 0);
    json_t *r = answer_on(&a);
    it_assert_error(r, 503, "shutting_down");
    json_decref(r);
    it_assert_closed(&a);
    it_sock_close(&a);
    assert_int_equal(it_redis_lease_exists(id), 1);

    it_proxy_hold(px, false);
    it_assert_server_stops_cleanly(&aux);
    assert_int_equal(it_redis_lease_exists(id), 0);
    it_assert_stored(&second, id, HELD_SIZE, sha);
    it_proxy_stop(px);

    it_test_begin(&second);
    assert_int_equal(it_sock_connect(&a, second.port), 0);
    assert_int_equal(it_sock_send_resume(&a, id, &u1), 0);
    r = answer_on(&a);
    it_assert_error(r, 409, "not_resumable");
    assert_string_equal(it_json_str(r, "document_status"), "completed");
    json_decref(r);
    it_sock_close(&a);
    free(data);
    it_assert_server_stops_cleanly(&second);
    it_pass();
}

/* MySQL going away half-way through a result (a proxy cuts every
 * connection in the middle of a list's rows): the request is answered 503
 * unavailable, the server stays up, and the next request connects again
 * and gets the whole list. The lost connection closes the statement whose
 * rows were being read; its result used to be freed after that, inside
 * libmariadb, where only valgrind sees it: chunkd runs under valgrind
 * when the build is not sanitized (IT_VALGRIND). */
static void test_mysql_gone_mid_result(void **state)
{
    (void)state;
    enum { DOCS = 100 };
    it_user u;
    assert_int_equal(it_user_create(&u), 0);
    assert_int_equal(it_docs_insert(u.id, DOCS, true, NULL), 0);
    char mysql_env[48];
    it_proxy *px = it_proxy_for("CHUNKD_MYSQL_PORT", mysql_env, sizeof mysql_env);
    const char *env[] = {mysql_env, NULL};
    static const char *const args[] = {"--workers", "1", "--sweep-interval-s", "0", NULL};
    const char *valgrind = getenv("IT_VALGRIND");
    const char *vg[] = {valgrind, "--error-exitcode=99", "--quiet", NULL};
    it_server_opts o = {.args = args, .env = env, .wrapper = valgrind ? vg : NULL};
    start_aux(&o);
    it_sock a;
    assert_int_equal(it_sock_connect(&a, aux.port), 0);
    it_sock_auth(&a, &u);
    const char *list = "{\"action\":\"list\",\"limit\":100}";
    for (int cut = 0; cut < 3; cut++) {
        /* 0: how many bytes MySQL's answer is; 1: cut half-way; 2: again */
        static int64_t whole;
        int64_t before = it_proxy_received(px);
        if (cut == 1)
            it_proxy_cut_after(px, whole / 2);
        json_t *r = it_sock_req(&a, list);
        if (cut == 1) {
            it_assert_error(r, 503, "unavailable");
            it_proxy_cut_after(px, -1);
        } else {
            assert_int_equal(json_array_size(json_object_get(r, "documents")), DOCS);
        }
        json_decref(r);
        if (cut == 0)
            whole = it_proxy_received(px) - before;
    }
    assert_true(it_log_count(&aux, "Lost connection") >= 1 ||
                it_log_count(&aux, "server has gone away") >= 1);
    it_sock_close(&a);
    it_assert_server_stops_cleanly(&aux);
    it_proxy_stop(px);
    it_pass();
}

/* A client that sends requests and does not read the answers: chunkd
 * stops taking its requests once the answers waiting for it pass
 * max_output_buffer, instead of running them all and queueing what they
 * answer (here 600 lists of 1000 documents, about 180 MB; one read of
 * 16 KiB holds 528 of them), and goes on when the client reads. The
 * requests it ran are counted on the way to MySQL (a proxy), one
 * statement each; every answer arrives, in order, even after longer than
 * the request timeout. */
static void test_requests_wait_for_a_reader(void **state)
{
    (void)state;
    enum { DOCS = 1000, REQUESTS = 600 };
    it_user u;
    assert_int_equal(it_user_create(&u), 0);
    assert_int_equal(it_docs_insert(u.id, DOCS, true, NULL), 0);
    char mysql_env[48];
    it_proxy *px = it_proxy_for("CHUNKD_MYSQL_PORT", mysql_env, sizeof mysql_env);
    const char *env[] = {mysql_env, NULL};
    static const char *const args[] = {"--workers",           "1",
                                       "--max-output-buffer", "1048576",
                                       "--request-timeout-ms", "1000",
                                       "--sweep-interval-s",  "0",
                                       NULL};
    it_server_opts o = {.args = args, .env = env};
    start_aux(&o);
    it_sock a;
    assert_int_equal(it_sock_connect(&a, aux.port), 0);
    it_sock_auth(&a, &u);
    const char *list = "{\"action\":\"list\",\"limit\":1000}";
    /* what one list sends to MySQL */
    int64_t before = it_proxy_sent(px);
    json_t *r = it_sock_req(&a, list);
    assert_int_equal(json_array_size(json_object_get(r, "documents")), DOCS);
    json_decref(r);
    int64_t per_request = it_proxy_sent(px) - before;
    assert_true(per_request > 0);

    size_t line_len = strlen(list) + 1;
    char *all = malloc(line_len * REQUESTS);
    assert_non_null(all);
    for (int i = 0; i < REQUESTS; i++) {
        memcpy(all + (size_t)i * line_len, list, line_len - 1);
        all[(size_t)i * line_len + line_len - 1] = '\n';
    }
    before = it_proxy_sent(px);
    assert_int_equal(it_sock_send(&a, all, line_len * REQUESTS), 0);
    free(all);
    /* until chunkd stops taking requests: nothing sent to MySQL for 500 ms */
    int64_t seen = -1, quiet_since = it_now_ms(), deadline = it_now_ms() + 30000;
    while (it_now_ms() - quiet_since < 500 && it_now_ms() < deadline) {
        int64_t now = it_proxy_sent(px);
        if (now != seen) {
            seen = now;
            quiet_since = it_now_ms();
        }
        it_sleep_ms(20);
    }
    int64_t ran = (it_proxy_sent(px) - before) / per_request;
    fprintf(stderr, "it: %lld of %d requests ran while the client read nothing\n",
            (long long)ran, REQUESTS);
    /* the answers the kernel's socket buffers hold (a few MiB), plus 1 MiB */
    assert_true(ran < 100);
    /* Longer than the request timeout: requests that wait for the client
     * to read are not a slow sender's (no 408). */
    it_sleep_ms(2500);
    for (int i = 0; i < REQUESTS; i++) {
        r = answer_on(&a);
        if (json_array_size(json_object_get(r, "documents")) != DOCS)
            fail_msg("answer %d is not the list", i);
        json_decref(r);
    }
    it_assert_open(&a);
    it_sock_close(&a);
    it_assert_server_stops_cleanly(&aux);
    it_proxy_stop(px);
    it_pass();
}

/* Locks the row of document id (it_doc_lock), then sends its abort on b,
 * a new connection of u1's, and returns once the abort's UPDATE waits for
 * the row. */
static void abort_waiting_for_the_row(it_sock *b, int64_t id)
{
    assert_int_equal(it_doc_lock(id), 0);
    assert_int_equal(it_sock_connect(b, aux.port), 0);
    it_sock_auth(b, &u1);
    char line[128];
    it_line(line, sizeof line, "{\"action\":\"abort\",\"document_id\":%lld}\n", (long long)id);
    assert_int_equal(it_sock_send_str(b, line), 0);
    assert_int_equal(it_doc_wait_lock_waiter(IT_REPLY_TIMEOUT_MS), 0);
}

/* An abort that loses to another ending of the upload (the row locked,
 * then failed elsewhere while the abort's UPDATE waits for it): the
 * answer is not_resumable with the status the row has now, and what the
 * other ending left (the file, the Redis state) is removed. */
static void test_abort_loses_to_another_ending(void **state)
{
    (void)state;
    start_aux(NULL);
    int64_t id = closed_random_upload();
    it_sock b;
    abort_waiting_for_the_row(&b, id);
    assert_int_equal(it_doc_end_and_unlock("ended elsewhere"), 0);
    json_t *r = answer_on(&b);
    it_assert_error(r, 409, "not_resumable");
    assert_string_equal(it_json_str(r, "document_status"), "failed");
    json_decref(r);
    it_doc d;
    it_assert_doc_status(id, "failed", &d);
    assert_string_equal(d.failure_reason, "ended elsewhere");
    char path[IT_PATH_MAX + 64];
    it_upload_path(&aux, id, path, sizeof path);
    assert_int_equal(it_file_size(path), -1);
    assert_int_equal(it_redis_exists(id), 0);
    it_assert_open(&b);
    it_sock_close(&b);
    it_assert_server_stops_cleanly(&aux);
    it_pass();
}

/* An abort whose UPDATE ran but whose answer from MySQL was lost (the
 * connection cut, through a proxy, with the answer held in it): the row is
 * read again on a new connection.
 * - failed by this abort: the abort answers as done and removes the file
 *   and the Redis state, which no expiry sweep would (it lists uploading
 *   rows only);
 * - completed first by someone else (the UPDATE changed nothing): the
 *   answer says so, and the document's file stays;
 * - failed, but the read-back's connection is cut too: 503, and the
 *   sweep's leftover pass removes the file once MySQL is back. */
static void test_abort_whose_answer_is_lost(void **state)
{
    (void)state;
    enum { FAILED, COMPLETED, UNREAD, CASES };
    char mysql_env[48];
    it_proxy *px = it_proxy_for("CHUNKD_MYSQL_PORT", mysql_env, sizeof mysql_env);
    const char *env[] = {mysql_env, NULL};
    static const char *const args[] = {"--workers", "1", "--sweep-interval-s", "1", NULL};
    it_server_opts o = {.args = args, .env = env};
    start_aux(&o);
    for (int c = 0; c < CASES; c++) {
        int64_t id = closed_random_upload();
        char path[IT_PATH_MAX + 64];
        it_upload_path(&aux, id, path, sizeof path);
        assert_int_equal(it_file_size(path), HELD_SENT);

        it_sock b;
        abort_waiting_for_the_row(&b, id);
        /* the abort's UPDATE waits for the row; its answer will be held */
        it_proxy_hold(px, true);
        off_t mark = it_log_size(&aux);
        it_doc d;
        if (c == COMPLETED) {
            static const char some_sha[] =
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            char rel[48]; /* as a completion writes it: other programs read it */
            it_data_rel_path(id, rel, sizeof rel);
            assert_int_equal(it_doc_complete_and_unlock(some_sha, rel), 0);
        } else {
            assert_int_equal(it_doc_unlock(), 0);
            int64_t deadline = it_now_ms() + IT_REPLY_TIMEOUT_MS;
            while (it_doc_get(id, &d) == 1 && strcmp(d.status, "uploading") == 0 &&
                   it_now_ms() < deadline)
                it_sleep_ms(5);
        }
        json_t *r = NULL;
        if (c == UNREAD) {
            it_proxy_cut_after(px, 0); /* this connection, and every new one */
            r = answer_on(&b);
            it_proxy_cut_after(px, -1);
            it_proxy_hold(px, false);
        } else {
            assert_int_equal(it_proxy_cut_now(px), 0);
            it_proxy_hold(px, false); /* for the read-back's new connection */
            r = answer_on(&b);
        }
        if (c == FAILED) {
            it_assert_ok(r, "abort");
            assert_int_equal(it_log_wait(&aux, mark, "event=fail_read_back", 1000), 0);
        } else if (c == COMPLETED) {
            it_assert_error(r, 409, "not_resumable");
            assert_string_equal(it_json_str(r, "document_status"), "completed");
        } else {
            it_assert_error(r, 503, "unavailable");
            assert_int_equal(it_log_wait(&aux, mark, "event=fail_not_read_back", 1000), 0);
        }
        json_decref(r);
        if (c == COMPLETED) {
            it_assert_doc_status(id, "completed", NULL);
            assert_int_equal(it_file_size(path), HELD_SENT);
        } else {
            it_assert_doc_status(id, "failed", &d);
            assert_string_equal(d.failure_reason, "aborted");
        }
        if (c == UNREAD) {
            char needle[96];
            it_line(needle, sizeof needle, "event=leftover_removed doc=%lld\n", (long long)id);
            assert_int_equal(it_log_wait(&aux, mark, needle, IT_REPLY_TIMEOUT_MS), 0);
        }
        if (c != COMPLETED) {
            assert_int_equal(it_file_size(path), -1);
            if (c == FAILED)
                assert_int_equal(it_redis_exists(id), 0);
        }
        it_assert_open(&b);
        it_sock_close(&b);
    }
    it_assert_server_stops_cleanly(&aux);
    it_proxy_stop(px);
    it_pass();
}

/* An abort whose UPDATE waits for a row lock longer than chunkd waits for
 * MySQL (--backend-timeout-ms 2000): the session's lock wait, a second
 * shorter, ends the statement on the server first (1205, rolled back), so
 * the abort answers 503 and nothing of it commits once the lock goes. The
 * upload goes on, and the abort sent again ends it. */
static void test_abort_outwaited_by_a_row_lock(void **state)
{
    (void)state;
    static const char *const args[] = {"--workers", "1", "--backend-timeout-ms", "2000", NULL};
    it_server_opts o = {.args = args};
    start_aux(&o);
    int64_t id = closed_random_upload();
    it_sock b;
    abort_waiting_for_the_row(&b, id);
    json_t *r = answer_on(&b);
    it_assert_error(r, 503, "unavailable");
    json_decref(r);
    assert_int_equal(it_doc_unlock(), 0);
    /* a statement this side gave up on would commit now */
    it_sleep_ms(1000);
    it_assert_doc_status(id, "uploading", NULL);
    char path[IT_PATH_MAX + 64];
    it_upload_path(&aux, id, path, sizeof path);
    assert_int_equal(it_file_size(path), HELD_SENT);

    char line[128];
    it_line(line, sizeof line, "{\"action\":\"abort\",\"document_id\":%lld}\n", (long long)id);
    assert_int_equal(it_sock_send_str(&b, line), 0);
    r = answer_on(&b);
    it_assert_ok(r, "abort");
    json_decref(r);
    it_doc d;
    it_assert_doc_status(id, "failed", &d);
    assert_string_equal(d.failure_reason, "aborted");
    assert_int_equal(it_file_size(path), -1);
    it_sock_close(&b);
    it_assert_server_stops_cleanly(&aux);
    it_pass();
}

/* A resume slower than the lease (held here inside its open() of the file
 * by an open gate, for longer than a 500 ms lease): it takes the lapsed
 * lease again and goes on, since nobody had it meanwhile. Had another
 * writer taken it, put a file of its own at the path, or resumed, written
 * and let go in the gap, the resume answers lease_lost instead of writing
 * on (and the other writer's bytes stay); had the upload been ended (and
 * its end marker lapsed too), not_resumable, leaving nothing. A fenced
 * copy that outlasts the lease does not take the path: lease_lost, no
 * stray copy. */
static void test_slow_resume_outlives_its_lease(void **state)
{
    (void)state;
    static const char *const args[] = {"--workers", "2", "--lease-ttl-ms", "500", NULL};
    it_server_opts o = {.args = args};
    start_aux(&o);
    char sha[65];
    unsigned char *data = it_random_payload(HELD_SIZE, sha);
    /* 0: nobody meanwhile; 1: another writer holds the lease; 2: another
     * writer's file replaced ours, and its lease is gone; 3: chunkctl
     * failed the upload, and its end marker lapsed; 4: another connection
     * resumed, wrote a chunk and closed; 5: the resume fences (the last
     * writer died holding the upload), and its copy outlasts the lease */
    for (int meanwhile = 0; meanwhile < 6; meanwhile++) {
        int64_t id = closed_partial_upload(data);
        char path[IT_PATH_MAX + 64], other_sha[65];
        it_upload_path(&aux, id, path, sizeof path);
        it_sock b;
        int held = resume_held(id, meanwhile == 5, &b);
        /* the 500 ms lease lapses */
        assert_int_equal(it_redis_wait_lease_free(id, IT_REPLY_TIMEOUT_MS), 0);
        if (meanwhile == 1)
            assert_int_equal(it_redis_set_lease(id, "other-node/1", 60000), 0);
        if (meanwhile == 2) {
            char other[IT_PATH_MAX + 80];
            snprintf(other, sizeof other, "%s.other", path);
            assert_int_equal(it_make_file(other, 1000, other_sha), 0);
            assert_int_equal(rename(other, path), 0);
        }
        if (meanwhile == 3) {
            assert_int_equal(chunkctl_fail(id), 0);
            assert_int_equal(it_redis_lease_ended(id), 1);
            assert_int_equal(it_redis_del_lease(id), 0);
        }
        if (meanwhile == 4) {
            /* the next connection goes to the other worker: the listener
             * hands connections out in turn (listener.c) */
            it_sock t;
            assert_int_equal(it_sock_connect(&t, aux.port), 0);
            assert_int_equal(it_sock_send_resume(&t, id, &u1), 0);
            int other = -1; /* its open, let through */
            assert_int_equal(it_gate_wait_for(hold_fd, aux.pid, path, IT_REPLY_TIMEOUT_MS, &other),
                             0);
            assert_int_equal(it_gate_release(hold_fd, other), 0);
            json_t *tr = answer_on(&t);
            it_assert_ok(tr, "resume");
            assert_int_equal(it_json_int(tr, "offset"), HELD_SENT);
            json_decref(tr);
            it_sock_chunk_ok(&t, id, HELD_SENT, data + HELD_SENT, 1000);
            it_sock_close(&t);
            assert_int_equal(it_redis_wait_lease_free(id, IT_REPLY_TIMEOUT_MS), 0);
        }
        gate_end(held, true);
        json_t *r = answer_on(&b);
        assert_int_equal(it_stray_files(&aux, id), 0);
        if (meanwhile == 0) {
            it_assert_ok(r, "resume");
            assert_int_equal(it_json_int(r, "offset"), HELD_SENT);
            json_decref(r);
            it_sock_chunk_ok(&b, id, HELD_SENT, data + HELD_SENT, HELD_SIZE - HELD_SENT);
            complete_ok(&b, id, HELD_SIZE, sha);
        } else if (meanwhile == 3) {
            it_assert_error(r, 409, "not_resumable");
            json_decref(r);
            struct stat gone;
            assert_int_equal(stat(path, &gone), -1);
            assert_int_equal(it_redis_exists(id), 0);
            assert_int_equal(it_redis_lease_exists(id), 0);
        } else {
            it_assert_error(r, 409, "lease_lost");
            json_decref(r);
        }
        if (meanwhile == 1) { /* the holder's lease and the saved offset stay */
            assert_int_equal(it_redis_lease_exists(id), 1);
            it_rkey k;
            assert_int_equal(it_redis_upload(id, &k), 0);
            assert_int_equal(k.offset, HELD_SENT);
            assert_int_equal(it_redis_del_lease(id), 0);
        }
        if (meanwhile == 2) { /* the other writer's file is not touched */
            char got[65];
            assert_int_equal(it_sha256_file(path, got), 0);
            assert_string_equal(got, other_sha);
        }
        /* 4: the other writer's chunk is there; 5: the retry fences
         * again, and this copy takes the path */
        if (meanwhile >= 4)
            resume_and_finish(&b, id, meanwhile == 4 ? 2000 : HELD_SENT, data, sha);
        it_sock_close(&b);
    }
    free(data);
    it_assert_server_stops_cleanly(&aux);
    it_pass();
}

/* Two resumes that fence one upload at once: the first, slower than its
 * lease, is held inside the create of its copy while the second takes the
 * lease and makes a copy of its own. Each copy is a file of its own, so the
 * first gives up only its own (lease_lost) and the second's takes the path
 * and goes on to SUCCESS; no copy is left behind. */
static void test_two_fenced_copies_at_once(void **state)
{
    (void)state;
    static const char *const args[] = {"--workers", "2", "--lease-ttl-ms", "500", NULL};
    it_server_opts o = {.args = args};
    start_aux(&o);
    char sha[65];
    unsigned char *data = it_random_payload(HELD_SIZE, sha);
    int64_t id = closed_partial_upload(data);
    char path[IT_PATH_MAX + 64];
    it_upload_path(&aux, id, path, sizeof path);
    it_sock a, b;
    int held_a = resume_held(id, true, &a);
    assert_int_equal(it_redis_wait_lease_free(id, IT_REPLY_TIMEOUT_MS), 0);
    /* on the other worker (the listener hands connections out in turn) */
    assert_int_equal(it_sock_connect(&b, aux.port), 0);
    assert_int_equal(it_sock_send_resume(&b, id, &u1), 0);
    int held_b = resume_held_at(path, true);

    assert_int_equal(it_gate_release(hold_fd, held_a), 0);
    json_t *r = answer_on(&a);
    it_assert_error(r, 409, "lease_lost");
    json_decref(r);
    it_sock_close(&a);

    gate_end(held_b, true);
    r = answer_on(&b);
    it_assert_ok(r, "resume");
    assert_int_equal(it_json_int(r, "offset"), HELD_SENT);
    json_decref(r);
    assert_int_equal(it_stray_files(&aux, id), 0);
    it_sock_chunk_ok(&b, id, HELD_SENT, data + HELD_SENT, HELD_SIZE - HELD_SENT);
    complete_ok(&b, id, HELD_SIZE, sha);
    it_sock_close(&b);
    free(data);
    it_assert_server_stops_cleanly(&aux);
    it_pass();
}

/* The storage refusing an open() (a security module or a virus scanner
 * can; here an open gate denies it): a resume whose open of the file
 * fails, and one whose fenced copy cannot be made, are answered 500
 * internal with the reason and lose nothing: no stray copy is left, and
 * the next resume goes on from the same offset to SUCCESS. A new upload
 * whose file cannot be made is answered 500 too, its row failed
 * (storage_error) and no file left. */
static void test_storage_refuses_an_open(void **state)
{
    (void)state;
    static const char *const args[] = {"--workers", "2", NULL};
    it_server_opts o = {.args = args};
    start_aux(&o);
    char sha[65];
    unsigned char *data = it_random_payload(HELD_SIZE, sha);
    for (int fenced = 0; fenced < 2; fenced++) {
        int64_t id = closed_partial_upload(data);
        it_sock b;
        gate_end(resume_held(id, fenced, &b), false);
        json_t *r = answer_on(&b);
        it_assert_error(r, 500, "internal");
        const char *msg = it_json_str(r, "message");
        assert_non_null(strstr(msg, fenced ? "during reconcile" : "during open"));
        assert_non_null(strstr(msg, "Operation not permitted"));
        json_decref(r);
        assert_int_equal(it_stray_files(&aux, id), 0);
        it_doc d;
        it_assert_doc_status(id, "uploading", &d);
        assert_int_equal(it_redis_lease_exists(id), 0);
        resume_and_finish(&b, id, HELD_SENT, data, sha);
        it_sock_close(&b);
    }
    free(data);

    /* every bucket made and watched: the next id's is among them */
    hold_fd = it_gate_open_or_skip(NULL);
    for (int i = 0; i < 256; i++) {
        char bucket[IT_PATH_MAX + 8];
        snprintf(bucket, sizeof bucket, "%s/%02x", aux.storage_dir, i);
        assert_true(mkdir(bucket, 0750) == 0 || errno == EEXIST);
        assert_int_equal(it_gate_mark(hold_fd, bucket, true), 0);
    }
    it_sock c;
    assert_int_equal(it_sock_connect(&c, aux.port), 0);
    it_sock_auth(&c, &u1);
    assert_int_equal(
        it_sock_send_str(&c, "{\"action\":\"upload\",\"filename\":\"new.bin\",\"filesize\":10}\n"),
        0);
    int held = -1;
    assert_int_equal(it_gate_wait(hold_fd, aux.pid, IT_REPLY_TIMEOUT_MS, &held), 0);
    gate_end(held, false);
    json_t *r = answer_on(&c);
    it_assert_error(r, 500, "internal");
    assert_non_null(strstr(it_json_str(r, "message"), "during create"));
    json_decref(r);
    int64_t refused = it_doc_newest(u1.id);
    it_doc d;
    it_assert_doc_status(refused, "failed", &d);
    assert_string_equal(d.failure_reason, "storage_error");
    char path[IT_PATH_MAX + 64];
    it_upload_path(&aux, refused, path, sizeof path);
    struct stat st;
    assert_int_equal(stat(path, &st), -1);
    assert_int_equal(errno, ENOENT);
    assert_int_equal(it_stray_files(&aux, refused), 0);
    it_sock_close(&c);
    it_assert_server_stops_cleanly(&aux);
    it_pass();
}

/* The storage volume's free space cannot be read (statvfs fails; here a
 * seccomp filter answers EIO to every statfs of a second server): a
 * new upload is answered 500 internal with the reason, its row failed
 * (storage_error), its empty file removed and nothing kept in Redis. The
 * rest goes on: an upload begun on another instance is resumed on this
 * one to SUCCESS (a resume does not read the volume's free space; the
 * volume's type, read at start, was not known either, so this instance
 * syncs each file on its own, as its log says). */
static void test_storage_volume_unreadable(void **state)
{
    (void)state;
    const char *fault = getenv("IT_SYSCALL_FAULT_BIN");
    assert_non_null(fault);
    start_aux(NULL);
    char sha[65];
    unsigned char *data = it_random_payload(HELD_SIZE, sha);
    int64_t begun = closed_partial_upload(data);

    const char *wrapper[] = {fault, "statfs=EIO", "--", NULL};
    it_server_opts o = {.storage_dir = aux.storage_dir, .wrapper = wrapper};
    assert_int_equal(it_server_start(&second, &o), 0);
    it_test_begin(&second);
    assert_true(it_log_count(&second, "event=sync_batching enabled=no") == 1);
    it_sock c;
    assert_int_equal(it_sock_connect(&c, second.port), 0);
    it_sock_auth(&c, &u1);
    json_t *r = it_sock_req(&c, "{\"action\":\"upload\",\"filename\":\"new.bin\",\"filesize\":10}");
    it_assert_error(r, 500, "internal");
    assert_string_equal(it_json_str(r, "message"),
                        "storage error during statvfs: Input/output error");
    json_decref(r);
    int64_t refused = it_doc_newest(u1.id);
    assert_true(refused > begun);
    it_doc d;
    it_assert_doc_status(refused, "failed", &d);
    assert_string_equal(d.failure_reason, "storage_error");
    char path[IT_PATH_MAX + 64];
    it_upload_path(&second, refused, path, sizeof path);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(errno, ENOENT);
    assert_int_equal(it_stray_files(&second, refused), 0);
    assert_int_equal(it_redis_exists(refused), 0);

    resume_and_finish(&c, begun, HELD_SENT, data, sha);
    it_sock_close(&c);
    free(data);
    it_assert_server_stops_cleanly(&second);
    it_assert_server_stops_cleanly(&aux);
    it_pass();
}

/* A completion that comes more than half a lease after the lease was
 * last renewed asks Redis whether it still holds it: here a resume
 * elsewhere took the upload over, so the stalled writer's upload_complete
 * is refused and the new writer's succeeds. */
static void test_stale_completion_checks_the_lease(void **state)
{
    (void)state;
    static const char *const args[] = {"--workers", "2", "--lease-ttl-ms", "500", NULL};
    it_sock a, b;
    char sha[65];
    int64_t id = upload_one_chunk(args, &a, "stale.bin", sha);
    it_sleep_ms(1500);

    assert_int_equal(it_sock_connect(&b, aux.port), 0);
    it_sock_auth(&b, &u1);
    char line[160];
    it_line(line, sizeof line, "{\"action\":\"resume\",\"document_id\":%lld}", (long long)id);
    json_t *r = it_sock_req(&b, line);
    it_assert_ok(r, "resume");
    assert_int_equal(it_json_int(r, "offset"), 1000);
    json_decref(r);

    it_line(line, sizeof line, "{\"action\":\"upload_complete\",\"document_id\":%lld}",
            (long long)id);
    it_expect_error_open(&a, line, 409, "lease_lost");
    complete_ok(&b, id, 1000, sha);
    it_sock_close(&a);
    it_sock_close(&b);
    it_assert_server_stops_cleanly(&aux);
    it_pass();
}

/* A completion within half a lease of the last renewal (the chunk's offset
 * save checked and renewed it) takes no round trip to Redis for the lease:
 * nobody can have taken it over yet. Shown with a lease that names someone
 * else, written behind the server's back, which only a round trip would
 * see. */
static void test_fresh_completion_trusts_its_lease(void **state)
{
    (void)state;
    static const char *const args[] = {"--workers", "2", "--lease-ttl-ms", "60000", NULL};
    it_sock a;
    char sha[65];
    int64_t id = upload_one_chunk(args, &a, "fresh.bin", sha);
    assert_int_equal(it_redis_set_lease(id, "someone-else", 20000), 0);
    complete_ok(&a, id, 1000, sha);
    /* the lease is not ours, so the completion leaves it to lapse */
    assert_int_equal(it_redis_lease_exists(id), 1);
    it_sock_close(&a);
    it_assert_server_stops_cleanly(&aux);
    it_pass();
}

/* docs/CONFIG.md: past max_connections a client is answered 503
 * too_many_connections and closed. */
static void test_too_many_connections(void **state)
{
    (void)state;
    static const char *const args[] = {"--workers", "2", "--max-connections", "2", NULL};
    it_server_opts o = {.args = args};
    start_aux(&o);
    it_sock c1, c2, c3;
    assert_int_equal(it_sock_connect(&c1, aux.port), 0);
    it_assert_open(&c1);
    assert_int_equal(it_sock_connect(&c2, aux.port), 0);
    it_assert_open(&c2);
    assert_int_equal(it_sock_connect(&c3, aux.port), 0);
    json_t *r;
    assert_int_equal(it_sock_read_json(&c3, IT_REPLY_TIMEOUT_MS, &r), IT_READ_OK);
    it_assert_error(r, 503, "too_many_connections");
    json_decref(r);
    it_assert_closed(&c3);
    it_sock_close(&c3);
    it_assert_open(&c1);
    it_assert_open(&c2);

    /* a freed place is taken again */
    it_sock_close(&c1);
    int64_t deadline = it_now_ms() + 10000;
    bool served = false;
    while (!served && it_now_ms() < deadline) {
        assert_int_equal(it_sock_connect(&c3, aux.port), 0);
        assert_int_equal(it_sock_send_str(&c3, "{\"action\":\"it_probe\"}\n"), 0);
        assert_int_equal(it_sock_read_json(&c3, IT_REPLY_TIMEOUT_MS, &r), IT_READ_OK);
        const char *reason = json_string_value(json_object_get(r, "reason"));
        served = reason && strcmp(reason, "unknown_action") == 0;
        json_decref(r);
        it_sock_close(&c3);
        if (!served)
            it_sleep_ms(50);
    }
    assert_true(served);
    it_sock_close(&c2);
    it_assert_server_stops_cleanly(&aux);
    it_pass();
}

/* ---- 507: a full disk --------------------------------------------------------- */

static char tmpfs_dir[IT_DIR_MAX];
static bool tmpfs_mounted;

/* The server goes first: nothing may hold files on the mount. */
static int full_teardown(void **state)
{
    test_teardown(state);
    if (tmpfs_mounted && umount2(tmpfs_dir, MNT_DETACH) != 0)
        fprintf(stderr, "it: umount %s: %s\n", tmpfs_dir, strerror(errno));
    tmpfs_mounted = false;
    if (tmpfs_dir[0])
        it_rmtree(tmpfs_dir);
    tmpfs_dir[0] = '\0';
    return 0;
}

/* Mounts a tmpfs of `size` (e.g. "4m") for the test's server; false (and
 * the test skipped) when that is not possible here. */
static bool mount_tmpfs(const char *size)
{
    if (geteuid() != 0) {
        fprintf(stderr, "it: SKIP: needs root to mount a tmpfs\n");
        return false;
    }
    assert_int_equal(it_tmpdir("tmpfs", tmpfs_dir, sizeof tmpfs_dir), 0);
    char opts[64];
    snprintf(opts, sizeof opts, "size=%s,mode=0750", size);
    if (mount("tmpfs", tmpfs_dir, "tmpfs", MS_NOSUID | MS_NODEV, opts) != 0) {
        fprintf(stderr, "it: SKIP: mount tmpfs at %s: %s\n", tmpfs_dir, strerror(errno));
        return false;
    }
    tmpfs_mounted = true;
    return true;
}

/* The admission tests' server: one worker, storing on a 4 MiB tmpfs with
 * no reserve (skips the test where no tmpfs can be mounted). */
static void start_on_4m_tmpfs(void)
{
    if (!mount_tmpfs("4m"))
        skip();
    static const char *const args[] = {"--workers", "1", "--min-free-bytes", "0", NULL};
    it_server_opts o = {.args = args, .storage_dir = tmpfs_dir};
    start_aux(&o);
}

/* Admission: with 4 MiB free, a 3 MiB upload is admitted and a further
 * 2 MiB one is refused at once (507, row failed, no file), because the
 * first still needs its bytes; once the first completes, room is back. */
static void test_admission_refuses_early(void **state)
{
    (void)state;
    start_on_4m_tmpfs();

    it_sock s;
    assert_int_equal(it_sock_connect(&s, aux.port), 0);
    it_sock_auth(&s, &u1);
    int64_t first = it_sock_upload(&s, "three.bin", 3 * IT_MiB);
    it_sock_chunk_ok(&s, first, 0, NULL, 65536);

    it_sock t;
    assert_int_equal(it_sock_connect(&t, aux.port), 0);
    it_sock_auth(&t, &u1);
    assert_int_equal(it_redis_watch_start("lease"), 0);
    it_expect_error_open(&t, "{\"action\":\"upload\",\"filename\":\"two.bin\",\"filesize\":2097152}",
                         507, "insufficient_storage");
    int64_t refused = it_doc_newest(u1.id);
    /* Its lease was never taken, not even for a moment: the script that
     * takes leases and writes states goes out with admission's, and does
     * nothing for an upload without its reservation. The one write is the
     * end marker its failed row leaves (SET ... PX: a set and an expire
     * event; a take before it would add two more). */
    assert_int_equal(it_redis_watch_end(refused, 300), 2);
    assert_int_equal(it_redis_lease_ended(refused), 1);
    assert_true(refused > first);
    it_doc d;
    it_assert_doc_status(refused, "failed", &d);
    assert_string_equal(d.failure_reason, "insufficient_storage");
    char path[IT_PATH_MAX + 64];
    it_upload_path(&aux, refused, path, sizeof path);
    struct stat st;
    assert_int_equal(stat(path, &st), -1);
    assert_int_equal(it_redis_exists(refused), 0);

    /* Finishing the first gives its room back. */
    for (int64_t off = 65536; off < 3 * IT_MiB; off += 65536)
        it_sock_chunk_ok(&s, first, off, NULL, 65536);
    char line[128];
    it_line(line, sizeof line, "{\"action\":\"upload_complete\",\"document_id\":%lld}",
            (long long)first);
    json_t *r = it_sock_req(&s, line);
    assert_string_equal(it_json_str(r, "status"), "SUCCESS");
    json_decref(r);
    /* 3 MiB are stored now; 1 MiB of 4 is left: 512 KiB fits, 2 MiB not. */
    it_expect_error_open(&t, "{\"action\":\"upload\",\"filename\":\"two.bin\",\"filesize\":2097152}",
                         507, "insufficient_storage");
    it_sock_upload(&t, "half.bin", 512 * IT_KiB);
    it_sock_close(&s);
    it_sock_close(&t);
    it_assert_server_stops_cleanly(&aux);
    it_pass();
}

/* Admission of a group: three 1.5 MiB uploads asked for at once on 4 MiB.
 * The server counts the uploads in flight once for the group, then admits
 * each in turn next to the ones before it: two fit, the third is refused,
 * whether the three share a group or not. */
static void test_admission_counts_the_group(void **state)
{
    (void)state;
    enum { N = 3 };
    start_on_4m_tmpfs();
    int64_t uploading = it_doc_count(u1.id, "uploading");
    it_sock socks[N];
    for (int i = 0; i < N; i++) {
        assert_int_equal(it_sock_connect(&socks[i], aux.port), 0);
        it_sock_auth(&socks[i], &u1);
    }
    for (int i = 0; i < N; i++)
        assert_int_equal(it_sock_send_str(&socks[i], "{\"action\":\"upload\",\"filename\":"
                                                     "\"part.bin\",\"filesize\":1572864}\n"),
                         0);
    int admitted = 0, refused = 0;
    for (int i = 0; i < N; i++) {
        json_t *r = NULL;
        assert_int_equal(it_sock_read_json(&socks[i], IT_REPLY_TIMEOUT_MS, &r), IT_READ_OK);
        if (strcmp(it_json_str(r, "status"), "ok") == 0) {
            admitted++;
        } else {
            it_assert_error(r, 507, "insufficient_storage");
            refused++;
        }
        json_decref(r);
        it_sock_close(&socks[i]);
    }
    assert_int_equal(admitted, 2);
    assert_int_equal(refused, 1);
    assert_int_equal(it_doc_count(u1.id, "uploading"), uploading + 2);
    it_assert_server_stops_cleanly(&aux);
    it_pass();
}

/* Admission's bookkeeping in the volume's reserved hash: a reservation
 * whose upload state is gone is dropped once it is older than the grace (a
 * crashed instance's), a younger one still counts (its state is being
 * written), and `total`, the bound under which a group is admitted without
 * counting, is what the reservations left need after each count. A bound
 * too high (here set by hand) only means a count. */
static void test_admission_bookkeeping(void **state)
{
    (void)state;
    start_on_4m_tmpfs();
    char rkey[256], v[64];
    it_redis_reserved_key(aux.storage_dir, rkey, sizeof rkey);

    it_sock s;
    assert_int_equal(it_sock_connect(&s, aux.port), 0);
    it_sock_auth(&s, &u1);
    int64_t one = it_sock_upload(&s, "one.bin", 1 * IT_MiB);
    assert_int_equal(it_redis_hget(rkey, "total", v, sizeof v), 1);
    assert_string_equal(v, "1048576");

    /* A crashed instance's 3 MiB from long ago, its state gone, and a bound
     * far too high: the count drops it, and 2 MiB fit next to the 1 MiB. */
    assert_int_equal(it_redis_hset(rkey, "999999001", "3145728:1000"), 0);
    assert_int_equal(it_redis_hset(rkey, "total", "104857600"), 0);
    it_sock t;
    assert_int_equal(it_sock_connect(&t, aux.port), 0);
    it_sock_auth(&t, &u1);
    int64_t two = it_sock_upload(&t, "two.bin", 2 * IT_MiB);
    assert_true(two > one);
    assert_int_equal(it_redis_hget(rkey, "999999001", v, sizeof v), 0);
    assert_int_equal(it_redis_hget(rkey, "total", v, sizeof v), 1);
    assert_string_equal(v, "3145728");

    /* 2 MiB reserved a moment ago by an instance still writing its state:
     * counted, so 1 MiB more does not fit in 4 (1 + 2 + 2 + 1). */
    char young[64];
    snprintf(young, sizeof young, "2097152:%lld", (long long)it_wall_ms());
    assert_int_equal(it_redis_hset(rkey, "999999002", young), 0);
    assert_int_equal(it_redis_hset(rkey, "total", "104857600"), 0);
    it_sock w;
    assert_int_equal(it_sock_connect(&w, aux.port), 0);
    it_sock_auth(&w, &u1);
    it_expect_error_open(&w, "{\"action\":\"upload\",\"filename\":\"more.bin\",\"filesize\":1048576}",
                         507, "insufficient_storage");
    assert_int_equal(it_redis_hget(rkey, "999999002", v, sizeof v), 1);
    assert_int_equal(it_redis_hget(rkey, "total", v, sizeof v), 1);
    assert_string_equal(v, "5242880");
    it_sock_close(&s);
    it_sock_close(&t);
    it_sock_close(&w);
    it_assert_server_stops_cleanly(&aux);
    it_pass();
}

/* An operator's slip in Redis: the volume's reservation hash overwritten
 * by a string. Admission's script fails on it, so the upload is refused
 * 503 (the log has Redis's own reason), its row failed, its empty file removed and
 * nothing of it left in Redis (the same round trip's lease-and-state script
 * fails on the key too); once the key is deleted, uploads are admitted
 * again. */
static void test_admission_on_a_clobbered_key(void **state)
{
    (void)state;
    static const char *const args[] = {"--workers", "1", NULL};
    it_server_opts o = {.args = args};
    start_aux(&o);
    char rkey[256];
    it_redis_reserved_key(aux.storage_dir, rkey, sizeof rkey);
    assert_int_equal(it_redis_set(rkey, "not a hash"), 0);

    it_sock s;
    assert_int_equal(it_sock_connect(&s, aux.port), 0);
    it_sock_auth(&s, &u1);
    json_t *r = it_sock_req(&s, "{\"action\":\"upload\",\"filename\":\"c.bin\",\"filesize\":10}");
    it_assert_error(r, 503, "unavailable");
    json_decref(r);
    assert_true(it_log_count(&aux, "WRONGTYPE") >= 1); /* the operator's clue */
    int64_t refused = it_doc_newest(u1.id);
    it_doc d;
    it_assert_doc_status(refused, "failed", &d);
    assert_string_equal(d.failure_reason, "unavailable");
    char path[IT_PATH_MAX + 64];
    it_upload_path(&aux, refused, path, sizeof path);
    struct stat st;
    assert_int_equal(stat(path, &st), -1);
    assert_int_equal(it_redis_exists(refused), 0);
    assert_int_equal(it_redis_lease_exists(refused), 0);

    assert_int_equal(it_redis_del(rkey), 0);
    int64_t next = it_sock_upload(&s, "c.bin", 10);
    assert_true(next > refused);
    assert_int_equal(it_redis_reserved(next), 1);
    it_sock_close(&s);
    it_assert_server_stops_cleanly(&aux);
    it_pass();
}

static void test_insufficient_storage(void **state)
{
    (void)state;
    if (geteuid() != 0) {
        fprintf(stderr, "it: SKIP 507 insufficient_storage: needs root to mount a 2 MiB "
                        "tmpfs\n");
        skip();
    }
    assert_int_equal(it_tmpdir("tmpfs", tmpfs_dir, sizeof tmpfs_dir), 0);
    if (mount("tmpfs", tmpfs_dir, "tmpfs", MS_NOSUID | MS_NODEV, "size=2m,mode=0750") != 0) {
        fprintf(stderr, "it: SKIP 507 insufficient_storage: mount tmpfs at %s: %s\n",
                tmpfs_dir, strerror(errno));
        skip();
    }
    tmpfs_mounted = true;
    /* Admission would refuse this upload up front (see
     * test_admission_refuses_early); here the disk must fill mid-upload. */
    static const char *const args[] = {"--workers", "1", "--storage-admission", "0", NULL};
    it_server_opts o = {.args = args, .storage_dir = tmpfs_dir};
    start_aux(&o);

    const int64_t size = 4 * IT_MiB;
    char sha[65];
    int fd = it_make_memfd(size, sha);
    assert_true(fd >= 0);
    cu_conn *c = it_cu_connect(&aux);
    cu_auth auth = {.user_id = u1.id, .credential = u1.credential};
    cu_error err;
    cu_upload_info info;
    IT_CU_OK(cu_start_upload(c, &auth, "too-big-for-disk.bin", size, sha, &info, &err), err);
    IT_CU_ERR(cu_send_file(c, fd, &info, 1, 0, NULL, NULL, &err), err, 507,
              "insufficient_storage");
    it_assert_doc_status(info.document_id, "uploading", NULL);
    assert_true(info.offset > 0);
    assert_true(info.offset < size);

    /* still open, and the accepted bytes are kept */
    json_t *reply;
    IT_CU_OK(cu_status(c, &auth, info.document_id, &reply, &err), err);
    json_t *doc = json_object_get(reply, "document");
    assert_string_equal(it_json_str(doc, "status"), "uploading");
    assert_int_equal(it_json_int(doc, "offset"), info.offset);
    json_decref(reply);
    it_rkey k;
    assert_int_equal(it_redis_upload(info.document_id, &k), 0);
    assert_true(k.exists);
    assert_int_equal(k.offset, info.offset);
    char part[IT_PATH_MAX + 64];
    it_upload_path(&aux, info.document_id, part, sizeof part);
    struct stat st;
    assert_int_equal(stat(part, &st), 0);
    assert_true(st.st_size >= info.offset);

    /* with room again, the upload continues from the kept bytes */
    assert_int_equal(mount(NULL, tmpfs_dir, NULL, MS_REMOUNT | MS_NOSUID | MS_NODEV,
                           "size=8m"),
                     0);
    cu_upload_info again;
    IT_CU_OK(it_cu_resume(c, &auth, info.document_id, &again, &err), err);
    assert_int_equal(again.offset, info.offset);
    IT_CU_OK(cu_send_file(c, fd, &again, 0, 0, NULL, NULL, &err), err);
    close(fd);
    cu_complete_info done;
    IT_CU_OK(cu_complete(c, info.document_id, &done, &err), err);
    assert_string_equal(done.sha256, sha);
    it_assert_stored(&aux, info.document_id, size, sha);
    cu_close(c);
    it_assert_server_stops_cleanly(&aux);
    it_pass();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_unavailable_redis, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_unavailable_mysql, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_idle_timeout, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_shutting_down, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_goodbye_waits_for_a_save, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_while_completion_commits, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_mysql_gone_mid_result, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_requests_wait_for_a_reader, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_lease_lost, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_slow_resume_outlives_its_lease, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_two_fenced_copies_at_once, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_storage_refuses_an_open, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_abort_loses_to_another_ending, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_abort_whose_answer_is_lost, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_abort_outwaited_by_a_row_lock, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_storage_volume_unreadable, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_stale_completion_checks_the_lease, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_fresh_completion_trusts_its_lease, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_too_many_connections, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_insufficient_storage, test_setup, full_teardown),
        cmocka_unit_test_setup_teardown(test_admission_refuses_early, test_setup, full_teardown),
        cmocka_unit_test_setup_teardown(test_admission_bookkeeping, test_setup, full_teardown),
        cmocka_unit_test_setup_teardown(test_admission_on_a_clobbered_key, test_setup,
                                        full_teardown),
        cmocka_unit_test_setup_teardown(test_admission_counts_the_group, test_setup,
                                        full_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
