/* Upload resume state in Redis. Commands are built by hiredis from separate
 * arguments (%s/%b), never by pasting strings together. */
#include "chunkd/state_redis.h"

#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
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
    metrics *m;           /* may be NULL */
    char err[256];
};

void rstate_set_metrics(redis_state *rs, metrics *m)
{
    rs->m = m;
}

/* One round trip, timed. */
static redisReply *command(redis_state *rs, const char *fmt, ...)
{
    int64_t t0 = metrics_now_us();
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(rs->ctx, fmt, ap);
    va_end(ap);
    metrics_observe_us(rs->m, H_REDIS, metrics_now_us() - t0);
    return r;
}

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
    metrics_add(rs->m, M_REDIS_ERRORS, 1);
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
        metrics_add(rs->m, M_REDIS_ERRORS, 1);
        snprintf(rs->err, sizeof rs->err, "redis %s: %s", what, r->str);
        return -1;
    }
    return 0;
}

/* Between commands Redis sends nothing: a readable socket means it closed
 * the connection (restart, timeout), so reconnect before sending rather
 * than fail the request. */
static bool closed_by_server(const redisContext *ctx)
{
    struct pollfd pfd = {.fd = ctx->fd, .events = POLLIN | POLLRDHUP};
    return poll(&pfd, 1, 0) > 0 && pfd.revents != 0;
}

