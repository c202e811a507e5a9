/* Requests that share a commit (upload_run_deferred): many connections of one
 * worker send `upload`, or their last chunk and `upload_complete`, at the
 * same moment, so the worker runs them as one group (one MySQL transaction,
 * one round of syncs, one Redis pipeline). Each request must still get its
 * own answer, in order on its connection, and one request's failure must
 * not touch the others. The tests hold whether or not every request lands
 * in the same group; sending everything before reading anything is what
 * makes the groups large. */
#include "harness.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define NCONN 24
#define FILESIZE 4096
#define LIMIT 5 /* --max-uploads-per-user of the limit test's server */

static it_server srv;
static it_user user, limited, second; /* limited: only for the limit test */
static int admin_port;

static int group_setup(void **state)
{
    (void)state;
    it_fixture_server(&srv);
    if (it_init("it_groups") != 0 || it_user_create(&user) != 0 ||
        it_user_create(&limited) != 0 || it_user_create(&second) != 0)
        return -1;
    /* One worker: every connection shares its groups. Batches synced
     * together whatever else the machine is writing (tests run side by
     * side): see test_failures_stay_with_their_request. */
    static const char *const env[] = {"CHUNKD_SYNC_BATCH_MAX_UNWRITTEN=1099511627776", NULL};
    return it_server_start_admin(&srv, &admin_port, env);
}

static json_t *read_answer(it_sock *s)
{
    json_t *r = NULL;
    assert_int_equal(it_sock_read_json(s, IT_REPLY_TIMEOUT_MS, &r), IT_READ_OK);
    return r;
}

static void send_named_upload_line(it_sock *s, const it_user *u, const char *name,
                                   const char *sha, int64_t size)
{
    json_t *req = json_pack("{s:s, s:I, s:s, s:s, s:I}", "action", "upload", "user_id",
                            (json_int_t)u->id, "credential", u->credential, "filename", name,
                            "filesize", (json_int_t)size);
    assert_non_null(req);
    if (sha)
        assert_int_equal(json_object_set_new(req, "sha256", json_string(sha)), 0);
    char *line = it_json_line(req);
    json_decref(req);
    assert_int_equal(it_sock_send_str(s, line), 0);
    free(line);
}

static void send_upload_line(it_sock *s, const it_user *u, const char *sha, int64_t size)
{
    send_named_upload_line(s, u, "grouped.bin", sha, size);
}

/* A group's rows go in as one multi-row INSERT, whose ids the server
 * derives from the first one. Two servers insert at the same moment, so
 * their statements interleave in MariaDB: each upload's id must still name
 * the row with its own user, name, size and declared hash. */
static void test_grouped_rows_keep_their_own_fields(void **state)
{
    (void)state;
    enum { PER = NCONN / 2 };
    it_server other;
    memset(&other, 0, sizeof other);
    assert_int_equal(it_server_start(&other, NULL), 0);
    it_sock socks[NCONN];
    char names[NCONN][32], sha[NCONN][65];
    const it_user *owner[NCONN];
    long long groups0 = it_admin_metric(admin_port, "chunkd_commit_groups_total{");
    long long requests0 = it_admin_metric(admin_port, "chunkd_commit_group_requests_total{");
    for (int i = 0; i < NCONN; i++) {
        assert_int_equal(it_sock_connect(&socks[i], i < PER ? srv.port : other.port), 0);
        snprintf(names[i], sizeof names[i], "row-%d-of-group.bin", i);
        unsigned char seed[8] = {(unsigned char)i, 1, 2, 3};
        it_sha256_hex(seed, sizeof seed, sha[i]);
        owner[i] = i % 3 ? &user : &second;
    }
    for (int k = 0; k < PER; k++) /* alternately, so both servers insert at once */
        for (int i = k; i < NCONN; i += PER)
            send_named_upload_line(&socks[i], owner[i], names[i], i % 2 ? NULL : sha[i],
                                   FILESIZE + i);
    int64_t ids[NCONN];
    for (int i = 0; i < NCONN; i++) {
        json_t *r = read_answer(&socks[i]);
        it_assert_ok(r, "upload");
        ids[i] = it_json_int(r, "document_id");
        assert_int_equal(it_json_int(r, "filesize"), FILESIZE + i);
        json_decref(r);
    }
    for (int i = 0; i < NCONN; i++) {
        it_doc d;
        assert_int_equal(it_doc_get(ids[i], &d), 1);
        assert_int_equal(d.user_id, owner[i]->id);
        assert_string_equal(d.filename, names[i]);
        assert_int_equal(d.filesize, FILESIZE + i);
        assert_string_equal(d.status, "uploading");
        assert_int_equal(d.declared_sha256_null, i % 2 != 0);
        if (i % 2 == 0)
            assert_string_equal(d.declared_sha256, sha[i]);
        for (int k = 0; k < i; k++)
            assert_true(ids[k] != ids[i]);
        it_sock_close(&socks[i]);
    }
    /* The fixture's server did put several rows in one statement. */
    long long groups = it_admin_metric(admin_port, "chunkd_commit_groups_total{") - groups0;
    long long requests = it_admin_metric(admin_port, "chunkd_commit_group_requests_total{") - requests0;
    fprintf(stderr, "it: %lld uploads in %lld groups\n", requests, groups);
    assert_int_equal(requests, PER);
    assert_true(groups < requests);
    it_assert_server_stops_cleanly(&other);
    it_pass();
}

