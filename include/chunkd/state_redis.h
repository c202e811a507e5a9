/* Resume state of uploads in progress, kept in Redis (one hash per upload,
 * see docs/OPERATIONS.md). One redis_state per worker thread: hiredis
 * contexts are not thread-safe, and a per-thread handle needs no lock. */
#ifndef CHUNKD_STATE_REDIS_H
#define CHUNKD_STATE_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunkd/config.h"
#include "chunkd/metrics.h"
#include "chunkd/msg.h"
#include "chunkd/storage.h"

typedef struct upload_state {
    uint64_t document_id;
    uint64_t user_id;
    int64_t filesize;
    int64_t offset;          /* bytes written and acknowledged */
    int64_t synced_offset;   /* bytes known to be on stable storage (<= offset) */
    int64_t created_ms;
    int64_t updated_ms;
    char filename[MSG_FILENAME_MAX + 1];
    char declared_sha256[65];    /* empty when none was declared */
    char path[STORAGE_REL_PATH_MAX];
    char node[CFG_STR_MAX];
    char boot_id[40];        /* kernel boot of the writer: see docs/DURABILITY.md */
    char writer[CFG_STR_MAX + 40]; /* lease token of the session writing it; empty once it
                                    * let go cleanly */
} upload_state;

typedef struct redis_state redis_state;

/* Connects lazily: creation never fails for an unreachable Redis. The config
 * must outlive the handle. NULL only when out of memory. */
redis_state *rstate_new(const chunkd_config *cfg);
void rstate_free(redis_state *rs); /* accepts NULL */
/* Counts errors and times round trips into m (NULL: not counted). */
void rstate_set_metrics(redis_state *rs, metrics *m);
/* PING; 0 when Redis answers. */
int rstate_ping(redis_state *rs);

/* Every call returns 0 on success or -1 when Redis could not be reached or
 * answered with an error; rstate_error() then says why. A failed connection
 * is dropped and re-established on the next call. */
/* Writes the whole state with its TTL, but only while `lease` holds the
 * upload's lease (*lease_lost otherwise, and nothing written): the state of
 * an upload that was ended while its writer was busy must not come back. */
int rstate_put(redis_state *rs, const upload_state *st, const char *lease, bool *lease_lost);

/* Saves st->offset and st->synced_offset and refreshes the key's TTL, but only while `lease` is
 * still the holder of the upload's lease (which it also renews), so a writer
 * that lost its lease can never move the offset. Rewrites the whole hash if
 * the key had vanished (expired, or Redis lost it), again only under the
 * lease. *lease_lost says whether the lease had passed to someone else or
 * the upload ended (nothing was saved then). */
int rstate_save_offset(redis_state *rs, const upload_state *st, const char *lease,
                       bool *lease_lost);

/* The same save for a non-blocking sender (offset_saver.h): the command in
 * Redis' wire format, malloc'd in *cmd (the caller frees it); its length,
 * or -1 when out of memory. Its integer reply means what
 * rstate_save_offset_result says; RSTATE_SAVE_KEY_MISSING asks the caller
 * to write the whole state again (rstate_put). */
typedef enum rstate_saved {
    RSTATE_SAVED,
    RSTATE_SAVE_LEASE_LOST,
    RSTATE_SAVE_KEY_MISSING,
} rstate_saved;
int rstate_format_save_offset(const chunkd_config *cfg, const upload_state *st,
                              const char *lease, char **cmd);
rstate_saved rstate_save_offset_result(long long reply);

/* Leases: at most one session writes an upload at a time. A lease is a
 * Redis key holding the writer's token, with a TTL of lease_ttl_ms renewed
 * by every chunk; a crashed writer's lease lapses on its own.
 * rstate_lease_acquire sets *acquired, and when someone else holds it,
 * *retry_after_ms (the lease's remaining time, at most 2000; 0 when the
 * upload has ended: RSTATE_LEASE_ENDED). Taking a lease already held under
 * the same token succeeds. */
int rstate_lease_acquire(redis_state *rs, uint64_t document_id, const char *token,
                         bool *acquired, int64_t *retry_after_ms);

/* Renews the lease `token` holds, or takes it again if it lapsed and
 * nobody took it meanwhile: RETAKEN then says that the token's hold had a
 * gap, in which another writer may have come and gone, so the caller must
 * check that nothing changed before it goes on (handle_resume). GONE: held
 * by another, or the upload ended. */
