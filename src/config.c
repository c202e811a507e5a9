/* Option table and its three sources (file, environment, argv). */
#include "chunkd/config.h"

#include "chunkd/util.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

enum opt_type { OPT_STR, OPT_INT };

typedef struct opt_def {
    const char *name;
    enum opt_type type;
    size_t offset;
    size_t size; /* OPT_STR: buffer size */
    int64_t min, max;
    const char *def;
    const char *help;
} opt_def;

#define STR(field, def, help)                                                       \
    { #field, OPT_STR, offsetof(chunkd_config, field),                              \
      sizeof(((chunkd_config *)0)->field), 0, 0, def, help }
#define INT(field, lo, hi, def, help)                                               \
    { #field, OPT_INT, offsetof(chunkd_config, field), sizeof(int64_t), lo, hi, def, help }

/* The build points this at the source tree's web/ folder, so a chunkd run
 * from its build folder serves the page without configuration. */
#ifndef CHUNKD_DEFAULT_WEB_ROOT
#define CHUNKD_DEFAULT_WEB_ROOT "./web"
#endif

#define MiB (INT64_C(1) << 20)
#define GiB (INT64_C(1) << 30)

static const opt_def opts[] = {
    STR(listen, "127.0.0.1:9400", "address to accept clients on (host:port)"),
    STR(storage_dir, "./var/storage", "directory that holds uploaded files"),
    STR(node_id, "", "name of this instance (default hostname-pid)"),
    STR(ready_file, "", "file to write the bound port to once serving"),
    STR(admin_listen, "", "host:port for GET /health and /metrics (empty: off)"),
    STR(web_root, CHUNKD_DEFAULT_WEB_ROOT,
        "folder of the web UI served on the client port (empty: none)"),
    STR(log_level, "info", "debug, info, warn or error"),
    STR(redis_host, "127.0.0.1", "Redis host"),
    INT(redis_port, 1, 65535, "6379", "Redis port"),
    STR(redis_password, "", "Redis password (AUTH), empty for none"),
    INT(redis_db, 0, 1023, "0", "Redis database number"),
    STR(redis_prefix, "chunkd:", "prefix of every Redis key"),
    STR(mysql_host, "127.0.0.1", "MySQL/MariaDB host"),
    INT(mysql_port, 1, 65535, "3306", "MySQL/MariaDB port"),
    STR(mysql_socket, "", "MySQL/MariaDB unix socket (overrides host:port)"),
    STR(mysql_user, "chunkd", "MySQL user"),
    STR(mysql_password, "", "MySQL password"),
    STR(mysql_database, "chunkd", "MySQL database"),
    INT(workers, 0, 256, "0", "worker threads (0: one per core)"),
    INT(max_file_size, 0, 64 * GiB, "524288000", "largest accepted file in bytes"),
    INT(chunk_size, 1, 64 * MiB, "65536", "chunk size suggested to clients"),
    INT(max_chunk_size, 1, 64 * MiB, "1048576", "largest accepted chunk in bytes"),
    INT(max_line, 1024, 16 * MiB, "65536", "longest control line in bytes"),
    INT(max_line_unauth, 256, 16 * MiB, "4096",
        "longest control line before the connection has authenticated"),
    INT(request_timeout_ms, 100, INT64_C(3600000), "60000",
        "a control line or chunk that has started must arrive in full within this"),
    INT(max_connections, 1, 1000000, "10000", "connections served at once"),
    INT(max_connections_per_ip, 1, 1000000, "1024", "connections served at once per client address"),
    INT(max_uploads_per_user, 0, 1000000, "100",
        "uploads in progress at once per user (0: no limit)"),
    INT(max_output_buffer, 4096, 256 * MiB, "1048576",
        "unsent reply bytes after which a client is not read"),
    INT(idle_timeout_ms, 100, INT64_C(86400000), "300000", "close idle connections after"),
    INT(backend_timeout_ms, 50, 600000, "5000", "Redis and MySQL connect/IO timeout"),
    INT(upload_ttl_s, 1, INT64_C(31536000), "86400", "lifetime of an idle upload's Redis key"),
    INT(storage_admission, 0, 1, "1",
        "1: refuse an upload up front (507) when the volume cannot hold it and every upload in "
        "flight"),
    INT(min_free_bytes, 0, INT64_C(1) << 50, "16m", "free space admission keeps in reserve"),
    INT(sync_interval_bytes, 0, 4 * GiB, "16m",
        "bytes written between fdatasync checkpoints (0: every chunk)"),
    INT(sync_when_idle, 0, 1, "1",
        "1: also checkpoint an upload every 4 MiB while its worker has no sync running, so the "
        "disk flushes while bytes arrive (docs/DURABILITY.md)"),
    INT(sync_batching, 0, 1, "1",
        "1: make files synced at the same time durable with one syncfs where the kernel and file "
        "system allow it (docs/DURABILITY.md)"),
    INT(sync_batch_max_unwritten, 0, INT64_C(1) << 50, "16m",
        "batch syncs only while the machine has at most this many bytes not yet written (a "
        "syncfs waits for all of them)"),
    INT(lease_ttl_ms, 500, 600000, "10000",
        "a writer's lease on an upload; a crashed writer's lapses after this"),
    INT(shutdown_grace_ms, 0, 600000, "5000",
        "at shutdown, how long chunks in flight may take to finish"),
    INT(upload_expiry_s, 1, INT64_C(31536000), "86400",
        "uploads idle this long are failed with reason 'expired'"),
    INT(sweep_interval_s, 0, 86400, "60", "how often to sweep expired uploads (0: never)"),
    INT(list_limit_max, 1, 100000, "1000", "most documents one list answers with"),
};

#define NOPTS (sizeof(opts) / sizeof(opts[0]))

static const opt_def *find_opt(const char *name, size_t len)
{
    for (size_t i = 0; i < NOPTS; i++) {
        const char *n = opts[i].name;
        if (strlen(n) != len)
            continue;
        size_t j = 0;
        /* accept dashes for underscores so flags read naturally */
        for (; j < len; j++) {
            char c = name[j] == '-' ? '_' : name[j];
            if (c != n[j])
                break;
        }
        if (j == len)
            return &opts[i];
    }
    return NULL;
}

static int parse_int(const char *s, int64_t *out)
{
    if (*s == '\0' || isspace((unsigned char)*s))
        return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s)
        return -1;
    int64_t mult = 1;
    if (*end != '\0') {
        switch (*end) {
        case 'k': case 'K': mult = 1024; break;
        case 'm': case 'M': mult = MiB; break;
        case 'g': case 'G': mult = GiB; break;
        default: return -1;
        }
        if (end[1] != '\0')
            return -1;
    }
    if (v > INT64_MAX / mult || v < INT64_MIN / mult)
        return -1;
    *out = (int64_t)v * mult;
    return 0;
}

