/* Read-only Redis probes. Commands are built by hiredis from separate
 * arguments; the keys come from the configured prefix and a parsed id. */
#include "ctl_redis.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "chunkd/state_redis.h"
#include "ctl_out.h"

struct ctl_redis {
    const chunkd_config *cfg;
    redisContext *ctx;
};

void ctl_redis_upload_key(const chunkd_config *cfg, uint64_t doc, char *out, size_t size)
{
    snprintf(out, size, "%supload:%" PRIu64, cfg->redis_prefix, doc);
}

void ctl_redis_lease_key(const chunkd_config *cfg, uint64_t doc, char *out, size_t size)
{
    snprintf(out, size, "%slease:%" PRIu64, cfg->redis_prefix, doc);
}

/* A reply that is NULL (I/O error) or an error reply both mean failure;
 * the reason goes to err. Frees nothing. */
static int reply_ok(const ctl_redis *r, const redisReply *rep, const char *what, char *err,
                    size_t errlen)
{
    if (!rep) {
        snprintf(err, errlen, "Redis %s: %s", what,
                 r->ctx->err ? r->ctx->errstr : "no reply");
        return -1;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "Redis %s: %s", what, rep->str);
        return -1;
    }
    return 0;
}

/* Runs an AUTH or SELECT during connect. */
static int setup_command(ctl_redis *r, const char *what, char *err, size_t errlen,
                         redisReply *rep)
{
    int rc = reply_ok(r, rep, what, err, errlen);
    freeReplyObject(rep);
    return rc;
}

ctl_redis *ctl_redis_connect(const chunkd_config *cfg, char *err, size_t errlen)
{
    ctl_redis *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "Redis: out of memory");
        return NULL;
    }
    r->cfg = cfg;
    struct timeval tv = {.tv_sec = (time_t)(cfg->backend_timeout_ms / 1000),
                         .tv_usec = (suseconds_t)(cfg->backend_timeout_ms % 1000 * 1000)};
    r->ctx = redisConnectWithTimeout(cfg->redis_host, (int)cfg->redis_port, tv);
    if (!r->ctx) {
        snprintf(err, errlen, "Redis connect: out of memory");
        free(r);
        return NULL;
    }
    if (r->ctx->err) {
        snprintf(err, errlen, "Redis connect to %s:%lld: %s", cfg->redis_host,
                 (long long)cfg->redis_port, r->ctx->errstr);
        goto fail;
    }
    if (redisSetTimeout(r->ctx, tv) != REDIS_OK) {
        snprintf(err, errlen, "Redis set timeout: %s", r->ctx->errstr);
        goto fail;
    }
    if (cfg->redis_password[0] &&
        setup_command(r, "AUTH", err, errlen,
                      redisCommand(r->ctx, "AUTH %s", cfg->redis_password)) != 0)
        goto fail;
    if (cfg->redis_db != 0 &&
        setup_command(r, "SELECT", err, errlen,
                      redisCommand(r->ctx, "SELECT %lld", (long long)cfg->redis_db)) != 0)
        goto fail;
    return r;
fail:
    ctl_redis_free(r);
    return NULL;
}

void ctl_redis_free(ctl_redis *r)
{
    if (!r)
        return;
    if (r->ctx)
        redisFree(r->ctx);
    free(r);
}

/* Runs a command with one key argument that answers with an integer. */
static int key_int(ctl_redis *r, const char *cmd, const char *key, long long *out, char *err,
                   size_t errlen)
{
    redisReply *rep = redisCommand(r->ctx, "%s %s", cmd, key);
    int rc = reply_ok(r, rep, cmd, err, errlen);
    if (rc == 0 && rep->type != REDIS_REPLY_INTEGER) {
        snprintf(err, errlen, "Redis %s: unexpected reply type %d", cmd, rep->type);
        rc = -1;
    }
    if (rc == 0)
        *out = rep->integer;
    freeReplyObject(rep);
    return rc;
}

