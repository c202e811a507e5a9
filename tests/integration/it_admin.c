/* The admin endpoint: /health follows the backends, /metrics counts what
 * the server did, anything else is refused. */
#include "harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static it_server srv;
static it_user u1;
static int admin_port;

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

/* Starts a chunkd with an admin port; extra_env may point Redis elsewhere. */
static int start_with_admin(it_server *s, int *port, const char *const *env)
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

static int group_setup(void **state)
{
    (void)state;
    if (it_init("it_admin") != 0 || it_user_create(&u1) != 0)
        return -1;
    return start_with_admin(&srv, &admin_port, NULL);
}

static int group_teardown(void **state)
{
    (void)state;
    it_server_stop(&srv);
    it_shutdown();
    return 0;
}

static int test_setup(void **state)
{
    (void)state;
    it_test_begin(&srv);
    return 0;
}

static int test_teardown(void **state)
{
    (void)state;
    it_test_end(&srv);
    return 0;
}

/* One HTTP request; returns the status code and the body (malloc'd). */
static int http_get(int port, const char *path, char **body)
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
    free(buf);
    return code;
}

/* The value of a sample line "name{labels} value" whose name and labels
 * start with `prefix`. */
static long long sample(const char *text, const char *prefix)
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

static void test_health_ok(void **state)
{
    (void)state;
    char *body = NULL;
    assert_int_equal(http_get(admin_port, "/health", &body), 200);
    assert_string_equal(body, "ok\n");
    free(body);
    assert_int_equal(http_get(admin_port, "/nope", &body), 404);
    free(body);
    it_pass();
}

static void test_metrics_count_uploads(void **state)
{
    (void)state;
    char *before = NULL, *after = NULL;
    assert_int_equal(http_get(admin_port, "/metrics", &before), 200);
    long long started0 = sample(before, "chunkd_uploads_started_total{");
    long long bytes0 = sample(before, "chunkd_bytes_received_total{");

    it_sock s;
    assert_int_equal(it_sock_connect(&s, srv.port), 0);
    it_sock_auth(&s, &u1);
    int64_t id = it_sock_upload(&s, "m.bin", 3000);
    it_sock_chunk_ok(&s, id, 0, NULL, 3000);
    char line[128];
    it_line(line, sizeof line, "{\"action\":\"upload_complete\",\"document_id\":%lld}",
            (long long)id);
    json_t *r = it_sock_req(&s, line);
    assert_string_equal(it_json_str(r, "status"), "SUCCESS");
    json_decref(r);
    int64_t id2 = it_sock_upload(&s, "n.bin", 10);
    it_line(line, sizeof line, "{\"action\":\"abort\",\"document_id\":%lld}", (long long)id2);
    r = it_sock_req(&s, line);
    it_assert_ok(r, "abort");
    json_decref(r);
    it_assert_open(&s);

    assert_int_equal(http_get(admin_port, "/metrics", &after), 200);
    assert_int_equal(sample(after, "chunkd_uploads_started_total{") - started0, 2);
    assert_int_equal(sample(after, "chunkd_bytes_received_total{") - bytes0, 3000);
    assert_true(sample(after, "chunkd_uploads_completed_total{") >= 1);
    char aborted[256];
    snprintf(aborted, sizeof aborted, "chunkd_uploads_failed_total{node=\"%s\",reason=\"aborted\"}",
             srv.node_id);
    assert_true(sample(after, aborted) >= 1);
    /* One connection is open right now (ours). */
    assert_true(sample(after, "chunkd_connections{") >= 1);
    assert_true(sample(after, "chunkd_fsync_seconds_count{") >= 1);
    assert_non_null(strstr(after, "# TYPE chunkd_chunk_write_seconds histogram"));
    it_sock_close(&s);
    free(before);
    free(after);
    it_pass();
}

static void test_health_follows_redis(void **state)
{
    (void)state;
    /* A Redis port where nothing listens. */
    int hold = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(hold >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(hold, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t len = sizeof sa;
    assert_int_equal(getsockname(hold, (struct sockaddr *)&sa, &len), 0);
    char env_entry[64];
    snprintf(env_entry, sizeof env_entry, "CHUNKD_REDIS_PORT=%d", ntohs(sa.sin_port));
    const char *env[] = {env_entry, NULL};
    it_server down;
    memset(&down, 0, sizeof down);
    int port = 0;
    assert_int_equal(start_with_admin(&down, &port, env), 0);
    char *body = NULL;
    int code = http_get(port, "/health", &body);
    it_server_stop(&down);
    close(hold);
    assert_int_equal(code, 503);
    assert_non_null(strstr(body, "redis"));
    free(body);
    it_pass();
}

static void test_server_stops_cleanly(void **state)
{
    (void)state;
    it_assert_server_stops_cleanly(&srv);
    it_pass();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_health_ok, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_metrics_count_uploads, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_health_follows_redis, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_server_stops_cleanly, test_setup, test_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
