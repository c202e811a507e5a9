/* Loopback test peer: see test_client_peer.h. */
#include "test_client_peer.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static void *accept_loop(void *arg)
{
    peer *p = arg;

    for (;;) {
        struct timeval tv = { .tv_sec = 10, .tv_usec = 0 };
        int fd = accept(p->lfd, NULL, NULL);

        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            /* shutdown() of the listener by peer_stop lands here. */
            return NULL;
        }
        p->connections++;
        if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0)
            peer_fail(p, "SO_RCVTIMEO: %s", strerror(errno));
        p->serve(p, fd);
        close(fd);
    }
}

/* port "" or "0": any free port; the bound one is written back. */
static int bound_listener(char port[16], int backlog)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((unsigned short)strtoul(port, NULL, 10));
    /* Rebinding a restarted peer's port despite its old TIME_WAIT sockets. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, backlog) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        close(fd);
        return -1;
    }
    snprintf(port, 16, "%u", (unsigned)ntohs(a.sin_port));
    return fd;
}

int peer_start(peer *p, peer_serve_fn serve, void *ctx)
{
    return peer_start_on(p, serve, ctx, "0");
}

int peer_start_on(peer *p, peer_serve_fn serve, void *ctx, const char *port)
{
    memset(p, 0, sizeof *p);
    p->serve = serve;
    p->ctx = ctx;
    snprintf(p->port, sizeof p->port, "%s", port);
    p->lfd = bound_listener(p->port, 16);
    if (p->lfd < 0)
        return -1;
    if (pthread_create(&p->thread, NULL, accept_loop, p) != 0) {
        close(p->lfd);
        return -1;
    }
    return 0;
}

void peer_stop(peer *p)
{
    shutdown(p->lfd, SHUT_RDWR);
    pthread_join(p->thread, NULL);
    close(p->lfd);
}

void peer_fail(peer *p, const char *fmt, ...)
{
    va_list ap;

    if (p->failure[0] != '\0')
        return;
    va_start(ap, fmt);
    vsnprintf(p->failure, sizeof p->failure, fmt, ap);
    va_end(ap);
}

int peer_read_exact(int fd, void *buf, size_t n)
{
    char *at = buf;

    while (n > 0) {
        ssize_t r = read(fd, at, n);

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        at += r;
        n -= (size_t)r;
    }
    return 0;
}

int peer_read_line(int fd, char *buf, size_t cap)
{
    size_t len = 0;

    /* Byte by byte: slow, but never reads past the line into chunk bytes. */
    while (len + 1 < cap) {
        if (peer_read_exact(fd, buf + len, 1) < 0)
            return -1;
        if (buf[len] == '\n') {
            buf[len] = '\0';
            return (int)len;
        }
        len++;
    }
    return -1;
}

int peer_write(int fd, const void *buf, size_t n)
{
    const char *at = buf;

    while (n > 0) {
        ssize_t w = send(fd, at, n, MSG_NOSIGNAL);

        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        at += w;
        n -= (size_t)w;
    }
    return 0;
}

int peer_write_str(int fd, const char *s)
{
    return peer_write(fd, s, strlen(s));
}

json_t *peer_read_json(int fd)
{
    char line[65536];
    json_t *v;

    if (peer_read_line(fd, line, sizeof line) < 0)
        return NULL;
    v = json_loads(line, 0, NULL);
    if (v != NULL && !json_is_object(v)) {
        json_decref(v);
        return NULL;
    }
    return v;
}

int peer_send_json(int fd, json_t *obj)
{
    char *text;
    int rc;

    if (obj == NULL)
        return -1;
    text = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (text == NULL)
        return -1;
    rc = peer_write_str(fd, text);
    if (rc == 0)
        rc = peer_write_str(fd, "\n");
    free(text);
    return rc;
}

void peer_dead_port(char port[16])
{
    int fd;

    port[0] = '\0';
    fd = bound_listener(port, 1);

    /* Closed right away: the port is free and nothing listens on it. */
    if (fd >= 0)
        close(fd);
}
