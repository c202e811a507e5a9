/* chunkctl's operator commands against a real chunkd: `uploads` reports an
 * upload in flight with its offset and writing node, `show` tells a
 * healthy document from a damaged one, and `fail` / `expire` end an upload
 * the way the server does (row failed with the reason, file, Redis state
 * and lease gone, resume refused) but never touch a completed document. */
#include "harness.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static it_server srv;
static char workdir[IT_DIR_MAX];
static it_user alice, bob;

static int group_setup(void **state)
{
    (void)state;
    it_fixture_server(&srv);
    if (it_init("it_chunkctl_uploads") != 0 || it_tmpdir("ctlup", workdir, sizeof workdir) != 0)
        return -1;
    /* Keys of our own (the server, chunkctl and the probes all read this):
     * storage-migrate looks at the lease of every upload in flight in the
     * shared MySQL, and must not see those of the test programs running
     * beside this one. */
    char prefix[64];
    snprintf(prefix, sizeof prefix, "it_chunkctl_uploads:%d:", (int)getpid());
    if (setenv("CHUNKD_REDIS_PREFIX", prefix, 1) != 0)
        return -1;
    if (it_user_create(&alice) != 0 || it_user_create(&bob) != 0)
        return -1;
    /* No sweep: the uploads left partial here must stay 'uploading' until
     * the test itself ends them. */
    static const char *const args[] = {"--workers", "2", "--sweep-interval-s", "0", NULL};
    it_server_opts o = {.args = args};
    return it_server_start(&srv, &o);
}

/* An open gate (test_fail_during_resume): its test's teardown closes it
 * first, so that a failure while the server is held in an open() lets it
 * go before the tests after it run. */
static int gate = -1;

static int gate_test_teardown(void **state)
{
    if (gate >= 0)
        close(gate);
    gate = -1;
    return it_fixture_test_teardown(state);
}

static int group_teardown(void **state)
{
    it_fixture_group_teardown(state);
    it_rmtree(workdir);
    return 0;
}

/* ---- running chunkctl ---------------------------------------------------- */

static char err_path[IT_DIR_MAX + 32];

/* Runs chunkctl ARGS... --storage-dir <the server's> (unless ARGS name
 * one); the MySQL and Redis
 * settings come from the stack env that it_init loaded. Returns the exit
 * code and stdout in *out (caller frees); prints stderr when the code is
 * not `expect`. */
static int ctl_run(int expect, char **out, const char *const *args)
{
    snprintf(err_path, sizeof err_path, "%s/chunkctl.err", workdir);
    int rc = it_chunkctl(&srv, args, err_path, out);
    if (rc != expect) {
        fprintf(stderr, "it: chunkctl %s %s: exit %d, expected %d; stdout:\n%s\n", args[0],
                args[1] ? args[1] : "", rc, expect, *out ? *out : "(none)");
        it_print_file("chunkctl stderr", err_path);
    }
    assert_int_equal(rc, expect);
    assert_non_null(*out);
    return rc;
}

/* chunkctl --json ARGS...: the one JSON value it printed (caller decrefs). */
static json_t *ctl_json(int expect, const char *const *args)
{
    const char *full[20];
    int n = 0;
    full[n++] = "--json";
    for (int i = 0; args[i]; i++) {
        assert_true(n < 19);
        full[n++] = args[i];
    }
    full[n] = NULL;
    char *text = NULL;
    ctl_run(expect, &text, full);
    json_error_t jerr;
    json_t *v = json_loads(text, 0, &jerr);
    if (!v)
        fprintf(stderr, "it: chunkctl printed no JSON (%s): %s\n", jerr.text, text);
    free(text);
    assert_non_null(v);
    return v;
}

/* Whether the last 16 KiB of the file at path hold needle. */
static bool file_tail_has(const char *path, const char *needle)
{
    return it_file_tail_has(path, needle, 16384);
}

/* chunkctl's stderr from the last run, for checking its reasons. */
static bool stderr_has(const char *needle)
{
    return file_tail_has(err_path, needle);
}

static void id_str(int64_t id, char out[24])
{
    snprintf(out, 24, "%lld", (long long)id);
}

/* The element of an `uploads --json` array for document id, or NULL. */
static json_t *find_upload(json_t *arr, int64_t id)
{
    assert_true(json_is_array(arr));
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e)
    {
        if (it_json_int(e, "document_id") == id)
            return e;
    }
    return NULL;
}

