/* The checkpoint sync thread: real files and pipes handed over, results
 * collected through the caller's epoll set, done callbacks on the caller's
 * thread in submission order (run jobs ahead of the syncs of their batch),
 * and nothing lost when the syncer stops. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chunkd/syncer.h"
#include "chunkd/util.h"
#include "test_tmpdir.h"

#define MAX_JOBS 32
#define WAIT_MS 10000

/* What the done callbacks saw, in the order they ran. */
typedef struct record {
    size_t calls;
    size_t order[MAX_JOBS];   /* tracked job index, per call */
    bool off_thread;          /* some done ran on another thread */
    bool fd_open_at_done;     /* some job's descriptor was still open then */
    bool fd_not_reset;        /* some job's fd field was not -1 then */
    bool dir_open_at_done;    /* some job's directory descriptor was still open then */
    bool resubmit_accepted;   /* syncer_submit from done returned 0 */
    syncer *resubmit_to;      /* done tries to hand over a job here */
} record;

typedef struct tracked {
    sync_job job;
    size_t index;
    int fd_number;            /* the descriptor handed over */
    int dir_fd_number;        /* and its directory's, or -1 */
    record *rec;
    pthread_t submitter;
    bool heap;                /* freed by its done, as upload.c does */
} tracked;

typedef struct fixture {
    int epfd;
    syncer *sy;
    char path[64];            /* a scratch file with some bytes in it */
    tracked jobs[MAX_JOBS];
    record rec;
} fixture;

static void on_done(sync_job *job)
{
    tracked *t = (tracked *)job; /* job is the first member */
    record *r = t->rec;
    if (!pthread_equal(pthread_self(), t->submitter))
        r->off_thread = true;
    /* Checked here, before anything on this thread can reuse the number. */
    if (fcntl(t->fd_number, F_GETFD) != -1 || errno != EBADF)
        r->fd_open_at_done = true;
    if (job->fd != -1)
        r->fd_not_reset = true;
    if (t->dir_fd_number >= 0 &&
        (fcntl(t->dir_fd_number, F_GETFD) != -1 || errno != EBADF || job->dir_fd != -1))
        r->dir_open_at_done = true;
    if (r->calls < MAX_JOBS)
        r->order[r->calls] = t->index;
    r->calls++;
    if (r->resubmit_to) {
        /* Only set while stopping, when the syncer must refuse. */
        sync_job again = {.fd = -1, .done = on_done};
        if (syncer_submit(r->resubmit_to, &again) == 0)
            r->resubmit_accepted = true;
    }
    if (t->heap)
        free(t);
}

static int setup_with(void **state, const syncer_options *opt)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    f->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (f->epfd < 0) {
        free(f);
        return -1;
    }
    char err[256] = "";
    f->sy = syncer_new(f->epfd, opt, err, sizeof err);
    if (!f->sy) {
        print_error("syncer_new: %s\n", err);
        close(f->epfd);
        free(f);
        return -1;
    }
    /* mkstemp's template: the prefix, then six 'X' for it to replace. */
    static const char prefix[] = "/tmp/chunkd-syncer-";
    memcpy(f->path, prefix, sizeof prefix - 1);
    memset(f->path + sizeof prefix - 1, 'X', 6);
    f->path[sizeof prefix - 1 + 6] = '\0';
    int fd = mkstemp(f->path);
    if (fd < 0) {
        syncer_free(f->sy);
        close(f->epfd);
        free(f);
        return -1;
    }
    static const char bytes[] = "some bytes to make durable";
    ssize_t n = write(fd, bytes, sizeof bytes);
    int rc = close(fd);
    if (n != (ssize_t)sizeof bytes || rc != 0) {
        unlink(f->path);
        syncer_free(f->sy);
        close(f->epfd);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_with(state, NULL);
}

/* ---- batches synced together ------------------------------------------ */

/* What the batching syncer's hooks saw and answer: set by a test, read on
 * the syncer's thread while the test waits, so atomic. */