static int connect_redis(redis_state *rs)
{
    if (rs->ctx && closed_by_server(rs->ctx)) {
        log_info("event=redis_reconnect reason=\"connection closed by the server\"");
        drop_connection(rs);
    }
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

static void upload_key(const chunkd_config *cfg, uint64_t document_id, char *out, size_t size)
{
    snprintf(out, size, "%supload:%" PRIu64, cfg->redis_prefix, document_id);
}

static void lease_key(const chunkd_config *cfg, uint64_t document_id, char *out, size_t size)
{
    snprintf(out, size, "%slease:%" PRIu64, cfg->redis_prefix, document_id);
}

/* Sends the queued commands' replies through reply_ok one by one; all
 * replies are read even after a failure so the pipeline stays in step. */
static int collect_replies(redis_state *rs, int n, const char *what, long long *first_int)
{
    int64_t t0 = metrics_now_us();
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
    metrics_observe_us(rs->m, H_REDIS, metrics_now_us() - t0);
    return rc;
}

/* The upload hash's fields and their values, as argv pairs, with the
 * numbers formatted into the struct: what append_put's HSET and open_lua
 * write. */
enum { STATE_ARGC = 24 };
typedef struct state_args {
    const char *argv[STATE_ARGC];
    char num[6][24];
} state_args;

static void state_args_fill(state_args *a, const upload_state *st)
{
    snprintf(a->num[0], sizeof a->num[0], "%" PRIu64, st->user_id);
    snprintf(a->num[1], sizeof a->num[1], "%" PRId64, st->filesize);
    snprintf(a->num[2], sizeof a->num[2], "%" PRId64, st->offset);
    snprintf(a->num[3], sizeof a->num[3], "%" PRId64, st->synced_offset);
    snprintf(a->num[4], sizeof a->num[4], "%" PRId64, st->created_ms);
    snprintf(a->num[5], sizeof a->num[5], "%" PRId64, st->updated_ms);
    const char *const argv[STATE_ARGC] = {
        "user_id", a->num[0], "filename", st->filename, "filesize", a->num[1],
        "offset", a->num[2], "synced_offset", a->num[3], "declared_sha256", st->declared_sha256,
        "path", st->path, "node", st->node, "boot_id", st->boot_id,
        "writer", st->writer, "created_ms", a->num[4], "updated_ms", a->num[5]};
    memcpy(a->argv, argv, sizeof argv);
}

/* KEYS: lease, upload hash. ARGV: token, key ttl s, then the hash's fields
 * and values. Writes the state (with its TTL, in one step) only while the
 * token holds the lease: a writer busy with an upload that was ended
 * meanwhile (abort, the expiry sweep, chunkctl: rstate_end marks the lease
 * ended and deletes the state) must not bring the state back. Returns 1
 * when written, 0 when the lease is not the token's. */
static const char put_lua[] =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end "
    "redis.call('HSET', KEYS[2], unpack(ARGV, 3)) "
    "redis.call('EXPIRE', KEYS[2], ARGV[2]) "
    "return 1";

int rstate_put(redis_state *rs, const upload_state *st, const char *lease, bool *lease_lost)
{
    *lease_lost = false;
    if (connect_redis(rs) != 0)
        return -1;
    char lkey[128], key[128], ttl[24];
    lease_key(rs->cfg, st->document_id, lkey, sizeof lkey);
    upload_key(rs->cfg, st->document_id, key, sizeof key);
    snprintf(ttl, sizeof ttl, "%lld", (long long)rs->cfg->upload_ttl_s);
    state_args a;
    state_args_fill(&a, st);
    enum { FIXED = 7 };
    const char *argv[FIXED + STATE_ARGC] = {"EVAL", put_lua, "2", lkey, key, lease, ttl};
    memcpy(argv + FIXED, a.argv, sizeof a.argv);
    if (redisAppendCommandArgv(rs->ctx, FIXED + STATE_ARGC, argv, NULL) != REDIS_OK)
        return append_failed(rs);
    long long v = 0;
    if (collect_replies(rs, 1, "put upload", &v) != 0)
        return -1;
    *lease_lost = v != 1;
    return 0;
}

/* KEYS: upload hash, lease. ARGV: token, lease ms, offset, updated_ms, node,
 * key ttl s, synced offset. Returns -1 when the lease is not ours, 1 when
 * the hash had vanished (nothing written: the caller writes the whole
 * state, rstate_put, so no hash of four fields is ever left), else 0. */
static const char save_offset_lua[] =
    "if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end "
    "redis.call('PEXPIRE', KEYS[2], ARGV[2]) "
    "if redis.call('EXISTS', KEYS[1]) == 0 then return 1 end "
    "redis.call('HSET', KEYS[1], 'offset', ARGV[3], 'updated_ms', ARGV[4], "
    "'node', ARGV[5], 'synced_offset', ARGV[7]) "
    "redis.call('EXPIRE', KEYS[1], ARGV[6]) "
    "return 0";

/* KEYS: lease, upload hash. ARGV: token. A clean release also clears the
 * hash's `writer`, which tells the next resume that nobody may still be
 * writing (see handle_resume). */
static const char release_lua[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "  if redis.call('HGET', KEYS[2], 'writer') == ARGV[1] then "
    "    redis.call('HSET', KEYS[2], 'writer', '') end "
    "  return redis.call('DEL', KEYS[1]) end "
    "return 0";

/* Lua that takes the lease KEYS[1] for token ARGV[1] for ARGV[2] ms, or
 * renews it when the token holds it already: `ours` is true when it is the
 * token's now. Shared by acquire_lua and open_lua. */
#define TAKE_LEASE_LUA                                                                 \
    "local fresh = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) ~= false " \
    "local ours = fresh "                                                              \
    "if not ours and redis.call('GET', KEYS[1]) == ARGV[1] then "                      \
    "  redis.call('PEXPIRE', KEYS[1], ARGV[2]) ours = true end "

/* KEYS: lease. ARGV: token, lease ms, the ended marker. Returns 2 when the
 * lease was free and is ours now, 1 when the token held it already (now
 * renewed), 0 when the upload has ended (rstate_end), else the holder's
 * remaining time in ms (negated, at most -1). */
static const char acquire_lua[] =
    TAKE_LEASE_LUA "if fresh then return 2 end if ours then return 1 end "
    "if redis.call('GET', KEYS[1]) == ARGV[3] then return 0 end "
    "local t = redis.call('PTTL', KEYS[1]) if t < 1 then t = 1 end return -t";

/* One reservation table per storage volume, named after storage_dir: the
 * instances that share a volume mount it at the same path. */
static void reserved_key(const chunkd_config *cfg, char *out, size_t size)
{
    uint64_t h = 14695981039346656037u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)cfg->storage_dir; *p; p++)
        h = (h ^ *p) * 1099511628211u;
    snprintf(out, size, "%sreserved:%016" PRIx64, cfg->redis_prefix, h);
}


/* The first arguments of an EVAL of script whose one key is the reserved
 * hash; returns how many. */