/* r refuses with code and error, and the upload's row is failed for
 * reason. */
static void assert_refused_row_failed(json_t *r, int code, const char *error, int64_t id,
                                      const char *reason)
{
    it_assert_error(r, code, error);
    it_doc d;
    it_assert_doc_status(id, "failed", &d);
    assert_string_equal(d.failure_reason, reason);
}

/* Half the uploads declare a wrong SHA-256. Their completions fail with
 * checksum_mismatch in the same groups as the others' SUCCESS, and only
 * their rows end up failed. */
static void test_failures_stay_with_their_request(void **state)
{
    (void)state;
    static unsigned char data[NCONN][FILESIZE];
    char sha[NCONN][65];
    it_sock socks[NCONN];
    int64_t ids[NCONN];
    long long groups0 = it_admin_metric(admin_port, "chunkd_commit_groups_total{");
    long long requests0 = it_admin_metric(admin_port, "chunkd_commit_group_requests_total{");
    long long batched0 = it_admin_metric(admin_port, "chunkd_sync_batched_files_total{");
    long long fsyncs0 = it_admin_metric(admin_port, "chunkd_fsync_seconds_count{");
    for (int i = 0; i < NCONN; i++) {
        it_random_bytes(data[i], FILESIZE);
        it_sha256_hex(data[i], FILESIZE, sha[i]);
        assert_int_equal(it_sock_connect(&socks[i], srv.port), 0);
    }
    for (int i = 0; i < NCONN; i++) {
        /* a wrong hash: the real one of another upload's bytes */
        send_upload_line(&socks[i], &user, i % 2 ? sha[(i + 1) % NCONN] : sha[i], FILESIZE);
    }
    for (int i = 0; i < NCONN; i++) {
        json_t *r = read_answer(&socks[i]);
        it_assert_ok(r, "upload");
        ids[i] = it_json_int(r, "document_id");
        assert_int_equal(it_json_int(r, "offset"), 0);
        json_decref(r);
        it_assert_doc_status(ids[i], "uploading", NULL);
        assert_int_equal(it_redis_exists(ids[i]), 1);
        for (int k = 0; k < i; k++)
            assert_true(ids[k] != ids[i]);
    }
    /* Last (only) chunk and completion, pipelined, on every connection. */
    for (int i = 0; i < NCONN; i++)
        it_sock_send_whole_and_complete(&socks[i], ids[i], data[i], FILESIZE);
    for (int i = 0; i < NCONN; i++) {
        json_t *p = read_answer(&socks[i]);
        assert_string_equal(it_json_str(p, "event"), "progress");
        assert_int_equal(it_json_int(p, "received"), FILESIZE);
        json_decref(p);
        json_t *r = read_answer(&socks[i]);
        if (i % 2) {
            assert_refused_row_failed(r, 422, "checksum_mismatch", ids[i], "checksum_mismatch");
        } else {
            assert_string_equal(it_json_str(r, "status"), "SUCCESS");
            assert_int_equal(it_json_int(r, "document_id"), ids[i]);
            assert_string_equal(it_json_str(r, "sha256"), sha[i]);
            it_assert_stored(&srv, ids[i], FILESIZE, sha[i]);
        }
        json_decref(r);
        assert_int_equal(it_redis_exists(ids[i]), 0);
        assert_int_equal(it_redis_lease_exists(ids[i]), 0);
        it_assert_open(&socks[i]);
        it_sock_close(&socks[i]);
    }
    /* Every request was counted, and they did share groups: each group
     * takes at least a MySQL commit, far longer than the client needs to
     * send the rest. */
    long long groups = it_admin_metric(admin_port, "chunkd_commit_groups_total{") - groups0;
    long long requests = it_admin_metric(admin_port, "chunkd_commit_group_requests_total{") - requests0;
    fprintf(stderr, "it: %lld requests in %lld groups\n", requests, groups);
    assert_int_equal(requests, 2 * NCONN);
    assert_true(groups >= 2 && groups < requests);
    /* The completions' syncs, handed over in a few loop turns, were made
     * durable in batches (docs/DURABILITY.md) where this machine allows
     * it, as the server said at start. */
    long long batched = it_admin_metric(admin_port, "chunkd_sync_batched_files_total{") - batched0;
    long long fsyncs = it_admin_metric(admin_port, "chunkd_fsync_seconds_count{") - fsyncs0;
    fprintf(stderr, "it: %lld of %lld file syncs batched\n", batched, fsyncs);
    assert_int_equal(fsyncs, NCONN);
    if (it_file_tail_has(srv.log_path, "event=sync_batching enabled=yes", 1 << 20))
        assert_true(batched >= NCONN / 2);
    else
        assert_int_equal(batched, 0);
    it_pass();
}

