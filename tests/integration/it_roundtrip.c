/* Uploads arrive byte for byte, and MySQL, Redis and the storage directory
 * say what docs/PROTOCOL.md and docs/OPERATIONS.md promise at every step. */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_CHUNK (64 * IT_KiB)
#define DEFAULT_MAX_CHUNK IT_MiB
#define UPLOAD_TTL_S 86400

static it_server srv;
static it_user user;
static char workdir[IT_DIR_MAX];

static int group_setup(void **state)
{
    (void)state;
    it_fixture_server(&srv);
    if (it_init("it_roundtrip") != 0 || it_user_create(&user) != 0 ||
        it_tmpdir("files", workdir, sizeof workdir) != 0)
        return -1;
    static const char *const args[] = {"--workers", "2", NULL};
    it_server_opts o = {.args = args};
    return it_server_start(&srv, &o);
}

static int group_teardown(void **state)
{
    it_fixture_group_teardown(state);
    it_rmtree(workdir);
    return 0;
}

static cu_auth auth_of(const it_user *u)
{
    cu_auth a = {.user_id = u->id, .credential = u->credential};
    return a;
}

static int64_t file_size_at(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
}

/* The Redis key of an upload in progress. */
static void assert_rkey(int64_t id, const it_user *u, int64_t filesize, int64_t offset)
{
    it_rkey k;
    assert_int_equal(it_redis_upload(id, &k), 0);
    if (!k.exists)
        fprintf(stderr, "it: no Redis key for upload %lld\n", (long long)id);
    assert_true(k.exists);
    assert_int_equal(k.offset, offset);
    assert_int_equal(k.filesize, filesize);
    assert_int_equal(k.user_id, u->id);
    assert_true(k.ttl > 0 && k.ttl <= UPLOAD_TTL_S);
    assert_string_equal(k.node, srv.node_id);
    assert_true(k.path[0] != '\0' && k.path[0] != '/');
}

/* The row and the empty file right after `upload`. */
static void assert_fresh_upload(int64_t id, const char *filename, int64_t size,
                                const char *declared)
{
    it_doc d;
    it_assert_doc_status(id, "uploading", &d);
    assert_int_equal(d.user_id, user.id);
    assert_string_equal(d.filename, filename);
    assert_int_equal(d.filesize, size);
    assert_true(d.sha256_null);
    assert_true(d.file_path_null);
    assert_true(d.failure_reason_null);
    assert_true(d.completed_at_null);
    if (declared) {
        assert_false(d.declared_sha256_null);
        assert_string_equal(d.declared_sha256, declared);
    } else {
        assert_true(d.declared_sha256_null);
    }
    assert_rkey(id, &user, size, 0);
    char part[IT_PATH_MAX + 64];
    it_upload_path(&srv, id, part, sizeof part);
    struct stat st;
    if (stat(part, &st) != 0)
        fprintf(stderr, "it: %s: %s\n", part, strerror(errno));
    assert_int_equal(stat(part, &st), 0);
    assert_int_equal(st.st_size, 0);
    assert_int_equal(st.st_mode & 07777, 0640);
}

/* Checks Redis on every progress event; the library is in the middle of a
 * call, so failures are collected and asserted afterwards. */
typedef struct progress_check {
    int64_t id, filesize, last_received;
    int events, failures;
} progress_check;

static bool on_progress(void *arg, int64_t received, int64_t total)
{
    progress_check *p = arg;
    p->events++;
    it_rkey k = {0};
    /* pipelined chunks may already have moved the offset further */
    if (total != p->filesize || received <= p->last_received || received > total ||
        it_redis_upload(p->id, &k) != 0 || !k.exists || k.offset < received ||
        k.offset > total || k.ttl <= 0 || k.ttl > UPLOAD_TTL_S) {
        fprintf(stderr, "it: progress %lld/%lld of %lld: redis exists=%d offset=%lld ttl=%lld\n",
                (long long)received, (long long)total, (long long)p->id, (int)k.exists,
                (long long)k.offset, k.ttl);
        p->failures++;
    }
    p->last_received = received;
    return true;
}

