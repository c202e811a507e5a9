/* The sync thread of a worker: a queue in, a queue out, an eventfd to wake
 * the worker. Besides syncs it runs the worker's other blocking jobs
 * (sync_job.run). One lock guards both queues and is never held during an
 * fdatasync or a job. */
#include "chunkd/syncer.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chunkd/fs_sync.h"
#include "chunkd/log.h"
#include "chunkd/metrics.h"
#include "chunkd/storage.h"
#include "chunkd/util.h"

struct syncer {
    pthread_t thread;
    int epfd;
    int wakefd;              /* tells the worker that jobs are done */
    syncer_options opt;
    pthread_mutex_t lock;
    pthread_cond_t work;
    sync_job *pending_head, *pending_tail; /* guarded by lock: handed over, not flushed */
    sync_job *queued_head, *queued_tail; /* guarded by lock: flushed, for the thread */
    sync_job *done_head, *done_tail; /* guarded by lock */
    bool stopping;           /* guarded by lock */
    size_t outstanding;      /* worker's thread only: handed over, done not yet run */
};

static void append(sync_job **head, sync_job **tail, sync_job *job)
{
    job->next = NULL;
    if (*tail)
        (*tail)->next = job;
    else
        *head = job;
    *tail = job;
}

/* The directory fsyncs of one batch, one per key. */
typedef struct dir_synced {
    uint32_t key;
    int err;
} dir_synced;

/* fsyncs job's directory, or takes the result of the batch's fsync of the
 * same one: every file of the batch was created before the batch began,
 * so one fsync makes all their names durable. */
static int sync_dir(sync_job *job, dir_synced *seen, size_t *nseen, size_t max)
{
    for (size_t i = 0; i < *nseen; i++)
        if (seen[i].key == job->dir_key)
            return seen[i].err;
    int err = fsync(job->dir_fd) == 0 ? 0 : errno;
    if (*nseen < max)
        seen[(*nseen)++] = (dir_synced){.key = job->dir_key, .err = err};
    return err;
}

/* Whether the file's pages were all written: 0, or -1 with the errno of
 * the write-back error this descriptor had not seen yet (now seen). */
static int written_back(int fd)
{
    return sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WAIT_AFTER);
}

/* Every job of the batch back to a sync of its own (a job already
 * settled keeps its err). */
static void unbatch(sync_job *batch)
{
    for (sync_job *job = batch; job; job = job->next)
        job->batched = false;
}

/* The batch could not be vouched for as a whole. */
static void give_up_batch(sync_job *batch, int err)
{
    log_warn("event=batch_sync_failed effect=\"each file synced on its own\" error=\"%s\"",
             strerror(err));
    unbatch(batch);
}

/* A batched job whose own check failed: that error, consumed by the
 * check, is its verdict (a later fdatasync would wrongly succeed). */
static void settle_alone(sync_job *job, int err, int64_t t0)
{
    job->err = err;
    job->batched = false;
    job->sync_us = metrics_now_us() - t0;
}

/* Makes the batch's files on the storage device durable together, when
 * there are two or more and little else is waiting to be written: one
 * syncfs writes their data and metadata (sizes, block maps, new names in
 * their directories) in one pass and flushes; then each file is asked for
 * its own write-back errors (sync_file_range WAIT_AFTER: nothing left to
 * wait for, it only reports, and consumes, what went wrong with that
 * file's pages, as its fdatasync would); then one fdatasync flushes again,
 * after everything syncfs wrote (ext4 without a journal writes metadata
 * after its own flush). Two device flushes for the batch, against one per
 * file and one per directory. A job it settles gets err set (and batched
 * when it succeeded); the others, and every one if syncfs fails (an error
 * anywhere on the file system, perhaps not ours), stay at err -1 for an
 * fdatasync of their own, which tells each file's own truth. */
