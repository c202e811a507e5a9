/* Harness: users and documents in MySQL, upload keys in Redis. Used from the
 * test program's main thread only. */
#include "harness.h"
#include "harness_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include <hiredis.h>
#include <mysql.h>

static MYSQL *db;
static redisContext *rc;

static int env_port(const char *key, const char *def, unsigned *out)
{
    const char *v = it_env(key, def);
    char *end;
    errno = 0;
    long p = strtol(v, &end, 10);
    if (errno != 0 || *end != '\0' || p <= 0 || p > 65535) {
        fprintf(stderr, "it: %s=%s is not a port\n", key, v);
        return -1;
    }
    *out = (unsigned)p;
    return 0;
}

/* A connection to the test stack's database; NULL with the reason on
 * stderr. */
static MYSQL *open_db(void)
{
    unsigned port;
    if (env_port("CHUNKD_MYSQL_PORT", "3306", &port) != 0)
        return NULL;
    MYSQL *m = mysql_init(NULL);
    if (!m) {
        fprintf(stderr, "it: mysql_init: out of memory\n");
        return NULL;
    }
    unsigned timeout = 10;
    if (mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &timeout) != 0 ||
        mysql_options(m, MYSQL_OPT_READ_TIMEOUT, &timeout) != 0 ||
        mysql_options(m, MYSQL_OPT_WRITE_TIMEOUT, &timeout) != 0) {
        fprintf(stderr, "it: mysql_options: %s\n", mysql_error(m));
        mysql_close(m);
        return NULL;
    }
    const char *sock = it_env("CHUNKD_MYSQL_SOCKET", NULL);
    if (!mysql_real_connect(m, it_env("CHUNKD_MYSQL_HOST", "127.0.0.1"),
                            it_env("CHUNKD_MYSQL_USER", "chunkd"),
                            it_env("CHUNKD_MYSQL_PASSWORD", ""),
                            it_env("CHUNKD_MYSQL_DATABASE", "chunkd"), port, sock, 0)) {
        fprintf(stderr, "it: MySQL connect %s:%u: %s\n", it_env("CHUNKD_MYSQL_HOST", "127.0.0.1"),
                port, mysql_error(m));
        mysql_close(m);
        return NULL;
    }
    return m;
}

int it_db_connect(void)
{
    if (mysql_library_init(0, NULL, NULL) != 0) {
        fprintf(stderr, "it: mysql_library_init failed\n");
        return -1;
    }
    db = open_db();
    if (!db) {
        mysql_library_end();
        return -1;
    }
    return 0;
}

void it_db_disconnect(void)
{
    (void)it_doc_unlock();
    if (db) {
        mysql_close(db);
        db = NULL;
        mysql_library_end();
    }
}

int it_redis_connect(void)
{
    unsigned port;
    if (env_port("CHUNKD_REDIS_PORT", "6379", &port) != 0)
        return -1;
    const char *host = it_env("CHUNKD_REDIS_HOST", "127.0.0.1");
    struct timeval tv = {10, 0};
    rc = redisConnectWithTimeout(host, (int)port, tv);
    if (!rc || rc->err) {
        fprintf(stderr, "it: Redis connect %s:%u: %s\n", host, port,
                rc ? rc->errstr : "out of memory");
        it_redis_disconnect();
        return -1;
    }
    if (redisSetTimeout(rc, tv) != REDIS_OK) {
        fprintf(stderr, "it: Redis timeout: %s\n", rc->errstr);
        it_redis_disconnect();
        return -1;
    }
    const char *pw = it_env("CHUNKD_REDIS_PASSWORD", NULL);
    const char *dbn = it_env("CHUNKD_REDIS_DB", "0");
    redisReply *r = NULL;
    if (pw) {
        r = redisCommand(rc, "AUTH %s", pw);
        if (!r || r->type == REDIS_REPLY_ERROR) {
            fprintf(stderr, "it: Redis AUTH: %s\n", r ? r->str : rc->errstr);
            goto fail;
        }
        freeReplyObject(r);
    }
    if (strcmp(dbn, "0") != 0) {
        r = redisCommand(rc, "SELECT %s", dbn);
        if (!r || r->type == REDIS_REPLY_ERROR) {
            fprintf(stderr, "it: Redis SELECT %s: %s\n", dbn, r ? r->str : rc->errstr);
            goto fail;
        }
        freeReplyObject(r);
    }
    return 0;
fail:
    if (r)
        freeReplyObject(r);
    it_redis_disconnect();
    return -1;
}

void it_redis_disconnect(void)
{
    if (rc) {
        redisFree(rc);
        rc = NULL;
    }
}

/* ---- MySQL helpers ------------------------------------------------------- */