static _Atomic int fs_syncs;           /* calls of fake_sync_fs */
static _Atomic int fs_sync_errno;      /* non-zero: fake_sync_fs fails with it */
static _Atomic long long unwritten_answer;
static _Atomic int failing_fd = -1;   /* fake_file_written reports EIO for it */
static _Atomic int failing_flush_fd = -1; /* fake_flush fails with EIO for it */
static metrics batch_metrics;

static int fake_sync_fs(int fd)
{
    fs_syncs++;
    int e = fs_sync_errno;
    if (e) {
        errno = e;
        return -1;
    }
    return syncfs(fd);
}

static int fake_file_written(int fd)
{
    if (fd == failing_fd) {
        errno = EIO;
        return -1;
    }
    return sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WAIT_AFTER);
}

static int fake_flush(int fd)
{
    if (fd == failing_flush_fd) {
        errno = EIO;
        return -1;
    }
    return fdatasync(fd);
}

static int64_t fake_unwritten(void)
{
    return unwritten_answer;
}

/* A syncer that batches files on /tmp's device, the scratch file's. */
static int setup_batching(void **state)
{
    struct stat sb;
    if (stat("/tmp", &sb) != 0)
        return -1;
    fs_syncs = 0;
    fs_sync_errno = 0;
    unwritten_answer = 0;
    failing_fd = -1;
    failing_flush_fd = -1;
    memset(&batch_metrics, 0, sizeof batch_metrics);
    syncer_options opt = {.batch = true,
                          .dev = sb.st_dev,
                          .max_unwritten = 16 << 20,
                          .metrics = &batch_metrics,
                          .sync_fs = fake_sync_fs,
                          .file_written = fake_file_written,
                          .flush = fake_flush,
                          .unwritten = fake_unwritten};
    return setup_with(state, &opt);
}

static int teardown(void **state)
{
    fixture *f = *state;
    syncer_free(f->sy);
    int rc = unlink(f->path);
    if (close(f->epfd) != 0)
        rc = -1;
    free(f);
    return rc;
}

/* A descriptor of the scratch file opened anew, as upload.c opens one. */
static int reopen_file(fixture *f)
{
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    return fd;
}

static tracked *track(fixture *f, tracked *t, size_t index, int fd)
{
    memset(t, 0, sizeof *t);
    t->job.fd = fd;
    t->job.end = 1000 + (int64_t)index;
    t->job.generation = 7 + index;
    t->job.done = on_done;
    t->job.err = -1;       /* the syncer must overwrite both results */
    t->job.sync_us = -1;
    t->index = index;
    t->fd_number = fd;
    t->dir_fd_number = -1;
    t->rec = &f->rec;
    t->submitter = pthread_self();
    return t;
}

/* Waits on the epoll set as a worker does until `want` callbacks ran.
 * Every event must carry the syncer's tag. */
static void run_until(fixture *f, size_t want)
{
    int64_t deadline = util_mono_ms() + WAIT_MS;
    while (f->rec.calls < want) {
        int64_t left = deadline - util_mono_ms();
        assert_true(left > 0);
        struct epoll_event ev[4];
        int n = epoll_wait(f->epfd, ev, 4, (int)left);
        assert_true(n >= 0 || errno == EINTR);
        for (int i = 0; i < n; i++) {
            assert_ptr_equal(ev[i].data.ptr, syncer_event_tag(f->sy));
            assert_true(ev[i].events & EPOLLIN);
            syncer_handle_event(f->sy);
        }
    }
    assert_int_equal(f->rec.calls, want);
}

static void assert_quiet(fixture *f)
{
    struct epoll_event ev;
    assert_int_equal(epoll_wait(f->epfd, &ev, 1, 0), 0);
}

/* One job of the scratch file, handed over and back. */
static tracked *sync_one_file(fixture *f)
{
    tracked *t = track(f, &f->jobs[0], 0, reopen_file(f));
    assert_int_equal(syncer_submit(f->sy, &t->job), 0);
    syncer_flush(f->sy);
    run_until(f, 1);
    return t;
}

