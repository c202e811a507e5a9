/* MySQL/MariaDB access: a lazily opened connection per worker, statements
 * prepared once per connection, every call checked. */
#include "chunkd/docstore_mysql.h"

#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <errmsg.h>
#include <mysql.h>

#include "chunkd/log.h"


enum stmt_id {
    ST_GET_USER,
    ST_GET_USER_COUNTING,
    ST_INSERT_DOC,
    ST_GET_DOC,
    ST_COMPLETE_DOC,
    ST_FAIL_DOC,
    ST_LIST_DOCS,
    ST_STALE_DOCS,
    ST_COUNT_UPLOADING,
    ST_RECENTLY_FAILED,
    ST_COUNT
};

#define DOC_COLUMNS                                                                        \
    "id, user_id, filesize, filename, declared_sha256, sha256, status, file_path, "       \
    "failure_reason, created_at, updated_at, completed_at"

static const char *const stmt_sql[ST_COUNT] = {
    [ST_GET_USER] = "SELECT id, credential_hash, disabled FROM users WHERE id = ?",
    [ST_GET_USER_COUNTING] = "SELECT id, credential_hash, disabled, (SELECT COUNT(*) FROM "
                             "documents WHERE documents.user_id = users.id AND status = "
                             "'uploading') FROM users WHERE id = ?",
    [ST_INSERT_DOC] = "INSERT INTO documents (user_id, filename, filesize, declared_sha256, "
                      "status) VALUES (?, ?, ?, ?, 'uploading')",
    [ST_GET_DOC] = "SELECT " DOC_COLUMNS " FROM documents WHERE id = ?",
    [ST_COMPLETE_DOC] = "UPDATE documents SET status = 'completed', sha256 = ?, file_path = ?, "
                        "completed_at = CURRENT_TIMESTAMP(3) WHERE id = ? AND status = 'uploading'",
    [ST_FAIL_DOC] = "UPDATE documents SET status = 'failed', failure_reason = ? "
                    "WHERE id = ? AND status = 'uploading'",
    [ST_LIST_DOCS] = "SELECT " DOC_COLUMNS " FROM documents WHERE user_id = ? "
                     "ORDER BY id DESC LIMIT ?",
    [ST_STALE_DOCS] = "SELECT id FROM documents WHERE status = 'uploading' "
                      "AND created_at < CURRENT_TIMESTAMP(3) - INTERVAL ? SECOND "
                      "AND id > ? ORDER BY id LIMIT ?",
    [ST_COUNT_UPLOADING] = "SELECT COUNT(*) FROM documents WHERE user_id = ? "
                           "AND status = 'uploading'",
    [ST_RECENTLY_FAILED] = "SELECT id FROM documents WHERE status = 'failed' "
                           "AND updated_at >= CURRENT_TIMESTAMP(3) - INTERVAL ? SECOND "
                           "AND id > ? ORDER BY id LIMIT ?",
};

/* Not prepared at connect: statements for a given number of rows,
 * prepared the first time that number is needed (rows_stmt). A server
 * holds at most max_prepared_stmt_count (16382 by default) for all its
 * clients, so a connection keeps few: an UPDATE of n rows runs as one of
 * the next power of two (the last row repeated: 7 sizes in all), and of
 * the INSERTs, which cannot be padded, the ROWS_KEPT used last. */
enum rows_stmt_id {
    ST_INSERT_ROWS = ST_COUNT, /* INSERT of n new rows */
    ST_COMPLETE_ROWS,          /* UPDATE of n rows to 'completed' */
    ST_ROWS_END
};
#define ROWS_KINDS (ST_ROWS_END - ST_COUNT)
enum { ROWS_KEPT = 16 };

struct docstore {
    const chunkd_config *cfg;
    metrics *m; /* may be NULL */
    MYSQL *db;
    MYSQL_STMT *stmt[ST_COUNT];
    MYSQL_STMT *rows[ROWS_KINDS][DOCSTORE_BULK_MAX + 1]; /* [kind][n] */
    uint64_t rows_used[ROWS_KINDS][DOCSTORE_BULK_MAX + 1]; /* when last used (rows_clock) */
    uint64_t rows_clock;
    /* Read at connect: a multi-row INSERT gets ids first, first + id_step,
     * ... (innodb_autoinc_lock_mode 0 or 1), so it can report each row's. */
    bool consecutive_ids;
    uint64_t id_step;
    bool in_txn;  /* between txn_begin and its commit or rollback */
    char err[512];
};

static bool connection_closed_by_server(MYSQL *db)
{
    my_socket fd = mysql_get_socket(db);
    if (fd < 0)
        return true;
    struct pollfd pfd = {.fd = fd, .events = POLLIN | POLLRDHUP};
    return poll(&pfd, 1, 0) > 0 && pfd.revents != 0;
}

/* Statements that may safely run twice: a retry after a lost connection
 * cannot duplicate or misreport anything. */
static bool idempotent(enum stmt_id id)
{
    return id == ST_GET_USER || id == ST_GET_DOC || id == ST_LIST_DOCS || id == ST_STALE_DOCS ||
           id == ST_COUNT_UPLOADING || id == ST_RECENTLY_FAILED;
}


