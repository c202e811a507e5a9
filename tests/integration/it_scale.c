/* The deployment's cluster (haproxy_cluster.h: HAProxy running
 * deploy/haproxy.cfg in front of three chunkd instances with
 * deploy/cluster.env, one storage folder) under load and failure:
 *
 * - 50 clients upload through the balancer while one instance is SIGKILLed
 *   and later restarted; every upload completes with its own bytes, HAProxy
 *   notices the death and the return through its health checks, and no
 *   document is left uploading.
 * - An instance frozen (SIGSTOP) past its lease: the upload is resumed and
 *   finished elsewhere; the bytes the frozen instance still had queued must
 *   not reach the file once it runs again, and its client hears lease_lost.
 * - A frozen instance's queued upload_complete, after another instance took
 *   the upload over and let it go unfinished: the stale request neither
 *   completes nor fails the document.
 * - Two connections on two instances both ask to complete one upload: one
 *   SUCCESS, one clean error, one completed row.
 *
 * CHUNKD_IT_FILTER='*race*' runs the tests whose name matches. */
#include "haproxy_client.h"
#include "haproxy_cluster.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define NUSERS 5
#define NJOBS 50
/* Per client, so the run lasts long enough to kill an instance mid-way. */
#define JOB_RATE_BPS (3 * IT_MiB)
#define CLIENT_TIMEOUT_MS HC_CLIENT_TIMEOUT_MS
/* the chunk size chunkd suggests, used by the raw-socket tests */
#define CHUNK (64 * 1024)

static hc_cluster cl;
static atomic_bool jobs_abort;
static it_user users[NUSERS];
/* one instance's flags: a lease that lapses quickly for the lease tests */
static const char *const cluster_args[] = {"--workers", "2", NULL};
static const char *const short_lease_args[] = {"--workers", "2", "--lease-ttl-ms", "1000", NULL};

static int group_setup(void **state)
{
    (void)state;
    if (it_init("it_scale") != 0)
        return -1;
    for (int i = 0; i < NUSERS; i++)
        if (it_user_create(&users[i]) != 0)
            return -1;
    return 0;
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
    memset(&cl, 0, sizeof cl);
    it_test_begin(NULL);
    return 0;
}

/* Whatever happened, nothing of the cluster outlives the test; logs of a
 * failed test are printed first. */
static int test_teardown(void **state)
{
    (void)state;
    for (int i = 0; i < HC_NODES; i++)
        it_test_end(&cl.node[i]);
    it_server lb;
    memset(&lb, 0, sizeof lb);
    snprintf(lb.node_id, sizeof lb.node_id, "haproxy");
    snprintf(lb.log_path, sizeof lb.log_path, "%s", cl.haproxy_log);
    it_test_end(&lb);
    hc_stop(&cl);
    return 0;
}

static int64_t acked_total(hc_job *jobs, int n)
{
    int64_t sum = 0;
    for (int i = 0; i < n; i++)
        sum += atomic_load(&jobs[i].acked);
    return sum;
}

/* Waits until the clients together have `bytes` acknowledged. */
static bool wait_acked(hc_job *jobs, int n, int64_t bytes, int timeout_ms)
{
    int64_t deadline = it_now_ms() + timeout_ms;
    while (acked_total(jobs, n) < bytes) {
        if (it_now_ms() >= deadline)
            return false;
        it_sleep_ms(20);
    }
    return true;
}

/* 64 KiB to 8 MiB, some off chunk boundaries: about 129 MB for 50 files. */
static const int64_t job_sizes[] = {
    64 * IT_KiB,     200 * IT_KiB + 13, 1 * IT_MiB,      3 * IT_MiB + 1,    8 * IT_MiB,
    512 * IT_KiB,    2 * IT_MiB - 7,    5 * IT_MiB,      100 * IT_KiB + 1,  6 * IT_MiB + 5,
};