int ctl_redis_set_upload_path(ctl_redis *r, uint64_t doc, const char *path, bool *set,
                              char *err, size_t errlen)
{
    *set = false;
    char key[128];
    ctl_redis_upload_key(r->cfg, doc, key, sizeof key);
    /* Only into a hash that is still there: one that expired since it was
     * read must not come back as a lone `path` field without a TTL. */
    static const char script[] =
        "if redis.call('EXISTS', KEYS[1]) == 1 then "
        "redis.call('HSET', KEYS[1], 'path', ARGV[1]) return 1 end return 0";
    redisReply *rep = redisCommand(r->ctx, "EVAL %s 1 %s %s", script, key, path);
    int rc = reply_ok(r, rep, "HSET path", err, errlen);
    if (rc == 0 && rep->type != REDIS_REPLY_INTEGER) {
        snprintf(err, errlen, "Redis HSET path: unexpected reply type %d", rep->type);
        rc = -1;
    }
    if (rc == 0)
        *set = rep->integer == 1;
    freeReplyObject(rep);
    return rc;
}

int ctl_redis_lease(ctl_redis *r, uint64_t doc, ctl_lease *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    char key[128];
    ctl_redis_lease_key(r->cfg, doc, key, sizeof key);
    redisReply *rep = redisCommand(r->ctx, "GET %s", key);
    if (reply_ok(r, rep, "GET lease", err, errlen) != 0) {
        freeReplyObject(rep);
        return -1;
    }
    int rc = 0;
    if (rep->type == REDIS_REPLY_STRING && strcmp(rep->str, RSTATE_LEASE_ENDED) == 0) {
        out->ended = true;
    } else if (rep->type == REDIS_REPLY_STRING) {
        out->held = true;
        snprintf(out->holder, sizeof out->holder, "%s", rep->str);
        snprintf(out->node, sizeof out->node, "%s", rep->str);
        char *slash = strrchr(out->node, '/');
        if (slash)
            *slash = '\0';
    } else if (rep->type != REDIS_REPLY_NIL) {
        snprintf(err, errlen, "Redis GET lease: unexpected reply type %d", rep->type);
        rc = -1;
    }
    freeReplyObject(rep);
    if (rc != 0 || (!out->held && !out->ended))
        return rc;
    long long pttl = 0;
    if (key_int(r, "PTTL", key, &pttl, err, errlen) != 0)
        return -1;
    if (pttl == -2) /* lapsed between the two commands */
        memset(out, 0, sizeof *out);
    else
        out->ttl_ms = pttl;
    return 0;
}

int ctl_redis_upload_fields(ctl_redis *r, uint64_t doc, json_t **fields, int64_t *ttl_s,
                            char *err, size_t errlen)
{
    *fields = NULL;
    char key[128];
    ctl_redis_upload_key(r->cfg, doc, key, sizeof key);
    redisReply *rep = redisCommand(r->ctx, "HGETALL %s", key);
    if (reply_ok(r, rep, "HGETALL", err, errlen) != 0) {
        freeReplyObject(rep);
        return -1;
    }
    int rc = -1;
    json_t *obj = json_object();
    if (!obj) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements % 2 != 0) {
        snprintf(err, errlen, "Redis HGETALL %s: unexpected reply type %d", key, rep->type);
        goto out;
    }
    for (size_t i = 0; i < rep->elements; i += 2) {
        const redisReply *k = rep->element[i], *v = rep->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
            snprintf(err, errlen, "Redis HGETALL %s: a field is not a string", key);
            goto out;
        }
        /* Field names are the server's own ASCII words; a hand-made one
         * that is not UTF-8 is shown escaped like any value. */
        json_t *name = out_json_bytes(k->str, k->len);
        json_t *val = out_json_bytes(v->str, v->len);
        int set = name && val ? json_object_set(obj, json_string_value(name), val) : -1;
        json_decref(name);
        json_decref(val);
        if (set != 0) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
    }
    long long ttl = -2;
    if (key_int(r, "TTL", key, &ttl, err, errlen) != 0)
        goto out;
    *ttl_s = ttl;
    *fields = obj;
    obj = NULL;
    rc = 0;
out:
    json_decref(obj);
    freeReplyObject(rep);
    return rc;
}
