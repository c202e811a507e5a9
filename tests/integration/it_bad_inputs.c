/* docs/BAD-INPUTS.md, row by row. Every row of that document's tables
 * becomes one test here, named by its id and run on a fresh raw connection
 * to one chunkd with small limits. The document is the table: this file only
 * knows how to read a row, send it and compare, so the two cannot drift
 * apart. The last tests check what no row may have harmed: the uploads set
 * up before the rows (their offsets, bytes and completion), the documents
 * the rows left behind, the names in the storage directory, and a clean
 * exit on SIGTERM. */
#include "harness.h"
#include "bad_inputs_table.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* The limits the document's rows are written against. */
#define MAX_LINE "4096"
#define MAX_CHUNK 4096
#define MAX_CHUNK_STR "4096"
#define CHUNK_SIZE "1024"
#define MAX_FILE "1048576"
#define NO_SUCH_DOC INT64_C(900000000000)
/* The uploads every row could harm: VICTIM_SENT of VICTIM_SIZE bytes. */
#define VICTIM_SIZE 10000
#define VICTIM_SENT 1000
#define QUIET_MS 300
#define MIN_ROWS 50
#define MAX_ROWS 400

/* A row of the document and what running it left behind. */
typedef struct row {
    bi_row t;
    int64_t doc_id;
    bool passed;
} row;

static bi_row table[MAX_ROWS];
static row rows[MAX_ROWS];
static int nrows;
static const char *doc_path;
/* reused by every row, so a failing row leaks nothing */
static bi_plan plan;
/* the connection of the running test, closed by its teardown even when the
 * test fails half-way */
static it_sock sock = {.fd = -1};

static it_server srv;
static it_user ua, ub, udis;
static int64_t adoc, odoc, done_doc;
static unsigned char adoc_bytes[VICTIM_SIZE], odoc_bytes[VICTIM_SIZE];
static char adoc_prefix_sha[65], odoc_prefix_sha[65], adoc_sha[65], odoc_sha[65];

/* ---- failing with the row's id ---------------------------------------------------- */

static void row_fail(const row *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void row_fail(const row *r, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fail_msg("row %s (%s line %d): %s", r->t.id, doc_path, r->t.line_no, msg);
}

/* ---- comparing answers ------------------------------------------------------------- */

static bool str_is(json_t *obj, const char *key, const char *want)
{
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) && strcmp(json_string_value(v), want) == 0;
}

static bool int_is(json_t *obj, const char *key, int64_t want)
{
    json_t *v = json_object_get(obj, key);
    return json_is_integer(v) && json_integer_value(v) == want;
}

static bool answer_matches(const row *r, const bi_answer *a, json_t *j)
{
    if (!int_is(j, "v", 1))
        return false;
    switch (a->kind) {
    case BI_ANS_ERROR:
        return str_is(j, "status", "error") && int_is(j, "code", a->code) &&
               str_is(j, "reason", a->word) && json_is_string(json_object_get(j, "message")) &&
               (a->expected_offset < 0 || int_is(j, "expected_offset", a->expected_offset)) &&
               (!a->document_status[0] || str_is(j, "document_status", a->document_status));
    case BI_ANS_OK:
        return str_is(j, "status", "ok") && str_is(j, "action", a->word);
    case BI_ANS_SUCCESS:
        return str_is(j, "status", "SUCCESS") && int_is(j, "document_id", r->doc_id);
    case BI_ANS_PROGRESS:
        return str_is(j, "event", "progress") && int_is(j, "document_id", r->doc_id) &&
               int_is(j, "received", a->progress) && int_is(j, "total", r->t.setup_size);
    }
    return false;
}

static const char *read_name(enum it_read rr)
{
    switch (rr) {
    case IT_READ_OK: return "an answer";
    case IT_READ_EOF: return "the connection closed";
    case IT_READ_TIMEOUT: return "no answer in time";
    case IT_READ_ERROR: return "a socket error";
    case IT_READ_BADJSON: return "a line that is not a JSON object";
    }
    return "?";
}