static MYSQL_STMT *stmt_exec(const char *sql, MYSQL_BIND *params)
{
    MYSQL_STMT *st = mysql_stmt_init(db);
    if (!st) {
        fprintf(stderr, "it: mysql_stmt_init: %s\n", mysql_error(db));
        return NULL;
    }
    if (mysql_stmt_prepare(st, sql, (unsigned long)strlen(sql)) != 0 ||
        (params && mysql_stmt_bind_param(st, params) != 0) || mysql_stmt_execute(st) != 0) {
        fprintf(stderr, "it: SQL \"%s\": %s\n", sql, mysql_stmt_error(st));
        mysql_stmt_close(st);
        return NULL;
    }
    return st;
}

static void bind_i64(MYSQL_BIND *b, int64_t *v)
{
    memset(b, 0, sizeof *b);
    b->buffer_type = MYSQL_TYPE_LONGLONG;
    b->buffer = v;
}

static void bind_str(MYSQL_BIND *b, const char *s, unsigned long *len)
{
    memset(b, 0, sizeof *b);
    *len = (unsigned long)strlen(s);
    b->buffer_type = MYSQL_TYPE_STRING;
    b->buffer = (void *)s;
    b->buffer_length = *len;
    b->length = len;
}

static void bind_out_str(MYSQL_BIND *b, char *buf, size_t cap, unsigned long *len,
                         my_bool *is_null)
{
    memset(b, 0, sizeof *b);
    b->buffer_type = MYSQL_TYPE_STRING;
    b->buffer = buf;
    b->buffer_length = (unsigned long)(cap - 1);
    b->length = len;
    b->is_null = is_null;
}

/* Executes a one-column BIGINT query; 1 with *out, 0 no row, -1 error. */
static int query_i64(const char *sql, MYSQL_BIND *params, int64_t *out)
{
    MYSQL_STMT *st = stmt_exec(sql, params);
    if (!st)
        return -1;
    MYSQL_BIND res;
    bind_i64(&res, out);
    my_bool is_null = 0;
    res.is_null = &is_null;
    int r = -1;
    if (mysql_stmt_bind_result(st, &res) != 0) {
        fprintf(stderr, "it: bind result: %s\n", mysql_stmt_error(st));
    } else {
        int f = mysql_stmt_fetch(st);
        if (f == 0)
            r = is_null ? 0 : 1;
        else if (f == MYSQL_NO_DATA)
            r = 0;
        else
            fprintf(stderr, "it: fetch \"%s\": %s\n", sql, mysql_stmt_error(st));
    }
    mysql_stmt_close(st);
    return r;
}

/* ---- users ---------------------------------------------------------------- */

int it_user_create(it_user *u)
{
    static unsigned seq;
    unsigned char rnd[32];
    memset(u, 0, sizeof *u);
    it_random_bytes(rnd, sizeof rnd);
    for (size_t i = 0; i < sizeof rnd; i++)
        snprintf(u->credential + 2 * i, 3, "%02x", rnd[i]);
    snprintf(u->name, sizeof u->name, "it-%d-%u-%02x%02x%02x", (int)getpid(), seq++, rnd[0],
             rnd[1], rnd[2]);
    char hash[65];
    it_sha256_hex(u->credential, strlen(u->credential), hash);

    MYSQL_BIND p[2];
    unsigned long l0, l1;
    bind_str(&p[0], u->name, &l0);
    bind_str(&p[1], hash, &l1);
    MYSQL_STMT *st = stmt_exec("INSERT INTO users (name, credential_hash) VALUES (?, ?)", p);
    if (!st)
        return -1;
    u->id = (int64_t)mysql_stmt_insert_id(st);
    mysql_stmt_close(st);
    if (u->id <= 0) {
        fprintf(stderr, "it: no id for the new user %s\n", u->name);
        return -1;
    }
    return 0;
}

int it_user_set_disabled(int64_t id, bool disabled)
{
    int64_t flag = disabled ? 1 : 0;
    MYSQL_BIND p[2];
    bind_i64(&p[0], &flag);
    bind_i64(&p[1], &id);
    MYSQL_STMT *st = stmt_exec("UPDATE users SET disabled = ? WHERE id = ?", p);
    if (!st)
        return -1;
    my_ulonglong n = mysql_stmt_affected_rows(st);
    mysql_stmt_close(st);
    if (n != 1) {
        fprintf(stderr, "it: user %lld not updated\n", (long long)id);
        return -1;
    }
    return 0;
}

/* Runs an UPDATE meant to end one 'uploading' row; -1 unless it changed
 * exactly that row. */
/* Runs an UPDATE that must change document id's row; else says `unchanged`
 * (why not) and fails. */
static int change_one_row(const char *sql, MYSQL_BIND *p, int64_t id, const char *unchanged)
{
    MYSQL_STMT *st = stmt_exec(sql, p);
    if (!st)
        return -1;
    my_ulonglong n = mysql_stmt_affected_rows(st);
    mysql_stmt_close(st);
    if (n != 1) {
        fprintf(stderr, "it: document %lld %s\n", (long long)id, unchanged);
        return -1;
    }
    return 0;
}

static int end_uploading_row(const char *sql, MYSQL_BIND *p, int64_t id)
{
    return change_one_row(sql, p, id, "was not uploading");
}

