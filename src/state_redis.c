/* Upload resume state in Redis. Commands are built by hiredis from separate
 * arguments (%s/%b), never by pasting strings together. */
#include "chunkd/state_redis.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "chunkd/log.h"
#include "chunkd/util.h"

struct redis_state {
    const chunkd_config *cfg;
    redisContext *ctx;
    char err[256];
};

redis_state *rstate_new(const chunkd_config *cfg)
{
    redis_state *rs = calloc(1, sizeof *rs);
    if (rs)
        rs->cfg = cfg;
    return rs;
}

static void drop_connection(redis_state *rs)
{
    if (rs->ctx) {
        redisFree(rs->ctx);
        rs->ctx = NULL;
    }
}

void rstate_free(redis_state *rs)
{
    if (!rs)
        return;
    drop_connection(rs);
    free(rs);
}

const char *rstate_error(const redis_state *rs)
{
    return rs->err;
}

static int fail(redis_state *rs, const char *what)
{
    if (rs->ctx && rs->ctx->err) {
        snprintf(rs->err, sizeof rs->err, "redis %s: %s", what, rs->ctx->errstr);
        drop_connection(rs);
    } else {
        snprintf(rs->err, sizeof rs->err, "redis %s failed", what);
    }
    return -1;
}

/* A reply that is NULL (I/O error) or an error reply both mean failure. */
static int reply_ok(redis_state *rs, redisReply *r, const char *what)
{
    if (!r)
        return fail(rs, what);
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(rs->err, sizeof rs->err, "redis %s: %s", what, r->str);
        return -1;
    }
    return 0;
}

static int connect_redis(redis_state *rs)
{
    if (rs->ctx)
        return 0;
    const chunkd_config *cfg = rs->cfg;
    struct timeval tv = {.tv_sec = cfg->backend_timeout_ms / 1000,
                         .tv_usec = (cfg->backend_timeout_ms % 1000) * 1000};
    rs->ctx = redisConnectWithTimeout(cfg->redis_host, (int)cfg->redis_port, tv);
    if (!rs->ctx) {
        snprintf(rs->err, sizeof rs->err, "redis connect: out of memory");
        return -1;
    }
    if (rs->ctx->err)
        return fail(rs, "connect");
    if (redisSetTimeout(rs->ctx, tv) != REDIS_OK)
        return fail(rs, "set timeout");
    if (cfg->redis_password[0]) {
        redisReply *r = redisCommand(rs->ctx, "AUTH %s", cfg->redis_password);
        int rc = reply_ok(rs, r, "AUTH");
        freeReplyObject(r);
        if (rc != 0) {
            drop_connection(rs);
            return -1;
        }
    }
    if (cfg->redis_db != 0) {
        redisReply *r = redisCommand(rs->ctx, "SELECT %lld", (long long)cfg->redis_db);
        int rc = reply_ok(rs, r, "SELECT");
        freeReplyObject(r);
        if (rc != 0) {
            drop_connection(rs);
            return -1;
        }
    }
    return 0;
}

/* A command that could not even be queued (out of memory) leaves the
 * pipeline in an unknown state: start over with a fresh connection. */
static int append_failed(redis_state *rs)
{
    snprintf(rs->err, sizeof rs->err, "redis: could not queue a command");
    drop_connection(rs);
    return -1;
}

static void upload_key(const redis_state *rs, uint64_t document_id, char *out, size_t size)
{
    snprintf(out, size, "%supload:%" PRIu64, rs->cfg->redis_prefix, document_id);
}

/* Sends the queued commands' replies through reply_ok one by one; all
 * replies are read even after a failure so the pipeline stays in step. */
static int collect_replies(redis_state *rs, int n, const char *what, long long *first_int)
{
    int rc = 0;
    for (int i = 0; i < n; i++) {
        void *p = NULL;
        if (redisGetReply(rs->ctx, &p) != REDIS_OK)
            return fail(rs, what); /* connection dropped: nothing more to read */
        redisReply *r = p;
        if (reply_ok(rs, r, what) != 0)
            rc = -1;
        else if (i == 0 && first_int)
            *first_int = r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
        freeReplyObject(r);
    }
    return rc;
}

