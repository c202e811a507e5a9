/* Admin HTTP endpoint: /health and /metrics. */
#include "chunkd/admin.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <mysql.h>

#include "chunkd/docstore_mysql.h"
#include "chunkd/log.h"
#include "chunkd/util.h"
#include "chunkd/metrics.h"
#include "chunkd/net.h"
#include "chunkd/state_redis.h"

enum { REQUEST_MAX = 4096, IO_TIMEOUT_MS = 2000 };

struct admin {
    const chunkd_config *cfg;
    const char *node_id;
    conn_limits *limits;
    int lfd;
    int stopfd;
    int port;
    pthread_t thread;
    redis_state *rs;
    docstore *ds;
};

static void respond(int fd, int code, const char *status, const char *type, const char *body,
                    size_t len)
{
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\nCache-Control: no-store\r\n\r\n",
                     code, status, type, len);
    if (n < 0 || (size_t)n >= sizeof head)
        return;
    /* Blocking sends bounded by SO_SNDTIMEO; a client that does not read
     * simply gets a cut answer. */
    if (send(fd, head, (size_t)n, MSG_NOSIGNAL) != n)
        return;
    size_t off = 0;
    while (off < len) {
        ssize_t w = send(fd, body + off, len - off, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        off += (size_t)w;
    }
}

static void serve_health(admin *a, int fd)
{
    char body[640];
    int n;
    if (rstate_ping(a->rs) != 0)
        n = snprintf(body, sizeof body, "unavailable: %s\n", rstate_error(a->rs));
    else if (docstore_ping(a->ds) != 0)
        n = snprintf(body, sizeof body, "unavailable: %s\n", docstore_error(a->ds));
    else {
        respond(fd, 200, "OK", "text/plain", "ok\n", 3);
        return;
    }
    respond(fd, 503, "Service Unavailable", "text/plain", body,
            n < 0 ? 0 : ((size_t)n < sizeof body ? (size_t)n : sizeof body - 1));
}

static void serve_metrics(admin *a, int fd)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) {
        respond(fd, 500, "Internal Server Error", "text/plain", "out of memory\n", 14);
        return;
    }
    int rc = metrics_write_prometheus(f, conn_limits_total(a->limits), a->node_id);
    if (fclose(f) != 0 || rc != 0 || !text) {
        respond(fd, 500, "Internal Server Error", "text/plain", "out of memory\n", 14);
    } else {
        respond(fd, 200, "OK", "text/plain; version=0.0.4", text, len);
    }
    free(text);
}

/* Reads the request head (bounded in size and time) and answers it. */
static void serve(admin *a, int fd)
{
    struct timeval tv = {.tv_sec = IO_TIMEOUT_MS / 1000, .tv_usec = (IO_TIMEOUT_MS % 1000) * 1000};
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0)
        return;
    char req[REQUEST_MAX + 1];
    size_t len = 0;
    while (len < REQUEST_MAX) {
        ssize_t n = recv(fd, req + len, REQUEST_MAX - len, 0);
        if (n <= 0)
            return; /* closed, timed out or failed: nothing to answer */
        len += (size_t)n;
        req[len] = '\0';
        if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n"))
            break;
    }
    req[len] = '\0';
    char method[8], path[128];
    if (sscanf(req, "%7s %127s HTTP/1.%*c", method, path) != 2) {
        respond(fd, 400, "Bad Request", "text/plain", "bad request\n", 12);
        return;
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        respond(fd, 405, "Method Not Allowed", "text/plain", "GET only\n", 9);
        return;
    }
    if (strcmp(path, "/health") == 0)
        serve_health(a, fd);
    else if (strcmp(path, "/metrics") == 0)
        serve_metrics(a, fd);
    else
        respond(fd, 404, "Not Found", "text/plain", "try /health or /metrics\n", 24);
}

static void *admin_main(void *arg)
{
    admin *a = arg;
    util_name_thread("chunkd-admin");
    if (mysql_thread_init() != 0)
        log_error("event=mysql_thread_init_failed thread=admin");
    struct pollfd pfd[2] = {{.fd = a->lfd, .events = POLLIN}, {.fd = a->stopfd, .events = POLLIN}};
    for (;;) {
        int n = poll(pfd, 2, -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 || pfd[1].revents)
            break;
        int fd = accept4(a->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE)
                poll(NULL, 0, 100); /* out of descriptors: back off, don't spin */
            continue;
        }
        serve(a, fd);
        close(fd);
    }
    /* The backend handles belong to this thread. */
    rstate_free(a->rs);
    a->rs = NULL;
    docstore_free(a->ds);
    a->ds = NULL;
    mysql_thread_end();
    return NULL;
}

admin *admin_start(const chunkd_config *cfg, const char *node_id, conn_limits *limits,
                   char *err, size_t errlen)
{
    admin *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "admin: out of memory");
        return NULL;
    }
    a->cfg = cfg;
    a->node_id = node_id;
    a->limits = limits;
    a->lfd = a->stopfd = -1;
    if (!cfg->admin_listen[0])
        return a;
    char host[CFG_STR_MAX];
    int port;
    if (config_split_hostport(cfg->admin_listen, host, sizeof host, &port) != 0) {
        snprintf(err, errlen, "admin_listen: '%s' is not host:port", cfg->admin_listen);
        goto fail;
    }
    a->lfd = net_listen(host, port, 64, err, errlen);
    if (a->lfd < 0)
        goto fail;
    a->port = net_local_port(a->lfd);
    a->stopfd = eventfd(0, EFD_CLOEXEC);
    a->rs = rstate_new(cfg);
    a->ds = docstore_new(cfg);
    if (a->stopfd < 0 || !a->rs || !a->ds) {
        snprintf(err, errlen, "admin: %s", a->stopfd < 0 ? strerror(errno) : "out of memory");
        goto fail;
    }
    int rc = pthread_create(&a->thread, NULL, admin_main, a);
    if (rc != 0) {
        snprintf(err, errlen, "admin: pthread_create: %s", strerror(rc));
        goto fail;
    }
    return a;
fail:
    rstate_free(a->rs);
    docstore_free(a->ds);
    if (a->lfd >= 0)
        close(a->lfd);
    if (a->stopfd >= 0)
        close(a->stopfd);
    free(a);
    return NULL;
}

int admin_port(const admin *a)
{
    return a ? a->port : 0;
}

void admin_stop(admin *a)
{
    if (!a)
        return;
    if (a->stopfd >= 0) {
        uint64_t one = 1;
        if (write(a->stopfd, &one, sizeof one) < 0)
            log_error("event=admin_stop_failed error=\"%s\"", strerror(errno));
        int rc = pthread_join(a->thread, NULL);
        if (rc != 0)
            log_error("event=admin_join_failed error=\"%s\"", strerror(rc));
        close(a->stopfd);
    }
    if (a->lfd >= 0)
        close(a->lfd);
    free(a);
}