/* True when any string of the `problems` array contains needle. */
static bool problems_mention(json_t *show, const char *needle)
{
    json_t *probs = json_object_get(show, "problems");
    assert_true(json_is_array(probs));
    size_t i;
    json_t *p;
    json_array_foreach(probs, i, p)
    {
        if (strstr(json_string_value(p), needle))
            return true;
    }
    char *dump = json_dumps(probs, 0);
    fprintf(stderr, "it: no problem mentions \"%s\": %s\n", needle, dump ? dump : "?");
    free(dump);
    return false;
}

/* ---- uploads made over raw sockets -------------------------------------- */

/* An upload of `size` bytes with its first `sent` bytes sent, left open on
 * s (which holds the lease) when s is not NULL, else closed. */
static int64_t partial_upload(it_sock *s, const it_user *u, const char *name, int64_t size,
                              size_t sent)
{
    it_sock own;
    it_sock *c = s ? s : &own;
    assert_int_equal(it_sock_connect(c, srv.port), 0);
    it_sock_auth(c, u);
    int64_t id = it_sock_upload(c, name, size);
    if (sent > 0)
        it_sock_chunk_ok(c, id, 0, NULL, sent);
    if (!s)
        it_sock_close(c);
    return id;
}

/* A completed upload of `size` random bytes; its SHA-256 in sha. */
static int64_t completed_upload(const it_user *u, const char *name, size_t size, char sha[65])
{
    unsigned char *data = malloc(size);
    assert_non_null(data);
    it_random_bytes(data, size);
    it_sha256_hex(data, size, sha);
    it_sock s;
    assert_int_equal(it_sock_connect(&s, srv.port), 0);
    it_sock_auth(&s, u);
    int64_t id = it_sock_upload(&s, name, (int64_t)size);
    it_sock_chunk_ok(&s, id, 0, data, size);
    free(data);
    json_t *r = it_sock_complete(&s, id);
    assert_string_equal(it_json_str(r, "status"), "SUCCESS");
    assert_string_equal(it_json_str(r, "sha256"), sha);
    json_decref(r);
    it_sock_close(&s);
    it_assert_stored(&srv, id, (int64_t)size, sha);
    return id;
}

/* A resume of id by u, on a fresh connection: the server's answer. */
static json_t *resume(const it_user *u, int64_t id)
{
    it_sock s;
    assert_int_equal(it_sock_connect(&s, srv.port), 0);
    json_t *r = it_sock_req_json(&s, json_pack("{s:s, s:I, s:I, s:s}", "action", "resume",
                                               "document_id", (json_int_t)id, "user_id",
                                               (json_int_t)u->id, "credential", u->credential));
    it_sock_close(&s);
    return r;
}

static bool file_exists(int64_t id)
{
    char path[IT_PATH_MAX + 64];
    it_upload_path(&srv, id, path, sizeof path);
    struct stat st;
    if (stat(path, &st) == 0)
        return true;
    assert_int_equal(errno, ENOENT);
    return false;
}

/* The state `fail` and `expire` must leave: row failed with the reason, no
 * file, no Redis key, no lease, resume refused, and show content. */
static void assert_ended(const it_user *u, int64_t id, const char *reason)
{
    it_doc d;
    it_assert_doc_status(id, "failed", &d);
    assert_false(d.failure_reason_null);
    assert_string_equal(d.failure_reason, reason);
    assert_false(file_exists(id));
    assert_int_equal(it_stray_files(&srv, id), 0);
    assert_int_equal(it_redis_exists(id), 0);
    assert_int_equal(it_redis_lease_exists(id), 0);

    json_t *r = resume(u, id);
    it_assert_error(r, 409, "not_resumable");
    assert_string_equal(it_json_str(r, "document_status"), "failed");
    json_decref(r);

    char ids[24];
    id_str(id, ids);
    json_t *show = ctl_json(0, (const char *const[]){"show", ids, NULL});
    assert_true(json_is_true(json_object_get(show, "consistent")));
    json_decref(show);
}

/* ---- tests --------------------------------------------------------------- */

