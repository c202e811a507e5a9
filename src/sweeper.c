/* Expiry sweep of abandoned uploads. See sweeper.h for the safety argument. */
#include "chunkd/sweeper.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <mysql.h>
#include <openssl/rand.h>

#include "chunkd/lifecycle.h"
#include "chunkd/log.h"
#include "chunkd/storage.h"
#include "chunkd/util.h"

enum {
    SWEEP_BATCH = 500,
    /* How far back the first leftover pass after a start looks, and how
     * much later passes add to the time since the last one that worked:
     * a failure's UPDATE stamps its row before it commits, and the two
     * clocks (chunkd's, MySQL's) run apart a little. */
    LEFTOVER_LOOKBACK_S = 3600,
    LEFTOVER_MARGIN_S = 60, /* and backend_timeout_ms: a lock wait's length */
};

struct sweeper {
    const chunkd_config *cfg;
    metrics metrics;      /* written by the sweeper thread only */
    pthread_t thread;
    int stopfd;
    char token[CFG_STR_MAX + 40];
};

typedef struct candidates {
    uint64_t ids[SWEEP_BATCH];
    size_t n;
} candidates;

/* Latest sign of life: the last chunk saved in Redis or the file's mtime
 * (a chunk being written touches the file before Redis hears of it). */
static int last_activity_ms(const chunkd_config *cfg, redis_state *rs, uint64_t id,
                            int64_t *out)
{
    upload_state st;
    bool found = false;
    if (rstate_get(rs, id, &st, &found) != 0)
        return -1;
    int64_t act = found ? st.updated_ms : 0;
    int64_t mtime = storage_file_mtime_ms(cfg->storage_dir, id);
    if (mtime < 0 && errno != ENOENT) {
        /* A file that cannot be looked at (EIO, a stale NFS handle) may
         * still be written: no verdict, as if it were active now. */
        log_warn("event=expiry_skipped doc=%" PRIu64 " error=\"%s\"", id, strerror(errno));
        mtime = util_wall_ms();
    }
    if (mtime > act)
        act = mtime;
    *out = act;
    return 0;
}

/* Returns 1 when expired here, 0 when skipped, -1 on a backend failure. */
static int expire_one(const chunkd_config *cfg, const char *token, redis_state *rs,
                      docstore *ds, metrics *m, uint64_t id)
{
    bool leased = false;
    int64_t retry = 0;
    if (rstate_lease_acquire(rs, id, token, &leased, &retry) != 0)
        return -1;
    if (!leased)
        return 0; /* someone is writing it right now */
    int rc = 0;
    int64_t act = 0;
    rstate_lease_kept kept = RSTATE_LEASE_RENEWED;
    if (last_activity_ms(cfg, rs, id, &act) != 0) {
        rc = -1;
    } else if (util_wall_ms() - act < cfg->upload_expiry_s * 1000) {
        /* alive after all */
    } else if (rstate_lease_keep(rs, id, token, &kept) != 0) {
        rc = -1;
    } else if (kept != RSTATE_LEASE_RENEWED) {
        /* The reads above outlasted the lease (a stalled Redis or storage):
         * a resume may have taken the upload meanwhile. The next sweep
         * looks again. */
        log_info("event=expiry_deferred doc=%" PRIu64 " reason=lease_gap", id);
    } else {
        bool changed = false;
        if (lifecycle_fail_upload(ds, rs, cfg->storage_dir, id, "expired", &changed) != 0) {
            rc = -1;
        } else if (changed) {
            metrics_failed(m, "expired");
            log_info("event=upload_expired doc=%" PRIu64 " idle_ms=%" PRId64, id,
                     util_wall_ms() - act);
            rc = 1;
        }
    }
    if (rstate_lease_release(rs, id, token) != 0)
        log_warn("event=lease_release_failed doc=%" PRIu64 " error=\"%s\"", id, rstate_error(rs));
    return rc;
}