static void test_file_sync(void **state)
{
    fixture *f = *state;
    tracked *t = sync_one_file(f);
    assert_false(f->rec.off_thread);
    assert_false(f->rec.fd_open_at_done);
    assert_false(f->rec.fd_not_reset);
    assert_int_equal(t->job.err, 0);
    assert_true(t->job.sync_us >= 0);
    /* The caller's fields travel untouched. */
    assert_true(t->job.end == 1000);
    assert_true(t->job.generation == 7);
    /* One job, one wake-up: the eventfd is drained, epoll has nothing more. */
    assert_quiet(f);
}

static void test_pipe_fails_with_einval(void **state)
{
    fixture *f = *state;
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    tracked *t = track(f, &f->jobs[0], 0, p[1]);
    assert_int_equal(syncer_submit(f->sy, &t->job), 0);
    syncer_flush(f->sy);
    run_until(f, 1);
    assert_int_equal(t->job.err, EINVAL);
    assert_true(t->job.sync_us >= 0);
    assert_false(f->rec.fd_open_at_done); /* closed even though the sync failed */
    assert_false(f->rec.off_thread);
    assert_int_equal(close(p[0]), 0);
}

/* Hands t over with a directory to sync after its file. */
static void with_dir(tracked *t, uint32_t key, int dir_fd)
{
    assert_true(dir_fd >= 0);
    t->job.dir_key = key;
    t->job.dir_fd = dir_fd;
    t->dir_fd_number = dir_fd;
}

/* A completion's job: the file, then the directory that names it; both
 * descriptors closed by the syncer, success or not. */
static void test_directory_synced_after_the_file(void **state)
{
    fixture *f = *state;
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    /* 0: both sync. 1: the directory cannot be synced (an O_PATH
     * descriptor: EBADF). 2: the file fails first (a pipe: EINVAL), so its
     * directory is not tried. Different keys: no result is shared. */
    tracked *ok = track(f, &f->jobs[0], 0, reopen_file(f));
    with_dir(ok, 1, open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    tracked *bad_dir = track(f, &f->jobs[1], 1, reopen_file(f));
    with_dir(bad_dir, 2, open("/tmp", O_PATH | O_DIRECTORY | O_CLOEXEC));
    tracked *bad_file = track(f, &f->jobs[2], 2, p[1]);
    with_dir(bad_file, 3, open("/tmp", O_PATH | O_DIRECTORY | O_CLOEXEC));
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(syncer_submit(f->sy, &f->jobs[i].job), 0);
    syncer_flush(f->sy);
    run_until(f, 3);
    assert_int_equal(ok->job.err, 0);
    assert_int_equal(bad_dir->job.err, EBADF);
    assert_int_equal(bad_file->job.err, EINVAL);
    assert_false(f->rec.fd_open_at_done);
    assert_false(f->rec.dir_open_at_done);
    assert_false(f->rec.off_thread);
    assert_int_equal(close(p[0]), 0);
}

static void test_done_in_submission_order(void **state)
{
    fixture *f = *state;
    enum { N = 12 };
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    bool is_pipe[N];
    /* All opened before the first hand-over, so no number is reused while
     * a done checks that its descriptor is closed. */
    for (size_t i = 0; i < N; i++) {
        /* Files and pipe ends mixed: quick and failing syncs alike keep their turn. */
        is_pipe[i] = i % 3 == 1;
        int fd = is_pipe[i] ? fcntl(p[1], F_DUPFD_CLOEXEC, 0) : reopen_file(f);
        assert_true(fd >= 0);
        track(f, &f->jobs[i], i, fd);
    }
    for (size_t i = 0; i < N; i++)
        assert_int_equal(syncer_submit(f->sy, &f->jobs[i].job), 0);
    syncer_flush(f->sy);
    run_until(f, N);
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(f->rec.order[i], i);
        assert_int_equal(f->jobs[i].job.err, is_pipe[i] ? EINVAL : 0);
    }
    assert_false(f->rec.off_thread);
    assert_false(f->rec.fd_open_at_done);
    assert_int_equal(close(p[0]), 0);
    assert_int_equal(close(p[1]), 0);
}

/* Busy from the hand-over (before any flush) until every done ran: what
 * upload.c asks before an extra checkpoint. */