/* A connection's first upload carries its credential, and the user's row is
 * read with the group's other uploads (once per user). Each request still
 * gets its own verdict: a wrong credential, a disabled user or an unknown
 * one is answered 401 alone (and its connection closed, as always after a
 * 401) and creates nothing; the others in the group go ahead. */
static void test_credentials_checked_in_the_group(void **state)
{
    (void)state;
    it_user off, wrong = user;
    assert_int_equal(it_user_create(&off), 0);
    assert_int_equal(it_user_set_disabled(off.id, true), 0);
    memset(wrong.credential, 'a', 64); /* the right form, not the right value */
    it_user unknown = second;
    unknown.id = (int64_t)1 << 60;
    const it_user *who[5] = {&user, &wrong, &second, &off, &unknown};
    const bool good[5] = {true, false, true, false, false};
    int64_t rows0 = it_doc_count(user.id, NULL), rows1 = it_doc_count(second.id, NULL);

    it_sock socks[NCONN];
    for (int i = 0; i < NCONN; i++)
        assert_int_equal(it_sock_connect(&socks[i], srv.port), 0);
    for (int i = 0; i < NCONN; i++)
        send_upload_line(&socks[i], who[i % 5], NULL, FILESIZE);
    int ok[2] = {0, 0};
    for (int i = 0; i < NCONN; i++) {
        json_t *r = read_answer(&socks[i]);
        if (good[i % 5]) {
            it_assert_ok(r, "upload");
            ok[i % 5 == 2]++;
        } else {
            it_assert_error(r, 401, "unauthorized");
            it_assert_closed(&socks[i]);
        }
        json_decref(r);
    }
    assert_int_equal(it_doc_count(user.id, NULL) - rows0, ok[0]);
    assert_int_equal(it_doc_count(second.id, NULL) - rows1, ok[1]);
    assert_int_equal(it_doc_count(off.id, NULL), 0);

    /* An authenticated connection's next upload needs no credential. */
    for (int i = 0; i < NCONN; i++) {
        if (good[i % 5]) {
            json_t *r = it_sock_req(&socks[i], "{\"action\":\"upload\",\"filename\":"
                                               "\"again.bin\",\"filesize\":4096}");
            it_assert_ok(r, "upload");
            json_decref(r);
        }
        it_sock_close(&socks[i]);
    }
    assert_int_equal(it_doc_count(user.id, NULL) - rows0, 2 * ok[0]);
    it_pass();
}

/* Rows that someone else ended (another instance's expiry sweep, an
 * operator) while their uploads were open here: the group's one-statement
 * update finds fewer rows than it asked for, and must still tell exactly
 * which completions stand. A row already completed with the same bytes
 * and path stands; one completed with other bytes does not. */
