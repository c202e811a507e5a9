/* Non-blocking Redis commands on the worker's loop: offset saves, and the
 * completions' clean-up. hiredis' async API leaves the event loop to its
 * user through five hooks (add/del read, add/del write, cleanup); here they
 * keep one epoll registration per connection up to date. A connection that
 * fails runs every waiting callback with no reply; the next command opens a
 * new one. */
#include "chunkd/offset_saver.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "chunkd/log.h"
#include "chunkd/util.h"

/* One connection's registration; freed by hiredis' cleanup hook. */
typedef struct saver_conn {
    offset_saver *sv;
    redisAsyncContext *ac;
    int fd;
    uint32_t events;      /* registered with epoll; 0 = not registered */
    bool want_write;      /* hiredis has output queued (saver_flush writes it) */
} saver_conn;

struct offset_saver {
    const chunkd_config *cfg;
    int epfd;
    metrics *m;
    saver_conn *conn;     /* NULL: none open */
    size_t waiting;       /* saves sent and not yet answered */
    bool in_callback;     /* a done callback is running: hiredis is not re-entrant */
    bool freeing;         /* saver_free: no new connection may open */
    int64_t quiet_since;  /* when the oldest unanswered save was sent, or the last reply came */
    char err[256];
};

/* What a save carries to its reply. */
typedef struct saver_req {
    offset_saver *sv;
    saver_done_fn done;
    void *arg;
    int64_t sent_us;
} saver_req;

static void set_events(saver_conn *sc, uint32_t events)
{
    if (events == sc->events)
        return;
    struct epoll_event ev = {.events = events, .data.ptr = sc->sv};
    int op = sc->events == 0 ? EPOLL_CTL_ADD : events == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
    if (epoll_ctl(sc->sv->epfd, op, sc->fd, &ev) != 0) {
        /* Cannot happen for a socket we own; a save would then hang until
         * saver_tick gives up on it, so say so. */
        log_error("event=redis_epoll_failed error=\"%s\"", strerror(errno));
        return;
    }
    sc->events = events;
}

static void hook_add_read(void *p) { saver_conn *sc = p; set_events(sc, sc->events | EPOLLIN); }
static void hook_del_read(void *p) { saver_conn *sc = p; set_events(sc, sc->events & ~(uint32_t)EPOLLIN); }
/* Output is not written as each save is queued, nor is EPOLLOUT asked for
 * every time (two epoll_ctl calls a save): saver_flush writes everything a
 * loop turn queued at its end, in one write, and only output the socket
 * does not take waits for EPOLLOUT. */
static void hook_add_write(void *p) { saver_conn *sc = p; sc->want_write = true; }
static void hook_del_write(void *p)
{
    saver_conn *sc = p;
    sc->want_write = false;
    set_events(sc, sc->events & ~(uint32_t)EPOLLOUT);
}

/* The context is being freed (error, timeout, or ours): forget it. */
static void hook_cleanup(void *p)
{
    saver_conn *sc = p;
    set_events(sc, 0);
    if (sc->sv->conn == sc)
        sc->sv->conn = NULL;
    free(sc);
}

offset_saver *saver_new(const chunkd_config *cfg, int epfd, metrics *m)
{
    offset_saver *sv = calloc(1, sizeof *sv);
    if (sv) {
        sv->cfg = cfg;
        sv->epfd = epfd;
        sv->m = m;
    }
    return sv;
}

const char *saver_error(const offset_saver *sv)
{
    return sv->err;
}

const void *saver_event_tag(const offset_saver *sv)
{
    return sv;
}

/* Frees the connection; hiredis runs every waiting callback first. */
static void drop(offset_saver *sv, const char *why)
{
    if (!sv->conn)
        return;
    redisAsyncContext *ac = sv->conn->ac;
    snprintf(sv->err, sizeof sv->err, "redis, not waited for: %s", why);
    if (sv->waiting > 0)
        log_warn("event=redis_saver_dropped reason=\"%s\" waiting=%zu", why, sv->waiting);
    sv->conn = NULL; /* nothing new goes to it while it dies */
    redisAsyncFree(ac);
}