static void make_jobs(hc_job *jobs, int n, const char *tag)
{
    for (int i = 0; i < n; i++) {
        hc_job *j = &jobs[i];
        j->user = &users[i % NUSERS];
        j->port = cl.lb_port_str;
        j->rate_bps = JOB_RATE_BPS;
        j->abort = &jobs_abort;
        j->size = job_sizes[(size_t)i % (sizeof job_sizes / sizeof job_sizes[0])];
        snprintf(j->filename, sizeof j->filename, "%s-%d-%02d.bin", tag, (int)getpid(), i);
        atomic_init(&j->acked, 0);
        j->fd = it_make_memfd(j->size, j->sha);
        assert_true(j->fd >= 0);
    }
}

static void check_jobs(hc_job *jobs, int n)
{
    int failed = 0;
    for (int i = 0; i < n; i++)
        if (!jobs[i].ok) {
            fprintf(stderr, "it: upload %s (%lld bytes, document %lld) failed: %s\n",
                    jobs[i].filename, (long long)jobs[i].size, (long long)jobs[i].document_id,
                    jobs[i].why);
            failed++;
        }
    assert_int_equal(failed, 0);
    for (int i = 0; i < n; i++) {
        /* the server's answer, the row, and the bytes on disk */
        assert_string_equal(jobs[i].server_sha, jobs[i].sha);
        for (int k = 0; k < i; k++)
            assert_true(jobs[k].document_id != jobs[i].document_id);
        it_assert_stored(&cl.node[0], jobs[i].document_id, jobs[i].size, jobs[i].sha);
        assert_int_equal(hc_lease_exists(jobs[i].document_id), 0);
    }
}

static int64_t count_rows(const char *status)
{
    int64_t total = 0;
    for (int i = 0; i < NUSERS; i++) {
        int64_t c = it_doc_count(users[i].id, status);
        assert_true(c >= 0);
        total += c;
    }
    return total;
}

/* One small upload through the balancer, start to finish. */
static void upload_once(const it_user *u, const char *name)
{
    char sha[65];
    int fd = it_make_memfd(64 * IT_KiB, sha);
    assert_true(fd >= 0);
    cu_auth auth = {.user_id = u->id, .credential = u->credential};
    cu_error err;
    memset(&err, 0, sizeof err);
    cu_conn *c = cu_connect("127.0.0.1", cl.lb_port_str, CLIENT_TIMEOUT_MS, &err);
    if (!c)
        it_print_cu_error("connect", &err);
    assert_non_null(c);
    cu_upload_info info;
    IT_CU_OK(cu_start_upload(c, &auth, name, 64 * IT_KiB, sha, &info, &err), err);
    IT_CU_OK(cu_send_file(c, fd, &info, 0, 0, NULL, NULL, &err), err);
    cu_complete_info done;
    IT_CU_OK(cu_complete(c, info.document_id, &done, &err), err);
    assert_string_equal(done.sha256, sha);
    cu_close(c);
    close(fd);
}