static void test_rows_ended_elsewhere_fail_alone(void **state)
{
    (void)state;
    enum { N = 8 };
    static unsigned char data[N][FILESIZE];
    char sha[N][65];
    it_sock socks[N];
    int64_t ids[N];
    for (int i = 0; i < N; i++) {
        it_random_bytes(data[i], FILESIZE);
        it_sha256_hex(data[i], FILESIZE, sha[i]);
        assert_int_equal(it_sock_connect(&socks[i], srv.port), 0);
        send_upload_line(&socks[i], &user, sha[i], FILESIZE);
        json_t *r = read_answer(&socks[i]);
        it_assert_ok(r, "upload");
        ids[i] = it_json_int(r, "document_id");
        json_decref(r);
        it_sock_chunk_ok(&socks[i], ids[i], 0, data[i], FILESIZE);
    }
    bool ended[N] = {false};
    ended[2] = ended[5] = true;
    for (int i = 0; i < N; i++)
        if (ended[i])
            assert_int_equal(it_doc_end_behind_server(ids[i], "expired"), 0);
    /* 3: completed already with these very bytes at this path (an earlier
     * attempt whose answer was lost): still this completion's SUCCESS.
     * 6: completed with other bytes: not this upload's any more. */
    char path3[64], path6[64];
    it_data_rel_path(ids[3], path3, sizeof path3);
    it_data_rel_path(ids[6], path6, sizeof path6);
    assert_int_equal(it_doc_complete_behind_server(ids[3], sha[3], path3), 0);
    assert_int_equal(it_doc_complete_behind_server(ids[6], sha[0], path6), 0);
    ended[6] = true;
    for (int i = 0; i < N; i++) {
        char done[128];
        it_line(done, sizeof done, "{\"action\":\"upload_complete\",\"document_id\":%lld}\n",
                (long long)ids[i]);
        assert_int_equal(it_sock_send_str(&socks[i], done), 0);
    }
    for (int i = 0; i < N; i++) {
        json_t *r = read_answer(&socks[i]);
        if (i == 6) {
            it_assert_error(r, 409, "not_resumable");
            assert_string_equal(it_json_str(r, "document_status"), "completed");
            it_doc d;
            it_assert_doc_status(ids[i], "completed", &d);
            assert_string_equal(d.sha256, sha[0]);
        } else if (ended[i]) {
            assert_string_equal(it_json_str(r, "document_status"), "failed");
            assert_refused_row_failed(r, 409, "not_resumable", ids[i], "expired");
        } else {
            assert_string_equal(it_json_str(r, "status"), "SUCCESS");
            assert_int_equal(it_json_int(r, "document_id"), ids[i]);
            it_assert_doc_status(ids[i], "completed", NULL);
            it_assert_stored(&srv, ids[i], FILESIZE, sha[i]);
            assert_int_equal(it_redis_exists(ids[i]), 0);
        }
        json_decref(r);
        it_assert_open(&socks[i]);
        it_sock_close(&socks[i]);
    }
    it_pass();
}

/* The per-user limit counts the uploads ahead in the same group: of twelve
 * uploads asked for at once, exactly LIMIT are opened. */
static void test_user_limit_counts_the_group(void **state)
{
    (void)state;
    enum { N = 12 };
    static const char *const args[] = {"--workers", "1", "--max-uploads-per-user", "5", NULL};
    it_server_opts o = {.args = args};
    it_server lim;
    memset(&lim, 0, sizeof lim);
    assert_int_equal(it_server_start(&lim, &o), 0);
    it_sock socks[N];
    for (int i = 0; i < N; i++)
        assert_int_equal(it_sock_connect(&socks[i], lim.port), 0);
    for (int i = 0; i < N; i++)
        send_upload_line(&socks[i], &limited, NULL, FILESIZE);
    int opened = 0, refused = 0;
    for (int i = 0; i < N; i++) {
        json_t *r = read_answer(&socks[i]);
        const char *status = it_json_str(r, "status");
        if (strcmp(status, "ok") == 0) {
            it_assert_ok(r, "upload");
            opened++;
        } else {
            it_assert_error(r, 429, "too_many_uploads");
            refused++;
        }
        json_decref(r);
    }
    assert_int_equal(opened, LIMIT);
    assert_int_equal(refused, N - LIMIT);
    assert_int_equal(it_doc_count(limited.id, "uploading"), LIMIT);
    assert_int_equal(it_doc_count(limited.id, NULL), LIMIT);
    /* A new connection's upload counts the uploads in progress with the
     * read of its user's row: refused too. */
    it_sock late;
    assert_int_equal(it_sock_connect(&late, lim.port), 0);
    send_upload_line(&late, &limited, NULL, FILESIZE);
    json_t *r = read_answer(&late);
    it_assert_error(r, 429, "too_many_uploads");
    json_decref(r);
    it_sock_close(&late);
    assert_int_equal(it_doc_count(limited.id, NULL), LIMIT);
    for (int i = 0; i < N; i++)
        it_sock_close(&socks[i]);
    it_assert_server_stops_cleanly(&lim);
    it_pass();
}

/* Connections that hang up right after asking leave nothing half-done: each
 * upload they asked for either never got a row or is an ordinary upload in
 * progress (resumable), and the server goes on serving. */