int it_docs_insert(int64_t user_id, int n, bool failed, int64_t *first_id)
{
    for (int i = 0; i < n; i++) {
        char name[64];
        snprintf(name, sizeof name, "filler-%d.bin", i);
        MYSQL_BIND p[2];
        unsigned long nlen;
        bind_i64(&p[0], &user_id);
        bind_str(&p[1], name, &nlen);
        MYSQL_STMT *st = stmt_exec(failed ? "INSERT INTO documents (user_id, filename, filesize, "
                                            "status, failure_reason) VALUES (?, ?, 1000, "
                                            "'failed', 'expired')"
                                          : "INSERT INTO documents (user_id, filename, filesize) "
                                            "VALUES (?, ?, 1000)",
                                   p);
        if (!st)
            return -1;
        if (i == 0 && first_id)
            *first_id = (int64_t)mysql_stmt_insert_id(st);
        mysql_stmt_close(st);
    }
    return 0;
}

int it_doc_wait_lock_waiter(int timeout_ms)
{
    int64_t deadline = it_now_ms() + timeout_ms;
    for (;;) {
        /* the process list, not INNODB_TRX (which needs PROCESS): a
         * user sees its own threads, and chunkd is the same user here */
        if (mysql_query(db, "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                            "WHERE STATE = 'Updating' AND INFO LIKE 'UPDATE documents%'") != 0) {
            fprintf(stderr, "it: reading the lock waits: %s\n", mysql_error(db));
            return -1;
        }
        MYSQL_RES *res = mysql_store_result(db);
        MYSQL_ROW row = res ? mysql_fetch_row(res) : NULL;
        long waiting = row && row[0] ? strtol(row[0], NULL, 10) : 0;
        mysql_free_result(res);
        if (waiting > 0)
            return 0;
        if (it_now_ms() >= deadline) {
            fprintf(stderr, "it: no statement waits for a row lock after %d ms\n", timeout_ms);
            return -1;
        }
        it_sleep_ms(10);
    }
}

int64_t it_mysql_global_status(const char *name)
{
    MYSQL_BIND p[1];
    unsigned long nlen;
    bind_str(&p[0], name, &nlen);
    MYSQL_STMT *st = stmt_exec("SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS "
                               "WHERE VARIABLE_NAME = ?",
                               p);
    if (!st)
        return -1;
    char value[64] = "";
    unsigned long vlen = 0;
    MYSQL_BIND r[1];
    memset(r, 0, sizeof r);
    r[0].buffer_type = MYSQL_TYPE_STRING;
    r[0].buffer = value;
    r[0].buffer_length = sizeof value - 1;
    r[0].length = &vlen;
    int64_t out = -1;
    if (mysql_stmt_bind_result(st, r) == 0 && mysql_stmt_store_result(st) == 0 &&
        mysql_stmt_fetch(st) == 0) {
        value[vlen < sizeof value ? vlen : sizeof value - 1] = '\0';
        out = strtoll(value, NULL, 10);
    } else {
        fprintf(stderr, "it: global status %s: %s\n", name, mysql_stmt_error(st));
    }
    mysql_stmt_close(st);
    return out;
}

int it_docs_fail_uploading(void)
{
    if (mysql_query(db, "UPDATE documents SET status = 'failed', failure_reason = 'test_reset' "
                        "WHERE status = 'uploading'") != 0) {
        fprintf(stderr, "it: ending the uploading rows: %s\n", mysql_error(db));
        return -1;
    }
    return 0;
}

/* An uploading row ended by hand, as another program would; the last
 * parameter is the row's id. */
static const char fail_sql[] = "UPDATE documents SET status = 'failed', failure_reason = ? "
                               "WHERE id = ? AND status = 'uploading'";
static const char complete_sql[] = "UPDATE documents SET status = 'completed', sha256 = ?, "
                                   "file_path = ?, completed_at = CURRENT_TIMESTAMP(3) "
                                   "WHERE id = ? AND status = 'uploading'";

typedef struct row_end {
    MYSQL_BIND p[3];
    unsigned long len[2];
    int64_t doc;
} row_end;

static void bind_fail(row_end *e, int64_t id, const char *reason)
{
    e->doc = id;
    bind_str(&e->p[0], reason, &e->len[0]);
    bind_i64(&e->p[1], &e->doc);
}

static void bind_complete(row_end *e, int64_t id, const char *sha256, const char *file_path)
{
    e->doc = id;
    bind_str(&e->p[0], sha256, &e->len[0]);
    bind_str(&e->p[1], file_path, &e->len[1]);
    bind_i64(&e->p[2], &e->doc);
}

int it_doc_end_behind_server(int64_t id, const char *reason)
{
    row_end e;
    bind_fail(&e, id, reason);
    return end_uploading_row(fail_sql, e.p, id);
}

int it_doc_complete_behind_server(int64_t id, const char *sha256, const char *file_path)
{
    row_end e;
    bind_complete(&e, id, sha256, file_path);
    return end_uploading_row(complete_sql, e.p, id);
}

int it_doc_set_file_path(int64_t id, const char *file_path)
{
    int64_t doc = id;
    MYSQL_BIND p[2];
    unsigned long plen;
    bind_str(&p[0], file_path, &plen);
    bind_i64(&p[1], &doc);
    return change_one_row("UPDATE documents SET file_path = ? WHERE id = ?", p, id,
                          "has no row, or that file_path already");
}

int it_user_get(int64_t id, it_user_row *u)
{
    memset(u, 0, sizeof *u);
    MYSQL_BIND p[1];
    bind_i64(&p[0], &id);
    MYSQL_STMT *st =
        stmt_exec("SELECT name, credential_hash, disabled FROM users WHERE id = ?", p);
    if (!st)
        return -1;
    MYSQL_BIND r[3];
    unsigned long len[2] = {0};
    my_bool nul[2] = {0};
    int64_t disabled = 0;
    bind_out_str(&r[0], u->name, sizeof u->name, &len[0], &nul[0]);
    bind_out_str(&r[1], u->credential_hash, sizeof u->credential_hash, &len[1], &nul[1]);
    bind_i64(&r[2], &disabled);
    int ret = -1;
    if (mysql_stmt_bind_result(st, r) != 0) {
        fprintf(stderr, "it: bind result: %s\n", mysql_stmt_error(st));
    } else {
        int f = mysql_stmt_fetch(st);
        if (f == 0) {
            u->disabled = disabled != 0;
            ret = 1;
        } else if (f == MYSQL_NO_DATA) {
            ret = 0;
        } else {
            fprintf(stderr, "it: fetch user %lld: %s\n", (long long)id, mysql_stmt_error(st));
        }
    }
    mysql_stmt_close(st);
    return ret;
}

/* ---- documents -------------------------------------------------------------- */

int it_doc_get(int64_t id, it_doc *d)
{
    memset(d, 0, sizeof *d);
    MYSQL_BIND p[1];
    bind_i64(&p[0], &id);
    MYSQL_STMT *st = stmt_exec(
        "SELECT id, user_id, filename, filesize, status, declared_sha256, sha256, "
        "file_path, failure_reason, completed_at IS NULL FROM documents WHERE id = ?",
        p);
    if (!st)
        return -1;
    MYSQL_BIND r[10];
    unsigned long len[10] = {0};
    my_bool nul[10] = {0};
    int64_t completed_null = 0;
    bind_i64(&r[0], &d->id);
    bind_i64(&r[1], &d->user_id);
    bind_out_str(&r[2], d->filename, sizeof d->filename, &len[2], &nul[2]);
    bind_i64(&r[3], &d->filesize);
    bind_out_str(&r[4], d->status, sizeof d->status, &len[4], &nul[4]);
    bind_out_str(&r[5], d->declared_sha256, sizeof d->declared_sha256, &len[5], &nul[5]);
    bind_out_str(&r[6], d->sha256, sizeof d->sha256, &len[6], &nul[6]);
    bind_out_str(&r[7], d->file_path, sizeof d->file_path, &len[7], &nul[7]);
    bind_out_str(&r[8], d->failure_reason, sizeof d->failure_reason, &len[8], &nul[8]);
    bind_i64(&r[9], &completed_null);
    int ret = -1;
    if (mysql_stmt_bind_result(st, r) != 0) {
        fprintf(stderr, "it: bind result: %s\n", mysql_stmt_error(st));
        goto out;
    }
    int f = mysql_stmt_fetch(st);
    if (f == MYSQL_NO_DATA) {
        ret = 0;
        goto out;
    }
    if (f != 0) {
        fprintf(stderr, "it: fetch document %lld: %s\n", (long long)id,
                f == MYSQL_DATA_TRUNCATED ? "a column is longer than expected"
                                          : mysql_stmt_error(st));
        goto out;
    }
    /* the buffers were zeroed and one byte longer than bound: terminated */
    d->declared_sha256_null = nul[5];
    d->sha256_null = nul[6];
    d->file_path_null = nul[7];
    d->failure_reason_null = nul[8];
    d->completed_at_null = completed_null != 0;
    ret = 1;
out:
    mysql_stmt_close(st);
    return ret;
}

int64_t it_doc_count(int64_t user_id, const char *status)
{
    MYSQL_BIND p[2];
    unsigned long l;
    int64_t n = 0;
    bind_i64(&p[0], &user_id);
    int r;
    if (status) {
        bind_str(&p[1], status, &l);
        r = query_i64("SELECT COUNT(*) FROM documents WHERE user_id = ? AND status = ?", p, &n);
    } else {
        r = query_i64("SELECT COUNT(*) FROM documents WHERE user_id = ?", p, &n);
    }
    return r < 0 ? -1 : n;
}

int64_t it_doc_newest(int64_t user_id)
{
    MYSQL_BIND p[1];
    int64_t id = 0;
    bind_i64(&p[0], &user_id);
    int r = query_i64("SELECT id FROM documents WHERE user_id = ? ORDER BY id DESC LIMIT 1", p,
                      &id);
    return r < 0 ? -1 : r == 0 ? 0 : id;
}

void it_assert_doc_status(int64_t id, const char *status, it_doc *out)
{
    it_doc d;
    int r = it_doc_get(id, &d);
    if (r != 1)
        fprintf(stderr, "it: documents row %lld %s\n", (long long)id,
                r == 0 ? "does not exist" : "cannot be read");
    assert_int_equal(r, 1);
    if (strcmp(d.status, status) != 0)
        fprintf(stderr, "it: document %lld is '%s', expected '%s' (failure_reason %s)\n",
                (long long)id, d.status, status, d.failure_reason_null ? "NULL" : d.failure_reason);
    assert_string_equal(d.status, status);
    if (out)
        *out = d;
}

/* ---- Redis ------------------------------------------------------------------ */

static void upload_key(int64_t id, char *out, size_t outlen)
{
    snprintf(out, outlen, "%supload:%lld", it_env("CHUNKD_REDIS_PREFIX", "chunkd:"),
             (long long)id);
}

/* "<cmd> <key>" with an integer answer into *out; 0, or -1 (said why). */
static int key_int(const char *cmd, const char *key, long long *out)
{
    redisReply *r = redisCommand(rc, "%s %s", cmd, key);
    if (!r || r->type != REDIS_REPLY_INTEGER) {
        fprintf(stderr, "it: %s %s: %s\n", cmd, key, r ? "not an integer" : rc->errstr);
        if (r)
            freeReplyObject(r);
        return -1;
    }
    *out = r->integer;
    freeReplyObject(r);
    return 0;
}

static int parse_i64(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

int it_redis_upload(int64_t id, it_rkey *k)
{
    memset(k, 0, sizeof *k);
    k->offset = k->synced_offset = k->filesize = k->user_id = -1;
    char key[128];
    upload_key(id, key, sizeof key);
    redisReply *r = redisCommand(rc, "HGETALL %s", key);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        fprintf(stderr, "it: HGETALL %s: %s\n", key,
                r ? (r->type == REDIS_REPLY_ERROR ? r->str : "not an array") : rc->errstr);
        if (r)
            freeReplyObject(r);
        return -1;
    }
    int ret = 0;
    k->exists = r->elements > 0;
    k->nfields = (int)(r->elements / 2);
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const char *f = r->element[i]->str, *v = r->element[i + 1]->str;
        if (!f || !v)
            continue;
        int bad = 0;
        if (strcmp(f, "offset") == 0)
            bad = parse_i64(v, &k->offset);
        else if (strcmp(f, "synced_offset") == 0)
            bad = parse_i64(v, &k->synced_offset);
        else if (strcmp(f, "filesize") == 0)
            bad = parse_i64(v, &k->filesize);
        else if (strcmp(f, "user_id") == 0)
            bad = parse_i64(v, &k->user_id);
        else if (strcmp(f, "path") == 0)
            snprintf(k->path, sizeof k->path, "%s", v);
        else if (strcmp(f, "node") == 0)
            snprintf(k->node, sizeof k->node, "%s", v);
        else if (strcmp(f, "filename") == 0)
            snprintf(k->filename, sizeof k->filename, "%s", v);
        else if (strcmp(f, "declared_sha256") == 0)
            snprintf(k->declared_sha256, sizeof k->declared_sha256, "%s", v);
        if (bad) {
            fprintf(stderr, "it: %s field %s='%s' is not an integer\n", key, f, v);
            ret = -1;
        }
    }
    freeReplyObject(r);
    long long ttl = 0;
    if (key_int("TTL", key, &ttl) != 0)
        ret = -1;
    else
        k->ttl = ttl;
    return ret;
}

