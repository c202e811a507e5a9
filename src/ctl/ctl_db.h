/* chunkctl's MySQL access: one connection, prepared statements only. */
#ifndef CHUNKCTL_DB_H
#define CHUNKCTL_DB_H

#include <stdbool.h>
#include <stddef.h>

#include <mysql.h>

#include "chunkd/config.h"

/* Connects with the mysql_* settings of cfg: over cfg->mysql_socket when it
 * is set, else over TCP to mysql_host:mysql_port (never a default socket).
 * Affected-row counts are matched rows (CLIENT_FOUND_ROWS), so an UPDATE
 * that changes nothing still tells whether the row exists.
 * NULL with a reason in err on failure; close with mysql_close. */
MYSQL *ctl_db_connect(const chunkd_config *cfg, char *err, size_t errlen);

/* Prepares sql, binds params (NULL when it has none) and executes it.
 * Returns the statement, which the caller closes with mysql_stmt_close, or
 * NULL with the server's error number in *errnum (0 for a local failure)
 * and a reason in err. what names the operation in the reason. */
MYSQL_STMT *ctl_db_run(MYSQL *db, const char *what, const char *sql, MYSQL_BIND *params,
                       unsigned int *errnum, char *err, size_t errlen);

/* b (cleared first) as an unsigned BIGINT at *v: a parameter, or a result
 * column fetched into *v. */
void ctl_db_bind_u64(MYSQL_BIND *b, uint64_t *v);
/* b (cleared first) as the parameter string s; *len is set to its length
 * and must live as long as the binding. */
void ctl_db_bind_text(MYSQL_BIND *b, const char *s, unsigned long *len);

/* b (cleared first) as a string result column fetched into buf (size
 * bytes, one kept for the terminator the caller writes at *len), with its
 * length, and whether it was cut short, in *len and *truncated. */
void ctl_db_bind_text_out(MYSQL_BIND *b, char *buf, size_t size, unsigned long *len,
                          my_bool *truncated);

/* The next row of stmt into its bound results: 1 a row (*truncated says
 * whether a column did not fit; NULL: such a row is an error), 0 no more,
 * -1 with a reason in err. */
int ctl_db_fetch(MYSQL_STMT *stmt, const char *what, bool *truncated, char *err, size_t errlen);

/* Formats the reason of a failed call on stmt into err. */
void ctl_db_stmt_error(MYSQL_STMT *stmt, const char *what, char *err, size_t errlen);

#endif
