/* The admin endpoint from a test's side: a chunkd with --admin-listen, plain
 * HTTP GETs, and Prometheus samples. */
#include "harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

/* A port that was free a moment ago. */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t len = sizeof sa;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

int it_server_start_admin(it_server *s, int *port, const char *const *env)
{
    static char listen[64];
    for (int attempt = 0; attempt < 5; attempt++) {
        *port = free_port();
        snprintf(listen, sizeof listen, "127.0.0.1:%d", *port);
        const char *args[] = {"--admin-listen", listen, "--workers", "1", NULL};
        it_server_opts o = {.args = args, .env = env};
        if (it_server_start(s, &o) == 0)
            return 0; /* else the port was taken meanwhile: try another */
    }
    return -1;
}

long long it_admin_metric(int port, const char *prefix)
{
    char *body = NULL;
    assert_int_equal(it_http_get(port, "/metrics", &body), 200);
    long long v = it_metric(body, prefix);
    free(body);
    return v;
}

int it_http_get(int port, const char *path, char **body)
{
    it_sock s;
    assert_int_equal(it_sock_connect(&s, port), 0);
    char req[256];
    it_line(req, sizeof req, "GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n", path);
    assert_int_equal(it_sock_send_str(&s, req), 0);
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap + 1);
    assert_non_null(buf);
    int64_t deadline = it_now_ms() + IT_REPLY_TIMEOUT_MS;
    for (;;) { /* bounded by the deadline and the buffer */
        assert_true(it_now_ms() < deadline && len < cap);
        ssize_t n = recv(s.fd, buf + len, cap - len, 0);
        if (n == 0)
            break; /* Connection: close */
        assert_true(n > 0);
        len += (size_t)n;
    }
    buf[len] = '\0';
    it_sock_close(&s);
    int code = 0;
    assert_int_equal(sscanf(buf, "HTTP/1.1 %d", &code), 1);
    char *sep = strstr(buf, "\r\n\r\n");
    assert_non_null(sep);
    *body = strdup(sep + 4);
    assert_non_null(*body);
    free(buf);
    return code;
}

long long it_metric(const char *text, const char *prefix)
{
    const char *p = text;
    while ((p = strstr(p, prefix)) != NULL) {
        if (p == text || p[-1] == '\n') {
            const char *sp = strchr(p, ' ');
            assert_non_null(sp);
            return strtoll(sp + 1, NULL, 10);
        }
        p++;
    }
    fail_msg("no sample %s in:\n%s", prefix, text);
    return -1;
}
