/* Limits against hostile or runaway clients, each with its documented
 * answer: the short control-line limit before authentication, the request
 * timeout that stops slow senders, connections per client address, and
 * uploads in progress per user. */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static it_server srv;
static it_user u1;

static const char *const server_args[] = {
    "--workers", "2",
    "--max-line-unauth", "512",
    "--max-line", "8192",
    "--request-timeout-ms", "700",
    "--idle-timeout-ms", "60000",
    "--max-connections-per-ip", "3",
    "--max-uploads-per-user", "2",
    NULL,
};

static int group_setup(void **state)
{
    (void)state;
    it_fixture_server(&srv);
    if (it_init("it_limits") != 0 || it_user_create(&u1) != 0)
        return -1;
    it_server_opts o = {.args = server_args};
    return it_server_start(&srv, &o);
}

/* A list request padded with an ignored field to exactly `len` bytes. */
static char *padded_list(const it_user *u, size_t len)
{
    char head[256];
    int n = snprintf(head, sizeof head,
                     "{\"action\":\"list\",\"user_id\":%lld,\"credential\":\"%s\",\"pad\":\"",
                     (long long)u->id, u->credential);
    assert_true(n > 0 && (size_t)n + 2 < len);
    char *line = malloc(len + 1);
    assert_non_null(line);
    memcpy(line, head, (size_t)n);
    memset(line + n, 'x', len - (size_t)n - 2);
    memcpy(line + len - 2, "\"}", 2);
    line[len] = '\0';
    return line;
}

static void test_line_limit_is_tighter_before_auth(void **state)
{
    (void)state;
    /* 600 bytes: over max_line_unauth (512), far under max_line. */
    char *line = padded_list(&u1, 600);
    it_sock s;
    assert_int_equal(it_sock_connect(&s, srv.port), 0);
    json_t *r = it_sock_req(&s, line);
    it_assert_error(r, 400, "line_too_long");
    json_decref(r);
    it_assert_closed(&s);
    it_sock_close(&s);

    /* The same line once the connection has authenticated is served. */
    assert_int_equal(it_sock_connect(&s, srv.port), 0);
    it_sock_auth(&s, &u1);
    r = it_sock_req(&s, line);
    it_assert_ok(r, "list");
    json_decref(r);
    it_sock_close(&s);
    free(line);

    /* And max_line still holds after authentication. */
    line = padded_list(&u1, 9000);
    assert_int_equal(it_sock_connect(&s, srv.port), 0);
    it_sock_auth(&s, &u1);
    r = it_sock_req(&s, line);
    it_assert_error(r, 400, "line_too_long");
    json_decref(r);
    it_assert_closed(&s);
    it_sock_close(&s);
    free(line);
    it_pass();
}

/* Reads until the server's 408 and close arrive, sending one more byte of
 * an endless line every 100 ms: activity alone does not keep a request
 * alive. */
static void trickle_until_closed(it_sock *s, bool keep_sending)
{
    json_t *r = NULL;
    for (int i = 0; i < 100; i++) { /* bounded: 10 s */
        if (keep_sending && it_sock_send(s, "x", 1) != 0)
            break; /* already closed */
        enum it_read rd = it_sock_read_json(s, 100, &r);
        if (rd == IT_READ_OK)
            break;
        assert_int_equal(rd, IT_READ_TIMEOUT);
    }
    assert_non_null(r);
    it_assert_error(r, 408, "request_timeout");
    json_decref(r);
    it_assert_closed(s);
}

static void test_slow_sender_is_cut_off(void **state)
{
    (void)state;
    it_sock s;
    assert_int_equal(it_sock_connect(&s, srv.port), 0);
    assert_int_equal(it_sock_send_str(&s, "{\"action\":"), 0);
    /* request_timeout_ms is 700 and the sweep runs once a second; the
     * bounded wait in trickle_until_closed allows for a loaded machine. */
    trickle_until_closed(&s, true);
    it_sock_close(&s);

    /* A chunk body that stalls halfway is cut off the same way, and the
     * upload's offset does not move. */
    assert_int_equal(it_sock_connect(&s, srv.port), 0);
    it_sock_auth(&s, &u1);
    int64_t id = it_sock_upload(&s, "slow.bin", 4096);
    char hdr[160];
    it_line(hdr, sizeof hdr, "{\"action\":\"chunk\",\"document_id\":%lld,\"offset\":0,\"length\":4096}",
            (long long)id);
    assert_int_equal(it_sock_send_chunk(&s, hdr, NULL, 1000), 0);
    trickle_until_closed(&s, false);
    it_sock_close(&s);
    it_rkey k;
    assert_int_equal(it_redis_upload(id, &k), 0);
    assert_true(k.exists);
    assert_int_equal(k.offset, 0);

    /* An idle connection between requests is not a slow sender. */
    assert_int_equal(it_sock_connect(&s, srv.port), 0);
    it_sock_auth(&s, &u1);
    it_sleep_ms(1800);
    it_assert_open(&s);
    it_sock_close(&s);
    it_pass();
}

