/* HTTP request heads and static file resolution: what is parsed, what is
 * refused with which status, and that nothing outside web_root is served. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "chunkd/http.h"

static http_parse parse(const char *head, http_request *req)
{
    size_t scanned = 0;
    return http_parse_head(head, strlen(head), &scanned, req);
}

static void expect_bad(const char *head, int status)
{
    http_request req;
    assert_int_equal(parse(head, &req), HTTP_BAD);
    assert_int_equal(req.status, status);
    assert_non_null(req.error);
}

static void test_simple_get(void **state)
{
    (void)state;
    static const char head[] = "GET /app.js?v=2 HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n\r\nextra";
    http_request req;
    size_t scanned = 0;
    assert_int_equal(http_parse_head(head, sizeof head - 1, &scanned, &req), HTTP_DONE);
    assert_string_equal(req.method, "GET");
    assert_string_equal(req.path, "/app.js");
    assert_int_equal(req.minor, 1);
    assert_int_equal(req.head_len, sizeof head - 1 - 5); /* the bytes after the head are not its */
    assert_false(req.upgrade_websocket);
    assert_false(req.has_body);
    assert_int_equal(req.ws_version, -1);
}

static void test_trickled_and_lenient(void **state)
{
    (void)state;
    static const char head[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    http_request req;
    size_t scanned = 0;
    for (size_t n = 0; n < sizeof head - 1; n++)
        assert_int_equal(http_parse_head(head, n, &scanned, &req), HTTP_NEED_MORE);
    assert_int_equal(http_parse_head(head, sizeof head - 1, &scanned, &req), HTTP_DONE);
    assert_string_equal(req.path, "/");
    /* Bare LF line ends, and HTTP/1.0 needs no Host. */
    assert_int_equal(parse("HEAD /a.css HTTP/1.0\n\n", &req), HTTP_DONE);
    assert_string_equal(req.method, "HEAD");
    assert_int_equal(req.minor, 0);
}

static void test_websocket_headers(void **state)
{
    (void)state;
    http_request req;
    assert_int_equal(parse("GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\n"
                           "Connection: keep-alive, Upgrade\r\n"
                           "Sec-WebSocket-Key:  dGhlIHNhbXBsZSBub25jZQ==  \r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n",
                           &req),
                     HTTP_DONE);
    assert_true(req.upgrade_websocket);
    assert_true(req.connection_upgrade);
    assert_string_equal(req.ws_key, "dGhlIHNhbXBsZSBub25jZQ==");
    assert_int_equal(req.ws_key_len, 24);
    assert_int_equal(req.ws_version, 13);
    assert_int_equal(parse("GET /ws HTTP/1.1\r\nHost: h\r\nConnection: upgraded\r\n"
                           "Upgrade: websockets\r\nSec-WebSocket-Version: 13a\r\n\r\n",
                           &req),
                     HTTP_DONE);
    assert_false(req.upgrade_websocket);
    assert_false(req.connection_upgrade);
    assert_int_equal(req.ws_version, -1);
    expect_bad("GET /ws HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Key: a\r\nSec-WebSocket-Key: b\r\n\r\n",
               400);
}

static void test_bodies_flagged(void **state)
{
    (void)state;
    http_request req;
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", &req),
                     HTTP_DONE);
    assert_false(req.has_body);
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n", &req),
                     HTTP_DONE);
    assert_true(req.has_body);
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", &req),
                     HTTP_DONE);
    assert_true(req.has_body);
}

