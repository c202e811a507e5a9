/* `chunkctl storage-migrate`: the storage folder, and the paths the
 * database and Redis keep of it, moved to the current layout. */
#include "ctl_storage.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "chunkd/state_redis.h"
#include "chunkd/storage.h"
#include "chunkd/storage_layout.h"
#include "ctl_db.h"
#include "ctl_out.h"
#include "ctl_redis.h"

/* Rows are read and fixed this many at a time, one transaction each. */
#define BATCH 1000

typedef struct path_row {
    uint64_t id;
    char path[STORAGE_REL_PATH_MAX + 8]; /* as stored; longer ones do not match anyway */
    bool path_null;
} path_row;

/* Up to BATCH rows of `status` after id `after`, in id order: *n of them. */
static int load_batch(MYSQL *db, const char *status, uint64_t after, path_row *rows, size_t *n,
                      char *err, size_t errlen)
{
    static const char sql[] = "SELECT id, file_path FROM documents WHERE status = ? AND id > ? "
                              "ORDER BY id LIMIT 1000";
    static const char what[] = "reading documents";
    unsigned long status_len;
    MYSQL_BIND p[2];
    ctl_db_bind_text(&p[0], status, &status_len);
    ctl_db_bind_u64(&p[1], &after);
    unsigned int errnum;
    MYSQL_STMT *stmt = ctl_db_run(db, what, sql, p, &errnum, err, errlen);
    if (!stmt)
        return -1;
    path_row row;
    unsigned long path_len = 0;
    my_bool path_null = 0, path_trunc = 0;
    MYSQL_BIND res[2];
    memset(&row, 0, sizeof row);
    memset(res, 0, sizeof res);
    ctl_db_bind_u64(&res[0], &row.id);
    ctl_db_bind_text_out(&res[1], row.path, sizeof row.path, &path_len, &path_trunc);
    res[1].is_null = &path_null;
    int rc = 0;
    *n = 0;
    if (mysql_stmt_bind_result(stmt, res) != 0) {
        ctl_db_stmt_error(stmt, what, err, errlen);
        rc = -1;
    }
    bool truncated;
    while (rc == 0 && *n < BATCH) {
        int f = ctl_db_fetch(stmt, what, &truncated, err, errlen);
        if (f <= 0) {
            rc = f;
            break;
        }
        /* A truncated path is longer than any the server writes: it is
         * rewritten like any other that differs. */
        row.path[path_len < sizeof row.path ? path_len : sizeof row.path - 1] = '\0';
        row.path_null = path_null;
        rows[(*n)++] = row;
    }
    mysql_stmt_close(stmt);
    return rc;
}

/* Completed rows' file_path set to where the layout now puts the file, a
 * transaction per batch. *fixed counts the rows changed. */
static int fix_rows(MYSQL *db, long *fixed, char *err, size_t errlen)
{
    static const char what[] = "updating file_path";
    static path_row rows[BATCH];
    uint64_t after = 0;
    for (;;) {
        size_t n = 0;
        if (load_batch(db, "completed", after, rows, &n, err, errlen) != 0)
            return -1;
        if (n == 0)
            return 0;
        after = rows[n - 1].id;
        MYSQL_STMT *stmt = mysql_stmt_init(db);
        static const char sql[] =
            "UPDATE documents SET file_path = ? WHERE id = ? AND status = 'completed'";
        if (!stmt) {
            snprintf(err, errlen, "%s: out of memory", what);
            return -1;
        }
        int rc = mysql_stmt_prepare(stmt, sql, (unsigned long)strlen(sql)) == 0 ? 0 : -1;
        if (rc == 0 && mysql_autocommit(db, 0) != 0) {
            snprintf(err, errlen, "%s: %s", what, mysql_error(db));
            mysql_stmt_close(stmt);
            return -1;
        }
        for (size_t i = 0; rc == 0 && i < n; i++) {
            char want[STORAGE_REL_PATH_MAX];
            storage_rel_path(rows[i].id, want);
            if (!rows[i].path_null && strcmp(rows[i].path, want) == 0)
                continue;
            unsigned long want_len;
            MYSQL_BIND p[2];
            ctl_db_bind_text(&p[0], want, &want_len);
            ctl_db_bind_u64(&p[1], &rows[i].id);
            if (mysql_stmt_bind_param(stmt, p) != 0 || mysql_stmt_execute(stmt) != 0)
                rc = -1;
            else
                (*fixed)++;
        }
        if (rc != 0)
            ctl_db_stmt_error(stmt, what, err, errlen);
        else if (mysql_commit(db) != 0) {
            snprintf(err, errlen, "%s: commit: %s", what, mysql_error(db));
            rc = -1;
        }
        if (rc != 0)
            (void)mysql_rollback(db); /* the error above is what to report */
        mysql_stmt_close(stmt);
        if (mysql_autocommit(db, 1) != 0 && rc == 0) {
            snprintf(err, errlen, "%s: %s", what, mysql_error(db));
            rc = -1;
        }
        if (rc != 0)
            return -1;
        if (n < BATCH)
            return 0;
    }
}

