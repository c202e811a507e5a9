/* chunkup upload: hash, find or start the document, stream, retry with
 * backoff by resuming, complete, and verify the server's checksum. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cmd.h"
#include "progress.h"
#include "state.h"

#define BACKOFF_FIRST_MS 200
#define BACKOFF_MAX_MS 5000

typedef enum step {
    STEP_DONE,                  /* completed, j->done filled */
    STEP_FRESH,                 /* the known document is gone: start a new one */
    STEP_RETRY,                 /* reconnect after a pause and resume */
    STEP_FAIL                   /* give up with j->status and j->why */
} step;

typedef struct job {
    const cu_options *o;
    const char *arg;            /* the FILE operand as given */
    char *abspath;              /* owned */
    const char *name;           /* last component of abspath */
    int fd;
    struct stat st;
    char sha[65];
    cu_state_key key;
    char state_path[PATH_MAX];
    bool use_state;             /* false after a state-file failure */
    cu_auth auth;

    cu_conn *conn;
    int64_t document_id;        /* 0 until known */
    bool open;                  /* the upload is open on conn */
    bool completing;            /* upload_complete was sent at least once */
    cu_upload_info info;
    cu_complete_info done;

    bool show_progress;
    bool final_shown;
    cu_progress prog;

    cu_error err;
    int status;                 /* exit status once STEP_FAIL */
    char why[1024];             /* its explanation; "" to describe err */
} job;