static void test_refusals(void **state)
{
    (void)state;
    expect_bad("GET / HTTP/1.1\r\n\r\n", 400);                       /* no Host */
    expect_bad("GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505);
    expect_bad("GET / HTTP/1.1 \r\nHost: h\r\n\r\n", 400);
    expect_bad("GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    expect_bad("GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400);  /* not origin-form */
    expect_bad("GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n", 400);
    expect_bad("GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400);
    expect_bad("GET / HTTP/1.1\r\nHost: h\r\nHost: i\r\n\r\n", 400);
    expect_bad("GET / HTTP/1.1\r\nHost: h\r\nX: a\x01z\r\n\r\n", 400);
    expect_bad("GET /\x80 HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    expect_bad("PROPFIND / HTTP/1.1\r\nHost: h\r\n\r\n", 501);

    char target[HTTP_PATH_MAX + 64];
    memset(target, 'a', sizeof target);
    target[0] = '/';
    char head[sizeof target + 64];
    snprintf(head, sizeof head, "GET %.*s HTTP/1.1\r\nHost: h\r\n\r\n", HTTP_PATH_MAX, target);
    expect_bad(head, 414);

    char many[HTTP_HEAD_MAX];
    size_t n = (size_t)snprintf(many, sizeof many, "GET / HTTP/1.1\r\nHost: h\r\n");
    for (int i = 0; i < HTTP_HEADERS_MAX; i++)
        n += (size_t)snprintf(many + n, sizeof many - n, "X-%d: y\r\n", i);
    snprintf(many + n, sizeof many - n, "\r\n");
    expect_bad(many, 431);

    /* A head that never ends is refused once it reaches the limit. */
    char *huge = malloc(HTTP_HEAD_MAX + 1);
    assert_non_null(huge);
    memset(huge, 'a', HTTP_HEAD_MAX);
    memcpy(huge, "GET / HTTP/1.1\r\nX: ", 19);
    http_request req;
    size_t scanned = 0;
    assert_int_equal(http_parse_head(huge, HTTP_HEAD_MAX - 1, &scanned, &req), HTTP_NEED_MORE);
    assert_int_equal(http_parse_head(huge, HTTP_HEAD_MAX, &scanned, &req), HTTP_BAD);
    assert_int_equal(req.status, 431);
    free(huge);
}

static void test_safe_paths(void **state)
{
    (void)state;
    char rel[HTTP_PATH_MAX + 16];
    assert_int_equal(http_safe_path("/", rel, sizeof rel), 0);
    assert_string_equal(rel, "index.html");
    assert_int_equal(http_safe_path("/docs/", rel, sizeof rel), 0);
    assert_string_equal(rel, "docs/index.html");
    assert_int_equal(http_safe_path("/js/app-1_2.js", rel, sizeof rel), 0);
    assert_string_equal(rel, "js/app-1_2.js");
    static const char *const refused[] = {
        "/../etc/passwd", "/..", "/a/../index.html", "/./index.html", "/.git/config.json",
        "/a//b.html", "//etc/x.html", "/%2e%2e/x.html", "/x.exe", "/noext", "/a b.html",
        "/a\\b.html", "relative.html", "/.html",
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        if (http_safe_path(refused[i], rel, sizeof rel) == 0)
            fail_msg("'%s' was accepted as '%s'", refused[i], rel);
    }
    assert_int_equal(http_safe_path("/index.html", rel, 5), -1); /* does not fit */
}

static void test_content_types(void **state)
{
    (void)state;
    assert_string_equal(http_content_type("index.html"), "text/html; charset=utf-8");
    assert_string_equal(http_content_type("a/app.js"), "text/javascript; charset=utf-8");
    assert_string_equal(http_content_type("style.css"), "text/css; charset=utf-8");
    assert_string_equal(http_content_type("i.svg"), "image/svg+xml");
    assert_null(http_content_type("a.htm"));
    assert_null(http_content_type("dir.js/file"));
    assert_null(http_content_type("Makefile"));
}

/* ---- files on disk ------------------------------------------------------ */

typedef struct tree {
    char root[256];
    char outside[256];
} tree;

static void put(const char *dir, const char *name, const char *content)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    assert_int_equal(fputs(content, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

static int tree_setup(void **state)
{
    tree *t = calloc(1, sizeof *t);
    if (!t)
        return -1;
    char base[] = "/tmp/chunkd-test-http-XXXXXX";
    if (!mkdtemp(base)) {
        free(t);
        return -1;
    }
    snprintf(t->root, sizeof t->root, "%s/web", base);
    snprintf(t->outside, sizeof t->outside, "%s/secret", base);
    if (mkdir(t->root, 0755) != 0 || mkdir(t->outside, 0755) != 0) {
        free(t);
        return -1;
    }
    *state = t;
    return 0;
}

static int tree_teardown(void **state)
{
    tree *t = *state;
    char cmd[600];
    char *slash = strrchr(t->root, '/');
    *slash = '\0';
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", t->root);
    int rc = system(cmd);
    free(t);
    return rc == 0 ? 0 : -1;
}

static int open_rel(tree *t, const char *path, http_file *f)
{
    char rel[HTTP_PATH_MAX + 16];
    if (http_safe_path(path, rel, sizeof rel) != 0)
        return 404;
    int status = http_open_static(t->root, rel, f);
    if (status == 200) {
        assert_true(f->fd >= 0);
    } else {
        assert_int_equal(f->fd, -1);
    }
    return status;
}

static void test_open_static(void **state)
{
    tree *t = *state;
    put(t->root, "index.html", "<h1>hi</h1>\n");
    char sub[300];
    snprintf(sub, sizeof sub, "%s/css", t->root);
    assert_int_equal(mkdir(sub, 0755), 0);
    put(sub, "app.css", "body{}\n");
    put(t->outside, "secret.html", "not for you\n");

    http_file f;
    assert_int_equal(open_rel(t, "/", &f), 200);
    assert_int_equal(f.size, 12);
    assert_string_equal(f.content_type, "text/html; charset=utf-8");
    char buf[32] = {0};
    assert_int_equal(read(f.fd, buf, sizeof buf), 12);
    assert_string_equal(buf, "<h1>hi</h1>\n");
    close(f.fd);
    assert_int_equal(open_rel(t, "/css/app.css", &f), 200);
    close(f.fd);

    assert_int_equal(open_rel(t, "/missing.html", &f), 404);
    assert_int_equal(open_rel(t, "/css/missing/x.css", &f), 404);
    assert_int_equal(open_rel(t, "/index.html/x.html", &f), 404); /* a file is no folder */

    /* Symbolic links are never followed, to a file or to a folder. */
    char link[600], target[600];
    snprintf(link, sizeof link, "%s/link.html", t->root);
    snprintf(target, sizeof target, "%s/secret.html", t->outside);
    assert_int_equal(symlink(target, link), 0);
    assert_int_equal(open_rel(t, "/link.html", &f), 404);
    snprintf(link, sizeof link, "%s/out", t->root);
    assert_int_equal(symlink(t->outside, link), 0);
    assert_int_equal(open_rel(t, "/out/secret.html", &f), 404);

    /* A folder, a FIFO (which would block a worker) and an oversized file
     * are not served. */
    snprintf(sub, sizeof sub, "%s/dir.html", t->root);
    assert_int_equal(mkdir(sub, 0755), 0);
    assert_int_equal(open_rel(t, "/dir.html", &f), 404);
    snprintf(sub, sizeof sub, "%s/pipe.html", t->root);
    assert_int_equal(mkfifo(sub, 0644), 0);
    assert_int_equal(open_rel(t, "/pipe.html", &f), 404);
    snprintf(sub, sizeof sub, "%s/big.js", t->root);
    put(t->root, "big.js", "");
    assert_int_equal(truncate(sub, (off_t)HTTP_FILE_MAX + 1), 0);
    assert_int_equal(open_rel(t, "/big.js", &f), 404);

    /* Without permission to read: 403 (root reads anything, so only then). */
    put(t->root, "locked.html", "x");
    snprintf(sub, sizeof sub, "%s/locked.html", t->root);
    assert_int_equal(chmod(sub, 0), 0);
    if (geteuid() != 0)
        assert_int_equal(open_rel(t, "/locked.html", &f), 403);

    assert_int_equal(http_open_static("", "index.html", &f), 404);
    assert_int_equal(http_open_static("/nonexistent-chunkd-root", "index.html", &f), 404);
}

static void test_format_head(void **state)
{
    (void)state;
    char out[1024];
    int n = http_format_head(out, sizeof out, 426, "text/plain", 7, "Upgrade: websocket\r\n");
    assert_true(n > 0);
    assert_int_equal((size_t)n, strlen(out));
    assert_memory_equal(out, "HTTP/1.1 426 Upgrade Required\r\n", 31);
    assert_non_null(strstr(out, "\r\nContent-Length: 7\r\n"));
    assert_non_null(strstr(out, "\r\nConnection: close\r\n"));
    assert_non_null(strstr(out, "\r\nX-Content-Type-Options: nosniff\r\n"));
    assert_non_null(strstr(out, "\r\nUpgrade: websocket\r\n\r\n"));
    assert_int_equal(strcmp(out + n - 4, "\r\n\r\n"), 0);
    assert_int_equal(http_format_head(out, 40, 200, "text/plain", 1, NULL), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_get),
        cmocka_unit_test(test_trickled_and_lenient),
        cmocka_unit_test(test_websocket_headers),
        cmocka_unit_test(test_bodies_flagged),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_safe_paths),
        cmocka_unit_test(test_content_types),
        cmocka_unit_test_setup_teardown(test_open_static, tree_setup, tree_teardown),
        cmocka_unit_test(test_format_head),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
