/* Worker thread: queue of new connections, epoll loop, idle sweeps. */
#include "chunkd/worker.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <mysql.h>

#include "chunkd/conn.h"
#include "chunkd/log.h"
#include "chunkd/util.h"

enum { MAX_EVENTS = 256, LOOP_TICK_MS = 1000 };

typedef struct queue_item {
    int fd;               /* -1: the stop message */
    char ip[CONN_IP_MAX];
    char peer[64];
    struct queue_item *next;
} queue_item;

struct worker {
    int id;
    pthread_t thread;
    bool started;
    int wakefd;
    conn_owner owner;
    metrics metrics;      /* written by this worker's thread only */
    redis_state *rs;
    docstore *ds;
    offset_saver *saver;
    syncer *syncer;       /* its own thread: file syncs and completions' UPDATEs */
    docstore *commit_ds;  /* used on the syncer's thread only (upload_env.commit_ds) */
    metrics sync_metrics; /* written by the syncer's thread only */
    /* qlock guards only the queue; it is never held while taking another lock. */
    pthread_mutex_t qlock;
    queue_item *qhead, *qtail;
};

/* The syncer's thread runs the completions' UPDATEs through commit_ds: the
 * MySQL client's per-thread state, and a connection made before the first
 * completion needs it (as worker_main does for the worker's own). With
 * MySQL out of reach the ping holds the syncer up to the backend timeout,
 * no longer than the worker's own ping, made at the same time, holds the
 * worker, which hands it nothing before that. */
static void syncer_thread_start(void *arg)
{
    worker *w = arg;
    if (mysql_thread_init() != 0)
        log_error("event=mysql_thread_init_failed thread=syncer worker=%d", w->id);
    if (docstore_ping(w->commit_ds) != 0)
        log_warn("event=backend_unavailable backend=mysql thread=syncer worker=%d error=\"%s\"",
                 w->id, docstore_error(w->commit_ds));
}

static void syncer_thread_end(void *arg)
{
    (void)arg;
    mysql_thread_end();
}

worker *worker_create(int id, const chunkd_config *cfg, const char *node_id,
                      const char *boot_id, conn_limits *limits, const syncer_options *sync,
                      char *err, size_t errlen)
{
    worker *w = calloc(1, sizeof *w);
    if (!w) {
        snprintf(err, errlen, "worker %d: out of memory", id);
        return NULL;
    }
    w->id = id;
    w->wakefd = -1;
    w->owner.epfd = -1;
    int prc = pthread_mutex_init(&w->qlock, NULL);
    if (prc != 0) {
        snprintf(err, errlen, "worker %d: mutex: %s", id, strerror(prc));
        free(w);
        return NULL;
    }
    w->owner.cfg = cfg;
    w->owner.limits = limits;
    w->owner.epfd = epoll_create1(EPOLL_CLOEXEC);
    w->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    w->rs = rstate_new(cfg);
    w->ds = docstore_new(cfg);
    w->commit_ds = docstore_new(cfg);
    w->saver = w->owner.epfd >= 0 ? saver_new(cfg, w->owner.epfd, &w->metrics) : NULL;
    if (w->owner.epfd < 0 || w->wakefd < 0 || !w->rs || !w->ds || !w->commit_ds || !w->saver) {
        snprintf(err, errlen, "worker %d: %s", id, errno ? strerror(errno) : "out of memory");
        worker_join_and_free(w);
        return NULL;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(w->owner.epfd, EPOLL_CTL_ADD, w->wakefd, &ev) != 0) {
        snprintf(err, errlen, "worker %d: epoll_ctl: %s", id, strerror(errno));
        worker_join_and_free(w);
        return NULL;
    }
    char why[200];
    syncer_options sopt = *sync;
    sopt.metrics = &w->sync_metrics;
    sopt.thread_start = syncer_thread_start;
    sopt.thread_end = syncer_thread_end;
    sopt.after_sync = upload_after_sync;
    sopt.thread_arg = w;
    docstore_set_metrics(w->commit_ds, &w->sync_metrics);
    w->syncer = syncer_new(w->owner.epfd, &sopt, why, sizeof why);
    if (!w->syncer) {
        snprintf(err, errlen, "worker %d: %s", id, why);
        worker_join_and_free(w);
        return NULL;
    }
    w->owner.env = (upload_env){.cfg = cfg, .node_id = node_id, .boot_id = boot_id, .rs = w->rs, .ds = w->ds,
                                .saver = w->saver, .syncer = w->syncer, .commit_ds = w->commit_ds,
                                .metrics = &w->metrics};
    rstate_set_metrics(w->rs, &w->metrics);
    docstore_set_metrics(w->ds, &w->metrics);
    if (metrics_register(&w->metrics) != 0 || metrics_register(&w->sync_metrics) != 0) {
        snprintf(err, errlen, "worker %d: too many metrics blocks", id);
        worker_join_and_free(w);
        return NULL;
    }
    return w;
}

