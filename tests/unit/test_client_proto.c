/* chunkup client library against a scripted loopback peer: request framing,
 * error answers, chunk pipelining and its window, disconnects, timeouts,
 * the rate limit, and SHA-256. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "chunkup/client.h"
#include "test_client_peer.h"

#define DOC 5
#define TIMEOUT_MS 5000

/* What a chunk-receiving script needs to know and what it saw. */
typedef struct script {
    const unsigned char *data;   /* the file's expected bytes */
    int64_t size;
    int64_t chunk_size;          /* announced in the upload answer */
    int64_t start_offset;        /* > 0: a resume, answered at this offset */
    int window;                  /* chunks to read before acking */
    int ack_chunks;              /* ack this many, then do `then` (-1: all) */
    int then;                    /* what after ack_chunks: see below */
    int64_t max_length;          /* longest chunk seen */
    int chunks;                  /* chunks received */
} script;

/* What serve_upload does once ack_chunks chunks are acknowledged. */
enum { THEN_NOTHING, THEN_CLOSE_MIDCHUNK, THEN_ERROR_507, THEN_BAD_PROGRESS, THEN_ERROR_503_ALL };

typedef struct fixture {
    peer p;
    script s;
    char path[64];
    int fd;
} fixture;

static unsigned char *pattern(int64_t n)
{
    unsigned char *b = malloc((size_t)n + 1);

    for (int64_t i = 0; b != NULL && i < n; i++)
        b[i] = (unsigned char)((i * 7 + i / 251) & 0xff);
    return b;
}

static int make_file(fixture *f, int64_t size)
{
    unsigned char *b = pattern(size);

    snprintf(f->path, sizeof f->path, "/tmp/chunkup-proto-XXXXXX");
    f->fd = mkstemp(f->path);
    if (b == NULL || f->fd < 0 || write(f->fd, b, (size_t)size) != (ssize_t)size) {
        free(b);
        return -1;
    }
    f->s.data = b;
    f->s.size = size;
    return 0;
}

static void drop_file(fixture *f)
{
    free((void *)f->s.data);
    close(f->fd);
    unlink(f->path);
}

static json_t *upload_answer(const script *s)
{
    return json_pack("{s:i, s:s, s:s, s:i, s:I, s:I, s:I, s:i}", "v", 1, "status", "ok",
                     "action", "upload", "document_id", DOC, "offset", (json_int_t)s->start_offset,
                     "filesize", (json_int_t)s->size, "chunk_size", (json_int_t)s->chunk_size,
                     "max_chunk_size", 1048576);
}

static json_t *progress(int64_t received, int64_t total)
{
    return json_pack("{s:i, s:s, s:i, s:I, s:I}", "v", 1, "event", "progress", "document_id",
                     DOC, "received", (json_int_t)received, "total", (json_int_t)total);
}

/* Reads one chunk header and its bytes, checking them against the file. */
static int read_chunk(peer *p, int fd, script *s, int64_t want_offset, int64_t *end)
{
    json_t *h = peer_read_json(fd);
    int64_t off, len;
    unsigned char *buf;
    int rc = -1;

    if (h == NULL)
        return -1;
    off = json_integer_value(json_object_get(h, "offset"));
    len = json_integer_value(json_object_get(h, "length"));
    if (strcmp(json_string_value(json_object_get(h, "action")), "chunk") != 0 ||
        json_integer_value(json_object_get(h, "document_id")) != DOC || off != want_offset ||
        len <= 0 || off + len > s->size) {
        peer_fail(p, "bad chunk header at offset %lld", (long long)want_offset);
        json_decref(h);
        return -1;
    }
    json_decref(h);
    buf = malloc((size_t)len);
    if (buf != NULL && peer_read_exact(fd, buf, (size_t)len) == 0) {
        if (memcmp(buf, s->data + off, (size_t)len) != 0)
            peer_fail(p, "chunk at %lld carries the wrong bytes", (long long)off);
        if (len > s->max_length)
            s->max_length = len;
        s->chunks++;
        *end = off + len;
        rc = 0;
    }
    free(buf);
    return rc;
}

static bool more_bytes_pending(int fd)
{
    struct pollfd pfd = { .fd = fd, .events = POLLIN, .revents = 0 };

    return poll(&pfd, 1, 50) > 0;
}

