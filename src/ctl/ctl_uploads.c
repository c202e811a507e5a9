/* Uploads in flight: the rows come from MySQL, their progress from the
 * Redis resume state, the writer from the lease. */
#include "ctl_uploads.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <mysql.h>

#include "chunkd/msg.h"
#include "chunkd/state_redis.h"
#include "chunkd/storage.h"
#include "chunkd/util.h"
#include "ctl_db.h"
#include "ctl_out.h"
#include "ctl_redis.h"

typedef struct upload_row {
    uint64_t id;
    uint64_t user_id;
    int64_t filesize;
    char filename[4 * MSG_FILENAME_MAX + 1]; /* utf8mb4: up to 4 bytes a character */
    char created_at[32];
} upload_row;

typedef struct upload_rows {
    upload_row *v;
    size_t n, cap;
} upload_rows;

/* What Redis and the file say about one row. */
typedef struct upload_live {
    bool state_found;
    upload_state st;
    ctl_lease lease;
    int64_t idle_ms; /* -1 when nothing tells */
    const char *idle_from; /* "redis", "file" or NULL */
} upload_live;

static const char sql_all[] =
    "SELECT id, user_id, filesize, filename, created_at FROM documents "
    "WHERE status = 'uploading' ORDER BY id";
static const char sql_user[] =
    "SELECT id, user_id, filesize, filename, created_at FROM documents "
    "WHERE status = 'uploading' AND user_id = ? ORDER BY id";

static int push_row(upload_rows *rows, const upload_row *r)
{
    if (rows->n == rows->cap) {
        size_t cap = rows->cap ? rows->cap * 2 : 64;
        upload_row *v = realloc(rows->v, cap * sizeof *v);
        if (!v)
            return -1;
        rows->v = v;
        rows->cap = cap;
    }
    rows->v[rows->n++] = *r;
    return 0;
}

/* Reads every uploading row first: Redis is asked about them afterwards,
 * so no MySQL result stays open while other calls run. */
static int load_rows(MYSQL *db, uint64_t user_filter, upload_rows *rows, char *err,
                     size_t errlen)
{
    static const char what[] = "listing uploads";
    MYSQL_BIND param;
    ctl_db_bind_u64(&param, &user_filter);
    unsigned int errnum;
    MYSQL_STMT *stmt = ctl_db_run(db, what, user_filter ? sql_user : sql_all,
                                  user_filter ? &param : NULL, &errnum, err, errlen);
    if (!stmt)
        return -1;
    upload_row row;
    unsigned long name_len = 0;
    my_bool name_trunc = 0, created_null = 0;
    MYSQL_TIME created;
    MYSQL_BIND res[5];
    memset(&row, 0, sizeof row);
    memset(res, 0, sizeof res);
    ctl_db_bind_u64(&res[0], &row.id);
    ctl_db_bind_u64(&res[1], &row.user_id);
    res[2].buffer_type = MYSQL_TYPE_LONGLONG;
    res[2].buffer = &row.filesize;
    ctl_db_bind_text_out(&res[3], row.filename, sizeof row.filename, &name_len, &name_trunc);
    res[4].buffer_type = MYSQL_TYPE_DATETIME;
    res[4].buffer = &created;
    res[4].is_null = &created_null;
    int rc = 0;
    if (mysql_stmt_bind_result(stmt, res) != 0) {
        ctl_db_stmt_error(stmt, what, err, errlen);
        rc = -1;
    }
    bool truncated;
    while (rc == 0) {
        int f = ctl_db_fetch(stmt, what, &truncated, err, errlen);
        if (f <= 0) {
            rc = f;
            break;
        }
        if (truncated) {
            snprintf(err, errlen, "%s: document %" PRIu64 " has a filename longer than %zu bytes",
                     what, row.id, sizeof row.filename - 1);
            rc = -1;
            break;
        }
        row.filename[name_len < sizeof row.filename ? name_len : sizeof row.filename - 1] = '\0';
        /* The server writes its rows in UTC (docstore sets the session
         * time zone), so the DATETIME is already UTC. */
        if (created_null)
            snprintf(row.created_at, sizeof row.created_at, "-");
        else
            snprintf(row.created_at, sizeof row.created_at, "%04u-%02u-%02uT%02u:%02u:%02uZ",
                     created.year % 10000, created.month % 100, created.day % 100,
                     created.hour % 100, created.minute % 100, created.second % 100);
        if (push_row(rows, &row) != 0) {
            snprintf(err, errlen, "%s: out of memory", what);
            rc = -1;
        }
    }
    mysql_stmt_close(stmt);
    return rc;
}

static int load_live(const chunkd_config *cfg, redis_state *rs, ctl_redis *cr,
                     const upload_row *row, int64_t now_ms, upload_live *lv, char *err,
                     size_t errlen)
{
    memset(lv, 0, sizeof *lv);
    if (rstate_get(rs, row->id, &lv->st, &lv->state_found) != 0) {
        snprintf(err, errlen, "reading the state of document %" PRIu64 ": %s", row->id,
                 rstate_error(rs));
        return -1;
    }
    if (ctl_redis_lease(cr, row->id, &lv->lease, err, errlen) != 0)
        return -1;
    lv->idle_ms = -1;
    int64_t last = -1;
    if (lv->state_found && lv->st.updated_ms > 0) {
        last = lv->st.updated_ms;
        lv->idle_from = "redis";
    } else {
        /* No saved state (Redis lost it, or its TTL ran out): the file's
         * last write is the only other sign of life. */
        int64_t mtime = storage_file_mtime_ms(cfg->storage_dir, row->id);
        if (mtime >= 0) {
            last = mtime;
            lv->idle_from = "file";
        }
    }
    if (last >= 0) /* another node's clock may be ahead of ours */
        lv->idle_ms = now_ms > last ? now_ms - last : 0;
    return 0;
}

