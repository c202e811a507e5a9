/* The upload rules: create, chunk, complete, resume, status, list, abort.
 *
 * Socket-free: a connection feeds control lines and body bytes into its
 * session, and the session emits answer lines through a callback. The
 * session is where a connection's protocol state lives (who is signed in,
 * which upload is open, how far the current chunk has got). */
#ifndef CHUNKD_UPLOAD_H
#define CHUNKD_UPLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "chunkd/config.h"
#include "chunkd/docstore_mysql.h"
#include "chunkd/metrics.h"
#include "chunkd/msg.h"
#include "chunkd/offset_saver.h"
#include "chunkd/state_redis.h"
#include "chunkd/storage.h"
#include "chunkd/syncer.h"

/* What a worker lends its sessions: configuration and its own backends. */
typedef struct upload_env {
    const chunkd_config *cfg;
    const char *node_id;
    const char *boot_id;       /* this machine's current kernel boot */
    redis_state *rs;
    docstore *ds;
    offset_saver *saver;       /* chunk offsets, without waiting; NULL: saved with rs */
    syncer *syncer;            /* checkpoint syncs, without waiting; NULL: synced in place */
    /* The completions' UPDATE, run on the syncer's thread (its own
     * connection, used there only) while the worker serves its other
     * connections; NULL, or no syncer: run here. */
    docstore *commit_ds;
    int commits_on_syncer;     /* of those, handed over and not back; worker's thread */
    /* Completions' UPDATEs chained to their file's sync (upload_after_sync)
     * are not run before this monotonic time, after one failed; the
     * syncer's thread only. */
    int64_t chain_paused_until_ms;
    /* Chained completions back from the syncer, not yet answered
     * (upload_end_chained); worker's thread. */
    struct completion_commit *chained_back;
    metrics *metrics;          /* the worker's own block */
} upload_env;

#define SESSION_TOKEN_MAX (CFG_STR_MAX + 40) /* a lease token */

/* The one upload a connection has open for writing. */
typedef struct open_upload {
    upload_state st;      /* mirrors the Redis hash; st.offset = acknowledged bytes */
    int fd;
    EVP_MD_CTX *hash;     /* running SHA-256 of [0, hashed); NULL when not continuous */
    int64_t hashed;
    int64_t saved_offset; /* the offset Redis last took; st.offset may be ahead of it
                           * by chunks whose acknowledgement is pending */
    char digest[65];      /* SHA-256 of all filesize bytes once known; "" before */
    struct checkpoint *checkpoint; /* a sync on its way through env->syncer; NULL: none */
    struct checkpoint *final_sync; /* completion's sync on its way; NULL: none */
    uint64_t generation;  /* bumped when bytes are cut off: a sync started before is stale */
    int sync_error;       /* errno of a checkpoint sync that failed; 0: none */
    int64_t writeback_from; /* write-back was started for the bytes before this */
    int64_t lease_renewed_ms; /* monotonic time just before the last request that took or
                               * renewed the lease was sent; 0: none known */
    /* Set when its session went while a sync was on its way: the upload
     * stays, under the session's lease (orphan_token), until the syncs are
     * back, so that one that failed is cut back before anyone may resume
     * (upload.c, settle_orphan). */
    bool orphan;
    bool orphan_holds_lease; /* false: a chained UPDATE lets the lease go (end_commit) */
    char orphan_token[SESSION_TOKEN_MAX];
} open_upload;

/* Requests whose costly part is a commit (a MySQL redo-log flush, a file's
 * fdatasync) are not run when their line arrives: the session parks, and
 * the worker runs every parked request of its loop turn together
 * (upload_run_deferred), so one commit and one round of syncs serve them
 * all. A parked session takes no further input until its request is
 * answered, so answers keep their order. Until a completion's UPDATE is
 * handed to the syncer nothing has been changed anywhere for a parked
 * request: dropping it (the connection closed) is safe; after that the
 * statement goes on without the session (upload.c, end_commit). */
typedef enum deferred_kind {
    DEFER_NONE = 0,
    DEFER_UPLOAD,    /* insert the row, then open the upload */
    DEFER_COMPLETE,  /* sync the file, then mark the row completed */
    DEFER_COMMITTED, /* answered after its UPDATE on the syncer: rejoin the loop */
} deferred_kind;

typedef struct deferred_request {
    deferred_kind kind;
    /* DEFER_UPLOAD: what the request asked for */
    int64_t filesize;
    bool has_sha256;
    char sha256[65];
    char filename[MSG_FILENAME_MAX + 1];
    /* ... and, when not 0, the user whose row must be read to check the
     * credential (hashed here; the plain credential is not kept) */
    uint64_t auth_user;
    char auth_hash[65];
    /* DEFER_COMPLETE: the upload it completes, and the file's sync, which
     * runs on the worker's syncer between two groups: while `syncing` the
     * session stays parked but waits outside the groups (a large file's
     * sync takes a while, and the worker serves others meanwhile). */
    uint64_t document_id;
    bool syncing;
    bool synced;
    int sync_err;        /* the sync's errno when synced; 0: durable */
    /* ... then the row's UPDATE, on the syncer too (upload.c,
     * commit_on_syncer): while it runs, `syncing` again and `commit` names
     * it, this session being its entry commit_slot. */
    struct completion_commit *commit;
    size_t commit_slot;
} deferred_request;