static void test_uploads_lists_partial_upload(void **state)
{
    (void)state;
    it_sock s;
    int64_t id = partial_upload(&s, &alice, "partial.bin", 256 * IT_KiB, 64 * IT_KiB);
    int64_t other = partial_upload(NULL, &bob, "bobs.bin", 100 * IT_KiB, 10 * IT_KiB);

    char uid[24];
    id_str(alice.id, uid);
    json_t *arr = ctl_json(0, (const char *const[]){"uploads", "--user", uid, NULL});
    json_t *e = find_upload(arr, id);
    if (!e)
        fprintf(stderr, "it: document %lld not in the uploads of user %s\n", (long long)id, uid);
    assert_non_null(e);
    assert_int_equal(it_json_int(e, "user_id"), alice.id);
    assert_string_equal(it_json_str(e, "filename"), "partial.bin");
    assert_int_equal(it_json_int(e, "filesize"), 256 * IT_KiB);
    assert_int_equal(it_json_int(e, "offset"), 64 * IT_KiB);
    assert_true(json_real_value(json_object_get(e, "percent")) == 25.0);
    /* the connection still open holds the lease: the server is writing it */
    assert_string_equal(it_json_str(e, "node"), srv.node_id);
    assert_true(it_json_int(e, "lease_ttl_ms") > 0);
    assert_string_equal(it_json_str(e, "last_node"), srv.node_id);
    int64_t idle = it_json_int(e, "idle_ms");
    assert_true(idle >= 0 && idle < 120000);
    /* --user keeps other users' uploads out */
    assert_null(find_upload(arr, other));
    json_decref(arr);

    arr = ctl_json(0, (const char *const[]){"uploads", NULL});
    assert_non_null(find_upload(arr, id));
    e = find_upload(arr, other);
    assert_non_null(e);
    assert_int_equal(it_json_int(e, "offset"), 10 * IT_KiB);
    json_decref(arr);

    /* the table: one line per upload with progress, percent and node */
    char *text = NULL;
    ctl_run(0, &text, (const char *const[]){"uploads", "--user", uid, NULL});
    char want[64];
    snprintf(want, sizeof want, "\n%lld ", (long long)id);
    const char *line = strstr(text, want);
    if (!line)
        fprintf(stderr, "it: no line for %lld in:\n%s\n", (long long)id, text);
    assert_non_null(line);
    const char *end = strchr(line + 1, '\n');
    assert_non_null(end);
    char row[512];
    snprintf(row, sizeof row, "%.*s", (int)(end - line - 1), line + 1);
    assert_non_null(strstr(row, "65536/262144"));
    assert_non_null(strstr(row, "25.0%"));
    assert_non_null(strstr(row, srv.node_id));
    assert_non_null(strstr(row, "partial.bin"));
    free(text);

    it_sock_close(&s);
    it_pass();
}

static void test_show_consistent(void **state)
{
    (void)state;
    int64_t up = partial_upload(NULL, &alice, "show-partial.bin", 200 * IT_KiB, 50 * IT_KiB);
    char ids[24];
    id_str(up, ids);
    json_t *j = ctl_json(0, (const char *const[]){"show", ids, NULL});
    assert_true(json_is_true(json_object_get(j, "consistent")));
    assert_int_equal(json_array_size(json_object_get(j, "problems")), 0);
    json_t *row = json_object_get(j, "row");
    assert_string_equal(it_json_str(row, "status"), "uploading");
    json_t *redis = json_object_get(j, "redis");
    assert_true(json_is_true(json_object_get(redis, "exists")));
    json_t *fields = json_object_get(redis, "fields");
    assert_string_equal(it_json_str(fields, "offset"), "51200");
    assert_string_equal(it_json_str(fields, "node"), srv.node_id);
    assert_true(it_json_int(redis, "ttl_s") > 0);
    json_t *file = json_object_get(j, "file");
    assert_true(json_is_true(json_object_get(file, "exists")));
    assert_int_equal(it_json_int(file, "size"), 50 * IT_KiB);
    assert_string_equal(it_json_str(file, "mode"), "0640");
    json_decref(j);

    char sha[65];
    int64_t done = completed_upload(&alice, "show-done.bin", 300000, sha);
    id_str(done, ids);
    j = ctl_json(0, (const char *const[]){"show", ids, NULL});
    assert_true(json_is_true(json_object_get(j, "consistent")));
    assert_string_equal(it_json_str(json_object_get(j, "row"), "status"), "completed");
    assert_string_equal(it_json_str(json_object_get(j, "file"), "sha256"), sha);
    assert_false(json_is_true(json_object_get(json_object_get(j, "redis"), "exists")));
    json_decref(j);

    char *text = NULL;
    ctl_run(0, &text, (const char *const[]){"show", ids, NULL});
    assert_non_null(strstr(text, "\nverdict: consistent\n"));
    assert_non_null(strstr(text, sha));
    free(text);
    it_pass();
}

