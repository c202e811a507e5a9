/* Many clients at once against one chunkd with two workers: every upload
 * completes with its own bytes, and nothing is left behind in Redis. */
#include "harness.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define NUSERS 4
#define NUPLOADS 200
#define NDROPPERS 40
/* The server may run under ThreadSanitizer, many times slower. */
#define CLIENT_TIMEOUT_MS 120000

static it_server srv;
static it_user users[NUSERS];

typedef struct job {
    const it_user *user;
    int fd;
    int64_t size;
    char sha[65];
    bool drop_midway;          /* close after half, reconnect and resume */
    pthread_barrier_t *start;
    /* results */
    bool ok;
    int64_t document_id;
    char server_sha[65];
    char why[600];
} job;

static int group_setup(void **state)
{
    (void)state;
    it_fixture_server(&srv);
    if (it_init("it_concurrent") != 0)
        return -1;
    for (int i = 0; i < NUSERS; i++)
        if (it_user_create(&users[i]) != 0)
            return -1;
    static const char *const args[] = {"--workers", "2", NULL};
    it_server_opts o = {.args = args};
    return it_server_start(&srv, &o);
}

static void job_fail(job *j, const char *what, const cu_error *e)
{
    snprintf(j->why, sizeof j->why, "%s: %d %s %s", what, e->code, e->reason, e->message);
}

static bool stop_at_half(void *arg, int64_t received, int64_t total)
{
    (void)arg;
    return received < total / 2;
}

/* Runs in its own thread with its own connection; no cmocka asserts here. */
static void *upload_thread(void *arg)
{
    job *j = arg;
    cu_auth auth = {.user_id = j->user->id, .credential = j->user->credential};
    cu_error err;
    memset(&err, 0, sizeof err);
    pthread_barrier_wait(j->start);
    cu_conn *c = cu_connect("127.0.0.1", srv.port_str, CLIENT_TIMEOUT_MS, &err);
    if (!c) {
        job_fail(j, "connect", &err);
        return NULL;
    }
    cu_upload_info info;
    if (cu_start_upload(c, &auth, "concurrent.bin", j->size, j->sha, &info, &err) != 0) {
        job_fail(j, "upload", &err);
        goto out;
    }
    j->document_id = info.document_id;
    if (j->drop_midway) {
        int r = cu_send_file(c, j->fd, &info, 1, 0, stop_at_half, NULL, &err);
        if (r == 0 || strcmp(err.reason, "cancelled") != 0) {
            job_fail(j, "first half", &err);
            goto out;
        }
        cu_close(c);
        c = cu_connect("127.0.0.1", srv.port_str, CLIENT_TIMEOUT_MS, &err);
        if (!c) {
            job_fail(j, "reconnect", &err);
            return NULL;
        }
        int64_t acked = info.offset;
        if (it_cu_resume(c, &auth, j->document_id, &info, &err) != 0) {
            job_fail(j, "resume", &err);
            goto out;
        }
        if (info.offset != acked) {
            snprintf(j->why, sizeof j->why, "resumed at %lld, acknowledged %lld",
                     (long long)info.offset, (long long)acked);
            goto out;
        }
    }
    if (j->size > 0 && cu_send_file(c, j->fd, &info, 0, 0, NULL, NULL, &err) != 0) {
        job_fail(j, "send", &err);
        goto out;
    }
    cu_complete_info done;
    if (cu_complete(c, j->document_id, &done, &err) != 0) {
        job_fail(j, "complete", &err);
        goto out;
    }
    memcpy(j->server_sha, done.sha256, sizeof j->server_sha);
    j->ok = true;
out:
    cu_close(c);
    return NULL;
}