/* Whether a stop was asked for (sweeper_stop writes stopfd). */
static bool stop_asked(int stopfd)
{
    struct pollfd p = {.fd = stopfd, .events = POLLIN};
    return stopfd >= 0 && poll(&p, 1, 0) > 0;
}

/* One of the sweep's listings: a page of ids keyed by seconds. */
typedef int (*list_fn)(docstore *ds, int64_t seconds, uint64_t after_id, uint64_t *ids,
                       size_t max, size_t *n);

/* Calls each(id, arg) for every id list gives for `seconds`, a page at a
 * time, on from the last id: rows that stay candidates (uploads still
 * alive past the expiry, files out of reach) would otherwise hide every
 * row behind the first page. Ends between pages once stopfd is readable,
 * or at once with -1 when list fails (logged as `what`) or each returns
 * -1. Rows are listed first and handled after: a MySQL connection cannot
 * run an UPDATE while a SELECT's rows are still being fetched. 0, with the
 * ids seen in *seen. */
static int each_page(docstore *ds, list_fn list, int64_t seconds, int stopfd, const char *what,
                     int (*each)(uint64_t id, void *arg), void *arg, size_t *seen)
{
    static _Thread_local candidates c;
    uint64_t after = 0;
    *seen = 0;
    do {
        if (list(ds, seconds, after, c.ids, SWEEP_BATCH, &c.n) != 0) {
            log_warn("event=%s error=\"%s\"", what, docstore_error(ds));
            return -1;
        }
        for (size_t i = 0; i < c.n; i++)
            if (each(c.ids[i], arg) < 0)
                return -1;
        *seen += c.n;
        if (c.n > 0)
            after = c.ids[c.n - 1];
    } while (c.n == SWEEP_BATCH && !stop_asked(stopfd));
    return 0;
}

typedef struct expiry_pass {
    const chunkd_config *cfg;
    const char *token;
    redis_state *rs;
    docstore *ds;
    metrics *m;
    int expired;
} expiry_pass;

static int expire_listed(uint64_t id, void *arg)
{
    expiry_pass *p = arg;
    int r = expire_one(p->cfg, p->token, p->rs, p->ds, p->m, id);
    if (r < 0) {
        log_warn("event=sweep_failed doc=%" PRIu64 " redis=\"%s\" mysql=\"%s\"", id,
                 rstate_error(p->rs), docstore_error(p->ds));
        return -1;
    }
    p->expired += r;
    return 0;
}

int sweeper_run_once(const chunkd_config *cfg, const char *token, redis_state *rs, docstore *ds,
                     metrics *m, int stopfd)
{
    expiry_pass p = {.cfg = cfg, .token = token, .rs = rs, .ds = ds, .m = m};
    size_t seen = 0;
    if (each_page(ds, docstore_list_stale_uploads, cfg->upload_expiry_s, stopfd, "sweep_failed",
                  expire_listed, &p, &seen) != 0)
        return -1;
    if (p.expired > 0)
        log_info("event=sweep_done expired=%d candidates=%zu", p.expired, seen);
    return p.expired;
}

typedef struct leftover_pass {
    const char *storage_dir;
    int removed;
    size_t kept;
} leftover_pass;

static int remove_listed(uint64_t id, void *arg)
{
    leftover_pass *p = arg;
    int r = storage_remove_existing(p->storage_dir, id);
    if (r < 0) {
        log_warn("event=leftover_not_removed doc=%" PRIu64 " error=\"%s\"", id, strerror(errno));
        p->kept++;
    } else if (r == 1) {
        log_info("event=leftover_removed doc=%" PRIu64, id);
        p->removed++;
    }
    return 0;
}

int sweeper_remove_leftovers(const chunkd_config *cfg, docstore *ds, int64_t within_s, int stopfd,
                             size_t *kept)
{
    leftover_pass p = {.storage_dir = cfg->storage_dir};
    size_t seen = 0;
    int rc = each_page(ds, docstore_list_recently_failed, within_s, stopfd,
                       "leftover_sweep_failed", remove_listed, &p, &seen);
    *kept = p.kept;
    return rc != 0 ? -1 : p.removed;
}

