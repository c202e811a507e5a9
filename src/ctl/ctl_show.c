/* Gathers what each store says about one document and prints it with the
 * verdict of ctl_verdict. Read-only: nothing is changed or repaired. */
#include "ctl_show.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "ctl_out.h"
#include "ctl_redis.h"
#include "ctl_verdict.h"

typedef struct show_ctx {
    const chunkd_config *cfg;
    docstore *ds;
    redis_state *rs;
    ctl_redis *cr;
    doc_facts f;
    json_t *fields; /* the Redis hash as stored */
    char path[PATH_MAX];
} show_ctx;

static void stat_file(show_ctx *c)
{
    doc_facts *f = &c->f;
    if (lstat(c->path, &f->sb) == 0) {
        f->file_exists = true;
        return;
    }
    if (errno != ENOENT)
        f->stat_errno = errno;
}

/* Only a completed document promises a hash; an upload's bytes are still
 * arriving. The whole file is hashed, so extra bytes show too. */
static void hash_file(show_ctx *c)
{
    doc_facts *f = &c->f;
    if (!f->row_found || strcmp(f->row.status, "completed") != 0 || !f->file_exists ||
        !S_ISREG(f->sb.st_mode))
        return;
    int fd = open(c->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        f->sha_errno = errno;
        if (fd >= 0)
            close(fd);
        return;
    }
    errno = 0;
    if (storage_sha256(fd, (int64_t)sb.st_size, f->sha256) == 0)
        f->sha_done = true;
    else
        f->sha_errno = errno ? errno : EIO;
    close(fd);
}

static int gather(show_ctx *c, uint64_t id, char *err, size_t errlen)
{
    doc_facts *f = &c->f;
    f->id = id;
    storage_rel_path(id, f->rel_path);
    int n = snprintf(c->path, sizeof c->path, "%s/%s", c->cfg->storage_dir, f->rel_path);
    if (n < 0 || (size_t)n >= sizeof c->path) {
        snprintf(err, errlen, "storage_dir '%s' is too long", c->cfg->storage_dir);
        return -1;
    }
    if (docstore_get_document(c->ds, id, &f->row, &f->row_found) != 0) {
        snprintf(err, errlen, "reading document %" PRIu64 ": %s", id, docstore_error(c->ds));
        return -1;
    }
    if (ctl_redis_upload_fields(c->cr, id, &c->fields, &f->redis_ttl_s, err, errlen) != 0)
        return -1;
    f->redis_key = json_object_size(c->fields) > 0;
    if (f->redis_key && rstate_get(c->rs, id, &f->st, &f->state_found) != 0) {
        snprintf(err, errlen, "reading the state of document %" PRIu64 ": %s", id,
                 rstate_error(c->rs));
        return -1;
    }
    if (ctl_redis_lease(c->cr, id, &f->lease, err, errlen) != 0)
        return -1;
    stat_file(c);
    hash_file(c);
    return 0;
}

/* ---- JSON ------------------------------------------------------------- */

static json_t *row_json(const doc_row *r)
{
    return json_pack("{sIsIsososososososososo}", "user_id", (json_int_t)r->user_id,
                     "filesize", (json_int_t)r->filesize, "filename",
                     out_json_bytes(r->filename, strlen(r->filename)), "status",
                     json_string(r->status), "sha256", out_json_str_or_null(r->sha256),
                     "declared_sha256", out_json_str_or_null(r->declared_sha256), "file_path",
                     out_json_str_or_null(r->file_path), "failure_reason",
                     out_json_str_or_null(r->failure_reason), "created_at",
                     out_json_str_or_null(r->created_at), "updated_at",
                     out_json_str_or_null(r->updated_at), "completed_at",
                     out_json_str_or_null(r->completed_at));
}