/* Upload answer, then chunks in groups of `window` read before any ack. */
static void serve_upload(peer *p, int fd)
{
    script *s = p->ctx;
    json_t *req = peer_read_json(fd);
    int64_t next = s->start_offset, acked = s->start_offset;
    int acks = 0;

    /* A new upload starts at 0; a script that starts further on is a
     * resume's. */
    const char *action = req ? json_string_value(json_object_get(req, "action")) : NULL;
    bool ok = action != NULL &&
              (s->start_offset > 0 ? strcmp(action, "resume") == 0
                                   : strcmp(action, "upload") == 0 &&
                                         json_integer_value(json_object_get(req, "filesize")) ==
                                             s->size);
    if (!ok) {
        peer_fail(p, "expected an upload request (or a resume)");
        json_decref(req);
        return;
    }
    json_decref(req);
    peer_send_json(fd, upload_answer(s));
    while (acked < s->size) {
        int64_t ends[64];
        int n = 0;

        while (n < s->window && next < s->size) {
            if (s->then == THEN_CLOSE_MIDCHUNK && s->chunks == s->ack_chunks) {
                char line[256], part[100];

                /* Header and a little of the bytes, then the line drops. */
                if (peer_read_line(fd, line, sizeof line) < 0 ||
                    peer_read_exact(fd, part, sizeof part) < 0)
                    peer_fail(p, "expected a chunk to cut short");
                return;
            }
            if (read_chunk(p, fd, s, next, &ends[n]) < 0)
                return;
            next = ends[n++];
        }
        /* The client must stop at its window until we answer. */
        if (next < s->size && more_bytes_pending(fd))
            peer_fail(p, "client sent more than %d chunks without an answer", s->window);
        for (int i = 0; i < n; i++, acks++) {
            if (acks == s->ack_chunks) {
                switch (s->then) {
                case THEN_ERROR_507:
                    peer_write_str(fd, "{\"v\":1,\"status\":\"error\",\"code\":507,"
                                       "\"reason\":\"insufficient_storage\",\"message\":\"full\"}\n");
                    return;
                case THEN_BAD_PROGRESS:
                    peer_send_json(fd, progress(ends[i] - 1, s->size));
                    return;
                case THEN_ERROR_503_ALL:
                    for (; i < n; i++)
                        peer_write_str(fd, "{\"v\":1,\"status\":\"error\",\"code\":503,"
                                           "\"reason\":\"shutting_down\"}\n");
                    return;
                default:
                    break;
                }
            }
            peer_send_json(fd, progress(ends[i], s->size));
            acked = ends[i];
        }
    }
}

/* After serve_upload's failure modes, answer one more request (if the
 * client sends one) so tests can check the connection is still in step. */
static void serve_upload_then_status(peer *p, int fd)
{
    json_t *req;

    serve_upload(p, fd);
    req = peer_read_json(fd);
    if (req == NULL)
        return;
    if (strcmp(json_string_value(json_object_get(req, "action")), "status") != 0)
        peer_fail(p, "after the failed chunk, expected status");
    json_decref(req);
    peer_write_str(fd, "{\"v\":1,\"status\":\"ok\",\"action\":\"status\",\"document\":{}}\n");
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);

    assert_non_null(f);
    f->fd = -1;
    f->s.chunk_size = 4096;
    f->s.window = 4;
    f->s.ack_chunks = -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;

    if (f->fd >= 0)
        drop_file(f);
    free(f);
    return 0;
}

static void start(fixture *f, peer_serve_fn serve, int64_t size)
{
    if (size >= 0)
        assert_int_equal(make_file(f, size), 0);
    assert_int_equal(peer_start(&f->p, serve, &f->s), 0);
}

static void stop(fixture *f)
{
    peer_stop(&f->p);
    if (f->p.failure[0] != '\0')
        fail_msg("peer: %s", f->p.failure);
}

static cu_conn *connect_ok(fixture *f, int timeout_ms)
{
    cu_error err;
    cu_conn *c = cu_connect("127.0.0.1", f->p.port, timeout_ms, &err);

    if (c == NULL)
        fail_msg("connect: %s", err.message);
    return c;
}

typedef struct seen {
    int calls;
    int64_t last;
    int stop_after;              /* return false after this many calls; 0: never */
    bool monotonic;
} seen;