docstore *docstore_new(const chunkd_config *cfg)
{
    docstore *ds = calloc(1, sizeof *ds);
    if (ds)
        ds->cfg = cfg;
    return ds;
}

static void disconnect(docstore *ds)
{
    ds->in_txn = false; /* the server rolls back what the connection had open */
    for (int i = 0; i < ST_COUNT; i++) {
        if (ds->stmt[i])
            mysql_stmt_close(ds->stmt[i]);
        ds->stmt[i] = NULL;
    }
    for (int k = 0; k < ROWS_KINDS; k++) {
        for (size_t n = 0; n <= DOCSTORE_BULK_MAX; n++) {
            if (ds->rows[k][n])
                mysql_stmt_close(ds->rows[k][n]);
            ds->rows[k][n] = NULL;
        }
    }
    if (ds->db)
        mysql_close(ds->db);
    ds->db = NULL;
}

void docstore_free(docstore *ds)
{
    if (!ds)
        return;
    disconnect(ds);
    free(ds);
}

size_t docstore_statements(const docstore *ds)
{
    size_t n = 0;
    for (int i = 0; i < ST_COUNT; i++)
        n += ds->stmt[i] != NULL;
    for (int k = 0; k < ROWS_KINDS; k++)
        for (size_t r = 0; r <= DOCSTORE_BULK_MAX; r++)
            n += ds->rows[k][r] != NULL;
    return n;
}

const char *docstore_error(const docstore *ds)
{
    return ds->err;
}

/* Client-side error codes (2000 and up) mean the connection is unusable. */
static bool connection_error(unsigned int code)
{
    return code >= CR_MIN_ERROR && code <= CR_MAX_ERROR;
}

static int db_fail(docstore *ds, const char *what)
{
    unsigned int code = ds->db ? mysql_errno(ds->db) : 0;
    snprintf(ds->err, sizeof ds->err, "mysql %s: %s (%u)", what,
             ds->db ? mysql_error(ds->db) : "no connection", code);
    if (!ds->db || connection_error(code))
        disconnect(ds);
    return -1;
}

/* Writes the statement's error into ds->err and returns its code. A
 * connection lost while rows are read is reported on the connection only
 * (libmariadb leaves the statement's error empty then). */
static unsigned int note_stmt_error(docstore *ds, MYSQL_STMT *st, const char *what)
{
    unsigned int code = mysql_stmt_errno(st);
    const char *msg = mysql_stmt_error(st);
    if (code == 0 && ds->db) {
        code = mysql_errno(ds->db);
        msg = mysql_error(ds->db);
    }
    snprintf(ds->err, sizeof ds->err, "mysql %s: %s (%u)", what, msg, code);
    return code;
}

static int stmt_fail(docstore *ds, MYSQL_STMT *st, const char *what)
{
    if (connection_error(note_stmt_error(ds, st, what)))
        disconnect(ds);
    return -1;
}

/* stmt_fail for a statement whose result is open. The result goes first:
 * a lost connection closes the statement with it (disconnect), and one
 * left unread would fail the connection's next command. The error is read
 * before, since freeing the result may clear it. */
static int result_fail(docstore *ds, MYSQL_STMT *st, const char *what)
{
    unsigned int code = note_stmt_error(ds, st, what);
    mysql_stmt_free_result(st);
    if (connection_error(code))
        disconnect(ds);
    return -1;
}

/* How the server numbers the rows of one multi-row INSERT. In the
 * "traditional" (0) and "consecutive" (1, MariaDB's default) auto-increment
 * lock modes a statement whose row count is known up front reserves all its
 * ids at once, so they are consecutive in steps of auto_increment_increment
 * (Galera sets it); "interleaved" (2) promises nothing of the kind. */
static int read_id_allocation(docstore *ds)
{
    if (mysql_query(ds->db, "SELECT @@innodb_autoinc_lock_mode, @@auto_increment_increment") != 0)
        return db_fail(ds, "read auto-increment settings");
    MYSQL_RES *res = mysql_store_result(ds->db);
    if (!res)
        return db_fail(ds, "read auto-increment settings");
    MYSQL_ROW row = mysql_fetch_row(res);
    unsigned long mode = 2, step = 0;
    if (row && row[0] && row[1]) {
        mode = strtoul(row[0], NULL, 10);
        step = strtoul(row[1], NULL, 10);
    }
    mysql_free_result(res);
    ds->consecutive_ids = mode <= 1 && step >= 1;
    ds->id_step = step;
    if (!ds->consecutive_ids)
        log_info("event=mysql_rows_inserted_one_by_one innodb_autoinc_lock_mode=%lu "
                 "auto_increment_increment=%lu",
                 mode, step);
    return 0;
}

