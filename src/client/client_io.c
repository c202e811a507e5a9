/* Socket plumbing for the chunkup client: connect with a deadline, poll-based
 * reads and writes on a non-blocking socket, and a bounded line buffer. */
#include "client_io.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define INITIAL_BUF 65536

void cu_err_clear(cu_error *err)
{
    err->code = 0;
    err->reason[0] = '\0';
    err->message[0] = '\0';
    err->expected_offset = -1;
    err->retry_after_ms = 0;
}

void cu_err_set(cu_error *err, int code, const char *reason, const char *fmt, ...)
{
    va_list ap;

    err->code = code;
    snprintf(err->reason, sizeof err->reason, "%s", reason);
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    err->expected_offset = -1;
    err->retry_after_ms = 0;
}

void cu_err_from_reply(const json_t *reply, cu_error *err)
{
    json_t *code = json_object_get(reply, "code");
    json_t *reason = json_object_get(reply, "reason");
    json_t *message = json_object_get(reply, "message");
    json_t *expected = json_object_get(reply, "expected_offset");
    json_int_t n = json_is_integer(code) ? json_integer_value(code) : 0;

    /* A code outside 100..599 would be mistaken for a local failure (0) or
     * map to no exit status; 500 keeps it a server-side error. */
    if (n < 100 || n > 599)
        n = 500;
    cu_err_set(err, (int)n, json_is_string(reason) ? json_string_value(reason) : "unknown",
               "%s", json_is_string(message) ? json_string_value(message) : "");
    if (json_is_integer(expected))
        err->expected_offset = json_integer_value(expected);
    json_t *retry = json_object_get(reply, "retry_after_ms");
    if (json_is_integer(retry) && json_integer_value(retry) > 0)
        err->retry_after_ms = json_integer_value(retry);
}

int64_t cu_now_ms(void)
{
    struct timespec ts;

    /* CLOCK_MONOTONIC cannot fail with a valid clock id and pointer. */
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int cu_io_check(cu_conn *c, cu_error *err)
{
    if (c == NULL) {
        cu_err_set(err, 0, "io", "no connection");
        return -1;
    }
    if (c->broken) {
        cu_err_set(err, 0, "io", "connection is out of step after an earlier failure; reconnect");
        return -1;
    }
    return 0;
}

static int remaining_ms(int64_t deadline)
{
    int64_t left;

    if (deadline < 0)
        return -1;
    left = deadline - cu_now_ms();
    if (left < 0)
        return 0;
    return left > 1000000 ? 1000000 : (int)left;
}

int cu_io_poll(cu_conn *c, short events, int timeout_ms, short *revents, cu_error *err)
{
    int64_t deadline = timeout_ms < 0 ? -1 : cu_now_ms() + timeout_ms;

    for (;;) {
        struct pollfd p = { .fd = c->fd, .events = events, .revents = 0 };
        int n = poll(&p, 1, remaining_ms(deadline));

        if (n > 0) {
            *revents = p.revents;
            return 1;
        }
        if (n == 0)
            return 0;
        if (errno != EINTR) {
            cu_err_set(err, 0, "io", "poll: %s", strerror(errno));
            c->broken = true;
            return -1;
        }
    }
}

static int set_nonblocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);

    if (flags < 0)
        return -1;
    return fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

/* Connects one address with a deadline. Returns the socket or -1 with errno. */
static int connect_one(const struct addrinfo *ai, int64_t deadline)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    int one = 1;
    int saved;

    if (fd < 0)
        return -1;
    if (set_nonblocking(fd) < 0)
        goto fail;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        struct pollfd p = { .fd = fd, .events = POLLOUT, .revents = 0 };
        int soerr = 0;
        socklen_t len = sizeof soerr;
        int n;

        if (errno != EINPROGRESS)
            goto fail;
        do {
            n = poll(&p, 1, remaining_ms(deadline));
        } while (n < 0 && errno == EINTR);
        if (n < 0)
            goto fail;
        if (n == 0) {
            errno = ETIMEDOUT;
            goto fail;
        }
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
            goto fail;
        if (soerr != 0) {
            errno = soerr;
            goto fail;
        }
    }
    /* Control lines are small and each answer gates the next step; Nagle
     * would hold them back waiting for an ACK. */
    if (ai->ai_family == AF_INET || ai->ai_family == AF_INET6) {
        if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
            goto fail;
    }
    return fd;