static size_t eval_on_reserved(const char **argv, const char *script, const char *rkey)
{
    argv[0] = "EVAL";
    argv[1] = script;
    argv[2] = "1";
    argv[3] = rkey;
    return 4;
}

/* Runs a script that returns an integer. */
static int eval_int(redis_state *rs, const char *what, long long *out, const char *fmt, ...)
{
    if (connect_redis(rs) != 0)
        return -1;
    int64_t t0 = metrics_now_us();
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(rs->ctx, fmt, ap);
    va_end(ap);
    metrics_observe_us(rs->m, H_REDIS, metrics_now_us() - t0);
    int rc = reply_ok(rs, r, what);
    if (rc == 0 && r->type != REDIS_REPLY_INTEGER) {
        snprintf(rs->err, sizeof rs->err, "redis %s: unexpected reply type %d", what, r->type);
        rc = -1;
    }
    if (rc == 0)
        *out = r->integer;
    freeReplyObject(r);
    return rc;
}

int rstate_format_save_offset(const chunkd_config *cfg, const upload_state *st,
                              const char *lease, char **cmd)
{
    char key[128], lkey[128];
    upload_key(cfg, st->document_id, key, sizeof key);
    lease_key(cfg, st->document_id, lkey, sizeof lkey);
    return redisFormatCommand(cmd, "EVAL %s 2 %s %s %s %lld %" PRId64 " %" PRId64 " %s %lld %" PRId64,
                              save_offset_lua, key, lkey, lease, (long long)cfg->lease_ttl_ms,
                              st->offset, st->updated_ms, st->node, (long long)cfg->upload_ttl_s,
                              st->synced_offset);
}

rstate_saved rstate_save_offset_result(long long reply)
{
    return reply < 0 ? RSTATE_SAVE_LEASE_LOST : reply > 0 ? RSTATE_SAVE_KEY_MISSING : RSTATE_SAVED;
}

/* Sends one command formatted by an rstate_format_ function (len < 0: it
 * failed) and reads its reply; frees cmd. */
static int run_formatted(redis_state *rs, char *cmd, int len, const char *what,
                         long long *first_int)
{
    if (len < 0)
        return append_failed(rs);
    int queued = redisAppendFormattedCommand(rs->ctx, cmd, (size_t)len);
    free(cmd);
    if (queued != REDIS_OK)
        return append_failed(rs);
    return collect_replies(rs, 1, what, first_int);
}

int rstate_save_offset(redis_state *rs, const upload_state *st, const char *lease,
                       bool *lease_lost)
{
    *lease_lost = false;
    if (connect_redis(rs) != 0)
        return -1;
    char *cmd = NULL;
    int len = rstate_format_save_offset(rs->cfg, st, lease, &cmd);
    long long v = 0;
    if (run_formatted(rs, cmd, len, "save offset", &v) != 0)
        return -1;
    switch (rstate_save_offset_result(v)) {
    case RSTATE_SAVE_LEASE_LOST:
        *lease_lost = true;
        return 0;
    case RSTATE_SAVE_KEY_MISSING:
        log_warn("event=redis_state_rebuilt doc=%" PRIu64 " reason=key_missing",
                 st->document_id);
        return rstate_put(rs, st, lease, lease_lost);
    case RSTATE_SAVED:
        break;
    }
    return 0;
}

/* Runs acquire_lua for token; its reply in *v. */
static int run_acquire(redis_state *rs, uint64_t document_id, const char *token, long long *v)
{
    char lkey[128];
    lease_key(rs->cfg, document_id, lkey, sizeof lkey);
    return eval_int(rs, "lease acquire", v, "EVAL %s 1 %s %s %lld %s", acquire_lua, lkey, token,
                    (long long)rs->cfg->lease_ttl_ms, RSTATE_LEASE_ENDED);
}

int rstate_lease_acquire(redis_state *rs, uint64_t document_id, const char *token,
                         bool *acquired, int64_t *retry_after_ms)
{
    long long v = 0;
    if (run_acquire(rs, document_id, token, &v) != 0)
        return -1;
    *acquired = v >= 1;
    /* Capped: a live holder may let go any moment (its connection closing
     * releases the lease), so waiting out the whole TTL would be too long. */
    *retry_after_ms = v < 0 ? (-v < 2000 ? -v : 2000) : 0;
    return 0;
}