/* The connection and every statement on it; ds->err says why not. */
static int open_connection(docstore *ds)
{
    const chunkd_config *cfg = ds->cfg;
    ds->db = mysql_init(NULL);
    if (!ds->db) {
        snprintf(ds->err, sizeof ds->err, "mysql init: out of memory");
        return -1;
    }
    unsigned int timeout_s = (unsigned int)((cfg->backend_timeout_ms + 999) / 1000);
    if (mysql_options(ds->db, MYSQL_OPT_CONNECT_TIMEOUT, &timeout_s) != 0 ||
        mysql_options(ds->db, MYSQL_OPT_READ_TIMEOUT, &timeout_s) != 0 ||
        mysql_options(ds->db, MYSQL_OPT_WRITE_TIMEOUT, &timeout_s) != 0 ||
        mysql_options(ds->db, MYSQL_SET_CHARSET_NAME, "utf8mb4") != 0)
        return db_fail(ds, "options");
    const char *sock = cfg->mysql_socket[0] ? cfg->mysql_socket : NULL;
    if (!mysql_real_connect(ds->db, sock ? NULL : cfg->mysql_host, cfg->mysql_user,
                            cfg->mysql_password, cfg->mysql_database,
                            (unsigned int)cfg->mysql_port, sock, 0)) {
        unsigned int code = mysql_errno(ds->db);
        snprintf(ds->err, sizeof ds->err, "mysql connect: %s (%u)", mysql_error(ds->db), code);
        return -1;
    }
    /* Timestamps leave the server as UTC; make the session agree. A row
     * lock is waited for a second less than this side waits for an answer
     * (at least not at all): a statement given up on here (CR_SERVER_LOST,
     * outcome unknown) must not commit later, behind a lock, with nobody
     * to act on it (lifecycle.c: read_back); the server's own timeout
     * (1205) rolls it back and says so. */
    unsigned int lock_wait_s = timeout_s > 1 ? timeout_s - 1 : 0;
    char session_sql[96];
    snprintf(session_sql, sizeof session_sql,
             "SET time_zone = '+00:00', innodb_lock_wait_timeout = %u", lock_wait_s);
    if (mysql_query(ds->db, session_sql) != 0)
        return db_fail(ds, "set session");
    if (read_id_allocation(ds) != 0)
        return -1;
    for (int i = 0; i < ST_COUNT; i++) {
        ds->stmt[i] = mysql_stmt_init(ds->db);
        if (!ds->stmt[i])
            return db_fail(ds, "stmt init");
        if (mysql_stmt_prepare(ds->stmt[i], stmt_sql[i], strlen(stmt_sql[i])) != 0)
            return stmt_fail(ds, ds->stmt[i], "prepare");
    }
    return 0;
}

static int connect_db(docstore *ds)
{
    if (ds->db)
        return 0;
    /* Half a connection (a statement not prepared, the session's time
     * zone not set) is none: the next call connects again. */
    if (open_connection(ds) != 0) {
        disconnect(ds);
        return -1;
    }
    return 0;
}

static void bind_u64(MYSQL_BIND *b, uint64_t *v)
{
    memset(b, 0, sizeof *b);
    b->buffer_type = MYSQL_TYPE_LONGLONG;
    b->buffer = v;
    b->is_unsigned = 1;
}

static void bind_i64(MYSQL_BIND *b, int64_t *v)
{
    memset(b, 0, sizeof *b);
    b->buffer_type = MYSQL_TYPE_LONGLONG;
    b->buffer = v;
}

/* Input string; NULL binds SQL NULL. */
static void bind_in_str(MYSQL_BIND *b, const char *s, unsigned long *len)
{
    memset(b, 0, sizeof *b);
    b->buffer_type = MYSQL_TYPE_STRING;
    if (!s) {
        b->buffer_type = MYSQL_TYPE_NULL;
        return;
    }
    *len = (unsigned long)strlen(s);
    b->buffer = (void *)s;
    b->buffer_length = *len;
    b->length = len;
}

static void bind_out_str(MYSQL_BIND *b, char *buf, size_t size, unsigned long *len,
                         my_bool *is_null)
{
    memset(b, 0, sizeof *b);
    b->buffer_type = MYSQL_TYPE_STRING;
    b->buffer = buf;
    b->buffer_length = size - 1; /* room for the NUL we add */
    b->length = len;
    b->is_null = is_null;
}

static void bind_out_time(MYSQL_BIND *b, MYSQL_TIME *t, my_bool *is_null)
{
    memset(b, 0, sizeof *b);
    b->buffer_type = MYSQL_TYPE_DATETIME;
    b->buffer = t;
    b->is_null = is_null;
}

/* Appends "<lead>" then n copies of item joined by sep to sql at *at. */
static void append_repeated(char *sql, size_t len, size_t *at, const char *lead, size_t n,
                            const char *item, const char *sep)
{
    *at += (size_t)snprintf(sql + *at, len - *at, "%s", lead);
    for (size_t i = 0; i < n; i++)
        *at += (size_t)snprintf(sql + *at, len - *at, "%s%s", i ? sep : "", item);
}

/* The text of a statement of n rows. Only the `?` markers are repeated:
 * no value ever goes into it. */
