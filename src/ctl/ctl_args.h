/* chunkctl's command line: options (its own and chunkd's settings, which
 * are handed to config_load) and the command words, all checked before any
 * connection is made. */
#ifndef CHUNKCTL_ARGS_H
#define CHUNKCTL_ARGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum { EXIT_USAGE = 2 };

/* Longest --reason in bytes (documents.failure_reason is VARCHAR(255)). */
#define CTL_REASON_MAX 255

typedef enum {
    CMD_USER_ADD,
    CMD_USER_ROTATE,
    CMD_USER_DISABLE,
    CMD_USER_ENABLE,
    CMD_USER_LIST,
    CMD_UPLOADS,
    CMD_SHOW,
    CMD_FAIL,
    CMD_EXPIRE,
    CMD_STORAGE_MIGRATE,
} ctl_cmd;

typedef struct ctl_request {
    ctl_cmd cmd;
    bool json;
    const char *name;     /* user add */
    uint64_t id;          /* user id, or document id for show, fail, expire */
    uint64_t user_filter; /* uploads --user; 0 for all users */
    const char *reason;   /* fail --reason, or the command's default */
    /* argv for config_load: program name, --config FILE, flag/value pairs */
    const char *cfg_argv[40];
    int cfg_argc;
} ctl_request;

void ctl_usage(FILE *out);

/* Fills r from argv. Returns 0 to go on, -1 when --help or --version was
 * handled (exit 0), or EXIT_USAGE after printing why on stderr. */
int ctl_parse(int argc, char **argv, ctl_request *r);

/* Parses an id: decimal digits only, 1 to INT64_MAX; `what` names it in the
 * reason ("user id", "document id"). -1 with a reason. */
int ctl_parse_id(const char *s, const char *what, uint64_t *id, char *err, size_t errlen);

#endif