int it_redis_exists(int64_t id)
{
    char key[128];
    upload_key(id, key, sizeof key);
    long long n = 0;
    if (key_int("EXISTS", key, &n) != 0)
        return -1;
    return n > 0;
}

/* Polls probe(id) every 10 ms until it is no longer 1 or timeout_ms
 * passed; its last answer. */
static int wait_while(int (*probe)(int64_t), int64_t id, int timeout_ms)
{
    for (int waited = 0;; waited += 10) {
        int e = probe(id);
        if (e <= 0 || waited >= timeout_ms)
            return e;
        it_sleep_ms(10);
    }
}

int it_redis_wait_gone(int64_t id, int timeout_ms)
{
    return wait_while(it_redis_exists, id, timeout_ms);
}

static void lease_key(int64_t id, char *out, size_t outlen)
{
    snprintf(out, outlen, "%slease:%lld", it_env("CHUNKD_REDIS_PREFIX", "chunkd:"),
             (long long)id);
}

static redisContext *watch_rc;
static char watch_kind[32];

static int set_notifications(const char *flags)
{
    redisReply *r = redisCommand(rc, "CONFIG SET notify-keyspace-events %s", flags);
    int ok = r && r->type == REDIS_REPLY_STATUS;
    if (!ok)
        fprintf(stderr, "it: CONFIG SET notify-keyspace-events: %s\n",
                r ? (r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply") : rc->errstr);
    if (r)
        freeReplyObject(r);
    return ok ? 0 : -1;
}

int it_redis_watch_start(const char *kind)
{
    unsigned port;
    if (watch_rc || env_port("CHUNKD_REDIS_PORT", "6379", &port) != 0)
        return -1;
    snprintf(watch_kind, sizeof watch_kind, "%s", kind);
    struct timeval tv = {10, 0};
    watch_rc = redisConnectWithTimeout(it_env("CHUNKD_REDIS_HOST", "127.0.0.1"), (int)port, tv);
    if (!watch_rc || watch_rc->err) {
        fprintf(stderr, "it: Redis watch connect: %s\n",
                watch_rc ? watch_rc->errstr : "out of memory");
        goto fail;
    }
    /* K: keyspace channels; A: every kind of command. */
    if (set_notifications("KA") != 0)
        goto fail;
    redisReply *r = redisCommand(watch_rc, "PSUBSCRIBE __keyspace@%s__:%s%s:*",
                                 it_env("CHUNKD_REDIS_DB", "0"),
                                 it_env("CHUNKD_REDIS_PREFIX", "chunkd:"), kind);
    bool ok = r && r->type == REDIS_REPLY_ARRAY;
    if (r)
        freeReplyObject(r);
    if (ok)
        return 0;
    fprintf(stderr, "it: Redis PSUBSCRIBE failed: %s\n", watch_rc->errstr);
fail:
    if (watch_rc)
        redisFree(watch_rc);
    watch_rc = NULL;
    return -1;
}

int it_redis_watch_end(int64_t id, int wait_ms)
{
    if (!watch_rc)
        return -1;
    char suffix[64];
    int slen = snprintf(suffix, sizeof suffix, ":%s:%lld", watch_kind, (long long)id);
    struct timeval tv = {wait_ms / 1000, (wait_ms % 1000) * 1000};
    int count = 0;
    if (redisSetTimeout(watch_rc, tv) != REDIS_OK)
        count = -1;
    /* Reads until nothing more comes within wait_ms (the read then fails
     * with a timeout, and the connection is done). */
    for (int i = 0; count >= 0 && i < 100000; i++) {
        void *p = NULL;
        if (redisGetReply(watch_rc, &p) != REDIS_OK)
            break;
        redisReply *r = p;
        /* pmessage, pattern, channel, event */
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 4 &&
            r->element[2]->type == REDIS_REPLY_STRING) {
            const redisReply *ch = r->element[2];
            if (ch->len >= (size_t)slen && memcmp(ch->str + ch->len - slen, suffix, slen) == 0) {
                fprintf(stderr, "it: Redis: %s on %.*s\n",
                        r->element[3]->type == REDIS_REPLY_STRING ? r->element[3]->str : "?",
                        (int)ch->len, ch->str);
                count++;
            }
        }
        freeReplyObject(r);
    }
    redisFree(watch_rc);
    watch_rc = NULL;
    if (set_notifications("") != 0)
        return -1;
    return count;
}

/* What an ended upload's lease holds for a while (docs/CHUNKCTL.md):
 * spelt out here, so that a change of the server's fails the tests. */
#define LEASE_ENDED "ended"

/* The lease's value into out ("" when there is none); 0, or -1. */
static int lease_value(int64_t id, char *out, size_t size)
{
    char key[128];
    lease_key(id, key, sizeof key);
    redisReply *r = redisCommand(rc, "GET %s", key);
    if (!r || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL)) {
        fprintf(stderr, "it: GET %s: %s\n", key, r ? "unexpected reply" : rc->errstr);
        if (r)
            freeReplyObject(r);
        return -1;
    }
    snprintf(out, size, "%s", r->type == REDIS_REPLY_STRING ? r->str : "");
    freeReplyObject(r);
    return 0;
}