static bool on_progress(void *arg, int64_t received, int64_t total)
{
    seen *s = arg;

    (void)total;
    if (received <= s->last)
        s->monotonic = false;
    s->last = received;
    s->calls++;
    return s->stop_after == 0 || s->calls < s->stop_after;
}

static void serve_complete(peer *p, int fd)
{
    json_t *req;

    serve_upload(p, fd);
    req = peer_read_json(fd);
    if (req == NULL || strcmp(json_string_value(json_object_get(req, "action")),
                              "upload_complete") != 0) {
        peer_fail(p, "expected upload_complete");
    } else {
        peer_write_str(fd, "{\"v\":1,\"status\":\"SUCCESS\",\"document_id\":5,\"filesize\":"
                           "41060,\"sha256\":\"0123456789abcdef0123456789abcdef0123456789abcd"
                           "ef0123456789abcdef\",\"file_path\":\"05/5.data\"}\n");
    }
    json_decref(req);
}

static void test_pipelined_upload(void **state)
{
    fixture *f = *state;
    cu_auth auth = { 7, "secret" };
    cu_upload_info info;
    cu_complete_info done;
    seen sn = { 0, 0, 0, true };
    cu_error err;
    cu_conn *c;

    /* 10 full chunks and a short tail. */
    start(f, serve_complete, 10 * 4096 + 100);
    c = connect_ok(f, TIMEOUT_MS);
    assert_int_equal(cu_start_upload(c, &auth, "doc.bin", f->s.size, NULL, &info, &err), 0);
    assert_int_equal(info.document_id, DOC);
    assert_int_equal(info.offset, 0);
    assert_int_equal(info.chunk_size, 4096);
    /* Without pipelining the peer, which reads 4 chunks before its first
     * answer, and the client would wait for each other until the timeout. */
    if (cu_send_file(c, f->fd, &info, 4, 0, on_progress, &sn, &err) < 0)
        fail_msg("send: %s", err.message);
    assert_int_equal(info.offset, f->s.size);
    assert_int_equal(sn.calls, 11);
    assert_int_equal(sn.last, f->s.size);
    assert_true(sn.monotonic);
    assert_int_equal(cu_complete(c, DOC, &done, &err), 0);
    assert_int_equal(done.document_id, DOC);
    assert_string_equal(done.file_path, "05/5.data");
    assert_int_equal(strlen(done.sha256), 64);
    cu_close(c);
    stop(f);
    assert_int_equal(f->s.chunks, 11);
    assert_int_equal(f->s.max_length, 4096);
}

static void test_resume_from_middle(void **state)
{
    fixture *f = *state;
    cu_auth auth = { 7, "secret" };
    cu_upload_info info;
    cu_error err;
    cu_conn *c;

    f->s.start_offset = 8192;
    start(f, serve_upload, 5 * 4096);
    c = connect_ok(f, TIMEOUT_MS);
    assert_int_equal(cu_resume(c, &auth, DOC, &info, &err), 0);
    assert_int_equal(info.offset, 8192);
    if (cu_send_file(c, f->fd, &info, 0, 0, NULL, NULL, &err) < 0)
        fail_msg("send: %s", err.message);
    assert_int_equal(info.offset, 5 * 4096);
    /* Nothing left: no chunk at all, and success. */
    assert_int_equal(cu_send_file(c, f->fd, &info, 0, 0, NULL, NULL, &err), 0);
    cu_close(c);
    stop(f);
    /* Only the bytes from the server's offset on were sent. */
    assert_int_equal(f->s.chunks, 3);
}

static void test_disconnect_mid_chunk(void **state)
{
    fixture *f = *state;
    cu_auth auth = { 7, "secret" };
    cu_upload_info info;
    json_t *reply = NULL;
    cu_error err;
    cu_conn *c;

    f->s.window = 1;
    f->s.ack_chunks = 2;
    f->s.then = THEN_CLOSE_MIDCHUNK;
    start(f, serve_upload, 6 * 4096);
    c = connect_ok(f, TIMEOUT_MS);
    assert_int_equal(cu_start_upload(c, &auth, "doc.bin", f->s.size, NULL, &info, &err), 0);
    assert_int_equal(cu_send_file(c, f->fd, &info, 1, 0, NULL, NULL, &err), -1);
    assert_int_equal(err.code, 0);
    assert_string_equal(err.reason, "io");
    /* Only acknowledged bytes count. */
    assert_int_equal(info.offset, 2 * 4096);
    /* The connection is done for: a request fails locally. */
    assert_int_equal(cu_status(c, &auth, DOC, &reply, &err), -1);
    assert_null(reply);
    assert_string_equal(err.reason, "io");
    cu_close(c);
    stop(f);
}