static char *rows_sql(enum rows_stmt_id id, size_t n, size_t *len_out)
{
    size_t len = 256 + n * 64;
    char *sql = malloc(len);
    if (!sql)
        return NULL;
    size_t at = 0;
    if (id == ST_INSERT_ROWS) {
        append_repeated(sql, len, &at,
                        "INSERT INTO documents (user_id, filename, filesize, declared_sha256, "
                        "status) VALUES ",
                        n, "(?, ?, ?, ?, 'uploading')", ",");
    } else {
        /* Each row's own hash and path by id; one statement, so one
         * commit (and redo-log flush) for all, without a transaction. */
        append_repeated(sql, len, &at, "UPDATE documents SET status = 'completed', sha256 = CASE id",
                        n, " WHEN ? THEN ?", "");
        append_repeated(sql, len, &at, " END, file_path = CASE id", n, " WHEN ? THEN ?", "");
        append_repeated(sql, len, &at,
                        " END, completed_at = CURRENT_TIMESTAMP(3) "
                        "WHERE status = 'uploading' AND id IN (",
                        n, "?", ", ");
        at += (size_t)snprintf(sql + at, len - at, ")");
    }
    *len_out = at;
    return sql;
}

/* The statement id for n rows: prepared on first use (and again after a
 * reconnect), then kept. */
static MYSQL_STMT *rows_stmt(docstore *ds, enum rows_stmt_id id, size_t n)
{
    int kind = id - ST_COUNT;
    MYSQL_STMT **slot = &ds->rows[kind][n];
    ds->rows_used[kind][n] = ++ds->rows_clock;
    if (*slot)
        return *slot;
    /* Room first: the statement of this kind used longest ago goes. */
    size_t kept = 0, oldest = 0;
    for (size_t k = 1; k <= DOCSTORE_BULK_MAX; k++) {
        if (!ds->rows[kind][k])
            continue;
        kept++;
        if (!oldest || ds->rows_used[kind][k] < ds->rows_used[kind][oldest])
            oldest = k;
    }
    if (kept >= ROWS_KEPT) {
        mysql_stmt_close(ds->rows[kind][oldest]);
        ds->rows[kind][oldest] = NULL;
    }
    size_t len = 0;
    char *sql = rows_sql(id, n, &len);
    if (!sql) {
        snprintf(ds->err, sizeof ds->err, "mysql: out of memory");
        return NULL;
    }
    MYSQL_STMT *st = mysql_stmt_init(ds->db);
    if (!st) {
        free(sql);
        db_fail(ds, "stmt init");
        return NULL;
    }
    if (mysql_stmt_prepare(st, sql, len) != 0) {
        free(sql);
        stmt_fail(ds, st, "prepare");
        mysql_stmt_close(st);
        return NULL;
    }
    free(sql);
    *slot = st;
    return st;
}

/* Statement id on the connection just (re)opened; rows counts only for
 * the statements of n rows. */
static MYSQL_STMT *statement(docstore *ds, int id, size_t rows)
{
    return id >= ST_COUNT ? rows_stmt(ds, (enum rows_stmt_id)id, rows) : ds->stmt[id];
}

/* Binds params to statement id (of rows rows) and runs it once. NULL on
 * failure, with the statement's error code in *code (0 when it was never
 * sent). */
static MYSQL_STMT *run_once(docstore *ds, int id, size_t rows, MYSQL_BIND *params,
                            unsigned int *code)
{
    *code = 0;
    MYSQL_STMT *st = statement(ds, id, rows);
    if (!st)
        return NULL;
    if (params && mysql_stmt_bind_param(st, params) != 0) {
        stmt_fail(ds, st, "bind");
        return NULL;
    }
    if (mysql_stmt_execute(st) != 0) {
        *code = mysql_stmt_errno(st);
        stmt_fail(ds, st, "execute"); /* may disconnect: st is gone then */
        return NULL;
    }
    return st;
}

/* Drops a connection the server has closed (a restart, wait_timeout, a
 * failover), so that the next statement goes to a new one. */
static void drop_if_closed(docstore *ds)
{
    if (ds->db && connection_closed_by_server(ds->db)) {
        log_info("event=mysql_reconnect reason=\"connection closed by the server\"");
        disconnect(ds);
    }
}

/* Executes a prepared statement with params bound. A statement that fails
 * because an idle connection was closed under us (server restart,
 * wait_timeout) is retried once on a fresh connection: the failure happened
 * before the server saw it. `checked`: the caller has just looked at the
 * connection (drop_if_closed), so it is not looked at again. */
static MYSQL_STMT *execute_retrying(docstore *ds, int id, size_t rows, MYSQL_BIND *params,
                                    bool checked)
{
    /* A server restart or wait_timeout closes an idle connection. A
     * writing statement sent into it would fail in a way that leaves its
     * outcome unknown (2013), so look at the socket first: between
     * statements the server sends nothing, so anything readable (its
     * goodbye, or the close itself) means the connection is gone. */
    if (ds->in_txn) {
        /* Inside a transaction a new connection would silently lose the
         * statements before this one: fail, and let the caller roll back. */
        if (!ds->db) {
            snprintf(ds->err, sizeof ds->err, "mysql: connection lost inside a transaction");
            return NULL;
        }
        unsigned int code;
        return run_once(ds, id, rows, params, &code);
    }
    if (!checked)
        drop_if_closed(ds);
    for (int attempt = 0; attempt < 2; attempt++) {
        if (connect_db(ds) != 0)
            return NULL;
        unsigned int code;
        MYSQL_STMT *st = run_once(ds, id, rows, params, &code);
        if (st)
            return st;
        if (attempt == 0 && (code == CR_SERVER_GONE_ERROR ||
                             (code == CR_SERVER_LOST && idempotent(id)))) {
            log_info("event=mysql_reconnect reason=\"%s\"", ds->err);
            continue;
        }
        return NULL;
    }
    return NULL;
}

