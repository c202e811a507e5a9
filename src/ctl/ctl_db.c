/* Connection set-up and the prepare/bind/execute sequence with its checks. */
#include "ctl_db.h"

#include <stdio.h>
#include <string.h>

static int set_option(MYSQL *db, enum mysql_option opt, const void *arg, const char *name,
                      char *err, size_t errlen)
{
    if (mysql_options(db, opt, arg) != 0) {
        snprintf(err, errlen, "MySQL option %s: %s", name, mysql_error(db));
        return -1;
    }
    return 0;
}

MYSQL *ctl_db_connect(const chunkd_config *cfg, char *err, size_t errlen)
{
    MYSQL *db = mysql_init(NULL);
    if (!db) {
        snprintf(err, errlen, "MySQL: out of memory");
        return NULL;
    }
    /* The MySQL timeouts are in whole seconds; round up so a small
     * backend_timeout_ms never becomes "no timeout". */
    unsigned int timeout_s = (unsigned int)((cfg->backend_timeout_ms + 999) / 1000);
    int use_socket = cfg->mysql_socket[0] != '\0';
    unsigned int protocol = use_socket ? MYSQL_PROTOCOL_SOCKET : MYSQL_PROTOCOL_TCP;
    if (set_option(db, MYSQL_OPT_CONNECT_TIMEOUT, &timeout_s, "connect timeout", err, errlen) ||
        set_option(db, MYSQL_OPT_READ_TIMEOUT, &timeout_s, "read timeout", err, errlen) ||
        set_option(db, MYSQL_OPT_WRITE_TIMEOUT, &timeout_s, "write timeout", err, errlen) ||
        set_option(db, MYSQL_OPT_PROTOCOL, &protocol, "protocol", err, errlen) ||
        set_option(db, MYSQL_SET_CHARSET_NAME, "utf8mb4", "charset", err, errlen)) {
        mysql_close(db);
        return NULL;
    }
    const char *host = use_socket ? "localhost" : cfg->mysql_host;
    if (!mysql_real_connect(db, host, cfg->mysql_user, cfg->mysql_password,
                            cfg->mysql_database, (unsigned int)cfg->mysql_port,
                            use_socket ? cfg->mysql_socket : NULL, CLIENT_FOUND_ROWS)) {
        if (use_socket)
            snprintf(err, errlen, "MySQL connect to socket %s as %s: %s", cfg->mysql_socket,
                     cfg->mysql_user, mysql_error(db));
        else
            snprintf(err, errlen, "MySQL connect to %s:%lld as %s: %s", cfg->mysql_host,
                     (long long)cfg->mysql_port, cfg->mysql_user, mysql_error(db));
        mysql_close(db);
        return NULL;
    }
    return db;
}

void ctl_db_stmt_error(MYSQL_STMT *stmt, const char *what, char *err, size_t errlen)
{
    snprintf(err, errlen, "%s: %s (MySQL error %u)", what, mysql_stmt_error(stmt),
             mysql_stmt_errno(stmt));
}

void ctl_db_bind_u64(MYSQL_BIND *b, uint64_t *v)
{
    memset(b, 0, sizeof *b);
    b->buffer_type = MYSQL_TYPE_LONGLONG;
    b->buffer = v;
    b->is_unsigned = 1;
}

void ctl_db_bind_text(MYSQL_BIND *b, const char *s, unsigned long *len)
{
    memset(b, 0, sizeof *b);
    *len = (unsigned long)strlen(s);
    b->buffer_type = MYSQL_TYPE_STRING;
    b->buffer = (void *)s;
    b->buffer_length = *len;
    b->length = len;
}

void ctl_db_bind_text_out(MYSQL_BIND *b, char *buf, size_t size, unsigned long *len,
                          my_bool *truncated)
{
    memset(b, 0, sizeof *b);
    b->buffer_type = MYSQL_TYPE_STRING;
    b->buffer = buf;
    b->buffer_length = size - 1;
    b->length = len;
    b->error = truncated;
}

int ctl_db_fetch(MYSQL_STMT *stmt, const char *what, bool *truncated, char *err, size_t errlen)
{
    int f = mysql_stmt_fetch(stmt);
    if (f == MYSQL_NO_DATA)
        return 0;
    if (f == MYSQL_DATA_TRUNCATED && truncated) {
        *truncated = true;
        return 1;
    }
    if (f != 0) {
        if (f == MYSQL_DATA_TRUNCATED)
            snprintf(err, errlen, "%s: a value longer than expected", what);
        else
            ctl_db_stmt_error(stmt, what, err, errlen);
        return -1;
    }
    if (truncated)
        *truncated = false;
    return 1;
}

MYSQL_STMT *ctl_db_run(MYSQL *db, const char *what, const char *sql, MYSQL_BIND *params,
                       unsigned int *errnum, char *err, size_t errlen)
{
    *errnum = 0;
    MYSQL_STMT *stmt = mysql_stmt_init(db);
    if (!stmt) {
        snprintf(err, errlen, "%s: %s", what, mysql_error(db));
        *errnum = mysql_errno(db);
        return NULL;
    }
    if (mysql_stmt_prepare(stmt, sql, (unsigned long)strlen(sql)) != 0 ||
        (params && mysql_stmt_bind_param(stmt, params)) || mysql_stmt_execute(stmt) != 0) {
        ctl_db_stmt_error(stmt, what, err, errlen);
        *errnum = mysql_stmt_errno(stmt);
        mysql_stmt_close(stmt);
        return NULL;
    }
    return stmt;
}