static void test_error_answer_keeps_offset_and_step(void **state)
{
    fixture *f = *state;
    cu_auth auth = { 7, "secret" };
    cu_upload_info info;
    json_t *reply = NULL;
    cu_error err;
    cu_conn *c;

    f->s.window = 1;
    f->s.ack_chunks = 1;
    f->s.then = THEN_ERROR_507;
    start(f, serve_upload_then_status, 4 * 4096);
    c = connect_ok(f, TIMEOUT_MS);
    assert_int_equal(cu_start_upload(c, &auth, "doc.bin", f->s.size, NULL, &info, &err), 0);
    assert_int_equal(cu_send_file(c, f->fd, &info, 1, 0, NULL, NULL, &err), -1);
    assert_int_equal(err.code, 507);
    assert_string_equal(err.reason, "insufficient_storage");
    assert_string_equal(err.message, "full");
    assert_int_equal(info.offset, 4096);
    /* One chunk in flight, answered: requests and answers still pair up. */
    assert_int_equal(cu_status(c, &auth, DOC, &reply, &err), 0);
    json_decref(reply);
    cu_close(c);
    stop(f);
}

static void test_error_while_pipelining_breaks_connection(void **state)
{
    fixture *f = *state;
    cu_auth auth = { 7, "secret" };
    cu_upload_info info;
    json_t *reply = NULL;
    cu_error err;
    cu_conn *c;

    f->s.window = 4;
    f->s.ack_chunks = 0;
    f->s.then = THEN_ERROR_503_ALL;
    start(f, serve_upload, 8 * 4096);
    c = connect_ok(f, TIMEOUT_MS);
    assert_int_equal(cu_start_upload(c, &auth, "doc.bin", f->s.size, NULL, &info, &err), 0);
    assert_int_equal(cu_send_file(c, f->fd, &info, 4, 0, NULL, NULL, &err), -1);
    assert_int_equal(err.code, 503);
    assert_string_equal(err.reason, "shutting_down");
    assert_int_equal(info.offset, 0);
    /* Three more answers are owed: the next request must not take one of
     * them for its own. */
    assert_int_equal(cu_status(c, &auth, DOC, &reply, &err), -1);
    assert_int_equal(err.code, 0);
    cu_close(c);
    stop(f);
}

static void test_progress_for_unsent_offset(void **state)
{
    fixture *f = *state;
    cu_auth auth = { 7, "secret" };
    cu_upload_info info;
    cu_error err;
    cu_conn *c;

    f->s.window = 2;
    f->s.ack_chunks = 1;
    f->s.then = THEN_BAD_PROGRESS;
    start(f, serve_upload, 4 * 4096);
    c = connect_ok(f, TIMEOUT_MS);
    assert_int_equal(cu_start_upload(c, &auth, "doc.bin", f->s.size, NULL, &info, &err), 0);
    assert_int_equal(cu_send_file(c, f->fd, &info, 2, 0, NULL, NULL, &err), -1);
    assert_string_equal(err.reason, "protocol");
    assert_int_equal(info.offset, 4096);
    cu_close(c);
    stop(f);
}