static void test_hangup_while_parked(void **state)
{
    (void)state;
    it_user u;
    assert_int_equal(it_user_create(&u), 0);
    for (int i = 0; i < NCONN; i++) {
        it_sock s;
        assert_int_equal(it_sock_connect(&s, srv.port), 0);
        send_upload_line(&s, &u, NULL, FILESIZE);
        it_sock_close(&s);
    }
    it_assert_serves(srv.port, &u);
    /* The server may still be running the last groups: wait until the
     * rows stop coming (bounded). */
    int64_t rows = -1, before = -2;
    int64_t deadline = it_now_ms() + IT_REPLY_TIMEOUT_MS;
    while (rows != before && it_now_ms() < deadline) {
        before = rows;
        it_sleep_ms(300);
        rows = it_doc_count(u.id, NULL);
    }
    assert_true(rows >= 0 && rows <= NCONN);
    assert_int_equal(it_doc_count(u.id, "uploading"), rows);
    assert_int_equal(it_doc_count(u.id, "failed"), 0);
    if (rows > 0) {
        /* and such an upload resumes like any other */
        it_sock s;
        assert_int_equal(it_sock_connect(&s, srv.port), 0);
        json_t *r = NULL;
        do { /* its connection's close may not have let go of the lease yet */
            if (r) {
                json_decref(r);
                it_sleep_ms(100);
            }
            json_t *req = json_pack("{s:s, s:I, s:s, s:I}", "action", "resume", "user_id",
                                    (json_int_t)u.id, "credential", u.credential, "document_id",
                                    (json_int_t)it_doc_newest(u.id));
            r = it_sock_req_json(&s, req);
        } while (json_integer_value(json_object_get(r, "code")) == 409 &&
                 it_now_ms() < deadline);
        it_assert_ok(r, "resume");
        assert_int_equal(it_json_int(r, "offset"), 0);
        json_decref(r);
        it_sock_close(&s);
    }
    it_pass();
}

/* A client that hangs up (with answers unread, so the kernel resets the
 * connection) right after asking for completion of a large file: its
 * file's sync is on the syncer when the connection goes, so the sync's
 * result is dropped, and the upload stays an ordinary one in progress that
 * a new connection resumes and completes. */
static void test_hangup_while_file_syncs(void **state)
{
    (void)state;
    const int64_t size = 24 * IT_MiB;
    char sha[65];
    unsigned char *data = it_random_payload((size_t)size, sha);
    it_sock s;
    assert_int_equal(it_sock_connect(&s, srv.port), 0);
    send_upload_line(&s, &user, sha, size);
    json_t *r = read_answer(&s);
    it_assert_ok(r, "upload");
    int64_t id = it_json_int(r, "document_id");
    json_decref(r);
    char *stream;
    size_t len = it_upload_stream(id, data, (size_t)size, 64 * 1024, &stream);
    assert_int_equal(it_sock_send(&s, stream, len), 0);
    free(stream);
    /* Wait until every chunk was acknowledged (the offset is saved), then
     * leave without reading a single answer. */
    int64_t deadline = it_now_ms() + IT_REPLY_TIMEOUT_MS;
    it_rkey k;
    while (it_now_ms() < deadline && it_redis_upload(id, &k) == 0 && k.exists &&
           k.offset < size)
        it_sleep_ms(5);
    it_sock_close(&s);
    /* Whatever the race gave (completed before the reset was seen, or the
     * sync's result dropped), nothing is half-done. */
    assert_int_equal(it_redis_wait_lease_free(id, IT_REPLY_TIMEOUT_MS), 0);
    it_doc d;
    assert_int_equal(it_doc_get(id, &d), 1);
    fprintf(stderr, "it: after the reset the upload is %s\n", d.status);
    if (strcmp(d.status, "uploading") == 0) {
        cu_conn *c = it_cu_connect(&srv);
        cu_auth auth = {.user_id = user.id, .credential = user.credential};
        cu_upload_info info;
        cu_error err;
        memset(&err, 0, sizeof err);
        assert_int_equal(it_cu_resume(c, &auth, id, &info, &err), 0);
        assert_int_equal(info.offset, size); /* every acknowledged byte was kept */
        cu_complete_info fin;
        assert_int_equal(cu_complete(c, id, &fin, &err), 0);
        assert_string_equal(fin.sha256, sha);
        cu_close(c);
    } else {
        assert_string_equal(d.status, "completed");
    }
    it_assert_stored(&srv, id, size, sha);
    assert_int_equal(it_redis_exists(id), 0);
    it_assert_serves(srv.port, &user);
    free(data);
    it_pass();
}

/* How the completions' UPDATE begins (docstore_mysql.c). */
#define COMPLETE_SQL "UPDATE documents SET status = 'completed'"