static void roundtrip(int64_t size, bool declare_sha)
{
    char name[64], path[IT_PATH_MAX + 64], sha[65];
    snprintf(name, sizeof name, "rt-%lld.bin", (long long)size);
    snprintf(path, sizeof path, "%s/%s", workdir, name);
    assert_int_equal(it_make_file(path, size, sha), 0);

    cu_conn *c = it_cu_connect(&srv);
    cu_auth auth = auth_of(&user);
    cu_error err;
    cu_upload_info info;
    IT_CU_OK(cu_start_upload(c, &auth, name, size, declare_sha ? sha : NULL, &info, &err), err);
    assert_true(info.document_id > 0);
    assert_int_equal(info.offset, 0);
    assert_int_equal(info.filesize, size);
    assert_int_equal(info.chunk_size, DEFAULT_CHUNK);
    assert_int_equal(info.max_chunk_size, DEFAULT_MAX_CHUNK);
    assert_fresh_upload(info.document_id, name, size, declare_sha ? sha : NULL);

    if (size > 0) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        progress_check pc = {.id = info.document_id, .filesize = size};
        int rc = cu_send_file(c, fd, &info, 0, 0, on_progress, &pc, &err);
        close(fd);
        if (rc != 0)
            it_print_cu_error("cu_send_file", &err);
        assert_int_equal(rc, 0);
        assert_int_equal(pc.failures, 0);
        assert_int_equal(pc.last_received, size);
        assert_int_equal(pc.events, (int)((size + DEFAULT_CHUNK - 1) / DEFAULT_CHUNK));
        assert_int_equal(info.offset, size);
        /* all bytes in, not completed yet: the key is still there */
        assert_rkey(info.document_id, &user, size, size);
        it_assert_doc_status(info.document_id, "uploading", NULL);
    }

    cu_complete_info done;
    IT_CU_OK(cu_complete(c, info.document_id, &done, &err), err);
    char rel[64];
    it_data_rel_path(info.document_id, rel, sizeof rel);
    assert_int_equal(done.document_id, info.document_id);
    assert_int_equal(done.filesize, size);
    assert_string_equal(done.sha256, sha);
    assert_string_equal(done.file_path, rel);
    it_assert_stored(&srv, info.document_id, size, sha);
    cu_close(c);
    unlink(path);
}