/* Connects from a given loopback source address. */
static int connect_from(const char *src, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in from = {.sin_family = AF_INET};
    assert_int_equal(inet_pton(AF_INET, src, &from.sin_addr), 1);
    assert_int_equal(bind(fd, (struct sockaddr *)&from, sizeof from), 0);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&to, sizeof to), 0);
    return fd;
}

static void wrap(it_sock *s, int fd)
{
    memset(s, 0, sizeof *s);
    s->fd = fd;
}

static void test_connections_per_address(void **state)
{
    (void)state;
    it_sock a[3], extra, other;
    for (int i = 0; i < 3; i++) {
        wrap(&a[i], connect_from("127.0.0.2", srv.port));
        it_sock_auth(&a[i], &u1); /* proves each is being served */
    }
    wrap(&extra, connect_from("127.0.0.2", srv.port));
    json_t *r = NULL;
    assert_int_equal(it_sock_read_json(&extra, IT_REPLY_TIMEOUT_MS, &r), IT_READ_OK);
    it_assert_error(r, 503, "too_many_connections");
    json_decref(r);
    it_assert_closed(&extra);
    it_sock_close(&extra);

    /* Another address is not affected. */
    wrap(&other, connect_from("127.0.0.3", srv.port));
    it_sock_auth(&other, &u1);
    it_sock_close(&other);

    /* Closing one frees its place (the server notices the close first). */
    it_sock_close(&a[0]);
    bool served = false;
    for (int i = 0; i < 50 && !served; i++) { /* bounded: 5 s */
        it_sock t;
        wrap(&t, connect_from("127.0.0.2", srv.port));
        char line[256];
        it_line(line, sizeof line, "{\"action\":\"list\",\"user_id\":%lld,\"credential\":\"%s\"}",
                (long long)u1.id, u1.credential);
        /* A refused connection may already be closed when the request
         * goes out: then the send or the read fails, and we try again. */
        r = NULL;
        if (it_sock_send_str(&t, line) == 0 && it_sock_send(&t, "\n", 1) == 0 &&
            it_sock_read_json(&t, IT_REPLY_TIMEOUT_MS, &r) == IT_READ_OK)
            served = json_is_string(json_object_get(r, "status")) &&
                     strcmp(json_string_value(json_object_get(r, "status")), "ok") == 0;
        json_decref(r);
        it_sock_close(&t);
        if (!served)
            it_sleep_ms(100);
    }
    assert_true(served);
    it_sock_close(&a[1]);
    it_sock_close(&a[2]);
    it_pass();
}

static void test_uploads_per_user(void **state)
{
    (void)state;
    it_user u;
    assert_int_equal(it_user_create(&u), 0);
    it_sock s;
    assert_int_equal(it_sock_connect(&s, srv.port), 0);
    it_sock_auth(&s, &u);
    int64_t first = it_sock_upload(&s, "one", 10);
    it_sock_upload(&s, "two", 10);
    it_expect_error_open(&s, "{\"action\":\"upload\",\"filename\":\"three\",\"filesize\":10}", 429,
                         "too_many_uploads");
    assert_int_equal(it_doc_count(u.id, "uploading"), 2);
    /* Finishing (here: aborting) one makes room. */
    char line[128];
    it_line(line, sizeof line, "{\"action\":\"abort\",\"document_id\":%lld}", (long long)first);
    json_t *r = it_sock_req(&s, line);
    it_assert_ok(r, "abort");
    json_decref(r);
    it_sock_upload(&s, "three", 10);
    it_sock_close(&s);
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
        IT_FIXTURE_TEST(test_line_limit_is_tighter_before_auth),
        IT_FIXTURE_TEST(test_slow_sender_is_cut_off),
        IT_FIXTURE_TEST(test_connections_per_address),
        IT_FIXTURE_TEST(test_uploads_per_user),
        IT_FIXTURE_TEST(test_server_stops_cleanly),
    };
    return cmocka_run_group_tests(tests, group_setup, it_fixture_group_teardown);
}