int rstate_lease_keep(redis_state *rs, uint64_t document_id, const char *token,
                      rstate_lease_kept *kept)
{
    long long v = 0;
    if (run_acquire(rs, document_id, token, &v) != 0)
        return -1;
    *kept = v == 1 ? RSTATE_LEASE_RENEWED : v == 2 ? RSTATE_LEASE_RETAKEN : RSTATE_LEASE_GONE;
    return 0;
}

/* KEYS: lease, upload hash. ARGV: token, lease ms. */
static const char confirm_lua[] =
    "local holder = redis.call('GET', KEYS[1]) "
    "if holder == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end "
    "if holder then return 0 end "
    "if redis.call('HGET', KEYS[2], 'writer') ~= ARGV[1] then return 0 end "
    "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1";

/* KEYS: lease, upload hash. ARGV: token, new token, lease ms. The lease,
 * and the hash's `writer` with it, pass from one token to the other if
 * the first holds it. */
static const char transfer_lua[] =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end "
    "redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) "
    "if redis.call('HGET', KEYS[2], 'writer') == ARGV[1] then "
    "  redis.call('HSET', KEYS[2], 'writer', ARGV[2]) end "
    "return 1";

int rstate_lease_transfer(redis_state *rs, uint64_t document_id, const char *token,
                          const char *new_token, bool *moved)
{
    char lkey[128], key[128];
    lease_key(rs->cfg, document_id, lkey, sizeof lkey);
    upload_key(rs->cfg, document_id, key, sizeof key);
    long long v = 0;
    *moved = false;
    if (eval_int(rs, "lease transfer", &v, "EVAL %s 2 %s %s %s %s %lld", transfer_lua, lkey, key,
                 token, new_token, (long long)rs->cfg->lease_ttl_ms) != 0)
        return -1;
    *moved = v == 1;
    return 0;
}

int rstate_lease_release(redis_state *rs, uint64_t document_id, const char *token)
{
    char lkey[128], key[128];
    lease_key(rs->cfg, document_id, lkey, sizeof lkey);
    upload_key(rs->cfg, document_id, key, sizeof key);
    long long v = 0;
    return eval_int(rs, "lease release", &v, "EVAL %s 2 %s %s %s", release_lua, lkey, key, token);
}

/* KEYS: lease, upload hash, reserved hash. ARGV: the ended marker, its
 * ms, document id. The DEL first: Redis refuses a script whose first write
 * is a SET when it is out of memory, and then nothing would be ended; the
 * HDEL last, as the one step a clobbered reserved key can fail. */
static const char end_lua[] =
    "redis.call('DEL', KEYS[2]) "
    "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) "
    "redis.call('HDEL', KEYS[3], ARGV[3]) "
    "return 1";