static int set_opt(chunkd_config *cfg, const opt_def *o, const char *value, char *err,
                   size_t errlen)
{
    char *field = (char *)cfg + o->offset;
    if (o->type == OPT_STR) {
        size_t n = strlen(value);
        if (n >= o->size) {
            snprintf(err, errlen, "%s: value longer than %zu bytes", o->name, o->size - 1);
            return -1;
        }
        memcpy(field, value, n + 1);
        return 0;
    }
    int64_t v;
    if (parse_int(value, &v) != 0) {
        snprintf(err, errlen, "%s: '%s' is not an integer", o->name, value);
        return -1;
    }
    if (v < o->min || v > o->max) {
        snprintf(err, errlen, "%s: %lld is outside %lld..%lld", o->name, (long long)v,
                 (long long)o->min, (long long)o->max);
        return -1;
    }
    memcpy(field, &v, sizeof v);
    return 0;
}

void config_defaults(chunkd_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    char err[256];
    for (size_t i = 0; i < NOPTS; i++)
        if (set_opt(cfg, &opts[i], opts[i].def, err, sizeof err) != 0)
            abort(); /* a bad default is a programming error */
}

int config_set(chunkd_config *cfg, const char *name, const char *value, char *err,
               size_t errlen)
{
    const opt_def *o = find_opt(name, strlen(name));
    if (!o) {
        snprintf(err, errlen, "unknown option '%s'", name);
        return -1;
    }
    return set_opt(cfg, o, value, err, errlen);
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

static int load_file(chunkd_config *cfg, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "config file %s: %s", path, strerror(errno));
        return -1;
    }
    char line[1024];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            snprintf(err, errlen, "%s:%d: line too long", path, lineno);
            rc = -1;
            break;
        }
        char *s = trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, errlen, "%s:%d: expected 'key = value'", path, lineno);
            rc = -1;
            break;
        }
        *eq = '\0';
        char *key = trim(s), *val = trim(eq + 1);
        char why[256];
        if (config_set(cfg, key, val, why, sizeof why) != 0) {
            snprintf(err, errlen, "%s:%d: %s", path, lineno, why);
            rc = -1;
            break;
        }
    }
    if (rc == 0 && ferror(f)) {
        snprintf(err, errlen, "config file %s: read error", path);
        rc = -1;
    }
    fclose(f);
    return rc;
}

static int load_env(chunkd_config *cfg, char *err, size_t errlen)
{
    for (size_t i = 0; i < NOPTS; i++) {
        char name[96] = "CHUNKD_";
        size_t n = strlen(name);
        for (const char *p = opts[i].name; *p && n + 1 < sizeof name; p++)
            name[n++] = (char)toupper((unsigned char)*p);
        name[n] = '\0';
        const char *v = getenv(name);
        if (!v)
            continue;
        char why[256];
        if (set_opt(cfg, &opts[i], v, why, sizeof why) != 0) {
            snprintf(err, errlen, "environment %s: %s", name, why);
            return -1;
        }
    }
    return 0;
}