/* execute_retrying, timed and with failures counted. */
static MYSQL_STMT *execute_rows(docstore *ds, int id, size_t rows, MYSQL_BIND *params,
                                bool checked)
{
    int64_t t0 = metrics_now_us();
    MYSQL_STMT *st = execute_retrying(ds, id, rows, params, checked);
    metrics_observe_us(ds->m, H_MYSQL, metrics_now_us() - t0);
    if (!st)
        metrics_add(ds->m, M_MYSQL_ERRORS, 1);
    return st;
}

static MYSQL_STMT *execute(docstore *ds, enum stmt_id id, MYSQL_BIND *params)
{
    return execute_rows(ds, id, 1, params, false);
}

void docstore_set_metrics(docstore *ds, metrics *m)
{
    ds->m = m;
}

int docstore_ping(docstore *ds)
{
    if (connect_db(ds) != 0)
        return -1;
    if (mysql_ping(ds->db) != 0)
        return db_fail(ds, "ping");
    return 0;
}

/* The user's row, and with ST_GET_USER_COUNTING its uploads in progress. */
static int read_user(docstore *ds, enum stmt_id id, uint64_t user_id, user_row *out, bool *found)
{
    *found = false;
    MYSQL_BIND p[1], r[4];
    bind_u64(&p[0], &user_id);
    MYSQL_STMT *st = execute(ds, id, p);
    if (!st)
        return -1;
    unsigned long hlen = 0;
    my_bool hnull = 0;
    int64_t disabled = 0;
    memset(out, 0, sizeof *out);
    out->uploading = -1;
    int64_t uploading = 0;
    bind_u64(&r[0], &out->id);
    bind_out_str(&r[1], out->credential_hash, sizeof out->credential_hash, &hlen, &hnull);
    bind_i64(&r[2], &disabled);
    bind_i64(&r[3], &uploading);
    if (mysql_stmt_bind_result(st, r) != 0)
        return result_fail(ds, st, "bind result");
    int rc = mysql_stmt_fetch(st);
    if (rc == 1)
        return result_fail(ds, st, "fetch");
    if (rc == 0 || rc == MYSQL_DATA_TRUNCATED) {
        out->credential_hash[hlen < sizeof out->credential_hash ? hlen : 64] = '\0';
        out->disabled = disabled != 0;
        if (id == ST_GET_USER_COUNTING)
            out->uploading = uploading;
        *found = true;
    }
    mysql_stmt_free_result(st);
    return 0;
}

int docstore_get_user(docstore *ds, uint64_t user_id, user_row *out, bool *found)
{
    return read_user(ds, ST_GET_USER, user_id, out, found);
}

int docstore_get_user_counting(docstore *ds, uint64_t user_id, user_row *out, bool *found)
{
    return read_user(ds, ST_GET_USER_COUNTING, user_id, out, found);
}

/* A transaction around several writes, so they share one commit. Inside
 * it no statement is retried on a new connection: any failure ends it, and
 * the caller rolls back. */
static int txn_begin(docstore *ds)
{
    if (ds->in_txn) {
        snprintf(ds->err, sizeof ds->err, "mysql: a transaction is already open");
        return -1;
    }
    /* Reconnecting is still safe here, before anything was sent. */
    drop_if_closed(ds);
    if (connect_db(ds) != 0)
        return -1;
    int64_t t0 = metrics_now_us();
    int rc = mysql_query(ds->db, "START TRANSACTION");
    metrics_observe_us(ds->m, H_MYSQL, metrics_now_us() - t0);
    if (rc != 0) {
        metrics_add(ds->m, M_MYSQL_ERRORS, 1);
        return db_fail(ds, "start transaction");
    }
    ds->in_txn = true;
    return 0;
}

static int txn_commit(docstore *ds)
{
    if (!ds->in_txn || !ds->db) {
        snprintf(ds->err, sizeof ds->err, "mysql commit: no transaction open (connection lost)");
        return -1;
    }
    ds->in_txn = false;
    int64_t t0 = metrics_now_us();
    my_bool failed = mysql_commit(ds->db);
    metrics_observe_us(ds->m, H_MYSQL, metrics_now_us() - t0);
    if (failed) {
        metrics_add(ds->m, M_MYSQL_ERRORS, 1);
        return db_fail(ds, "commit");
    }
    return 0;
}

static void txn_rollback(docstore *ds)
{
    if (!ds->in_txn)
        return;
    ds->in_txn = false;
    if (ds->db && mysql_rollback(ds->db)) {
        /* A connection that cannot roll back is not trusted again. */
        db_fail(ds, "rollback");
        log_warn("event=mysql_rollback_failed error=\"%s\"", ds->err);
    }
}