/* Tenths of a percent, so the table and JSON agree without float noise. */
static int64_t permille(int64_t offset, int64_t total)
{
    if (total <= 0)
        return 1000;
    return offset >= total ? 1000 : offset * 1000 / total;
}

static json_t *row_json(const upload_row *row, const upload_live *lv)
{
    bool st = lv->state_found, held = lv->lease.held;
    json_t *o = json_pack("{sIsIsosI}", "document_id", (json_int_t)row->id, "user_id",
                          (json_int_t)row->user_id, "filename",
                          out_json_bytes(row->filename, strlen(row->filename)), "filesize",
                          (json_int_t)row->filesize);
    if (!o)
        return NULL;
    double percent = (double)permille(st ? lv->st.offset : 0, row->filesize) / 10.0;
    if (out_set(o, "offset", st ? json_integer(lv->st.offset) : json_null()) != 0 ||
        out_set(o, "percent", st ? json_real(percent) : json_null()) != 0 ||
        out_set(o, "node", held ? out_json_str_or_null(lv->lease.node) : json_null()) != 0 ||
        out_set(o, "lease_holder",
                held ? out_json_str_or_null(lv->lease.holder) : json_null()) != 0 ||
        out_set(o, "lease_ttl_ms", held ? json_integer(lv->lease.ttl_ms) : json_null()) != 0 ||
        out_set(o, "last_node", st ? out_json_str_or_null(lv->st.node) : json_null()) != 0 ||
        out_set(o, "redis_state", json_boolean(st)) != 0 ||
        out_set(o, "updated_ms", st ? json_integer(lv->st.updated_ms) : json_null()) != 0 ||
        out_set(o, "idle_ms", lv->idle_ms >= 0 ? json_integer(lv->idle_ms) : json_null()) != 0 ||
        out_set(o, "idle_from", lv->idle_from ? json_string(lv->idle_from) : json_null()) != 0 ||
        out_set(o, "created_at", json_string(row->created_at)) != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static void print_header(void)
{
    out_printf("%-8s %-8s %-23s %6s %-7s %-20s %s\n", "ID", "USER", "OFFSET/TOTAL", "PCT",
               "IDLE", "NODE", "FILENAME");
}

static void print_row(const upload_row *row, const upload_live *lv)
{
    char progress[48], pct[48], idle[24];
    if (lv->state_found) {
        int64_t pm = permille(lv->st.offset, row->filesize);
        snprintf(progress, sizeof progress, "%" PRId64 "/%" PRId64, lv->st.offset, row->filesize);
        snprintf(pct, sizeof pct, "%" PRId64 ".%" PRId64 "%%", pm / 10, pm % 10);
    } else {
        /* resume rebuilds the state from the file; say that it is gone */
        snprintf(progress, sizeof progress, "?/%" PRId64, row->filesize);
        snprintf(pct, sizeof pct, "-");
    }
    if (lv->idle_ms >= 0)
        out_duration(lv->idle_ms, idle, sizeof idle);
    else
        snprintf(idle, sizeof idle, "-");
    out_printf("%-8" PRIu64 " %-8" PRIu64 " %-23s %6s %-7s ", row->id, row->user_id, progress,
               pct, idle);
    /* no lease: nobody is writing it right now */
    if (lv->lease.held) {
        out_text(lv->lease.node);
        size_t n = strlen(lv->lease.node);
        for (; n < 20; n++)
            out_printf(" ");
        out_printf(" ");
    } else {
        out_printf("%-20s ", "-");
    }
    out_text(row->filename);
    out_printf("\n");
}

static int report(const chunkd_config *cfg, const upload_rows *rows, bool json, char *err,
                  size_t errlen)
{
    redis_state *rs = rstate_new(cfg);
    ctl_redis *cr = rs ? ctl_redis_connect(cfg, err, errlen) : NULL;
    if (!rs || !cr) {
        if (!rs)
            snprintf(err, errlen, "out of memory");
        rstate_free(rs);
        return 1;
    }
    json_t *arr = json ? json_array() : NULL;
    int rc = json && !arr ? 1 : 0;
    if (rc)
        snprintf(err, errlen, "out of memory");
    if (!json)
        print_header();
    int64_t now = util_wall_ms();
    for (size_t i = 0; rc == 0 && i < rows->n; i++) {
        upload_live lv;
        if (load_live(cfg, rs, cr, &rows->v[i], now, &lv, err, errlen) != 0) {
            rc = 1;
            break;
        }
        if (!json) {
            print_row(&rows->v[i], &lv);
            continue;
        }
        json_t *o = row_json(&rows->v[i], &lv);
        if (!o || json_array_append_new(arr, o) != 0) {
            snprintf(err, errlen, "building JSON output failed (document %" PRIu64 ")",
                     rows->v[i].id);
            rc = 1;
        }
    }
    ctl_redis_free(cr);
    rstate_free(rs);
    if (rc != 0) {
        json_decref(arr);
        return rc;
    }
    if (json)
        return out_json(arr, err, errlen);
    return out_finish(err, errlen) == 0 ? 0 : 1;
}

int ctl_uploads(const chunkd_config *cfg, uint64_t user_filter, bool json, char *err,
                size_t errlen)
{
    MYSQL *db = ctl_db_connect(cfg, err, errlen);
    if (!db)
        return 1;
    upload_rows rows = {0};
    int rc = load_rows(db, user_filter, &rows, err, errlen) == 0 ? 0 : 1;
    mysql_close(db);
    if (rc == 0)
        rc = report(cfg, &rows, json, err, errlen);
    free(rows.v);
    return rc;
}