int it_redis_lease_exists(int64_t id)
{
    char v[256];
    if (lease_value(id, v, sizeof v) != 0)
        return -1;
    return v[0] != '\0' && strcmp(v, LEASE_ENDED) != 0;
}

int it_redis_lease_ended(int64_t id)
{
    char v[256];
    if (lease_value(id, v, sizeof v) != 0)
        return -1;
    return strcmp(v, LEASE_ENDED) == 0;
}

long long it_redis_lease_pttl(int64_t id)
{
    char key[128];
    lease_key(id, key, sizeof key);
    long long v = 0;
    return key_int("PTTL", key, &v) == 0 ? v : -3;
}

int it_redis_wait_lease_free(int64_t id, int timeout_ms)
{
    return wait_while(it_redis_lease_exists, id, timeout_ms);
}

int it_redis_set_lease(int64_t id, const char *token, int ttl_ms)
{
    char key[128];
    lease_key(id, key, sizeof key);
    redisReply *r = redisCommand(rc, "SET %s %s PX %d", key, token, ttl_ms);
    bool ok = r && r->type == REDIS_REPLY_STATUS;
    if (!ok)
        fprintf(stderr, "it: SET %s: %s\n", key, r ? "unexpected reply" : rc->errstr);
    if (r)
        freeReplyObject(r);
    return ok ? 0 : -1;
}