static int enqueue(worker *w, int fd, const char *ip, const char *peer)
{
    queue_item *it = malloc(sizeof *it);
    if (!it)
        return -1;
    it->fd = fd;
    snprintf(it->ip, sizeof it->ip, "%s", ip ? ip : "");
    snprintf(it->peer, sizeof it->peer, "%s", peer ? peer : "");
    it->next = NULL;
    pthread_mutex_lock(&w->qlock);
    if (w->qtail)
        w->qtail->next = it;
    else
        w->qhead = it;
    w->qtail = it;
    pthread_mutex_unlock(&w->qlock);
    uint64_t one = 1;
    /* EAGAIN means the counter is already non-zero: the worker wakes anyway. */
    if (write(w->wakefd, &one, sizeof one) < 0 && errno != EAGAIN)
        log_error("event=wake_failed worker=%d error=\"%s\"", w->id, strerror(errno));
    return 0;
}

int worker_dispatch(worker *w, int fd, const char *ip, const char *peer)
{
    return enqueue(w, fd, ip, peer);
}

int worker_stop(worker *w)
{
    return enqueue(w, -1, NULL, NULL);
}

/* Takes everything queued; returns true when a stop message was among it. */
static bool drain_queue(worker *w)
{
    uint64_t n;
    if (read(w->wakefd, &n, sizeof n) < 0 && errno != EAGAIN)
        log_error("event=wake_read_failed worker=%d error=\"%s\"", w->id, strerror(errno));
    pthread_mutex_lock(&w->qlock);
    queue_item *it = w->qhead;
    w->qhead = w->qtail = NULL;
    pthread_mutex_unlock(&w->qlock);
    bool stop = false;
    while (it) {
        queue_item *next = it->next;
        if (it->fd < 0) {
            stop = true;
        } else if (stop) {
            /* Arrived after the stop message: never opened. */
            close(it->fd);
            conn_limits_give(w->owner.limits, it->ip);
        } else {
            conn_open(&w->owner, it->fd, it->ip, it->peer); /* on failure it gives back */
        }
        free(it);
        it = next;
    }
    return stop;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    char name[16];
    snprintf(name, sizeof name, "chunkd-w%d", w->id);
    util_name_thread(name);
    if (mysql_thread_init() != 0)
        log_error("event=mysql_thread_init_failed worker=%d", w->id);
    /* Connected before the first request, not by it: a fresh worker's first
     * group would otherwise wait for the MySQL handshake and the preparing
     * of every statement (5-10 ms on loopback, while its other connections
     * queue), and a backend out of reach shows in the log at start. A
     * failure here changes nothing else: requests connect again as always. */
    if (docstore_ping(w->ds) != 0)
        log_warn("event=backend_unavailable backend=mysql worker=%d error=\"%s\"", w->id,
                 docstore_error(w->ds));
    if (rstate_ping(w->rs) != 0)
        log_warn("event=backend_unavailable backend=redis worker=%d error=\"%s\"", w->id,
                 rstate_error(w->rs));
    struct epoll_event events[MAX_EVENTS];
    int64_t last_sweep = util_mono_ms();
    bool stop = false;
    int64_t drain_deadline = 0; /* non-zero once stopping: chunks in flight may finish */
    int resume_at = 0;          /* where the last turn's reading stopped, in its events */
    for (;;) {
        if (stop) {
            int64_t now = util_mono_ms();
            if (drain_deadline == 0)
                drain_deadline = now + w->owner.cfg->shutdown_grace_ms;
            if (conn_close_unbusy(&w->owner) == 0 || now >= drain_deadline)
                break;
        }
        /* Parked requests wait for this turn's events only: whoever else
         * is ready joins their group, nobody waits for a tick. */
        int timeout = w->owner.parked ? 0 : stop ? 50 : LOOP_TICK_MS;
        int n = epoll_wait(w->owner.epfd, events, MAX_EVENTS, timeout);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            log_error("event=epoll_wait_failed worker=%d error=\"%s\"", w->id, strerror(errno));
            break;
        }
        /* A turn's reading is bounded (conn_begin_turn); the connections
         * it left unread are reported again in about the same order, so
         * the next turn starts with the first of them: round robin. */
        conn_begin_turn(&w->owner);
        int first = resume_at < n ? resume_at : 0;
        resume_at = 0;
        bool skipped = false;
        for (int k = 0; k < n; k++) {
            int i = (first + k) % n;
            if (events[i].data.ptr == NULL)
                stop |= drain_queue(w);
            else if (events[i].data.ptr == saver_event_tag(w->saver))
                saver_handle_event(w->saver, events[i].events);
            else if (events[i].data.ptr == syncer_event_tag(w->syncer)) {
                syncer_handle_event(w->syncer);
                upload_end_chained(&w->owner.env);
            } else if (!conn_handle_event(events[i].data.ptr, events[i].events) && !skipped) {
                skipped = true;
                resume_at = i;
            }
        }
        if (skipped)
            metrics_add(&w->metrics, M_READ_TURNS_CUT, 1);
        conn_run_parked(&w->owner);
        conn_send_pending(&w->owner);
        saver_flush(w->saver);
        syncer_flush(w->syncer);
        int64_t now = util_mono_ms();
        if (now - last_sweep >= LOOP_TICK_MS) {
            saver_tick(w->saver, now);
            conn_sweep_idle(&w->owner, now);
            last_sweep = now;
        }
    }
    /* Past the grace period: whatever is still mid-chunk is cut short; its
     * offset was never saved, so the client resumes before that chunk. */
    while (w->owner.head)
        conn_close(w->owner.head, "shutdown", 503, "shutting_down");
    conn_owner_release(&w->owner);
    /* Backend handles belong to this thread; end them here. */
    /* Syncs still queued run, and their results come back here: uploads
     * whose connections just closed settle then (upload.c, settle_orphan),
     * with Redis and the savers still up. */
    syncer_free(w->syncer);
    w->syncer = NULL;
    docstore_free(w->commit_ds); /* its thread is gone */
    w->commit_ds = NULL;
    saver_free(w->saver);
    w->saver = NULL;
    rstate_free(w->rs);
    w->rs = NULL;
    docstore_free(w->ds);
    w->ds = NULL;
    mysql_thread_end();
    return NULL;
}