/* The two ways a completion's UPDATE reaches the syncer's thread. */
typedef enum commit_way {
    /* Chained to the file's sync, its checks made before it: the lease
     * was renewed less than half its time ago. */
    AFTER_SYNC,
    /* Handed over after a trip back to the worker, which asks Redis for
     * the lease first (group_complete): here because the client waits
     * past half of lease_ttl_ms between its chunk and its completion. */
    AFTER_LEASE_CHECK,
} commit_way;

#define SHORT_LEASE_MS 2000

/* A one-worker server with an admin port for `way`: with a short lease
 * for AFTER_LEASE_CHECK. */
static void start_server_for(commit_way way, it_server *sv, int *admin)
{
    static const char *const env[] = {"CHUNKD_SYNC_BATCH_MAX_UNWRITTEN=1099511627776",
                                      "CHUNKD_LEASE_TTL_MS=2000", NULL};
    static const char *const env_default[] = {"CHUNKD_SYNC_BATCH_MAX_UNWRITTEN=1099511627776",
                                              NULL};
    memset(sv, 0, sizeof *sv);
    assert_int_equal(it_server_start_admin(sv, admin, way == AFTER_SYNC ? env_default : env), 0);
}

/* Uploads one FILESIZE file of random bytes on a new connection to sv,
 * its chunk acknowledged, then holds its row locked and asks for its
 * completion (after more than half of SHORT_LEASE_MS for
 * AFTER_LEASE_CHECK); returns once the completion's UPDATE waits for the
 * lock. The document id; the bytes' SHA-256 in sha. */
static int64_t complete_against_a_locked_row(const it_server *sv, it_sock *s, char sha[65],
                                             commit_way way)
{
    unsigned char *data = it_random_payload(FILESIZE, sha);
    assert_int_equal(it_sock_connect(s, sv->port), 0);
    send_upload_line(s, &user, sha, FILESIZE);
    json_t *r = read_answer(s);
    it_assert_ok(r, "upload");
    int64_t id = it_json_int(r, "document_id");
    json_decref(r);
    it_sock_chunk_ok(s, id, 0, data, FILESIZE);
    free(data);
    if (way == AFTER_LEASE_CHECK)
        it_sleep_ms(SHORT_LEASE_MS / 2 + 100);
    assert_int_equal(it_doc_lock(id), 0);
    char line[128];
    it_line(line, sizeof line, "{\"action\":\"upload_complete\",\"document_id\":%lld}\n",
            (long long)id);
    assert_int_equal(it_sock_send_str(s, line), 0);
    assert_int_equal(it_mysql_wait_statement(COMPLETE_SQL, IT_REPLY_TIMEOUT_MS), 0);
    return id;
}

/* A completion's UPDATE runs on the worker's syncer thread, not on the
 * worker: while it waits (here for a row lock another transaction holds;
 * under load for the redo log's flush behind the files' write-back) the
 * worker answers its other connections, MySQL statements included, and the
 * completion is answered once its row is free. With the UPDATE on the
 * worker, the second connection's answer waits for the lock (until the
 * server's 5 s backend timeout). */
static void commit_waits_off_the_worker(commit_way way)
{
    /* One worker, so the second connection is the same worker's. */
    it_server one;
    int one_admin;
    start_server_for(way, &one, &one_admin);
    it_sock a, b;
    char sha[65];
    int64_t id = complete_against_a_locked_row(&one, &a, sha, way);

    assert_int_equal(it_sock_connect(&b, one.port), 0);
    send_named_upload_line(&b, &second, "meanwhile.bin", NULL, 0);
    json_t *r = NULL;
    assert_int_equal(it_sock_read_json(&b, 2000, &r), IT_READ_OK);
    it_assert_ok(r, "upload");
    int64_t other = it_json_int(r, "document_id");
    json_decref(r);
    r = NULL;
    assert_int_equal(it_sock_read_json(&a, 300, &r), IT_READ_TIMEOUT);
    json_decref(r);
    it_assert_doc_status(id, "uploading", NULL);

    assert_int_equal(it_doc_unlock(), 0);
    r = read_answer(&a);
    assert_string_equal(it_json_str(r, "status"), "SUCCESS");
    assert_string_equal(it_json_str(r, "sha256"), sha);
    json_decref(r);
    /* the clean-up left ahead of the answer */
    assert_int_equal(it_redis_exists(id), 0);
    assert_int_equal(it_redis_lease_exists(id), 0);
    it_assert_stored(&one, id, FILESIZE, sha);
    assert_int_equal(it_admin_metric(one_admin, "chunkd_commits_after_sync_total{"),
                     way == AFTER_SYNC ? 1 : 0);
    r = it_sock_complete(&b, other);
    assert_string_equal(it_json_str(r, "status"), "SUCCESS");
    json_decref(r);
    it_sock_close(&a);
    it_sock_close(&b);
    it_assert_server_stops_cleanly(&one);
    it_pass();
}