int it_redis_del_lease(int64_t id)
{
    char key[128];
    lease_key(id, key, sizeof key);
    return it_redis_del(key);
}

int it_redis_reserved(int64_t id)
{
    char pattern[128], field[32];
    snprintf(pattern, sizeof pattern, "%sreserved:*", it_env("CHUNKD_REDIS_PREFIX", "chunkd:"));
    snprintf(field, sizeof field, "%lld", (long long)id);
    char cursor[32] = "0";
    int found = 0;
    do {
        redisReply *r = redisCommand(rc, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING ||
            r->element[1]->type != REDIS_REPLY_ARRAY) {
            fprintf(stderr, "it: SCAN %s: %s\n", pattern, r ? "unexpected reply" : rc->errstr);
            if (r)
                freeReplyObject(r);
            return -1;
        }
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        redisReply *keys = r->element[1];
        for (size_t i = 0; i < keys->elements && found == 0; i++) {
            redisReply *h = redisCommand(rc, "HEXISTS %s %s", keys->element[i]->str, field);
            if (!h || h->type != REDIS_REPLY_INTEGER)
                found = -1;
            else if (h->integer > 0)
                found = 1;
            if (h)
                freeReplyObject(h);
        }
        freeReplyObject(r);
    } while (found == 0 && strcmp(cursor, "0") != 0);
    if (found < 0)
        fprintf(stderr, "it: HEXISTS of reservation %s failed\n", field);
    return found;
}