int rstate_end(redis_state *rs, uint64_t document_id)
{
    char lkey[128], key[128], rkey[128], doc[24];
    lease_key(rs->cfg, document_id, lkey, sizeof lkey);
    upload_key(rs->cfg, document_id, key, sizeof key);
    reserved_key(rs->cfg, rkey, sizeof rkey);
    snprintf(doc, sizeof doc, "%" PRIu64, document_id);
    long long ms = rs->cfg->lease_ttl_ms > RSTATE_LEASE_ENDED_MS ? rs->cfg->lease_ttl_ms
                                                                 : RSTATE_LEASE_ENDED_MS;
    long long v = 0;
    return eval_int(rs, "end upload", &v, "EVAL %s 3 %s %s %s %s %lld %s", end_lua, lkey, key,
                    rkey, RSTATE_LEASE_ENDED, ms, doc);
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
    upload_key(rs->cfg, document_id, key, sizeof key);
    redisReply *r = command(rs, "HGETALL %s", key);
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
        else if (strcmp(name, "synced_offset") == 0)
            field_i64(val, &st->synced_offset);
        else if (strcmp(name, "boot_id") == 0)
            field_str(val, st->boot_id, sizeof st->boot_id);
        else if (strcmp(name, "writer") == 0)
            field_str(val, st->writer, sizeof st->writer);
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

int rstate_get_offset(redis_state *rs, uint64_t document_id, int64_t *offset, bool *found)
{
    *found = false;
    if (connect_redis(rs) != 0)
        return -1;
    char key[128];
    upload_key(rs->cfg, document_id, key, sizeof key);
    redisReply *r = command(rs, "HGET %s offset", key);
    if (reply_ok(rs, r, "HGET offset") != 0) {
        freeReplyObject(r);
        return -1;
    }
    if (r->type == REDIS_REPLY_STRING && util_parse_i64(r->str, offset) == 0 && *offset >= 0)
        *found = true;
    freeReplyObject(r);
    return 0;
}

int rstate_del(redis_state *rs, uint64_t document_id)
{
    if (connect_redis(rs) != 0)
        return -1;
    char key[128], rkey[128];
    upload_key(rs->cfg, document_id, key, sizeof key);
    reserved_key(rs->cfg, rkey, sizeof rkey);
    /* The upload's space reservation goes with its state. */
    if (redisAppendCommand(rs->ctx, "DEL %s", key) != REDIS_OK ||
        redisAppendCommand(rs->ctx, "HDEL %s %" PRIu64, rkey, document_id) != REDIS_OK)
        return append_failed(rs);
    return collect_replies(rs, 2, "DEL upload", NULL);
}

/* KEYS: reserved hash. ARGV: upload key prefix, bytes available, now ms,
 * grace ms, then a doc id and its filesize for each upload to admit. Each
 * document-id field of the hash is an upload in flight, "filesize:created_ms";
 * what it still needs is its filesize minus its saved offset.
 *
 * The hash's `total` field bounds what all its uploads still need: every
 * reservation's filesize is added when it is made and only a count (below)
 * brings the bound back down, so it can only be too high. While the group fits
 * under it, the group is reserved without reading a single upload's state:
 * admission stays one read and a few writes however many uploads are in
 * flight, where counting reads every one of them (with 5,000 in flight,
 * 13 ms of Redis's only thread for each group admitted; docs/PERFORMANCE.md).
 *
 * Otherwise, near a full volume or when the bound is missing, the uploads in
 * flight are counted: fields whose upload key is gone are dropped unless
 * younger than the grace (their state is being written right now), and the
 * bound is set to the filesizes left. Then each new upload, in order, is
 * reserved if it fits next to them and the group's uploads admitted before
 * it; one that does not fit keeps no reservation.
 *
 * Returns, for each, the bytes promised to others (at most), negated minus one
 * when it does not fit. */
static const char reserve_lua[] =
    "local avail = tonumber(ARGV[2]) "
    "local need = 0 "
    "for j = 5, #ARGV, 2 do need = need + tonumber(ARGV[j + 1]) end "
    "local out = {} "
    "local bound = tonumber(redis.call('HGET', KEYS[1], 'total')) "
    "if bound and bound >= 0 and bound + need <= avail then "
    "  for j = 5, #ARGV, 2 do "
    "    redis.call('HSET', KEYS[1], ARGV[j], ARGV[j + 1] .. ':' .. ARGV[3]) "
    "    out[#out + 1] = bound "
    "    bound = bound + tonumber(ARGV[j + 1]) "
    "  end "
    "  redis.call('HSET', KEYS[1], 'total', string.format('%.0f', bound)) "
    "  return out "
    "end "
    "local new = {} "
    "for j = 5, #ARGV, 2 do new[ARGV[j]] = true end "
    "local all = redis.call('HGETALL', KEYS[1]) "
    "local promised, kept = 0, 0 "
    "local now = tonumber(ARGV[3]) "
    "for i = 1, #all, 2 do "
    "  local doc = all[i] "
    "  if doc ~= 'total' and not new[doc] then "
    "    local size, created = string.match(all[i + 1], '^(%d+):(%d+)$') "
    "    size = tonumber(size) or 0 created = tonumber(created) or 0 "
    "    local off = redis.call('HGET', ARGV[1] .. doc, 'offset') "
    "    if off then "
    "      local left = size - tonumber(off) "
    "      if left > 0 then promised = promised + left end "
    "      kept = kept + size "
    "    elseif now - created > tonumber(ARGV[4]) then "
    "      redis.call('HDEL', KEYS[1], doc) "
    "    else "
    "      promised = promised + size "
    "      kept = kept + size "
    "    end "
    "  end "
    "end "
    "for j = 5, #ARGV, 2 do "
    "  local size = tonumber(ARGV[j + 1]) "
    "  if promised + size > avail then "
    "    redis.call('HDEL', KEYS[1], ARGV[j]) "
    "    out[#out + 1] = -promised - 1 "
    "  else "
    "    redis.call('HSET', KEYS[1], ARGV[j], ARGV[j + 1] .. ':' .. ARGV[3]) "
    "    out[#out + 1] = promised "
    "    promised = promised + size "
    "    kept = kept + size "
    "  end "
    "end "
    "redis.call('HSET', KEYS[1], 'total', string.format('%.0f', kept)) "
    "return out";

/* A reservation whose upload key is not there yet is kept this long: its
 * state is being written right now. */
#define RESERVE_GRACE_MS 60000

/* ---- pipelines: one round trip for the commands of many uploads ---- */

/* The next reply of a pipeline; NULL when the connection failed (nothing
 * more can be read then). */
static redisReply *next_reply(redis_state *rs, const char *what)
{
    void *p = NULL;
    if (redisGetReply(rs->ctx, &p) != REDIS_OK) {
        fail(rs, what);
        return NULL;
    }
    return p;
}

/* Reads the replies of n items of k commands each (one pipeline): v[i] is
 * the item's first reply as an integer (0 when it is not one), ok[i]
 * whether all its replies were good (an EXEC answered nil means its
 * transaction was aborted). -1 when the connection failed:
 * nothing more can be read then. */
static int read_replies(redis_state *rs, size_t n, int k, const char *what, long long *v,
                        bool *ok)
{
    for (size_t i = 0; i < n; i++) {
        ok[i] = true;
        v[i] = 0;
        for (int j = 0; j < k; j++) {
            redisReply *r = next_reply(rs, what);
            if (!r)
                return -1;
            if (reply_ok(rs, r, what) != 0)
                ok[i] = false;
            else if (j == 0 && r->type == REDIS_REPLY_INTEGER)
                v[i] = r->integer;
            else if (j == k - 1 && r->type == REDIS_REPLY_NIL)
                ok[i] = false;
            freeReplyObject(r);
        }
    }
    return 0;
}

static int read_items(redis_state *rs, size_t n, int k, const char *what, long long *v,
                      bool *ok)
{
    int64_t t0 = metrics_now_us();
    int rc = read_replies(rs, n, k, what, v, ok);
    metrics_observe_us(rs->m, H_REDIS, metrics_now_us() - t0);
    return rc;
}

/* The _many calls take at most RSTATE_MANY_MAX items. */
static int too_many(redis_state *rs, size_t n)
{
    if (n <= RSTATE_MANY_MAX)
        return 0;
    snprintf(rs->err, sizeof rs->err, "redis: %zu items in one pipeline, at most %d", n,
             RSTATE_MANY_MAX);
    return -1;
}

/* KEYS: lease, upload hash, reserved hash. ARGV: token, lease ms, key ttl
 * s, the document id whose reservation must be there ("": none needed),
 * then the hash's fields and values. Returns 2 when the reservation is not
 * there (admission refused it: nothing written), 1 when the lease is ours
 * and the state written, 0 when someone else holds the lease: then nothing
 * is written and the reservation is let go, since a lease on a document
 * this instance has just created means it is being ended (chunkctl) or has
 * ended (the marker, rstate_end), and its state must not outlive that (see
 * put_lua). */
static const char open_lua[] =
    "if ARGV[4] ~= '' and redis.call('HEXISTS', KEYS[3], ARGV[4]) == 0 then return 2 end "
    TAKE_LEASE_LUA
    "if not ours then "
    "  if ARGV[4] ~= '' then redis.call('HDEL', KEYS[3], ARGV[4]) end "
    "  return 0 "
    "end "
    "redis.call('HSET', KEYS[2], unpack(ARGV, 5)) "
    "redis.call('EXPIRE', KEYS[2], ARGV[3]) "
    "return 1";

/* Queues the reserve script for the n uploads (see rstate_admit_open_many). */
static int append_reserve(redis_state *rs, size_t n, const upload_state *sts, int64_t available,
                          const char *rkey)
{
    enum { FIXED = 8 };
    char prefix[96], nums[3 + 2 * RSTATE_MANY_MAX][24];
    const char *argv[FIXED + 2 * RSTATE_MANY_MAX];
    snprintf(prefix, sizeof prefix, "%supload:", rs->cfg->redis_prefix);
    snprintf(nums[0], sizeof nums[0], "%" PRId64, available);
    snprintf(nums[1], sizeof nums[1], "%" PRId64, util_wall_ms());
    snprintf(nums[2], sizeof nums[2], "%d", RESERVE_GRACE_MS);
    size_t argc = eval_on_reserved(argv, reserve_lua, rkey);
    argv[argc++] = prefix;
    argv[argc++] = nums[0];
    argv[argc++] = nums[1];
    argv[argc++] = nums[2];
    for (size_t i = 0; i < n; i++) {
        snprintf(nums[3 + 2 * i], sizeof nums[0], "%" PRIu64, sts[i].document_id);
        snprintf(nums[4 + 2 * i], sizeof nums[0], "%" PRId64, sts[i].filesize);
        argv[argc++] = nums[3 + 2 * i];
        argv[argc++] = nums[4 + 2 * i];
    }
    if (redisAppendCommandArgv(rs->ctx, (int)argc, argv, NULL) != REDIS_OK)
        return append_failed(rs);
    return 0;
}

/* Queues the open script of one upload (open_lua). */
static int append_open(redis_state *rs, const upload_state *st, const char *rkey, bool admitted)
{
    char lkey[128], key[128], doc[24], lease_ms[24], ttl[24];
    lease_key(rs->cfg, st->document_id, lkey, sizeof lkey);
    upload_key(rs->cfg, st->document_id, key, sizeof key);
    snprintf(doc, sizeof doc, "%" PRIu64, st->document_id);
    snprintf(lease_ms, sizeof lease_ms, "%lld", (long long)rs->cfg->lease_ttl_ms);
    snprintf(ttl, sizeof ttl, "%lld", (long long)rs->cfg->upload_ttl_s);
    state_args a;
    state_args_fill(&a, st);
    enum { FIXED = 10 };
    const char *argv[FIXED + STATE_ARGC] = {"EVAL", open_lua, "3", lkey, key, rkey, st->writer,
                                            lease_ms, ttl, admitted ? doc : ""};
    memcpy(argv + FIXED, a.argv, sizeof a.argv);
    if (redisAppendCommandArgv(rs->ctx, FIXED + STATE_ARGC, argv, NULL) != REDIS_OK)
        return append_failed(rs);
    return 0;
}

/* The reserve script's reply: fits[i] and promised[i] for each upload. */
static int read_reserve_reply(redis_state *rs, size_t n, int8_t *fits, int64_t *promised)
{
    redisReply *r = next_reply(rs, "reserve");
    if (!r)
        return -1;
    int rc = 0;
    if (reply_ok(rs, r, "reserve") != 0) {
        rc = -1;
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements != n) {
        snprintf(rs->err, sizeof rs->err, "redis reserve: unexpected reply (type %d)", r->type);
        rc = -1;
    } else {
        for (size_t i = 0; i < n; i++) {
            const redisReply *e = r->element[i];
            long long v = e->type == REDIS_REPLY_INTEGER ? e->integer : 0;
            fits[i] = e->type != REDIS_REPLY_INTEGER ? -1 : v >= 0 ? 1 : 0;
            promised[i] = v >= 0 ? v : -v - 1;
        }
    }
    freeReplyObject(r);
    return rc;
}

int rstate_admit_open_many(redis_state *rs, size_t n, const upload_state *sts, int64_t available,
                           int8_t *fits, int64_t *promised, int8_t *opened)
{
    if (too_many(rs, n) != 0 || connect_redis(rs) != 0)
        return -1;
    char rkey[128];
    reserved_key(rs->cfg, rkey, sizeof rkey);
    bool admit = available >= 0;
    if (admit && append_reserve(rs, n, sts, available, rkey) != 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (append_open(rs, &sts[i], rkey, admit) != 0)
            return -1;
    int64_t t0 = metrics_now_us();
    int reserve_rc = 0;
    if (admit) {
        reserve_rc = read_reserve_reply(rs, n, fits, promised);
        if (reserve_rc != 0 && !rs->ctx)
            return -1; /* the connection failed: nothing more can be read */
    } else {
        for (size_t i = 0; i < n; i++) {
            fits[i] = 1;
            promised[i] = 0;
        }
    }
    long long v[RSTATE_MANY_MAX];
    bool ok[RSTATE_MANY_MAX];
    int rc = read_replies(rs, n, 1, "open upload", v, ok);
    metrics_observe_us(rs->m, H_REDIS, metrics_now_us() - t0);
    if (rc != 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (reserve_rc != 0)
            fits[i] = -1; /* the script failed: nothing was reserved or opened */
        opened[i] = !ok[i] ? -1 : v[i] == 1 ? 1 : 0;
        if (ok[i] && v[i] == 2) {
            opened[i] = 0;
            if (fits[i] == 1) {
                fits[i] = -1; /* reserved, yet not there: answer as unavailable */
                snprintf(rs->err, sizeof rs->err, "redis: a reservation vanished at once");
            }
        }
    }
    return 0;
}

int rstate_lease_confirm_many(redis_state *rs, size_t n, const uint64_t *docs,
                              const char *const *tokens, int8_t *held)
{
    if (too_many(rs, n) != 0 || connect_redis(rs) != 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        char lkey[128], key[128];
        lease_key(rs->cfg, docs[i], lkey, sizeof lkey);
        upload_key(rs->cfg, docs[i], key, sizeof key);
        if (redisAppendCommand(rs->ctx, "EVAL %s 2 %s %s %s %lld", confirm_lua, lkey, key,
                               tokens[i], (long long)rs->cfg->lease_ttl_ms) != REDIS_OK)
            return append_failed(rs);
    }
    long long v[RSTATE_MANY_MAX];
    bool ok[RSTATE_MANY_MAX];
    if (read_items(rs, n, 1, "lease confirm", v, ok) != 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        held[i] = !ok[i] ? -1 : v[i] == 1 ? 1 : 0;
    return 0;
}

/* KEYS: reserved hash. ARGV: upload key prefix, lease key prefix, then a
 * doc id and its lease token for each completed upload: its state and
 * reservation go, and its lease if the token holds it. Returns how many
 * states were there. */
static const char finish_lua[] =
    "local n = 0 "
    "for j = 3, #ARGV, 2 do "
    "  local lease = ARGV[2] .. ARGV[j] "
    "  if redis.call('GET', lease) == ARGV[j + 1] then redis.call('DEL', lease) end "
    "  n = n + redis.call('DEL', ARGV[1] .. ARGV[j]) "
    "  redis.call('HDEL', KEYS[1], ARGV[j]) "
    "end "
    "return n";

int rstate_format_finish_many(const chunkd_config *cfg, size_t n, const uint64_t *docs,
                              const char *const *tokens, char **cmd)
{
    if (n > RSTATE_MANY_MAX)
        return -1;
    enum { FIXED = 6 };
    char rkey[128], prefix[96], lprefix[96], ids[RSTATE_MANY_MAX][24];
    const char *argv[FIXED + 2 * RSTATE_MANY_MAX];
    reserved_key(cfg, rkey, sizeof rkey);
    snprintf(prefix, sizeof prefix, "%supload:", cfg->redis_prefix);
    snprintf(lprefix, sizeof lprefix, "%slease:", cfg->redis_prefix);
    size_t argc = eval_on_reserved(argv, finish_lua, rkey);
    argv[argc++] = prefix;
    argv[argc++] = lprefix;
    for (size_t i = 0; i < n; i++) {
        snprintf(ids[i], sizeof ids[i], "%" PRIu64, docs[i]);
        argv[argc++] = ids[i];
        argv[argc++] = tokens[i];
    }
    return redisFormatCommandArgv(cmd, (int)argc, argv, NULL);
}

int rstate_finish_many(redis_state *rs, size_t n, const uint64_t *docs,
                       const char *const *tokens)
{
    if (too_many(rs, n) != 0 || connect_redis(rs) != 0)
        return -1;
    char *cmd = NULL;
    int len = rstate_format_finish_many(rs->cfg, n, docs, tokens, &cmd);
    return run_formatted(rs, cmd, len, "finish upload", NULL);
}

int rstate_ping(redis_state *rs)
{
    if (connect_redis(rs) != 0)
        return -1;
    redisReply *r = command(rs, "PING");
    int rc = reply_ok(rs, r, "PING");
    freeReplyObject(r);
    return rc;
}
