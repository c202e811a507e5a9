/* Operator-initiated end of an upload. */
#include "ctl_fail.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "chunkd/lifecycle.h"
#include "chunkd/util.h"
#include "ctl_out.h"
#include "ctl_redis.h"

typedef struct fail_ctx {
    const chunkd_config *cfg;
    docstore *ds;
    redis_state *rs;
    ctl_redis *cr;
    uint64_t id;
    char token[2 * CFG_STR_MAX];
    bool leased;        /* we took the lease */
    ctl_lease writer;   /* who held it when we came, if not free */
} fail_ctx;

/* A lease token in the server's form, <node>/<random>, so `uploads` and
 * `show` name chunkctl while it works on the document. */
static int make_token(fail_ctx *c, char *err, size_t errlen)
{
    unsigned char rnd[16];
    char hex[2 * sizeof rnd + 1], host[64];
    if (RAND_bytes(rnd, (int)sizeof rnd) != 1) {
        snprintf(err, errlen, "the random generator failed");
        return -1;
    }
    util_hex(rnd, sizeof rnd, hex);
    if (gethostname(host, sizeof host) != 0)
        snprintf(host, sizeof host, "unknown");
    host[sizeof host - 1] = '\0';
    snprintf(c->token, sizeof c->token, "chunkctl-%s-%d/%s", host, (int)getpid(), hex);
    return 0;
}

/* Takes the upload's lease, as the expiry sweep does, so no resume starts
 * while the row is being failed. A lease someone else holds does not stop
 * the operator: lifecycle_fail_upload then marks the lease ended, so that
 * writer's next chunk is refused (lease_lost) and a resume caught halfway
 * cannot write the state back (rstate_put). */
static int take_lease(fail_ctx *c, char *err, size_t errlen)
{
    if (ctl_redis_lease(c->cr, c->id, &c->writer, err, errlen) != 0)
        return -1;
    int64_t retry = 0;
    if (rstate_lease_acquire(c->rs, c->id, c->token, &c->leased, &retry) != 0) {
        snprintf(err, errlen, "taking the lease of document %" PRIu64 ": %s; nothing changed",
                 c->id, rstate_error(c->rs));
        return -1;
    }
    if (!c->leased && !c->writer.held) /* taken between our two looks */
        return ctl_redis_lease(c->cr, c->id, &c->writer, err, errlen);
    return 0;
}

/* Adds ", item" (or "item" first) to a list being built in buf; a list
 * that does not fit is cut short. */