static void run_jobs(job *jobs, int n)
{
    pthread_barrier_t start;
    assert_int_equal(pthread_barrier_init(&start, NULL, (unsigned)n), 0);
    pthread_t *th = calloc((size_t)n, sizeof *th);
    assert_non_null(th);
    pthread_attr_t attr;
    assert_int_equal(pthread_attr_init(&attr), 0);
    assert_int_equal(pthread_attr_setstacksize(&attr, 256 * 1024), 0);
    for (int i = 0; i < n; i++) {
        jobs[i].start = &start;
        assert_int_equal(pthread_create(&th[i], &attr, upload_thread, &jobs[i]), 0);
    }
    for (int i = 0; i < n; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    pthread_attr_destroy(&attr);
    pthread_barrier_destroy(&start);
    free(th);
}

static void check_jobs(job *jobs, int n)
{
    int failed = 0;
    for (int i = 0; i < n; i++)
        if (!jobs[i].ok) {
            fprintf(stderr, "it: upload %d (%lld bytes, document %lld) failed: %s\n", i,
                    (long long)jobs[i].size, (long long)jobs[i].document_id, jobs[i].why);
            failed++;
        }
    assert_int_equal(failed, 0);
    for (int i = 0; i < n; i++) {
        assert_string_equal(jobs[i].server_sha, jobs[i].sha);
        /* distinct documents */
        for (int k = 0; k < i; k++)
            assert_true(jobs[k].document_id != jobs[i].document_id);
        it_assert_stored(&srv, jobs[i].document_id, jobs[i].size, jobs[i].sha);
    }
}

static int64_t completed_rows(void)
{
    int64_t total = 0;
    for (int i = 0; i < NUSERS; i++) {
        int64_t c = it_doc_count(users[i].id, "completed");
        assert_true(c >= 0);
        total += c;
    }
    return total;
}

static void test_many_uploads_at_once(void **state)
{
    (void)state;
    static const int64_t sizes[] = {1024,       10 * 1024, 64 * 1024 - 1, 64 * 1024,
                                    65537,      300 * 1024, 1024 * 1024,  2 * 1024 * 1024,
                                    777 * 1024, 3000};
    const size_t nsizes = sizeof sizes / sizeof sizes[0];
    int64_t before = completed_rows();
    job *jobs = calloc(NUPLOADS, sizeof *jobs);
    assert_non_null(jobs);
    for (int i = 0; i < NUPLOADS; i++) {
        jobs[i].user = &users[i % NUSERS];
        jobs[i].size = sizes[(size_t)i % nsizes];
        jobs[i].fd = it_make_memfd(jobs[i].size, jobs[i].sha);
        assert_true(jobs[i].fd >= 0);
    }
    int64_t t0 = it_now_ms();
    run_jobs(jobs, NUPLOADS);
    fprintf(stderr, "it: %d concurrent uploads took %lld ms\n", NUPLOADS,
            (long long)(it_now_ms() - t0));
    check_jobs(jobs, NUPLOADS);
    assert_int_equal(completed_rows() - before, NUPLOADS);
    for (int i = 0; i < NUPLOADS; i++) {
        assert_int_equal(it_redis_wait_gone(jobs[i].document_id, 5000), 0);
        close(jobs[i].fd);
    }
    free(jobs);
    it_pass();
}

/* Half the clients drop their connection halfway and resume on a new one
 * while the others stream. */
static void test_drops_and_resumes_at_once(void **state)
{
    (void)state;
    int64_t before = completed_rows();
    job *jobs = calloc(NDROPPERS, sizeof *jobs);
    assert_non_null(jobs);
    for (int i = 0; i < NDROPPERS; i++) {
        jobs[i].user = &users[i % NUSERS];
        jobs[i].size = (i % 2) ? 16 * 64 * 1024 : 5 * 64 * 1024 + 17 * i;
        jobs[i].drop_midway = i % 2 == 0;
        jobs[i].fd = it_make_memfd(jobs[i].size, jobs[i].sha);
        assert_true(jobs[i].fd >= 0);
    }
    run_jobs(jobs, NDROPPERS);
    check_jobs(jobs, NDROPPERS);
    assert_int_equal(completed_rows() - before, NDROPPERS);
    for (int i = 0; i < NDROPPERS; i++)
        close(jobs[i].fd);
    free(jobs);
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
        IT_FIXTURE_TEST(test_many_uploads_at_once),
        IT_FIXTURE_TEST(test_drops_and_resumes_at_once),
        IT_FIXTURE_TEST(test_server_stops_cleanly),
    };
    return cmocka_run_group_tests(tests, group_setup, it_fixture_group_teardown);
}