static void test_kill_and_restart_under_load(void **state)
{
    (void)state;
    assert_int_equal(hc_start(&cl, cluster_args), 0);
    int64_t completed0 = count_rows("completed"), failed0 = count_rows("failed");
    hc_job *jobs = calloc(NJOBS, sizeof *jobs);
    assert_non_null(jobs);
    make_jobs(jobs, NJOBS, "scale");
    int64_t total = 0;
    for (int i = 0; i < NJOBS; i++)
        total += jobs[i].size;

    pthread_barrier_t start;
    assert_int_equal(pthread_barrier_init(&start, NULL, NJOBS + 1), 0);
    pthread_t th[NJOBS];
    pthread_attr_t attr;
    assert_int_equal(pthread_attr_init(&attr), 0);
    assert_int_equal(pthread_attr_setstacksize(&attr, 256 * 1024), 0);
    atomic_store(&jobs_abort, false);
    for (int i = 0; i < NJOBS; i++) {
        jobs[i].start = &start;
        assert_int_equal(pthread_create(&th[i], &attr, hc_job_thread, &jobs[i]), 0);
    }
    pthread_barrier_wait(&start);
    int64_t t0 = it_now_ms();

    /* From here until the threads are joined nothing may fail the test
     * (a failure would leave them running): results are kept, asserted
     * after the join. */
    const int victim = 1;
    char broke[300] = "";
    hc_server_stat at_kill;
    memset(&at_kill, 0, sizeof at_kill);
    int64_t acked_at_kill = 0, acked_at_restart = 0;
    int hc_dead = -2, hc_back = -2;
    if (!wait_acked(jobs, NJOBS, total * 35 / 100, 240000))
        snprintf(broke, sizeof broke, "35%% of the bytes not acknowledged in 240 s");
    else if (hc_server_stat_get(&cl, victim, &at_kill) != 0)
        snprintf(broke, sizeof broke, "no HAProxy stats before the kill");
    else if (hc_node_kill(&cl, victim) != 0)
        snprintf(broke, sizeof broke, "killing %s failed", cl.node_id[victim]);
    if (!broke[0]) {
        acked_at_kill = acked_total(jobs, NJOBS);
        fprintf(stderr, "it: killed %s after %lld ms with %lld of its connections open, "
                "%lld of %lld bytes acknowledged\n", cl.node_id[victim],
                (long long)(it_now_ms() - t0), (long long)at_kill.scur,
                (long long)acked_at_kill, (long long)total);
        if (hc_wait_state(&cl, victim, false, 15000) != 0)
            snprintf(broke, sizeof broke, "HAProxy did not mark the killed instance DOWN");
        hc_dead = hc_healthcheck(&cl, victim);
    }
    /* The others carry the uploads on while it is gone. */
    if (!broke[0] && !wait_acked(jobs, NJOBS, acked_at_kill + total / 10, 240000))
        snprintf(broke, sizeof broke, "no progress while one instance was down");
    if (!broke[0]) {
        acked_at_restart = acked_total(jobs, NJOBS);
        if (hc_node_start(&cl, victim) != 0)
            snprintf(broke, sizeof broke, "restarting %s failed", cl.node_id[victim]);
        else if (hc_wait_state(&cl, victim, true, 15000) != 0)
            snprintf(broke, sizeof broke, "HAProxy did not mark the restarted instance UP");
        else
            hc_back = hc_healthcheck(&cl, victim);
    }
    if (broke[0])
        atomic_store(&jobs_abort, true);
    for (int i = 0; i < NJOBS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    pthread_attr_destroy(&attr);
    pthread_barrier_destroy(&start);
    int retries = 0;
    for (int i = 0; i < NJOBS; i++)
        retries += jobs[i].attempts - 1;
    fprintf(stderr, "it: %d uploads, %lld bytes, through HAProxy in %lld ms; %d reconnects; "
            "restart at %lld bytes\n", NJOBS, (long long)total, (long long)(it_now_ms() - t0),
            retries, (long long)acked_at_restart);

    if (broke[0])
        fail_msg("%s", broke);
    /* the kill hit uploads in progress, not an idle instance */
    assert_true(at_kill.scur > 0);
    assert_true(acked_at_kill < total);
    /* the image's HEALTHCHECK agrees with HAProxy */
    assert_int_equal(hc_dead, 1);
    assert_int_equal(hc_back, 0);

    check_jobs(jobs, NJOBS);
    int orphans = 0;
    for (int i = 0; i < NJOBS; i++)
        orphans += jobs[i].orphans_aborted;
    assert_int_equal(count_rows("uploading"), 0);
    assert_int_equal(count_rows("completed") - completed0, NJOBS);
    /* the only failed rows are lost upload answers the clients aborted */
    assert_int_equal(count_rows("failed") - failed0, orphans);

    /* Back in rotation: new clients reach the restarted instance. */
    hc_server_stat before, after;
    assert_int_equal(hc_server_stat_get(&cl, victim, &before), 0);
    for (int i = 0; i < 2 * HC_NODES; i++) {
        char name[64];
        snprintf(name, sizeof name, "after-restart-%d.bin", i);
        upload_once(&users[0], name);
    }
    assert_int_equal(hc_server_stat_get(&cl, victim, &after), 0);
    fprintf(stderr, "it: the restarted instance took %lld of %d new connections\n",
            (long long)(after.stot - before.stot), 2 * HC_NODES);
    assert_true(after.stot > before.stot);

    for (int i = 0; i < NJOBS; i++)
        close(jobs[i].fd);
    free(jobs);
    it_pass();
}

/* ---- leases across instances --------------------------------------------- */

static void chunk_line(char *buf, size_t cap, int64_t id, int64_t off, size_t n)
{
    it_line(buf, cap, "{\"action\":\"chunk\",\"document_id\":%lld,\"offset\":%lld,\"length\":%zu}",
            (long long)id, (long long)off, n);
}

/* Waits until the upload's lease key is gone (it lapsed). */
static void wait_lease_gone(int64_t id, int timeout_ms)
{
    int64_t deadline = it_now_ms() + timeout_ms;
    int r;
    while ((r = hc_lease_exists(id)) == 1 && it_now_ms() < deadline)
        it_sleep_ms(50);
    assert_int_equal(r, 0);
}

/* Resumes through the balancer with the library and sends the rest. */
static void finish_through_lb(const it_user *u, int64_t id, const unsigned char *data,
                              int64_t size, int64_t expect_offset, const char *sha)
{
    int fd = it_make_memfd(0, (char[65]){0});
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, (size_t)size), size);
    cu_auth auth = {.user_id = u->id, .credential = u->credential};
    cu_error err;
    memset(&err, 0, sizeof err);
    cu_conn *c = cu_connect("127.0.0.1", cl.lb_port_str, CLIENT_TIMEOUT_MS, &err);
    if (!c)
        it_print_cu_error("connect", &err);
    assert_non_null(c);
    cu_upload_info info;
    IT_CU_OK(it_cu_resume(c, &auth, id, &info, &err), err);
    /* the bytes the frozen instance never acknowledged do not count */
    assert_int_equal(info.offset, expect_offset);
    if (info.offset < size)
        IT_CU_OK(cu_send_file(c, fd, &info, 0, 0, NULL, NULL, &err), err);
    cu_complete_info done;
    IT_CU_OK(cu_complete(c, id, &done, &err), err);
    assert_string_equal(done.sha256, sha);
    cu_close(c);
    close(fd);
}