int worker_start(worker *w, char *err, size_t errlen)
{
    int rc = pthread_create(&w->thread, NULL, worker_main, w);
    if (rc != 0) {
        snprintf(err, errlen, "worker %d: pthread_create: %s", w->id, strerror(rc));
        return -1;
    }
    w->started = true;
    return 0;
}

void worker_join_and_free(worker *w)
{
    if (!w)
        return;
    if (w->started) {
        int rc = pthread_join(w->thread, NULL);
        if (rc != 0)
            log_error("event=join_failed worker=%d error=\"%s\"", w->id, strerror(rc));
    }
    /* Connections still queued were never opened. */
    for (queue_item *it = w->qhead, *next; it; it = next) {
        next = it->next;
        if (it->fd >= 0) {
            close(it->fd);
            conn_limits_give(w->owner.limits, it->ip);
        }
        free(it);
    }
    syncer_free(w->syncer);
    docstore_free(w->commit_ds);
    saver_free(w->saver);
    rstate_free(w->rs);
    docstore_free(w->ds);
    conn_owner_release(&w->owner);
    if (w->wakefd >= 0)
        close(w->wakefd);
    if (w->owner.epfd >= 0)
        close(w->owner.epfd);
    pthread_mutex_destroy(&w->qlock);
    free(w);
}
