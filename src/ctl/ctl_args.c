/* Option and command-word parsing for chunkctl. */
#include "ctl_args.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_user.h"

void ctl_usage(FILE *out)
{
    fprintf(out,
            "usage: chunkctl [OPTIONS] user add NAME\n"
            "       chunkctl [OPTIONS] user rotate ID\n"
            "       chunkctl [OPTIONS] user disable ID\n"
            "       chunkctl [OPTIONS] user enable ID\n"
            "       chunkctl [OPTIONS] user list\n"
            "       chunkctl [OPTIONS] uploads [--user ID]\n"
            "       chunkctl [OPTIONS] show DOCUMENT_ID\n"
            "       chunkctl [OPTIONS] fail DOCUMENT_ID [--reason TEXT]\n"
            "       chunkctl [OPTIONS] expire DOCUMENT_ID\n"
            "       chunkctl [OPTIONS] storage-migrate\n"
            "\n"
            "Manages the users that may upload to chunkd ('add' and 'rotate' print the\n"
            "new credential once; only its SHA-256 is stored) and the uploads in flight:\n"
            "  uploads   every upload still 'uploading': progress, writer, idle time\n"
            "  show      one document's row, Redis state, lease and file, and whether\n"
            "            they agree (exit 1 when they do not)\n"
            "  fail      ends an upload as failed (reason failed_by_operator unless\n"
            "            --reason), removing its file and Redis state, as chunkd does\n"
            "  expire    the same with reason 'expired'\n"
            "  storage-migrate  moves the files of a storage folder written by an older\n"
            "            chunkd to the current layout (every chunkd on it stopped first)\n"
            "See docs/CHUNKCTL.md.\n"
            "\n"
            "Options:\n"
            "  --json                  print one JSON value instead of text\n"
            "  --user ID               uploads: only this user's\n"
            "  --reason TEXT           fail: the failure_reason to record (printable\n"
            "                          ASCII, at most %d bytes)\n"
            "  --config FILE           read settings from chunkd's config file\n"
            "  --mysql-host HOST       (env CHUNKD_MYSQL_HOST, default 127.0.0.1)\n"
            "  --mysql-port PORT       (env CHUNKD_MYSQL_PORT, default 3306)\n"
            "  --mysql-socket PATH     unix socket instead of TCP (env CHUNKD_MYSQL_SOCKET)\n"
            "  --mysql-user USER       (env CHUNKD_MYSQL_USER, default chunkd)\n"
            "  --mysql-password PW     (env CHUNKD_MYSQL_PASSWORD; the environment keeps\n"
            "                          it out of the process list)\n"
            "  --mysql-database DB     (env CHUNKD_MYSQL_DATABASE, default chunkd)\n"
            "  --redis-host HOST       (env CHUNKD_REDIS_HOST, default 127.0.0.1)\n"
            "  --redis-port PORT       (env CHUNKD_REDIS_PORT, default 6379)\n"
            "  --redis-password PW     (env CHUNKD_REDIS_PASSWORD)\n"
            "  --redis-db N            (env CHUNKD_REDIS_DB, default 0)\n"
            "  --redis-prefix P        (env CHUNKD_REDIS_PREFIX, default chunkd:)\n"
            "  --storage-dir DIR       chunkd's storage folder (env CHUNKD_STORAGE_DIR,\n"
            "                          default ./var/storage)\n"
            "  --backend-timeout-ms N  Redis and MySQL timeout (default 5000)\n"
            "  -h, --help              show this help\n"
            "  --version               print the version\n"
            "\n"
            "Precedence, lowest first: defaults, --config FILE (or CHUNKD_CONFIG),\n"
            "CHUNKD_* environment, flags. Exit status: 0 done (show: consistent),\n"
            "1 failed, refused or inconsistent, 2 bad usage.\n",
            CTL_REASON_MAX);
}

/* Flags that are chunkd options, handed to config_load as "--name value". */
static const char *const passthrough[] = {
    "mysql-host",   "mysql-port",     "mysql-socket", "mysql-user",   "mysql-password",
    "mysql-database", "redis-host",   "redis-port",   "redis-password", "redis-db",
    "redis-prefix", "storage-dir",    "backend-timeout-ms"};