static void check_answer(row *r, it_sock *s, int i)
{
    const bi_answer *a = &r->t.answers[i];
    json_t *j = NULL;
    enum it_read rr = it_sock_read_json(s, IT_REPLY_TIMEOUT_MS, &j);
    if (rr != IT_READ_OK)
        row_fail(r, "answer %d of %d (%s): %s", i + 1, r->t.nanswers, a->text, read_name(rr));
    bool ok = answer_matches(r, a, j);
    char *got = json_dumps(j, JSON_COMPACT);
    if (!ok) {
        char shown[600];
        snprintf(shown, sizeof shown, "%s", got ? got : "?");
        free(got);
        json_decref(j);
        row_fail(r, "answer %d of %d: expected %s, got %s", i + 1, r->t.nanswers, a->text, shown);
    }
    free(got);
    if (a->kind == BI_ANS_OK && strcmp(a->word, "upload") == 0 && r->t.setup != BI_SETUP_UPLOAD)
        r->doc_id = (int64_t)json_integer_value(json_object_get(j, "document_id"));
    json_decref(j);
}

/* Nothing may arrive, and the connection must stay, for QUIET_MS. */
static void expect_quiet(const row *r, it_sock *s)
{
    json_t *j = NULL;
    enum it_read rr = it_sock_read_json(s, QUIET_MS, &j);
    if (rr == IT_READ_TIMEOUT)
        return;
    char *got = j ? json_dumps(j, JSON_COMPACT) : NULL;
    char shown[600];
    snprintf(shown, sizeof shown, "%s", got ? got : read_name(rr));
    free(got);
    json_decref(j);
    row_fail(r, "expected silence at {{WAIT}}, got %s", shown);
}

static void expect_closed(const row *r, it_sock *s)
{
    json_t *j = NULL;
    enum it_read rr = it_sock_read_json(s, IT_REPLY_TIMEOUT_MS, &j);
    if (rr == IT_READ_EOF)
        return;
    char *got = j ? json_dumps(j, JSON_COMPACT) : NULL;
    char shown[600];
    snprintf(shown, sizeof shown, "%s", got ? got : read_name(rr));
    free(got);
    json_decref(j);
    row_fail(r, "expected the server to close the connection, got %s", shown);
}

/* An unknown action needs neither authentication nor an upload, so its
 * answer shows that the connection still reads control lines in step. */
static void expect_open(const row *r, it_sock *s)
{
    static const char probe[] = "{\"action\":\"it_probe\",\"v\":1}\n";
    if (it_sock_send(s, probe, sizeof probe - 1) != 0)
        row_fail(r, "expected the connection open, but sending failed: %s", strerror(errno));
    json_t *j = NULL;
    enum it_read rr = it_sock_read_json(s, IT_REPLY_TIMEOUT_MS, &j);
    if (rr != IT_READ_OK)
        row_fail(r, "expected the connection open, probe got %s", read_name(rr));
    bool ok = str_is(j, "status", "error") && int_is(j, "code", 400) &&
              str_is(j, "reason", "unknown_action");
    char *got = json_dumps(j, JSON_COMPACT);
    char shown[600];
    snprintf(shown, sizeof shown, "%s", got ? got : "?");
    free(got);
    json_decref(j);
    if (!ok)
        row_fail(r, "expected the connection open and in step; the probe got %s", shown);
}

/* ---- documents --------------------------------------------------------------------- */

/* The name in the last upload request of the input, as the server decoded it,
 * is the one stored. */
static void check_stored_name(const row *r, const bi_plan *p)
{
    char sent[1024] = "";
    size_t sent_len = 0;
    bool found = false;
    for (size_t at = 0; at < p->len;) {
        const char *nl = memchr(p->buf + at, '\n', p->len - at);
        size_t end = nl ? (size_t)(nl - p->buf) : p->len;
        json_t *req = json_loadb(p->buf + at, end - at, JSON_ALLOW_NUL, NULL);
        json_t *name = json_object_get(req, "filename");
        if (str_is(req, "action", "upload") && json_is_string(name) &&
            json_string_length(name) < sizeof sent) {
            sent_len = json_string_length(name);
            memcpy(sent, json_string_value(name), sent_len + 1);
            found = true;
        }
        json_decref(req);
        at = end + 1;
    }
    if (!found)
        row_fail(r, "an upload was accepted, but no upload request is in the input");
    it_doc d;
    it_rkey k;
    if (it_doc_get(r->doc_id, &d) != 1 || it_redis_upload(r->doc_id, &k) != 0)
        row_fail(r, "document %" PRId64 " cannot be read back", r->doc_id);
    if (strlen(d.filename) != sent_len || strcmp(d.filename, sent) != 0 ||
        strcmp(k.filename, sent) != 0)
        row_fail(r, "the stored name differs from the one sent: MariaDB \"%s\", Redis \"%s\"",
                 d.filename, k.filename);
}

