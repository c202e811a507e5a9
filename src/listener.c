/* Acceptor thread. */
#include "chunkd/listener.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "chunkd/log.h"
#include "chunkd/msg.h"
#include "chunkd/net.h"
#include "chunkd/util.h"

struct listener {
    int lfd;
    int stopfd;
    int sparefd;          /* held open so EMFILE can be answered, see accept_one */
    worker **workers;
    int nworkers;
    int next;
    const chunkd_config *cfg;
    conn_limits *limits;
    pthread_t thread;
    int64_t last_full_log_ms;
};

static void refuse(int fd, const char *reason, const char *message)
{
    msg_error err;
    msg_fail(&err, 503, reason, "%s", message);
    json_t *j = msg_error_json(&err);
    size_t len = 0;
    char *line = j ? msg_dump_line(j, &len) : NULL;
    json_decref(j);
    /* A fresh socket's send buffer takes one short line without blocking. */
    if (line && send(fd, line, len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
        log_debug("event=refusal_not_sent error=\"%s\"", strerror(errno));
    free(line);
    close(fd);
}

/* Out of descriptors: accepting is impossible, and leaving the connection in
 * the backlog makes poll() spin. Give up the spare descriptor, accept and
 * close the connection, then take the spare back. */
static void shed_on_emfile(listener *l)
{
    int64_t now = util_mono_ms();
    if (now - l->last_full_log_ms > 1000) {
        log_warn("event=accept_emfile action=shedding");
        l->last_full_log_ms = now;
    }
    if (l->sparefd >= 0) {
        close(l->sparefd);
        l->sparefd = -1;
    }
    int fd = accept4(l->lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd >= 0)
        refuse(fd, "too_many_connections", "the server is out of file descriptors");
    l->sparefd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

/* Returns false when there is nothing more to accept right now. */
static bool accept_one(listener *l)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int fd = accept4(l->lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE) {
            shed_on_emfile(l);
            return true;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
            errno != ECONNABORTED)
            log_warn("event=accept_failed error=\"%s\"", strerror(errno));
        return errno == EINTR || errno == ECONNABORTED;
    }
    char peer[64], ip[CONN_IP_MAX];
    net_format_peer((struct sockaddr *)&ss, sl, peer, sizeof peer);
    net_format_ip((struct sockaddr *)&ss, sl, ip, sizeof ip);
    conn_admit admit = conn_limits_take(l->limits, ip);
    if (admit != CONN_ADMITTED) {
        bool per_ip = admit == CONN_IP_FULL;
        log_warn("event=connection_refused peer=%s reason=%s limit=%lld", peer,
                 per_ip ? "max_connections_per_ip" : "max_connections",
                 (long long)(per_ip ? l->cfg->max_connections_per_ip : l->cfg->max_connections));
        refuse(fd, "too_many_connections",
               per_ip ? "too many connections from this address, retry later"
                      : "the server has too many connections, retry later");
        return true;
    }
    if (net_set_nodelay(fd) != 0)
        log_debug("event=nodelay_failed peer=%s error=\"%s\"", peer, strerror(errno));
    worker *w = l->workers[l->next];
    l->next = (l->next + 1) % l->nworkers;
    if (worker_dispatch(w, fd, ip, peer) != 0) {
        conn_limits_give(l->limits, ip);
        refuse(fd, "unavailable", "the server is out of memory");
    }
    return true;
}

static void *listener_main(void *arg)
{
    listener *l = arg;
    util_name_thread("chunkd-accept");
    struct pollfd pfd[2] = {{.fd = l->lfd, .events = POLLIN}, {.fd = l->stopfd, .events = POLLIN}};
    for (;;) {
        int n = poll(pfd, 2, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            log_error("event=listener_poll_failed error=\"%s\"", strerror(errno));
            break;
        }
        if (pfd[1].revents)
            break;
        if (pfd[0].revents & POLLIN) {
            /* Bounded batch, then look at the stop descriptor again. */
            for (int i = 0; i < 64 && accept_one(l); i++)
                ;
        }
    }
    return NULL;
}

listener *listener_start(int lfd, worker **workers, int nworkers, const chunkd_config *cfg,
                         conn_limits *limits, char *err, size_t errlen)
{
    listener *l = calloc(1, sizeof *l);
    if (!l) {
        snprintf(err, errlen, "listener: out of memory");
        return NULL;
    }
    l->lfd = lfd;
    l->workers = workers;
    l->nworkers = nworkers;
    l->cfg = cfg;
    l->limits = limits;
    l->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    l->sparefd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int flags = fcntl(lfd, F_GETFL);
    if (l->stopfd < 0 || l->sparefd < 0 || flags < 0 ||
        fcntl(lfd, F_SETFL, flags | O_NONBLOCK) != 0) {
        snprintf(err, errlen, "listener: %s", strerror(errno));
        goto fail;
    }
    int rc = pthread_create(&l->thread, NULL, listener_main, l);
    if (rc != 0) {
        snprintf(err, errlen, "listener: pthread_create: %s", strerror(rc));
        goto fail;
    }
    return l;
fail:
    if (l->stopfd >= 0)
        close(l->stopfd);
    if (l->sparefd >= 0)
        close(l->sparefd);
    free(l);
    return NULL;
}

void listener_stop(listener *l)
{
    if (!l)
        return;
    uint64_t one = 1;
    if (write(l->stopfd, &one, sizeof one) < 0)
        log_error("event=listener_stop_failed error=\"%s\"", strerror(errno));
    int rc = pthread_join(l->thread, NULL);
    if (rc != 0)
        log_error("event=listener_join_failed error=\"%s\"", strerror(rc));
    close(l->lfd);
    close(l->stopfd);
    if (l->sparefd >= 0)
        close(l->sparefd);
    free(l);
}