static void test_idle_until_every_done_ran(void **state)
{
    fixture *f = *state;
    assert_true(syncer_idle(f->sy));
    for (size_t i = 0; i < 2; i++)
        assert_int_equal(syncer_submit(f->sy, &track(f, &f->jobs[i], i, reopen_file(f))->job), 0);
    assert_false(syncer_idle(f->sy));
    syncer_flush(f->sy);
    run_until(f, 2);
    assert_true(syncer_idle(f->sy));
}

static void test_done_may_free_job(void **state)
{
    fixture *f = *state;
    enum { N = 6 };
    tracked *t[N];
    for (size_t i = 0; i < N; i++) {
        t[i] = malloc(sizeof *t[i]);
        assert_non_null(t[i]);
        track(f, t[i], i, reopen_file(f));
        t[i]->heap = true;
    }
    for (size_t i = 0; i < N; i++)
        assert_int_equal(syncer_submit(f->sy, &t[i]->job), 0);
    syncer_flush(f->sy);
    /* ASan reports any use of a job after its done freed it. */
    run_until(f, N);
    for (size_t i = 0; i < N; i++)
        assert_int_equal(f->rec.order[i], i);
}

static void test_free_runs_queued_dones(void **state)
{
    fixture *f = *state;
    enum { N = 24 };
    for (size_t i = 0; i < N; i++)
        track(f, &f->jobs[i], i, reopen_file(f));
    for (size_t i = 0; i < N; i++)
        assert_int_equal(syncer_submit(f->sy, &f->jobs[i].job), 0);
    f->rec.resubmit_to = f->sy;
    /* No event handled: every result is still with the syncer. */
    syncer_free(f->sy);
    f->sy = NULL;
    assert_int_equal(f->rec.calls, N);
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(f->rec.order[i], i);
        assert_int_equal(f->jobs[i].job.err, 0);
    }
    assert_false(f->rec.off_thread);
    assert_false(f->rec.fd_open_at_done);
    /* A stopping syncer refuses new work; the caller keeps it. */
    assert_false(f->rec.resubmit_accepted);
    /* Its eventfd left the epoll set. */
    assert_quiet(f);
}

static void test_free_idle_and_null(void **state)
{
    fixture *f = *state;
    syncer_free(f->sy);
    f->sy = NULL;
    assert_int_equal(f->rec.calls, 0);
    assert_quiet(f);
    syncer_free(NULL);
}

static void test_event_tag(void **state)
{
    fixture *f = *state;
    assert_non_null(syncer_event_tag(f->sy));
    tracked *t = track(f, &f->jobs[0], 0, reopen_file(f));
    assert_int_equal(syncer_submit(f->sy, &t->job), 0);
    syncer_flush(f->sy);
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    int n;
    do
        n = epoll_wait(f->epfd, &ev, 1, WAIT_MS);
    while (n < 0 && errno == EINTR);
    assert_int_equal(n, 1);
    assert_ptr_equal(ev.data.ptr, syncer_event_tag(f->sy));
    assert_int_equal(f->rec.calls, 0); /* nothing runs before the caller asks */
    syncer_handle_event(f->sy);
    assert_int_equal(f->rec.calls, 1);
    assert_quiet(f);
    /* A spurious call finds nothing and runs nothing. */
    syncer_handle_event(f->sy);
    assert_int_equal(f->rec.calls, 1);
}

static void test_new_with_bad_epfd(void **state)
{
    (void)state;
    char err[256] = "";
    syncer *sy = syncer_new(-1, NULL, err, sizeof err);
    assert_null(sy);
    assert_non_null(strstr(err, "epoll_ctl"));
}

/* Nothing starts before syncer_flush: the jobs of a worker's loop turn
 * wait for each other, so they make one batch. */
static void test_starts_at_flush(void **state)
{
    fixture *f = *state;
    tracked *t = track(f, &f->jobs[0], 0, reopen_file(f));
    assert_int_equal(syncer_submit(f->sy, &t->job), 0);
    struct epoll_event ev;
    assert_int_equal(epoll_wait(f->epfd, &ev, 1, 300), 0);
    assert_int_equal(f->rec.calls, 0);
    syncer_flush(f->sy);
    run_until(f, 1);
    assert_int_equal(t->job.err, 0);
    /* A flush with nothing new wakes nobody. */
    syncer_flush(f->sy);
    assert_quiet(f);
}