static void test_show_finds_damage(void **state)
{
    (void)state;
    char sha[65], ids[24], path[IT_PATH_MAX + 64];

    /* a completed document whose file is gone */
    int64_t gone = completed_upload(&alice, "gone.bin", 70000, sha);
    it_upload_path(&srv, gone, path, sizeof path);
    assert_int_equal(unlink(path), 0);
    id_str(gone, ids);
    json_t *j = ctl_json(1, (const char *const[]){"show", ids, NULL});
    assert_true(json_is_false(json_object_get(j, "consistent")));
    assert_true(problems_mention(j, "missing"));
    json_decref(j);
    char *text = NULL;
    ctl_run(1, &text, (const char *const[]){"show", ids, NULL});
    const char *verdict = strstr(text, "\nverdict: inconsistent: ");
    assert_non_null(verdict);
    assert_non_null(strstr(verdict, "missing"));
    free(text);

    /* a completed document with one byte too many */
    int64_t grown = completed_upload(&alice, "grown.bin", 70000, sha);
    it_upload_path(&srv, grown, path, sizeof path);
    FILE *f = fopen(path, "ab");
    assert_non_null(f);
    assert_int_equal(fputc('!', f), '!');
    assert_int_equal(fclose(f), 0);
    id_str(grown, ids);
    j = ctl_json(1, (const char *const[]){"show", ids, NULL});
    assert_true(json_is_false(json_object_get(j, "consistent")));
    assert_true(problems_mention(j, "70001 bytes instead of 70000"));
    assert_true(problems_mention(j, "SHA-256"));
    json_decref(j);

    /* an upload whose Redis offset claims more than the file holds */
    int64_t up = partial_upload(NULL, &alice, "short.bin", 100 * IT_KiB, 40 * IT_KiB);
    it_upload_path(&srv, up, path, sizeof path);
    assert_int_equal(truncate(path, 30 * IT_KiB), 0);
    id_str(up, ids);
    j = ctl_json(1, (const char *const[]){"show", ids, NULL});
    assert_true(problems_mention(j, "Redis offset 40960 > file size 30720"));
    json_decref(j);

    /* an upload whose lease marks an end its row does not show */
    int64_t marked = partial_upload(NULL, &alice, "marked.bin", 100 * IT_KiB, 20 * IT_KiB);
    assert_int_equal(it_redis_wait_lease_free(marked, IT_REPLY_TIMEOUT_MS), 0);
    assert_int_equal(it_redis_set_lease(marked, "ended", 60000), 0);
    id_str(marked, ids);
    j = ctl_json(1, (const char *const[]){"show", ids, NULL});
    assert_true(problems_mention(j, "the lease says the upload ended, but the row is uploading"));
    json_t *lease = json_object_get(j, "lease");
    assert_true(json_is_true(json_object_get(lease, "ended")));
    assert_true(json_is_false(json_object_get(lease, "held")));
    json_decref(j);
    ctl_run(1, &text, (const char *const[]){"show", ids, NULL});
    assert_non_null(strstr(text, ": the upload ended ("));
    free(text);
    assert_int_equal(it_redis_del_lease(marked), 0);
    it_pass();
}