static void notice(job *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void notice(job *j, const char *fmt, ...)
{
    va_list ap;

    if (j->o->quiet)
        return;
    if (j->show_progress)
        cu_progress_break(&j->prog);
    fprintf(stderr, "chunkup: %s: ", j->arg);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* State-file trouble is worth a warning, never a failed upload: the file
 * only makes a later run faster. */
static void state_warn(job *j, const char *msg)
{
    if (j->show_progress)
        cu_progress_break(&j->prog);
    fprintf(stderr, "chunkup: warning: %s; resuming in a later run will not be possible\n", msg);
    j->use_state = false;
}

static cu_state *state_open(job *j)
{
    char msg[1024];
    cu_state *st;

    if (!j->use_state)
        return NULL;
    st = cu_state_open(j->state_path, msg, sizeof msg);
    if (st == NULL)
        state_warn(j, msg);
    else if (msg[0] != '\0')
        fprintf(stderr, "chunkup: warning: %s\n", msg);
    return st;
}

static void state_save_close(job *j, cu_state *st)
{
    char msg[1024];

    if (cu_state_save(st, msg, sizeof msg) < 0)
        state_warn(j, msg);
    cu_state_close(st);
}

static int64_t state_lookup(job *j)
{
    cu_state *st;
    int64_t id;

    /* Nothing to find: do not create directories just to look. */
    if (j->use_state && access(j->state_path, F_OK) < 0 && errno == ENOENT)
        return 0;
    st = state_open(j);
    id = st != NULL ? cu_state_find(st, &j->key) : 0;

    cu_state_close(st);
    return id;
}

static void state_record(job *j)
{
    cu_state *st = state_open(j);
    char msg[1024];

    if (st == NULL)
        return;
    if (cu_state_put(st, &j->key, j->document_id, msg, sizeof msg) < 0) {
        cu_state_close(st);
        state_warn(j, msg);
        return;
    }
    state_save_close(j, st);
}

static void state_drop(job *j)
{
    cu_state *st = state_open(j);

    if (st == NULL)
        return;
    if (cu_state_forget(st, &j->key) == 0) {
        cu_state_close(st);
        return;
    }
    state_save_close(j, st);
}

static int fail(job *j, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(job *j, int status, const char *fmt, ...)
{
    char text[1024];
    va_list ap;

    if (j->show_progress)
        cu_progress_break(&j->prog);
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    return cmd_fail(j->o, j->arg, status, text, NULL);
}

static int prepare_file(job *j)
{
    struct stat after;
    char *slash;

    /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
     * writer, forever, before it could be refused as not a regular file
     * (the flag means nothing for a regular file's reads). */
    j->fd = open(j->arg, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (j->fd < 0)
        return fail(j, CU_EXIT_FILE, "cannot open: %s", strerror(errno));
    if (fstat(j->fd, &j->st) < 0)
        return fail(j, CU_EXIT_FILE, "cannot stat: %s", strerror(errno));
    if (!S_ISREG(j->st.st_mode))
        return fail(j, CU_EXIT_FILE, "not a regular file");
    j->abspath = realpath(j->arg, NULL);
    if (j->abspath == NULL)
        return fail(j, CU_EXIT_FILE, "cannot resolve the path: %s", strerror(errno));
    slash = strrchr(j->abspath, '/');
    j->name = slash != NULL ? slash + 1 : j->abspath;
    /* The descriptor whose bytes are sent, not the path again: a file
     * replaced by a rename in between would be hashed instead. */
    if (cu_sha256_fd(j->fd, j->abspath, j->sha, &j->err) < 0)
        return fail(j, CU_EXIT_FILE, "%s", j->err.message);
    /* The hash must describe the bytes we are about to send. */
    if (fstat(j->fd, &after) < 0)
        return fail(j, CU_EXIT_FILE, "cannot stat: %s", strerror(errno));
    if (after.st_size != j->st.st_size || after.st_mtim.tv_sec != j->st.st_mtim.tv_sec ||
        after.st_mtim.tv_nsec != j->st.st_mtim.tv_nsec)
        return fail(j, CU_EXIT_FILE, "file changed while it was being hashed");
    j->key.server = j->o->server;
    j->key.user_id = j->o->user_id;
    j->key.path = j->abspath;
    j->key.size = j->st.st_size;
    j->key.mtime_sec = j->st.st_mtim.tv_sec;
    j->key.mtime_nsec = j->st.st_mtim.tv_nsec;
    j->key.sha256 = j->sha;
    return CU_EXIT_OK;
}

static bool on_progress(void *arg, int64_t received, int64_t total)
{
    job *j = arg;

    (void)total;
    if (j->show_progress)
        cu_progress_update(&j->prog, received, cu_progress_clock_ms(), false);
    return true;
}


static step give_up(job *j, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static step give_up(job *j, int status, const char *fmt, ...)
{
    va_list ap;

    j->status = status;
    va_start(ap, fmt);
    vsnprintf(j->why, sizeof j->why, fmt, ap);
    va_end(ap);
    return STEP_FAIL;
}

/* What a failed request means for the upload. */
static step classify(job *j)
{
    const cu_error *e = &j->err;

    j->why[0] = '\0';
    switch (e->code) {
    case 0:
        /* A local file that cannot be read will not read better later,
         * and a peer that does not follow the protocol (not chunkd, or a
         * chunkd that disagrees with this client) will not either: each
         * retry of a refused upload answer could leave one more document
         * behind. The state file stays, for a run against a fixed server. */
        if (strcmp(e->reason, "file") == 0 || strcmp(e->reason, "protocol") == 0) {
            j->status = cu_exit_status(e);
            return STEP_FAIL;
        }
        return STEP_RETRY;
    case 408:
        /* request_timeout: the connection stalled mid-request and was
         * closed; the upload itself is there to be resumed. */
    case 409:
        /* offset_mismatch, upload_not_open, incomplete: our view of the
         * upload is stale; resuming asks the server for the truth. */
        return STEP_RETRY;
    case 422:
        /* The server marked the document failed: nothing left to resume. */
        state_drop(j);
        break;
    default:
        /* A 5xx other than 507 (out of storage: the next run resumes) is
         * the server or a proxy in front of it being unwell: retry. */
        if (e->code >= 500 && e->code != 507)
            return STEP_RETRY;
        break;
    }
    j->status = cu_exit_status(e);
    return STEP_FAIL;
}

/* The document named by the state file is no longer uploading. If it is
 * completed with our checksum, an earlier attempt finished it (perhaps this
 * run, its answer lost with the connection). Otherwise start afresh, unless
 * this run sent upload_complete and the server then failed the document. */
static step settle_not_resumable(job *j)
{
    json_t *reply = NULL, *doc;
    const char *status, *sha, *why;
    step r = STEP_FRESH;

    if (cu_status(j->conn, &j->auth, j->document_id, &reply, &j->err) < 0)
        return j->err.code == 404 || j->err.code == 403 ? STEP_FRESH : classify(j);
    doc = json_object_get(reply, "document");
    status = json_string_value(json_object_get(doc, "status"));
    sha = json_string_value(json_object_get(doc, "sha256"));
    why = json_string_value(json_object_get(doc, "failure_reason"));
    if (status != NULL && strcmp(status, "completed") == 0 && sha != NULL &&
        strcasecmp(sha, j->sha) == 0) {
        j->done.document_id = j->document_id;
        j->done.filesize = j->st.st_size;
        snprintf(j->done.sha256, sizeof j->done.sha256, "%s", j->sha);
        r = STEP_DONE;
    } else if (j->completing) {
        state_drop(j);
        r = give_up(j,
                    why != NULL && strcmp(why, "checksum_mismatch") == 0 ? CU_EXIT_CHECKSUM
                                                                           : CU_EXIT_REFUSED,
                    "document_id=%lld is %s after upload_complete (%s)",
                    (long long)j->document_id, status != NULL ? status : "in an unknown state",
                    why != NULL ? why : "no reason given");
    }
    json_decref(reply);
    return r;
}

/* Resumes the known document or starts a new one. True once the upload is
 * open on j->conn; otherwise *r says what happened instead. */
static bool open_upload(job *j, step *r)
{
    if (j->document_id > 0) {
        *r = STEP_FRESH;
        if (cu_resume(j->conn, &j->auth, j->document_id, &j->info, &j->err) == 0) {
            if (j->info.filesize == j->st.st_size) {
                j->open = true;
                notice(j, "resuming document_id=%lld at %lld of %lld bytes",
                       (long long)j->document_id, (long long)j->info.offset,
                       (long long)j->info.filesize);
            }
        } else if (j->err.code == 409 && strcmp(j->err.reason, "not_resumable") == 0) {
            *r = settle_not_resumable(j);
        } else if (j->err.code != 404 && j->err.code != 403) {
            *r = classify(j);
        }
        if (!j->open && *r != STEP_FRESH)
            return false;
        if (!j->open) {
            notice(j, "document_id=%lld cannot be resumed; starting a new upload",
                   (long long)j->document_id);
            state_drop(j);
            j->document_id = 0;
            j->completing = false;
        }
    }
    if (!j->open) {
        if (cu_start_upload(j->conn, &j->auth, j->name, j->st.st_size, j->sha, &j->info,
                            &j->err) < 0) {
            *r = classify(j);
            return false;
        }
        j->document_id = j->info.document_id;
        j->open = true;
        state_record(j);
    }
    if (j->show_progress)
        cu_progress_rebase(&j->prog, j->info.offset, cu_progress_clock_ms());
    return true;
}

static step attempt(job *j)
{
    step r;

    if (j->conn == NULL) {
        j->conn = cmd_connect(j->o, &j->err);
        if (j->conn == NULL)
            return STEP_RETRY;
    }
    if (!j->open && !open_upload(j, &r))
        return r;
    if (cu_send_file(j->conn, j->fd, &j->info, j->o->window, j->o->limit_rate, on_progress, j,
                     &j->err) < 0)
        return classify(j);
    if (j->show_progress && !j->final_shown) {
        cu_progress_update(&j->prog, j->info.offset, cu_progress_clock_ms(), true);
        j->final_shown = true;
    }
    j->completing = true;
    if (cu_complete(j->conn, j->document_id, &j->done, &j->err) < 0)
        return classify(j);
    return STEP_DONE;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = { .tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000 };

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        continue;
}

static int finish(job *j)
{
    char *text = NULL;
    json_t *obj;

    state_drop(j);
    if (strcasecmp(j->done.sha256, j->sha) != 0)
        return fail(j, CU_EXIT_CHECKSUM,
                    "checksum mismatch: server has %s, local file has %s (document_id=%lld)",
                    j->done.sha256, j->sha, (long long)j->document_id);
    if (!j->o->json) {
        printf("Upload complete! document_id=%lld sha256=%s\n", (long long)j->document_id, j->sha);
        fflush(stdout);
        return CU_EXIT_OK;
    }
    obj = json_pack("{s:I, s:s, s:s}", "document_id", (json_int_t)j->document_id, "sha256",
                    j->sha, "status", "SUCCESS");
    if (obj != NULL)
        text = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (text == NULL) {
        fprintf(stderr, "chunkup: %s: uploaded as document_id=%lld; cannot encode the JSON result\n",
                j->arg, (long long)j->document_id);
        return CU_EXIT_OK;
    }
    printf("%s\n", text);
    fflush(stdout);
    free(text);
    return CU_EXIT_OK;
}

static int report(job *j)
{
    if (j->show_progress)
        cu_progress_break(&j->prog);
    if (j->why[0] != '\0')
        return cmd_fail(j->o, j->arg, j->status, j->why, &j->err);
    return cmd_fail_request(j->o, j->arg, j->status, &j->err);
}

/* Attempts until done, failed, or out of retries. Retries count only while
 * nothing moves: an attempt that got the offset further resets them. */
static int transfer(job *j)
{
    int64_t backoff = BACKOFF_FIRST_MS;
    int failures = 0;

    for (;;) {
        int64_t before = j->info.offset;
        char text[768];
        step r = attempt(j);

        if (r == STEP_DONE)
            return finish(j);
        if (r == STEP_FAIL)
            return report(j);
        cu_close(j->conn);
        j->conn = NULL;
        j->open = false;
        if (j->info.offset > before) {
            failures = 0;
            backoff = BACKOFF_FIRST_MS;
        }
        cu_describe_error(text, sizeof text, &j->err);
        if (failures >= j->o->retries) {
            give_up(j, CU_EXIT_UNAVAILABLE, "giving up after %d retries: %s", failures, text);
            return report(j);
        }
        failures++;
        /* A locked upload says when its lease lapses: wait that long
         * (plus a little) rather than guessing. */
        int64_t wait = cu_retry_wait_ms(backoff, j->err.retry_after_ms, BACKOFF_FIRST_MS);
        notice(j, "%s; retrying in %.1f s (%d of %d)", text, (double)wait / 1000.0, failures,
               j->o->retries);
        sleep_ms(wait);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
}

static int upload_one(const cu_options *o, const char *arg)
{
    job j;
    int rc;

    memset(&j, 0, sizeof j);
    j.o = o;
    j.arg = arg;
    j.fd = -1;
    j.auth.user_id = o->user_id;
    j.auth.credential = o->credential;
    j.show_progress = !o->quiet;
    j.use_state = true;
    if (cmd_state_path(o, j.state_path, sizeof j.state_path) < 0)
        state_warn(&j, "no place for the state file (set HOME or XDG_STATE_HOME, or --state)");
    rc = prepare_file(&j);
    if (rc == CU_EXIT_OK) {
        j.document_id = state_lookup(&j);
        if (j.show_progress)
            cu_progress_init(&j.prog, stderr, isatty(STDERR_FILENO) == 1, j.name, j.st.st_size,
                             0, cu_progress_clock_ms());
        rc = transfer(&j);
    }
    cu_close(j.conn);
    if (j.fd >= 0)
        (void)close(j.fd);
    free(j.abspath);
    return rc;
}

int cmd_upload(const cu_options *o)
{
    int rc = CU_EXIT_OK;

    for (int i = 0; i < o->nargs; i++) {
        int r = upload_one(o, o->args[i]);

        if (r != CU_EXIT_OK && rc == CU_EXIT_OK)
            rc = r;
        /* The next file would meet the same bad credential, dead server
         * or peer that does not speak the protocol. */
        if (r == CU_EXIT_AUTH || r == CU_EXIT_UNAVAILABLE || r == CU_EXIT_PROTOCOL)
            break;
    }
    return rc;
}