void saver_free(offset_saver *sv)
{
    if (!sv)
        return;
    sv->freeing = true; /* a done callback that sends again gets -1 */
    drop(sv, "shutting down");
    free(sv);
}

static void on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    saver_req *req = privdata;
    offset_saver *sv = req->sv;
    redisReply *reply = r;
    sv->waiting--;
    sv->quiet_since = util_mono_ms();
    metrics_observe_us(sv->m, H_REDIS, metrics_now_us() - req->sent_us);
    bool ok = false;
    long long v = 0;
    char why[256];
    if (!reply) {
        /* The connection failed or is being dropped: it is done for. */
        if (sv->conn && sv->conn->ac == ac)
            sv->conn = NULL;
        if (ac->err)
            snprintf(sv->err, sizeof sv->err, "redis, not waited for: %s", ac->errstr);
        else if (!sv->err[0])
            snprintf(sv->err, sizeof sv->err, "redis, not waited for: connection lost");
        snprintf(why, sizeof why, "%s", sv->err);
    } else if (reply->type == REDIS_REPLY_ERROR) {
        snprintf(why, sizeof why, "redis, not waited for: %s", reply->str);
    } else if (reply->type != REDIS_REPLY_INTEGER) {
        snprintf(why, sizeof why, "redis, not waited for: unexpected reply type %d", reply->type);
    } else {
        ok = true;
        v = reply->integer;
        why[0] = '\0';
    }
    if (!ok)
        metrics_add(sv->m, M_REDIS_ERRORS, 1);
    saver_done_fn done = req->done;
    void *arg = req->arg;
    free(req);
    sv->in_callback = true;
    done(arg, ok, v, why);
    sv->in_callback = false;
}

/* AUTH and SELECT: a failure shows in the saves that follow (NOAUTH). */
static void on_setup_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    (void)ac;
    redisReply *reply = r;
    if (reply && reply->type == REDIS_REPLY_ERROR)
        log_error("event=redis_saver_setup_failed step=%s error=\"%s\"", (const char *)privdata,
                  reply->str);
}

static int open_connection(offset_saver *sv)
{
    redisAsyncContext *ac = redisAsyncConnect(sv->cfg->redis_host, (int)sv->cfg->redis_port);
    if (!ac) {
        snprintf(sv->err, sizeof sv->err, "redis, not waited for: out of memory");
        return -1;
    }
    if (ac->err) {
        snprintf(sv->err, sizeof sv->err, "redis, not waited for: connect: %s", ac->errstr);
        redisAsyncFree(ac);
        return -1;
    }
    saver_conn *sc = calloc(1, sizeof *sc);
    if (!sc) {
        redisAsyncFree(ac);
        snprintf(sv->err, sizeof sv->err, "redis, not waited for: out of memory");
        return -1;
    }
    sc->sv = sv;
    sc->ac = ac;
    sc->fd = ac->c.fd;
    ac->ev.data = sc;
    ac->ev.addRead = hook_add_read;
    ac->ev.delRead = hook_del_read;
    ac->ev.addWrite = hook_add_write;
    ac->ev.delWrite = hook_del_write;
    ac->ev.cleanup = hook_cleanup;
    sv->conn = sc;
    sv->err[0] = '\0';
    /* Queued before any save, so Redis runs them first. */
    if ((sv->cfg->redis_password[0] &&
         redisAsyncCommand(ac, on_setup_reply, "AUTH", "AUTH %s", sv->cfg->redis_password) !=
             REDIS_OK) ||
        (sv->cfg->redis_db != 0 &&
         redisAsyncCommand(ac, on_setup_reply, "SELECT", "SELECT %lld",
                           (long long)sv->cfg->redis_db) != REDIS_OK)) {
        drop(sv, "could not queue AUTH/SELECT");
        return -1;
    }
    return 0;
}