static void test_fail_and_expire(void **state)
{
    (void)state;
    char ids[24];
    int64_t a = partial_upload(NULL, &alice, "fail-reason.bin", 100 * IT_KiB, 20 * IT_KiB);
    id_str(a, ids);
    json_t *j = ctl_json(0, (const char *const[]){"fail", ids, "--reason", "customer asked", NULL});
    assert_int_equal(it_json_int(j, "document_id"), a);
    assert_string_equal(it_json_str(j, "status"), "failed");
    assert_string_equal(it_json_str(j, "failure_reason"), "customer asked");
    json_decref(j);
    /* for a while its lease says it ended, which show accepts */
    assert_int_equal(it_redis_lease_ended(a), 1);
    assert_ended(&alice, a, "customer asked");

    int64_t b = partial_upload(NULL, &alice, "fail-default.bin", 100 * IT_KiB, 20 * IT_KiB);
    id_str(b, ids);
    char *text = NULL;
    ctl_run(0, &text, (const char *const[]){"fail", ids, NULL});
    assert_non_null(strstr(text, "status=failed\n"));
    free(text);
    assert_ended(&alice, b, "failed_by_operator");

    int64_t c = partial_upload(NULL, &bob, "expire.bin", 100 * IT_KiB, 30 * IT_KiB);
    id_str(c, ids);
    j = ctl_json(0, (const char *const[]){"expire", ids, NULL});
    assert_string_equal(it_json_str(j, "failure_reason"), "expired");
    json_decref(j);
    assert_ended(&bob, c, "expired");

    /* ended once: a second time is refused */
    ctl_run(1, &text, (const char *const[]){"expire", ids, NULL});
    free(text);
    assert_true(stderr_has("not uploading"));

    /* A file left behind (a clean-up cut off) goes with the next resume. */
    char path[IT_PATH_MAX + 64];
    it_upload_path(&srv, c, path, sizeof path);
    char sha[65];
    assert_int_equal(it_make_file(path, 10 * IT_KiB, sha), 0);
    j = ctl_json(1, (const char *const[]){"show", ids, NULL});
    assert_true(problems_mention(j, "present for a failed row"));
    json_decref(j);
    json_t *r = resume(&bob, c);
    it_assert_error(r, 409, "not_resumable");
    json_decref(r);
    assert_ended(&bob, c, "expired");
    it_pass();
}

/* An upload being written right now: the operator still wins, and the
 * writer's next chunk is refused instead of landing in a failed document. */
static void test_fail_while_writing(void **state)
{
    (void)state;
    it_sock s;
    int64_t id = partial_upload(&s, &alice, "live.bin", 200 * IT_KiB, 64 * IT_KiB);
    char ids[24];
    id_str(id, ids);
    json_t *j = ctl_json(0, (const char *const[]){"fail", ids, NULL});
    assert_string_equal(it_json_str(j, "interrupted_node"), srv.node_id);
    json_decref(j);

    char hdr[160];
    it_line(hdr, sizeof hdr,
            "{\"action\":\"chunk\",\"document_id\":%lld,\"offset\":%lld,\"length\":%lld}",
            (long long)id, (long long)(64 * IT_KiB), (long long)(64 * IT_KiB));
    it_expect_chunk_error_open(&s, hdr, 64 * IT_KiB, 409, "lease_lost");
    it_sock_close(&s);
    assert_ended(&alice, id, "failed_by_operator");
    it_pass();
}

/* An operator ending an upload while a resume of it is inside its work:
 * past its read of the row (which said uploading), holding the lease, and
 * about to open the file. The server is held in that open() (an open gate)
 * while `chunkctl fail` runs, so the end falls exactly there. The resume
 * then makes the file again (a fresh copy, when the last writer did not let
 * go cleanly) and must neither write the state back nor leave the file: it
 * answers not_resumable, and nothing of the upload is left. */
static void test_fail_during_resume(void **state)
{
    (void)state;
    for (int unclean = 0; unclean < 2; unclean++) {
        int64_t id = partial_upload(NULL, &alice, "race.bin", 100 * IT_KiB, 20 * IT_KiB);
        assert_int_equal(it_redis_wait_lease_free(id, IT_REPLY_TIMEOUT_MS), 0);
        if (unclean) /* a writer that died without letting go */
            assert_int_equal(it_redis_set_upload_field(id, "writer", "gone-node/0"), 0);
        char path[IT_PATH_MAX + 64], ids[24];
        it_upload_path(&srv, id, path, sizeof path);
        id_str(id, ids);
        gate = it_gate_open_or_skip(path);
        it_sock s;
        assert_int_equal(it_sock_connect(&s, srv.port), 0);
        assert_int_equal(it_sock_send_resume(&s, id, &alice), 0);
        int held = -1;
        assert_int_equal(it_gate_wait(gate, srv.pid, IT_REPLY_TIMEOUT_MS, &held), 0);

        json_t *j = ctl_json(0, (const char *const[]){"fail", ids, NULL});
        assert_string_equal(it_json_str(j, "interrupted_node"), srv.node_id);
        json_decref(j);

        assert_int_equal(it_gate_release(gate, held), 0);
        close(gate);
        gate = -1;
        json_t *r = NULL;
        assert_int_equal(it_sock_read_json(&s, IT_REPLY_TIMEOUT_MS, &r), IT_READ_OK);
        it_assert_error(r, 409, "not_resumable");
        assert_string_equal(it_json_str(r, "document_status"), "failed");
        json_decref(r);
        it_sock_close(&s);
        assert_ended(&alice, id, "failed_by_operator");
    }
    it_pass();
}

