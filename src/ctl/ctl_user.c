/* User administration against the users table (sql/001_init.sql). */
#include "ctl_user.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <mysqld_error.h>

#include "ctl_cred.h"
#include "ctl_db.h"

int user_check_name(const char *name, char *err, size_t errlen)
{
    size_t n = strlen(name);
    if (n == 0 || n > USER_NAME_MAX) {
        snprintf(err, errlen, "user name must be 1 to %d characters", USER_NAME_MAX);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (i == 0 && !alnum) {
            snprintf(err, errlen, "user name must start with a letter or digit");
            return -1;
        }
        if (!alnum && !strchr("._@+-", c)) {
            snprintf(err, errlen,
                     "user name may only hold letters, digits and . _ @ + - (found byte 0x%02x)",
                     (unsigned char)c);
            return -1;
        }
    }
    return 0;
}

/* Prints a JSON value as one line and drops the reference. */
static int print_json(json_t *v, char *err, size_t errlen)
{
    if (!v) {
        snprintf(err, errlen, "building JSON output failed");
        return 1;
    }
    int rc = json_dumpf(v, stdout, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(v);
    if (rc != 0 || fputc('\n', stdout) == EOF || fflush(stdout) != 0) {
        snprintf(err, errlen, "writing output failed");
        return 1;
    }
    return 0;
}

static int print_credential(uint64_t id, const char *name, const char *cred, bool json,
                            char *err, size_t errlen)
{
    if (json) {
        json_t *o = name ? json_pack("{sIssss}", "user_id", (json_int_t)id, "name", name,
                                     "credential", cred)
                         : json_pack("{sIss}", "user_id", (json_int_t)id, "credential", cred);
        return print_json(o, err, errlen);
    }
    /* Flushed here: the credential exists nowhere else, so a failed write
     * must be reported as such, not as a generic output error at exit. */
    if (printf("user_id=%" PRIu64 "\ncredential=%s\n", id, cred) < 0 || fflush(stdout) != 0) {
        snprintf(err, errlen, "writing output failed");
        return 1;
    }
    return 0;
}

/* The row is already changed when output fails: say how to recover. */
static int credential_lost(uint64_t id, const char *done, char *err, size_t errlen)
{
    snprintf(err, errlen,
             "user %" PRIu64 " %s, but its credential could not be printed; "
             "make a new one with 'chunkctl user rotate %" PRIu64 "'",
             id, done, id);
    return 1;
}

/* Makes a credential and its hash; the caller wipes cred after use. */
static int new_credential(char cred[CRED_HEX_LEN + 1], char hash[CRED_HASH_HEX_LEN + 1],
                          char *err, size_t errlen)
{
    if (cred_generate(cred, err, errlen) != 0 || cred_hash(cred, hash, err, errlen) != 0)
        return -1;
    return 0;
}

int user_add(MYSQL *db, const char *name, bool json, char *err, size_t errlen)
{
    char cred[CRED_HEX_LEN + 1], hash[CRED_HASH_HEX_LEN + 1];
    if (new_credential(cred, hash, err, errlen) != 0)
        return 1;
    MYSQL_BIND params[2];
    unsigned long name_len, hash_len;
    ctl_db_bind_text(&params[0], name, &name_len);
    ctl_db_bind_text(&params[1], hash, &hash_len);
    unsigned int errnum;
    MYSQL_STMT *stmt =
        ctl_db_run(db, "adding user", "INSERT INTO users (name, credential_hash) VALUES (?, ?)",
                   params, &errnum, err, errlen);
    if (!stmt) {
        if (errnum == ER_DUP_ENTRY)
            snprintf(err, errlen, "a user named '%s' already exists", name);
        cred_wipe(cred, sizeof cred);
        return 1;
    }
    uint64_t id = mysql_stmt_insert_id(stmt);
    mysql_stmt_close(stmt);
    int rc = print_credential(id, name, cred, json, err, errlen);
    cred_wipe(cred, sizeof cred);
    return rc == 0 ? 0 : credential_lost(id, "was created", err, errlen);
}

/* Runs an UPDATE ... WHERE id = ? and fails when no row has that id. */
static int update_user(MYSQL *db, const char *what, const char *sql, MYSQL_BIND *params,
                       uint64_t id, char *err, size_t errlen)
{
    unsigned int errnum;
    MYSQL_STMT *stmt = ctl_db_run(db, what, sql, params, &errnum, err, errlen);
    if (!stmt)
        return 1;
    my_ulonglong rows = mysql_stmt_affected_rows(stmt);
    mysql_stmt_close(stmt);
    if (rows == (my_ulonglong)-1) {
        snprintf(err, errlen, "%s: the server reported no row count", what);
        return 1;
    }
    if (rows == 0) {
        snprintf(err, errlen, "no user with id %" PRIu64, id);
        return 1;
    }
    return 0;
}

int user_rotate(MYSQL *db, uint64_t id, bool json, char *err, size_t errlen)
{
    char cred[CRED_HEX_LEN + 1], hash[CRED_HASH_HEX_LEN + 1];
    if (new_credential(cred, hash, err, errlen) != 0)
        return 1;
    MYSQL_BIND params[2];
    unsigned long hash_len;
    ctl_db_bind_text(&params[0], hash, &hash_len);
    ctl_db_bind_u64(&params[1], &id);
    int rc = update_user(db, "rotating credential",
                         "UPDATE users SET credential_hash = ? WHERE id = ?", params, id, err,
                         errlen);
    if (rc == 0 && print_credential(id, NULL, cred, json, err, errlen) != 0)
        rc = credential_lost(id, "has a new credential", err, errlen);
    cred_wipe(cred, sizeof cred);
    return rc;
}

int user_set_disabled(MYSQL *db, uint64_t id, bool disabled, bool json, char *err,
                      size_t errlen)
{
    signed char flag = disabled ? 1 : 0;
    MYSQL_BIND params[2];
    memset(&params[0], 0, sizeof params[0]);
    params[0].buffer_type = MYSQL_TYPE_TINY;
    params[0].buffer = &flag;
    ctl_db_bind_u64(&params[1], &id);
    int rc = update_user(db, disabled ? "disabling user" : "enabling user",
                         "UPDATE users SET disabled = ? WHERE id = ?", params, id, err, errlen);
    if (rc != 0)
        return rc;
    if (json)
        return print_json(json_pack("{sIsb}", "user_id", (json_int_t)id, "disabled", disabled),
                          err, errlen);
    if (printf("user_id=%" PRIu64 "\ndisabled=%d\n", id, disabled ? 1 : 0) < 0) {
        snprintf(err, errlen, "writing output failed");
        return 1;
    }
    return 0;
}

/* One users row as fetched by user_list. */
typedef struct user_row {
    uint64_t id;
    char name[4 * USER_NAME_MAX + 1]; /* utf8mb4: up to 4 bytes a character */
    unsigned long name_len;
    my_bool name_truncated;
    signed char disabled;
    MYSQL_TIME created;
    my_bool created_null;
} user_row;

static void bind_row(MYSQL_BIND res[4], user_row *r)
{
    memset(res, 0, 4 * sizeof res[0]);
    ctl_db_bind_u64(&res[0], &r->id);
    ctl_db_bind_text_out(&res[1], r->name, sizeof r->name, &r->name_len, &r->name_truncated);
    res[2].buffer_type = MYSQL_TYPE_TINY;
    res[2].buffer = &r->disabled;
    res[3].buffer_type = MYSQL_TYPE_DATETIME;
    res[3].buffer = &r->created;
    res[3].is_null = &r->created_null;
}

/* ISO 8601 without a space, so the plain listing splits on blanks. */
static void format_time(const user_row *r, char *out, size_t outlen)
{
    if (r->created_null) {
        snprintf(out, outlen, "-");
        return;
    }
    const MYSQL_TIME *t = &r->created;
    snprintf(out, outlen, "%04u-%02u-%02uT%02u:%02u:%02u", t->year, t->month, t->day, t->hour,
             t->minute, t->second);
}

static int emit_row(const user_row *r, json_t *arr, char *err, size_t errlen)
{
    char created[40];
    format_time(r, created, sizeof created);
    if (arr) {
        json_t *o = json_pack("{sIss#sbss}", "user_id", (json_int_t)r->id, "name", r->name,
                              (int)r->name_len, "disabled", r->disabled != 0, "created_at",
                              created);
        if (!o || json_array_append_new(arr, o) != 0) {
            snprintf(err, errlen, "building JSON output failed (user %" PRIu64 ")", r->id);
            return -1;
        }
        return 0;
    }
    if (printf("%-8" PRIu64 " %-8s %-19s %.*s\n", r->id, r->disabled ? "disabled" : "enabled",
               created, (int)r->name_len, r->name) < 0) {
        snprintf(err, errlen, "writing output failed");
        return -1;
    }
    return 0;
}

int user_list(MYSQL *db, bool json, char *err, size_t errlen)
{
    unsigned int errnum;
    MYSQL_STMT *stmt =
        ctl_db_run(db, "listing users",
                   "SELECT id, name, disabled, created_at FROM users ORDER BY id", NULL,
                   &errnum, err, errlen);
    if (!stmt)
        return 1;
    user_row row;
    MYSQL_BIND res[4];
    memset(&row, 0, sizeof row);
    bind_row(res, &row);
    if (mysql_stmt_bind_result(stmt, res) != 0) {
        ctl_db_stmt_error(stmt, "listing users", err, errlen);
        mysql_stmt_close(stmt);
        return 1;
    }
    json_t *arr = NULL;
    if (json) {
        arr = json_array();
        if (!arr) {
            snprintf(err, errlen, "building JSON output failed");
            mysql_stmt_close(stmt);
            return 1;
        }
    } else if (printf("%-8s %-8s %-19s %s\n", "ID", "STATE", "CREATED", "NAME") < 0) {
        snprintf(err, errlen, "writing output failed");
        mysql_stmt_close(stmt);
        return 1;
    }
    int rc = 0;
    bool truncated;
    for (;;) {
        int f = ctl_db_fetch(stmt, "listing users", &truncated, err, errlen);
        if (f <= 0) {
            rc = f < 0;
            break;
        }
        if (truncated) {
            snprintf(err, errlen, "listing users: user %" PRIu64 " has a name longer than %zu bytes",
                     row.id, sizeof row.name - 1);
            rc = 1;
            break;
        }
        if (emit_row(&row, arr, err, errlen) != 0) {
            rc = 1;
            break;
        }
    }
    mysql_stmt_close(stmt);
    if (rc == 0 && arr)
        return print_json(arr, err, errlen);
    json_decref(arr);
    return rc;
}