/* ---- other blocking work on the thread --------------------------------- */

/* A run job that notes where and when it ran. */
typedef struct run_probe {
    tracked t;            /* first: on_done casts the job to it */
    const sync_job *sync; /* a sync handed over before it */
    bool ran;
    pthread_t ran_on;
    int sync_err_then;    /* that sync's err when this ran */
} run_probe;

static void probe_run(sync_job *job)
{
    run_probe *p = (run_probe *)job;
    p->ran = true;
    p->ran_on = pthread_self();
    p->sync_err_then = p->sync->err;
    job->err = 0;
}

/* A run job goes to the syncer's thread, ahead of the syncs handed over
 * before it (what waits on it is further along), and comes back like them:
 * its done on the caller's thread, its fd left alone. */
static void test_run_job_goes_first_on_the_thread(void **state)
{
    fixture *f = *state;
    tracked *sync = track(f, &f->jobs[0], 0, reopen_file(f));
    run_probe p;
    track(f, &p.t, 1, -1);
    p.t.job.run = probe_run;
    p.sync = &sync->job;
    p.ran = false;
    assert_int_equal(syncer_submit(f->sy, &sync->job), 0);
    assert_int_equal(syncer_submit(f->sy, &p.t.job), 0);
    assert_false(syncer_idle(f->sy));
    syncer_flush(f->sy);
    run_until(f, 2);
    assert_true(p.ran);
    assert_false(pthread_equal(p.ran_on, pthread_self()));
    assert_int_equal(p.sync_err_then, -1); /* not synced yet when it ran */
    assert_int_equal(f->rec.order[0], 1);
    assert_int_equal(f->rec.order[1], 0);
    assert_int_equal(p.t.job.err, 0);
    assert_int_equal(p.t.job.fd, -1);
    assert_int_equal(sync->job.err, 0);
    assert_false(f->rec.off_thread);
    assert_true(syncer_idle(f->sy));
}

/* What the hooks saw. Written on the syncer's thread, read after
 * syncer_free joined it. */
typedef struct hook_record {
    pthread_t caller;
    int starts, ends;
    bool start_off_caller, end_off_caller;
    bool ended_after_start;
} hook_record;

static void hook_start(void *arg)
{
    hook_record *h = arg;
    h->starts++;
    h->start_off_caller = !pthread_equal(pthread_self(), h->caller);
}

static void hook_end(void *arg)
{
    hook_record *h = arg;
    h->ends++;
    h->end_off_caller = !pthread_equal(pthread_self(), h->caller);
    h->ended_after_start = h->starts == 1;
}

/* The thread's own set-up and clean-up (the MySQL client's, for run jobs)
 * run on it, once each, the clean-up before syncer_free returns. */
static void test_thread_hooks(void **state)
{
    (void)state;
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    assert_true(epfd >= 0);
    hook_record h = {.caller = pthread_self()};
    syncer_options opt = {.thread_start = hook_start, .thread_end = hook_end, .thread_arg = &h};
    char err[256] = "";
    syncer *sy = syncer_new(epfd, &opt, err, sizeof err);
    assert_non_null(sy);
    syncer_free(sy);
    assert_int_equal(h.starts, 1);
    assert_int_equal(h.ends, 1);
    assert_true(h.start_off_caller);
    assert_true(h.end_off_caller);
    assert_true(h.ended_after_start);
    assert_int_equal(close(epfd), 0);
}

/* What the after_sync hook saw, written on the syncer's thread and read
 * after the jobs' dones ran (the hand-back orders the two). */
typedef struct after_record {
    int calls;
    size_t n;
    size_t index[MAX_JOBS];
    bool synced_and_closed; /* every job it got: err 0, fd and dir_fd -1 */
    bool on_syncer;         /* it ran off the caller's thread */
    pthread_t caller;
} after_record;

static after_record after_rec;