void config_print_help(FILE *out)
{
    fprintf(out,
            "usage: chunkd [--config FILE] [--OPTION=VALUE ...]\n\n"
            "Resumable chunked upload server. Options come from built-in defaults,\n"
            "then the config file (key = value), then CHUNKD_<OPTION> environment\n"
            "variables, then flags. Sizes accept k, m and g suffixes.\n\n");
    for (size_t i = 0; i < NOPTS; i++) {
        const opt_def *o = &opts[i];
        char flag[64];
        snprintf(flag, sizeof flag, "--%s", o->name);
        for (char *p = flag + 2; *p; p++)
            if (*p == '_')
                *p = '-';
        fprintf(out, "  %-22s %s (default: %s)\n", flag, o->help,
                o->def[0] ? o->def : "\"\"");
    }
    fprintf(out, "  %-22s %s\n  %-22s %s\n  %-22s %s\n", "--config FILE",
            "read options from FILE", "--help", "show this help", "--version",
            "print the version");
}

/* The flag's value is either after '=' or the next argument. */
static const char *flag_value(int argc, char **argv, int *i, const char *eq)
{
    if (eq)
        return eq + 1;
    if (*i + 1 < argc)
        return argv[++*i];
    return NULL;
}

int config_load(chunkd_config *cfg, int argc, char **argv, char *err, size_t errlen)
{
    const char *config_path = NULL;
    /* First pass: only --config/--help/--version, so the file applies before
     * any flag regardless of order on the command line. */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            config_print_help(stdout);
            return 1;
        }
        if (strcmp(a, "--version") == 0) {
            printf("chunkd %s (protocol 1)\n", CHUNKD_VERSION);
            return 1;
        }
        if (strncmp(a, "--config", 8) == 0 && (a[8] == '\0' || a[8] == '=')) {
            config_path = flag_value(argc, argv, &i, a[8] == '=' ? a + 8 : NULL);
            if (!config_path) {
                snprintf(err, errlen, "--config needs a file name");
                return -1;
            }
        }
    }
    if (!config_path)
        config_path = getenv("CHUNKD_CONFIG");
    if (config_path && *config_path && load_file(cfg, config_path, err, errlen) != 0)
        return -1;
    if (load_env(cfg, err, errlen) != 0)
        return -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0) {
            snprintf(err, errlen, "unexpected argument '%s' (try --help)", a);
            return -1;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        if (len == 6 && strncmp(name, "config", 6) == 0) {
            if (!eq)
                i++;
            continue;
        }
        const opt_def *o = find_opt(name, len);
        if (!o) {
            snprintf(err, errlen, "unknown option '--%.*s' (try --help)", (int)len, name);
            return -1;
        }
        const char *v = flag_value(argc, argv, &i, eq);
        if (!v) {
            snprintf(err, errlen, "--%s needs a value", o->name);
            return -1;
        }
        if (set_opt(cfg, o, v, err, errlen) != 0)
            return -1;
    }
    return config_validate(cfg, err, errlen);
}

int config_split_hostport(const char *s, char *host, size_t hostlen, int *port)
{
    const char *colon;
    const char *h = s;
    size_t hlen;
    if (*s == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            return -1;
        h = s + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            return -1;
        hlen = (size_t)(colon - s);
    }
    if (hlen == 0 || hlen >= hostlen)
        return -1;
    int64_t p;
    /* Plain digits only: the size suffixes of parse_int make no sense here. */
    if (util_parse_i64(colon + 1, &p) != 0 || colon[1] < '0' || colon[1] > '9' || p > 65535)
        return -1;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *port = (int)p;
    return 0;
}

int config_validate(const chunkd_config *cfg, char *err, size_t errlen)
{
    char host[CFG_STR_MAX];
    int port;
    if (config_split_hostport(cfg->listen, host, sizeof host, &port) != 0) {
        snprintf(err, errlen, "listen: '%s' is not host:port", cfg->listen);
        return -1;
    }
    if (cfg->chunk_size > cfg->max_chunk_size) {
        snprintf(err, errlen, "chunk_size (%lld) exceeds max_chunk_size (%lld)",
                 (long long)cfg->chunk_size, (long long)cfg->max_chunk_size);
        return -1;
    }
    if (cfg->storage_dir[0] == '\0') {
        snprintf(err, errlen, "storage_dir must not be empty");
        return -1;
    }
    static const char *levels[] = {"debug", "info", "warn", "error"};
    for (size_t i = 0; i < 4; i++)
        if (strcmp(cfg->log_level, levels[i]) == 0)
            return 0;
    snprintf(err, errlen, "log_level: '%s' is not debug, info, warn or error", cfg->log_level);
    return -1;
}