/* The most sessions one upload_run_deferred call takes. */
#define UPLOAD_GROUP_MAX 128

/* Chunks written but not yet acknowledged: their offsets are saved in Redis
 * with one round trip for all of them when the connection's input runs dry
 * (upload_flush), then each gets its progress event. With an offset saver
 * the worker does not wait for that round trip: chunks written while a save
 * is on its way are covered by the next one. */
#define SESSION_PENDING_MAX 64

/* The chunk whose body is arriving. */
typedef struct chunk_progress {
    bool active;          /* a body is being consumed */
    bool accepted;        /* false: the body is read and dropped */
    int64_t offset;       /* where this chunk starts in the file */
    int64_t length;
    int64_t written;
    int64_t write_us;     /* time spent writing this chunk's bytes */
    storage_result io;    /* first write failure, if any */
    int io_errno;
} chunk_progress;

typedef int (*session_emit_fn)(void *arg, const char *data, size_t len);

typedef struct session {
    uint64_t user_id;            /* authenticated user; 0 = nobody yet */
    char lease_token[SESSION_TOKEN_MAX]; /* node id + random: names this session's leases */
    char credential_hash[65];    /* of the credential that authenticated user_id */
    open_upload *up;             /* owned; NULL when none is open */
    /* A document this session let go while a sync of it was on its way and
     * could not leave to it (upload.c, keep_for_sync): its file may hold
     * pages that never reached the disk, so the session's next resume of
     * it works on a fresh copy, as a takeover does. 0: none. */
    uint64_t fence_doc;
    chunk_progress chunk;
    int pending_acks;
    int64_t pending_end[SESSION_PENDING_MAX];
    bool saving;                 /* a save of the first saving_acks pending chunks is on its way */
    int saving_acks;
    int64_t saving_offset;       /* the offset that save carries */
    int64_t saving_sent_ms;      /* monotonic time it was handed over (it renews the lease) */
    upload_env *saving_env;      /* for its reply */
    deferred_request deferred;   /* kind != DEFER_NONE: parked */
    bool close;                  /* close once the queued answers are sent */
    char peer[64];
    session_emit_fn emit;
    void *emit_arg;
    void (*ready)(void *emit_arg); /* a syncing request may rejoin the groups; NULL: none */
} session;

void session_init(session *s, const char *node_id, const char *peer, session_emit_fn emit,
                  void *emit_arg);
/* Closes the open upload and gives up its lease (its state stays in Redis
 * for resume). */
void session_release(upload_env *env, session *s);

/* One control line. Returns the number of body bytes that follow it and
 * that the caller must feed to upload_on_body (0 for none). */
uint64_t upload_on_line(upload_env *env, session *s, const char *line, size_t len);

/* A slice of the current body; last is true for its final slice. */
void upload_on_body(upload_env *env, session *s, const char *data, size_t len, bool last);

/* Starts saving the offset that covers the chunks written since the last
 * save; each gets its answer (progress, or the error if Redis did not take
 * it) when Redis replies: at once without an offset saver, else from the
 * worker's loop. The connection calls it whenever its buffered input is used
 * up. */
void upload_flush(upload_env *env, session *s);

/* Waits until every written chunk has been answered. Called before anything
 * else is answered (and before an upload is let go), so answers stay in
 * order. */
void upload_drain(upload_env *env, session *s);

static inline bool session_parked(const session *s)
{
    return s->deferred.kind != DEFER_NONE;
}

/* Runs the parked requests of n sessions (n <= UPLOAD_GROUP_MAX), sharing
 * their commits and syncs, and answers each. Every session is unparked
 * afterwards; the caller then feeds each the rest of its input. */
void upload_run_deferred(upload_env *env, session *const *sessions, size_t n);

/* syncer_options.after_sync: on the syncer's thread, the UPDATE of the
 * completions whose file's sync (with sync_job.then) just succeeded, in
 * one statement, while their leases are certainly still held. */
void upload_after_sync(void *arg, sync_job *const *jobs, size_t n);

/* Answers the chained completions that came back from the syncer, all
 * together: called after syncer_handle_event. */
void upload_end_chained(upload_env *env);

/* Emits an error answer (and marks the session closing if err->close). */
void upload_send_error(upload_env *env, session *s, const msg_error *err);
/* The last words of a connection the server closes (idle, shutdown): the
 * answers still owed, then an error `code`/`reason` saying so. Not counted
 * as a request's error. */
void upload_say_goodbye(upload_env *env, session *s, int code, const char *reason);

#endif