int saver_send(offset_saver *sv, const char *cmd, size_t len, saver_done_fn done, void *arg)
{
    if (sv->freeing) {
        snprintf(sv->err, sizeof sv->err, "redis, not waited for: shutting down");
        return -1;
    }
    if (!sv->conn && open_connection(sv) != 0)
        return -1;
    saver_req *req = malloc(sizeof *req);
    if (!req) {
        snprintf(sv->err, sizeof sv->err, "redis, not waited for: out of memory");
        return -1;
    }
    *req = (saver_req){.sv = sv, .done = done, .arg = arg, .sent_us = metrics_now_us()};
    if (redisAsyncFormattedCommand(sv->conn->ac, on_reply, req, cmd, len) != REDIS_OK) {
        free(req);
        snprintf(sv->err, sizeof sv->err, "redis, not waited for: could not queue the command");
        return -1;
    }
    if (sv->waiting++ == 0)
        sv->quiet_since = util_mono_ms();
    return 0;
}

void saver_handle_event(offset_saver *sv, uint32_t events)
{
    saver_conn *sc = sv->conn;
    if (sc && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
        redisAsyncHandleWrite(sc->ac);
    /* The write may have failed and freed the connection (and a callback
     * opened another, which these events are not about). */
    if (sc && sv->conn == sc && (events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
        redisAsyncHandleRead(sc->ac);
}

void saver_flush(offset_saver *sv)
{
    saver_conn *sc = sv ? sv->conn : NULL;
    if (!sc || !sc->want_write || sv->in_callback)
        return;
    /* Also completes a connect in progress, or finds that it has not. */
    redisAsyncHandleWrite(sc->ac);
    /* A failed write frees the connection (hook_cleanup). */
    if (sv->conn == sc && sc->want_write)
        set_events(sc, sc->events | EPOLLOUT);
}

void saver_wait(offset_saver *sv, bool (*finished)(void *arg), void *arg)
{
    if (sv->in_callback) {
        /* Only reachable by a bug: a reply handler must not wait for
         * replies. Waiting here would re-enter hiredis. */
        log_error("event=saver_wait_in_callback");
        return;
    }
    int64_t start = util_mono_ms();
    while (!finished(arg) && sv->conn) {
        /* Every time: a reply's callback may have queued another save. */
        saver_flush(sv);
        if (!sv->conn)
            break;
        /* Redis is silent when nothing came for backend_timeout_ms: every
         * reply, to anyone's save, moves the deadline. */
        int64_t since = sv->quiet_since > start ? sv->quiet_since : start;
        int64_t left = since + sv->cfg->backend_timeout_ms - util_mono_ms();
        if (left <= 0) {
            drop(sv, "no reply in time");
            break;
        }
        struct pollfd pfd = {.fd = sv->conn->fd, .events = POLLIN};
        if (sv->conn->events & EPOLLOUT)
            pfd.events |= POLLOUT;
        int n = poll(&pfd, 1, (int)left);
        if (n < 0 && errno != EINTR) {
            drop(sv, strerror(errno));
            break;
        }
        if (n <= 0)
            continue;
        uint32_t ev = 0;
        if (pfd.revents & POLLIN)
            ev |= EPOLLIN;
        if (pfd.revents & POLLOUT)
            ev |= EPOLLOUT;
        if (pfd.revents & (POLLERR | POLLHUP | POLLNVAL))
            ev |= EPOLLERR;
        saver_handle_event(sv, ev);
    }
}

void saver_tick(offset_saver *sv, int64_t now_ms)
{
    if (sv->waiting > 0 && sv->conn && now_ms - sv->quiet_since > sv->cfg->backend_timeout_ms)
        drop(sv, "no reply in time");
}
