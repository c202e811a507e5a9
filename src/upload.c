/* Upload rules. Every request ends in exactly one answer line (a chunk's
 * answer comes once its body has been read), so clients can pipeline.
 *
 * Order of effects, chosen so that a failure at any step leaves the three
 * stores agreeing or reconcilable toward the file on disk:
 *   upload:   MySQL row -> file -> Redis key (under the lease)
 *   chunk:    file bytes -> Redis offset (the offset never runs ahead of bytes)
 *   complete: sync + verify file -> MySQL 'completed' -> Redis key removed
 *   fail:     MySQL 'failed' -> lease 'ended' + Redis key removed -> file
 *             removed (lifecycle.c) */
#include "chunkd/upload.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "chunkd/auth.h"
#include "chunkd/lifecycle.h"
#include "chunkd/log.h"
#include "chunkd/util.h"

#define DEFAULT_LIST_LIMIT 100

/* A group goes to Redis and MySQL in one call each. */
_Static_assert(UPLOAD_GROUP_MAX <= RSTATE_MANY_MAX && UPLOAD_GROUP_MAX <= DOCSTORE_BULK_MAX,
               "a group must fit one pipeline and one bulk statement");
/* How often write-back is started behind a large upload (upload_on_body):
 * per 4 MiB, not per chunk, which measured slower. */
#define WRITEBACK_STEP (4 * 1024 * 1024)

/* A lease token: unique across sessions, processes and restarts, so that
 * a lease taken by a session that no longer exists never looks like ours. */
static void new_lease_token(const char *node_id, char *out, size_t size)
{
    unsigned char rnd[12];
    char hex[2 * sizeof rnd + 1];
    if (RAND_bytes(rnd, sizeof rnd) != 1) {
        static _Atomic uint64_t fallback;
        uint64_t n = ++fallback;
        memcpy(rnd, &n, sizeof n);
        int64_t t = util_mono_ms();
        memcpy(rnd + sizeof n, &t, sizeof rnd - sizeof n);
    }
    util_hex(rnd, sizeof rnd, hex);
    snprintf(out, size, "%s/%s", node_id, hex);
}

void session_init(session *s, const char *node_id, const char *peer, session_emit_fn emit,
                  void *emit_arg)
{
    memset(s, 0, sizeof *s);
    snprintf(s->peer, sizeof s->peer, "%s", peer);
    s->emit = emit;
    s->emit_arg = emit_arg;
    new_lease_token(node_id, s->lease_token, sizeof s->lease_token);
}

/* A checkpoint handed to the syncer. When the session goes first, the
 * upload waits for the result (session_release); when the upload is let
 * go any other way (its row ended, another upload opened on the same
 * document), the checkpoint is orphaned and its result dropped. */
typedef struct checkpoint {
    sync_job job; /* first: the syncer hands back this pointer */
    upload_env *env;
    open_upload *up;
    session *s;   /* the completion waiting for it; NULL for a checkpoint */
    bool orphaned;
    /* A completion's UPDATE chained to this sync (upload_after_sync), or
     * NULL; owned here until the job is back. */
    struct completion_commit *then_commit;
} checkpoint;

/* A completion group's UPDATE (group_complete), run in place or on the
 * syncer's thread. The statement needs only what is copied here: a session
 * that closes while it runs on the syncer leaves its entry's s NULL, and
 * end_commit settles that row's lease and state without it. */
typedef struct completion_commit {
    sync_job job;       /* first: the syncer hands back this pointer */
    upload_env *env;
    docstore *ds;       /* the connection it runs on: env->ds, or env->commit_ds */
    int rc;             /* the statement's */
    char why[512];      /* its error when rc != 0 */
    /* Chained to its file's sync: the UPDATE may run until this monotonic
     * time (half the lease's life after its last renewal: see
     * confirm_leases), and ran once it did. */
    int64_t lease_sure_until_ms;
    bool ran;
    struct completion_commit *back_next; /* in upload_env.chained_back */
    size_t n;
    struct commit_entry {
        session *s;     /* NULL once the session closed */
        uint64_t doc;
        char sha[65];
        char path[STORAGE_REL_PATH_MAX];
        char token[SESSION_TOKEN_MAX];
        bool changed;
    } e[];
} completion_commit;

static void end_commit(completion_commit *cc, bool rejoin);
static int take_sync_error(upload_env *env, open_upload *up, const char *token);

static void open_upload_free(open_upload *up)
{
    if (!up)
        return;
    if (up->checkpoint)
        up->checkpoint->orphaned = true;
    if (up->final_sync)
        up->final_sync->orphaned = true;
    if (up->fd >= 0 && close(up->fd) != 0)
        log_warn("event=close_failed doc=%" PRIu64 " error=\"%s\"", up->st.document_id,
                 strerror(errno));
    EVP_MD_CTX_free(up->hash);
    free(up);
}

/* Forgets the open upload without touching its lease: for when the lease
 * is already someone else's. */
static void forget_open_upload(session *s)
{
    open_upload_free(s->up);
    s->up = NULL;
}

/* Lets the lease go if `token` holds it (a clean release: the upload's
 * writer is cleared with it); a failure is logged, the lease lapses. */
static void let_lease_go(upload_env *env, uint64_t doc, const char *token)
{
    if (rstate_lease_release(env->rs, doc, token) != 0)
        log_warn("event=lease_release_failed doc=%" PRIu64 " error=\"%s\"", doc,
                 rstate_error(env->rs));
}

/* A sync of the session's upload is on its way and may fail too: the
 * upload and its lease stay until it is back (settle_orphan). The lease
 * stays under the session's token when the session ends with it (or a
 * chained UPDATE holds it: the session is parked then, and ends); a
 * session that goes on hands it to a token of the upload's own, so that it
 * can neither take it back nor let it go before the sync is back (a resume
 * of the same document meanwhile is answered 409 locked). False when it
 * could not be handed over (Redis away, or the lease no longer ours): the
 * sync's result is dropped then, and the session's next resume of the
 * document is fenced (session.fence_doc). */
static bool keep_for_sync(upload_env *env, session *s, bool session_ends, bool committing)
{
    open_upload *up = s->up;
    uint64_t doc = up->st.document_id;
    if (session_ends || committing) {
        util_strlcpy(up->orphan_token, s->lease_token, sizeof up->orphan_token);
    } else {
        new_lease_token(env->node_id, up->orphan_token, sizeof up->orphan_token);
        bool moved = false;
        int rc = rstate_lease_transfer(env->rs, doc, s->lease_token, up->orphan_token, &moved);
        if (rc != 0 || !moved) {
            if (rc != 0)
                log_warn("event=upload_not_kept_for_sync doc=%" PRIu64 " error=\"%s\"", doc,
                         rstate_error(env->rs));
            else /* its row was ended (abort), or the lease lapsed */
                log_info("event=upload_not_kept_for_sync doc=%" PRIu64 " reason=lease_not_held",
                         doc);
            s->fence_doc = doc;
            return false;
        }
        /* A state rebuilt by the cut-back names its writer right. */
        util_strlcpy(up->st.writer, up->orphan_token, sizeof up->st.writer);
    }
    log_info("event=upload_kept_for_sync doc=%" PRIu64 " offset=%" PRId64, doc, up->st.offset);
    up->orphan = true;
    up->orphan_holds_lease = !committing;
    if (up->final_sync)
        up->final_sync->s = NULL;
    s->up = NULL;
    return true;
}

/* Lets go of the session's open upload and its lease. `session_ends`:
 * the connection is going (session_release); otherwise the session goes
 * on and may ask for the same document again. */
static void release_upload(upload_env *env, session *s, bool session_ends)
{
    /* A row whose UPDATE is on the syncer may be completed any moment: its
     * lease stays taken until the statement is back (end_commit). */
    bool committing = s->deferred.commit != NULL;
    if (committing) {
        s->deferred.commit->e[s->deferred.commit_slot].s = NULL;
        s->deferred.commit = NULL;
    }
    s->deferred.kind = DEFER_NONE; /* any other parked request has changed nothing yet */
    upload_drain(env, s); /* answers the chunks written but not yet answered */
    open_upload *up = s->up;
    if (!up)
        return;
    /* Pages whose write-back failed are clean in the cache but not on
     * disk, and a resume in this boot trusts the cache: a checkpoint that
     * failed is cut back to the last good one before the lease goes. */
    take_sync_error(env, up, s->lease_token);
    if ((up->checkpoint || up->final_sync) && keep_for_sync(env, s, session_ends, committing))
        return;
    if (!committing)
        let_lease_go(env, up->st.document_id, s->lease_token);
    forget_open_upload(s);
}

void session_release(upload_env *env, session *s)
{
    release_upload(env, s, true);
}

/* An upload whose session went (session_release), once no sync of it is
 * on its way any more: cut back to the last good checkpoint if one
 * failed, then the lease let go (a clean release: a resume may trust the
 * rest) unless a chained UPDATE holds it, and the upload freed. */
static void settle_orphan(upload_env *env, open_upload *up)
{
    if (up->checkpoint || up->final_sync)
        return;
    take_sync_error(env, up, up->orphan_token);
    log_info("event=upload_settled doc=%" PRIu64 " offset=%" PRId64, up->st.document_id,
             up->st.offset);
    if (up->orphan_holds_lease)
        let_lease_go(env, up->st.document_id, up->orphan_token);
    open_upload_free(up);
}

/* ---- answers ---------------------------------------------------------- */

static void emit_line(session *s, const char *data, size_t len)
{
    if (s->emit(s->emit_arg, data, len) != 0)
        s->close = true; /* cannot queue an answer: the stream is lost */
}

/* Takes ownership of answer. */
static void send_json(session *s, json_t *answer)
{
    size_t len = 0;
    char *line = answer ? msg_dump_line(answer, &len) : NULL;
    json_decref(answer);
    if (!line) {
        log_error("event=answer_failed peer=%s reason=out_of_memory", s->peer);
        s->close = true;
        return;
    }
    emit_line(s, line, len);
    free(line);
}

void upload_say_goodbye(upload_env *env, session *s, int code, const char *reason)
{
    upload_drain(env, s); /* the answers owed first: the error is the last */
    msg_error err;
    msg_fail(&err, code, reason, "the server closed the connection: %s", reason);
    send_json(s, msg_error_json(&err));
}

void upload_send_error(upload_env *env, session *s, const msg_error *err)
{
    /* Answers stay in request order: chunks written before come first. */
    upload_drain(env, s);
    metrics_add(env->metrics, M_ERRORS_SENT, 1);
    if (err->code >= 500 || err->code == 401)
        log_info("event=request_error peer=%s user=%" PRIu64 " code=%d reason=%s msg=\"%s\"",
                 s->peer, s->user_id, err->code, err->reason, err->message);
    send_json(s, msg_error_json(err));
    if (err->close)
        s->close = true;
}

static void send_error(upload_env *env, session *s, int code, const char *reason,
                       const char *message)
{
    msg_error err;
    msg_fail(&err, code, reason, "%s", message);
    err.close = code == 401;
    upload_send_error(env, s, &err);
}

static void send_unavailable(upload_env *env, session *s, const char *why)
{
    log_warn("event=backend_unavailable peer=%s reason=\"%s\"", s->peer, why);
    send_error(env, s, 503, "unavailable", "storage backend unavailable, retry later");
}

static void send_storage_error(upload_env *env, session *s, uint64_t doc, storage_result r,
                               int e, const char *what)
{
    if (r == STORAGE_NO_SPACE) {
        log_warn("event=storage_full doc=%" PRIu64 " peer=%s op=%s", doc, s->peer, what);
        send_error(env, s, 507, "insufficient_storage",
                   "insufficient storage on the server; accepted bytes are kept, resume later");
        return;
    }
    log_error("event=storage_error doc=%" PRIu64 " peer=%s op=%s error=\"%s\"", doc, s->peer,
              what, strerror(e));
    char msg[160];
    snprintf(msg, sizeof msg, "storage error during %s: %s", what, strerror(e));
    send_error(env, s, 500, "internal", msg);
}

static json_t *ok_answer(const char *action)
{
    return json_pack("{s:s, s:s}", "status", "ok", "action", action);
}

static json_t *nullable(const char *s)
{
    return s[0] ? json_string(s) : json_null();
}