static void test_fail_refuses_completed(void **state)
{
    (void)state;
    char sha[65], ids[24];
    int64_t id = completed_upload(&bob, "keep.bin", 123457, sha);
    id_str(id, ids);
    char *text = NULL;
    ctl_run(1, &text, (const char *const[]){"fail", ids, NULL});
    free(text);
    assert_true(stderr_has("is completed, not uploading"));
    ctl_run(1, &text, (const char *const[]){"expire", ids, NULL});
    free(text);
    assert_true(stderr_has("is completed, not uploading"));
    it_assert_stored(&srv, id, 123457, sha);
    json_t *show = ctl_json(0, (const char *const[]){"show", ids, NULL});
    assert_true(json_is_true(json_object_get(show, "consistent")));
    json_decref(show);

    /* no such document; bad usage changes nothing either */
    ctl_run(1, &text, (const char *const[]){"fail", "900000000000", NULL});
    free(text);
    assert_true(stderr_has("no document with id 900000000000"));
    ctl_run(1, &text, (const char *const[]){"show", "900000000000", NULL});
    free(text);
    ctl_run(2, &text, (const char *const[]){"fail", "abc", NULL});
    free(text);
    ctl_run(2, &text, (const char *const[]){"show", ids, "--reason", "x", NULL});
    free(text);
    ctl_run(2, &text, (const char *const[]){"fail", ids, "--reason", "two\nlines", NULL});
    free(text);
    it_assert_stored(&srv, id, 123457, sha);
    it_pass();
}

/* Puts id's file where layout 1 (bucket id & 0xff) kept it, and its path
 * where an older server wrote it: into the row of a completed document,
 * the Redis state of one in flight. Returns whether the file moved. */
static bool move_to_layout_1(int64_t id, bool completed)
{
    char now[IT_PATH_MAX + 64], old[IT_PATH_MAX + 64], dir[IT_PATH_MAX + 8], rel[48];
    it_upload_path(&srv, id, now, sizeof now);
    snprintf(rel, sizeof rel, "%02x/%lld.data", (unsigned)(id % 256), (long long)id);
    snprintf(dir, sizeof dir, "%s/%02x", srv.storage_dir, (unsigned)(id % 256));
    snprintf(old, sizeof old, "%s/%s", srv.storage_dir, rel);
    if (strcmp(now, old) == 0)
        return false; /* the two layouts agree for this id: nothing to change */
    if (completed)
        assert_int_equal(it_doc_set_file_path(id, rel), 0);
    else
        assert_int_equal(it_redis_set_upload_field(id, "path", rel), 0);
    assert_true(mkdir(dir, 0750) == 0 || errno == EEXIST);
    assert_int_equal(rename(now, old), 0);
    return true;
}

/* An upgrade from a storage folder written before the layout marker:
 * chunkd and chunkctl refuse it with the command that fixes it; after
 * `storage-migrate` the completed document is intact and the partial one
 * resumes where it stopped. */