static void *sweeper_main(void *arg)
{
    sweeper *sw = arg;
    util_name_thread("chunkd-sweep");
    if (mysql_thread_init() != 0)
        log_error("event=mysql_thread_init_failed thread=sweeper");
    redis_state *rs = rstate_new(sw->cfg);
    docstore *ds = docstore_new(sw->cfg);
    if (rs)
        rstate_set_metrics(rs, &sw->metrics);
    if (ds)
        docstore_set_metrics(ds, &sw->metrics);
    struct pollfd pfd = {.fd = sw->stopfd, .events = POLLIN};
    int interval_ms = (int)(sw->cfg->sweep_interval_s * 1000);
    int64_t leftovers_done_ms = 0; /* when the last leftover pass that worked began */
    for (;;) {
        int n = poll(&pfd, 1, interval_ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            /* Nothing sane to do but end; the server runs on, unswept. */
            log_error("event=sweeper_stopped error=\"%s\"", strerror(errno));
            break;
        }
        if (n != 0)
            break; /* stop requested */
        if (rs && ds) {
            sweeper_run_once(sw->cfg, sw->token, rs, ds, &sw->metrics, sw->stopfd);
            /* The mark moves only past a pass that left nothing it found:
             * a file out of reach stays in the next pass's window. */
            int64_t now = util_mono_ms();
            int64_t within_s = leftovers_done_ms ? (now - leftovers_done_ms) / 1000 +
                                                       LEFTOVER_MARGIN_S +
                                                       sw->cfg->backend_timeout_ms / 1000
                                                 : LEFTOVER_LOOKBACK_S;
            size_t kept = 0;
            if (!stop_asked(sw->stopfd) &&
                sweeper_remove_leftovers(sw->cfg, ds, within_s, sw->stopfd, &kept) >= 0 &&
                kept == 0)
                leftovers_done_ms = now;
        }
    }
    rstate_free(rs);
    docstore_free(ds);
    mysql_thread_end();
    return NULL;
}

sweeper *sweeper_start(const chunkd_config *cfg, const char *node_id, char *err, size_t errlen)
{
    sweeper *sw = calloc(1, sizeof *sw);
    if (!sw) {
        snprintf(err, errlen, "sweeper: out of memory");
        return NULL;
    }
    sw->cfg = cfg;
    unsigned char rnd[8];
    char hex[17];
    if (RAND_bytes(rnd, sizeof rnd) != 1)
        memset(rnd, 0, sizeof rnd);
    util_hex(rnd, sizeof rnd, hex);
    snprintf(sw->token, sizeof sw->token, "%s/sweeper-%s", node_id, hex);
    if (metrics_register(&sw->metrics) != 0) {
        snprintf(err, errlen, "sweeper: too many metrics blocks");
        free(sw);
        return NULL;
    }
    if (cfg->sweep_interval_s == 0) {
        sw->stopfd = -1;
        return sw; /* disabled: nothing to start */
    }
    sw->stopfd = eventfd(0, EFD_CLOEXEC);
    if (sw->stopfd < 0) {
        snprintf(err, errlen, "sweeper: eventfd: %s", strerror(errno));
        free(sw);
        return NULL;
    }
    int rc = pthread_create(&sw->thread, NULL, sweeper_main, sw);
    if (rc != 0) {
        snprintf(err, errlen, "sweeper: pthread_create: %s", strerror(rc));
        close(sw->stopfd);
        free(sw);
        return NULL;
    }
    return sw;
}

void sweeper_stop(sweeper *sw)
{
    if (!sw)
        return;
    if (sw->stopfd >= 0) {
        uint64_t one = 1;
        if (write(sw->stopfd, &one, sizeof one) < 0)
            log_error("event=sweeper_stop_failed error=\"%s\"", strerror(errno));
        int rc = pthread_join(sw->thread, NULL);
        if (rc != 0)
            log_error("event=sweeper_join_failed error=\"%s\"", strerror(rc));
        close(sw->stopfd);
    }
    free(sw);
}