#define NPASS (sizeof passthrough / sizeof passthrough[0])

enum { OPT_JSON = 256, OPT_CONFIG, OPT_VERSION, OPT_USER, OPT_REASON, OPT_PASS0 };

int ctl_parse_id(const char *s, const char *what, uint64_t *id, char *err, size_t errlen)
{
    size_t n = strlen(s);
    if (n == 0 || strspn(s, "0123456789") != n) {
        snprintf(err, errlen, "%s '%s' is not a positive integer", what, s);
        return -1;
    }
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v == 0 || v > INT64_MAX) {
        snprintf(err, errlen, "%s '%s' is out of range", what, s);
        return -1;
    }
    *id = v;
    return 0;
}

/* A failure reason ends up in status and list answers: keep it one line of
 * plain text. */
static int check_reason(const char *s, char *err, size_t errlen)
{
    size_t n = strlen(s);
    if (n == 0 || n > CTL_REASON_MAX) {
        snprintf(err, errlen, "--reason must be 1 to %d bytes", CTL_REASON_MAX);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c > 0x7e) {
            snprintf(err, errlen, "--reason may only hold printable ASCII (found byte 0x%02x)",
                     c);
            return -1;
        }
    }
    return 0;
}

typedef struct raw_opts {
    const char *config_file;
    const char *user;
    const char *reason;
    const char *pass_value[NPASS];
} raw_opts;

/* Returns -1 to exit 0 (help, version), 0 to go on, EXIT_USAGE on bad usage. */
static int parse_options(int argc, char **argv, ctl_request *r, raw_opts *o)
{
    static struct option longopts[5 + NPASS + 2];
    size_t n = 0;
    longopts[n++] = (struct option){"json", no_argument, NULL, OPT_JSON};
    longopts[n++] = (struct option){"config", required_argument, NULL, OPT_CONFIG};
    longopts[n++] = (struct option){"version", no_argument, NULL, OPT_VERSION};
    longopts[n++] = (struct option){"user", required_argument, NULL, OPT_USER};
    longopts[n++] = (struct option){"reason", required_argument, NULL, OPT_REASON};
    for (size_t i = 0; i < NPASS; i++)
        longopts[n++] = (struct option){passthrough[i], required_argument, NULL,
                                        OPT_PASS0 + (int)i};
    longopts[n++] = (struct option){"help", no_argument, NULL, 'h'};
    longopts[n] = (struct option){NULL, 0, NULL, 0};

    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_JSON:
            r->json = true;
            break;
        case OPT_CONFIG:
            o->config_file = optarg;
            break;
        case OPT_USER:
            o->user = optarg;
            break;
        case OPT_REASON:
            o->reason = optarg;
            break;
        case OPT_VERSION:
            printf("chunkctl %s\n", CHUNKD_VERSION);
            return -1;
        case 'h':
            ctl_usage(stdout);
            return -1;
        default:
            if (c >= OPT_PASS0 && c < OPT_PASS0 + (int)NPASS) {
                o->pass_value[c - OPT_PASS0] = optarg;
                break;
            }
            ctl_usage(stderr);
            return EXIT_USAGE;
        }
    }
    r->cfg_argv[r->cfg_argc++] = "chunkctl";
    if (o->config_file) {
        r->cfg_argv[r->cfg_argc++] = "--config";
        r->cfg_argv[r->cfg_argc++] = o->config_file;
    }
    static char flags[NPASS][32];
    for (size_t i = 0; i < NPASS; i++) {
        if (!o->pass_value[i])
            continue;
        snprintf(flags[i], sizeof flags[i], "--%s", passthrough[i]);
        r->cfg_argv[r->cfg_argc++] = flags[i];
        r->cfg_argv[r->cfg_argc++] = o->pass_value[i];
    }
    return 0;
}