static void check_row_doc(const row *r, bi_doc want, int64_t offset)
{
    if (want == BI_DOC_NONE)
        return;
    if (r->doc_id <= 0)
        row_fail(r, "the table names a document state, but the row made no document");
    it_doc d;
    if (it_doc_get(r->doc_id, &d) != 1)
        row_fail(r, "document %" PRId64 " has no row", r->doc_id);
    static const char *const names[] = {"-", "uploading", "completed", "failed"};
    if (strcmp(d.status, names[want]) != 0)
        row_fail(r, "document %" PRId64 " is %s, expected %s", r->doc_id, d.status,
                 names[want]);
    char path[IT_PATH_MAX];
    it_upload_path(&srv, r->doc_id, path, sizeof path);
    struct stat st;
    if (want == BI_DOC_UPLOADING) {
        it_rkey k;
        if (it_redis_upload(r->doc_id, &k) != 0 || !k.exists || k.offset != offset)
            row_fail(r, "document %" PRId64 ": saved offset %" PRId64 ", expected %" PRId64,
                     r->doc_id, k.offset, offset);
        if (stat(path, &st) != 0 || st.st_size < offset)
            row_fail(r, "document %" PRId64 ": the file holds fewer bytes than the offset",
                     r->doc_id);
    } else if (want == BI_DOC_COMPLETED) {
        it_assert_stored(&srv, r->doc_id, d.filesize, d.sha256);
    } else if (it_redis_exists(r->doc_id) != 0 || stat(path, &st) == 0) {
        row_fail(r, "failed document %" PRId64 " left its Redis key or its file", r->doc_id);
    }
}

static void check_victim(const row *r, int64_t id, const char *prefix_sha)
{
    it_doc d;
    it_rkey k;
    char path[IT_PATH_MAX], sha[65];
    it_upload_path(&srv, id, path, sizeof path);
    struct stat st = {0};
    bool found = it_doc_get(id, &d) == 1;
    bool keyed = it_redis_upload(id, &k) == 0;
    bool stored = stat(path, &st) == 0 && it_sha256_file(path, sha) == 0;
    if (!found || strcmp(d.status, "uploading") != 0 || !keyed || k.offset != VICTIM_SENT ||
        !stored || st.st_size != VICTIM_SENT || strcmp(sha, prefix_sha) != 0)
        row_fail(r, "upload %" PRId64 " set up before the rows changed: status %s, offset %" PRId64
                    ", file %lld bytes",
                 id, d.status, k.offset, (long long)st.st_size);
}

static void check_victims(const row *r)
{
    check_victim(r, adoc, adoc_prefix_sha);
    check_victim(r, odoc, odoc_prefix_sha);
    it_doc d;
    if (it_doc_get(done_doc, &d) != 1 || strcmp(d.status, "completed") != 0)
        row_fail(r, "the completed document %" PRId64 " changed", done_doc);
}

/* ---- one row --------------------------------------------------------------------------- */

