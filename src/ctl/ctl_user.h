/* The `chunkctl user ...` commands. Each returns the process exit status
 * (0 on success, 1 on failure with a reason in err) and prints its result to
 * stdout, as key=value lines or, with json set, one JSON value. */
#ifndef CHUNKCTL_USER_H
#define CHUNKCTL_USER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <mysql.h>

/* Longest user name in bytes (users.name is VARCHAR(64)). */
#define USER_NAME_MAX 64

/* Checks a name for `user add`: 1 to USER_NAME_MAX characters from
 * [A-Za-z0-9._@+-], starting with a letter or digit. -1 with a reason. */
int user_check_name(const char *name, char *err, size_t errlen);

int user_add(MYSQL *db, const char *name, bool json, char *err, size_t errlen);
int user_rotate(MYSQL *db, uint64_t id, bool json, char *err, size_t errlen);
int user_set_disabled(MYSQL *db, uint64_t id, bool disabled, bool json, char *err,
                      size_t errlen);
int user_list(MYSQL *db, bool json, char *err, size_t errlen);

#endif
