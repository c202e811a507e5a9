/* chunkup's command line: options, environment, and exit statuses. */
#ifndef CHUNKUP_CLI_H
#define CHUNKUP_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunkup/client.h"

/* Exit statuses, documented in docs/CLIENT.md and --help. */
enum {
    CU_EXIT_OK = 0,
    CU_EXIT_USAGE = 1,
    CU_EXIT_FILE = 2,         /* a local file cannot be read (or changed) */
    CU_EXIT_AUTH = 3,         /* 401 */
    CU_EXIT_REFUSED = 4,      /* other 4xx */
    CU_EXIT_UNAVAILABLE = 5,  /* network, 5xx, retries used up */
    CU_EXIT_STORAGE = 6,      /* 507 */
    CU_EXIT_CHECKSUM = 7,     /* the server's SHA-256 differs from ours */
    CU_EXIT_PROTOCOL = 8      /* answers that do not follow the protocol */
};

#define CU_DEFAULT_SERVER "127.0.0.1:9400"
#define CU_DEFAULT_PORT "9400"

typedef struct cu_options {
    const char *command;      /* upload, status, list, abort, or NULL with help */
    char **args;              /* the command's operands (borrowed from argv) */
    int nargs;
    char host[256];
    char port[16];
    char server[300];         /* host:port as the state file names it */
    int64_t user_id;
    char *credential;         /* owned */
    char *state_path;         /* owned; NULL: the default location */
    int retries;
    int64_t limit_rate;       /* bytes per second, 0: none */
    int window;
    int timeout_ms;
    int list_limit;           /* 0: the server's default */
    bool quiet;
    bool json;
    bool help;
} cu_options;

/* Parses argv and the CHUNKUP_* environment. Returns an exit status:
 * CU_EXIT_OK, or CU_EXIT_USAGE / CU_EXIT_FILE with msg saying why. Resets
 * getopt, so it may be called repeatedly. */
int cu_options_parse(int argc, char **argv, cu_options *o, char *msg, size_t cap);
/* Accepts a zeroed or parsed struct; wipes the credential. */
void cu_options_free(cu_options *o);

/* "1048576", "64k", "10M", "1g" (binary multiples). */
int cu_parse_size(const char *s, int64_t *out);
/* A decimal integer in [min, max], nothing else. */
int cu_parse_int(const char *s, int64_t min, int64_t max, int64_t *out);
/* "host:port", "host", "[v6addr]:port", "[v6addr]", or a bare IPv6 address. */
int cu_parse_server(const char *s, char *host, size_t hcap, char *port, size_t pcap);

/* The exit status for a failed request. */
int cu_exit_status(const cu_error *err);

/* The longest lease a chunkd may grant (lease_ttl_ms's upper bound): a
 * locked upload is free again within it. */
#define CU_LOCK_WAIT_MAX_MS 600000

/* How long to wait before the next attempt: the backoff, or, when the
 * server said when its lease lapses (retry_after_ms > 0), that plus
 * margin_ms, never more than CU_LOCK_WAIT_MAX_MS plus margin_ms. */
int64_t cu_retry_wait_ms(int64_t backoff_ms, int64_t retry_after_ms, int64_t margin_ms);

/* "server refused: 413 file_too_large: file is larger than 500 MiB" etc. */
void cu_describe_error(char *buf, size_t cap, const cu_error *err);

#endif
