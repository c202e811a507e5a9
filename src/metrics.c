/* Metrics blocks and their Prometheus export. */
#include "chunkd/metrics.h"

#include <inttypes.h>
#include <string.h>
#include <time.h>

enum { MAX_BLOCKS = 1024 };

static metrics *blocks[MAX_BLOCKS];
static size_t nblocks;

/* Upper bounds of the histogram buckets, in microseconds. */
static const int64_t bucket_le_us[METRICS_BUCKETS] = {
    50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
    1000000, 5000000,
};

static const char *const counter_names[M_COUNTER_COUNT][2] = {
    [M_UPLOADS_STARTED] = {"chunkd_uploads_started_total", "Uploads created."},
    [M_UPLOADS_COMPLETED] = {"chunkd_uploads_completed_total", "Uploads completed with SUCCESS."},
    [M_UPLOADS_RESUMED] = {"chunkd_uploads_resumed_total", "Resume requests served."},
    [M_CHUNKS_RECEIVED] = {"chunkd_chunks_received_total", "Chunks written and acknowledged."},
    [M_BYTES_RECEIVED] = {"chunkd_bytes_received_total", "Chunk bytes written and acknowledged."},
    [M_ERRORS_SENT] = {"chunkd_errors_sent_total", "Error answers sent to clients."},
    [M_REDIS_ERRORS] = {"chunkd_redis_errors_total", "Redis calls that failed."},
    [M_MYSQL_ERRORS] = {"chunkd_mysql_errors_total", "MySQL calls that failed."},
    [M_LEASES_LOCKED] = {"chunkd_leases_locked_total",
                         "Resumes refused because another connection held the lease."},
    [M_LEASES_LOST] = {"chunkd_leases_lost_total",
                       "Writers that found their lease taken over by another connection."},
    [M_TAKEOVERS] = {"chunkd_takeovers_total",
                     "Resumes that took an upload over from a writer that never let go "
                     "(crashed, stalled or partitioned), fencing its file."},
    [M_COMMIT_GROUPS] = {"chunkd_commit_groups_total",
                         "Groups of upload or upload_complete requests that shared one commit."},
    [M_COMMIT_GROUP_REQUESTS] = {"chunkd_commit_group_requests_total",
                                 "Requests run in those groups (divided by the groups: the "
                                 "average group size)."},
    [M_SYNC_BATCHES] = {"chunkd_sync_batches_total",
                        "Batches of files made durable together: one syncfs and one flush "
                        "instead of an fdatasync each (docs/DURABILITY.md)."},
    [M_SYNC_BATCHED_FILES] = {"chunkd_sync_batched_files_total",
                              "Files made durable in those batches (the rest of "
                              "chunkd_fsync_seconds_count had an fdatasync of their own)."},
    [M_READ_TURNS_CUT] = {"chunkd_read_turns_cut_total",
                          "Worker loop turns that spent their read budget with connections "
                          "still to read; they are read first in the next turn."},
    [M_COMMITS_AFTER_SYNC] = {"chunkd_commits_after_sync_total",
                              "Completions whose row was marked completed on the syncer's "
                              "thread right after their file's sync, without a trip back "
                              "to the worker in between."},
};

static const char *const failure_names[MF_COUNT] = {
    [MF_ABORTED] = "aborted",
    [MF_EXPIRED] = "expired",
    [MF_CHECKSUM_MISMATCH] = "checksum_mismatch",
    [MF_FILE_INVALID] = "file_invalid",
    [MF_UNAVAILABLE] = "unavailable",
    [MF_STORAGE] = "storage",
    [MF_OTHER] = "other",
};

static const char *const hist_names[H_HIST_COUNT][2] = {
    [H_CHUNK_WRITE] = {"chunkd_chunk_write_seconds", "Time to write one chunk to its file."},
    [H_FSYNC] = {"chunkd_fsync_seconds", "Time of one fdatasync."},
    [H_REDIS] = {"chunkd_redis_seconds", "Time of one Redis round trip."},
    [H_MYSQL] = {"chunkd_mysql_seconds", "Time of one MySQL statement."},
};

int metrics_register(metrics *m)
{
    if (nblocks >= MAX_BLOCKS)
        return -1;
    blocks[nblocks++] = m;
    return 0;
}

void metrics_unregister_all(void)
{
    nblocks = 0;
}

