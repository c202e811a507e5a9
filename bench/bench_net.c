/* Socket helpers shared by the benchmark's load generator and sink. */
#include "bench_net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int bn_parse_addr(const char *hostport, struct sockaddr_storage *out, socklen_t *len, char *err,
                  size_t errlen)
{
    const char *colon = strrchr(hostport, ':');
    if (!colon || colon == hostport) {
        snprintf(err, errlen, "'%s' is not HOST:PORT", hostport);
        return -1;
    }
    char host[64];
    size_t hl = (size_t)(colon - hostport);
    if (hl >= sizeof host) {
        snprintf(err, errlen, "host in '%s' is too long", hostport);
        return -1;
    }
    memcpy(host, hostport, hl);
    host[hl] = '\0';
    char *end = NULL;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (errno != 0 || end == colon + 1 || *end != '\0' || port < 0 || port > 65535) {
        snprintf(err, errlen, "port in '%s' is not 0 to 65535", hostport);
        return -1;
    }
    struct sockaddr_in *sin = (struct sockaddr_in *)out;
    memset(out, 0, sizeof *out);
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)port);
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof host, "127.0.0.1");
    if (inet_pton(AF_INET, host, &sin->sin_addr) != 1) {
        snprintf(err, errlen, "'%s' is not an IPv4 address", host);
        return -1;
    }
    *len = sizeof *sin;
    return 0;
}

int bn_listen(const char *hostport, int *port, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t len = 0;
    if (bn_parse_addr(hostport, &ss, &len, err, errlen) != 0)
        return -1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, SOMAXCONN) != 0) {
        snprintf(err, errlen, "listen on %s: %s", hostport, strerror(errno));
        close(fd);
        return -1;
    }
    struct sockaddr_in bound;
    socklen_t blen = sizeof bound;
    if (getsockname(fd, (struct sockaddr *)&bound, &blen) != 0) {
        snprintf(err, errlen, "getsockname: %s", strerror(errno));
        close(fd);
        return -1;
    }
    *port = ntohs(bound.sin_port);
    return fd;
}

int bn_write_ready_file(const char *file, int port, char *err, size_t errlen)
{
    char tmp[PATH_MAX];
    int n = snprintf(tmp, sizeof tmp, "%s.tmp", file);
    if (n < 0 || (size_t)n >= sizeof tmp) {
        snprintf(err, errlen, "ready file name too long");
        return -1;
    }
    FILE *f = fopen(tmp, "w");
    if (!f) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        return -1;
    }
    int wrc = fprintf(f, "%d\n", port);
    if (fclose(f) != 0 || wrc < 0 || rename(tmp, file) != 0) {
        snprintf(err, errlen, "%s: %s", file, strerror(errno));
        return -1;
    }
    return 0;
}

int bn_connect_start(const struct sockaddr_storage *addr, socklen_t len)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    /* Control lines and small answers must not wait for Nagle. */
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    if (connect(fd, (const struct sockaddr *)addr, len) != 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}