static void run_row(void **state)
{
    row *r = *state;
    r->doc_id = 0;
    it_sock *s = &sock;
    if (it_sock_connect(s, srv.port) != 0)
        row_fail(r, "cannot connect");
    if (r->t.setup != BI_SETUP_NONE)
        it_sock_auth(s, &ua);
    if (r->t.setup == BI_SETUP_UPLOAD) {
        char name[32];
        snprintf(name, sizeof name, "row-%s", r->t.id);
        r->doc_id = it_sock_upload(s, name, r->t.setup_size);
    }
    int64_t a_docs = it_doc_count(ua.id, NULL), b_docs = it_doc_count(ub.id, NULL);

    const bi_vars v = {.uid = ua.id,
                       .ouid = ub.id,
                       .duid = udis.id,
                       .cred = ua.credential,
                       .ocred = ub.credential,
                       .dcred = udis.credential,
                       .doc = r->doc_id,
                       .adoc = adoc,
                       .odoc = odoc,
                       .done = done_doc,
                       .nodoc = NO_SUCH_DOC};
    char err[256];
    bi_plan *p = &plan;
    if (bi_expand(&r->t, &v, p, err, sizeof err) != 0)
        row_fail(r, "%s", err);
    size_t from = 0;
    for (int i = 0; i <= p->nbrk; i++) {
        size_t to = i < p->nbrk ? p->brk_at[i] : p->len;
        /* A server that closes may reset the connection before all of a
         * long input is in; its answer still arrives first. */
        if (to > from && it_sock_send(s, p->buf + from, to - from) != 0) {
            if (!r->t.closes)
                row_fail(r, "sending the input: %s", strerror(errno));
            break;
        }
        from = to;
        if (i < p->nbrk && p->brk_kind[i] == 'W')
            expect_quiet(r, s);
        else if (i < p->nbrk && shutdown(s->fd, SHUT_WR) != 0)
            row_fail(r, "shutdown: %s", strerror(errno));
    }
    for (int i = 0; i < r->t.nanswers; i++)
        check_answer(r, s, i);
    if (r->t.closes)
        expect_closed(r, s);
    else
        expect_open(r, s);
    it_sock_close(s);

    it_assert_serves(srv.port, &ua);
    if (r->t.doc == BI_DOC_NONE &&
        (it_doc_count(ua.id, NULL) != a_docs || it_doc_count(ub.id, NULL) != b_docs))
        row_fail(r, "a document was created");
    check_row_doc(r, r->t.doc, r->t.doc_offset);
    bool made_upload = false;
    for (int i = 0; i < r->t.nanswers; i++) {
        const bi_answer *a = &r->t.answers[i];
        made_upload |= a->kind == BI_ANS_OK && strcmp(a->word, "upload") == 0;
    }
    if (made_upload && r->t.setup != BI_SETUP_UPLOAD)
        check_stored_name(r, p);
    check_victims(r);
    r->passed = true;
    it_pass();
}

static int row_teardown(void **state)
{
    const row *r = *state;
    if (!r->passed)
        fprintf(stderr, "it_bad_inputs: row %s sent: %s\n", r->t.id, r->t.input);
    it_sock_close(&sock);
    return it_fixture_test_teardown(state);
}

/* ---- before and after the rows --------------------------------------------------------- */

static void make_victim(const it_user *u, int64_t *id, unsigned char *bytes, char prefix_sha[65],
                        char sha[65])
{
    it_random_bytes(bytes, VICTIM_SIZE);
    it_sha256_hex(bytes, VICTIM_SENT, prefix_sha);
    it_sha256_hex(bytes, VICTIM_SIZE, sha);
    it_sock *s = &sock;
    assert_int_equal(it_sock_connect(s, srv.port), 0);
    it_sock_auth(s, u);
    *id = it_sock_upload(s, "victim", VICTIM_SIZE);
    it_sock_chunk_ok(s, *id, 0, bytes, VICTIM_SENT);
    it_sock_close(s);
}

static int group_setup(void **state)
{
    (void)state;
    it_fixture_server(&srv);
    if (it_init("it_bad_inputs") != 0 || it_user_create(&ua) != 0 || it_user_create(&ub) != 0 ||
        it_user_create(&udis) != 0 || it_user_set_disabled(udis.id, true) != 0)
        return -1;
    const char *const args[] = {"--workers",    "2",        "--max-line",       MAX_LINE,
                                "--chunk-size", CHUNK_SIZE, "--max-chunk-size", MAX_CHUNK_STR,
                                "--max-file-size", MAX_FILE, NULL};
    it_server_opts o = {.args = args};
    if (it_server_start(&srv, &o) != 0)
        return -1;
    make_victim(&ua, &adoc, adoc_bytes, adoc_prefix_sha, adoc_sha);
    make_victim(&ub, &odoc, odoc_bytes, odoc_prefix_sha, odoc_sha);
    it_sock *s = &sock;
    assert_int_equal(it_sock_connect(s, srv.port), 0);
    it_sock_auth(s, &ua);
    done_doc = it_sock_upload(s, "done", 10);
    it_sock_chunk_ok(s, done_doc, 0, "0123456789", 10);
    char line[96];
    it_line(line, sizeof line, "{\"action\":\"upload_complete\",\"document_id\":%lld}",
            (long long)done_doc);
    json_t *j = it_sock_req(s, line);
    assert_true(str_is(j, "status", "SUCCESS"));
    json_decref(j);
    it_sock_close(s);
    return 0;
}