/* Calls each(ctx, id, err, errlen) for every upload in flight, in id
 * order, a batch of rows at a time; stops at the first -1. */
static int for_each_uploading(MYSQL *db, int (*each)(void *, uint64_t, char *, size_t), void *ctx,
                              char *err, size_t errlen)
{
    static path_row rows[BATCH];
    uint64_t after = 0;
    for (;;) {
        size_t n = 0;
        if (load_batch(db, "uploading", after, rows, &n, err, errlen) != 0)
            return -1;
        for (size_t i = 0; i < n; i++)
            if (each(ctx, rows[i].id, err, errlen) != 0)
                return -1;
        if (n < BATCH)
            return 0;
        after = rows[n - 1].id;
    }
}

/* No chunkd may run on the folder meanwhile: one that does (an older
 * build, which knows no marker) would go on writing layout-1 files the
 * migration has passed. A lease on any upload in flight says one does;
 * refused before anything changes. */
static int refuse_if_written(void *arg, uint64_t id, char *err, size_t errlen)
{
    ctl_lease l;
    if (ctl_redis_lease(arg, id, &l, err, errlen) != 0)
        return -1;
    if (l.held) {
        snprintf(err, errlen,
                 "upload %" PRIu64 " is being written (lease held by %s): stop every chunkd "
                 "that uses the folder first; nothing changed",
                 id, l.holder);
        return -1;
    }
    return 0;
}

typedef struct state_fix {
    redis_state *rs;
    ctl_redis *cr;
    long fixed; /* states changed */
} state_fix;

/* The Redis state of an upload in flight: its `path` set to where the
 * layout now puts the file. */
static int fix_state(void *arg, uint64_t id, char *err, size_t errlen)
{
    state_fix *f = arg;
    upload_state st;
    bool found = false;
    if (rstate_get(f->rs, id, &st, &found) != 0) {
        snprintf(err, errlen, "reading the state of upload %" PRIu64 ": %s", id,
                 rstate_error(f->rs));
        return -1;
    }
    char want[STORAGE_REL_PATH_MAX];
    storage_rel_path(id, want);
    if (!found || strcmp(st.path, want) == 0)
        return 0;
    bool set = false;
    if (ctl_redis_set_upload_path(f->cr, id, want, &set, err, errlen) != 0)
        return -1;
    f->fixed += set; /* not when the state lapsed meanwhile */
    return 0;
}

int ctl_storage_migrate(const chunkd_config *cfg, bool json, char *err, size_t errlen)
{
    /* The paths kept in MySQL and Redis first, the files and the marker
     * last: until the marker is written no chunkd starts on the folder, so
     * a failure anywhere leaves it refused, and running the command again
     * finishes the job (every step skips what is done). The folder is
     * judged before anything changes: rows rewritten for a folder that
     * then turns out wrong could not be told apart any more. */
    if (storage_layout_can_migrate(cfg->storage_dir, err, errlen) != 0)
        return EXIT_FAILURE;
    MYSQL *db = ctl_db_connect(cfg, err, errlen);
    if (!db)
        return EXIT_FAILURE;
    redis_state *rs = rstate_new(cfg);
    ctl_redis *cr = rs ? ctl_redis_connect(cfg, err, errlen) : NULL;
    if (!rs && !err[0])
        snprintf(err, errlen, "Redis: out of memory");
    long rows = 0;
    state_fix states = {.rs = rs, .cr = cr};
    storage_migration m;
    int rc = EXIT_FAILURE;
    if (cr && for_each_uploading(db, refuse_if_written, cr, err, errlen) == 0 &&
        fix_rows(db, &rows, err, errlen) == 0 &&
        for_each_uploading(db, fix_state, &states, err, errlen) == 0 &&
        storage_layout_migrate(cfg->storage_dir, &m, err, errlen) == 0)
        rc = EXIT_SUCCESS;
    ctl_redis_free(cr);
    rstate_free(rs);
    mysql_close(db);
    if (rc != EXIT_SUCCESS)
        return rc;
    if (json)
        return out_json(json_pack("{s:s, s:i, s:I, s:I, s:I, s:I, s:I}", "storage_dir",
                                  cfg->storage_dir, "layout", STORAGE_LAYOUT_VERSION, "moved",
                                  (json_int_t)m.moved, "in_place", (json_int_t)m.in_place,
                                  "other", (json_int_t)m.other, "rows_updated",
                                  (json_int_t)rows, "states_updated", (json_int_t)states.fixed),
                        err, errlen);
    out_printf("%s: layout %d; %ld files moved, %ld already in place, %ld other entries "
               "left as they were; file_path of %ld completed documents and the path of %ld "
               "uploads in flight updated\n",
               cfg->storage_dir, STORAGE_LAYOUT_VERSION, m.moved, m.in_place, m.other, rows,
               states.fixed);
    return out_finish(err, errlen) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