static void test_cancel_from_callback(void **state)
{
    fixture *f = *state;
    cu_auth auth = { 7, "secret" };
    seen sn = { 0, 0, 1, true };
    cu_upload_info info;
    cu_error err;
    cu_conn *c;

    f->s.window = 1;
    start(f, serve_upload, 4 * 4096);
    c = connect_ok(f, TIMEOUT_MS);
    assert_int_equal(cu_start_upload(c, &auth, "doc.bin", f->s.size, NULL, &info, &err), 0);
    assert_int_equal(cu_send_file(c, f->fd, &info, 1, 0, on_progress, &sn, &err), -1);
    assert_string_equal(err.reason, "cancelled");
    assert_int_equal(info.offset, 4096);
    assert_int_equal(sn.calls, 1);
    cu_close(c);
    stop(f);
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_rate_limit(void **state)
{
    fixture *f = *state;
    cu_auth auth = { 7, "secret" };
    cu_upload_info info;
    cu_error err;
    int64_t t0, elapsed;
    cu_conn *c;

    /* 16 KiB at 8 KiB/s: the client cuts 64 KiB chunks down to 8 KiB and
     * sends the second one a second after the first. */
    f->s.chunk_size = 65536;
    start(f, serve_upload, 16384);
    c = connect_ok(f, TIMEOUT_MS);
    assert_int_equal(cu_start_upload(c, &auth, "doc.bin", f->s.size, NULL, &info, &err), 0);
    t0 = now_ms();
    if (cu_send_file(c, f->fd, &info, 8, 8192, NULL, NULL, &err) < 0)
        fail_msg("send: %s", err.message);
    elapsed = now_ms() - t0;
    cu_close(c);
    stop(f);
    assert_int_equal(f->s.chunks, 2);
    assert_int_equal(f->s.max_length, 8192);
    if (elapsed < 950 || elapsed > 3000)
        fail_msg("16 KiB at 8 KiB/s took %lld ms", (long long)elapsed);
}

/* Answers each request line with the next canned line of ctx. */
static void serve_canned(peer *p, int fd)
{
    const char *const *lines = p->ctx;
    char req[65536];

    for (; *lines != NULL; lines++) {
        if (peer_read_line(fd, req, sizeof req) < 0) {
            peer_fail(p, "request missing");
            return;
        }
        /* Split the answer so the client must reassemble it. */
        size_t n = strlen(*lines), half = n / 2;

        peer_write(fd, *lines, half);
        usleep(20000);
        peer_write(fd, *lines + half, n - half);
    }
}

static void test_request_framing_and_errors(void **state)
{
    static const char *const lines[] = {
        "{\"v\":1,\"status\":\"error\",\"code\":409,\"reason\":\"offset_mismatch\","
        "\"message\":\"chunk offset 0 does not match\",\"expected_offset\":65536}\n",
        "{\"v\":1,\"status\":\"ok\",\"action\":\"list\",\"documents\":[{\"document_id\":3}],"
        "\"future_field\":true}\n",
        "{\"v\":1,\"status\":\"error\",\"code\":404,\"reason\":\"not_found\"}\n",
        "{\"v\":1,\"status\":\"ok\",\"action\":\"abort\",\"document_id\":3}\n",
        NULL,
    };
    cu_auth auth = { 7, "secret" };
    cu_upload_info info;
    json_t *reply = NULL;
    peer p;
    cu_error err;
    cu_conn *c;

    (void)state;
    assert_int_equal(peer_start(&p, serve_canned, (void *)lines), 0);
    c = cu_connect("127.0.0.1", p.port, TIMEOUT_MS, &err);
    assert_non_null(c);
    assert_int_equal(cu_resume(c, &auth, 3, &info, &err), -1);
    assert_int_equal(err.code, 409);
    assert_string_equal(err.reason, "offset_mismatch");
    assert_string_equal(err.message, "chunk offset 0 does not match");
    assert_int_equal(err.expected_offset, 65536);
    /* An error answer leaves the connection usable. */
    assert_int_equal(cu_list(c, &auth, 10, &reply, &err), 0);
    assert_int_equal(json_array_size(json_object_get(reply, "documents")), 1);
    json_decref(reply);
    assert_int_equal(cu_status(c, &auth, 3, &reply, &err), -1);
    assert_null(reply);
    assert_int_equal(err.code, 404);
    assert_int_equal(err.expected_offset, -1);
    assert_int_equal(cu_abort(c, &auth, 3, &err), 0);
    cu_close(c);
    cu_close(NULL);
    peer_stop(&p);
    assert_string_equal(p.failure, "");
}

/* Checks the request line's fields, then answers ok. */
static void serve_check_request(peer *p, int fd)
{
    json_t *req = peer_read_json(fd);

    if (req == NULL) {
        peer_fail(p, "request is not a JSON object line");
        return;
    }
    if (json_integer_value(json_object_get(req, "v")) != 1 ||
        strcmp(json_string_value(json_object_get(req, "action")), "upload") != 0 ||
        strcmp(json_string_value(json_object_get(req, "filename")), "a \"b\"\nc.pdf") != 0 ||
        json_integer_value(json_object_get(req, "filesize")) != 123 ||
        json_integer_value(json_object_get(req, "user_id")) != 7 ||
        strcmp(json_string_value(json_object_get(req, "credential")), "secret") != 0 ||
        strcmp(json_string_value(json_object_get(req, "sha256")),
               "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") != 0)
        peer_fail(p, "request fields wrong");
    json_decref(req);
    peer_write_str(fd, "{\"v\":1,\"status\":\"ok\",\"action\":\"upload\",\"document_id\":9,"
                       "\"offset\":0,\"filesize\":123,\"chunk_size\":65536,"
                       "\"max_chunk_size\":1048576}\n");
}

static void test_upload_request_fields(void **state)
{
    cu_auth auth = { 7, "secret" };
    cu_upload_info info;
    cu_error err;
    peer p;
    cu_conn *c;

    (void)state;
    assert_int_equal(peer_start(&p, serve_check_request, NULL), 0);
    c = cu_connect("127.0.0.1", p.port, TIMEOUT_MS, &err);
    assert_non_null(c);
    /* A newline in a name must not split the request line. */
    assert_int_equal(cu_start_upload(c, &auth, "a \"b\"\nc.pdf", 123,
                                     "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                                     &info, &err), 0);
    assert_int_equal(info.document_id, 9);
    assert_int_equal(info.max_chunk_size, 1048576);
    cu_close(c);
    peer_stop(&p);
    assert_string_equal(p.failure, "");
}

static void serve_silence(peer *p, int fd)
{
    char buf[256];

    (void)p;
    /* Read the request, answer nothing, wait for the client to give up. */
    while (read(fd, buf, sizeof buf) > 0)
        continue;
}

static void test_timeout(void **state)
{
    cu_auth auth = { 7, "secret" };
    json_t *reply = NULL;
    cu_error err;
    int64_t t0;
    peer p;
    cu_conn *c;

    (void)state;
    assert_int_equal(peer_start(&p, serve_silence, NULL), 0);
    c = cu_connect("127.0.0.1", p.port, 200, &err);
    assert_non_null(c);
    t0 = now_ms();
    assert_int_equal(cu_status(c, &auth, 1, &reply, &err), -1);
    assert_true(now_ms() - t0 < 2000);
    assert_int_equal(err.code, 0);
    assert_string_equal(err.reason, "timeout");
    cu_close(c);
    peer_stop(&p);
}

static void serve_garbage(peer *p, int fd)
{
    const char *what = p->ctx;
    char req[4096];

    if (peer_read_line(fd, req, sizeof req) < 0)
        return;
    if (strcmp(what, "long") == 0) {
        size_t n = 4 * 1024 * 1024 + 16;
        char *junk = malloc(n);

        if (junk != NULL) {
            memset(junk, 'a', n);
            /* Fails with EPIPE once the client gives up: expected. */
            (void)peer_write(fd, junk, n);
        }
        free(junk);
    } else if (strcmp(what, "close") == 0) {
        return;
    } else {
        peer_write_str(fd, what);
    }
}

static void expect_local_failure(const char *what, const char *reason)
{
    cu_auth auth = { 7, "secret" };
    json_t *reply = NULL;
    cu_error err;
    peer p;
    cu_conn *c;

    assert_int_equal(peer_start(&p, serve_garbage, (void *)what), 0);
    c = cu_connect("127.0.0.1", p.port, TIMEOUT_MS, &err);
    assert_non_null(c);
    assert_int_equal(cu_status(c, &auth, 1, &reply, &err), -1);
    assert_null(reply);
    assert_int_equal(err.code, 0);
    assert_string_equal(err.reason, reason);
    cu_close(c);
    peer_stop(&p);
}

static void test_bad_answers(void **state)
{
    (void)state;
    expect_local_failure("not json\n", "protocol");
    expect_local_failure("[1,2]\n", "protocol");
    expect_local_failure("{\"v\":1,\"event\":\"progress\"}\n", "protocol");
    expect_local_failure("long", "protocol");
    expect_local_failure("close", "io");
}

static void test_bad_upload_answer(void **state)
{
    static const char *const answers[][2] = {
        /* offset past the file size */
        { "{\"v\":1,\"status\":\"ok\",\"document_id\":9,\"offset\":200,\"filesize\":100}\n",
          NULL },
        /* another document */
        { "{\"v\":1,\"status\":\"ok\",\"document_id\":8,\"offset\":0,\"filesize\":100}\n",
          NULL },
    };
    cu_auth auth = { 7, "secret" };
    cu_upload_info info;
    cu_error err;
    peer p;
    cu_conn *c;

    (void)state;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(peer_start(&p, serve_canned, (void *)answers[i]), 0);
        c = cu_connect("127.0.0.1", p.port, TIMEOUT_MS, &err);
        assert_non_null(c);
        info.document_id = -7;
        assert_int_equal(cu_resume(c, &auth, 9, &info, &err), -1);
        assert_string_equal(err.reason, "protocol");
        assert_int_equal(info.document_id, -7); /* the refused answer is not handed out */
        cu_close(c);
        peer_stop(&p);
    }
}

/* A new upload that the server opens at another size or offset than asked
 * for is refused before a byte is sent. */
static void test_bad_new_upload_answer(void **state)
{
    static const char *const answers[][2] = {
        { "{\"v\":1,\"status\":\"ok\",\"document_id\":9,\"offset\":0,\"filesize\":99}\n",
          NULL },
        { "{\"v\":1,\"status\":\"ok\",\"document_id\":9,\"offset\":10,\"filesize\":100}\n",
          NULL },
    };
    cu_auth auth = { 7, "secret" };
    cu_upload_info info;
    cu_error err;
    peer p;

    (void)state;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(peer_start(&p, serve_canned, (void *)answers[i]), 0);
        cu_conn *c = cu_connect("127.0.0.1", p.port, TIMEOUT_MS, &err);
        assert_non_null(c);
        info.offset = -7;
        assert_int_equal(cu_start_upload(c, &auth, "doc.bin", 100, NULL, &info, &err), -1);
        assert_string_equal(err.reason, "protocol");
        assert_non_null(strstr(err.message, "not 100 bytes from 0"));
        assert_int_equal(info.offset, -7); /* the refused answer is not handed out */
        cu_close(c);
        peer_stop(&p);
    }
}

static void test_connect_refused(void **state)
{
    char port[16];
    cu_error err;

    (void)state;
    peer_dead_port(port);
    assert_null(cu_connect("127.0.0.1", port, 1000, &err));
    assert_int_equal(err.code, 0);
    assert_string_equal(err.reason, "connect");
    assert_non_null(strstr(err.message, "refused"));
    assert_null(cu_connect("no-such-host.invalid", "1", 1000, &err));
    assert_string_equal(err.reason, "connect");
}

static void sha_of(const char *content, const char *expect)
{
    char path[] = "/tmp/chunkup-sha-XXXXXX", out[65];
    cu_error err;
    int fd = mkstemp(path);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    /* Through the descriptor: from the start whatever its offset (here at
     * the end), which it keeps. */
    assert_int_equal(cu_sha256_fd(fd, path, out, &err), 0);
    assert_string_equal(out, expect);
    assert_int_equal(lseek(fd, 0, SEEK_CUR), (off_t)strlen(content));
    close(fd);
    assert_int_equal(cu_sha256_file(path, out, &err), 0);
    unlink(path);
    assert_string_equal(out, expect);
}

static void test_sha256(void **state)
{
    char out[65];
    cu_error err;

    (void)state;
    sha_of("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sha_of("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_int_equal(cu_sha256_file("/nonexistent/chunkup", out, &err), -1);
    assert_string_equal(err.reason, "file");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pipelined_upload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_from_middle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disconnect_mid_chunk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_answer_keeps_offset_and_step, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_while_pipelining_breaks_connection, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_progress_for_unsent_offset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_from_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rate_limit, setup, teardown),
        cmocka_unit_test(test_request_framing_and_errors),
        cmocka_unit_test(test_upload_request_fields),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_bad_answers),
        cmocka_unit_test(test_bad_upload_answer),
        cmocka_unit_test(test_bad_new_upload_answer),
        cmocka_unit_test(test_connect_refused),
        cmocka_unit_test(test_sha256),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