/* The block's only writer adds: no read-modify-write atomicity needed. */
static void bump(_Atomic uint64_t *v, uint64_t n)
{
    atomic_store_explicit(v, atomic_load_explicit(v, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

void metrics_add(metrics *m, metric_counter c, uint64_t n)
{
    if (m)
        bump(&m->counter[c], n);
}

void metrics_failed(metrics *m, const char *reason)
{
    if (!m)
        return;
    metric_failure f = MF_OTHER;
    for (int i = 0; i < MF_OTHER; i++)
        if (strcmp(reason, failure_names[i]) == 0)
            f = (metric_failure)i;
    if (strcmp(reason, "insufficient_storage") == 0 || strcmp(reason, "storage_error") == 0)
        f = MF_STORAGE;
    bump(&m->failed[f], 1);
}

void metrics_observe_us(metrics *m, metric_hist h, int64_t us)
{
    if (!m)
        return;
    if (us < 0)
        us = 0;
    int b = 0;
    while (b < METRICS_BUCKETS && us > bucket_le_us[b])
        b++;
    bump(&m->bucket[h][b], 1);
    bump(&m->sum_us[h], (uint64_t)us);
}

int64_t metrics_now_us(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        return 0;
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static uint64_t load(const _Atomic uint64_t *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

/* Sums of one field over every block. */
static uint64_t sum_counter(int c)
{
    uint64_t t = 0;
    for (size_t i = 0; i < nblocks; i++)
        t += load(&blocks[i]->counter[c]);
    return t;
}

static uint64_t sum_failed(int f)
{
    uint64_t t = 0;
    for (size_t i = 0; i < nblocks; i++)
        t += load(&blocks[i]->failed[f]);
    return t;
}

static uint64_t sum_bucket(int h, int b)
{
    uint64_t t = 0;
    for (size_t i = 0; i < nblocks; i++)
        t += load(&blocks[i]->bucket[h][b]);
    return t;
}

static uint64_t sum_us(int h)
{
    uint64_t t = 0;
    for (size_t i = 0; i < nblocks; i++)
        t += load(&blocks[i]->sum_us[h]);
    return t;
}

int metrics_write_prometheus(FILE *out, int64_t open_connections, const char *node_id)
{
    int bad = 0;
    for (int c = 0; c < M_COUNTER_COUNT; c++)
        bad |= fprintf(out, "# HELP %s %s\n# TYPE %s counter\n%s{node=\"%s\"} %" PRIu64 "\n",
                       counter_names[c][0], counter_names[c][1], counter_names[c][0],
                       counter_names[c][0], node_id, sum_counter(c)) < 0;
    bad |= fprintf(out, "# HELP chunkd_uploads_failed_total Uploads that ended 'failed', by "
                        "reason.\n# TYPE chunkd_uploads_failed_total counter\n") < 0;
    for (int f = 0; f < MF_COUNT; f++)
        bad |= fprintf(out, "chunkd_uploads_failed_total{node=\"%s\",reason=\"%s\"} %" PRIu64 "\n",
                       node_id, failure_names[f], sum_failed(f)) < 0;
    bad |= fprintf(out, "# HELP chunkd_connections Client connections open now.\n"
                        "# TYPE chunkd_connections gauge\nchunkd_connections{node=\"%s\"} %" PRId64
                        "\n",
                   node_id, open_connections) < 0;
    for (int h = 0; h < H_HIST_COUNT; h++) {
        const char *name = hist_names[h][0];
        bad |= fprintf(out, "# HELP %s %s\n# TYPE %s histogram\n", name, hist_names[h][1],
                       name) < 0;
        uint64_t cumulative = 0;
        for (int b = 0; b <= METRICS_BUCKETS; b++) {
            cumulative += sum_bucket(h, b);
            if (b < METRICS_BUCKETS)
                bad |= fprintf(out, "%s_bucket{node=\"%s\",le=\"%g\"} %" PRIu64 "\n", name,
                               node_id, (double)bucket_le_us[b] / 1e6, cumulative) < 0;
            else
                bad |= fprintf(out, "%s_bucket{node=\"%s\",le=\"+Inf\"} %" PRIu64 "\n", name,
                               node_id, cumulative) < 0;
        }
        bad |= fprintf(out, "%s_sum{node=\"%s\"} %.6f\n%s_count{node=\"%s\"} %" PRIu64 "\n", name,
                       node_id, (double)sum_us(h) / 1e6, name, node_id,
                       cumulative) < 0;
    }
    return bad ? -1 : 0;
}