static int group_teardown(void **state)
{
    it_fixture_group_teardown(state);
    bi_plan_free(&plan);
    return 0;
}

static int plain_teardown(void **state)
{
    it_sock_close(&sock);
    return it_fixture_test_teardown(state);
}

/* resume, asked again while the row's closed connection still holds the lease */
static json_t *resume(it_sock *s, int64_t id)
{
    char line[96];
    it_line(line, sizeof line, "{\"action\":\"resume\",\"document_id\":%lld}", (long long)id);
    int64_t deadline = it_now_ms() + IT_REPLY_TIMEOUT_MS;
    for (;;) {
        json_t *j = it_sock_req(s, line);
        if (!str_is(j, "reason", "locked") || it_now_ms() > deadline)
            return j;
        json_decref(j);
        it_sleep_ms(50);
    }
}

/* Every row's document is still what its row left: an upload resumes at the
 * row's offset, with exactly that many bytes in its file afterwards. */
static void test_row_documents_after_all_rows(void **state)
{
    (void)state;
    it_sock *s = &sock;
    assert_int_equal(it_sock_connect(s, srv.port), 0);
    it_sock_auth(s, &ua);
    for (int i = 0; i < nrows; i++) {
        const row *r = &rows[i];
        if (!r->passed || r->t.doc == BI_DOC_NONE)
            continue;
        check_row_doc(r, r->t.doc, r->t.doc_offset);
        if (r->t.doc != BI_DOC_UPLOADING)
            continue;
        json_t *j = resume(s, r->doc_id);
        if (!str_is(j, "status", "ok") || !int_is(j, "offset", r->t.doc_offset))
            row_fail(r, "resume of %" PRId64 " did not answer ok at offset %" PRId64, r->doc_id,
                     r->t.doc_offset);
        json_decref(j);
        char path[IT_PATH_MAX];
        it_upload_path(&srv, r->doc_id, path, sizeof path);
        struct stat st;
        if (stat(path, &st) != 0 || st.st_size != r->t.doc_offset)
            row_fail(r, "after resume the file of %" PRId64 " is not %" PRId64 " bytes",
                     r->doc_id, r->t.doc_offset);
    }
    it_sock_close(s);
    it_pass();
}

static void finish_victim(const it_user *u, int64_t id, const unsigned char *bytes,
                          const char *sha)
{
    it_sock *s = &sock;
    assert_int_equal(it_sock_connect(s, srv.port), 0);
    it_sock_auth(s, u);
    json_t *j = resume(s, id);
    it_assert_ok(j, "resume");
    assert_int_equal(it_json_int(j, "offset"), VICTIM_SENT);
    json_decref(j);
    for (int64_t off = VICTIM_SENT; off < VICTIM_SIZE;) {
        size_t n = VICTIM_SIZE - off < MAX_CHUNK ? (size_t)(VICTIM_SIZE - off) : MAX_CHUNK;
        it_sock_chunk_ok(s, id, off, bytes + off, n);
        off += (int64_t)n;
    }
    char line[96];
    it_line(line, sizeof line, "{\"action\":\"upload_complete\",\"document_id\":%lld}",
            (long long)id);
    j = it_sock_req(s, line);
    assert_true(str_is(j, "status", "SUCCESS"));
    assert_string_equal(it_json_str(j, "sha256"), sha);
    json_decref(j);
    it_sock_close(s);
    it_assert_stored(&srv, id, VICTIM_SIZE, sha);
}

/* The uploads every row aimed at finish with exactly the bytes sent to them. */
static void test_victims_finish_intact(void **state)
{
    (void)state;
    finish_victim(&ua, adoc, adoc_bytes, adoc_sha);
    finish_victim(&ub, odoc, odoc_bytes, odoc_sha);
    it_pass();
}