/* A row as the protocol shows it; offset < 0 leaves the field out. */
static json_t *doc_json(const doc_row *d, int64_t offset)
{
    json_t *o = json_pack("{s:I, s:s, s:I, s:s, s:o, s:o, s:o, s:o, s:s, s:s, s:o}",
                          "document_id", (json_int_t)d->id, "filename", d->filename,
                          "filesize", (json_int_t)d->filesize, "status", d->status,
                          "sha256", nullable(d->sha256), "declared_sha256",
                          nullable(d->declared_sha256), "failure_reason",
                          nullable(d->failure_reason), "file_path", nullable(d->file_path),
                          "created_at", d->created_at, "updated_at", d->updated_at,
                          "completed_at", nullable(d->completed_at));
    if (o && offset >= 0 && json_object_set_new(o, "offset", json_integer(offset)) != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* upload/resume answer: where to continue and how to chunk. */
static json_t *position_answer(upload_env *env, const char *action, const upload_state *st)
{
    json_t *o = ok_answer(action);
    if (!o)
        return NULL;
    if (json_object_set_new(o, "document_id", json_integer((json_int_t)st->document_id)) ||
        json_object_set_new(o, "offset", json_integer(st->offset)) ||
        json_object_set_new(o, "filesize", json_integer(st->filesize)) ||
        json_object_set_new(o, "chunk_size", json_integer(env->cfg->chunk_size)) ||
        json_object_set_new(o, "max_chunk_size", json_integer(env->cfg->max_chunk_size))) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static storage_result timed_sync(upload_env *env, int fd)
{
    int64_t t0 = metrics_now_us();
    storage_result r = storage_sync(fd);
    metrics_observe_us(env->metrics, H_FSYNC, metrics_now_us() - t0);
    return r;
}

/* ---- authentication and ownership ------------------------------------- */

typedef enum {
    AUTH_OK,      /* the session's user, or its own credential again */
    AUTH_REFUSED, /* answered 401 */
    AUTH_LOOKUP,  /* the user's row must be read: *uid, and the credential's hash */
} auth_step;

/* What can be decided about who is asking without MySQL. */
static auth_step authenticate_locally(upload_env *env, session *s, const msg_request *req,
                                      uint64_t *uid_out, char given_hash[65])
{
    uint64_t uid = req->user_id > 0 ? (uint64_t)req->user_id : s->user_id;
    if (uid == 0) {
        send_error(env, s, 401, "unauthorized", "user_id and credential are required");
        return AUTH_REFUSED;
    }
    given_hash[0] = '\0';
    if (req->has_credential && req->credential[0] &&
        auth_hash_credential(req->credential, strlen(req->credential), given_hash) != 0)
        given_hash[0] = '\0'; /* matches nothing */
    if (uid == s->user_id) {
        if (!req->has_credential || auth_hash_matches(given_hash, s->credential_hash))
            return AUTH_OK;
    } else if (!req->has_credential) {
        send_error(env, s, 401, "unauthorized", "a credential is required for this user");
        return AUTH_REFUSED;
    }
    *uid_out = uid;
    return AUTH_LOOKUP;
}

/* The verdict once uid's row is read (found says whether it exists): 0 and
 * the session is uid's, or answered 401. */
static int authenticate_with_row(session *s, upload_env *env, uint64_t uid,
                                 const char *given_hash, const user_row *u, bool found)
{
    if (!found || u->disabled || !auth_hash_matches(given_hash, u->credential_hash)) {
        /* One answer for all three causes, so the reply does not reveal
         * which user ids exist. The log says which, for the operator. */
        log_info("event=auth_failed peer=%s user=%" PRIu64 " cause=%s", s->peer, uid,
                 !found ? "unknown_user" : u->disabled ? "disabled" : "bad_credential");
        send_error(env, s, 401, "unauthorized", "unknown user or wrong credential");
        return -1;
    }
    s->user_id = uid;
    memcpy(s->credential_hash, u->credential_hash, sizeof s->credential_hash);
    return 0;
}

/* Establishes who is asking. 0 when the session's user may proceed;
 * otherwise an answer has been sent. */
static int authenticate(upload_env *env, session *s, const msg_request *req)
{
    uint64_t uid = 0;
    char given_hash[65];
    auth_step step = authenticate_locally(env, s, req, &uid, given_hash);
    if (step != AUTH_LOOKUP)
        return step == AUTH_OK ? 0 : -1;
    user_row u;
    bool found = false;
    if (docstore_get_user(env->ds, uid, &u, &found) != 0) {
        send_unavailable(env, s, docstore_error(env->ds));
        return -1;
    }
    return authenticate_with_row(s, env, uid, given_hash, &u, found);
}

/* Loads the document and checks that the session's user owns it. */
static int load_owned_document(upload_env *env, session *s, int64_t document_id, doc_row *d)
{
    bool found = false;
    if (docstore_get_document(env->ds, (uint64_t)document_id, d, &found) != 0) {
        send_unavailable(env, s, docstore_error(env->ds));
        return -1;
    }
    if (!found) {
        send_error(env, s, 404, "not_found", "no such document");
        return -1;
    }
    if (d->user_id != s->user_id) {
        send_error(env, s, 403, "forbidden", "the document belongs to another user");
        return -1;
    }
    return 0;
}

static void send_not_resumable(upload_env *env, session *s, const doc_row *d)
{
    /* A finished document has no resume state, and a failed one no file;
     * if some is left (an instance or chunkctl died between updating the
     * row and removing the rest, or a resume re-created the file while the
     * upload was ended: handle_resume), this is the moment to drop it. */
    if (strcmp(d->status, "uploading") != 0 && rstate_del(env->rs, d->id) != 0)
        log_warn("event=redis_del_failed doc=%" PRIu64 " error=\"%s\"", d->id,
                 rstate_error(env->rs));
    if (strcmp(d->status, "failed") == 0 && storage_remove(env->cfg->storage_dir, d->id) != 0)
        log_error("event=remove_failed doc=%" PRIu64 " error=\"%s\"", d->id, strerror(errno));
    msg_error err;
    msg_fail(&err, 409, "not_resumable", "the document is %s, not uploading", d->status);
    err.document_status = d->status;
    upload_send_error(env, s, &err);
}

/* Reads the row again (an abort, the sweep or chunkctl may have ended the
 * upload meanwhile): true while it says uploading, with the row in *d;
 * otherwise the answer is sent (503 or 404 as load_owned_document, or
 * not_resumable, which also clears what the ended upload left). */
static bool still_uploading(upload_env *env, session *s, uint64_t doc, doc_row *d)
{
    if (load_owned_document(env, s, (int64_t)doc, d) != 0)
        return false;
    if (strcmp(d->status, "uploading") != 0) {
        send_not_resumable(env, s, d);
        return false;
    }
    return true;
}

/* ---- opening uploads -------------------------------------------------- */

static EVP_MD_CTX *new_hash(void)
{
    EVP_MD_CTX *h = EVP_MD_CTX_new();
    if (h && EVP_DigestInit_ex(h, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(h);
        h = NULL;
    }
    return h; /* NULL only costs a re-read of the file at completion */
}

/* Makes st the session's open upload, closing any previous one. The caller
 * holds st's lease, taken by a request sent at lease_ms (monotonic; 0: a
 * completion before the next offset save asks Redis). Takes ownership of
 * fd. */
static int set_open_upload(upload_env *env, session *s, const upload_state *st, int fd,
                           int64_t lease_ms)
{
    open_upload *up = calloc(1, sizeof *up);
    if (!up) {
        close(fd);
        return -1;
    }
    up->st = *st;
    up->fd = fd;
    up->saved_offset = st->offset;
    up->writeback_from = st->offset;
    up->lease_renewed_ms = lease_ms;
    if (st->offset == 0)
        up->hash = new_hash();
    /* Another document's (a resume let go of the same one first). */
    release_upload(env, s, false);
    s->up = up;
    return 0;
}

static void drop_open_upload_if(upload_env *env, session *s, uint64_t document_id)
{
    if (s->up && s->up->st.document_id == document_id)
        release_upload(env, s, false);
}

/* Takes the upload's lease for this session; on refusal the answer
 * (409 locked, or 503) has been sent. */
static int take_lease(upload_env *env, session *s, uint64_t doc)
{
    bool acquired = false;
    int64_t retry_after = 0;
    if (rstate_lease_acquire(env->rs, doc, s->lease_token, &acquired, &retry_after) != 0) {
        send_unavailable(env, s, rstate_error(env->rs));
        return -1;
    }
    if (!acquired && retry_after == 0) {
        /* The upload was ended since the row was read (RSTATE_LEASE_ENDED);
         * its row says so, since it changes first. */
        doc_row d;
        if (!still_uploading(env, s, doc, &d))
            return -1;
        retry_after = 1000; /* never seen: answered as a lease held */
    }
    if (!acquired) {
        metrics_add(env->metrics, M_LEASES_LOCKED, 1);
        msg_error err;
        msg_fail(&err, 409, "locked",
                 "the upload is being written by another connection; retry in %" PRId64 " ms",
                 retry_after);
        err.retry_after_ms = retry_after;
        upload_send_error(env, s, &err);
        return -1;
    }
    return 0;
}

/* The 409 lease_lost answer alone; the session's open upload is the
 * caller's business. */
static void answer_lease_lost(upload_env *env, session *s, uint64_t doc)
{
    log_warn("event=lease_lost doc=%" PRIu64 " peer=%s", doc, s->peer);
    metrics_add(env->metrics, M_LEASES_LOST, 1);
    send_error(env, s, 409, "lease_lost",
               "this connection no longer holds the upload (another connection took it over, "
               "or it was ended); resume to continue if it is still uploading");
}

/* The open upload's lease is gone: it is dropped here. */
static void send_lease_lost(upload_env *env, session *s, uint64_t doc)
{
    upload_drain(env, s); /* chunks written before are answered first */
    forget_open_upload(s);
    answer_lease_lost(env, s, doc);
}

/* Removes the file of a document whose row says failed (which no file may
 * outlive), after a writer made it while the upload was being ended. */
static void remove_if_failed(upload_env *env, uint64_t doc)
{
    doc_row d;
    bool found = false;
    if (docstore_get_document(env->ds, doc, &d, &found) != 0) {
        log_error("event=remove_failed doc=%" PRIu64 " error=\"%s\"", doc,
                  docstore_error(env->ds));
        return;
    }
    if (found && strcmp(d.status, "failed") == 0 && storage_remove(env->cfg->storage_dir, doc) != 0)
        log_error("event=remove_failed doc=%" PRIu64 " error=\"%s\"", doc, strerror(errno));
}

/* Marks the row failed and removes what belonged to the upload; the answer
 * is the caller's. Returns 1 when this call failed the row, 0 when it was
 * no longer uploading, -1 when MySQL could not be updated. */
static int fail_document(upload_env *env, session *s, uint64_t doc, const char *reason)
{
    drop_open_upload_if(env, s, doc);
    bool changed = false;
    int rc = 0;
    if (lifecycle_fail_upload(env->ds, env->rs, env->cfg->storage_dir, doc, reason, &changed) != 0) {
        log_error("event=fail_document_failed doc=%" PRIu64 " reason=%s error=\"%s\"", doc,
                  reason, docstore_error(env->ds));
        rc = -1;
    } else if (changed) {
        metrics_failed(env->metrics, reason);
        rc = 1;
    }
    log_info("event=upload_ended doc=%" PRIu64 " user=%" PRIu64 " peer=%s reason=%s", doc,
             s->user_id, s->peer, reason);
    return rc;
}

/* A new upload given up after its file was made: the row is failed, and
 * if someone else had failed it already (chunkctl, before or after our
 * create), the file goes too, since a failed row outlives no file. */
static void give_up_created(upload_env *env, session *s, uint64_t doc, const char *reason)
{
    if (fail_document(env, s, doc, reason) == 0)
        remove_if_failed(env, doc);
}

/* The rest of the group's uploads once their rows exist: each file
 * created, then (one Redis round trip for the group) room reserved on the
 * shared volume next to what uploads in flight on every instance still
 * need (admission: uploads it cannot hold are refused before any byte is
 * written, their rows failed and their empty files removed), each lease
 * taken and each state written; then the answers. */
static void open_group(upload_env *env, session *const *ss, size_t n, const bool *live,
                       const uint64_t *doc)
{
    upload_state sts[UPLOAD_GROUP_MAX];
    int fds[UPLOAD_GROUP_MAX];
    size_t idx[UPLOAD_GROUP_MAX], m = 0;
    for (size_t i = 0; i < n; i++) {
        if (!live[i])
            continue;
        session *s = ss[i];
        const deferred_request *d = &s->deferred;
        int fd = storage_create(env->cfg->storage_dir, doc[i]);
        if (fd < 0) {
            int e = errno;
            storage_result r = storage_classify_errno(e);
            fail_document(env, s, doc[i],
                          r == STORAGE_NO_SPACE ? "insufficient_storage" : "storage_error");
            send_storage_error(env, s, doc[i], r, e, "create");
            continue;
        }
        upload_state *st = &sts[m];
        memset(st, 0, sizeof *st);
        st->document_id = doc[i];
        st->user_id = s->user_id;
        st->filesize = d->filesize;
        st->created_ms = st->updated_ms = util_wall_ms();
        snprintf(st->filename, sizeof st->filename, "%s", d->filename);
        if (d->has_sha256)
            memcpy(st->declared_sha256, d->sha256, sizeof st->declared_sha256);
        storage_rel_path(doc[i], st->path);
        snprintf(st->node, sizeof st->node, "%s", env->node_id);
        util_strlcpy(st->boot_id, env->boot_id, sizeof st->boot_id);
        util_strlcpy(st->writer, s->lease_token, sizeof st->writer);
        fds[m] = fd;
        idx[m++] = i;
    }
    if (m == 0)
        return;
    int64_t avail = -1; /* no admission */
    if (env->cfg->storage_admission) {
        if (storage_available(env->cfg->storage_dir, &avail) != 0) {
            int e = errno;
            for (size_t k = 0; k < m; k++) {
                close(fds[k]);
                give_up_created(env, ss[idx[k]], sts[k].document_id, "storage_error");
                send_storage_error(env, ss[idx[k]], sts[k].document_id, STORAGE_ERROR, e,
                                   "statvfs");
            }
            return;
        }
        avail -= env->cfg->min_free_bytes;
        if (avail < 0)
            avail = 0;
    }
    int8_t fits[UPLOAD_GROUP_MAX], opened[UPLOAD_GROUP_MAX];
    int64_t promised[UPLOAD_GROUP_MAX];
    int64_t opened_ms = util_mono_ms();
    int rc = rstate_admit_open_many(env->rs, m, sts, avail, fits, promised, opened);
    /* Whatever failed in the call (the round trip, the reserve script, an
     * upload's script) left its reason here. */
    char why[256];
    snprintf(why, sizeof why, "%s", rstate_error(env->rs));
    for (size_t k = 0; k < m; k++) {
        session *s = ss[idx[k]];
        uint64_t id = sts[k].document_id;
        if (rc == 0 && fits[k] == 0) {
            close(fds[k]);
            give_up_created(env, s, id, "insufficient_storage");
            char msg[256];
            snprintf(msg, sizeof msg,
                     "not enough space for %" PRId64 " bytes: %" PRId64 " free, %" PRId64
                     " promised to uploads in progress",
                     sts[k].filesize, avail, promised[k]);
            send_error(env, s, 507, "insufficient_storage", msg);
            continue;
        }
        if (rc != 0 || opened[k] != 1) {
            close(fds[k]);
            /* A lease refused on a document created here a moment ago:
             * chunkctl is ending it, or has. */
            give_up_created(env, s, id, "unavailable");
            send_unavailable(env, s, rc == 0 && fits[k] == 1 && opened[k] == 0 ? "lease refused"
                                                                             : why);
            continue;
        }
        if (set_open_upload(env, s, &sts[k], fds[k], opened_ms) != 0) {
            give_up_created(env, s, id, "internal");
            send_error(env, s, 500, "internal", "out of memory");
            continue;
        }
        metrics_add(env->metrics, M_UPLOADS_STARTED, 1);
        log_info("event=upload_started doc=%" PRIu64 " user=%" PRIu64 " peer=%s filesize=%" PRId64,
                 id, s->user_id, s->peer, sts[k].filesize);
        send_json(s, position_answer(env, "upload", &sts[k]));
    }
}

static void handle_upload(upload_env *env, session *s, const msg_request *req)
{
    /* The row's insert waits for a commit: it runs with the other uploads
     * started in this loop turn (group_upload), and so does reading the
     * user's row when the credential is new to this connection (each
     * connection of a client that connects per file needs one). */
    deferred_request *d = &s->deferred;
    memset(d, 0, sizeof *d);
    if (authenticate_locally(env, s, req, &d->auth_user, d->auth_hash) == AUTH_REFUSED)
        return;
    d->filesize = req->filesize;
    d->has_sha256 = req->has_sha256;
    memcpy(d->sha256, req->sha256, sizeof d->sha256);
    memcpy(d->filename, req->filename, sizeof d->filename);
    d->kind = DEFER_UPLOAD;
}

/* A group's statement failed: every request still in the group gets 503
 * with the reason. */
static void group_db_failed(upload_env *env, session *const *ss, size_t n, const bool *live)
{
    char why[512];
    snprintf(why, sizeof why, "%s", docstore_error(env->ds));
    for (size_t i = 0; i < n; i++)
        if (live[i])
            send_unavailable(env, ss[i], why);
}

/* The group's uploads whose user must be read first: one read per
 * distinct user. Clears live[i] for each request answered here. With a
 * per-user limit the read also counts the user's uploads in progress, into
 * in_flight[i] (left -1 for the uploads not read here). */
static void authenticate_group(upload_env *env, session *const *ss, size_t n, bool *live,
                               int64_t *in_flight)
{
    bool counting = env->cfg->max_uploads_per_user > 0;
    user_row rows[UPLOAD_GROUP_MAX];
    bool found[UPLOAD_GROUP_MAX];
    int8_t read_ok[UPLOAD_GROUP_MAX]; /* 1 read, 0 failed, -1 not read (yet) */
    char why[512] = "";               /* the last failed read's reason */
    for (size_t i = 0; i < n; i++) {
        session *s = ss[i];
        const deferred_request *d = &s->deferred;
        read_ok[i] = -1;
        if (d->auth_user == 0)
            continue;
        size_t j = 0;
        while (j < i && !(read_ok[j] >= 0 && ss[j]->deferred.auth_user == d->auth_user))
            j++;
        if (j == i) {
            found[i] = false;
            int rc = counting
                         ? docstore_get_user_counting(env->ds, d->auth_user, &rows[i], &found[i])
                         : docstore_get_user(env->ds, d->auth_user, &rows[i], &found[i]);
            read_ok[i] = rc == 0;
            if (!read_ok[i])
                snprintf(why, sizeof why, "%s", docstore_error(env->ds));
        } else {
            rows[i] = rows[j];
            found[i] = found[j];
            read_ok[i] = read_ok[j];
        }
        if (!read_ok[i]) {
            live[i] = false;
            send_unavailable(env, s, why);
        } else if (authenticate_with_row(s, env, d->auth_user, d->auth_hash, &rows[i],
                                         found[i]) != 0) {
            live[i] = false;
        } else if (counting) {
            in_flight[i] = rows[i].uploading;
        }
    }
}

/* Parked upload requests: credentials new to their connection, the
 * per-user limit, then every row inserted at once (one statement, one
 * redo-log flush for all), then room reserved and each upload opened (one
 * Redis round trip each for the group). Order of effects per upload as
 * before: row, file, Redis state. */
static void group_upload(upload_env *env, session *const *ss, size_t n)
{
    bool live[UPLOAD_GROUP_MAX];
    int64_t in_flight[UPLOAD_GROUP_MAX]; /* the user's count before this group */
    uint64_t doc[UPLOAD_GROUP_MAX];
    size_t nlive = 0;
    for (size_t i = 0; i < n; i++) {
        live[i] = true;
        in_flight[i] = -1;
    }
    authenticate_group(env, ss, n, live, in_flight);
    for (size_t i = 0; i < n; i++) {
        session *s = ss[i];
        if (!live[i])
            continue;
        if (env->cfg->max_uploads_per_user <= 0) {
            nlive++;
            continue;
        }
        /* Checked before the insert; concurrent uploads of one user on
         * several instances may overshoot by a few, which is harmless: the
         * limit is against runaway clients, not a quota. Within the group,
         * one count per user (the user's read counted already when the
         * credential was new), plus the uploads ahead of this one. */
        int64_t ahead = 0;
        for (size_t j = 0; j < i; j++) {
            if (ss[j]->user_id != s->user_id)
                continue;
            if (in_flight[i] < 0 && in_flight[j] >= 0)
                in_flight[i] = in_flight[j];
            ahead += live[j];
        }
        if (in_flight[i] < 0 && docstore_count_uploading(env->ds, s->user_id, &in_flight[i]) != 0) {
            in_flight[i] = -1;
            live[i] = false;
            send_unavailable(env, s, docstore_error(env->ds));
            continue;
        }
        if (in_flight[i] + ahead >= env->cfg->max_uploads_per_user) {
            live[i] = false;
            char msg[160];
            snprintf(msg, sizeof msg,
                     "%" PRId64 " uploads are already in progress; finish or abort some first",
                     in_flight[i] + ahead);
            send_error(env, s, 429, "too_many_uploads", msg);
            continue;
        }
        nlive++;
    }
    if (nlive == 0)
        return;
    doc_insert rows[UPLOAD_GROUP_MAX];
    uint64_t ids[UPLOAD_GROUP_MAX];
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        const deferred_request *d = &ss[i]->deferred;
        if (live[i])
            rows[m++] = (doc_insert){.user_id = ss[i]->user_id,
                                     .filename = d->filename,
                                     .filesize = d->filesize,
                                     .declared_sha256 = d->has_sha256 ? d->sha256 : NULL};
    }
    if (docstore_insert_documents(env->ds, m, rows, ids) != 0) {
        /* Nothing was inserted: the statement is all or nothing. */
        group_db_failed(env, ss, n, live);
        return;
    }
    for (size_t i = 0, k = 0; i < n; i++)
        if (live[i])
            doc[i] = ids[k++];
    open_group(env, ss, n, live, doc);
}

/* A resume's lease lapsed while it reconciled the file, and it took the
 * lease again: another writer may have had the upload in the gap. Going on
 * is safe only if none did anything: the row still says uploading, the
 * Redis state is as the resume first read it (a writer that resumed would
 * have written it), and the file at the path is fd, still `size` bytes (a
 * writer that fenced made a copy; one that wrote moved its size).
 * Otherwise the answer is sent (not_resumable, or lease_lost: the client's
 * next resume sees what changed) and false returned. */
static bool resume_gap_is_clean(upload_env *env, session *s, uint64_t doc, int fd, int64_t size,
                                const upload_state *seen, bool seen_found)
{
    doc_row d;
    if (!still_uploading(env, s, doc, &d))
        return false;
    upload_state now;
    bool now_found = false;
    if (rstate_get(env->rs, doc, &now, &now_found) != 0) {
        send_unavailable(env, s, rstate_error(env->rs));
        return false;
    }
    bool same_state =
        now_found == seen_found &&
        (!now_found ||
         (now.offset == seen->offset && now.synced_offset == seen->synced_offset &&
          now.updated_ms == seen->updated_ms && strcmp(now.writer, seen->writer) == 0 &&
          strcmp(now.node, seen->node) == 0 && strcmp(now.boot_id, seen->boot_id) == 0));
    struct stat sb;
    if (!same_state || fstat(fd, &sb) != 0 || sb.st_size != size ||
        storage_is_current(env->cfg->storage_dir, doc, &sb) != 1) {
        log_warn("event=resume_gap_not_clean doc=%" PRIu64 " peer=%s state_changed=%d", doc,
                 s->peer, !same_state);
        answer_lease_lost(env, s, doc);
        return false;
    }
    return true;
}

/* What a resume knew when it began to reconcile the file, for the lease
 * check before each step that changes the file or the state. */
typedef struct resume_check {
    upload_env *env;
    session *s;
    uint64_t doc;
    int fd;                    /* the file as it must still be */
    int64_t size;              /* and its size */
    const upload_state *seen;  /* the Redis state as first read */
    bool seen_found;
    int64_t held_ms;           /* monotonic: the lease last taken or renewed */
    bool answered;             /* a check failed, and the answer is sent */
} resume_check;

/* The resume's lease, renewed, or taken again if it lapsed (a slow open,
 * copy or sync; lease_ttl_ms may be 500 ms) and, when retake_ok, nothing
 * changed in the gap. False, with the answer sent, when it is another's
 * now or was lapsed (lease_lost), or the upload ended (not_resumable).
 * Within half a lease of the last take nothing is asked: it cannot have
 * lapsed, and an end meanwhile is caught by the guarded state write. */
static bool keep_resume_lease(resume_check *c, bool retake_ok)
{
    upload_env *env = c->env;
    int64_t now = util_mono_ms();
    if (now - c->held_ms < env->cfg->lease_ttl_ms / 2)
        return true;
    rstate_lease_kept kept = RSTATE_LEASE_GONE;
    c->answered = true;
    if (rstate_lease_keep(env->rs, c->doc, c->s->lease_token, &kept) != 0) {
        send_unavailable(env, c->s, rstate_error(env->rs));
        return false;
    }
    if (kept == RSTATE_LEASE_RETAKEN && !retake_ok) {
        answer_lease_lost(env, c->s, c->doc);
        return false;
    }
    if (kept == RSTATE_LEASE_RETAKEN &&
        !resume_gap_is_clean(env, c->s, c->doc, c->fd, c->size, c->seen, c->seen_found))
        return false;
    if (kept == RSTATE_LEASE_GONE) {
        doc_row d;
        if (still_uploading(env, c->s, c->doc, &d))
            answer_lease_lost(env, c->s, c->doc);
        return false;
    }
    c->held_ms = now;
    c->answered = false;
    return true;
}

/* storage_replace_with_copy's last word before the copy takes the path.
 * Only a lease held all along will do: in a gap another writer may have
 * written to the file this copy was taken from, or taken the path with a
 * copy of its own. */
static int may_rename_fenced_copy(void *arg)
{
    return keep_resume_lease(arg, false) ? 0 : -1;
}

/* Brings an uploading document back to a consistent, writable state: the
 * offset is the smaller of what Redis saved and what the file holds, and
 * anything in the file past it (an unacknowledged chunk) is cut off. A lost
 * Redis key is rebuilt from the row and the file. */
static void handle_resume(upload_env *env, session *s, const msg_request *req)
{
    if (authenticate(env, s, req) != 0)
        return;
    doc_row d;
    if (load_owned_document(env, s, req->document_id, &d) != 0)
        return;
    if (strcmp(d.status, "uploading") != 0) {
        send_not_resumable(env, s, &d);
        return;
    }
    uint64_t doc = d.id;
    /* The upload this connection has open is let go first, so that what is
     * reconciled below is what its syncs left: a failed checkpoint cut
     * back, one still on its way waited for (the lease is locked till
     * then). */
    drop_open_upload_if(env, s, doc);
    /* The lease first: nobody else may write while the file is reconciled. */
    int64_t leased_ms = util_mono_ms(); /* the take was sent now or a moment ago */
    if (take_lease(env, s, doc) != 0)
        return;
    bool made = false; /* a file made below, maybe after the upload ended */
    /* Read the row again under the lease: an abort, expiry or operator may
     * have ended the upload since, and its state must not be brought back. */
    if (!still_uploading(env, s, doc, &d))
        goto release;
    upload_state st = {0};
    bool found = false;
    if (rstate_get(env->rs, doc, &st, &found) != 0) {
        send_unavailable(env, s, rstate_error(env->rs));
        goto release;
    }
    const upload_state seen = st; /* as found, for resume_gap_is_clean */
    const bool seen_found = found;
    /* Where the file is follows from the id and the storage layout; a
     * path the state kept may be an older layout's (storage-migrate). */
    storage_rel_path(doc, st.path);
    if (!found) {
        memset(&st, 0, sizeof st);
        st.document_id = doc;
        st.user_id = d.user_id;
        st.filesize = d.filesize;
        /* Only the file is left to ask: its size bounds the offset below.
         * See docs/DURABILITY.md for why a file's size can be trusted. */
        st.offset = d.filesize;
        st.synced_offset = d.filesize;
        util_strlcpy(st.boot_id, env->boot_id, sizeof st.boot_id);
        st.created_ms = util_wall_ms();
        util_strlcpy(st.filename, d.filename, sizeof st.filename);
        snprintf(st.declared_sha256, sizeof st.declared_sha256, "%s", d.declared_sha256);
        storage_rel_path(doc, st.path);
        log_warn("event=resume_rebuilt_state doc=%" PRIu64 " peer=%s", doc, s->peer);
    }
    /* From here on a file may be made (created, or copied: see unclean
     * below): one the upload's end outran goes on the way out. */
    made = true;
    int fd = storage_open(env->cfg->storage_dir, doc);
    if (fd < 0 && errno == ENOENT) {
        log_warn("event=resume_file_missing doc=%" PRIu64 " restarting_at=0", doc);
        /* Not truncated: one that appeared meanwhile is another writer's. */
        fd = storage_open_or_create(env->cfg->storage_dir, doc);
    }
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        send_storage_error(env, s, doc, storage_classify_errno(e), e, "open");
        goto release;
    }
    /* Bytes written since the last checkpoint are still good if they were
     * written during this boot of this machine: the page cache has them
     * even if the writer died. After a reboot only synced bytes count. */
    bool same_boot = st.boot_id[0] && env->boot_id[0] && strcmp(st.boot_id, env->boot_id) == 0;
    int64_t offset = same_boot ? st.offset : st.synced_offset;
    if (sb.st_size < offset)
        offset = sb.st_size;
    if (offset > st.filesize)
        offset = st.filesize;
    if (offset < 0)
        offset = 0;
    /* Nothing of the file changes unless the lease is still ours: the open
     * can take long (it was held in it by a test), and another writer may
     * have had the upload meanwhile. Checked again before the copy takes
     * the path and before the state is written. */
    resume_check chk = {.env = env, .s = s, .doc = doc, .fd = fd, .size = sb.st_size,
                        .seen = &seen, .seen_found = seen_found, .held_ms = leased_ms};
    if (!keep_resume_lease(&chk, true)) {
        close(fd);
        goto release;
    }
    storage_result r = STORAGE_OK;
    int e = 0;
    /* A writer that let go cleanly cleared `writer`. Otherwise it crashed,
     * stalled past its lease, or Redis lost track of it, and it may still
     * hold the file open: from now on the upload lives in a fresh copy of
     * its first `offset` bytes, so nothing that writer does later can reach
     * the document (fencing by inode). The same when this session let the
     * upload go while a sync of it was on its way (fence_doc): the copy is
     * written anew from the cache, whatever that sync's write-back did. */
    bool unclean = !found || (st.writer[0] && strcmp(st.writer, s->lease_token) != 0) ||
                   s->fence_doc == doc;
    if (unclean) {
        int nfd = storage_replace_with_copy(env->cfg->storage_dir, doc, fd, offset,
                                            may_rename_fenced_copy, &chk);
        if (nfd < 0 && chk.answered) {
            close(fd);
            goto release;
        }
        if (nfd < 0) {
            e = errno;
            r = storage_classify_errno(e);
        } else {
            close(fd);
            fd = nfd;
            if (s->fence_doc == doc)
                s->fence_doc = 0;
            metrics_add(env->metrics, M_TAKEOVERS, 1);
            log_info("event=takeover_fenced doc=%" PRIu64 " previous_writer=%s offset=%" PRId64,
                     doc, st.writer[0] ? st.writer : "unknown", offset);
        }
    } else {
        if (sb.st_size > offset && ftruncate(fd, (off_t)offset) != 0) {
            e = errno;
            r = storage_classify_errno(e);
        }
        /* The offset handed out must be durable: sync before answering. */
        if (r == STORAGE_OK && (r = timed_sync(env, fd)) != STORAGE_OK)
            e = errno;
    }
    if (r != STORAGE_OK) {
        close(fd);
        send_storage_error(env, s, doc, r, e, "reconcile");
        goto release;
    }
    if (offset != st.offset)
        log_info("event=resume_reconciled doc=%" PRIu64 " saved_offset=%" PRId64
                 " synced_offset=%" PRId64 " file_size=%lld same_boot=%d offset=%" PRId64,
                 doc, st.offset, st.synced_offset, (long long)sb.st_size, same_boot, offset);
    st.offset = offset;
    st.synced_offset = offset;
    util_strlcpy(st.boot_id, env->boot_id, sizeof st.boot_id);
    util_strlcpy(st.writer, s->lease_token, sizeof st.writer);
    st.updated_ms = util_wall_ms();
    snprintf(st.node, sizeof st.node, "%s", env->node_id);
    /* The copy or the sync may have outlasted the lease. */
    chk.fd = fd;
    chk.size = offset;
    if (!keep_resume_lease(&chk, true)) {
        close(fd);
        goto release;
    }
    bool lost = false;
    if (rstate_put(env->rs, &st, s->lease_token, &lost) != 0) {
        close(fd);
        send_unavailable(env, s, rstate_error(env->rs));
        goto release;
    }
    if (lost) {
        /* Broken while the file was reconciled: the upload was ended (the
         * file made above may be newer than its removal, and goes with
         * send_not_resumable), or our lease lapsed and another took it. */
        close(fd);
        if (still_uploading(env, s, doc, &d))
            answer_lease_lost(env, s, doc);
        return;
    }
    if (set_open_upload(env, s, &st, fd, 0) != 0) {
        send_error(env, s, 500, "internal", "out of memory");
        goto release;
    }
    metrics_add(env->metrics, M_UPLOADS_RESUMED, 1);
    log_info("event=upload_resumed doc=%" PRIu64 " user=%" PRIu64 " peer=%s offset=%" PRId64,
             doc, s->user_id, s->peer, offset);
    send_json(s, position_answer(env, "resume", &st));
    return;
release:
    /* Nothing of this document is open here (let go above). */
    let_lease_go(env, doc, s->lease_token);
    if (made)
        remove_if_failed(env, doc);
}

/* ---- chunks ----------------------------------------------------------- */

static uint64_t begin_chunk(upload_env *env, session *s, const msg_request *req)
{
    chunk_progress *c = &s->chunk;
    memset(c, 0, sizeof *c);
    c->active = true;
    c->length = req->length;
    open_upload *up = s->up;
    msg_error err;
    if (req->length > env->cfg->max_chunk_size) {
        /* Reading that many bytes just to drop them would let anyone make
         * us read without bound; the connection ends here instead. */
        msg_fail(&err, 413, "chunk_too_large", "chunk of %" PRId64 " bytes exceeds the limit of %" PRId64,
                 req->length, (int64_t)env->cfg->max_chunk_size);
        err.close = true;
        c->active = false;
        upload_send_error(env, s, &err);
        return 0;
    }
    bool follows = up && up->st.document_id == (uint64_t)req->document_id &&
                   req->offset == up->st.offset && req->length <= up->st.filesize - req->offset;
    if (!follows && (s->pending_acks > 0 || s->saving)) {
        /* The refusal must describe the upload as it is once the chunks
         * before this one are answered: a save that fails cuts it back. */
        upload_drain(env, s);
        up = s->up;
    }
    if (!up || up->st.document_id != (uint64_t)req->document_id) {
        msg_fail(&err, 409, "upload_not_open",
                 "document %" PRId64 " is not open on this connection; send upload or resume first",
                 req->document_id);
    } else if (req->offset != up->st.offset) {
        msg_fail(&err, 409, "offset_mismatch",
                 "chunk offset %" PRId64 " does not match the upload's offset %" PRId64,
                 req->offset, up->st.offset);
        err.expected_offset = up->st.offset;
    } else if (req->length > up->st.filesize - req->offset) {
        msg_fail(&err, 413, "chunk_past_end",
                 "chunk ends at %" PRId64 ", past the declared filesize %" PRId64,
                 req->offset + req->length, up->st.filesize);
    } else {
        c->accepted = true;
        c->offset = req->offset;
        return (uint64_t)req->length;
    }
    /* The answer goes out now; the body is still read, and dropped. */
    upload_send_error(env, s, &err);
    return (uint64_t)req->length;
}

/* Cuts the open upload back to `keep` bytes, in the file and in memory. */
static void rollback_to(open_upload *up, int64_t keep)
{
    uint64_t doc = up->st.document_id;
    up->generation++;
    up->digest[0] = '\0'; /* of bytes that are no longer all there */
    up->st.offset = keep;
    if (up->st.synced_offset > keep)
        up->st.synced_offset = keep;
    if (ftruncate(up->fd, (off_t)keep) != 0)
        log_error("event=truncate_failed doc=%" PRIu64 " error=\"%s\"", doc, strerror(errno));
    if (up->hash && up->hashed > keep) {
        EVP_MD_CTX_free(up->hash);
        up->hash = NULL;
    }
}

/* Cuts the open upload back to keep bytes, in the file, in memory and
 * (when that lowers it) in the saved offset, under the lease `token`. */
static void cut_back(upload_env *env, open_upload *up, const char *token, int64_t keep)
{
    bool lowered = keep < up->st.offset;
    rollback_to(up, keep);
    if (lowered) {
        bool lost = false;
        if (rstate_save_offset(env->rs, &up->st, token, &lost) != 0 || lost)
            log_warn("event=offset_not_lowered doc=%" PRIu64 " offset=%" PRId64,
                     up->st.document_id, keep);
        else
            up->saved_offset = keep;
    }
}

/* The syncer's result, on the worker's thread. The synced offset moves only
 * for a sync of bytes that are all still there; the next offset save takes
 * it to Redis. A failure is kept for the upload's next chunk or completion,
 * which cut back to the last good checkpoint (upload_on_body). */
static void on_checkpoint_done(sync_job *job)
{
    checkpoint *cp = (checkpoint *)job;
    if (cp->orphaned) {
        free(cp);
        return;
    }
    open_upload *up = cp->up;
    upload_env *env = cp->env;
    up->checkpoint = NULL;
    metrics_observe_us(env->metrics, H_FSYNC, job->sync_us);
    if (job->err) {
        log_error("event=checkpoint_failed doc=%" PRIu64 " error=\"%s\"", up->st.document_id,
                  strerror(job->err));
        if (!up->sync_error)
            up->sync_error = job->err;
    } else if (job->generation == up->generation && job->end > up->st.synced_offset &&
               job->end <= up->st.offset) {
        up->st.synced_offset = job->end;
    }
    free(cp);
    if (up->orphan)
        settle_orphan(env, up);
}

/* The sync of a completion, back from the syncer: with its UPDATE run
 * there too (chain_commit_new), the completion is answered with the others
 * back in the same event; otherwise the request rejoins the groups with
 * the sync's result (group_complete). */
static void on_final_sync_done(sync_job *job)
{
    checkpoint *cp = (checkpoint *)job;
    completion_commit *cc = cp->then_commit;
    if (cp->orphaned) {
        if (cc) {
            /* The session is gone (session_release cleared its entry) and
             * kept the lease for the UPDATE: settle both without it. */
            session *s = cc->e[0].s;
            if (s) {
                s->deferred.commit = NULL;
                cc->e[0].s = NULL;
            }
            if (cc->ran) {
                metrics_add(cp->env->metrics, M_COMMITS_AFTER_SYNC, 1);
            } else {
                cc->rc = -1; /* not run: end_commit lets the lease go */
                snprintf(cc->why, sizeof cc->why, "not run");
            }
            end_commit(cc, false);
        }
        free(cp);
        return;
    }
    upload_env *env = cp->env;
    open_upload *up = cp->up;
    up->final_sync = NULL;
    metrics_observe_us(env->metrics, H_FSYNC, job->sync_us);
    session *s = cp->s;
    int err = job->err;
    free(cp); /* job with it */
    if (up->orphan) {
        /* Its session went (session_release): a failed sync is cut back
         * while the lease is still held, by the orphan or by a chained
         * UPDATE that did not run; one that ran completed the row. */
        if (err && !up->sync_error)
            up->sync_error = err;
        take_sync_error(env, up, up->orphan_token);
        if (cc) {
            if (cc->ran) {
                metrics_add(env->metrics, M_COMMITS_AFTER_SYNC, 1);
            } else {
                cc->rc = -1; /* not run: end_commit lets the lease go */
                snprintf(cc->why, sizeof cc->why, "not run");
            }
            end_commit(cc, false);
        }
        settle_orphan(env, up);
        return;
    }
    if (cc && cc->ran) {
        metrics_add(env->metrics, M_COMMITS_AFTER_SYNC, 1);
        /* Answered with the others back in the same event
         * (upload_end_chained), their Redis clean-up in one script. */
        cc->back_next = env->chained_back;
        env->chained_back = cc;
        return;
    }
    if (cc) {
        /* Not run (the sync failed, the lease was no longer sure, or the
         * last chained UPDATE failed): group_complete's way, from its
         * lease check on. */
        s->deferred.commit = NULL;
        free(cc);
    }
    s->deferred.syncing = false;
    s->deferred.synced = true;
    s->deferred.sync_err = err;
    if (s->ready)
        s->ready(s->emit_arg);
}

/* Hands a sync of the upload's file to the worker's syncer, with a
 * descriptor of its own (reopened, not dup'ed: see syncer.h). NULL when
 * there is no syncer or it cannot be set up: the caller syncs in place. */
static checkpoint *submit_sync(upload_env *env, open_upload *up, int64_t end, session *s,
                               sync_done_fn done, struct completion_commit *then_commit)
{
    if (!env->syncer)
        return NULL;
    checkpoint *cp = calloc(1, sizeof *cp);
    if (!cp)
        return NULL;
    char self[64];
    snprintf(self, sizeof self, "/proc/self/fd/%d", up->fd);
    int fd = open(self, O_RDONLY | O_CLOEXEC);
    /* A completion makes the file's name durable too: its bucket directory
     * is synced on the syncer, once for all the files of a batch there. */
    int dir_fd = -1;
    if (fd >= 0 && s) {
        dir_fd = storage_open_dir(env->cfg->storage_dir, up->st.document_id);
        if (dir_fd < 0) {
            close(fd);
            fd = -1;
        }
    }
    if (fd >= 0) {
        uint64_t doc = up->st.document_id;
        cp->job = (sync_job){.fd = fd,
                             .dir_key = dir_fd >= 0 ? storage_bucket(doc) + 1 : 0,
                             .dir_fd = dir_fd,
                             .end = end,
                             .generation = up->generation,
                             .then = then_commit != NULL,
                             .done = done};
        cp->env = env;
        cp->up = up;
        cp->s = s;
        cp->then_commit = then_commit;
        if (syncer_submit(env->syncer, &cp->job) == 0)
            return cp;
        close(fd);
        if (dir_fd >= 0)
            close(dir_fd);
    }
    free(cp);
    return NULL;
}

/* Whether the bytes before `end` are due a checkpoint: every
 * sync_interval_bytes, and with sync_when_idle also every write-back step
 * while the worker's syncer has nothing to do. The device then flushes its
 * cache while the bytes still arrive: a flush takes time in proportion to
 * what was written since the last one, and many uploads that leave all of
 * it to their completions wait for it together at the end (16 uploads of
 * 16 MiB: a 150 ms wait after the last byte, and +20% MB/s without it,
 * docs/PERFORMANCE.md). The resume point after a power cut moves on too. */
static bool checkpoint_due(const upload_env *env, const open_upload *up, int64_t end)
{
    int64_t unsynced = end - up->st.synced_offset;
    if (unsynced >= env->cfg->sync_interval_bytes)
        return true;
    return env->cfg->sync_when_idle && unsynced >= WRITEBACK_STEP && env->syncer &&
           syncer_idle(env->syncer);
}

/* A checkpoint of the bytes before `end`, without waiting for it; when the
 * syncer cannot take it, here and now. */
static storage_result checkpoint_file(upload_env *env, open_upload *up, int64_t end)
{
    if (up->checkpoint)
        return STORAGE_OK; /* one at a time; the next chunk tries again */
    up->checkpoint = submit_sync(env, up, end, NULL, on_checkpoint_done, NULL);
    if (up->checkpoint)
        return STORAGE_OK;
    storage_result r = timed_sync(env, up->fd);
    if (r == STORAGE_OK)
        up->st.synced_offset = end;
    return r;
}

void upload_on_body(upload_env *env, session *s, const char *data, size_t len, bool last)
{
    chunk_progress *c = &s->chunk;
    open_upload *up = s->up;
    if (c->accepted && up && c->io == STORAGE_OK) {
        int64_t at = c->offset + c->written;
        int64_t t0 = metrics_now_us();
        c->io = storage_pwrite_all(up->fd, data, len, at);
        c->write_us += metrics_now_us() - t0;
        if (c->io != STORAGE_OK)
            c->io_errno = errno;
        else if (up->hash && up->hashed == at &&
                 EVP_DigestUpdate(up->hash, data, len) == 1)
            up->hashed += (int64_t)len;
    }
    c->written += (int64_t)len;
    if (!last)
        return;
    c->active = false;
    if (!c->accepted)
        return; /* answered when the header arrived */
    metrics_observe_us(env->metrics, H_CHUNK_WRITE, c->write_us);
    if (!up) {
        send_error(env, s, 409, "upload_not_open", "the upload was closed during the chunk");
        return;
    }
    uint64_t doc = up->st.document_id;
    int64_t end = c->offset + c->length;
    bool sync_failed = false;
    if (c->offset != up->st.offset) {
        /* While this chunk's bytes arrived, Redis refused the offset of
         * the chunks before it and the upload was cut back (finish_save):
         * this chunk no longer follows on, so its bytes go too. */
        upload_drain(env, s);
        if (s->up == up && up->st.offset < c->offset + c->written)
            rollback_to(up, up->st.offset);
        send_unavailable(env, s, "the offset of the chunks before this one could not be saved");
        return;
    }
    if (c->io == STORAGE_OK && up->sync_error) {
        /* A checkpoint failed in the background: nothing since the last
         * good one can be trusted. */
        c->io = storage_classify_errno(up->sync_error);
        c->io_errno = up->sync_error;
        up->sync_error = 0;
        sync_failed = true;
    }
    if (c->io == STORAGE_OK && end > up->writeback_from &&
        (end - up->writeback_from >= WRITEBACK_STEP ||
         (end == up->st.filesize && c->offset > up->writeback_from))) {
        /* Start the disk on the bytes behind us now, so the sync at the
         * next checkpoint or at completion finds little left to wait for
         * (many uploads finishing together otherwise queue up whole files
         * of write-back behind one another on the syncer). The last chunk
         * starts it too: a file smaller than a step is otherwise written
         * only once its completion reaches the syncer (500 uploads of
         * 1 MiB: +8%, and few enough unwritten bytes for the syncer to
         * batch them). Not when the last chunk is all there is to write:
         * its completion is right behind it, and the syncer writes it with
         * the rest of its batch in one pass (one device notification, not
         * one per file: 64 KiB files, -15% server CPU). */
        storage_start_writeback_range(up->fd, up->writeback_from, end - up->writeback_from);
        up->writeback_from = end;
    }
    if (c->io == STORAGE_OK && end < up->st.filesize && checkpoint_due(env, up, end)) {
        /* Checkpoint: the bytes reach stable storage before an offset
         * covering them is saved as synced (docs/DURABILITY.md). The
         * file's last chunk needs none: completion syncs the whole file. */
        c->io = checkpoint_file(env, up, end);
        if (c->io != STORAGE_OK) {
            c->io_errno = errno;
            sync_failed = true;
        }
    }
    if (c->io == STORAGE_OK) {
        /* Acknowledged once its offset is saved, together with the other
         * chunks of this batch (upload_flush). */
        up->st.offset = end;
        up->st.updated_ms = util_wall_ms();
        s->pending_end[s->pending_acks++] = end;
        if (s->pending_acks == SESSION_PENDING_MAX)
            upload_drain(env, s);
        else if (end == up->st.filesize)
            upload_flush(env, s);
        return;
    }
    /* This chunk failed: the ones before it are answered first. */
    upload_drain(env, s);
    up = s->up;
    if (!up) {
        send_error(env, s, 409, "lease_lost", "this connection no longer holds the upload");
        return;
    }
    /* After a failed sync the page cache cannot be trusted either:
     * everything since the last checkpoint is in doubt. */
    cut_back(env, up, s->lease_token, sync_failed ? up->st.synced_offset : up->st.offset);
    send_storage_error(env, s, doc, c->io, c->io_errno, "write");
}

/* Answers the pending chunks after their save: on success the first n
 * (whose end is `offset`) get their progress events, and any written since
 * stay pending; a lost lease or a failed save answers them all. */
static void finish_save(upload_env *env, session *s, int n, int64_t offset, int outcome,
                        const char *why)
{
    open_upload *up = s->up;
    int total = s->pending_acks;
    if (!up || n > total) {
        /* Cannot happen: an upload is let go only after its chunks are
         * answered. Answer them anyway, so the stream stays in step. */
        s->pending_acks = 0;
        for (int i = 0; i < total; i++)
            send_error(env, s, 409, "lease_lost", "this connection no longer holds the upload");
        return;
    }
    uint64_t doc = up->st.document_id;
    if (outcome == 0) {
        metrics_add(env->metrics, M_CHUNKS_RECEIVED, (uint64_t)n);
        metrics_add(env->metrics, M_BYTES_RECEIVED, (uint64_t)(offset - up->saved_offset));
        up->saved_offset = offset;
        up->lease_renewed_ms = s->saving_sent_ms; /* the save checked and renewed it */
        int64_t ends[SESSION_PENDING_MAX];
        memcpy(ends, s->pending_end, (size_t)n * sizeof ends[0]);
        memmove(s->pending_end, s->pending_end + n, (size_t)(total - n) * sizeof ends[0]);
        s->pending_acks = total - n;
        for (int i = 0; i < n; i++) {
            char line[256];
            int len = msg_progress_line(line, sizeof line, (int64_t)doc, ends[i], up->st.filesize);
            if (len > 0)
                emit_line(s, line, (size_t)len);
            else
                s->close = true;
        }
        return;
    }
    s->pending_acks = 0;
    if (outcome > 0) {
        /* Someone else writes this upload now: touch nothing more. */
        send_lease_lost(env, s, doc);
        for (int i = 1; i < total; i++)
            send_error(env, s, 409, "lease_lost", "this connection no longer holds the upload");
        return;
    }
    /* Redis did not take the offset: undo those chunks everywhere so the
     * saved state, the file and this session agree. */
    char reason[256];
    snprintf(reason, sizeof reason, "%s", why);
    rollback_to(up, up->saved_offset);
    for (int i = 0; i < total; i++)
        send_unavailable(env, s, reason);
}

/* The reply to a save sent by start_save, on the worker's loop. */
static void on_offset_saved(void *arg, bool ok, long long reply, const char *why)
{
    session *s = arg;
    upload_env *env = s->saving_env;
    s->saving = false;
    int outcome = -1;
    char reason[256];
    snprintf(reason, sizeof reason, "%s", why);
    if (ok) {
        switch (rstate_save_offset_result(reply)) {
        case RSTATE_SAVED:
            outcome = 0;
            break;
        case RSTATE_SAVE_LEASE_LOST:
            outcome = 1;
            break;
        case RSTATE_SAVE_KEY_MISSING:
            /* The key had vanished (expired, or Redis lost it): write the
             * whole state again, with every byte written so far. */
            log_warn("event=redis_state_rebuilt doc=%" PRIu64 " reason=key_missing",
                     s->up ? s->up->st.document_id : 0);
            if (!s->up)
                break;
            bool lost = false;
            if (rstate_put(env->rs, &s->up->st, s->lease_token, &lost) != 0)
                snprintf(reason, sizeof reason, "%s", rstate_error(env->rs));
            else
                outcome = lost ? 1 : 0;
            break;
        }
    }
    finish_save(env, s, s->saving_acks, s->saving_offset, outcome, reason);
    if (outcome == 0 && s->pending_acks > 0)
        upload_flush(env, s); /* the chunks written meanwhile */
}

void upload_flush(upload_env *env, session *s)
{
    if (s->pending_acks == 0 || s->saving || !s->up)
        return;
    open_upload *up = s->up;
    int n = s->pending_acks;
    int64_t offset = up->st.offset;
    s->saving_sent_ms = util_mono_ms();
    if (!env->saver) {
        bool lost = false;
        int rc = rstate_save_offset(env->rs, &up->st, s->lease_token, &lost);
        finish_save(env, s, n, offset, rc != 0 ? -1 : lost ? 1 : 0, rstate_error(env->rs));
        return;
    }
    char *cmd = NULL;
    int len = rstate_format_save_offset(env->cfg, &up->st, s->lease_token, &cmd);
    if (len < 0 || saver_send(env->saver, cmd, (size_t)len, on_offset_saved, s) != 0) {
        free(cmd);
        finish_save(env, s, n, offset, -1,
                    len < 0 ? "redis save offset: out of memory" : saver_error(env->saver));
        return;
    }
    free(cmd);
    s->saving = true;
    s->saving_acks = n;
    s->saving_offset = offset;
    s->saving_env = env;
}

static bool save_answered(void *arg)
{
    return !((const session *)arg)->saving;
}

void upload_drain(upload_env *env, session *s)
{
    /* Each turn answers at least one batch or ends; the bound is a guard. */
    for (int turn = 0; (s->pending_acks > 0 || s->saving) && turn < 2 * SESSION_PENDING_MAX;
         turn++) {
        if (s->saving) {
            saver_wait(env->saver, save_answered, s);
            if (s->saving)
                return; /* cannot wait here (inside a reply handler) */
            continue;
        }
        upload_flush(env, s);
    }
}

/* ---- completion ------------------------------------------------------- */

/* The SHA-256 of all the upload's bytes: from the running hash when it saw
 * every byte in order, else by reading the file. Kept in up->digest, so a
 * completion that has to be retried does not hash again. */
static int upload_digest(open_upload *up)
{
    if (up->digest[0])
        return 0;
    if (up->hash && up->hashed == up->st.filesize) {
        unsigned char md[32];
        unsigned int mdlen = 0;
        int ok = EVP_DigestFinal_ex(up->hash, md, &mdlen) == 1 && mdlen == 32;
        EVP_MD_CTX_free(up->hash); /* finalised either way */
        up->hash = NULL;
        if (ok) {
            util_hex(md, 32, up->digest);
            return 0;
        }
    }
    return storage_sha256(up->fd, up->st.filesize, up->digest);
}

/* Refuses a completion of doc unless it is the session's open upload and
 * every byte of it has been received; true when refused (answer sent). */
static void send_not_open(upload_env *env, session *s)
{
    send_error(env, s, 409, "upload_not_open",
               "the document is not open on this connection; resume it first");
}

static bool refuse_unless_received(upload_env *env, session *s, uint64_t doc)
{
    open_upload *up = s->up;
    if (!up || up->st.document_id != doc) {
        send_not_open(env, s);
        return true;
    }
    if (up->st.offset != up->st.filesize) {
        msg_error err;
        msg_fail(&err, 409, "incomplete", "received %" PRId64 " of %" PRId64 " bytes",
                 up->st.offset, up->st.filesize);
        err.expected_offset = up->st.offset;
        upload_send_error(env, s, &err);
        return true;
    }
    return false;
}

/* A checkpoint that failed in the background makes nothing since the last
 * good one trustworthy: the upload is cut back there. Its errno, or 0 when
 * none failed. */
static int take_sync_error(upload_env *env, open_upload *up, const char *token)
{
    int e = up->sync_error;
    if (e) {
        up->sync_error = 0;
        cut_back(env, up, token, up->st.synced_offset);
    }
    return e;
}

static void handle_complete(upload_env *env, session *s, const msg_request *req)
{
    /* Completing needs only the open upload; but credentials that are sent
     * are checked like anywhere else, and must be the uploader's. */
    if ((req->user_id > 0 || req->has_credential) && authenticate(env, s, req) != 0)
        return;
    if (s->up && s->up->st.user_id != s->user_id) {
        send_error(env, s, 403, "forbidden", "the upload belongs to another user");
        return;
    }
    open_upload *up = s->up;
    if (!up || up->st.document_id != (uint64_t)req->document_id ||
        up->st.offset != up->st.filesize) {
        /* A refusal describes the upload once the chunks before are
         * answered (a failed save cuts it back). */
        upload_drain(env, s);
        up = s->up;
    }
    if (refuse_unless_received(env, s, (uint64_t)req->document_id))
        return;
    if (up->sync_error) {
        /* Continue from the last good checkpoint, once the chunks before
         * are answered. */
        upload_drain(env, s);
        if (s->up != up) {
            send_not_open(env, s);
            return;
        }
        int e = take_sync_error(env, s->up, s->lease_token);
        send_storage_error(env, s, up->st.document_id, storage_classify_errno(e), e, "sync");
        return;
    }
    if (upload_digest(up) != 0) {
        up->digest[0] = '\0';
        send_storage_error(env, s, up->st.document_id, STORAGE_ERROR, errno, "hash");
        return;
    }
    /* The sync and the row's update wait for the disk: they run with the
     * other completions of this loop turn (group_complete). */
    memset(&s->deferred, 0, sizeof s->deferred);
    s->deferred.kind = DEFER_COMPLETE;
    s->deferred.document_id = up->st.document_id;
}

/* After the row's update was committed (and, when changed, the Redis state
 * removed): the answer. */
static void finish_complete(upload_env *env, session *s, bool changed)
{
    open_upload *up = s->up;
    uint64_t doc = up->st.document_id;
    if (!changed) {
        /* Someone else ended the row first (abort, expiry, an operator). */
        doc_row d;
        bool found = false;
        if (docstore_get_document(env->ds, doc, &d, &found) != 0 || !found) {
            memset(&d, 0, sizeof d);
            d.id = doc;
            snprintf(d.status, sizeof d.status, "unknown");
        }
        drop_open_upload_if(env, s, doc);
        send_not_resumable(env, s, &d);
        return;
    }
    metrics_add(env->metrics, M_UPLOADS_COMPLETED, 1);
    int64_t size = up->st.filesize;
    char path[STORAGE_REL_PATH_MAX], sha[65];
    memcpy(path, up->st.path, sizeof path);
    memcpy(sha, up->digest, sizeof sha);
    forget_open_upload(s); /* its lease goes with the state (finish_states) */
    log_info("event=upload_completed doc=%" PRIu64 " user=%" PRIu64 " peer=%s filesize=%" PRId64
             " sha256=%s",
             doc, s->user_id, s->peer, size, sha);
    send_json(s, json_pack("{s:s, s:I, s:I, s:s, s:s}", "status", "SUCCESS", "document_id",
                           (json_int_t)doc, "filesize", (json_int_t)size, "sha256", sha,
                           "file_path", path));
}

static void on_states_finished(void *arg, bool ok, long long reply, const char *why)
{
    (void)reply;
    if (!ok)
        log_warn("event=redis_finish_failed uploads=%zu error=\"%s\"", (size_t)(uintptr_t)arg,
                 why);
}

/* Drops completed uploads' Redis state, reservations and leases. Nobody
 * waits for it: the rows say 'completed' already, and if it fails the
 * keys expire and the leases lapse. So it goes through the offset saver's
 * connection, written at the end of the loop turn, and the SUCCESS answers
 * need no round trip to Redis. */
static void finish_states(upload_env *env, size_t m, const uint64_t *docs,
                          const char *const *tokens)
{
    char *cmd = NULL;
    int len = env->saver ? rstate_format_finish_many(env->cfg, m, docs, tokens, &cmd) : -1;
    if (len >= 0 && saver_send(env->saver, cmd, (size_t)len, on_states_finished,
                               (void *)(uintptr_t)m) == 0) {
        free(cmd);
        return;
    }
    free(cmd);
    if (rstate_finish_many(env->rs, m, docs, tokens) != 0)
        log_warn("event=redis_finish_failed uploads=%zu error=\"%s\"", m, rstate_error(env->rs));
}

typedef enum file_verdict {
    FILE_OK,
    FILE_UNSURE,   /* its path could not be looked at: taken as ours */
    FILE_REPLACED, /* a takeover put another file at its path */
    FILE_INVALID,  /* not a regular file of the full size and mode, or unlinked */
    FILE_MISMATCH, /* its bytes do not hash to the declared SHA-256 */
} file_verdict;

/* Whether the upload's file, every byte received, is the one to declare
 * complete. */
static file_verdict check_file(upload_env *env, const open_upload *up)
{
    struct stat sb;
    if (fstat(up->fd, &sb) != 0)
        return FILE_INVALID;
    int current = storage_is_current(env->cfg->storage_dir, up->st.document_id, &sb);
    if (current == 0)
        return FILE_REPLACED;
    if (!S_ISREG(sb.st_mode) || sb.st_size != up->st.filesize ||
        (sb.st_mode & 0777) != STORAGE_FILE_MODE || sb.st_nlink == 0)
        return FILE_INVALID;
    if (up->st.declared_sha256[0] && strcmp(up->digest, up->st.declared_sha256) != 0)
        return FILE_MISMATCH;
    return current == 1 ? FILE_OK : FILE_UNSURE;
}

/* held[i] for group_complete: whether session i still holds its upload's
 * lease. A lease taken or renewed less than half its time ago (by the
 * upload's open or its last offset save, which checks it) is still ours:
 * nobody may take it over before it lapses, and the only other way to end
 * it, failing the upload (lifecycle.c), leaves a row that the completion's
 * UPDATE no longer changes. Only the others are asked of Redis, in one
 * round trip; for a small file, which completes right after its one
 * chunk, that is none. */
static int confirm_leases(upload_env *env, session *const *ss, size_t n, const uint64_t *docs,
                          const char *const *tokens, int8_t *held)
{
    uint64_t ask_docs[UPLOAD_GROUP_MAX];
    const char *ask_tokens[UPLOAD_GROUP_MAX];
    size_t ask_at[UPLOAD_GROUP_MAX], nask = 0;
    int64_t now = util_mono_ms();
    for (size_t i = 0; i < n; i++) {
        int64_t renewed = ss[i]->up->lease_renewed_ms;
        if (renewed > 0 && now - renewed < env->cfg->lease_ttl_ms / 2) {
            held[i] = 1;
            continue;
        }
        ask_docs[nask] = docs[i];
        ask_tokens[nask] = tokens[i];
        ask_at[nask++] = i;
    }
    if (nask == 0)
        return 0;
    int8_t answers[UPLOAD_GROUP_MAX];
    if (rstate_lease_confirm_many(env->rs, nask, ask_docs, ask_tokens, answers) != 0)
        return -1;
    for (size_t k = 0; k < nask; k++)
        held[ask_at[k]] = answers[k];
    return 0;
}

/* The statement, on whichever thread cc->ds belongs to. */
static void run_commit(sync_job *job)
{
    completion_commit *cc = (completion_commit *)job;
    uint64_t ids[UPLOAD_GROUP_MAX];
    const char *shas[UPLOAD_GROUP_MAX], *paths[UPLOAD_GROUP_MAX];
    bool changed[UPLOAD_GROUP_MAX];
    for (size_t i = 0; i < cc->n; i++) {
        ids[i] = cc->e[i].doc;
        shas[i] = cc->e[i].sha;
        paths[i] = cc->e[i].path;
    }
    cc->rc = docstore_complete_documents(cc->ds, cc->n, ids, shas, paths, changed);
    if (cc->rc != 0)
        snprintf(cc->why, sizeof cc->why, "%s", docstore_error(cc->ds));
    else
        for (size_t i = 0; i < cc->n; i++)
            cc->e[i].changed = changed[i];
}

/* After the statements, on the worker's thread: the Redis state,
 * reservation and lease of every row they completed go, sent ahead of the
 * answers, in one script for up to UPLOAD_GROUP_MAX of them; then each
 * session's answer (SUCCESS, not_resumable for a row someone else ended,
 * or 503 when its statement failed: the files are synced and the uploads
 * stay open, so a retry of upload_complete finishes them). A session that
 * closed meanwhile gets no answer; its lease, kept for the statement, is
 * let go here when its row was not completed. With `rejoin` (back from the
 * syncer) each session leaves its wait and rejoins the next turn for its
 * buffered input. Frees the ccs. */
static void end_commits(completion_commit *const *ccs, size_t nccs, bool rejoin)
{
    if (nccs == 0)
        return;
    upload_env *env = ccs[0]->env;
    uint64_t fdocs[UPLOAD_GROUP_MAX];
    const char *ftokens[UPLOAD_GROUP_MAX];
    size_t m = 0;
    for (size_t k = 0; k < nccs; k++) {
        const completion_commit *cc = ccs[k];
        for (size_t i = 0; cc->rc == 0 && i < cc->n; i++) {
            if (!cc->e[i].changed)
                continue;
            if (m == UPLOAD_GROUP_MAX) {
                finish_states(env, m, fdocs, ftokens);
                m = 0;
            }
            fdocs[m] = cc->e[i].doc;
            ftokens[m++] = cc->e[i].token;
        }
    }
    if (m > 0)
        finish_states(env, m, fdocs, ftokens);
    saver_flush(env->saver);
    for (size_t k = 0; k < nccs; k++) {
        completion_commit *cc = ccs[k];
        for (size_t i = 0; i < cc->n; i++) {
            struct commit_entry *e = &cc->e[i];
            session *s = e->s;
            if (!s) {
                if (cc->rc == 0 && e->changed) {
                    metrics_add(env->metrics, M_UPLOADS_COMPLETED, 1);
                    log_info("event=upload_completed doc=%" PRIu64 " peer=gone sha256=%s",
                             e->doc, e->sha);
                } else {
                    let_lease_go(env, e->doc, e->token);
                }
                continue;
            }
            if (rejoin) {
                s->deferred.commit = NULL;
                s->deferred.syncing = false;
            }
            if (cc->rc != 0)
                send_unavailable(env, s, cc->why);
            else
                finish_complete(env, s, e->changed);
            if (rejoin) {
                /* Answered: back to the loop through the parked list, which
                 * runs what the session has buffered. */
                s->deferred.kind = s->ready ? DEFER_COMMITTED : DEFER_NONE;
                if (s->ready)
                    s->ready(s->emit_arg);
            }
        }
        free(cc);
    }
}

static void end_commit(completion_commit *cc, bool rejoin)
{
    end_commits(&cc, 1, rejoin);
}

void upload_end_chained(upload_env *env)
{
    while (env->chained_back) {
        completion_commit *ccs[UPLOAD_GROUP_MAX];
        size_t n = 0;
        while (env->chained_back && n < UPLOAD_GROUP_MAX) {
            completion_commit *cc = env->chained_back;
            env->chained_back = cc->back_next;
            ccs[n++] = cc;
        }
        end_commits(ccs, n, true);
    }
}

static void on_commit_done(sync_job *job)
{
    completion_commit *cc = (completion_commit *)job;
    cc->env->commits_on_syncer--;
    end_commit(cc, true);
}

/* The UPDATE of the group's live completions, with copies of what it
 * needs; NULL when there are none or no memory. */
static completion_commit *commit_new(upload_env *env, session *const *ss, size_t n,
                                     const bool *live)
{
    size_t nc = 0;
    for (size_t i = 0; i < n; i++)
        nc += live[i];
    completion_commit *cc = nc ? calloc(1, sizeof *cc + nc * sizeof cc->e[0]) : NULL;
    if (!cc)
        return NULL;
    cc->job = (sync_job){.run = run_commit, .fd = -1, .dir_fd = -1, .done = on_commit_done};
    cc->env = env;
    cc->ds = env->ds;
    for (size_t i = 0; i < n; i++) {
        if (!live[i])
            continue;
        struct commit_entry *e = &cc->e[cc->n++];
        session *s = ss[i];
        e->s = s;
        e->doc = s->up->st.document_id;
        memcpy(e->sha, s->up->digest, sizeof e->sha);
        memcpy(e->path, s->up->st.path, sizeof e->path);
        util_strlcpy(e->token, s->lease_token, sizeof e->token);
    }
    return cc;
}

/* The UPDATE of one completion, to run on the syncer's thread right after
 * its file's sync (upload_after_sync) rather than after a trip back here
 * and another behind the syncer's next batch: for 64 KiB files from 64
 * clients, most of an upload's time is its waits for the syncer
 * (docs/PERFORMANCE.md). The checks group_complete makes after the sync
 * are made now instead, which is as good when nothing can change them
 * meanwhile: no checkpoint is out whose failure could still come back,
 * none failed, and the lease is ours for certain until the statement
 * runs (upload_after_sync checks the time). NULL when one of those does
 * not hold, or no memory: the completion goes group_complete's way. */
static completion_commit *chain_commit_new(upload_env *env, session *s)
{
    open_upload *up = s->up;
    int64_t renewed = up->lease_renewed_ms;
    if (!env->commit_ds || !env->syncer || up->checkpoint || up->sync_error || renewed <= 0)
        return NULL;
    int64_t sure_until = renewed + env->cfg->lease_ttl_ms / 2;
    if (util_mono_ms() >= sure_until || check_file(env, up) != FILE_OK)
        return NULL;
    bool live = true;
    completion_commit *cc = commit_new(env, &s, 1, &live);
    if (!cc)
        return NULL;
    cc->ds = env->commit_ds;
    cc->lease_sure_until_ms = sure_until;
    return cc;
}

/* After a failed chained UPDATE, the next batches' completions go
 * group_complete's way for this long: a MySQL that stalls then holds up
 * one statement's worth of the syncer's work, not one per batch. */
#define CHAIN_PAUSE_MS 1000

_Static_assert(SYNC_AFTER_MAX <= UPLOAD_GROUP_MAX, "one statement takes a whole call");

void upload_after_sync(void *arg, sync_job *const *jobs, size_t n)
{
    (void)arg;
    if (n == 0 || n > SYNC_AFTER_MAX)
        return; /* nothing run: each goes group_complete's way */
    upload_env *env = ((checkpoint *)jobs[0])->env;
    int64_t now = util_mono_ms();
    if (now < env->chain_paused_until_ms)
        return;
    completion_commit *ccs[UPLOAD_GROUP_MAX];
    uint64_t ids[UPLOAD_GROUP_MAX];
    const char *shas[UPLOAD_GROUP_MAX], *paths[UPLOAD_GROUP_MAX];
    bool changed[UPLOAD_GROUP_MAX];
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        completion_commit *cc = ((checkpoint *)jobs[i])->then_commit;
        if (!cc || now >= cc->lease_sure_until_ms)
            continue; /* group_complete asks Redis for the lease first */
        ccs[m] = cc;
        ids[m] = cc->e[0].doc;
        shas[m] = cc->e[0].sha;
        paths[m++] = cc->e[0].path;
    }
    if (m == 0)
        return;
    docstore *ds = ccs[0]->ds;
    int rc = docstore_complete_documents(ds, m, ids, shas, paths, changed);
    if (rc != 0) {
        env->chain_paused_until_ms = util_mono_ms() + CHAIN_PAUSE_MS;
        log_warn("event=commit_after_sync_failed uploads=%zu effect=\"503 to them; the next "
                 "%d ms of completions commit after a trip back to the worker\" error=\"%s\"",
                 m, CHAIN_PAUSE_MS, docstore_error(ds));
    }
    for (size_t k = 0; k < m; k++) {
        completion_commit *cc = ccs[k];
        cc->rc = rc;
        if (rc != 0)
            snprintf(cc->why, sizeof cc->why, "%s", docstore_error(ds));
        else
            cc->e[0].changed = changed[k];
        cc->ran = true;
    }
}

/* Hands the statement to the syncer's thread, so the worker goes on with
 * its other connections while the commit waits for the disk: with 500
 * uploads of 1 MiB at once, a completion's UPDATE took 5-8 ms behind the
 * files' write-back, a fifth of each worker's time (docs/PERFORMANCE.md).
 * The sessions wait as for their file's sync. One at a time: a statement
 * handed over waits at most for the batch of syncs in progress, well
 * within the half lease that group_complete's lease check leaves it, and
 * a MySQL that stalls holds up one statement's worth of the worker's
 * syncs, not a queue of them. False when it is not handed over. */
static bool commit_on_syncer(completion_commit *cc)
{
    upload_env *env = cc->env;
    if (!env->commit_ds || !env->syncer || env->commits_on_syncer > 0)
        return false;
    cc->ds = env->commit_ds;
    if (syncer_submit(env->syncer, &cc->job) != 0) {
        cc->ds = env->ds;
        return false;
    }
    env->commits_on_syncer++;
    for (size_t k = 0; k < cc->n; k++) {
        session *s = cc->e[k].s;
        s->deferred.commit = cc;
        s->deferred.commit_slot = k;
        s->deferred.syncing = true;
    }
    syncer_flush(env->syncer);
    return true;
}

/* Parked completions, in the order that makes them safe: lease confirmed,
 * every file and its bucket directory synced (on the syncer, which batches
 * them; here, in place, without one), files checked, all
 * rows marked completed in one statement (on the syncer too, when it can
 * take it), then Redis state dropped and SUCCESS sent (end_commit). A
 * failure at any step answers that session and leaves the others going
 * on. */
static void group_complete(upload_env *env, session *const *ss, size_t n)
{
    bool live[UPLOAD_GROUP_MAX];
    uint64_t docs[UPLOAD_GROUP_MAX];
    const char *tokens[UPLOAD_GROUP_MAX];
    int8_t held[UPLOAD_GROUP_MAX];
    for (size_t i = 0; i < n; i++) {
        docs[i] = ss[i]->up->st.document_id;
        tokens[i] = ss[i]->lease_token;
    }
    /* Only the lease holder may declare the bytes final. A lease that
     * lapsed while we stalled counts only if nobody took the upload over
     * meanwhile (the hash still names us as its writer). */
    int rc = confirm_leases(env, ss, n, docs, tokens, held);
    char why[256];
    snprintf(why, sizeof why, "%s", rc != 0 ? rstate_error(env->rs) : "redis lease check failed");
    size_t nlive = 0;
    for (size_t i = 0; i < n; i++) {
        live[i] = rc == 0 && held[i] == 1;
        nlive += live[i];
        if (rc != 0 || held[i] < 0)
            send_unavailable(env, ss[i], why);
        else if (held[i] == 0)
            send_lease_lost(env, ss[i], docs[i]);
    }
    if (nlive == 0)
        return;
    /* Durable before anyone is told it is complete. */
    /* Files the syncer has not synced already (upload_run_deferred) are
     * synced here; their write-back is started first for all. */
    for (size_t i = 0; i < n; i++)
        if (live[i] && !ss[i]->deferred.synced)
            storage_start_writeback(ss[i]->up->fd);
    uint8_t dir_synced[256 / 8] = {0};
    for (size_t i = 0; i < n; i++) {
        if (!live[i])
            continue;
        session *s = ss[i];
        open_upload *up = s->up;
        uint64_t doc = up->st.document_id;
        unsigned bucket = storage_bucket(doc);
        int e = s->deferred.sync_err;
        storage_result r = s->deferred.synced ? (e ? storage_classify_errno(e) : STORAGE_OK)
                                              : timed_sync(env, up->fd);
        if (!s->deferred.synced && r != STORAGE_OK)
            e = errno;
        if (r == STORAGE_OK && up->sync_error) {
            /* A checkpoint failed while this completion waited (its result
             * comes back before the completion's sync): the pages it lost
             * may not show in a descriptor opened after it. Continue from
             * the last good checkpoint, as handle_complete does. */
            e = take_sync_error(env, s->up, s->lease_token);
            r = storage_classify_errno(e);
        }
        if (r == STORAGE_OK && !s->deferred.synced &&
            !(dir_synced[bucket / 8] & (1u << (bucket % 8)))) {
            if (storage_sync_dir(env->cfg->storage_dir, doc) != 0) {
                e = errno;
                r = storage_classify_errno(e);
            } else {
                dir_synced[bucket / 8] |= (uint8_t)(1u << (bucket % 8));
            }
        }
        if (r != STORAGE_OK) {
            live[i] = false;
            /* Pages whose write-back failed are clean in the cache but not
             * on disk, and no later sync writes them again: as after a
             * failed checkpoint, only what the last good one made durable
             * counts, and the client sends the rest again. */
            cut_back(env, up, s->lease_token, up->st.synced_offset);
            send_storage_error(env, s, doc, r, e, "sync");
            continue;
        }
        file_verdict v = check_file(env, up);
        if (v == FILE_REPLACED) {
            /* Our file was replaced under us by a takeover (fencing): the
             * document lives on in the new file, not ours. */
            live[i] = false;
            send_lease_lost(env, s, doc);
        } else if (v == FILE_INVALID) {
            live[i] = false;
            fail_document(env, s, doc, "file_invalid");
            send_error(env, s, 422, "file_invalid",
                       "the stored file is missing or does not have the expected size or mode");
        } else if (v == FILE_MISMATCH) {
            live[i] = false;
            char msg[200];
            snprintf(msg, sizeof msg, "received bytes hash to %s, not the declared sha256",
                     up->digest);
            fail_document(env, s, doc, "checksum_mismatch");
            send_error(env, s, 422, "checksum_mismatch", msg);
        }
    }
    completion_commit *cc = commit_new(env, ss, n, live);
    if (!cc) {
        for (size_t i = 0; i < n; i++)
            if (live[i])
                send_unavailable(env, ss[i], "out of memory");
        return;
    }
    if (commit_on_syncer(cc))
        return;
    run_commit(&cc->job);
    end_commit(cc, false);
}

/* ---- status, list, abort ---------------------------------------------- */

/* The offset a resume would start from, for status and list: the saved one,
 * or (key gone) what the file holds. -1 when Redis cannot be asked. */
static int current_offset(upload_env *env, const doc_row *d, int64_t *offset)
{
    bool found = false;
    if (rstate_get_offset(env->rs, d->id, offset, &found) != 0)
        return -1;
    if (!found) {
        int64_t size = storage_file_size(env->cfg->storage_dir, d->id);
        *offset = size < 0 ? 0 : size;
    }
    if (*offset > d->filesize)
        *offset = d->filesize;
    return 0;
}

static void handle_status(upload_env *env, session *s, const msg_request *req)
{
    if (authenticate(env, s, req) != 0)
        return;
    doc_row d;
    if (load_owned_document(env, s, req->document_id, &d) != 0)
        return;
    int64_t offset = -1;
    if (strcmp(d.status, "uploading") == 0 && current_offset(env, &d, &offset) != 0) {
        send_unavailable(env, s, rstate_error(env->rs));
        return;
    }
    json_t *o = ok_answer("status");
    json_t *dj = doc_json(&d, offset);
    if (!o || !dj || json_object_set_new(o, "document", dj) != 0) {
        json_decref(o);
        send_error(env, s, 500, "internal", "out of memory");
        return;
    }
    send_json(s, o);
}

typedef struct list_ctx {
    upload_env *env;
    json_t *docs;
    bool redis_failed;
} list_ctx;

static int append_doc(void *arg, const doc_row *row)
{
    list_ctx *lc = arg;
    int64_t offset = -1;
    if (strcmp(row->status, "uploading") == 0 && current_offset(lc->env, row, &offset) != 0) {
        lc->redis_failed = true;
        return -1;
    }
    json_t *dj = doc_json(row, offset);
    return dj ? json_array_append_new(lc->docs, dj) : -1;
}

static void handle_list(upload_env *env, session *s, const msg_request *req)
{
    if (authenticate(env, s, req) != 0)
        return;
    int64_t limit = req->limit > 0 ? req->limit : DEFAULT_LIST_LIMIT;
    if (limit > env->cfg->list_limit_max) {
        char msg[96];
        snprintf(msg, sizeof msg, "limit must be 1 to %" PRId64, (int64_t)env->cfg->list_limit_max);
        send_error(env, s, 400, "invalid_limit", msg);
        return;
    }
    list_ctx lc = {.env = env, .docs = json_array()};
    if (!lc.docs) {
        send_error(env, s, 500, "internal", "out of memory");
        return;
    }
    if (docstore_list_documents(env->ds, s->user_id, limit, append_doc, &lc) != 0) {
        json_decref(lc.docs);
        send_unavailable(env, s, lc.redis_failed ? rstate_error(env->rs) : docstore_error(env->ds));
        return;
    }
    json_t *o = ok_answer("list");
    if (!o || json_object_set_new(o, "documents", lc.docs) != 0) {
        json_decref(o);
        send_error(env, s, 500, "internal", "out of memory");
        return;
    }
    send_json(s, o);
}

static void handle_abort(upload_env *env, session *s, const msg_request *req)
{
    if (authenticate(env, s, req) != 0)
        return;
    doc_row d;
    if (load_owned_document(env, s, req->document_id, &d) != 0)
        return;
    bool changed = false;
    if (lifecycle_fail_upload(env->ds, env->rs, env->cfg->storage_dir, d.id, "aborted",
                              &changed) != 0) {
        send_unavailable(env, s, docstore_error(env->ds));
        return;
    }
    if (!changed) {
        /* Someone ended it first (a completion, the sweep, chunkctl): the
         * answer says how it ended, not what was read before. A row that
         * neither changed nor ended cannot be told apart from a lost
         * answer: try again. */
        if (still_uploading(env, s, d.id, &d))
            send_unavailable(env, s, "the abort changed nothing and the upload goes on");
        return;
    }
    metrics_failed(env->metrics, "aborted");
    drop_open_upload_if(env, s, d.id);
    log_info("event=upload_aborted doc=%" PRIu64 " user=%" PRIu64 " peer=%s", d.id, s->user_id,
             s->peer);
    json_t *o = ok_answer("abort");
    if (o && json_object_set_new(o, "document_id", json_integer((json_int_t)d.id)) != 0) {
        json_decref(o);
        o = NULL;
    }
    send_json(s, o);
}

/* ---- entry point ------------------------------------------------------ */

uint64_t upload_on_line(upload_env *env, session *s, const char *line, size_t len)
{
    msg_request req;
    msg_error err;
    int parsed = msg_parse(line, len, env->cfg->max_file_size, &req, &err);
    /* Chunks written before this request are answered before it. Another
     * chunk need not wait: its own answer queues behind theirs; nor does a
     * completion, which parks and drains in its group (all the group's
     * saves are answered together then). */
    if (parsed != 0 || (req.action != ACT_CHUNK && req.action != ACT_COMPLETE))
        upload_drain(env, s);
    if (parsed != 0) {
        if (req.action == ACT_CHUNK && req.length > env->cfg->max_chunk_size)
            return begin_chunk(env, s, &req); /* answers chunk_too_large */
        upload_send_error(env, s, &err);
        /* A chunk whose header was bad but whose length is known: its bytes
         * still follow and must be skipped to stay in step. */
        if (req.action == ACT_CHUNK && !err.close && req.length > 0) {
            memset(&s->chunk, 0, sizeof s->chunk);
            s->chunk.active = true;
            s->chunk.length = req.length;
            return (uint64_t)req.length;
        }
        return 0;
    }
    switch (req.action) {
    case ACT_UPLOAD: handle_upload(env, s, &req); break;
    case ACT_CHUNK: return begin_chunk(env, s, &req);
    case ACT_COMPLETE: handle_complete(env, s, &req); break;
    case ACT_RESUME: handle_resume(env, s, &req); break;
    case ACT_STATUS: handle_status(env, s, &req); break;
    case ACT_LIST: handle_list(env, s, &req); break;
    case ACT_ABORT: handle_abort(env, s, &req); break;
    }
    return 0;
}

void upload_run_deferred(upload_env *env, session *const *sessions, size_t n)
{
    session *uploads[UPLOAD_GROUP_MAX], *completes[UPLOAD_GROUP_MAX];
    size_t nu = 0, nc = 0;
    size_t nchained = 0; /* completions whose UPDATE follows their sync on the syncer */
    for (size_t i = 0; i < n && i < UPLOAD_GROUP_MAX; i++) {
        session *s = sessions[i];
        if (s->deferred.kind == DEFER_UPLOAD)
            uploads[nu++] = s;
        else if (s->deferred.kind == DEFER_COMPLETE)
            upload_drain(env, s); /* its chunks first: their saves were sent already */
    }
    for (size_t i = 0; i < n && i < UPLOAD_GROUP_MAX; i++) {
        session *s = sessions[i];
        if (s->deferred.kind != DEFER_COMPLETE)
            continue;
        /* A save that failed meanwhile cut the upload back, or a lost lease
         * took it away: the chunks' answers said so, and so does this one. */
        if (refuse_unless_received(env, s, s->deferred.document_id))
            continue;
        if (!s->deferred.synced) {
            completion_commit *then = chain_commit_new(env, s);
            s->up->final_sync =
                submit_sync(env, s->up, s->up->st.filesize, s, on_final_sync_done, then);
            if (s->up->final_sync) {
                /* The file's sync runs on the syncer while the worker goes
                 * on; the request comes back with its result, answered
                 * when the UPDATE ran there too, or to a later group. */
                s->deferred.syncing = true;
                if (then) {
                    /* Its lease stays taken if the session closes meanwhile
                     * (session_release). */
                    s->deferred.commit = then;
                    s->deferred.commit_slot = 0;
                    nchained++;
                }
                continue;
            }
            free(then);
        }
        completes[nc++] = s;
    }
    /* The syncs just handed over start now, not after this group's
     * statements. */
    if (env->syncer)
        syncer_flush(env->syncer);
    /* Completions first: those whose UPDATE runs here free what the
     * uploads of the same users may need (the per-user limit, reserved
     * room); one handed to the syncer frees it when it is back, for the
     * uploads of later turns. */
    if (nc > 0)
        group_complete(env, completes, nc);
    /* The completions' Redis clean-up goes out now, ahead of their
     * SUCCESS answers (sent when this returns) and while the uploads'
     * statements run. */
    saver_flush(env->saver);
    if (nu > 0)
        group_upload(env, uploads, nu);
    /* A chained completion counts with this turn's group: it comes back
     * answered, not to another group. */
    metrics_add(env->metrics, M_COMMIT_GROUPS,
                (uint64_t)(nc + nchained > 0) + (uint64_t)(nu > 0));
    metrics_add(env->metrics, M_COMMIT_GROUP_REQUESTS, (uint64_t)(nc + nchained + nu));
    for (size_t i = 0; i < n && i < UPLOAD_GROUP_MAX; i++)
        if (!sessions[i]->deferred.syncing)
            sessions[i]->deferred.kind = DEFER_NONE;
}