void it_redis_reserved_key(const char *storage_dir, char *out, size_t size)
{
    uint64_t h = 14695981039346656037u;
    for (const unsigned char *p = (const unsigned char *)storage_dir; *p; p++)
        h = (h ^ *p) * 1099511628211u;
    snprintf(out, size, "%sreserved:%016" PRIx64, it_env("CHUNKD_REDIS_PREFIX", "chunkd:"), h);
}

/* A command whose reply is not an error: 0, or -1 with why. */
static int redis_ok(redisReply *r, const char *what, const char *key)
{
    bool ok = r && r->type != REDIS_REPLY_ERROR;
    if (!ok)
        fprintf(stderr, "it: %s %s: %s\n", what, key, r ? r->str : rc->errstr);
    if (r)
        freeReplyObject(r);
    return ok ? 0 : -1;
}

int it_redis_hget(const char *key, const char *field, char *out, size_t size)
{
    redisReply *r = redisCommand(rc, "HGET %s %s", key, field);
    int found = -1;
    if (r && r->type == REDIS_REPLY_STRING) {
        snprintf(out, size, "%s", r->str);
        found = 1;
    } else if (r && r->type == REDIS_REPLY_NIL) {
        found = 0;
    } else {
        fprintf(stderr, "it: HGET %s %s: %s\n", key, field,
                !r ? rc->errstr : r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    }
    if (r)
        freeReplyObject(r);
    return found;
}



int it_redis_hset(const char *key, const char *field, const char *value)
{
    return redis_ok(redisCommand(rc, "HSET %s %s %s", key, field, value), "HSET", key);
}

int it_redis_set(const char *key, const char *value)
{
    return redis_ok(redisCommand(rc, "SET %s %s", key, value), "SET", key);
}

int it_redis_del(const char *key)
{
    return redis_ok(redisCommand(rc, "DEL %s", key), "DEL", key);
}

int it_redis_flushall(void)
{
    redisReply *r = redisCommand(rc, "FLUSHALL");
    if (!r || r->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "it: FLUSHALL: %s\n", r ? r->str : rc->errstr);
        if (r)
            freeReplyObject(r);
        return -1;
    }
    freeReplyObject(r);
    return 0;
}

int it_redis_shutdown(void)
{
    /* Success is the connection closing under the command: no reply. */
    redisReply *r = redisCommand(rc, "SHUTDOWN");
    int ret = 0;
    if (r) {
        fprintf(stderr, "it: SHUTDOWN answered: %s\n",
                r->type == REDIS_REPLY_ERROR || r->type == REDIS_REPLY_STATUS ? r->str : "?");
        freeReplyObject(r);
        ret = -1;
    }
    /* The context stays, in its error state: probes fail cleanly until
     * it_backends_reconnect. */
    return ret;
}

int it_backends_reconnect(void)
{
    /* Not it_db_disconnect: the MySQL library stays initialised. */
    if (db) {
        mysql_close(db);
        db = NULL;
    }
    it_redis_disconnect();
    if (it_db_connect() != 0)
        return -1;
    return it_redis_connect();
}