typedef enum rstate_lease_kept {
    RSTATE_LEASE_RENEWED,
    RSTATE_LEASE_RETAKEN,
    RSTATE_LEASE_GONE,
} rstate_lease_kept;
int rstate_lease_keep(redis_state *rs, uint64_t document_id, const char *token,
                      rstate_lease_kept *kept);

/* Deletes the lease only if `token` holds it. */
int rstate_lease_release(redis_state *rs, uint64_t document_id, const char *token);
/* Hands the lease that `token` holds (and the upload hash's `writer`, if
 * it is token) to new_token, for a full lease time; *moved says whether
 * token held it. */
int rstate_lease_transfer(redis_state *rs, uint64_t document_id, const char *token,
                          const char *new_token, bool *moved);
/* What an ended upload's lease holds for RSTATE_LEASE_ENDED_MS, or
 * lease_ttl_ms if longer (rstate_end): no writer can take it, so none that
 * was busy with the upload when it ended can write its state back
 * (rstate_put) or open it anew (a new upload's open), and a resume that
 * gets this far is told the upload ended (rstate_lease_acquire: not
 * acquired, retry_after_ms 0). A writer slower than that reads the row
 * again after taking a lease (handle_resume). */
#define RSTATE_LEASE_ENDED "ended"
#define RSTATE_LEASE_ENDED_MS 60000
/* Ends an upload in Redis in one step (abort, fail, expiry): its lease
 * becomes RSTATE_LEASE_ENDED whoever held it, its state and its space
 * reservation go. */
int rstate_end(redis_state *rs, uint64_t document_id);
int rstate_get(redis_state *rs, uint64_t document_id, upload_state *st, bool *found);

/* Pipelined forms, one round trip for n uploads (the worker's groups, see
 * upload_run_deferred). They return -1 when Redis could not be reached
 * (rstate_error says why; no item's outcome is known); otherwise 0 and each
 * item's outcome, -1 meaning Redis answered that item with an error. */
#define RSTATE_MANY_MAX 128 /* items in one call */
/* New uploads' admission, leases and states, in one round trip. With
 * `available` >= 0, admission first: room is reserved for each upload's
 * filesize on the shared storage volume, which has `available` bytes free,
 * against what uploads in flight on every instance still need (one Redis
 * hash, `reserved`, checked and updated atomically by one script). The
 * uploads in flight are counted once; each of these, in order, fits next
 * to them and to the ones before it that fitted. fits[i] is 1, 0 when it
 * does not fit (nothing is reserved or written for it then; promised[i] is
 * what the others still need), or -1 when the reserve script failed
 * (nothing written for any). The reservation goes with the upload's state
 * (rstate_del, rstate_end, rstate_finish_many). With `available` < 0 every fits[i] is
 * 1. Then each admitted upload's lease (for sts[i].writer) and state:
 * opened[i] 1, 0 when not admitted or someone else holds the lease
 * (nothing written then, and its reservation let go: see open_lua), -1
 * when Redis answered with an error. */
int rstate_admit_open_many(redis_state *rs, size_t n, const upload_state *sts, int64_t available,
                           int8_t *fits, int64_t *promised, int8_t *opened);
/* For completion: held[i] is 1 when tokens[i] holds the lease (renewed),
 * or when the lease lapsed and the upload hash still names tokens[i] as
 * its writer (nobody took over; the lease is taken back); else 0. */
int rstate_lease_confirm_many(redis_state *rs, size_t n, const uint64_t *docs,
                              const char *const *tokens, int8_t *held);
/* Completed uploads' states, reservations and leases (those tokens[i]
 * holds) removed, in one script. */
int rstate_finish_many(redis_state *rs, size_t n, const uint64_t *docs,
                       const char *const *tokens);
/* The same command for an asynchronous connection (offset_saver.h): *cmd
 * is malloc'ed, its length returned; -1 when out of memory or n is too
 * large. Its reply is the number of states removed. */
int rstate_format_finish_many(const chunkd_config *cfg, size_t n, const uint64_t *docs,
                              const char *const *tokens, char **cmd);

/* Just the saved offset; *found is false when the key is gone. */
int rstate_get_offset(redis_state *rs, uint64_t document_id, int64_t *offset, bool *found);
int rstate_del(redis_state *rs, uint64_t document_id);
const char *rstate_error(const redis_state *rs);

#endif
