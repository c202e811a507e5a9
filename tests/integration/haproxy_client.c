/* A client that keeps going through the balancer (haproxy_client.h). */
#include "haproxy_client.h"

#include <stdio.h>
#include <string.h>

static void note(hc_job *j, const char *what, const cu_error *e)
{
    snprintf(j->last, sizeof j->last, "%s: %d %s %s", what, e->code, e->reason, e->message);
}

static void give_up(hc_job *j, const char *what, const cu_error *e)
{
    snprintf(j->why, sizeof j->why, "%s: %d %s %s (attempt %d)", what, e->code, e->reason,
             e->message, j->attempts);
}

/* What a client tries again after reconnecting: the connection broke, the
 * instance was going away or a backend was unreachable, or the upload moved
 * between connections. Anything else is a real refusal and ends the job. */
static bool retryable(const cu_error *e)
{
    if (e->code == 0)
        return strcmp(e->reason, "file") != 0 && strcmp(e->reason, "cancelled") != 0;
    if (e->code == 503)
        return true;
    static const char *const moved[] = {"locked", "lease_lost", "incomplete", "offset_mismatch",
                                        "upload_not_open"};
    if (e->code == 409)
        for (size_t i = 0; i < sizeof moved / sizeof moved[0]; i++)
            if (strcmp(e->reason, moved[i]) == 0)
                return true;
    return false;
}

static bool on_progress(void *arg, int64_t received, int64_t total)
{
    (void)total;
    hc_job *j = arg;
    if (received > atomic_load(&j->acked))
        atomic_store(&j->acked, received);
    return !atomic_load(j->abort);
}

/* resume, waiting out another connection's lease as the server asks */
static int resume_locked(const hc_job *j, cu_conn *c, const cu_auth *auth, cu_upload_info *info,
                         cu_error *err, int64_t deadline)
{
    for (;;) {
        int rc = cu_resume(c, auth, j->document_id, info, err);
        if (rc == 0 || err->code != 409 || strcmp(err->reason, "locked") != 0 ||
            it_now_ms() >= deadline || atomic_load(j->abort))
            return rc;
        int64_t wait = err->retry_after_ms;
        it_sleep_ms((int)(wait < 20 ? 20 : wait > 2000 ? 2000 : wait));
    }
}

/* An upload request whose answer was lost may have created the row: find
 * it by the job's unique file name and carry on with it (aborting any
 * second one), so no row is left uploading. 0 when the list was read. */
static int adopt(hc_job *j, cu_conn *c, const cu_auth *auth)
{
    json_t *reply = NULL;
    cu_error err;
    memset(&err, 0, sizeof err);
    if (cu_list(c, auth, 1000, &reply, &err) != 0) {
        note(j, "list", &err);
        json_decref(reply);
        return -1;
    }
    json_t *docs = json_object_get(reply, "documents"), *d;
    size_t k;
    int rc = 0;
    json_array_foreach(docs, k, d) {
        const char *name = json_string_value(json_object_get(d, "filename"));
        const char *st = json_string_value(json_object_get(d, "status"));
        int64_t id = (int64_t)json_integer_value(json_object_get(d, "document_id"));
        if (!name || !st || strcmp(name, j->filename) != 0 || strcmp(st, "uploading") != 0)
            continue;
        if (j->document_id == 0) {
            j->document_id = id;
        } else if (cu_abort(c, auth, id, &err) == 0) {
            j->orphans_aborted++;
        } else {
            note(j, "abort orphan", &err);
            rc = -1;
        }
    }
    json_decref(reply);
    return rc;
}

/* The upload is no longer resumable: an earlier upload_complete went
 * through but its answer was lost. The row says how it ended. */
static int finished_elsewhere(hc_job *j, cu_conn *c, const cu_auth *auth)
{
    json_t *reply = NULL;
    cu_error err;
    memset(&err, 0, sizeof err);
    if (cu_status(c, auth, j->document_id, &reply, &err) != 0) {
        note(j, "status", &err);
        json_decref(reply);
        return retryable(&err) ? 0 : -1;
    }
    json_t *d = json_object_get(reply, "document");
    const char *st = json_string_value(json_object_get(d, "status"));
    const char *sha = json_string_value(json_object_get(d, "sha256"));
    int rc;
    if (st && strcmp(st, "completed") == 0 && sha) {
        snprintf(j->server_sha, sizeof j->server_sha, "%s", sha);
        j->ok = true;
        rc = 1;
    } else {
        const char *why = json_string_value(json_object_get(d, "failure_reason"));
        snprintf(j->why, sizeof j->why, "document %lld ended %s (%s)", (long long)j->document_id,
                 st ? st : "?", why ? why : "no reason");
        rc = -1;
    }
    json_decref(reply);
    return rc;
}