static void list_add(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void list_add(char *buf, size_t len, const char *fmt, ...)
{
    size_t used = strlen(buf);
    if (used > 0 && used + 2 < len) {
        memcpy(buf + used, ", ", 3);
        used += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    /* a cut-short list still names the first leftovers */
    (void)vsnprintf(buf + used, len - used, fmt, ap);
    va_end(ap);
}

/* What lifecycle_fail_upload could not remove (it logs, but goes on: the
 * row already says failed). Fills what with a list, empty when clean. */
static int leftovers(fail_ctx *c, char *what, size_t len, char *err, size_t errlen)
{
    what[0] = '\0';
    int64_t size = storage_file_size(c->cfg->storage_dir, c->id);
    if (size >= 0)
        list_add(what, len, "the file");
    else if (errno != ENOENT)
        list_add(what, len, "the file (cannot check: %s)", strerror(errno));
    int64_t offset = 0;
    bool found = false;
    if (rstate_get_offset(c->rs, c->id, &offset, &found) != 0) {
        snprintf(err, errlen, "checking the Redis state of document %" PRIu64 ": %s", c->id,
                 rstate_error(c->rs));
        return -1;
    }
    if (found)
        list_add(what, len, "the Redis state");
    ctl_lease l;
    if (ctl_redis_lease(c->cr, c->id, &l, err, errlen) != 0)
        return -1;
    if (l.held)
        list_add(what, len, "the lease (held by %s)", l.holder);
    return 0;
}

static int print_result(const fail_ctx *c, const char *reason, bool json, char *err,
                        size_t errlen)
{
    bool interrupted = !c->leased && c->writer.held;
    if (json)
        return out_json(json_pack("{sIsssssoso}", "document_id", (json_int_t)c->id, "status",
                                  "failed", "failure_reason", reason, "interrupted_writer",
                                  interrupted ? out_json_str_or_null(c->writer.holder)
                                              : json_null(),
                                  "interrupted_node",
                                  interrupted ? out_json_str_or_null(c->writer.node)
                                              : json_null()),
                        err, errlen);
    out_printf("document_id=%" PRIu64 "\nstatus=failed\nfailure_reason=%s\n", c->id, reason);
    if (interrupted) {
        out_printf("interrupted_writer=");
        out_text(c->writer.holder);
        out_printf("\n");
    }
    return out_finish(err, errlen) == 0 ? 0 : 1;
}

static int end_upload(fail_ctx *c, const char *reason, bool json, char *err, size_t errlen)
{
    doc_row d;
    bool found = false;
    if (docstore_get_document(c->ds, c->id, &d, &found) != 0) {
        snprintf(err, errlen, "reading document %" PRIu64 ": %s", c->id, docstore_error(c->ds));
        return 1;
    }
    if (!found) {
        snprintf(err, errlen, "no document with id %" PRIu64, c->id);
        return 1;
    }
    if (strcmp(d.status, "uploading") != 0) {
        snprintf(err, errlen, "document %" PRIu64 " is %s, not uploading; nothing changed",
                 c->id, d.status);
        return 1;
    }
    if (make_token(c, err, errlen) != 0 || take_lease(c, err, errlen) != 0)
        return 1;
    bool changed = false;
    if (lifecycle_fail_upload(c->ds, c->rs, c->cfg->storage_dir, c->id, reason, &changed) != 0) {
        snprintf(err, errlen,
                 "failing document %" PRIu64 ": %s; 'chunkctl show %" PRIu64 "' tells its status",
                 c->id, docstore_error(c->ds), c->id);
        return 1;
    }
    if (!changed) {
        /* Completed, failed or aborted between our read and the update. */
        const char *now = "no longer uploading";
        if (docstore_get_document(c->ds, c->id, &d, &found) == 0 && found)
            now = d.status;
        snprintf(err, errlen, "document %" PRIu64 " became %s meanwhile; nothing changed",
                 c->id, now);
        return 1;
    }
    char left[512];
    if (leftovers(c, left, sizeof left, err, errlen) != 0)
        return 1;
    int rc = print_result(c, reason, json, err, errlen);
    if (rc == 0 && left[0]) {
        snprintf(err, errlen,
                 "document %" PRIu64 " is failed, but %s could not be removed; "
                 "'chunkctl show %" PRIu64 "' tells what is left",
                 c->id, left, c->id);
        rc = 1;
    }
    return rc;
}

int ctl_fail(const chunkd_config *cfg, uint64_t id, const char *reason, bool json, char *err,
             size_t errlen)
{
    fail_ctx c;
    memset(&c, 0, sizeof c);
    c.cfg = cfg;
    c.id = id;
    c.ds = docstore_new(cfg);
    c.rs = rstate_new(cfg);
    int rc = 1;
    if (!c.ds || !c.rs)
        snprintf(err, errlen, "out of memory");
    else if ((c.cr = ctl_redis_connect(cfg, err, errlen)) != NULL)
        rc = end_upload(&c, reason, json, err, errlen);
    /* Ours only if nothing replaced it: lifecycle_fail_upload marks it
     * ended when the row changed. Releasing by token never touches another's
     * lease, nor the marker. */
    if (c.leased && rstate_lease_release(c.rs, id, c.token) != 0) {
        fprintf(stderr, "chunkctl: releasing the lease of document %" PRIu64 ": %s\n", id,
                rstate_error(c.rs));
        if (rc == 0) {
            snprintf(err, errlen, "the lease of document %" PRIu64 " was not released", id);
            rc = 1;
        }
    }
    ctl_redis_free(c.cr);
    rstate_free(c.rs);
    docstore_free(c.ds);
    return rc;
}