fail:
    saved = errno;
    close(fd);
    errno = saved;
    return -1;
}

cu_conn *cu_connect(const char *host, const char *port, int timeout_ms, cu_error *err)
{
    cu_error scratch;
    struct addrinfo hints, *list = NULL;
    int64_t deadline = timeout_ms > 0 ? cu_now_ms() + timeout_ms : -1;
    int last_errno = 0;
    int fd = -1;
    int rc;
    cu_conn *c;

    if (err == NULL)
        err = &scratch;
    cu_err_clear(err);
    if (host == NULL || port == NULL) {
        cu_err_set(err, 0, "connect", "host and port are required");
        return NULL;
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    rc = getaddrinfo(host, port, &hints, &list);
    if (rc != 0) {
        cu_err_set(err, 0, "connect", "cannot resolve %s:%s: %s", host, port,
                   rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
        return NULL;
    }
    for (const struct addrinfo *ai = list; ai != NULL && fd < 0; ai = ai->ai_next) {
        fd = connect_one(ai, deadline);
        if (fd < 0)
            last_errno = errno;
    }
    freeaddrinfo(list);
    if (fd < 0) {
        cu_err_set(err, 0, "connect", "cannot connect to %s:%s: %s", host, port,
                   strerror(last_errno ? last_errno : EHOSTUNREACH));
        return NULL;
    }
    c = calloc(1, sizeof *c);
    if (c != NULL)
        c->buf = malloc(INITIAL_BUF);
    if (c == NULL || c->buf == NULL) {
        free(c);
        close(fd);
        cu_err_set(err, 0, "connect", "out of memory");
        return NULL;
    }
    c->fd = fd;
    c->timeout_ms = timeout_ms;
    c->cap = INITIAL_BUF;
    return c;
}

void cu_close(cu_conn *c)
{
    if (c == NULL)
        return;
    /* Nothing useful to do if close fails: the descriptor is gone either way. */
    (void)close(c->fd);
    free(c->buf);
    free(c);
}

cu_io_result cu_io_fill(cu_conn *c, cu_error *err)
{
    ssize_t n;

    if (c->pos > 0) {
        memmove(c->buf, c->buf + c->pos, c->len - c->pos);
        c->len -= c->pos;
        c->pos = 0;
    }
    if (c->len == c->cap) {
        size_t ncap = c->cap * 2;
        char *nbuf;

        if (c->cap >= CU_MAX_LINE) {
            cu_err_set(err, 0, "protocol", "answer line longer than %zu bytes", CU_MAX_LINE);
            c->broken = true;
            return CU_IO_ERROR;
        }
        if (ncap > CU_MAX_LINE)
            ncap = CU_MAX_LINE;
        nbuf = realloc(c->buf, ncap);
        if (nbuf == NULL) {
            cu_err_set(err, 0, "io", "out of memory for an answer line");
            c->broken = true;
            return CU_IO_ERROR;
        }
        c->buf = nbuf;
        c->cap = ncap;
    }
    do {
        n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
    } while (n < 0 && errno == EINTR);
    if (n > 0) {
        c->len += (size_t)n;
        return CU_IO_OK;
    }
    if (n == 0) {
        c->broken = true;
        return CU_IO_EOF;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        return CU_IO_AGAIN;
    cu_err_set(err, 0, "io", "receive: %s", strerror(errno));
    c->broken = true;
    return CU_IO_ERROR;
}

char *cu_io_take_line(cu_conn *c, size_t *len)
{
    char *start = c->buf + c->pos;
    size_t avail = c->len - c->pos;
    char *nl;

    if (c->scanned >= avail)
        return NULL;
    nl = memchr(start + c->scanned, '\n', avail - c->scanned);
    if (nl == NULL) {
        c->scanned = avail;
        return NULL;
    }
    *nl = '\0';
    *len = (size_t)(nl - start);
    c->pos += *len + 1;
    c->scanned = 0;
    return start;
}

cu_io_result cu_io_send_some(cu_conn *c, const void *p, size_t n, size_t *sent, cu_error *err)
{
    ssize_t w;

    *sent = 0;
    do {
        /* MSG_NOSIGNAL: a server that went away must give us EPIPE, not
         * kill the process with SIGPIPE. */
        w = send(c->fd, p, n, MSG_NOSIGNAL);
    } while (w < 0 && errno == EINTR);
    if (w >= 0) {
        *sent = (size_t)w;
        return CU_IO_OK;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        return CU_IO_AGAIN;
    cu_err_set(err, 0, "io", "send: %s", strerror(errno));
    c->broken = true;
    return CU_IO_ERROR;
}

int cu_io_send_all(cu_conn *c, const void *p, size_t n, cu_error *err)
{
    const char *at = p;

    while (n > 0) {
        size_t sent;
        short rev;
        int r;

        switch (cu_io_send_some(c, at, n, &sent, err)) {
        case CU_IO_OK:
            at += sent;
            n -= sent;
            continue;
        case CU_IO_AGAIN:
            break;
        default:
            return -1;
        }
        r = cu_io_poll(c, POLLOUT, c->timeout_ms > 0 ? c->timeout_ms : -1, &rev, err);
        if (r < 0)
            return -1;
        if (r == 0) {
            cu_err_set(err, 0, "timeout", "no progress sending to the server for %d ms",
                       c->timeout_ms);
            c->broken = true;
            return -1;
        }
    }
    return 0;
}

int cu_io_read_line(cu_conn *c, char **line, size_t *len, cu_error *err)
{
    int64_t deadline = c->timeout_ms > 0 ? cu_now_ms() + c->timeout_ms : -1;

    for (;;) {
        short rev;
        int r;

        *line = cu_io_take_line(c, len);
        if (*line != NULL)
            return 0;
        switch (cu_io_fill(c, err)) {
        case CU_IO_OK:
            continue;
        case CU_IO_AGAIN:
            break;
        case CU_IO_EOF:
            cu_err_set(err, 0, "io", "server closed the connection");
            return -1;
        default:
            return -1;
        }
        r = cu_io_poll(c, POLLIN, remaining_ms(deadline), &rev, err);
        if (r < 0)
            return -1;
        if (r == 0) {
            cu_err_set(err, 0, "timeout", "no answer from the server within %d ms",
                       c->timeout_ms);
            c->broken = true;
            return -1;
        }
    }
}

int cu_parse_reply(const char *line, size_t len, json_t **out, cu_error *err)
{
    json_error_t jerr;
    json_t *v = json_loadb(line, len, 0, &jerr);

    *out = NULL;
    if (v == NULL) {
        cu_err_set(err, 0, "protocol", "answer is not JSON: %s", jerr.text);
        return -1;
    }
    if (!json_is_object(v)) {
        json_decref(v);
        cu_err_set(err, 0, "protocol", "answer is not a JSON object");
        return -1;
    }
    *out = v;
    return 0;
}

int cu_send_raw(cu_conn *c, const void *buf, size_t len, cu_error *err)
{
    cu_error scratch;

    if (err == NULL)
        err = &scratch;
    cu_err_clear(err);
    if (cu_io_check(c, err) < 0)
        return -1;
    return cu_io_send_all(c, buf, len, err);
}

int cu_read_reply(cu_conn *c, json_t **reply, cu_error *err)
{
    cu_error scratch;
    char *line;
    size_t len;

    if (err == NULL)
        err = &scratch;
    cu_err_clear(err);
    *reply = NULL;
    if (cu_io_check(c, err) < 0)
        return -1;
    if (cu_io_read_line(c, &line, &len, err) < 0)
        return -1;
    if (cu_parse_reply(line, len, reply, err) < 0) {
        c->broken = true;
        return -1;
    }
    return 0;
}