/* One connection's worth of work: 1 done, 0 reconnect and go on, -1 give up. */
static int job_attempt(hc_job *j, cu_conn *c, const cu_auth *auth, bool *maybe_created,
                       int64_t deadline)
{
    cu_upload_info info;
    cu_error err;
    memset(&err, 0, sizeof err);
    if (j->document_id == 0 && *maybe_created) {
        if (adopt(j, c, auth) != 0)
            return 0;
        *maybe_created = false;
    }
    if (j->document_id == 0) {
        if (cu_start_upload(c, auth, j->filename, j->size, j->sha, &info, &err) != 0) {
            /* no answer: the row may exist without our knowing its id */
            if (err.code == 0)
                *maybe_created = true;
            note(j, "upload", &err);
            if (!retryable(&err)) {
                give_up(j, "upload", &err);
                return -1;
            }
            return 0;
        }
        j->document_id = info.document_id;
    } else if (resume_locked(j, c, auth, &info, &err, deadline) != 0) {
        if (err.code == 409 && strcmp(err.reason, "not_resumable") == 0)
            return finished_elsewhere(j, c, auth);
        note(j, "resume", &err);
        if (!retryable(&err)) {
            give_up(j, "resume", &err);
            return -1;
        }
        return 0;
    }
    if (info.offset < 0 || info.offset > j->size || info.offset < atomic_load(&j->acked)) {
        snprintf(j->why, sizeof j->why,
                 "document %lld: the server offers offset %lld, %lld bytes were acknowledged",
                 (long long)j->document_id, (long long)info.offset,
                 (long long)atomic_load(&j->acked));
        return -1;
    }
    if (info.offset < j->size &&
        cu_send_file(c, j->fd, &info, 0, j->rate_bps, on_progress, j, &err) != 0) {
        note(j, "send", &err);
        if (!retryable(&err)) {
            give_up(j, "send", &err);
            return -1;
        }
        return 0;
    }
    cu_complete_info done;
    if (cu_complete(c, j->document_id, &done, &err) != 0) {
        if (err.code == 409 && strcmp(err.reason, "not_resumable") == 0)
            return finished_elsewhere(j, c, auth);
        note(j, "complete", &err);
        if (!retryable(&err)) {
            give_up(j, "complete", &err);
            return -1;
        }
        return 0;
    }
    if (done.document_id != j->document_id || done.filesize != j->size) {
        snprintf(j->why, sizeof j->why, "SUCCESS for document %lld of %lld bytes, expected %lld "
                 "of %lld", (long long)done.document_id, (long long)done.filesize,
                 (long long)j->document_id, (long long)j->size);
        return -1;
    }
    memcpy(j->server_sha, done.sha256, sizeof j->server_sha);
    j->ok = true;
    return 1;
}

/* Runs in its own thread; no cmocka asserts here. */
void *hc_job_thread(void *arg)
{
    hc_job *j = arg;
    cu_auth auth = {.user_id = j->user->id, .credential = j->user->credential};
    int64_t deadline = it_now_ms() + HC_JOB_DEADLINE_MS;
    bool maybe_created = false;
    pthread_barrier_wait(j->start);
    while (!j->ok && !j->why[0] && it_now_ms() < deadline && !atomic_load(j->abort)) {
        if (j->attempts++ > 0)
            it_sleep_ms(50 * (j->attempts < 10 ? j->attempts : 10));
        cu_error err;
        memset(&err, 0, sizeof err);
        cu_conn *c = cu_connect("127.0.0.1", j->port, HC_CLIENT_TIMEOUT_MS, &err);
        if (!c) {
            note(j, "connect", &err);
            continue;
        }
        job_attempt(j, c, &auth, &maybe_created, deadline);
        cu_close(c);
    }
    if (!j->ok && !j->why[0])
        snprintf(j->why, sizeof j->why, "not done after %d attempts; last error %s",
                 j->attempts, j->last);
    return NULL;
}