static void test_commit_waits_off_the_worker(void **state)
{
    (void)state;
    commit_waits_off_the_worker(AFTER_SYNC);
}

static void test_commit_waits_off_the_worker_after_lease_check(void **state)
{
    (void)state;
    commit_waits_off_the_worker(AFTER_LEASE_CHECK);
}

/* Waits for what the server logs when it lets go of a connection whose
 * upload is open. */
static void wait_detached(const it_server *sv, int64_t id)
{
    char needle[96];
    snprintf(needle, sizeof needle, "event=upload_detached doc=%lld ", (long long)id);
    assert_true(it_wait_file_tail_has(sv->log_path, needle, 65536, IT_REPLY_TIMEOUT_MS));
}

/* Uploads and asks for completion as complete_against_a_locked_row, then
 * resets the connection while the UPDATE waits (an abortive close, which
 * the server sees even while it reads nothing from it) and waits until the
 * server has let the session go. The upload's lease is still held: the
 * row may be completed any moment. The document id. */
static int64_t hang_up_while_row_commits(const it_server *sv, char sha[65], commit_way way)
{
    it_sock a;
    int64_t id = complete_against_a_locked_row(sv, &a, sha, way);
    json_t *r = NULL;
    assert_int_equal(it_sock_read_json(&a, 300, &r), IT_READ_TIMEOUT);
    json_decref(r);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    assert_int_equal(setsockopt(a.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    it_sock_close(&a);
    wait_detached(sv, id);
    assert_int_equal(it_redis_lease_exists(id), 1);
    return id;
}

/* The client resets its connection while its completion's UPDATE waits on
 * the syncer: the session goes (its entry in the statement is let go), the
 * row is still completed and the upload's Redis state and lease removed,
 * as for a client that leaves just before its answer, and the worker
 * serves on. */
static void hangup_while_row_commits(const it_server *sv, commit_way way)
{
    char sha[65];
    int64_t id = hang_up_while_row_commits(sv, sha, way);
    assert_int_equal(it_doc_unlock(), 0);
    assert_int_equal(it_redis_wait_gone(id, IT_REPLY_TIMEOUT_MS), 0);
    it_assert_doc_status(id, "completed", NULL);
    assert_int_equal(it_redis_lease_exists(id), 0);
    it_assert_stored(sv, id, FILESIZE, sha);
    it_assert_serves(sv->port, &user);
}

static void test_hangup_while_row_commits(void **state)
{
    (void)state;
    hangup_while_row_commits(&srv, AFTER_SYNC);
    it_pass();
}

static void test_hangup_while_row_commits_after_lease_check(void **state)
{
    (void)state;
    it_server sv;
    int sv_admin;
    start_server_for(AFTER_LEASE_CHECK, &sv, &sv_admin);
    hangup_while_row_commits(&sv, AFTER_LEASE_CHECK);
    assert_int_equal(it_admin_metric(sv_admin, "chunkd_commits_after_sync_total{"), 0);
    it_assert_server_stops_cleanly(&sv);
    it_pass();
}

/* Someone else ends the row (an abort, the expiry sweep) while the
 * completion's UPDATE waits for it on the syncer: the UPDATE changes
 * nothing, and the completion is answered not_resumable with the row's
 * status. */
static void test_row_ended_while_commit_waits(void **state)
{
    (void)state;
    it_sock a;
    char sha[65];
    int64_t id = complete_against_a_locked_row(&srv, &a, sha, AFTER_SYNC);
    assert_int_equal(it_doc_end_and_unlock("ended elsewhere"), 0);
    json_t *r = read_answer(&a);
    it_assert_error(r, 409, "not_resumable");
    assert_string_equal(it_json_str(r, "document_status"), "failed");
    json_decref(r);
    it_assert_doc_status(id, "failed", NULL);
    it_assert_open(&a);
    it_sock_close(&a);
    it_pass();
}

/* The same, with the client gone: nobody is answered, and the lease that
 * was kept for the statement is let go, so the upload is not held for
 * lease_ttl_ms after a row that was not completed. */
static void test_hangup_and_row_ended_while_commit_waits(void **state)
{
    (void)state;
    char sha[65];
    int64_t id = hang_up_while_row_commits(&srv, sha, AFTER_SYNC);
    assert_int_equal(it_doc_end_and_unlock("ended elsewhere"), 0);
    assert_int_equal(it_redis_wait_lease_free(id, IT_REPLY_TIMEOUT_MS), 0);
    it_assert_doc_status(id, "failed", NULL);
    it_assert_serves(srv.port, &user);
    it_pass();
}

/* More bytes wait in the sockets than a loop turn may read (8 MiB): the
 * server is stopped while every connection sends what its socket takes.
 * The turn's reading stops at its budget, the connections it left are
 * read in the next turns, and every upload completes whole. */
static void test_turns_share_the_reading(void **state)
{
    (void)state;
    enum { CONNS = 64 };
    const int64_t size = IT_MiB;
    const size_t chunk = 64 * 1024;
    char sha[65];
    unsigned char *data = it_random_payload((size_t)size, sha);
    it_sock socks[CONNS];
    char *stream[CONNS];
    size_t len[CONNS], sent[CONNS];
    for (int i = 0; i < CONNS; i++) {
        assert_int_equal(it_sock_connect(&socks[i], srv.port), 0);
        send_upload_line(&socks[i], &user, sha, size);
    }
    for (int i = 0; i < CONNS; i++) {
        json_t *r = read_answer(&socks[i]);
        it_assert_ok(r, "upload");
        len[i] = it_upload_stream(it_json_int(r, "document_id"), data, (size_t)size, chunk,
                                  &stream[i]);
        sent[i] = 0;
        json_decref(r);
    }
    long long cut0 = it_admin_metric(admin_port, "chunkd_read_turns_cut_total{");
    /* Nothing that can fail between the stop and the continue. */
    assert_int_equal(kill(srv.pid, SIGSTOP), 0);
    size_t waiting = 0;
    for (int i = 0; i < CONNS; i++) {
        ssize_t w;
        while (sent[i] < len[i] && (w = send(socks[i].fd, stream[i] + sent[i], len[i] - sent[i],
                                             MSG_DONTWAIT | MSG_NOSIGNAL)) > 0)
            sent[i] += (size_t)w;
        waiting += sent[i];
    }
    assert_int_equal(kill(srv.pid, SIGCONT), 0);
    fprintf(stderr, "it: %zu bytes waited in %d sockets while the server was stopped\n", waiting,
            CONNS);
    assert_true(waiting > 8 * IT_MiB);
    for (int i = 0; i < CONNS; i++)
        assert_int_equal(it_sock_send(&socks[i], stream[i] + sent[i], len[i] - sent[i]), 0);
    for (int i = 0; i < CONNS; i++) {
        json_t *r;
        for (int64_t off = 0; off < size; off += (int64_t)chunk) {
            r = read_answer(&socks[i]);
            assert_string_equal(it_json_str(r, "event"), "progress");
            json_decref(r);
        }
        r = read_answer(&socks[i]);
        assert_string_equal(it_json_str(r, "status"), "SUCCESS");
        assert_string_equal(it_json_str(r, "sha256"), sha);
        json_decref(r);
        it_sock_close(&socks[i]);
        free(stream[i]);
    }
    long long cut = it_admin_metric(admin_port, "chunkd_read_turns_cut_total{") - cut0;
    fprintf(stderr, "it: %lld turns left connections unread\n", cut);
    assert_true(cut >= 1);
    free(data);
    it_pass();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        IT_FIXTURE_TEST(test_failures_stay_with_their_request),
        IT_FIXTURE_TEST(test_credentials_checked_in_the_group),
        IT_FIXTURE_TEST(test_rows_ended_elsewhere_fail_alone),
        IT_FIXTURE_TEST(test_grouped_rows_keep_their_own_fields),
        IT_FIXTURE_TEST(test_user_limit_counts_the_group),
        IT_FIXTURE_TEST(test_hangup_while_parked),
        IT_FIXTURE_TEST(test_hangup_while_file_syncs),
        IT_FIXTURE_TEST(test_commit_waits_off_the_worker),
        IT_FIXTURE_TEST(test_commit_waits_off_the_worker_after_lease_check),
        IT_FIXTURE_TEST(test_hangup_while_row_commits),
        IT_FIXTURE_TEST(test_hangup_while_row_commits_after_lease_check),
        IT_FIXTURE_TEST(test_row_ended_while_commit_waits),
        IT_FIXTURE_TEST(test_hangup_and_row_ended_while_commit_waits),
        IT_FIXTURE_TEST(test_turns_share_the_reading),
    };
    return cmocka_run_group_tests(tests, group_setup, it_fixture_group_teardown);
}