static void test_size_0(void **state)
{
    (void)state;
    roundtrip(0, false);
    /* the SHA-256 of nothing */
    char empty[65];
    it_sha256_hex("", 0, empty);
    assert_string_equal(empty,
                        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    roundtrip(0, true);
    it_pass();
}

static void test_size_1(void **state)
{
    (void)state;
    roundtrip(1, true);
    it_pass();
}

static void test_size_65535(void **state)
{
    (void)state;
    roundtrip(65535, false);
    it_pass();
}

static void test_size_65536(void **state)
{
    (void)state;
    roundtrip(65536, true);
    it_pass();
}

static void test_size_65537(void **state)
{
    (void)state;
    roundtrip(65537, false);
    it_pass();
}

static void test_size_10mib(void **state)
{
    (void)state;
    roundtrip(10 * IT_MiB, true);
    it_pass();
}

/* One chunk at a time over a raw connection: the progress event, the Redis
 * offset and the bytes on disk move together. */
static void test_chunk_by_chunk(void **state)
{
    (void)state;
    const int64_t size = 3 * DEFAULT_CHUNK + 100;
    unsigned char *data = malloc((size_t)size);
    assert_non_null(data);
    it_random_bytes(data, (size_t)size);
    char sha[65];
    it_sha256_hex(data, (size_t)size, sha);

    it_sock s;
    assert_int_equal(it_sock_connect(&s, srv.port), 0);
    json_t *r = it_sock_req_json(
        &s, json_pack("{s:s, s:i, s:s, s:I, s:I, s:s}", "action", "upload", "v", 1, "filename",
                      "steps.bin", "filesize", (json_int_t)size, "user_id", (json_int_t)user.id,
                      "credential", user.credential));
    it_assert_ok(r, "upload");
    int64_t id = it_json_int(r, "document_id");
    assert_int_equal(it_json_int(r, "offset"), 0);
    assert_int_equal(it_json_int(r, "filesize"), size);
    assert_int_equal(it_json_int(r, "chunk_size"), DEFAULT_CHUNK);
    assert_int_equal(it_json_int(r, "max_chunk_size"), DEFAULT_MAX_CHUNK);
    json_decref(r);
    assert_rkey(id, &user, size, 0);

    char part[IT_PATH_MAX + 64];
    it_upload_path(&srv, id, part, sizeof part);
    for (int64_t off = 0; off < size;) {
        int64_t len = size - off < DEFAULT_CHUNK ? size - off : DEFAULT_CHUNK;
        char hdr[160];
        snprintf(hdr, sizeof hdr,
                 "{\"action\":\"chunk\",\"document_id\":%lld,\"offset\":%lld,\"length\":%lld}\n",
                 (long long)id, (long long)off, (long long)len);
        assert_int_equal(it_sock_send_str(&s, hdr), 0);
        assert_int_equal(it_sock_send(&s, data + off, (size_t)len), 0);
        json_t *ev;
        assert_int_equal(it_sock_read_json(&s, IT_REPLY_TIMEOUT_MS, &ev), IT_READ_OK);
        off += len;
        assert_string_equal(it_json_str(ev, "event"), "progress");
        assert_null(json_object_get(ev, "status"));
        assert_int_equal(it_json_int(ev, "v"), 1);
        assert_int_equal(it_json_int(ev, "document_id"), id);
        assert_int_equal(it_json_int(ev, "received"), off);
        assert_int_equal(it_json_int(ev, "total"), size);
        char want[96];
        snprintf(want, sizeof want, "%lld/%lld bytes", (long long)off, (long long)size);
        assert_string_equal(it_json_str(ev, "progress"), want);
        json_decref(ev);
        assert_rkey(id, &user, size, off);
        assert_int_equal(file_size_at(part), off);
    }
    char line[96];
    snprintf(line, sizeof line, "{\"action\":\"upload_complete\",\"document_id\":%lld}",
             (long long)id);
    r = it_sock_req(&s, line);
    char rel[64];
    it_data_rel_path(id, rel, sizeof rel);
    assert_string_equal(it_json_str(r, "status"), "SUCCESS");
    assert_int_equal(it_json_int(r, "v"), 1);
    assert_int_equal(it_json_int(r, "document_id"), id);
    assert_int_equal(it_json_int(r, "filesize"), size);
    assert_string_equal(it_json_str(r, "sha256"), sha);
    assert_string_equal(it_json_str(r, "file_path"), rel);
    json_decref(r);
    it_assert_stored(&srv, id, size, sha);
    it_sock_close(&s);
    free(data);
    it_pass();
}

/* Many chunks written back to back before reading any answer: one
 * progress event each, in order. */
/* Connects and starts an upload of size bytes with this hash; its id. */
static int64_t start_upload(it_sock *s, const char *name, int64_t size, const char *sha)
{
    assert_int_equal(it_sock_connect(s, srv.port), 0);
    json_t *r = it_sock_req_json(
        s, json_pack("{s:s, s:s, s:I, s:I, s:s, s:s}", "action", "upload", "filename", name,
                     "filesize", (json_int_t)size, "user_id", (json_int_t)user.id, "credential",
                     user.credential, "sha256", sha));
    it_assert_ok(r, "upload");
    int64_t id = it_json_int(r, "document_id");
    json_decref(r);
    return id;
}

/* nchunks chunks of clen bytes of data for document id, then tail, as one
 * buffer to send (malloc'ed; *len its length). */
static char *chunks_wire(int64_t id, const unsigned char *data, int nchunks, int64_t clen,
                         const char *tail, size_t *len)
{
    size_t cap = (size_t)(nchunks * clen) + (size_t)nchunks * 128 + strlen(tail) + 1;
    char *wire = malloc(cap);
    assert_non_null(wire);
    size_t w = 0;
    for (int i = 0; i < nchunks; i++) {
        w += (size_t)snprintf(
            wire + w, cap - w,
            "{\"action\":\"chunk\",\"document_id\":%lld,\"offset\":%lld,\"length\":%lld}\n",
            (long long)id, (long long)(i * clen), (long long)clen);
        memcpy(wire + w, data + i * clen, (size_t)clen);
        w += (size_t)clen;
    }
    w += (size_t)snprintf(wire + w, cap - w, "%s", tail);
    *len = w;
    return wire;
}

/* Sends the chunks and tail in one go (chunks_wire), then reads one
 * progress event a chunk, in order. */
static void send_chunks_read_progress(it_sock *s, int64_t id, const unsigned char *data,
                                      int nchunks, int64_t clen, const char *tail)
{
    size_t w = 0;
    char *wire = chunks_wire(id, data, nchunks, clen, tail, &w);
    assert_int_equal(it_sock_send(s, wire, w), 0);
    free(wire);
    for (int i = 0; i < nchunks; i++) {
        json_t *ev;
        assert_int_equal(it_sock_read_json(s, IT_REPLY_TIMEOUT_MS, &ev), IT_READ_OK);
        assert_string_equal(it_json_str(ev, "event"), "progress");
        assert_int_equal(it_json_int(ev, "received"), (int64_t)(i + 1) * clen);
        json_decref(ev);
    }
}

/* Reads the next answer: SUCCESS, with this hash. */
static void read_success(it_sock *s, const char *sha)
{
    json_t *r;
    assert_int_equal(it_sock_read_json(s, IT_REPLY_TIMEOUT_MS, &r), IT_READ_OK);
    assert_string_equal(it_json_str(r, "status"), "SUCCESS");
    assert_string_equal(it_json_str(r, "sha256"), sha);
    json_decref(r);
}

static void test_pipelined_chunks(void **state)
{
    (void)state;
    const int nchunks = 16;
    const int64_t clen = 4096, size = nchunks * clen;
    char sha[65];
    unsigned char *data = it_random_payload((size_t)size, sha);
    it_sock s;
    int64_t id = start_upload(&s, "pipelined.bin", size, sha);
    char tail[96];
    snprintf(tail, sizeof tail, "{\"action\":\"upload_complete\",\"document_id\":%lld}\n",
             (long long)id);
    send_chunks_read_progress(&s, id, data, nchunks, clen, tail);
    read_success(&s, sha);
    it_assert_stored(&srv, id, size, sha);
    it_sock_close(&s);
    free(data);
    it_pass();
}

/* A small upload's chunk and completion sent together: the chunk's
 * progress event waits for the SUCCESS and both leave in one send (conn.c,
 * holds_output), so the first read that gets anything gets both. Sent
 * apart, the progress event would come first, a sync and an UPDATE before
 * the SUCCESS. */
static void test_progress_leaves_with_success(void **state)
{
    (void)state;
    const int64_t size = 65536;
    char sha[65];
    unsigned char *data = it_random_payload((size_t)size, sha);
    it_sock s;
    int64_t id = start_upload(&s, "together.bin", size, sha);
    assert_int_equal(s.len, 0); /* nothing buffered: the next recv is the next send */
    it_sock_send_whole_and_complete(&s, id, data, (size_t)size);
    struct pollfd pfd = {.fd = s.fd, .events = POLLIN};
    assert_int_equal(poll(&pfd, 1, IT_REPLY_TIMEOUT_MS), 1);
    char got[4096];
    ssize_t n = recv(s.fd, got, sizeof got - 1, 0);
    assert_true(n > 0);
    got[n] = '\0';
    if (!strstr(got, "\"progress\"") || !strstr(got, "\"SUCCESS\"")) {
        fprintf(stderr, "it: first read: %s\n", got);
        fail_msg("the progress event and the SUCCESS came apart");
    }
    it_assert_stored(&srv, id, size, sha);
    it_sock_close(&s);
    free(data);
    it_pass();
}

/* Large chunks whose headers fall anywhere in a read, the completion and
 * two more requests, all in one send. Chunk bodies are read through the
 * worker's shared buffer (conn.c); a partial header at the end of a read,
 * and the requests after the completion (which parks its session), must
 * be kept for the connection and answered in order. */
static void test_pipelined_past_the_completion(void **state)
{
    (void)state;
    enum { NCHUNKS = 6, CLEN = 100003 }; /* odd: headers land at odd places */
    const int64_t size = (int64_t)NCHUNKS * CLEN;
    char sha[65];
    unsigned char *data = it_random_payload((size_t)size, sha);
    it_sock s;
    int64_t id = start_upload(&s, "past.bin", size, sha);
    char tail[256];
    snprintf(tail, sizeof tail,
             "{\"action\":\"upload_complete\",\"document_id\":%lld}\n"
             "{\"action\":\"status\",\"document_id\":%lld}\n"
             "{\"action\":\"list\",\"limit\":1}\n",
             (long long)id, (long long)id);
    send_chunks_read_progress(&s, id, data, NCHUNKS, CLEN, tail);
    read_success(&s, sha);
    json_t *r;
    assert_int_equal(it_sock_read_json(&s, IT_REPLY_TIMEOUT_MS, &r), IT_READ_OK);
    it_assert_ok(r, "status");
    json_t *doc = json_object_get(r, "document");
    assert_non_null(doc);
    assert_int_equal(it_json_int(doc, "document_id"), id);
    assert_string_equal(it_json_str(doc, "status"), "completed");
    json_decref(r);
    assert_int_equal(it_sock_read_json(&s, IT_REPLY_TIMEOUT_MS, &r), IT_READ_OK);
    it_assert_ok(r, "list");
    json_decref(r);
    it_assert_stored(&srv, id, size, sha);
    it_assert_open(&s);
    it_sock_close(&s);
    free(data);
    it_pass();
}

static void test_checksum_mismatch(void **state)
{
    (void)state;
    const int64_t size = 100000;
    char path[IT_PATH_MAX + 64], sha[65], wrong[65];
    snprintf(path, sizeof path, "%s/mismatch.bin", workdir);
    assert_int_equal(it_make_file(path, size, sha), 0);
    it_sha256_hex("something else", 14, wrong);

    cu_conn *c = it_cu_connect(&srv);
    cu_auth auth = auth_of(&user);
    cu_error err;
    cu_upload_info info;
    IT_CU_OK(cu_start_upload(c, &auth, "mismatch.bin", size, wrong, &info, &err), err);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    IT_CU_OK(cu_send_file(c, fd, &info, 0, 0, NULL, NULL, &err), err);
    close(fd);
    cu_complete_info done;
    IT_CU_ERR(cu_complete(c, info.document_id, &done, &err), err, 422, "checksum_mismatch");

    it_doc d;
    it_assert_doc_status(info.document_id, "failed", &d);
    assert_false(d.failure_reason_null);
    assert_true(d.failure_reason[0] != '\0');
    assert_true(d.completed_at_null);
    char part[IT_PATH_MAX + 64];
    it_upload_path(&srv, info.document_id, part, sizeof part);
    assert_int_equal(access(part, F_OK), -1);
    assert_int_equal(it_redis_exists(info.document_id), 0);

    /* the connection stays usable, and the document says failed */
    json_t *reply;
    IT_CU_OK(cu_status(c, &auth, info.document_id, &reply, &err), err);
    json_t *doc = json_object_get(reply, "document");
    assert_string_equal(it_json_str(doc, "status"), "failed");
    assert_false(it_json_is_null(doc, "failure_reason"));
    json_decref(reply);
    IT_CU_ERR(cu_resume(c, &auth, info.document_id, &info, &err), err, 409, "not_resumable");
    cu_close(c);
    unlink(path);
    it_pass();
}

/* Uploads one after another on one connection, and a second upload that
 * closes the first, which is then resumed on the same connection. */
static void test_many_on_one_connection(void **state)
{
    (void)state;
    cu_conn *c = it_cu_connect(&srv);
    cu_auth auth = auth_of(&user);
    cu_error err;
    static const int64_t sizes[] = {10, 70000, 0, 65536, 300000};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char sha[65];
        int fd = it_make_memfd(sizes[i], sha);
        assert_true(fd >= 0);
        cu_upload_info info;
        IT_CU_OK(cu_start_upload(c, &auth, "seq.bin", sizes[i], sha, &info, &err), err);
        if (sizes[i] > 0)
            IT_CU_OK(cu_send_file(c, fd, &info, 0, 0, NULL, NULL, &err), err);
        close(fd);
        cu_complete_info done;
        IT_CU_OK(cu_complete(c, info.document_id, &done, &err), err);
        assert_string_equal(done.sha256, sha);
        it_assert_stored(&srv, info.document_id, sizes[i], sha);
    }

    /* A is left half done when B starts; B's upload closes A */
    const int64_t asize = 3 * DEFAULT_CHUNK, bsize = 5000;
    char asha[65], bsha[65];
    int afd = it_make_memfd(asize, asha), bfd = it_make_memfd(bsize, bsha);
    assert_true(afd >= 0 && bfd >= 0);
    cu_upload_info a, b;
    IT_CU_OK(cu_start_upload(c, &auth, "a.bin", asize, asha, &a, &err), err);
    a.filesize = DEFAULT_CHUNK; /* send only the first chunk */
    IT_CU_OK(cu_send_file(c, afd, &a, 1, 0, NULL, NULL, &err), err);
    a.filesize = asize;
    IT_CU_OK(cu_start_upload(c, &auth, "b.bin", bsize, bsha, &b, &err), err);
    cu_complete_info done;
    IT_CU_ERR(cu_complete(c, a.document_id, &done, &err), err, 409, "upload_not_open");
    IT_CU_OK(cu_send_file(c, bfd, &b, 0, 0, NULL, NULL, &err), err);
    IT_CU_OK(cu_complete(c, b.document_id, &done, &err), err);
    it_assert_stored(&srv, b.document_id, bsize, bsha);

    assert_rkey(a.document_id, &user, asize, DEFAULT_CHUNK);
    cu_upload_info ra;
    IT_CU_OK(cu_resume(c, &auth, a.document_id, &ra, &err), err);
    assert_int_equal(ra.document_id, a.document_id);
    assert_int_equal(ra.offset, DEFAULT_CHUNK);
    assert_int_equal(ra.filesize, asize);
    IT_CU_OK(cu_send_file(c, afd, &ra, 0, 0, NULL, NULL, &err), err);
    IT_CU_OK(cu_complete(c, a.document_id, &done, &err), err);
    assert_string_equal(done.sha256, asha);
    it_assert_stored(&srv, a.document_id, asize, asha);
    close(afd);
    close(bfd);
    cu_close(c);
    it_pass();
}

