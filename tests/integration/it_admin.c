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

static int group_setup(void **state)
{
    (void)state;
    it_fixture_server(&srv);
    if (it_init("it_admin") != 0 || it_user_create(&u1) != 0)
        return -1;
    return it_server_start_admin(&srv, &admin_port, NULL);
}

static void test_health_ok(void **state)
{
    (void)state;
    char *body = NULL;
    assert_int_equal(it_http_get(admin_port, "/health", &body), 200);
    assert_string_equal(body, "ok\n");
    free(body);
    assert_int_equal(it_http_get(admin_port, "/nope", &body), 404);
    free(body);
    it_pass();
}

static void test_metrics_count_uploads(void **state)
{
    (void)state;
    char *before = NULL, *after = NULL;
    assert_int_equal(it_http_get(admin_port, "/metrics", &before), 200);
    long long started0 = it_metric(before, "chunkd_uploads_started_total{");
    long long bytes0 = it_metric(before, "chunkd_bytes_received_total{");

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

    assert_int_equal(it_http_get(admin_port, "/metrics", &after), 200);
    assert_int_equal(it_metric(after, "chunkd_uploads_started_total{") - started0, 2);
    assert_int_equal(it_metric(after, "chunkd_bytes_received_total{") - bytes0, 3000);
    assert_true(it_metric(after, "chunkd_uploads_completed_total{") >= 1);
    char aborted[256];
    snprintf(aborted, sizeof aborted, "chunkd_uploads_failed_total{node=\"%s\",reason=\"aborted\"}",
             srv.node_id);
    assert_true(it_metric(after, aborted) >= 1);
    /* One connection is open right now (ours). */
    assert_true(it_metric(after, "chunkd_connections{") >= 1);
    assert_true(it_metric(after, "chunkd_fsync_seconds_count{") >= 1);
    assert_non_null(strstr(after, "# TYPE chunkd_chunk_write_seconds histogram"));
    it_sock_close(&s);
    free(before);
    free(after);
    it_pass();
}

/* A server whose `down` backend (its port setting env_key points where
 * nothing listens) cannot be reached: /health says so, and each worker,
 * connecting at start, logged which one it could not reach, and not the
 * other, `up`. */
static void check_backend_down(const char *env_key, const char *down, const char *up)
{
    int hold = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(hold >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(hold, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t len = sizeof sa;
    assert_int_equal(getsockname(hold, (struct sockaddr *)&sa, &len), 0);
    char env_entry[64];
    snprintf(env_entry, sizeof env_entry, "%s=%d", env_key, ntohs(sa.sin_port));
    const char *env[] = {env_entry, NULL};
    it_server srv_down;
    memset(&srv_down, 0, sizeof srv_down);
    int port = 0;
    assert_int_equal(it_server_start_admin(&srv_down, &port, env), 0);
    char *body = NULL;
    int code = it_http_get(port, "/health", &body);
    char said_line[128], other[32];
    snprintf(said_line, sizeof said_line, "event=backend_unavailable backend=%s worker=0", down);
    snprintf(other, sizeof other, "backend=%s", up);
    bool said = it_wait_file_tail_has(srv_down.log_path, said_line, 65536, 5000);
    bool other_blamed = !it_file_tail_lacks(srv_down.log_path, other, 65536) ||
                        strstr(body ? body : "", up) != NULL;
    it_server_stop(&srv_down);
    close(hold);
    assert_int_equal(code, 503);
    assert_non_null(strstr(body, down));
    assert_true(said);
    assert_false(other_blamed);
    free(body);
}

static void test_health_follows_redis(void **state)
{
    (void)state;
    check_backend_down("CHUNKD_REDIS_PORT", "redis", "mysql");
    it_pass();
}

static void test_health_follows_mysql(void **state)
{
    (void)state;
    check_backend_down("CHUNKD_MYSQL_PORT", "mysql", "redis");
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
        IT_FIXTURE_TEST(test_health_ok),
        IT_FIXTURE_TEST(test_metrics_count_uploads),
        IT_FIXTURE_TEST(test_health_follows_redis),
        IT_FIXTURE_TEST(test_health_follows_mysql),
        IT_FIXTURE_TEST(test_server_stops_cleanly),
    };
    return cmocka_run_group_tests(tests, group_setup, it_fixture_group_teardown);
}