static void sync_together(syncer *sy, sync_job *batch, int64_t t0)
{
    if (!sy->opt.batch || !batch->next)
        return;
    size_t n = 0;
    sync_job *first = NULL;
    for (sync_job *job = batch; job; job = job->next) {
        struct stat sb;
        job->batched =
            fstat(job->fd, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_dev == sy->opt.dev;
        if (job->batched && !first)
            first = job;
        n += job->batched;
    }
    int64_t (*unwritten_bytes)(void) =
        sy->opt.unwritten ? sy->opt.unwritten : fs_sync_unwritten_bytes;
    int64_t unwritten = n >= 2 ? unwritten_bytes() : -1;
    if (unwritten < 0 || unwritten > sy->opt.max_unwritten) {
        unbatch(batch);
        return;
    }
    int (*sync_fs)(int) = sy->opt.sync_fs ? sy->opt.sync_fs : syncfs;
    if (sync_fs(first->fd) != 0) {
        give_up_batch(batch, errno);
        return;
    }
    int (*file_written)(int) = sy->opt.file_written ? sy->opt.file_written : written_back;
    int (*flush)(int) = sy->opt.flush ? sy->opt.flush : fdatasync;
    sync_job *flusher = NULL; /* the first file that came through whole */
    for (sync_job *job = batch; job; job = job->next) {
        if (!job->batched)
            continue;
        if (file_written(job->fd) != 0)
            settle_alone(job, errno, t0);
        else if (!flusher)
            flusher = job;
    }
    if (flusher && flush(flusher->fd) != 0) {
        settle_alone(flusher, errno, t0);
        give_up_batch(batch, flusher->err);
        return;
    }
    size_t together = 0;
    int64_t us = metrics_now_us() - t0;
    for (sync_job *job = batch; job; job = job->next) {
        if (!job->batched)
            continue;
        job->err = 0;
        job->sync_us = us;
        together++;
    }
    if (together > 0) {
        metrics_add(sy->opt.metrics, M_SYNC_BATCHES, 1);
        metrics_add(sy->opt.metrics, M_SYNC_BATCHED_FILES, together);
    }
}

/* Hands a finished job back to the worker. */
static void hand_back(syncer *sy, sync_job *job)
{
    pthread_mutex_lock(&sy->lock);
    append(&sy->done_head, &sy->done_tail, job);
    uint64_t one = 1;
    /* EAGAIN: the counter is already non-zero, the worker wakes anyway. */
    if (write(sy->wakefd, &one, sizeof one) < 0 && errno != EAGAIN)
        log_error("event=syncer_wake_failed error=\"%s\"", strerror(errno));
    pthread_mutex_unlock(&sy->lock);
}

/* The batch's synced jobs that asked for it, to opt.after_sync, in groups
 * of at most SYNC_AFTER_MAX. */
static void after_sync(syncer *sy, sync_job *batch)
{
    if (!sy->opt.after_sync)
        return;
    sync_job *jobs[SYNC_AFTER_MAX];
    size_t n = 0;
    for (sync_job *job = batch; job; job = job->next) {
        if (!job->then || job->err != 0)
            continue;
        jobs[n++] = job;
        if (n == SYNC_AFTER_MAX) {
            sy->opt.after_sync(sy->opt.thread_arg, jobs, n);
            n = 0;
        }
    }
    if (n > 0)
        sy->opt.after_sync(sy->opt.thread_arg, jobs, n);
}

/* Runs the batch's run jobs, first: what waits on them (answers to
 * clients) is further along than what waits on the syncs. Returns the
 * batch without them. */
static sync_job *run_jobs(syncer *sy, sync_job *batch)
{
    sync_job *syncs = NULL, **tail = &syncs;
    while (batch) {
        sync_job *job = batch;
        batch = job->next;
        if (!job->run) {
            job->next = NULL;
            *tail = job;
            tail = &job->next;
            continue;
        }
        job->run(job);
        hand_back(sy, job);
    }
    return syncs;
}

/* Syncs one batch: every job flushed to the thread when it woke. Together
 * where it can (sync_together); the rest each with its fdatasync, after
 * write-back of all of them started, so the disk gets their writes at once
 * and each fdatasync then mostly waits for the cache flush: for a batch of
 * 32 fresh 64 KiB files this halves the time of fdatasyncs one after
 * another (docs/PERFORMANCE.md). sync_file_range without WAIT_AFTER does
 * not look at write-back errors, so each one is still reported by its
 * fdatasync. */
static void sync_batch(syncer *sy, sync_job *batch)
{
    batch = run_jobs(sy, batch);
    if (!batch)
        return;
    int64_t start = metrics_now_us();
    for (sync_job *job = batch; job; job = job->next) {
        job->err = -1;
        job->batched = false;
    }
    sync_together(sy, batch, start);
    size_t alone = 0;
    for (sync_job *job = batch; job; job = job->next)
        alone += job->err == -1;
    if (alone > 1)
        for (sync_job *job = batch; job; job = job->next)
            if (job->err == -1)
                storage_start_writeback(job->fd);
    dir_synced seen[64];
    size_t nseen = 0;
    for (sync_job *job = batch; job; job = job->next) {
        if (job->err == -1) {
            int64_t t0 = metrics_now_us();
            job->err = fdatasync(job->fd) == 0 ? 0 : errno;
            if (job->err == 0 && job->dir_key)
                job->err = sync_dir(job, seen, &nseen, sizeof seen / sizeof seen[0]);
            job->sync_us = metrics_now_us() - t0;
        }
        if (close(job->fd) != 0)
            log_warn("event=close_failed what=sync_fd error=\"%s\"", strerror(errno));
        job->fd = -1;
        if (job->dir_key && close(job->dir_fd) != 0)
            log_warn("event=close_failed what=sync_dir_fd error=\"%s\"", strerror(errno));
        job->dir_fd = -1;
    }
    after_sync(sy, batch);
    while (batch) {
        sync_job *job = batch;
        batch = job->next;
        hand_back(sy, job);
    }
}

static void *syncer_main(void *arg)
{
    syncer *sy = arg;
    util_name_thread("chunkd-sync");
    if (sy->opt.thread_start)
        sy->opt.thread_start(sy->opt.thread_arg);
    pthread_mutex_lock(&sy->lock);
    for (;;) {
        while (!sy->queued_head && !sy->stopping)
            pthread_cond_wait(&sy->work, &sy->lock);
        sync_job *batch = sy->queued_head;
        if (!batch)
            break; /* stopping, and nothing left to sync */
        sy->queued_head = sy->queued_tail = NULL;
        pthread_mutex_unlock(&sy->lock);
        sync_batch(sy, batch);
        pthread_mutex_lock(&sy->lock);
    }
    pthread_mutex_unlock(&sy->lock);
    if (sy->opt.thread_end)
        sy->opt.thread_end(sy->opt.thread_arg);
    return NULL;
}

syncer *syncer_new(int epfd, const syncer_options *opt, char *err, size_t errlen)
{
    syncer *sy = calloc(1, sizeof *sy);
    if (!sy) {
        snprintf(err, errlen, "syncer: out of memory");
        return NULL;
    }
    sy->epfd = epfd;
    if (opt)
        sy->opt = *opt;
    sy->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (sy->wakefd < 0) {
        snprintf(err, errlen, "syncer: eventfd: %s", strerror(errno));
        free(sy);
        return NULL;
    }
    int rc = pthread_mutex_init(&sy->lock, NULL);
    if (rc == 0) {
        rc = pthread_cond_init(&sy->work, NULL);
        if (rc != 0)
            pthread_mutex_destroy(&sy->lock);
    }
    if (rc != 0) {
        snprintf(err, errlen, "syncer: mutex: %s", strerror(rc));
        close(sy->wakefd);
        free(sy);
        return NULL;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = sy};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, sy->wakefd, &ev) != 0) {
        snprintf(err, errlen, "syncer: epoll_ctl: %s", strerror(errno));
        rc = -1;
    } else if ((rc = pthread_create(&sy->thread, NULL, syncer_main, sy)) != 0) {
        snprintf(err, errlen, "syncer: pthread_create: %s", strerror(rc));
        epoll_ctl(epfd, EPOLL_CTL_DEL, sy->wakefd, NULL);
    }
    if (rc != 0) {
        pthread_cond_destroy(&sy->work);
        pthread_mutex_destroy(&sy->lock);
        close(sy->wakefd);
        free(sy);
        return NULL;
    }
    return sy;
}

