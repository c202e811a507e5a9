/* chunkup option and environment parsing, exit statuses, error wording. */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#define CREDENTIAL_MAX 4096

int cu_parse_int(const char *s, int64_t min, int64_t max, int64_t *out)
{
    char *end;
    long long v;

    if (s == NULL || !(isdigit((unsigned char)s[0]) || (s[0] == '-' && isdigit((unsigned char)s[1]))))
        return -1;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

int cu_parse_size(const char *s, int64_t *out)
{
    char *end;
    long long v;
    int64_t mult = 1;

    if (s == NULL || !isdigit((unsigned char)s[0]))
        return -1;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0)
        return -1;
    switch (*end) {
    case '\0':
        break;
    case 'k': case 'K':
        mult = 1024;
        end++;
        break;
    case 'm': case 'M':
        mult = 1024 * 1024;
        end++;
        break;
    case 'g': case 'G':
        mult = 1024 * 1024 * 1024;
        end++;
        break;
    default:
        return -1;
    }
    if (*end != '\0' || v > INT64_MAX / mult)
        return -1;
    *out = v * mult;
    return 0;
}

static int copy(char *dst, size_t cap, const char *src, size_t n)
{
    if (n == 0 || n >= cap)
        return -1;
    memcpy(dst, src, n);
    dst[n] = '\0';
    return 0;
}

int cu_parse_server(const char *s, char *host, size_t hcap, char *port, size_t pcap)
{
    const char *hs = s, *he, *ps = NULL;
    int64_t num;

    if (s == NULL || s[0] == '\0')
        return -1;
    if (s[0] == '[') {
        hs = s + 1;
        he = strchr(hs, ']');
        if (he == NULL || (he[1] != '\0' && he[1] != ':'))
            return -1;
        if (he[1] == ':')
            ps = he + 2;
    } else {
        const char *colon = strchr(s, ':');

        /* Two or more colons without brackets: a bare IPv6 address. */
        if (colon != NULL && strchr(colon + 1, ':') == NULL) {
            he = colon;
            ps = colon + 1;
        } else {
            he = s + strlen(s);
        }
    }
    if (copy(host, hcap, hs, (size_t)(he - hs)) < 0)
        return -1;
    if (ps == NULL)
        ps = CU_DEFAULT_PORT;
    if (cu_parse_int(ps, 1, 65535, &num) < 0)
        return -1;
    return copy(port, pcap, ps, strlen(ps));
}

int cu_exit_status(const cu_error *err)
{
    if (err->code == 0 && strcmp(err->reason, "file") == 0)
        return CU_EXIT_FILE;
    if (err->code == 0 && strcmp(err->reason, "protocol") == 0)
        return CU_EXIT_PROTOCOL;
    if (err->code == 0)
        return CU_EXIT_UNAVAILABLE;
    if (err->code == 401)
        return CU_EXIT_AUTH;
    if (err->code == 507)
        return CU_EXIT_STORAGE;
    if (err->code == 422 && strcmp(err->reason, "checksum_mismatch") == 0)
        return CU_EXIT_CHECKSUM;
    if (err->code >= 400 && err->code < 500)
        return CU_EXIT_REFUSED;
    return CU_EXIT_UNAVAILABLE;
}

int64_t cu_retry_wait_ms(int64_t backoff_ms, int64_t retry_after_ms, int64_t margin_ms)
{
    if (retry_after_ms <= 0)
        return backoff_ms;
    /* A server's word, bounded: no overflow, no sleeping for days. */
    int64_t wait = retry_after_ms < CU_LOCK_WAIT_MAX_MS ? retry_after_ms : CU_LOCK_WAIT_MAX_MS;
    return wait + margin_ms;
}

void cu_describe_error(char *buf, size_t cap, const cu_error *err)
{
    if (err->code == 0) {
        snprintf(buf, cap, "%s", err->message[0] ? err->message : err->reason);
        return;
    }
    snprintf(buf, cap, "server answered %d %s%s%s", err->code, err->reason,
             err->message[0] ? ": " : "", err->message);
}

