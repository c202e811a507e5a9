/* Server configuration: one table of named, typed, bounded options.
 *
 * Precedence, lowest first: built-in defaults, the config file
 * (`key = value` lines), environment variables (CHUNKD_<KEY> in upper case),
 * command-line flags (--key=value or --key value). Every numeric value is
 * range-checked; an out-of-range value is an error, never clamped silently. */
#ifndef CHUNKD_CONFIG_H
#define CHUNKD_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define CFG_STR_MAX 256

typedef struct chunkd_config {
    char listen[CFG_STR_MAX];          /* host:port; port 0 picks a free one */
    char storage_dir[CFG_STR_MAX];
    char node_id[CFG_STR_MAX];         /* empty: hostname-pid at start-up */
    char ready_file[CFG_STR_MAX];      /* written with the bound port once serving */
    char admin_listen[CFG_STR_MAX];    /* host:port of /health and /metrics; empty: off */
    char web_root[CFG_STR_MAX];        /* the web UI's files; empty: none served */
    char log_level[16];                /* debug, info, warn, error */

    char redis_host[CFG_STR_MAX];
    int64_t redis_port;
    char redis_password[CFG_STR_MAX];
    int64_t redis_db;
    char redis_prefix[64];             /* key prefix, "chunkd:" */

    char mysql_host[CFG_STR_MAX];
    int64_t mysql_port;
    char mysql_socket[CFG_STR_MAX];    /* used instead of host:port when set */
    char mysql_user[CFG_STR_MAX];
    char mysql_password[CFG_STR_MAX];
    char mysql_database[CFG_STR_MAX];

    int64_t workers;                   /* 0: number of online cores */
    int64_t max_file_size;
    int64_t chunk_size;
    int64_t max_chunk_size;
    int64_t max_line;
    int64_t max_line_unauth;           /* tighter limit before a connection authenticates */
    int64_t request_timeout_ms;        /* a started line or chunk must be complete by then */
    int64_t max_connections_per_ip;
    int64_t max_uploads_per_user;      /* uploads 'uploading' at once per user (0: no limit) */
    int64_t max_connections;
    int64_t max_output_buffer;         /* stop reading a client past this */
    int64_t idle_timeout_ms;
    int64_t backend_timeout_ms;        /* Redis and MySQL connect/IO */
    int64_t upload_ttl_s;              /* Redis key TTL, refreshed on activity */
    int64_t storage_admission;         /* 1: refuse uploads that cannot fit (507) up front */
    int64_t min_free_bytes;            /* admission keeps this much of the volume free */
    int64_t sync_interval_bytes;       /* fdatasync at least this often (0: every chunk) */
    int64_t sync_when_idle;            /* 1: checkpoints every 4 MiB while the syncer is idle */
    int64_t sync_batching;             /* 1: sync files of a batch together (fs_sync.h) */
    int64_t sync_batch_max_unwritten;  /* ... while at most this much is unwritten */
    int64_t lease_ttl_ms;
    int64_t shutdown_grace_ms;
    int64_t upload_expiry_s;           /* uploads idle this long are failed as 'expired' */
    int64_t sweep_interval_s;          /* how often to look for them (0: never) */         /* how long a chunk in flight may take to finish at shutdown */              /* a writer's lease; lapses this long after a crash */
    int64_t list_limit_max;
} chunkd_config;

/* Fills cfg with the built-in defaults. */
void config_defaults(chunkd_config *cfg);

/* Applies file, environment and argv (in that order) over cfg.
 * argv may name --config FILE. Returns 0, 1 when --help or --version was
 * handled (the caller exits 0), or -1 with a reason in err. */
int config_load(chunkd_config *cfg, int argc, char **argv, char *err, size_t errlen);

/* Sets one option by name from a string; -1 with a reason on a bad name or
 * value. Used by every source above and by tests. */
int config_set(chunkd_config *cfg, const char *name, const char *value, char *err,
               size_t errlen);

/* Checks relations between options (chunk_size <= max_chunk_size, ...). */
int config_validate(const chunkd_config *cfg, char *err, size_t errlen);

void config_print_help(FILE *out);

/* Splits "host:port" (or "[v6]:port"); -1 on a malformed value. */
int config_split_hostport(const char *s, char *host, size_t hostlen, int *port);

#endif
