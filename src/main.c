/* chunkd: start-up order, signals, shutdown.
 *
 * Start-up: configuration -> logging -> MySQL library -> storage check ->
 * listening socket (fails early on a taken port) -> workers (their queues
 * exist before the acceptor can dispatch to them) -> acceptor -> ready file.
 * Signals are blocked in every thread and taken synchronously here, so no
 * handler ever runs inside server code. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mysql.h>

#include "chunkd/admin.h"
#include "chunkd/config.h"
#include "chunkd/fs_sync.h"
#include "chunkd/listener.h"
#include "chunkd/log.h"
#include "chunkd/metrics.h"
#include "chunkd/net.h"
#include "chunkd/storage.h"
#include "chunkd/sweeper.h"
#include "chunkd/util.h"
#include "chunkd/worker.h"

static int write_ready_file(const char *path, int port)
{
    char tmp[CFG_STR_MAX + 16];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -1;
    int ok = fprintf(f, "%d\n", port) > 0;
    if (fclose(f) != 0)
        ok = 0;
    /* rename: a reader sees either no file or the whole port number */
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

static void default_node_id(chunkd_config *cfg)
{
    if (cfg->node_id[0])
        return;
    char host[128];
    if (gethostname(host, sizeof host) != 0)
        snprintf(host, sizeof host, "chunkd");
    host[sizeof host - 1] = '\0';
    snprintf(cfg->node_id, sizeof cfg->node_id, "%s-%ld", host, (long)getpid());
}

int main(int argc, char **argv)
{
    static chunkd_config cfg; /* lives as long as every thread that reads it */
    char err[512];
    config_defaults(&cfg);
    int rc = config_load(&cfg, argc, argv, err, sizeof err);
    if (rc != 0) {
        if (rc < 0)
            fprintf(stderr, "chunkd: %s\n", err);
        return rc < 0 ? 2 : 0;
    }
    default_node_id(&cfg);
    if (log_set_level(cfg.log_level) != 0)
        return 2; /* config_validate already vetted it */
    log_set_node(cfg.node_id);

    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGPIPE);
    rc = pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    if (rc != 0) {
        fprintf(stderr, "chunkd: pthread_sigmask: %s\n", strerror(rc));
        return 1;
    }

    if (mysql_library_init(0, NULL, NULL) != 0) {
        log_error("event=startup_failed reason=\"mysql_library_init failed\"");
        return 1;
    }
    if (storage_init(cfg.storage_dir, err, sizeof err) != 0) {
        log_error("event=startup_failed reason=\"%s\"", err);
        return 1;
    }
    char host[CFG_STR_MAX];
    int port = 0;
    if (config_split_hostport(cfg.listen, host, sizeof host, &port) != 0)
        return 2;
    int lfd = net_listen(host, port, 1024, err, sizeof err);
    if (lfd < 0) {
        log_error("event=startup_failed reason=\"%s\"", err);
        return 1;
    }
    int bound = net_local_port(lfd);

    /* Without a boot id resume never trusts unsynced bytes (see
     * docs/DURABILITY.md): slower to resume after a drop, never wrong. */
    static char boot_id[40];
    if (util_boot_id(boot_id) != 0)
        log_warn("event=boot_id_unknown effect=\"resume falls back to synced offsets\"");

    /* Syncing files in batches: decided once, said once. A syncfs waits
     * for every unwritten page of the machine, where each file's fdatasync
     * waits only for its own: batches only while little is unwritten
     * (16 MiB by default, one checkpoint's worth). */
    syncer_options sync = {.max_unwritten = cfg.sync_batch_max_unwritten};
    if (cfg.sync_batching) {
        char why[256];
        sync.batch = fs_sync_batch_supported(cfg.storage_dir, &sync.dev, why, sizeof why);
        if (sync.batch)
            log_info("event=sync_batching enabled=yes file_system=%s", why);
        else
            log_info("event=sync_batching enabled=no reason=\"%s\"", why);
    }

    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int nworkers = cfg.workers > 0 ? (int)cfg.workers : (ncpu > 0 ? (int)ncpu : 1);
    conn_limits *limits = conn_limits_new(cfg.max_connections, cfg.max_connections_per_ip);
    worker **workers = calloc((size_t)nworkers, sizeof *workers);
    if (!workers || !limits) {
        log_error("event=startup_failed reason=out_of_memory");
        free(workers);
        conn_limits_free(limits);
        return 1;
    }
    int exit_code = 1;
    int started = 0;
    listener *acceptor = NULL;
    sweeper *sweep = NULL;
    admin *adm = NULL;
    for (; started < nworkers; started++) {
        workers[started] = worker_create(started, &cfg, cfg.node_id, boot_id, limits, &sync,
                                         err, sizeof err);
        if (!workers[started] || worker_start(workers[started], err, sizeof err) != 0) {
            log_error("event=startup_failed reason=\"%s\"", err);
            if (workers[started])
                started++;
            goto shutdown;
        }
    }
    acceptor = listener_start(lfd, workers, nworkers, &cfg, limits, err, sizeof err);
    if (!acceptor) {
        log_error("event=startup_failed reason=\"%s\"", err);
        goto shutdown;
    }
    lfd = -1; /* the acceptor owns it now */
    sweep = sweeper_start(&cfg, cfg.node_id, err, sizeof err);
    if (!sweep) {
        log_error("event=startup_failed reason=\"%s\"", err);
        goto shutdown;
    }
    /* Last: every metrics block it reads is registered by now. */
    adm = admin_start(&cfg, cfg.node_id, limits, err, sizeof err);
    if (!adm) {
        log_error("event=startup_failed reason=\"%s\"", err);
        goto shutdown;
    }
    if (cfg.ready_file[0] && write_ready_file(cfg.ready_file, bound) != 0) {
        log_error("event=startup_failed reason=\"ready file %s: %s\"", cfg.ready_file,
                  strerror(errno));
        goto shutdown;
    }
    log_info("event=started listen=%s:%d admin_port=%d workers=%d storage=%s version=%s", host,
             bound, admin_port(adm), nworkers, cfg.storage_dir, CHUNKD_VERSION);

    for (;;) {
        int sig = 0;
        rc = sigwait(&sigs, &sig);
        if (rc != 0) {
            log_error("event=sigwait_failed error=\"%s\"", strerror(rc));
            break;
        }
        if (sig == SIGINT || sig == SIGTERM) {
            log_info("event=stopping signal=%s", sig == SIGINT ? "SIGINT" : "SIGTERM");
            exit_code = 0;
            break;
        }
    }

shutdown:
    /* Health fails from here on, so a balancer stops sending new clients;
     * the admin thread also must stop reading metrics before their owners
     * (sweeper, workers) are freed. */
    listener_stop(acceptor);
    admin_stop(adm);
    sweeper_stop(sweep);
    if (lfd >= 0)
        close(lfd);
    for (int i = 0; i < started; i++)
        if (worker_stop(workers[i]) != 0)
            log_error("event=worker_stop_failed worker=%d", i);
    for (int i = 0; i < started; i++)
        worker_join_and_free(workers[i]);
    free(workers);
    conn_limits_free(limits);
    mysql_library_end();
    metrics_unregister_all();
    log_info("event=stopped exit_code=%d", exit_code);
    return exit_code;
}
