/* chunkctl: administration of chunkd users and of the uploads in flight.
 *
 * Settings come from the same sources as chunkd's (config file, CHUNKD_*
 * environment, then flags), through chunkd's own option table, so both
 * programs always agree on where the database, Redis and the files are. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mysql.h>

#include "chunkd/config.h"
#include "chunkd/log.h"
#include "chunkd/storage_layout.h"
#include "ctl_args.h"
#include "ctl_cred.h"
#include "ctl_db.h"
#include "ctl_fail.h"
#include "ctl_show.h"
#include "ctl_storage.h"
#include "ctl_uploads.h"
#include "ctl_user.h"

static int run_user(const chunkd_config *cfg, const ctl_request *r, char *err, size_t errlen)
{
    MYSQL *db = ctl_db_connect(cfg, err, errlen);
    if (!db)
        return EXIT_FAILURE;
    int rc = EXIT_FAILURE;
    switch (r->cmd) {
    case CMD_USER_ADD:
        rc = user_add(db, r->name, r->json, err, errlen);
        break;
    case CMD_USER_ROTATE:
        rc = user_rotate(db, r->id, r->json, err, errlen);
        break;
    case CMD_USER_DISABLE:
        rc = user_set_disabled(db, r->id, true, r->json, err, errlen);
        break;
    case CMD_USER_ENABLE:
        rc = user_set_disabled(db, r->id, false, r->json, err, errlen);
        break;
    case CMD_USER_LIST:
        rc = user_list(db, r->json, err, errlen);
        break;
    default:
        snprintf(err, errlen, "unhandled command");
        break;
    }
    mysql_close(db);
    return rc;
}

static int run(const chunkd_config *cfg, const ctl_request *r, char *err, size_t errlen)
{
    /* These read files by the layout's paths: on a root in another layout
     * they would report files missing that are only elsewhere. */
    bool reads_files = r->cmd == CMD_UPLOADS || r->cmd == CMD_SHOW || r->cmd == CMD_FAIL ||
                       r->cmd == CMD_EXPIRE;
    if (reads_files && storage_layout_check(cfg->storage_dir, err, errlen) != 0)
        return EXIT_FAILURE;
    switch (r->cmd) {
    case CMD_STORAGE_MIGRATE:
        return ctl_storage_migrate(cfg, r->json, err, errlen);
    case CMD_UPLOADS:
        return ctl_uploads(cfg, r->user_filter, r->json, err, errlen);
    case CMD_SHOW:
        return ctl_show(cfg, r->id, r->json, err, errlen);
    case CMD_FAIL:
    case CMD_EXPIRE:
        return ctl_fail(cfg, r->id, r->reason, r->json, err, errlen);
    default:
        return run_user(cfg, r, err, errlen);
    }
}

int main(int argc, char **argv)
{
    ctl_request req;
    int prc = ctl_parse(argc, argv, &req);
    if (prc != 0)
        return prc < 0 ? EXIT_SUCCESS : prc;

    char err[1024] = "";
    chunkd_config cfg;
    config_defaults(&cfg);
    /* config_load takes a mutable argv but does not change it. */
    if (config_load(&cfg, req.cfg_argc, (char **)req.cfg_argv, err, sizeof err) != 0) {
        fprintf(stderr, "chunkctl: %s\n", err);
        return EXIT_USAGE;
    }
    /* The shared server code logs what it does to stderr; chunkctl reports
     * the outcome itself, so only trouble is worth a log line. */
    log_set_node("chunkctl");
    if (log_set_level("warn") != 0) {
        fprintf(stderr, "chunkctl: cannot set the log level\n");
        return EXIT_FAILURE;
    }

    if (mysql_library_init(0, NULL, NULL) != 0) {
        fprintf(stderr, "chunkctl: cannot initialise the MySQL client library\n");
        return EXIT_FAILURE;
    }
    int rc = run(&cfg, &req, err, sizeof err);
    mysql_library_end();
    cred_wipe(cfg.mysql_password, sizeof cfg.mysql_password);
    cred_wipe(cfg.redis_password, sizeof cfg.redis_password);
    if (rc == 0 && fflush(stdout) != 0) {
        snprintf(err, sizeof err, "writing output failed");
        rc = EXIT_FAILURE;
    }
    if (rc != 0 && err[0])
        fprintf(stderr, "chunkctl: %s\n", err);
    return rc;
}
