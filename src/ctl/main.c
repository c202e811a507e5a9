/* chunkctl: administration of chunkd users in MySQL.
 *
 * MySQL settings come from the same sources as chunkd's (config file,
 * CHUNKD_MYSQL_* environment, then flags), through chunkd's own option
 * table, so both programs always agree on where the database is. */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mysql.h>

#include "chunkd/config.h"
#include "ctl_cred.h"
#include "ctl_db.h"
#include "ctl_user.h"

enum { EXIT_USAGE = 2 };

static void usage(FILE *out)
{
    fprintf(out,
            "usage: chunkctl [OPTIONS] user add NAME\n"
            "       chunkctl [OPTIONS] user rotate ID\n"
            "       chunkctl [OPTIONS] user disable ID\n"
            "       chunkctl [OPTIONS] user enable ID\n"
            "       chunkctl [OPTIONS] user list\n"
            "\n"
            "Manages the users that may upload to chunkd. 'add' and 'rotate' print the\n"
            "new credential once; only its SHA-256 is stored.\n"
            "\n"
            "Options:\n"
            "  --json                  print one JSON value instead of key=value lines\n"
            "  --config FILE           read settings from chunkd's config file\n"
            "  --mysql-host HOST       (env CHUNKD_MYSQL_HOST, default 127.0.0.1)\n"
            "  --mysql-port PORT       (env CHUNKD_MYSQL_PORT, default 3306)\n"
            "  --mysql-socket PATH     unix socket instead of TCP (env CHUNKD_MYSQL_SOCKET)\n"
            "  --mysql-user USER       (env CHUNKD_MYSQL_USER, default chunkd)\n"
            "  --mysql-password PW     (env CHUNKD_MYSQL_PASSWORD; the environment keeps\n"
            "                          it out of the process list)\n"
            "  --mysql-database DB     (env CHUNKD_MYSQL_DATABASE, default chunkd)\n"
            "  -h, --help              show this help\n"
            "  --version               print the version\n"
            "\n"
            "Precedence, lowest first: defaults, --config FILE (or CHUNKD_CONFIG),\n"
            "CHUNKD_* environment, flags. Exit status: 0 done, 1 failed, 2 bad usage.\n");
}

/* Flags that are chunkd options, handed to config_load as "--name value". */
static const char *const passthrough[] = {"mysql-host",     "mysql-port",     "mysql-socket",
                                          "mysql-user",     "mysql-password", "mysql-database"};
#define NPASS (sizeof passthrough / sizeof passthrough[0])

enum { OPT_JSON = 256, OPT_CONFIG, OPT_VERSION, OPT_PASS0 };

typedef struct ctl_args {
    bool json;
    /* argv for config_load: program name, --config FILE, then flag/value pairs */
    const char *cfg_argv[3 + 2 * NPASS];
    int cfg_argc;
    const char *config_file;
    char **words; /* the command words after options */
    int nwords;
} ctl_args;

/* Returns -1 to exit 0 (help, version), 0 to go on, EXIT_USAGE on bad usage. */
static int parse_args(int argc, char **argv, ctl_args *a)
{
    static struct option longopts[3 + NPASS + 2];
    size_t n = 0;
    longopts[n++] = (struct option){"json", no_argument, NULL, OPT_JSON};
    longopts[n++] = (struct option){"config", required_argument, NULL, OPT_CONFIG};
    longopts[n++] = (struct option){"version", no_argument, NULL, OPT_VERSION};
    for (size_t i = 0; i < NPASS; i++)
        longopts[n++] = (struct option){passthrough[i], required_argument, NULL,
                                        OPT_PASS0 + (int)i};
    longopts[n++] = (struct option){"help", no_argument, NULL, 'h'};
    longopts[n] = (struct option){NULL, 0, NULL, 0};

    const char *pass_value[NPASS] = {NULL};
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_JSON:
            a->json = true;
            break;
        case OPT_CONFIG:
            a->config_file = optarg;
            break;
        case OPT_VERSION:
            printf("chunkctl %s\n", CHUNKD_VERSION);
            return -1;
        case 'h':
            usage(stdout);
            return -1;
        default:
            if (c >= OPT_PASS0 && c < OPT_PASS0 + (int)NPASS) {
                pass_value[c - OPT_PASS0] = optarg;
                break;
            }
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    a->cfg_argv[a->cfg_argc++] = "chunkctl";
    if (a->config_file) {
        a->cfg_argv[a->cfg_argc++] = "--config";
        a->cfg_argv[a->cfg_argc++] = a->config_file;
    }
    static char flags[NPASS][32];
    for (size_t i = 0; i < NPASS; i++) {
        if (!pass_value[i])
            continue;
        snprintf(flags[i], sizeof flags[i], "--%s", passthrough[i]);
        a->cfg_argv[a->cfg_argc++] = flags[i];
        a->cfg_argv[a->cfg_argc++] = pass_value[i];
    }
    a->words = argv + optind;
    a->nwords = argc - optind;
    return 0;
}