/* No name a client chose reached the disk: every file is <bucket>/<id>.data
 * of a document of this program's users. */
static void test_storage_holds_only_server_names(void **state)
{
    (void)state;
    DIR *top = opendir(srv.storage_dir);
    assert_non_null(top);
    int files = 0;
    for (struct dirent *b; (b = readdir(top));) {
        if (strcmp(b->d_name, ".") == 0 || strcmp(b->d_name, "..") == 0)
            continue;
        char dir[IT_PATH_MAX + 300];
        snprintf(dir, sizeof dir, "%s/%s", srv.storage_dir, b->d_name);
        if (strcmp(b->d_name, "chunkd-layout") == 0) { /* the server's own marker */
            char version[8] = "";
            FILE *f = fopen(dir, "r");
            assert_non_null(f);
            assert_non_null(fgets(version, sizeof version, f));
            fclose(f);
            assert_string_equal(version, "2\n");
            continue;
        }
        DIR *bucket = opendir(dir);
        if (!bucket || strlen(b->d_name) != 2 || !isxdigit((unsigned char)b->d_name[0]) ||
            !isxdigit((unsigned char)b->d_name[1]))
            fail_msg("storage holds %s, which is not a bucket directory", b->d_name);
        for (struct dirent *e; (e = readdir(bucket));) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            long long id = 0;
            int used = 0;
            char rel[64];
            it_doc d;
            bool ok = sscanf(e->d_name, "%lld.data%n", &id, &used) == 1 &&
                      (size_t)used == strlen(e->d_name) && id > 0;
            if (ok)
                it_data_rel_path(id, rel, sizeof rel);
            ok = ok && strncmp(rel, b->d_name, 2) == 0 && it_doc_get(id, &d) == 1 &&
                 (d.user_id == ua.id || d.user_id == ub.id);
            if (!ok)
                fail_msg("storage holds %s/%s, not a name chunkd makes", b->d_name, e->d_name);
            files++;
        }
        closedir(bucket);
    }
    closedir(top);
    assert_true(files > 0);
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
    doc_path = getenv("CHUNKD_BAD_INPUTS_DOC");
    if (!doc_path || !*doc_path) {
        fprintf(stderr, "it_bad_inputs: CHUNKD_BAD_INPUTS_DOC is not set (run through ctest)\n");
        return 1;
    }
    if (bi_load(doc_path, table, MAX_ROWS, &nrows) != 0) {
        bi_free(table, nrows);
        return 1;
    }
    if (nrows < MIN_ROWS) {
        fprintf(stderr, "it_bad_inputs: %s has %d rows, fewer than %d\n", doc_path, nrows,
                MIN_ROWS);
        bi_free(table, nrows);
        return 1;
    }
    static const struct CMUnitTest after[] = {
        cmocka_unit_test_setup_teardown(test_row_documents_after_all_rows, it_fixture_test_setup,
                                        plain_teardown),
        cmocka_unit_test_setup_teardown(test_victims_finish_intact, it_fixture_test_setup,
                                        plain_teardown),
        cmocka_unit_test_setup_teardown(test_storage_holds_only_server_names, it_fixture_test_setup,
                                        plain_teardown),
        cmocka_unit_test_setup_teardown(test_server_stops_cleanly, it_fixture_test_setup,
                                        plain_teardown),
    };
    size_t nafter = sizeof after / sizeof after[0];
    struct CMUnitTest *tests = calloc((size_t)nrows + nafter, sizeof *tests);
    if (!tests) {
        bi_free(table, nrows);
        return 1;
    }
    for (int i = 0; i < nrows; i++) {
        rows[i].t = table[i];
        tests[i] = (struct CMUnitTest){.name = rows[i].t.name,
                                       .test_func = run_row,
                                       .setup_func = it_fixture_test_setup,
                                       .teardown_func = row_teardown,
                                       .initial_state = &rows[i]};
    }
    memcpy(tests + nrows, after, sizeof after);
    int failed = _cmocka_run_group_tests("it_bad_inputs", tests, (size_t)nrows + nafter,
                                         group_setup, group_teardown);
    free(tests);
    bi_free(table, nrows);
    return failed;
}