static void record_after_sync(void *arg, sync_job *const *jobs, size_t n)
{
    after_record *a = arg;
    a->calls++;
    a->on_syncer = !pthread_equal(pthread_self(), a->caller);
    for (size_t i = 0; i < n; i++) {
        const tracked *t = (const tracked *)jobs[i];
        if (a->n < MAX_JOBS)
            a->index[a->n++] = t->index;
        if (jobs[i]->err != 0 || jobs[i]->fd != -1 || jobs[i]->dir_fd != -1)
            a->synced_and_closed = false;
    }
}

static int setup_after_sync(void **state)
{
    memset(&after_rec, 0, sizeof after_rec);
    after_rec.synced_and_closed = true;
    after_rec.caller = pthread_self();
    syncer_options opt = {.after_sync = record_after_sync, .thread_arg = &after_rec};
    return setup_with(state, &opt);
}

/* The jobs that ask for it (a completion's UPDATE after its file's sync)
 * go to after_sync together, once for the batch, on the syncer's thread,
 * synced and closed; one whose sync failed, and one that did not ask, do
 * not; every job still comes back. */
static void test_after_sync_gets_the_synced_jobs_that_ask(void **state)
{
    fixture *f = *state;
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    tracked *a = track(f, &f->jobs[0], 0, reopen_file(f));
    tracked *b = track(f, &f->jobs[1], 1, reopen_file(f));
    tracked *plain = track(f, &f->jobs[2], 2, reopen_file(f));
    tracked *failing = track(f, &f->jobs[3], 3, p[1]); /* fdatasync: EINVAL */
    with_dir(b, 1, open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    a->job.then = b->job.then = failing->job.then = true;
    tracked *all[] = {a, b, plain, failing};
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(syncer_submit(f->sy, &all[i]->job), 0);
    syncer_flush(f->sy);
    run_until(f, 4);
    assert_int_equal(after_rec.calls, 1);
    assert_int_equal(after_rec.n, 2);
    assert_int_equal(after_rec.index[0], 0);
    assert_int_equal(after_rec.index[1], 1);
    assert_true(after_rec.synced_and_closed);
    assert_true(after_rec.on_syncer);
    assert_int_equal(failing->job.err, EINVAL);
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(f->rec.order[i], i);
    assert_int_equal(close(p[0]), 0);
}

/* Without jobs that ask, it is not called. */
static void test_after_sync_not_called_for_none(void **state)
{
    fixture *f = *state;
    tracked *t = sync_one_file(f);
    assert_int_equal(t->job.err, 0);
    assert_int_equal(after_rec.calls, 0);
}

/* N scratch files of their own in a new directory, each with some bytes
 * not yet synced, handed over with the directory as their completion's
 * would be. */
static void submit_new_files(fixture *f, const char *dir, size_t first, size_t n)
{
    for (size_t i = first; i < first + n; i++) {
        char path[256];
        snprintf(path, sizeof path, "%s/%zu.data", dir, i);
        int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        char bytes[8192];
        memset(bytes, (int)('a' + i), sizeof bytes);
        assert_int_equal(write(fd, bytes, sizeof bytes), (ssize_t)sizeof bytes);
        tracked *t = track(f, &f->jobs[i], i, fd);
        with_dir(t, 1, open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        assert_int_equal(syncer_submit(f->sy, &t->job), 0);
    }
}

/* Hands over n new files in a fresh scratch directory (named in dir);
 * nothing starts before finish_batch. */
static void start_batch(fixture *f, char dir[64], size_t n)
{
    assert_int_equal(test_tmpdir_make(dir, 64, "/tmp/chunkd-batch-"), 0);
    submit_new_files(f, dir, 0, n);
}

/* Lets the syncer take the n files as one batch and waits for them: each
 * done run in order on this thread, every descriptor closed by then, every
 * result set. Removes the directory. */
static void finish_batch(fixture *f, const char *dir, size_t n)
{
    syncer_flush(f->sy);
    run_until(f, n);
    for (size_t i = 0; i < n; i++) {
        assert_true(f->jobs[i].job.sync_us >= 0);
        assert_int_equal(f->rec.order[i], i);
    }
    assert_false(f->rec.fd_open_at_done);
    assert_false(f->rec.dir_open_at_done);
    assert_false(f->rec.off_thread);
    assert_int_equal(test_tmpdir_remove(dir), 0);
}

/* n new files as one batch: each synced, together with the others or not
 * as `batched` says. */
static void sync_new_files(fixture *f, size_t n, bool batched)
{
    char dir[64];
    start_batch(f, dir, n);
    finish_batch(f, dir, n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(f->jobs[i].job.err, 0);
        assert_int_equal(f->jobs[i].job.batched, batched);
    }
}

static void test_batch_synced_together(void **state)
{
    fixture *f = *state;
    sync_new_files(f, 5, true);
    assert_int_equal(fs_syncs, 1);
    assert_int_equal(batch_metrics.counter[M_SYNC_BATCHES], 1);
    assert_int_equal(batch_metrics.counter[M_SYNC_BATCHED_FILES], 5);
}

/* syncfs failing (an error anywhere on the file system) proves nothing
 * about these files: each is then synced on its own, which succeeds. */
static void test_batch_falls_back_when_syncfs_fails(void **state)
{
    fixture *f = *state;
    fs_sync_errno = EIO;
    sync_new_files(f, 4, false);
    assert_int_equal(fs_syncs, 1);
    assert_int_equal(batch_metrics.counter[M_SYNC_BATCHES], 0);
    assert_int_equal(batch_metrics.counter[M_SYNC_BATCHED_FILES], 0);
}

/* A file whose own pages failed to be written gets that error as its
 * verdict (it was consumed: an fdatasync now would wrongly succeed), even
 * when it is the first of the batch; the others are still synced together. */
static void test_batch_file_error_is_its_own(void **state)
{
    fixture *f = *state;
    char dir[64];
    enum { N = 4 };
    start_batch(f, dir, N);
    failing_fd = f->jobs[0].fd_number;
    finish_batch(f, dir, N);
    assert_int_equal(f->jobs[0].job.err, EIO);
    assert_false(f->jobs[0].job.batched);
    for (size_t i = 1; i < N; i++) {
        assert_int_equal(f->jobs[i].job.err, 0);
        assert_true(f->jobs[i].job.batched);
    }
    assert_int_equal(fs_syncs, 1);
    assert_int_equal(batch_metrics.counter[M_SYNC_BATCHES], 1);
    assert_int_equal(batch_metrics.counter[M_SYNC_BATCHED_FILES], N - 1);
}

/* The flush after the batch fails on its file (the first whose pages were
 * written): that file keeps the error, and nothing is concluded for the
 * others, which get a sync of their own and succeed. */
static void test_batch_flush_failure(void **state)
{
    fixture *f = *state;
    char dir[64];
    enum { N = 4 };
    start_batch(f, dir, N);
    failing_fd = f->jobs[0].fd_number;        /* so the flush goes to the second */
    failing_flush_fd = f->jobs[1].fd_number;
    finish_batch(f, dir, N);
    assert_int_equal(f->jobs[0].job.err, EIO);
    assert_int_equal(f->jobs[1].job.err, EIO);
    for (size_t i = 0; i < N; i++)
        assert_false(f->jobs[i].job.batched);
    for (size_t i = 2; i < N; i++)
        assert_int_equal(f->jobs[i].job.err, 0);
    assert_int_equal(fs_syncs, 1);
    assert_int_equal(batch_metrics.counter[M_SYNC_BATCHES], 0);
    assert_int_equal(batch_metrics.counter[M_SYNC_BATCHED_FILES], 0);
}

/* Only regular files on the storage device go into a batch: a pipe keeps
 * its own verdict (EINVAL), a file on another file system its own sync. */
static void test_batch_takes_only_files_on_its_device(void **state)
{
    fixture *f = *state;
    char dir[64];
    start_batch(f, dir, 2);
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    tracked *pipe_job = track(f, &f->jobs[2], 2, p[1]);
    assert_int_equal(syncer_submit(f->sy, &pipe_job->job), 0);
    struct stat tmp, shm;
    bool other_fs = stat("/tmp", &tmp) == 0 && stat("/dev/shm", &shm) == 0 &&
                    tmp.st_dev != shm.st_dev;
    char other[64] = "";
    size_t n = 3;
    if (other_fs) {
        assert_int_equal(test_tmpdir_make(other, sizeof other, "/dev/shm/chunkd-batch-"), 0);
        submit_new_files(f, other, 3, 1);
        n = 4;
    }
    syncer_flush(f->sy);
    run_until(f, n);
    assert_int_equal(fs_syncs, 1);
    assert_true(f->jobs[0].job.batched && f->jobs[1].job.batched);
    assert_int_equal(f->jobs[0].job.err, 0);
    assert_int_equal(f->jobs[1].job.err, 0);
    assert_false(pipe_job->job.batched);
    assert_int_equal(pipe_job->job.err, EINVAL);
    if (other_fs) {
        assert_false(f->jobs[3].job.batched);
        assert_int_equal(f->jobs[3].job.err, 0);
        assert_int_equal(test_tmpdir_remove(other), 0);
    } else {
        print_message("no second file system at /dev/shm: that case not checked\n");
    }
    assert_int_equal(batch_metrics.counter[M_SYNC_BATCHED_FILES], 2);
    assert_int_equal(close(p[0]), 0);
    assert_int_equal(test_tmpdir_remove(dir), 0);
}

/* A syncfs would wait for every unwritten page of the machine: above the
 * limit, or when that cannot be read, each file is synced on its own. So
 * is a batch of one. */
static void test_batch_skipped(void **state)
{
    fixture *f = *state;
    char dir[64];
    assert_int_equal(test_tmpdir_make(dir, sizeof dir, "/tmp/chunkd-batch-"), 0);
    const long long answers[] = {(16LL << 20) + 1, -1};
    size_t done = 0;
    for (size_t k = 0; k < 2; k++) {
        unwritten_answer = answers[k];
        submit_new_files(f, dir, done, 3);
        syncer_flush(f->sy);
        done += 3;
        run_until(f, done);
    }
    unwritten_answer = 16LL << 20; /* at the limit: still together */
    submit_new_files(f, dir, done, 2);
    syncer_flush(f->sy);
    done += 2;
    run_until(f, done);
    submit_new_files(f, dir, done, 1);
    syncer_flush(f->sy);
    done += 1;
    run_until(f, done);
    for (size_t i = 0; i < done; i++) {
        assert_int_equal(f->jobs[i].job.err, 0);
        assert_int_equal(f->jobs[i].job.batched, i == 6 || i == 7);
    }
    assert_int_equal(fs_syncs, 1);
    assert_int_equal(batch_metrics.counter[M_SYNC_BATCHES], 1);
    assert_int_equal(test_tmpdir_remove(dir), 0);
}

/* Without options nothing is ever batched, however many files come. */
static void test_no_batching_by_default(void **state)
{
    sync_new_files(*state, 4, false);
}

int main(void)
{
    /* A syncer that never finishes a job would otherwise hang the run. */
    alarm(120);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_file_sync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipe_fails_with_einval, setup, teardown),
        cmocka_unit_test_setup_teardown(test_directory_synced_after_the_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_done_in_submission_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_until_every_done_ran, setup, teardown),
        cmocka_unit_test_setup_teardown(test_done_may_free_job, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_runs_queued_dones, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_idle_and_null, setup, teardown),
        cmocka_unit_test_setup_teardown(test_event_tag, setup, teardown),
        cmocka_unit_test(test_new_with_bad_epfd),
        cmocka_unit_test_setup_teardown(test_starts_at_flush, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_job_goes_first_on_the_thread, setup, teardown),
        cmocka_unit_test(test_thread_hooks),
        cmocka_unit_test_setup_teardown(test_after_sync_gets_the_synced_jobs_that_ask,
                                        setup_after_sync, teardown),
        cmocka_unit_test_setup_teardown(test_after_sync_not_called_for_none, setup_after_sync,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_no_batching_by_default, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_synced_together, setup_batching, teardown),
        cmocka_unit_test_setup_teardown(test_batch_falls_back_when_syncfs_fails, setup_batching,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_batch_takes_only_files_on_its_device, setup_batching,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_batch_skipped, setup_batching, teardown),
        cmocka_unit_test_setup_teardown(test_batch_file_error_is_its_own, setup_batching,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_batch_flush_failure, setup_batching, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