typedef enum { CMD_ADD, CMD_ROTATE, CMD_DISABLE, CMD_ENABLE, CMD_LIST } ctl_cmd;

typedef struct ctl_request {
    ctl_cmd cmd;
    const char *name;
    uint64_t id;
} ctl_request;

/* Checks the command words completely before any connection is made. */
static int parse_command(const ctl_args *a, ctl_request *r, char *err, size_t errlen)
{
    static const struct {
        const char *word;
        ctl_cmd cmd;
        int nargs; /* words after the subcommand */
    } table[] = {{"add", CMD_ADD, 1},         {"rotate", CMD_ROTATE, 1},
                 {"disable", CMD_DISABLE, 1}, {"enable", CMD_ENABLE, 1},
                 {"list", CMD_LIST, 0}};
    if (a->nwords < 1) {
        snprintf(err, errlen, "no command given");
        return -1;
    }
    if (strcmp(a->words[0], "user") != 0) {
        snprintf(err, errlen, "unknown command '%s'", a->words[0]);
        return -1;
    }
    if (a->nwords < 2) {
        snprintf(err, errlen, "'user' needs a subcommand: add, rotate, disable, enable, list");
        return -1;
    }
    const char *sub = a->words[1];
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        if (strcmp(sub, table[i].word) != 0)
            continue;
        if (a->nwords - 2 != table[i].nargs) {
            snprintf(err, errlen, "'user %s' takes %s", sub,
                     table[i].nargs == 0 ? "no argument"
                     : table[i].cmd == CMD_ADD ? "one argument: NAME"
                                               : "one argument: ID");
            return -1;
        }
        r->cmd = table[i].cmd;
        if (r->cmd == CMD_ADD) {
            r->name = a->words[2];
            return user_check_name(r->name, err, errlen);
        }
        if (r->cmd != CMD_LIST)
            return user_parse_id(a->words[2], &r->id, err, errlen);
        return 0;
    }
    snprintf(err, errlen, "unknown subcommand 'user %s'", sub);
    return -1;
}

static int run(MYSQL *db, const ctl_request *r, bool json, char *err, size_t errlen)
{
    switch (r->cmd) {
    case CMD_ADD:
        return user_add(db, r->name, json, err, errlen);
    case CMD_ROTATE:
        return user_rotate(db, r->id, json, err, errlen);
    case CMD_DISABLE:
        return user_set_disabled(db, r->id, true, json, err, errlen);
    case CMD_ENABLE:
        return user_set_disabled(db, r->id, false, json, err, errlen);
    case CMD_LIST:
        return user_list(db, json, err, errlen);
    }
    snprintf(err, errlen, "unhandled command");
    return 1;
}

int main(int argc, char **argv)
{
    ctl_args args;
    memset(&args, 0, sizeof args);
    int prc = parse_args(argc, argv, &args);
    if (prc != 0)
        return prc < 0 ? EXIT_SUCCESS : prc;

    char err[1024];
    ctl_request req;
    memset(&req, 0, sizeof req);
    if (parse_command(&args, &req, err, sizeof err) != 0) {
        fprintf(stderr, "chunkctl: %s (try --help)\n", err);
        return EXIT_USAGE;
    }

    chunkd_config cfg;
    config_defaults(&cfg);
    /* config_load takes a mutable argv but does not change it. */
    if (config_load(&cfg, args.cfg_argc, (char **)args.cfg_argv, err, sizeof err) != 0) {
        fprintf(stderr, "chunkctl: %s\n", err);
        return EXIT_USAGE;
    }

    if (mysql_library_init(0, NULL, NULL) != 0) {
        fprintf(stderr, "chunkctl: cannot initialise the MySQL client library\n");
        return EXIT_FAILURE;
    }
    int rc = EXIT_FAILURE;
    MYSQL *db = ctl_db_connect(&cfg, err, sizeof err);
    if (db) {
        rc = run(db, &req, args.json, err, sizeof err);
        mysql_close(db);
    }
    mysql_library_end();
    cred_wipe(cfg.mysql_password, sizeof cfg.mysql_password);
    if (rc == 0 && fflush(stdout) != 0) {
        snprintf(err, sizeof err, "writing output failed");
        rc = EXIT_FAILURE;
    }
    if (rc != 0)
        fprintf(stderr, "chunkctl: %s\n", err);
    return rc;
}