int it_redis_set_upload_field(int64_t id, const char *field, const char *value)
{
    char key[128];
    upload_key(id, key, sizeof key);
    /* HSET only on a hash that is there: a new one would be a state the
     * server never wrote. */
    redisReply *r = redisCommand(rc, "EVAL %s 1 %s %s %s",
                                 "if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end "
                                 "return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])",
                                 key, field, value);
    bool ok = r && r->type == REDIS_REPLY_INTEGER && r->integer >= 0;
    if (!ok)
        fprintf(stderr, "it: HSET %s %s: %s\n", key, field,
                !r ? rc->errstr : r->type == REDIS_REPLY_ERROR ? r->str : "no such key");
    if (r)
        freeReplyObject(r);
    return ok ? 0 : -1;
}

int it_redis_del_upload(int64_t id)
{
    char key[128];
    upload_key(id, key, sizeof key);
    return it_redis_del(key);
}

/* ---- a row held by another transaction -------------------------------- */

static MYSQL *lock_db; /* its own connection: the lock is that transaction's */
static int64_t lock_id; /* the row it holds */

int it_doc_lock(int64_t id)
{
    if (lock_db)
        return -1; /* one at a time */
    lock_db = open_db();
    if (!lock_db)
        return -1;
    int64_t doc = id;
    MYSQL_BIND p[1];
    bind_i64(&p[0], &doc);
    MYSQL_STMT *st = NULL;
    bool ok = mysql_query(lock_db, "START TRANSACTION") == 0 &&
              (st = mysql_stmt_init(lock_db)) != NULL;
    static const char sql[] = "SELECT id FROM documents WHERE id = ? FOR UPDATE";
    ok = ok && mysql_stmt_prepare(st, sql, sizeof sql - 1) == 0 &&
         mysql_stmt_bind_param(st, p) == 0 && mysql_stmt_execute(st) == 0 &&
         mysql_stmt_store_result(st) == 0 && mysql_stmt_num_rows(st) == 1;
    if (!ok)
        fprintf(stderr, "it: lock of document %lld: %s\n", (long long)id,
                st && mysql_stmt_errno(st) ? mysql_stmt_error(st) : mysql_error(lock_db));
    if (st)
        mysql_stmt_close(st);
    if (!ok) {
        mysql_close(lock_db);
        lock_db = NULL;
        return -1;
    }
    lock_id = id;
    return 0;
}

/* Runs sql (an UPDATE of the locked row with params p, the row's id the
 * last) in the lock's own transaction, commits it and lets the row go. */
static int update_and_unlock(const char *sql, MYSQL_BIND *p)
{
    if (!lock_db)
        return -1;
    MYSQL_STMT *st = mysql_stmt_init(lock_db);
    bool ok = st && mysql_stmt_prepare(st, sql, strlen(sql)) == 0 &&
              mysql_stmt_bind_param(st, p) == 0 && mysql_stmt_execute(st) == 0 &&
              mysql_stmt_affected_rows(st) == 1 && mysql_query(lock_db, "COMMIT") == 0;
    if (!ok)
        fprintf(stderr, "it: ending document %lld: %s\n", (long long)lock_id,
                st && mysql_stmt_errno(st) ? mysql_stmt_error(st) : mysql_error(lock_db));
    if (st)
        mysql_stmt_close(st);
    mysql_close(lock_db); /* rolls back whatever did not commit */
    lock_db = NULL;
    return ok ? 0 : -1;
}

int it_doc_end_and_unlock(const char *reason)
{
    row_end e;
    bind_fail(&e, lock_id, reason);
    return update_and_unlock(fail_sql, e.p);
}

int it_doc_complete_and_unlock(const char *sha256, const char *file_path)
{
    row_end e;
    bind_complete(&e, lock_id, sha256, file_path);
    return update_and_unlock(complete_sql, e.p);
}

int it_doc_unlock(void)
{
    if (!lock_db)
        return 0;
    int ret = mysql_query(lock_db, "ROLLBACK") == 0 ? 0 : -1;
    if (ret != 0)
        fprintf(stderr, "it: unlock: %s\n", mysql_error(lock_db));
    mysql_close(lock_db); /* ends the transaction either way */
    lock_db = NULL;
    return ret;
}

int it_mysql_wait_statement(const char *prefix, int timeout_ms)
{
    int64_t deadline = it_now_ms() + timeout_ms;
    for (;;) {
        unsigned long l1, l2;
        MYSQL_BIND p[2];
        bind_str(&p[0], prefix, &l1);
        bind_str(&p[1], prefix, &l2);
        int64_t n = 0;
        if (query_i64("SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                      "WHERE ID <> CONNECTION_ID() AND LEFT(INFO, CHAR_LENGTH(?)) = ?",
                      p, &n) < 0)
            return -1;
        if (n > 0)
            return 0;
        if (it_now_ms() >= deadline) {
            fprintf(stderr, "it: no statement beginning \"%s\" ran within %d ms\n", prefix,
                    timeout_ms);
            return -1;
        }
        it_sleep_ms(10);
    }
}