static void test_stale_writer_after_lease_lapse(void **state)
{
    (void)state;
    assert_int_equal(hc_start(&cl, short_lease_args), 0);
    const it_user *u = &users[1];
    const int64_t size = 12 * CHUNK, sent = 4 * CHUNK;
    unsigned char *f1 = malloc((size_t)size), *f2 = malloc((size_t)size);
    assert_non_null(f1);
    assert_non_null(f2);
    it_random_bytes(f1, (size_t)size);
    it_random_bytes(f2, (size_t)size);
    char sha1[65], sha2[65];
    it_sha256_hex(f1, (size_t)size, sha1);
    it_sha256_hex(f2, (size_t)size, sha2);
    char hdr[200];

    /* One upload through the balancer, one straight to the same instance. */
    it_sock a, d;
    assert_int_equal(it_sock_connect(&a, cl.lb_port), 0);
    it_sock_auth(&a, u);
    int64_t id1 = it_sock_upload(&a, "stale-lb.bin", size);
    for (int64_t off = 0; off < sent; off += CHUNK)
        it_sock_chunk_ok(&a, id1, off, f1 + off, CHUNK);
    it_rkey k;
    assert_int_equal(it_redis_upload(id1, &k), 0);
    int x = hc_node_index(&cl, k.node);
    if (x < 0)
        fprintf(stderr, "it: upload %lld is on node '%s', not one of the cluster's\n",
                (long long)id1, k.node);
    assert_true(x >= 0);
    assert_int_equal(it_sock_connect(&d, cl.port[x]), 0);
    it_sock_auth(&d, u);
    int64_t id2 = it_sock_upload(&d, "stale-direct.bin", size);
    for (int64_t off = 0; off < sent; off += CHUNK)
        it_sock_chunk_ok(&d, id2, off, f2 + off, CHUNK);

    /* Frozen with a chunk of wrong bytes queued on each connection: were
     * they written after the instance wakes up, the files would change. */
    assert_int_equal(hc_node_freeze(&cl, x), 0);
    chunk_line(hdr, sizeof hdr, id1, sent, CHUNK);
    assert_int_equal(it_sock_send_chunk(&a, hdr, NULL, CHUNK), 0);
    chunk_line(hdr, sizeof hdr, id2, sent, CHUNK);
    assert_int_equal(it_sock_send_chunk(&d, hdr, NULL, CHUNK), 0);

    /* HAProxy's check times out on the frozen instance; the leases lapse. */
    assert_int_equal(hc_wait_state(&cl, x, false, 20000), 0);
    wait_lease_gone(id1, 5000);
    wait_lease_gone(id2, 5000);

    /* Other instances take both uploads over and finish them. */
    finish_through_lb(u, id1, f1, size, sent, sha1);
    finish_through_lb(u, id2, f2, size, sent, sha2);
    it_assert_stored(&cl.node[0], id1, size, sha1);
    it_assert_stored(&cl.node[0], id2, size, sha2);

    /* The stale instance wakes up with its queued chunks: the client that
     * is still connected to it hears lease_lost... */
    assert_int_equal(hc_node_thaw(&cl, x), 0);
    json_t *r = NULL;
    enum it_read rr = it_sock_read_json(&d, IT_REPLY_TIMEOUT_MS, &r);
    assert_int_equal(rr, IT_READ_OK);
    it_assert_error(r, 409, "lease_lost");
    json_decref(r);
    it_assert_open(&d);
    /* ...and the instance is back in rotation, every queued byte handled */
    assert_int_equal(hc_wait_state(&cl, x, true, 20000), 0);

    /* Nothing the stale instance did reached the finished files. */
    it_assert_stored(&cl.node[0], id1, size, sha1);
    it_assert_stored(&cl.node[0], id2, size, sha2);
    it_assert_doc_status(id1, "completed", NULL);
    it_assert_doc_status(id2, "completed", NULL);

    it_sock_close(&a);
    it_sock_close(&d);
    free(f1);
    free(f2);
    it_pass();
}