static void bind_insert(MYSQL_BIND p[4], const doc_insert *row, unsigned long len[2])
{
    bind_u64(&p[0], (uint64_t *)&row->user_id);
    bind_in_str(&p[1], row->filename, &len[0]);
    bind_i64(&p[2], (int64_t *)&row->filesize);
    bind_in_str(&p[3], row->declared_sha256, &len[1]);
}

/* One INSERT statement of n rows; ids from the first one (see
 * read_id_allocation). A single statement is atomic on its own: no
 * transaction needed. */
static int insert_rows(docstore *ds, size_t n, const doc_insert *rows, uint64_t *ids)
{
    MYSQL_BIND p[4 * DOCSTORE_BULK_MAX];
    unsigned long len[2 * DOCSTORE_BULK_MAX];
    for (size_t i = 0; i < n; i++)
        bind_insert(&p[4 * i], &rows[i], &len[2 * i]);
    uint64_t step = ds->id_step;
    /* docstore_insert_documents has just looked at the connection */
    MYSQL_STMT *st = n == 1 ? execute_rows(ds, ST_INSERT_DOC, 1, p, true)
                            : execute_rows(ds, ST_INSERT_ROWS, n, p, true);
    if (!st)
        return -1;
    if (n > 1 && (!ds->consecutive_ids || ds->id_step != step)) {
        /* The statement went to a connection made after the choice of one
         * statement for all (a failover to a server that numbers rows
         * otherwise): which ids are ours is unknown. Refused; the rows are
         * left to the expiry sweep. */
        snprintf(ds->err, sizeof ds->err,
                 "mysql insert: the server's auto-increment settings changed under a "
                 "%zu-row insert",
                 n);
        return -1;
    }
    uint64_t first = (uint64_t)mysql_stmt_insert_id(st);
    uint64_t added = (uint64_t)mysql_stmt_affected_rows(st);
    if (first == 0 || added != n) {
        snprintf(ds->err, sizeof ds->err,
                 "mysql insert: %" PRIu64 " of %zu rows added, first id %" PRIu64, added, n, first);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        ids[i] = first + i * ds->id_step;
    return 0;
}

int docstore_insert_documents(docstore *ds, size_t n, const doc_insert *rows, uint64_t *ids)
{
    if (n == 0)
        return 0;
    if (ds->in_txn || n > DOCSTORE_BULK_MAX) {
        snprintf(ds->err, sizeof ds->err, "mysql insert: %zu rows, or inside a transaction", n);
        return -1;
    }
    /* The settings are those of the connection the statement will use: a
     * connection the server closed (a restart, a failover) is made again
     * here, before the choice, rather than by the statement after it. */
    drop_if_closed(ds);
    if (connect_db(ds) != 0)
        return -1;
    if (n == 1 || ds->consecutive_ids)
        return insert_rows(ds, n, rows, ids);
    /* Ids the server may interleave with other statements': a statement a
     * row, sharing one commit. */
    if (txn_begin(ds) != 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (insert_rows(ds, 1, &rows[i], &ids[i]) != 0) {
            txn_rollback(ds);
            return -1;
        }
    }
    return txn_commit(ds);
}

static void format_time(const MYSQL_TIME *t, my_bool is_null, char out[DOC_TIME_MAX])
{
    if (is_null) {
        out[0] = '\0';
        return;
    }
    /* The modulos only bound the width for the compiler; DATETIME values
     * are always in range. */
    snprintf(out, DOC_TIME_MAX, "%04u-%02u-%02uT%02u:%02u:%02u.%03uZ", t->year % 10000,
             t->month % 100, t->day % 100, t->hour % 100, t->minute % 100, t->second % 100,
             (unsigned)(t->second_part / 1000 % 1000));
}

/* Result binding shared by every query that selects DOC_COLUMNS. */
typedef struct doc_binds {
    MYSQL_BIND b[12];
    unsigned long len[12];
    my_bool null[12];
    MYSQL_TIME created, updated, completed;
} doc_binds;

static void doc_bind_result(doc_binds *db, doc_row *row)
{
    memset(db, 0, sizeof *db);
    bind_u64(&db->b[0], &row->id);
    bind_u64(&db->b[1], &row->user_id);
    bind_i64(&db->b[2], &row->filesize);
    bind_out_str(&db->b[3], row->filename, sizeof row->filename, &db->len[3], &db->null[3]);
    bind_out_str(&db->b[4], row->declared_sha256, sizeof row->declared_sha256, &db->len[4],
                 &db->null[4]);
    bind_out_str(&db->b[5], row->sha256, sizeof row->sha256, &db->len[5], &db->null[5]);
    bind_out_str(&db->b[6], row->status, sizeof row->status, &db->len[6], &db->null[6]);
    bind_out_str(&db->b[7], row->file_path, sizeof row->file_path, &db->len[7], &db->null[7]);
    bind_out_str(&db->b[8], row->failure_reason, sizeof row->failure_reason, &db->len[8],
                 &db->null[8]);
    bind_out_time(&db->b[9], &db->created, &db->null[9]);
    bind_out_time(&db->b[10], &db->updated, &db->null[10]);
    bind_out_time(&db->b[11], &db->completed, &db->null[11]);
}

/* Terminates the fetched strings (libmariadb does not) and formats times. */
static void doc_finish_row(doc_binds *db, doc_row *row)
{
    char *strs[] = {NULL, NULL, NULL, row->filename, row->declared_sha256, row->sha256,
                    row->status, row->file_path, row->failure_reason};
    for (int i = 3; i <= 8; i++) {
        size_t cap = db->b[i].buffer_length;
        size_t n = db->null[i] ? 0 : (db->len[i] < cap ? db->len[i] : cap);
        strs[i][n] = '\0';
    }
    format_time(&db->created, db->null[9], row->created_at);
    format_time(&db->updated, db->null[10], row->updated_at);
    format_time(&db->completed, db->null[11], row->completed_at);
}

/* Binds r to st's result, then calls each(arg) after every row fetched;
 * a non-zero from each ends it with -1 (each has said why in ds->err). */
static int fetch_rows(docstore *ds, MYSQL_STMT *st, MYSQL_BIND *r, int (*each)(void *),
                      void *arg)
{
    if (mysql_stmt_bind_result(st, r) != 0)
        return result_fail(ds, st, "bind result");
    int rc = 0;
    for (;;) {
        int f = mysql_stmt_fetch(st);
        if (f == MYSQL_NO_DATA)
            break;
        if (f == 1)
            return result_fail(ds, st, "fetch");
        if (each(arg) != 0) {
            rc = -1;
            break;
        }
    }
    mysql_stmt_free_result(st);
    return rc;
}

typedef struct docs_fetch {
    docstore *ds;
    doc_binds db;
    doc_row row;
    int (*fn)(void *, const doc_row *);
    void *arg;
} docs_fetch;

static int each_doc(void *arg)
{
    docs_fetch *f = arg;
    doc_finish_row(&f->db, &f->row);
    if (f->fn(f->arg, &f->row) == 0)
        return 0;
    snprintf(f->ds->err, sizeof f->ds->err, "out of memory building the answer");
    return -1;
}

/* Fetches rows of a DOC_COLUMNS query, handing each to fn. */
static int fetch_docs(docstore *ds, MYSQL_STMT *st, int (*fn)(void *, const doc_row *),
                      void *arg)
{
    docs_fetch f;
    memset(&f, 0, sizeof f);
    f.ds = ds;
    f.fn = fn;
    f.arg = arg;
    doc_bind_result(&f.db, &f.row);
    return fetch_rows(ds, st, f.db.b, each_doc, &f);
}

static int copy_row(void *arg, const doc_row *row)
{
    memcpy(arg, row, sizeof *row);
    return 0;
}

int docstore_get_document(docstore *ds, uint64_t document_id, doc_row *out, bool *found)
{
    MYSQL_BIND p[1];
    bind_u64(&p[0], &document_id);
    MYSQL_STMT *st = execute(ds, ST_GET_DOC, p);
    if (!st)
        return -1;
    out->id = 0;
    if (fetch_docs(ds, st, copy_row, out) != 0)
        return -1;
    *found = out->id != 0;
    return 0;
}

static int affected(docstore *ds, MYSQL_STMT *st, bool *changed)
{
    my_ulonglong n = mysql_stmt_affected_rows(st);
    if (n == (my_ulonglong)-1)
        return stmt_fail(ds, st, "affected rows");
    *changed = n > 0;
    return 0;
}

static int complete_one(docstore *ds, uint64_t document_id, const char *sha256,
                        const char *file_path, bool *changed)
{
    MYSQL_BIND p[3];
    unsigned long slen = 0, plen = 0;
    bind_in_str(&p[0], sha256, &slen);
    bind_in_str(&p[1], file_path, &plen);
    bind_u64(&p[2], &document_id);
    MYSQL_STMT *st = execute(ds, ST_COMPLETE_DOC, p);
    return st ? affected(ds, st, changed) : -1;
}

/* ST_COMPLETE_ROWS for n rows; *rows is how many it changed. Run as the
 * statement of the next power of two rows, the last one repeated: a row
 * named twice is changed once, and its CASE takes the first match. */
static int complete_rows(docstore *ds, size_t n, const uint64_t *ids, const char *const *shas,
                         const char *const *paths, uint64_t *rows)
{
    MYSQL_BIND p[5 * DOCSTORE_BULK_MAX];
    unsigned long len[2 * DOCSTORE_BULK_MAX];
    size_t m = 2;
    while (m < n)
        m *= 2;
    if (m > DOCSTORE_BULK_MAX)
        m = DOCSTORE_BULK_MAX;
    for (size_t i = 0; i < m; i++) {
        size_t r = i < n ? i : n - 1;
        bind_u64(&p[2 * i], (uint64_t *)&ids[r]);
        bind_in_str(&p[2 * i + 1], shas[r], &len[2 * i]);
        bind_u64(&p[2 * m + 2 * i], (uint64_t *)&ids[r]);
        bind_in_str(&p[2 * m + 2 * i + 1], paths[r], &len[2 * i + 1]);
        bind_u64(&p[4 * m + i], (uint64_t *)&ids[r]);
    }
    MYSQL_STMT *st = execute_rows(ds, ST_COMPLETE_ROWS, m, p, false);
    if (!st)
        return -1;
    my_ulonglong r = mysql_stmt_affected_rows(st);
    if (r == (my_ulonglong)-1)
        return stmt_fail(ds, st, "affected rows");
    *rows = (uint64_t)r;
    return 0;
}

/* Whether a row that our UPDATE did not change is completed with exactly
 * these bytes at this path anyway: by an earlier attempt of ours whose
 * answer was lost, or by an instance that took the upload over. */
static int completed_as(docstore *ds, uint64_t id, const char *sha, const char *path,
                        bool *same)
{
    doc_row d;
    bool found = false;
    if (docstore_get_document(ds, id, &d, &found) != 0)
        return -1;
    *same = found && strcmp(d.status, "completed") == 0 && strcmp(d.sha256, sha) == 0 &&
            strcmp(d.file_path, path) == 0;
    return 0;
}

int docstore_complete_documents(docstore *ds, size_t n, const uint64_t *ids,
                                const char *const *shas, const char *const *paths,
                                bool *changed)
{
    if (ds->in_txn || n > DOCSTORE_BULK_MAX) {
        snprintf(ds->err, sizeof ds->err, "mysql complete: %zu rows, or inside a transaction", n);
        return -1;
    }
    if (n == 0)
        return 0;
    uint64_t rows = 0;
    if (n == 1) {
        if (complete_one(ds, ids[0], shas[0], paths[0], &changed[0]) != 0)
            return -1;
        rows = changed[0];
    } else if (complete_rows(ds, n, ids, shas, paths, &rows) != 0) {
        return -1;
    }
    if (rows == n) {
        for (size_t i = 0; i < n; i++)
            changed[i] = true;
        return 0;
    }
    /* Some rows were not 'uploading' any more: ask each what it is now. */
    for (size_t i = 0; i < n; i++)
        if (completed_as(ds, ids[i], shas[i], paths[i], &changed[i]) != 0)
            return -1;
    return 0;
}

int docstore_fail_document(docstore *ds, uint64_t document_id, const char *reason,
                           bool *changed)
{
    MYSQL_BIND p[2];
    unsigned long rlen = 0;
    bind_in_str(&p[0], reason, &rlen);
    bind_u64(&p[1], &document_id);
    MYSQL_STMT *st = execute(ds, ST_FAIL_DOC, p);
    return st ? affected(ds, st, changed) : -1;
}

int docstore_list_documents(docstore *ds, uint64_t user_id, int64_t limit,
                            int (*fn)(void *arg, const doc_row *row), void *arg)
{
    MYSQL_BIND p[2];
    bind_u64(&p[0], &user_id);
    bind_i64(&p[1], &limit);
    MYSQL_STMT *st = execute(ds, ST_LIST_DOCS, p);
    if (!st)
        return -1;
    return fetch_docs(ds, st, fn, arg);
}

typedef struct ids_fetch {
    uint64_t got;
    uint64_t *ids;
    size_t max;
    size_t *n;
} ids_fetch;

static int each_id(void *arg)
{
    ids_fetch *f = arg;
    if (*f->n < f->max)
        f->ids[(*f->n)++] = f->got;
    return 0;
}

/* A page of ids of a listing keyed by seconds and paged by id: at most
 * max, in ids[0..*n). */
static int list_ids(docstore *ds, enum stmt_id id, int64_t seconds, uint64_t after_id,
                    uint64_t *ids, size_t max, size_t *n)
{
    *n = 0;
    int64_t limit = (int64_t)max;
    MYSQL_BIND p[3], r[1];
    bind_i64(&p[0], &seconds);
    bind_u64(&p[1], &after_id);
    bind_i64(&p[2], &limit);
    MYSQL_STMT *st = execute(ds, id, p);
    if (!st)
        return -1;
    ids_fetch f = {.ids = ids, .max = max, .n = n};
    bind_u64(&r[0], &f.got);
    return fetch_rows(ds, st, r, each_id, &f);
}

int docstore_list_stale_uploads(docstore *ds, int64_t older_than_s, uint64_t after_id,
                                uint64_t *ids, size_t max, size_t *n)
{
    return list_ids(ds, ST_STALE_DOCS, older_than_s, after_id, ids, max, n);
}

int docstore_list_recently_failed(docstore *ds, int64_t within_s, uint64_t after_id,
                                  uint64_t *ids, size_t max, size_t *n)
{
    return list_ids(ds, ST_RECENTLY_FAILED, within_s, after_id, ids, max, n);
}

int docstore_count_uploading(docstore *ds, uint64_t user_id, int64_t *count)
{
    MYSQL_BIND p[1], r[1];
    bind_u64(&p[0], &user_id);
    MYSQL_STMT *st = execute(ds, ST_COUNT_UPLOADING, p);
    if (!st)
        return -1;
    *count = 0;
    bind_i64(&r[0], count);
    if (mysql_stmt_bind_result(st, r) != 0)
        return result_fail(ds, st, "bind result");
    int rc = mysql_stmt_fetch(st);
    if (rc == 1)
        return result_fail(ds, st, "fetch");
    mysql_stmt_free_result(st);
    return 0;
}