/* Reads the first line of a credential file, without trailing whitespace. */
static int read_credential(const char *path, char **out, char *msg, size_t cap)
{
    char buf[CREDENTIAL_MAX + 1];
    size_t len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        snprintf(msg, cap, "cannot open credential file %s: %s", path, strerror(errno));
        return -1;
    }
    while (len < CREDENTIAL_MAX) {
        ssize_t n = read(fd, buf + len, CREDENTIAL_MAX - len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(msg, cap, "cannot read credential file %s: %s", path, strerror(errno));
            (void)close(fd);
            return -1;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    (void)close(fd);
    buf[len] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    len = strlen(buf);
    while (len > 0 && isspace((unsigned char)buf[len - 1]))
        buf[--len] = '\0';
    if (len == 0) {
        snprintf(msg, cap, "credential file %s is empty", path);
        return -1;
    }
    *out = strdup(buf);
    explicit_bzero(buf, sizeof buf);
    if (*out == NULL) {
        snprintf(msg, cap, "out of memory");
        return -1;
    }
    return 0;
}

enum { OPT_STATE = 256, OPT_RETRIES, OPT_LIMIT_RATE, OPT_WINDOW, OPT_TIMEOUT, OPT_JSON,
       OPT_CRED_FILE, OPT_LIMIT };

static const struct option long_options[] = {
    { "server", required_argument, NULL, 's' },
    { "user", required_argument, NULL, 'u' },
    { "credential", required_argument, NULL, 'c' },
    { "credential-file", required_argument, NULL, OPT_CRED_FILE },
    { "state", required_argument, NULL, OPT_STATE },
    { "retries", required_argument, NULL, OPT_RETRIES },
    { "limit-rate", required_argument, NULL, OPT_LIMIT_RATE },
    { "window", required_argument, NULL, OPT_WINDOW },
    { "timeout", required_argument, NULL, OPT_TIMEOUT },
    { "limit", required_argument, NULL, OPT_LIMIT },
    { "quiet", no_argument, NULL, 'q' },
    { "json", no_argument, NULL, OPT_JSON },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
};

typedef struct raw_options {
    const char *server, *user, *credential, *credential_file;
} raw_options;

static int bad(char *msg, size_t cap, const char *what, const char *value)
{
    snprintf(msg, cap, "invalid %s: '%s'", what, value);
    return CU_EXIT_USAGE;
}

/* One option from getopt; CU_EXIT_OK or CU_EXIT_USAGE. */
static int take_option(int ch, const char *arg, cu_options *o, raw_options *raw, char *msg,
                       size_t cap)
{
    int64_t v;

    switch (ch) {
    case 's': raw->server = arg; return CU_EXIT_OK;
    case 'u': raw->user = arg; return CU_EXIT_OK;
    case 'c': raw->credential = arg; return CU_EXIT_OK;
    case OPT_CRED_FILE: raw->credential_file = arg; return CU_EXIT_OK;
    case 'q': o->quiet = true; return CU_EXIT_OK;
    case 'h': o->help = true; return CU_EXIT_OK;
    case OPT_JSON: o->json = true; return CU_EXIT_OK;
    case OPT_STATE:
        free(o->state_path);
        o->state_path = strdup(arg);
        if (o->state_path == NULL || arg[0] == '\0')
            return bad(msg, cap, "--state", arg);
        return CU_EXIT_OK;
    case OPT_RETRIES:
        if (cu_parse_int(arg, 0, 1000, &v) < 0)
            return bad(msg, cap, "--retries (0 to 1000)", arg);
        o->retries = (int)v;
        return CU_EXIT_OK;
    case OPT_LIMIT_RATE:
        if (cu_parse_size(arg, &v) < 0 || v > ((int64_t)1 << 40))
            return bad(msg, cap, "--limit-rate (bytes per second, k/m/g suffix)", arg);
        o->limit_rate = v;
        return CU_EXIT_OK;
    case OPT_WINDOW:
        if (cu_parse_int(arg, 1, 64, &v) < 0)
            return bad(msg, cap, "--window (1 to 64)", arg);
        o->window = (int)v;
        return CU_EXIT_OK;
    case OPT_TIMEOUT:
        if (cu_parse_int(arg, 1, 86400, &v) < 0)
            return bad(msg, cap, "--timeout (seconds, 1 to 86400)", arg);
        o->timeout_ms = (int)v * 1000;
        return CU_EXIT_OK;
    case OPT_LIMIT:
        if (cu_parse_int(arg, 1, 1000, &v) < 0)
            return bad(msg, cap, "--limit (1 to 1000)", arg);
        o->list_limit = (int)v;
        return CU_EXIT_OK;
    default:
        return CU_EXIT_USAGE;
    }
}

/* A credential travels in JSON strings: one that is not UTF-8 could never
 * be sent, and is a usage error now rather than a request that fails on
 * every retry. */
static bool credential_sendable(const char *cred)
{
    json_t *s = json_string(cred);
    bool ok = s != NULL;
    json_decref(s);
    return ok;
}

/* Server, user and credential: flags win over the environment. */
static int resolve(cu_options *o, const raw_options *raw, char *msg, size_t cap)
{
    const char *server = raw->server ? raw->server : getenv("CHUNKUP_SERVER");
    const char *user = raw->user ? raw->user : getenv("CHUNKUP_USER");
    const char *cred = raw->credential;

    if (server == NULL || server[0] == '\0')
        server = CU_DEFAULT_SERVER;
    if (cu_parse_server(server, o->host, sizeof o->host, o->port, sizeof o->port) < 0)
        return bad(msg, cap, "server (HOST:PORT)", server);
    if (strchr(o->host, ':') != NULL)
        snprintf(o->server, sizeof o->server, "[%s]:%s", o->host, o->port);
    else
        snprintf(o->server, sizeof o->server, "%s:%s", o->host, o->port);
    if (user == NULL || user[0] == '\0') {
        snprintf(msg, cap, "no user: pass --user ID or set CHUNKUP_USER");
        return CU_EXIT_USAGE;
    }
    if (cu_parse_int(user, 1, INT64_MAX, &o->user_id) < 0)
        return bad(msg, cap, "user id", user);
    if (raw->credential && raw->credential_file) {
        snprintf(msg, cap, "--credential and --credential-file are mutually exclusive");
        return CU_EXIT_USAGE;
    }
    if (raw->credential_file) {
        if (read_credential(raw->credential_file, &o->credential, msg, cap) < 0)
            return CU_EXIT_FILE;
    } else {
        if (cred == NULL)
            cred = getenv("CHUNKUP_CREDENTIAL");
        if (cred == NULL || cred[0] == '\0') {
            snprintf(msg, cap, "no credential: pass --credential, --credential-file or set "
                               "CHUNKUP_CREDENTIAL");
            return CU_EXIT_USAGE;
        }
        o->credential = strdup(cred);
        if (o->credential == NULL) {
            snprintf(msg, cap, "out of memory");
            return CU_EXIT_USAGE;
        }
    }
    if (!credential_sendable(o->credential)) {
        snprintf(msg, cap, "the credential%s%s is not valid UTF-8",
                 raw->credential_file ? " in " : "", raw->credential_file ? raw->credential_file : "");
        return CU_EXIT_USAGE;
    }
    return CU_EXIT_OK;
}

static int check_operands(const cu_options *o, char *msg, size_t cap)
{
    int64_t id;

    if (strcmp(o->command, "upload") == 0) {
        if (o->nargs < 1) {
            snprintf(msg, cap, "upload needs at least one FILE");
            return CU_EXIT_USAGE;
        }
    } else if (strcmp(o->command, "status") == 0 || strcmp(o->command, "abort") == 0) {
        if (o->nargs != 1 || cu_parse_int(o->args[0], 1, INT64_MAX, &id) < 0) {
            snprintf(msg, cap, "%s needs exactly one document ID (a positive integer)",
                     o->command);
            return CU_EXIT_USAGE;
        }
    } else if (strcmp(o->command, "list") == 0) {
        if (o->nargs != 0) {
            snprintf(msg, cap, "list takes no operands");
            return CU_EXIT_USAGE;
        }
    } else {
        snprintf(msg, cap, "unknown command '%s'", o->command);
        return CU_EXIT_USAGE;
    }
    return CU_EXIT_OK;
}

int cu_options_parse(int argc, char **argv, cu_options *o, char *msg, size_t cap)
{
    raw_options raw = { NULL, NULL, NULL, NULL };
    int ch, rc;

    memset(o, 0, sizeof *o);
    o->retries = 10;
    o->timeout_ms = 30000;
    msg[0] = '\0';
    /* optind = 0 makes glibc reinitialise, so tests can parse repeatedly. */
    optind = 0;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "s:u:c:qh", long_options, NULL)) != -1) {
        if (ch == '?' || ch == ':') {
            snprintf(msg, cap, "unknown option or missing value: '%s'", argv[optind - 1]);
            return CU_EXIT_USAGE;
        }
        rc = take_option(ch, optarg, o, &raw, msg, cap);
        if (rc != CU_EXIT_OK)
            return rc;
    }
    if (o->help)
        return CU_EXIT_OK;
    if (optind >= argc) {
        snprintf(msg, cap, "no command given (upload, status, list or abort)");
        return CU_EXIT_USAGE;
    }
    o->command = argv[optind];
    o->args = argv + optind + 1;
    o->nargs = argc - optind - 1;
    rc = check_operands(o, msg, cap);
    if (rc != CU_EXIT_OK)
        return rc;
    return resolve(o, &raw, msg, cap);
}

void cu_options_free(cu_options *o)
{
    if (o->credential != NULL) {
        explicit_bzero(o->credential, strlen(o->credential));
        free(o->credential);
    }
    free(o->state_path);
    o->credential = NULL;
    o->state_path = NULL;
}