/* Two connections on two instances believe they hold one fully sent
 * upload: the first froze past its lease, the second resumed it. Both ask
 * to complete it, in one of three orders. */
enum race_order {
    STALE_AFTER,   /* the stale request, queued while frozen, runs after the
                      holder's completion */
    SIMULTANEOUS,  /* both sent the moment the stale instance wakes */
    STALE_FIRST,   /* the stale request runs while the holder still holds */
};
static const char *const race_order_name[] = {"stale after", "simultaneous", "stale first"};

static void completion_race_round(int round, enum race_order order)
{
    const it_user *u = &users[2];
    const int a = round % HC_NODES, b = (round + 1) % HC_NODES;
    const int64_t size = 16 * CHUNK + 1 + round;
    unsigned char *data = malloc((size_t)size);
    assert_non_null(data);
    it_random_bytes(data, (size_t)size);
    char sha[65], line[160];
    it_sha256_hex(data, (size_t)size, sha);
    int64_t completed0 = it_doc_count(u->id, "completed");

    it_sock p, q;
    assert_int_equal(it_sock_connect(&p, cl.port[a]), 0);
    it_sock_auth(&p, u);
    char name[64];
    snprintf(name, sizeof name, "race-%d.bin", round);
    int64_t id = it_sock_upload(&p, name, size);
    for (int64_t off = 0; off < size; off += CHUNK) {
        size_t n = (size_t)(size - off < CHUNK ? size - off : CHUNK);
        it_sock_chunk_ok(&p, id, off, data + off, n);
    }
    it_line(line, sizeof line, "{\"action\":\"upload_complete\",\"document_id\":%lld}\n",
            (long long)id);

    assert_int_equal(hc_node_freeze(&cl, a), 0);
    if (order != SIMULTANEOUS)
        assert_int_equal(it_sock_send_str(&p, line), 0);
    wait_lease_gone(id, 5000);
    assert_int_equal(it_sock_connect(&q, cl.port[b]), 0);
    it_sock_auth(&q, u);
    char resume[160];
    it_line(resume, sizeof resume, "{\"action\":\"resume\",\"document_id\":%lld}", (long long)id);
    json_t *r = it_sock_req(&q, resume);
    it_assert_ok(r, "resume");
    assert_int_equal(it_json_int(r, "offset"), size);
    json_decref(r);

    json_t *rp = NULL, *rq = NULL;
    switch (order) {
    case STALE_AFTER:
        assert_int_equal(it_sock_send_str(&q, line), 0);
        assert_int_equal(it_sock_read_json(&q, IT_REPLY_TIMEOUT_MS, &rq), IT_READ_OK);
        assert_int_equal(hc_node_thaw(&cl, a), 0);
        break;
    case SIMULTANEOUS:
        assert_int_equal(hc_node_thaw(&cl, a), 0);
        assert_int_equal(it_sock_send_str(&q, line), 0);
        assert_int_equal(it_sock_send_str(&p, line), 0);
        break;
    case STALE_FIRST:
        assert_int_equal(hc_node_thaw(&cl, a), 0);
        assert_int_equal(it_sock_read_json(&p, IT_REPLY_TIMEOUT_MS, &rp), IT_READ_OK);
        assert_int_equal(it_sock_send_str(&q, line), 0);
        break;
    }
    if (!rp)
        assert_int_equal(it_sock_read_json(&p, IT_REPLY_TIMEOUT_MS, &rp), IT_READ_OK);
    if (!rq)
        assert_int_equal(it_sock_read_json(&q, IT_REPLY_TIMEOUT_MS, &rq), IT_READ_OK);
    const char *sp = json_string_value(json_object_get(rp, "status"));
    const char *sq = json_string_value(json_object_get(rq, "status"));
    const char *why = json_string_value(json_object_get(rp, "reason"));
    fprintf(stderr, "it: race round %d (%s): stale %s answered %s %s, holder %s answered %s\n",
            round, race_order_name[order], cl.node_id[a], sp ? sp : "?", why ? why : "",
            cl.node_id[b], sq ? sq : "?");
    /* the document first: one completed row with the right bytes */
    it_assert_stored(&cl.node[0], id, size, sha);
    assert_int_equal(it_doc_count(u->id, "completed") - completed0, 1);
    int successes = (sp && strcmp(sp, "SUCCESS") == 0) + (sq && strcmp(sq, "SUCCESS") == 0);
    assert_int_equal(successes, 1);
    /* only the lease holder may complete */
    assert_string_equal(sq, "SUCCESS");
    assert_string_equal(json_string_value(json_object_get(rq, "sha256")), sha);
    /* The other hears a clean 409 and stays connected: lease_lost while
     * the holder holds the upload, not_resumable once it is completed.
     * Never a 422, which tells a client its upload failed. */
    assert_int_equal(it_json_int(rp, "code"), 409);
    assert_true(why && (strcmp(why, "lease_lost") == 0 || strcmp(why, "not_resumable") == 0));
    if (order == STALE_FIRST)
        assert_string_equal(why, "lease_lost");
    json_decref(rp);
    json_decref(rq);
    it_assert_open(&p);
    it_assert_open(&q);
    it_sock_close(&p);
    it_sock_close(&q);
    free(data);
}

