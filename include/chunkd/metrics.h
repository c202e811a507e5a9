/* Counters and latency histograms, exported in the Prometheus text format.
 *
 * Each thread that counts (a worker, the sweeper) owns one metrics block and
 * is its only writer; the admin endpoint sums all blocks when scraped. The
 * single-writer rule lets an increment be a relaxed load and store, not a
 * locked read-modify-write, so counting costs nothing measurable on the hot
 * path, and the reader still sees whole values (no torn reads, no races). */
#ifndef CHUNKD_METRICS_H
#define CHUNKD_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum metric_counter {
    M_UPLOADS_STARTED,
    M_UPLOADS_COMPLETED,
    M_UPLOADS_RESUMED,
    M_CHUNKS_RECEIVED,
    M_BYTES_RECEIVED,
    M_ERRORS_SENT,
    M_REDIS_ERRORS,
    M_MYSQL_ERRORS,
    M_LEASES_LOCKED,      /* resume refused: another connection holds the lease */
    M_LEASES_LOST,        /* a writer found its lease taken over */
    M_TAKEOVERS,          /* resumes that took over from a writer that never let go */
    M_COMMIT_GROUPS,      /* groups of parked requests run together (upload_run_deferred) */
    M_COMMIT_GROUP_REQUESTS, /* requests run in those groups */
    M_SYNC_BATCHES,       /* batches of files made durable together (syncer.c) */
    M_SYNC_BATCHED_FILES, /* the files in them */
    M_READ_TURNS_CUT,     /* loop turns that left ready connections unread (conn_begin_turn) */
    M_COMMITS_AFTER_SYNC, /* completions whose UPDATE ran right after their sync (upload.c) */
    M_COUNTER_COUNT
} metric_counter;

/* Reasons an upload ends 'failed', as the failure_reason column has them. */
typedef enum metric_failure {
    MF_ABORTED,
    MF_EXPIRED,
    MF_CHECKSUM_MISMATCH,
    MF_FILE_INVALID,
    MF_UNAVAILABLE,
    MF_STORAGE,
    MF_OTHER,
    MF_COUNT
} metric_failure;

typedef enum metric_hist {
    H_CHUNK_WRITE,        /* writing one chunk's bytes to the file */
    H_FSYNC,              /* fdatasync at checkpoints and completion */
    H_REDIS,              /* one Redis round trip */
    H_MYSQL,              /* one MySQL statement */
    H_HIST_COUNT
} metric_hist;

#define METRICS_BUCKETS 15

typedef struct metrics {
    _Atomic uint64_t counter[M_COUNTER_COUNT];
    _Atomic uint64_t failed[MF_COUNT];
    _Atomic uint64_t bucket[H_HIST_COUNT][METRICS_BUCKETS + 1]; /* last: +Inf */
    _Atomic uint64_t sum_us[H_HIST_COUNT];
} metrics;

/* Registers a block for export. Call before threads start; the block must
 * outlive the registry. At most 1024 blocks. */
int metrics_register(metrics *m);
void metrics_unregister_all(void);

/* Single-writer updates; m may be NULL (nothing is counted). */
void metrics_add(metrics *m, metric_counter c, uint64_t n);
void metrics_failed(metrics *m, const char *reason);
void metrics_observe_us(metrics *m, metric_hist h, int64_t us);

/* Microseconds on the monotonic clock, for timing with metrics_observe_us. */
int64_t metrics_now_us(void);

/* Writes every registered block's sum in the Prometheus text format, plus
 * the gauges given by the caller. Returns 0, or -1 on a write error. */
int metrics_write_prometheus(FILE *out, int64_t open_connections, const char *node_id);

#endif
