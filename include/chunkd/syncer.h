/* File syncs off the event loop: one thread per worker that runs fdatasync
 * for the uploads the worker is writing (checkpoints, completions), while
 * the worker goes on with the chunks that follow and its other connections.
 *
 * An fdatasync waits for the disk (tens of milliseconds for 16 MiB), time
 * in which the worker could do nothing else. Here the worker hands over a
 * descriptor of the file opened anew (not dup'ed: Linux reports a write-back
 * error once per open file description, and a dup would consume it for the
 * worker's too), and learns the result through an eventfd in its epoll
 * set. */
#ifndef CHUNKD_SYNCER_H
#define CHUNKD_SYNCER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "chunkd/metrics.h"

typedef struct sync_job sync_job;
typedef void (*sync_done_fn)(sync_job *job);

struct sync_job {
    /* Non-NULL: not a sync but other blocking work of the worker's (a
     * statement whose commit waits for the disk), run on the syncer's
     * thread ahead of the syncs handed over with it; fd and dir_fd are not
     * used and the results below are run's to fill in. */
    void (*run)(sync_job *job);
    int fd;              /* synced, then closed by the syncer */
    /* Non-zero: dir_fd, the directory that holds the file, is fsynced
     * after it (so a new file's name is durable too) and closed. Jobs of
     * one batch with the same key share one fsync of it. */
    uint32_t dir_key;
    int dir_fd;
    int64_t end;         /* the bytes before this offset are what it makes durable */
    uint64_t generation; /* the caller's, to tell a stale result */
    void *arg;
    /* With opt.after_sync set: once synced without error, the job goes to
     * after_sync with the batch's other such jobs, before any job of the
     * batch is handed back (a completion's UPDATE, run as soon as its file
     * is durable). */
    bool then;
    sync_done_fn done;   /* runs on the worker's thread (syncer_handle_event) */
    /* results */
    int err;             /* 0, or the errno of the failed fdatasync or directory fsync */
    int64_t sync_us;
    bool batched;        /* made durable with the rest of its batch (syncer.c: sync_together) */
    sync_job *next;
};

typedef struct syncer syncer;

#define SYNC_AFTER_MAX 128 /* jobs per call of syncer_options.after_sync */

typedef struct syncer_options {
    /* Batches of two or more regular files on device `dev` are made
     * durable together (two device flushes for all) while the machine has
     * little unwritten data; otherwise, and when false, each file gets its
     * own fdatasync. Set from fs_sync_batch_supported. */
    bool batch;
    dev_t dev;
    /* The machine's unwritten bytes (fs_sync_unwritten_bytes) above which
     * a batch is not synced together: a syncfs waits for all of them. */
    int64_t max_unwritten;
    /* Counts the batches synced together and their files; may be NULL. */
    metrics *metrics;
    /* For tests, NULL otherwise: what syncs a whole file system (syncfs),
     * what asks a file for its write-back errors after it (sync_file_range
     * WAIT_AFTER), what flushes the device after them (fdatasync of one
     * file) and what tells the unwritten bytes (fs_sync_unwritten_bytes). */
    int (*sync_fs)(int fd);
    int (*file_written)(int fd);
    int (*flush)(int fd);
    int64_t (*unwritten)(void);
    /* Called on the syncer's thread when it starts and before it ends,
     * with thread_arg: per-thread set-up for what run jobs use (the MySQL
     * client's). Either may be NULL. */
    void (*thread_start)(void *arg);
    void (*thread_end)(void *arg);
    void *thread_arg;
    /* Called on the syncer's thread after a batch's syncs with its jobs
     * that asked for it (sync_job.then) and were synced, at most
     * SYNC_AFTER_MAX a call; their fds are closed already. May be NULL. */
    void (*after_sync)(void *arg, sync_job *const *jobs, size_t n);
} syncer_options;

/* Starts the thread and registers its eventfd with epfd; opt may be NULL
 * (no batching). NULL with a reason in err. */
syncer *syncer_new(int epfd, const syncer_options *opt, char *err, size_t errlen);
/* Stops the thread after the syncs already handed over, then runs every
 * job's done. */
void syncer_free(syncer *sy);

/* Hands over job (the syncer owns it, and job->fd, until done runs). -1
 * when the syncer is stopping: the caller keeps the job. The syncer starts
 * on it at the next syncer_flush (or with a batch it is already running),
 * so the jobs a worker hands over in one loop turn are synced as one batch. */
int syncer_submit(syncer *sy, sync_job *job);
/* Wakes the syncer for the jobs handed over since the last call. */
void syncer_flush(syncer *sy);

/* Whether every job handed over has come back (its done ran): nothing is
 * being synced for this worker. Worker's thread only, like submit. */
bool syncer_idle(const syncer *sy);

/* The epoll_event.data.ptr its eventfd is registered with. */
const void *syncer_event_tag(const syncer *sy);
/* Runs done for every finished job. */
void syncer_handle_event(syncer *sy);

#endif