int rstate_put(redis_state *rs, const upload_state *st)
{
    if (connect_redis(rs) != 0)
        return -1;
    char key[128];
    upload_key(rs, st->document_id, key, sizeof key);
    /* MULTI/EXEC so the hash never exists without its TTL. */
    if (redisAppendCommand(rs->ctx, "MULTI") != REDIS_OK ||
        redisAppendCommand(rs->ctx,
                       "HSET %s user_id %" PRIu64 " filename %s filesize %" PRId64
                       " offset %" PRId64 " declared_sha256 %s path %s node %s"
                       " created_ms %" PRId64 " updated_ms %" PRId64,
                       key, st->user_id, st->filename, st->filesize, st->offset,
                       st->declared_sha256, st->path, st->node, st->created_ms,
                           st->updated_ms) != REDIS_OK ||
        redisAppendCommand(rs->ctx, "EXPIRE %s %lld", key, (long long)rs->cfg->upload_ttl_s) !=
            REDIS_OK ||
        redisAppendCommand(rs->ctx, "EXEC") != REDIS_OK)
        return append_failed(rs);
    return collect_replies(rs, 4, "HSET upload", NULL);
}

int rstate_save_offset(redis_state *rs, const upload_state *st)
{
    if (connect_redis(rs) != 0)
        return -1;
    char key[128];
    upload_key(rs, st->document_id, key, sizeof key);
    if (redisAppendCommand(rs->ctx, "HSET %s offset %" PRId64 " updated_ms %" PRId64 " node %s",
                           key, st->offset, st->updated_ms, st->node) != REDIS_OK ||
        redisAppendCommand(rs->ctx, "EXPIRE %s %lld", key, (long long)rs->cfg->upload_ttl_s) !=
            REDIS_OK)
        return append_failed(rs);
    long long added = 0;
    if (collect_replies(rs, 2, "HSET offset", &added) != 0)
        return -1;
    /* HSET counts fields it created: any at all means the key had gone and
     * now holds only these three, so write the full state back. */
    if (added > 0) {
        log_warn("event=redis_state_rebuilt doc=%" PRIu64 " reason=key_missing",
                 st->document_id);
        return rstate_put(rs, st);
    }
    return 0;
}

static int field_i64(const char *v, int64_t *out)
{
    return util_parse_i64(v, out);
}

static void field_str(const char *v, char *out, size_t size)
{
    snprintf(out, size, "%s", v);
}

int rstate_get(redis_state *rs, uint64_t document_id, upload_state *st, bool *found)
{
    *found = false;
    if (connect_redis(rs) != 0)
        return -1;
    char key[128];
    upload_key(rs, document_id, key, sizeof key);
    redisReply *r = redisCommand(rs->ctx, "HGETALL %s", key);
    if (reply_ok(rs, r, "HGETALL") != 0) {
        freeReplyObject(r);
        return -1;
    }
    int rc = 0;
    if (r->type != REDIS_REPLY_ARRAY) {
        snprintf(rs->err, sizeof rs->err, "redis HGETALL: unexpected reply type %d", r->type);
        rc = -1;
        goto out;
    }
    if (r->elements == 0)
        goto out;
    memset(st, 0, sizeof *st);
    st->document_id = document_id;
    int64_t uid = -1;
    st->offset = -1;
    st->filesize = -1;
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const redisReply *k = r->element[i], *v = r->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        const char *name = k->str, *val = v->str;
        if (strcmp(name, "user_id") == 0)
            field_i64(val, &uid);
        else if (strcmp(name, "offset") == 0)
            field_i64(val, &st->offset);
        else if (strcmp(name, "filesize") == 0)
            field_i64(val, &st->filesize);
        else if (strcmp(name, "created_ms") == 0)
            field_i64(val, &st->created_ms);
        else if (strcmp(name, "updated_ms") == 0)
            field_i64(val, &st->updated_ms);
        else if (strcmp(name, "filename") == 0)
            field_str(val, st->filename, sizeof st->filename);
        else if (strcmp(name, "declared_sha256") == 0)
            field_str(val, st->declared_sha256, sizeof st->declared_sha256);
        else if (strcmp(name, "path") == 0)
            field_str(val, st->path, sizeof st->path);
        else if (strcmp(name, "node") == 0)
            field_str(val, st->node, sizeof st->node);
    }
    /* A hash missing its essentials (hand-edited, half-written) is treated
     * as absent: the caller rebuilds it from MySQL and the file. */
    if (uid > 0 && st->offset >= 0 && st->filesize >= 0) {
        st->user_id = (uint64_t)uid;
        *found = true;
    } else {
        log_warn("event=redis_state_invalid doc=%" PRIu64, document_id);
    }
out:
    freeReplyObject(r);
    return rc;
}

int rstate_del(redis_state *rs, uint64_t document_id)
{
    if (connect_redis(rs) != 0)
        return -1;
    char key[128];
    upload_key(rs, document_id, key, sizeof key);
    redisReply *r = redisCommand(rs->ctx, "DEL %s", key);
    int rc = reply_ok(rs, r, "DEL");
    freeReplyObject(r);
    return rc;
}