static void assert_timestamp(json_t *doc, const char *key)
{
    const char *t = it_json_str(doc, key);
    size_t n = strlen(t);
    /* RFC 3339 in UTC: 2026-11-30T10:00:00Z, maybe with fractions */
    bool ok = n >= 20 && t[4] == '-' && t[7] == '-' && t[10] == 'T' && t[13] == ':' &&
              t[16] == ':' && t[n - 1] == 'Z';
    if (!ok)
        fprintf(stderr, "it: %s is not an RFC 3339 UTC time: %s\n", key, t);
    assert_true(ok);
}

static void test_status_list_abort(void **state)
{
    (void)state;
    it_user u; /* its own user, so the list is exactly what this test made */
    assert_int_equal(it_user_create(&u), 0);
    cu_auth auth = auth_of(&u);
    cu_error err;
    cu_conn *c = it_cu_connect(&srv);

    /* X: one chunk of three */
    const int64_t xsize = 200000;
    char xsha[65];
    int xfd = it_make_memfd(xsize, xsha);
    assert_true(xfd >= 0);
    cu_upload_info x;
    IT_CU_OK(cu_start_upload(c, &auth, "x.pdf", xsize, NULL, &x, &err), err);
    x.filesize = DEFAULT_CHUNK;
    IT_CU_OK(cu_send_file(c, xfd, &x, 1, 0, NULL, NULL, &err), err);
    x.filesize = xsize;
    close(xfd);

    json_t *reply;
    IT_CU_OK(cu_status(c, &auth, x.document_id, &reply, &err), err);
    it_assert_ok(reply, "status");
    json_t *doc = json_object_get(reply, "document");
    assert_true(json_is_object(doc));
    assert_int_equal(it_json_int(doc, "document_id"), x.document_id);
    assert_string_equal(it_json_str(doc, "filename"), "x.pdf");
    assert_int_equal(it_json_int(doc, "filesize"), xsize);
    assert_string_equal(it_json_str(doc, "status"), "uploading");
    assert_int_equal(it_json_int(doc, "offset"), DEFAULT_CHUNK);
    assert_true(it_json_is_null(doc, "sha256"));
    assert_true(it_json_is_null(doc, "failure_reason"));
    assert_true(it_json_is_null(doc, "file_path"));
    assert_true(it_json_is_null(doc, "completed_at"));
    assert_timestamp(doc, "created_at");
    assert_timestamp(doc, "updated_at");
    json_decref(reply);

    /* Y: completed */
    char ysha[65];
    int yfd = it_make_memfd(777, ysha);
    assert_true(yfd >= 0);
    cu_upload_info y;
    IT_CU_OK(cu_start_upload(c, &auth, "y.txt", 777, NULL, &y, &err), err);
    IT_CU_OK(cu_send_file(c, yfd, &y, 0, 0, NULL, NULL, &err), err);
    close(yfd);
    cu_complete_info done;
    IT_CU_OK(cu_complete(c, y.document_id, &done, &err), err);
    IT_CU_OK(cu_status(c, &auth, y.document_id, &reply, &err), err);
    doc = json_object_get(reply, "document");
    char rel[64];
    it_data_rel_path(y.document_id, rel, sizeof rel);
    assert_string_equal(it_json_str(doc, "status"), "completed");
    assert_string_equal(it_json_str(doc, "sha256"), ysha);
    assert_string_equal(it_json_str(doc, "file_path"), rel);
    assert_true(it_json_is_null(doc, "failure_reason"));
    assert_timestamp(doc, "completed_at");
    json_decref(reply);

    /* list: newest first, limit honoured */
    IT_CU_OK(cu_list(c, &auth, 100, &reply, &err), err);
    it_assert_ok(reply, "list");
    json_t *docs = json_object_get(reply, "documents");
    assert_true(json_is_array(docs));
    assert_int_equal(json_array_size(docs), 2);
    assert_int_equal(it_json_int(json_array_get(docs, 0), "document_id"), y.document_id);
    assert_string_equal(it_json_str(json_array_get(docs, 0), "status"), "completed");
    assert_int_equal(it_json_int(json_array_get(docs, 1), "document_id"), x.document_id);
    assert_string_equal(it_json_str(json_array_get(docs, 1), "status"), "uploading");
    json_decref(reply);
    IT_CU_OK(cu_list(c, &auth, 1, &reply, &err), err);
    docs = json_object_get(reply, "documents");
    assert_int_equal(json_array_size(docs), 1);
    assert_int_equal(it_json_int(json_array_get(docs, 0), "document_id"), y.document_id);
    json_decref(reply);

    /* abort X: failed/aborted, no file, no key; then it cannot come back */
    char part[IT_PATH_MAX + 64];
    it_upload_path(&srv, x.document_id, part, sizeof part);
    assert_int_equal(access(part, F_OK), 0);
    IT_CU_OK(cu_abort(c, &auth, x.document_id, &err), err);
    it_doc d;
    it_assert_doc_status(x.document_id, "failed", &d);
    assert_false(d.failure_reason_null);
    assert_string_equal(d.failure_reason, "aborted");
    assert_int_equal(access(part, F_OK), -1);
    assert_int_equal(it_redis_exists(x.document_id), 0);
    IT_CU_OK(cu_status(c, &auth, x.document_id, &reply, &err), err);
    doc = json_object_get(reply, "document");
    assert_string_equal(it_json_str(doc, "status"), "failed");
    assert_string_equal(it_json_str(doc, "failure_reason"), "aborted");
    json_decref(reply);
    IT_CU_ERR(cu_abort(c, &auth, x.document_id, &err), err, 409, "not_resumable");
    IT_CU_ERR(cu_abort(c, &auth, y.document_id, &err), err, 409, "not_resumable");
    it_assert_doc_status(y.document_id, "completed", NULL);
    cu_close(c);

    /* the abort answer itself, over a raw connection */
    cu_upload_info z;
    c = it_cu_connect(&srv);
    IT_CU_OK(cu_start_upload(c, &auth, "z.bin", 10, NULL, &z, &err), err);
    cu_close(c);
    it_sock s;
    assert_int_equal(it_sock_connect(&s, srv.port), 0);
    json_t *r = it_sock_req_json(
        &s, json_pack("{s:s, s:I, s:I, s:s}", "action", "abort", "document_id",
                      (json_int_t)z.document_id, "user_id", (json_int_t)u.id, "credential",
                      u.credential));
    it_assert_ok(r, "abort");
    assert_int_equal(it_json_int(r, "document_id"), z.document_id);
    json_decref(r);
    r = it_sock_req_json(&s, json_pack("{s:s, s:I}", "action", "resume", "document_id",
                                       (json_int_t)z.document_id));
    it_assert_error(r, 409, "not_resumable");
    assert_string_equal(it_json_str(r, "document_status"), "failed");
    json_decref(r);
    r = it_sock_req_json(&s, json_pack("{s:s, s:I}", "action", "resume", "document_id",
                                       (json_int_t)y.document_id));
    it_assert_error(r, 409, "not_resumable");
    assert_string_equal(it_json_str(r, "document_status"), "completed");
    json_decref(r);
    it_sock_close(&s);
    it_pass();
}