static int parse_user_command(char **words, int nwords, ctl_request *r, char *err,
                              size_t errlen)
{
    static const struct {
        const char *word;
        ctl_cmd cmd;
        int nargs; /* words after the subcommand */
    } table[] = {{"add", CMD_USER_ADD, 1},         {"rotate", CMD_USER_ROTATE, 1},
                 {"disable", CMD_USER_DISABLE, 1}, {"enable", CMD_USER_ENABLE, 1},
                 {"list", CMD_USER_LIST, 0}};
    if (nwords < 2) {
        snprintf(err, errlen, "'user' needs a subcommand: add, rotate, disable, enable, list");
        return -1;
    }
    const char *sub = words[1];
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        if (strcmp(sub, table[i].word) != 0)
            continue;
        if (nwords - 2 != table[i].nargs) {
            snprintf(err, errlen, "'user %s' takes %s", sub,
                     table[i].nargs == 0            ? "no argument"
                     : table[i].cmd == CMD_USER_ADD ? "one argument: NAME"
                                                    : "one argument: ID");
            return -1;
        }
        r->cmd = table[i].cmd;
        if (r->cmd == CMD_USER_ADD) {
            r->name = words[2];
            return user_check_name(r->name, err, errlen);
        }
        if (r->cmd != CMD_USER_LIST)
            return ctl_parse_id(words[2], "user id", &r->id, err, errlen);
        return 0;
    }
    snprintf(err, errlen, "unknown subcommand 'user %s'", sub);
    return -1;
}

static int parse_command(char **words, int nwords, const raw_opts *o, ctl_request *r,
                         char *err, size_t errlen)
{
    if (nwords < 1) {
        snprintf(err, errlen, "no command given");
        return -1;
    }
    const char *w = words[0];
    int rc;
    if (strcmp(w, "user") == 0) {
        rc = parse_user_command(words, nwords, r, err, errlen);
    } else if (strcmp(w, "uploads") == 0) {
        r->cmd = CMD_UPLOADS;
        rc = 0;
        if (nwords != 1) {
            snprintf(err, errlen, "'uploads' takes no argument (filter with --user ID)");
            rc = -1;
        } else if (o->user) {
            rc = ctl_parse_id(o->user, "user id", &r->user_filter, err, errlen);
        }
    } else if (strcmp(w, "show") == 0 || strcmp(w, "fail") == 0 || strcmp(w, "expire") == 0) {
        r->cmd = w[0] == 's' ? CMD_SHOW : w[0] == 'f' ? CMD_FAIL : CMD_EXPIRE;
        if (nwords != 2) {
            snprintf(err, errlen, "'%s' takes one argument: DOCUMENT_ID", w);
            return -1;
        }
        rc = ctl_parse_id(words[1], "document id", &r->id, err, errlen);
        if (rc == 0 && r->cmd == CMD_FAIL)
            r->reason = o->reason ? o->reason : "failed_by_operator";
        if (rc == 0 && r->cmd == CMD_EXPIRE)
            r->reason = "expired";
        if (rc == 0 && r->cmd == CMD_FAIL && o->reason)
            rc = check_reason(o->reason, err, errlen);
    } else if (strcmp(w, "storage-migrate") == 0) {
        r->cmd = CMD_STORAGE_MIGRATE;
        rc = 0;
        if (nwords != 1) {
            snprintf(err, errlen, "'storage-migrate' takes no argument");
            rc = -1;
        }
    } else {
        snprintf(err, errlen, "unknown command '%s'", w);
        return -1;
    }
    if (rc != 0)
        return -1;
    if (o->user && r->cmd != CMD_UPLOADS) {
        snprintf(err, errlen, "--user applies to 'uploads' only");
        return -1;
    }
    if (o->reason && r->cmd != CMD_FAIL) {
        snprintf(err, errlen, "--reason applies to 'fail' only");
        return -1;
    }
    return 0;
}

int ctl_parse(int argc, char **argv, ctl_request *r)
{
    memset(r, 0, sizeof *r);
    raw_opts o;
    memset(&o, 0, sizeof o);
    int rc = parse_options(argc, argv, r, &o);
    if (rc != 0)
        return rc;
    char err[512];
    if (parse_command(argv + optind, argc - optind, &o, r, err, sizeof err) != 0) {
        fprintf(stderr, "chunkctl: %s (try --help)\n", err);
        return EXIT_USAGE;
    }
    return 0;
}