static json_t *file_json(const show_ctx *c)
{
    const doc_facts *f = &c->f;
    json_t *o = json_pack("{sosb}", "path", out_json_bytes(c->path, strlen(c->path)),
                          "exists", f->file_exists);
    if (!o || !f->file_exists)
        return o;
    char mode[8], mtime[40];
    snprintf(mode, sizeof mode, "%04o", (unsigned)(f->sb.st_mode & 07777));
    int64_t mtime_ms = (int64_t)f->sb.st_mtim.tv_sec * 1000 + f->sb.st_mtim.tv_nsec / 1000000;
    out_iso_ms(mtime_ms, mtime, sizeof mtime);
    if (out_set(o, "regular", json_boolean(S_ISREG(f->sb.st_mode))) != 0 ||
        out_set(o, "size", json_integer((json_int_t)f->sb.st_size)) != 0 ||
        out_set(o, "mode", json_string(mode)) != 0 ||
        out_set(o, "mtime_ms", json_integer(mtime_ms)) != 0 ||
        out_set(o, "mtime", json_string(mtime)) != 0 ||
        out_set(o, "sha256", f->sha_done ? json_string(f->sha256) : json_null()) != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *show_json(const show_ctx *c, json_t *problems, json_t *notes)
{
    const doc_facts *f = &c->f;
    char ukey[128], lkey[128];
    ctl_redis_upload_key(c->cfg, f->id, ukey, sizeof ukey);
    ctl_redis_lease_key(c->cfg, f->id, lkey, sizeof lkey);
    json_t *redis = json_pack("{sssbsOso}", "key", ukey, "exists", f->redis_key, "fields",
                              c->fields, "ttl_s",
                              f->redis_key ? json_integer(f->redis_ttl_s) : json_null());
    json_t *lease = json_pack("{sssbsbsoso}", "key", lkey, "held", f->lease.held, "ended",
                              f->lease.ended, "holder",
                              f->lease.held ? out_json_str_or_null(f->lease.holder) : json_null(),
                              "node",
                              f->lease.held ? out_json_str_or_null(f->lease.node) : json_null());
    if (lease && (f->lease.held || f->lease.ended) &&
        out_set(lease, "ttl_ms", json_integer(f->lease.ttl_ms)) != 0) {
        json_decref(lease);
        lease = NULL;
    }
    return json_pack("{sIsososososbsOsO}", "document_id", (json_int_t)f->id, "row",
                     f->row_found ? row_json(&f->row) : json_null(), "redis", redis, "lease",
                     lease, "file", file_json(c), "consistent", json_array_size(problems) == 0,
                     "problems", problems, "notes", notes);
}

/* ---- text ------------------------------------------------------------- */

static void text_kv(const char *key, const char *value)
{
    out_printf("  %-16s ", key);
    out_text(value[0] ? value : "-");
    out_printf("\n");
}

static void print_row(const doc_facts *f)
{
    const doc_row *r = &f->row;
    if (!f->row_found) {
        out_printf("row: none\n");
        return;
    }
    char num[32];
    out_printf("row:\n");
    text_kv("status", r->status);
    snprintf(num, sizeof num, "%" PRIu64, r->user_id);
    text_kv("user_id", num);
    text_kv("filename", r->filename);
    snprintf(num, sizeof num, "%" PRId64, r->filesize);
    text_kv("filesize", num);
    text_kv("sha256", r->sha256);
    text_kv("declared_sha256", r->declared_sha256);
    text_kv("file_path", r->file_path);
    text_kv("failure_reason", r->failure_reason);
    text_kv("created_at", r->created_at);
    text_kv("updated_at", r->updated_at);
    text_kv("completed_at", r->completed_at);
}

static void print_redis(const show_ctx *c)
{
    const doc_facts *f = &c->f;
    char key[128];
    ctl_redis_upload_key(c->cfg, f->id, key, sizeof key);
    out_printf("redis ");
    out_text(key);
    if (!f->redis_key) {
        out_printf(": none\n");
        return;
    }
    if (f->redis_ttl_s >= 0)
        out_printf(" (ttl %" PRId64 " s):\n", f->redis_ttl_s);
    else
        out_printf(" (no ttl):\n");
    const char *name;
    json_t *v;
    json_object_foreach(c->fields, name, v)
    {
        text_kv(name, json_string_value(v));
    }
}

static void print_lease(const show_ctx *c)
{
    const doc_facts *f = &c->f;
    char key[128];
    ctl_redis_lease_key(c->cfg, f->id, key, sizeof key);
    out_printf("lease ");
    out_text(key);
    if (f->lease.ended) {
        out_printf(": the upload ended (%" PRId64 " ms left)\n", f->lease.ttl_ms);
        return;
    }
    if (!f->lease.held) {
        out_printf(": none\n");
        return;
    }
    out_printf(": ");
    out_text(f->lease.holder);
    out_printf(" (node ");
    out_text(f->lease.node);
    if (f->lease.ttl_ms >= 0)
        out_printf(", %" PRId64 " ms left)\n", f->lease.ttl_ms);
    else
        out_printf(", no ttl)\n");
}

static void print_file(const show_ctx *c)
{
    const doc_facts *f = &c->f;
    out_printf("file ");
    out_text(c->path);
    if (!f->file_exists) {
        out_printf(": %s\n", f->stat_errno ? strerror(f->stat_errno) : "none");
        return;
    }
    char mtime[40];
    int64_t mtime_ms = (int64_t)f->sb.st_mtim.tv_sec * 1000 + f->sb.st_mtim.tv_nsec / 1000000;
    out_iso_ms(mtime_ms, mtime, sizeof mtime);
    out_printf(":\n  %-16s %lld\n  %-16s %04o%s\n  %-16s %s\n", "size", (long long)f->sb.st_size,
               "mode", (unsigned)(f->sb.st_mode & 07777),
               S_ISREG(f->sb.st_mode) ? "" : " (not a regular file)", "mtime", mtime);
    if (f->sha_done)
        out_printf("  %-16s %s\n", "sha256", f->sha256);
}

static void print_text(const show_ctx *c, json_t *problems, json_t *notes)
{
    out_printf("document %" PRIu64 "\n", c->f.id);
    print_row(&c->f);
    print_redis(c);
    print_lease(c);
    print_file(c);
    size_t i;
    json_t *v;
    json_array_foreach(notes, i, v)
    {
        out_printf("note: ");
        out_text(json_string_value(v));
        out_printf("\n");
    }
    if (json_array_size(problems) == 0) {
        out_printf("verdict: consistent\n");
        return;
    }
    out_printf("verdict: inconsistent:");
    json_array_foreach(problems, i, v)
    {
        out_printf("%s ", i ? ";" : "");
        out_text(json_string_value(v));
    }
    out_printf("\n");
}

/* ---- command ---------------------------------------------------------- */

static int report(show_ctx *c, bool json, char *err, size_t errlen)
{
    const doc_facts *f = &c->f;
    if (!f->row_found && !f->redis_key && !f->lease.held && !f->file_exists &&
        !f->stat_errno) {
        snprintf(err, errlen, "no document with id %" PRIu64, f->id);
        return 1;
    }
    json_t *problems = json_array(), *notes = json_array();
    int rc = 1;
    if (!problems || !notes || verdict_check(f, problems, notes) != 0) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (json) {
        if (out_json(show_json(c, problems, notes), err, errlen) != 0)
            goto out;
    } else {
        print_text(c, problems, notes);
        if (out_finish(err, errlen) != 0)
            goto out;
    }
    rc = json_array_size(problems) == 0 ? 0 : 1;
    if (rc != 0)
        snprintf(err, errlen, "document %" PRIu64 " is inconsistent (%zu problem%s)", f->id,
                 json_array_size(problems), json_array_size(problems) == 1 ? "" : "s");
out:
    json_decref(problems);
    json_decref(notes);
    return rc;
}

int ctl_show(const chunkd_config *cfg, uint64_t id, bool json, char *err, size_t errlen)
{
    show_ctx c;
    memset(&c, 0, sizeof c);
    c.cfg = cfg;
    c.ds = docstore_new(cfg);
    c.rs = rstate_new(cfg);
    int rc = 1;
    if (!c.ds || !c.rs) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    c.cr = ctl_redis_connect(cfg, err, errlen);
    if (!c.cr || gather(&c, id, err, errlen) != 0)
        goto out;
    rc = report(&c, json, err, errlen);
out:
    json_decref(c.fields);
    ctl_redis_free(c.cr);
    rstate_free(c.rs);
    docstore_free(c.ds);
    return rc;
}