int syncer_submit(syncer *sy, sync_job *job)
{
    pthread_mutex_lock(&sy->lock);
    bool stopping = sy->stopping;
    if (!stopping)
        append(&sy->pending_head, &sy->pending_tail, job);
    pthread_mutex_unlock(&sy->lock);
    if (stopping)
        return -1;
    sy->outstanding++;
    return 0;
}

/* Moves the pending jobs to the thread's queue; with the lock held. */
static void flush_locked(syncer *sy)
{
    if (!sy->pending_head)
        return;
    if (sy->queued_tail)
        sy->queued_tail->next = sy->pending_head;
    else
        sy->queued_head = sy->pending_head;
    sy->queued_tail = sy->pending_tail;
    sy->pending_head = sy->pending_tail = NULL;
    pthread_cond_signal(&sy->work);
}

void syncer_flush(syncer *sy)
{
    pthread_mutex_lock(&sy->lock);
    flush_locked(sy);
    pthread_mutex_unlock(&sy->lock);
}

bool syncer_idle(const syncer *sy)
{
    return sy->outstanding == 0;
}

const void *syncer_event_tag(const syncer *sy)
{
    return sy;
}

void syncer_handle_event(syncer *sy)
{
    uint64_t n;
    if (read(sy->wakefd, &n, sizeof n) < 0 && errno != EAGAIN)
        log_error("event=syncer_wake_read_failed error=\"%s\"", strerror(errno));
    pthread_mutex_lock(&sy->lock);
    sync_job *job = sy->done_head;
    sy->done_head = sy->done_tail = NULL;
    pthread_mutex_unlock(&sy->lock);
    while (job) {
        sync_job *next = job->next;
        sy->outstanding--;
        job->done(job); /* may free job */
        job = next;
    }
}

void syncer_free(syncer *sy)
{
    if (!sy)
        return;
    pthread_mutex_lock(&sy->lock);
    sy->stopping = true;
    flush_locked(sy); /* what was handed over is synced before the thread ends */
    pthread_cond_signal(&sy->work);
    pthread_mutex_unlock(&sy->lock);
    int rc = pthread_join(sy->thread, NULL);
    if (rc != 0)
        log_error("event=join_failed what=syncer error=\"%s\"", strerror(rc));
    syncer_handle_event(sy);
    if (epoll_ctl(sy->epfd, EPOLL_CTL_DEL, sy->wakefd, NULL) != 0)
        log_debug("event=syncer_epoll_del_failed error=\"%s\"", strerror(errno));
    close(sy->wakefd);
    pthread_cond_destroy(&sy->work);
    pthread_mutex_destroy(&sy->lock);
    free(sy);
}