static void test_completion_race(void **state)
{
    (void)state;
    assert_int_equal(hc_start(&cl, short_lease_args), 0);
    for (int round = 0; round < 6; round++)
        completion_race_round(round, (enum race_order)(round % 3));
    assert_int_equal(it_doc_count(users[2].id, "uploading"), 0);
    it_pass();
}

/* A frozen holder's upload_complete waits in its socket while another
 * connection takes the upload over and lets go of it unfinished. When the
 * stale instance wakes, its request must neither complete nor fail the
 * document: the upload stays resumable and finishes later. */
static void test_stale_completer_after_takeover(void **state)
{
    (void)state;
    assert_int_equal(hc_start(&cl, short_lease_args), 0);
    const it_user *u = &users[3];
    const int a = 0, b = 1;
    const int64_t size = 8 * CHUNK + 5;
    unsigned char *data = malloc((size_t)size);
    assert_non_null(data);
    it_random_bytes(data, (size_t)size);
    char sha[65], line[160];
    it_sha256_hex(data, (size_t)size, sha);

    it_sock p, q;
    assert_int_equal(it_sock_connect(&p, cl.port[a]), 0);
    it_sock_auth(&p, u);
    int64_t id = it_sock_upload(&p, "stale-complete.bin", size);
    for (int64_t off = 0; off < size; off += CHUNK) {
        size_t n = (size_t)(size - off < CHUNK ? size - off : CHUNK);
        it_sock_chunk_ok(&p, id, off, data + off, n);
    }
    assert_int_equal(hc_node_freeze(&cl, a), 0);
    it_line(line, sizeof line, "{\"action\":\"upload_complete\",\"document_id\":%lld}\n",
            (long long)id);
    assert_int_equal(it_sock_send_str(&p, line), 0);
    wait_lease_gone(id, 5000);

    /* taken over on another instance, then let go cleanly */
    assert_int_equal(it_sock_connect(&q, cl.port[b]), 0);
    it_sock_auth(&q, u);
    char resume[160];
    it_line(resume, sizeof resume, "{\"action\":\"resume\",\"document_id\":%lld}", (long long)id);
    json_t *r = it_sock_req(&q, resume);
    it_assert_ok(r, "resume");
    assert_int_equal(it_json_int(r, "offset"), size);
    json_decref(r);
    it_sock_close(&q);
    wait_lease_gone(id, 5000);

    assert_int_equal(hc_node_thaw(&cl, a), 0);
    json_t *rp = NULL;
    assert_int_equal(it_sock_read_json(&p, IT_REPLY_TIMEOUT_MS, &rp), IT_READ_OK);
    const char *st = json_string_value(json_object_get(rp, "status"));
    const char *why = json_string_value(json_object_get(rp, "reason"));
    fprintf(stderr, "it: the stale completer on %s answered %s %s\n", cl.node_id[a],
            st ? st : "?", why ? why : "");
    /* the document first: still uploading, its bytes still there */
    it_doc d;
    it_assert_doc_status(id, "uploading", &d);
    finish_through_lb(u, id, data, size, size, sha);
    it_assert_stored(&cl.node[0], id, size, sha);
    /* and the stale request was told it no longer holds the upload */
    it_assert_error(rp, 409, "lease_lost");
    json_decref(rp);
    it_assert_open(&p);
    it_sock_close(&p);
    free(data);
    it_pass();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_kill_and_restart_under_load, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_stale_writer_after_lease_lapse, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_stale_completer_after_takeover, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_completion_race, test_setup, test_teardown),
    };
    const char *filter = getenv("CHUNKD_IT_FILTER");
    if (filter && *filter)
        cmocka_set_test_filter(filter);
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