static void test_upgrade_from_layout_1(void **state)
{
    (void)state;
    char sha[65];
    int64_t done = completed_upload(&alice, "old-done.bin", 70000, sha);
    int64_t part = partial_upload(NULL, &alice, "old-part.bin", 128 * IT_KiB, 64 * IT_KiB);
    int st;
    assert_int_equal(it_server_kill(&srv, SIGTERM, 20000, &st), 0);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);

    long expect_moved = move_to_layout_1(done, true) + move_to_layout_1(part, false);
    char marker[IT_PATH_MAX + 32];
    snprintf(marker, sizeof marker, "%s/chunkd-layout", srv.storage_dir);
    assert_int_equal(unlink(marker), 0);

    static const char *const args[] = {"--workers", "2", "--sweep-interval-s", "0", NULL};
    it_server_opts o = {.args = args};
    assert_int_equal(it_server_restart(&srv, &o), -1);
    assert_true(file_tail_has(srv.log_path, "chunkctl storage-migrate"));

    char ids[24], *text = NULL;
    id_str(done, ids);
    ctl_run(1, &text, (const char *const[]){"show", ids, NULL});
    free(text);
    assert_true(stderr_has("layout 1"));

    ctl_run(2, &text, (const char *const[]){"storage-migrate", "now", NULL});
    free(text);
    assert_true(stderr_has("'storage-migrate' takes no argument"));

    /* Without MySQL or Redis nothing is changed, and the folder stays
     * refused: the paths they keep are rewritten before any file moves. */
    char old_done[IT_PATH_MAX + 64];
    snprintf(old_done, sizeof old_done, "%s/%02x/%lld.data", srv.storage_dir,
             (unsigned)(done % 256), (long long)done);
    static const char *const no_backend[][4] = {{"--mysql-port", "1", "storage-migrate", NULL},
                                               {"--redis-port", "1", "storage-migrate", NULL}};
    for (int i = 0; i < 2; i++) {
        ctl_run(1, &text, no_backend[i]);
        free(text);
        assert_true(stderr_has(i == 0 ? "MySQL" : "Redis"));
        assert_int_equal(access(old_done, F_OK), 0);
        assert_int_equal(access(marker, F_OK), -1);
        it_doc before;
        assert_int_equal(it_doc_get(done, &before), 1);
        assert_string_equal(before.file_path, old_done + strlen(srv.storage_dir) + 1);
    }

    /* A folder that is not the one chunkd uses (empty, or marked with a
     * layout this build does not know) is refused before a row changes. */
    char wrong[IT_DIR_MAX], wrong_marker[IT_DIR_MAX + 32];
    assert_int_equal(it_tmpdir("wrong-storage", wrong, sizeof wrong), 0);
    /* a file, not a folder: its marker path is what the next case fills */
    snprintf(wrong_marker, sizeof wrong_marker, "%s/chunkd-layout", wrong);
    FILE *not_dir = fopen(wrong_marker, "w");
    assert_non_null(not_dir);
    assert_int_equal(fclose(not_dir), 0);
    ctl_run(1, &text, (const char *const[]){"--storage-dir", wrong_marker, "storage-migrate", NULL});
    free(text);
    assert_true(stderr_has("is not a folder"));
    assert_int_equal(unlink(wrong_marker), 0);
    for (int i = 0; i < 2; i++) {
        ctl_run(1, &text, (const char *const[]){"--storage-dir", wrong, "storage-migrate", NULL});
        free(text);
        assert_true(stderr_has(i == 0 ? "nothing to migrate" : "layout 3"));
        it_doc before;
        assert_int_equal(it_doc_get(done, &before), 1);
        assert_string_equal(before.file_path, old_done + strlen(srv.storage_dir) + 1);
        snprintf(wrong_marker, sizeof wrong_marker, "%s/chunkd-layout", wrong);
        FILE *f = fopen(wrong_marker, "w");
        assert_non_null(f);
        assert_true(fputs("3\n", f) >= 0);
        assert_int_equal(fclose(f), 0);
    }
    it_rmtree(wrong);

    /* A chunkd still writing an upload of the folder (its lease) stops
     * the migration before anything changes. */
    assert_int_equal(it_redis_set_lease(part, "old-node/0123", 60000), 0);
    ctl_run(1, &text, (const char *const[]){"storage-migrate", NULL});
    free(text);
    assert_true(stderr_has("is being written (lease held by old-node/0123)"));
    {
        it_doc before;
        assert_int_equal(it_doc_get(done, &before), 1);
        assert_string_equal(before.file_path, old_done + strlen(srv.storage_dir) + 1);
    }
    assert_int_equal(it_redis_del_lease(part), 0);

    /* A run that stopped between link and unlink (the move where rename
     * cannot refuse to replace: NFS) left done's file under both names: a
     * run again finishes that move instead of refusing two copies. */
    char rel_done[48], new_done[IT_PATH_MAX + 64];
    it_data_rel_path(done, rel_done, sizeof rel_done);
    snprintf(new_done, sizeof new_done, "%s/%s", srv.storage_dir, rel_done);
    bool both_names = strcmp(new_done, old_done) != 0;
    char new_dir[IT_PATH_MAX + 64];
    snprintf(new_dir, sizeof new_dir, "%s", new_done);
    *strrchr(new_dir, '/') = '\0';
    /* Its bucket made by that run, which stopped before the chown that
     * gives a bucket to the storage root's owner (run as root). */
    bool as_root = geteuid() == 0;
    struct stat root_st;
    assert_int_equal(stat(srv.storage_dir, &root_st), 0);
    if (both_names) {
        assert_true(mkdir(new_dir, 0750) == 0 || errno == EEXIST);
        assert_int_equal(link(old_done, new_done), 0);
        if (as_root) {
            assert_int_equal(chown(new_dir, 0, 0), 0);
            assert_int_equal(chown(srv.storage_dir, 65534, 65534), 0);
        }
    }

    json_t *j = ctl_json(0, (const char *const[]){"storage-migrate", NULL});
    assert_int_equal(it_json_int(j, "layout"), 2);
    assert_int_equal(it_json_int(j, "moved"), expect_moved);
    /* done's row and part's state; the other tests' are the current layout's */
    assert_int_equal(it_json_int(j, "rows_updated"), 1);
    assert_int_equal(it_json_int(j, "states_updated"), 1);
    json_decref(j);
    if (both_names) {
        assert_int_equal(access(old_done, F_OK), -1);
        struct stat bucket_st;
        assert_int_equal(stat(new_dir, &bucket_st), 0);
        if (as_root) {
            assert_int_equal(bucket_st.st_uid, 65534);
            assert_int_equal(chown(srv.storage_dir, root_st.st_uid, root_st.st_gid), 0);
        }
    }
    j = ctl_json(0, (const char *const[]){"storage-migrate", NULL}); /* again: nothing */
    assert_int_equal(it_json_int(j, "moved"), 0);
    assert_int_equal(it_json_int(j, "rows_updated"), 0);
    assert_int_equal(it_json_int(j, "states_updated"), 0);
    json_decref(j);
    it_doc d;
    char want[48];
    it_data_rel_path(done, want, sizeof want);
    assert_int_equal(it_doc_get(done, &d), 1);
    assert_string_equal(d.file_path, want);
    it_rkey k;
    it_data_rel_path(part, want, sizeof want);
    assert_int_equal(it_redis_upload(part, &k), 0);
    assert_string_equal(k.path, want);

    assert_int_equal(it_server_restart(&srv, &o), 0);
    it_assert_stored(&srv, done, 70000, sha);
    j = ctl_json(0, (const char *const[]){"show", ids, NULL});
    assert_true(json_is_true(json_object_get(j, "consistent")));
    json_decref(j);

    /* The upload in flight resumes where it stopped and completes at the
     * new layout's path. */
    it_sock s;
    assert_int_equal(it_sock_connect(&s, srv.port), 0);
    json_t *r = it_sock_req_json(&s, json_pack("{s:s, s:I, s:I, s:s}", "action", "resume",
                                               "document_id", (json_int_t)part, "user_id",
                                               (json_int_t)alice.id, "credential",
                                               alice.credential));
    assert_string_equal(it_json_str(r, "status"), "ok");
    assert_int_equal(it_json_int(r, "offset"), 64 * IT_KiB);
    json_decref(r);
    it_sock_chunk_ok(&s, part, 64 * IT_KiB, NULL, 64 * IT_KiB);
    r = it_sock_complete(&s, part);
    assert_string_equal(it_json_str(r, "status"), "SUCCESS");
    assert_string_equal(it_json_str(r, "file_path"), want);
    json_decref(r);
    it_sock_close(&s);
    id_str(part, ids);
    j = ctl_json(0, (const char *const[]){"show", ids, NULL});
    assert_true(json_is_true(json_object_get(j, "consistent")));
    assert_int_equal(it_json_int(json_object_get(j, "file"), "size"), 128 * IT_KiB);
    json_decref(j);
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
        IT_FIXTURE_TEST(test_uploads_lists_partial_upload),
        IT_FIXTURE_TEST(test_show_consistent),
        IT_FIXTURE_TEST(test_show_finds_damage),
        IT_FIXTURE_TEST(test_fail_and_expire),
        IT_FIXTURE_TEST(test_fail_while_writing),
        cmocka_unit_test_setup_teardown(test_fail_during_resume, it_fixture_test_setup,
                                        gate_test_teardown),
        IT_FIXTURE_TEST(test_fail_refuses_completed),
        IT_FIXTURE_TEST(test_upgrade_from_layout_1),
        IT_FIXTURE_TEST(test_server_stops_cleanly),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