/* list answers "in the same form as status": an upload in progress shows
 * its saved offset there too. */
static void test_list_shows_offset(void **state)
{
    (void)state;
    it_user u;
    assert_int_equal(it_user_create(&u), 0);
    cu_auth auth = auth_of(&u);
    cu_error err;
    cu_conn *c = it_cu_connect(&srv);
    char sha[65];
    int fd = it_make_memfd(3 * DEFAULT_CHUNK, sha);
    assert_true(fd >= 0);
    cu_upload_info info;
    IT_CU_OK(cu_start_upload(c, &auth, "partial.bin", 3 * DEFAULT_CHUNK, NULL, &info, &err),
             err);
    info.filesize = 2 * DEFAULT_CHUNK; /* send two chunks of three */
    IT_CU_OK(cu_send_file(c, fd, &info, 0, 0, NULL, NULL, &err), err);
    close(fd);
    json_t *reply;
    IT_CU_OK(cu_list(c, &auth, 10, &reply, &err), err);
    json_t *docs = json_object_get(reply, "documents");
    assert_int_equal(json_array_size(docs), 1);
    json_t *doc = json_array_get(docs, 0);
    assert_int_equal(it_json_int(doc, "document_id"), info.document_id);
    assert_string_equal(it_json_str(doc, "status"), "uploading");
    assert_int_equal(it_json_int(doc, "offset"), 2 * DEFAULT_CHUNK);
    json_decref(reply);
    cu_close(c);
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
        IT_FIXTURE_TEST(test_size_0),
        IT_FIXTURE_TEST(test_size_1),
        IT_FIXTURE_TEST(test_size_65535),
        IT_FIXTURE_TEST(test_size_65536),
        IT_FIXTURE_TEST(test_size_65537),
        IT_FIXTURE_TEST(test_size_10mib),
        IT_FIXTURE_TEST(test_chunk_by_chunk),
        IT_FIXTURE_TEST(test_pipelined_chunks),
        IT_FIXTURE_TEST(test_progress_leaves_with_success),
        IT_FIXTURE_TEST(test_pipelined_past_the_completion),
        IT_FIXTURE_TEST(test_checksum_mismatch),
        IT_FIXTURE_TEST(test_many_on_one_connection),
        IT_FIXTURE_TEST(test_status_list_abort),
        IT_FIXTURE_TEST(test_list_shows_offset),
        IT_FIXTURE_TEST(test_server_stops_cleanly),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
