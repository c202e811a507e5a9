/* Configuration: defaults, parsing of values, and the precedence of the
 * file, the environment and the command line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include <cmocka.h>

#include "chunkd/config.h"

extern char **environ;

static chunkd_config cfg;
static char err[512];
static char dir[64];
static char path[128];

/* A mkdtemp template: the prefix and six 'X' for mkdtemp to replace. */
static void tmp_template(char *out, size_t size, const char *prefix)
{
    size_t n = strlen(prefix);
    assert_true(n + 7 <= size);
    memcpy(out, prefix, n);
    memset(out + n, 'X', 6);
    out[n + 6] = '\0';
}

/* No CHUNKD_* variable of the caller's shell may leak into a test. */
static void clear_chunkd_env(void)
{
    for (;;) {
        char name[128] = "";
        for (char **e = environ; *e; e++) {
            const char *eq = strchr(*e, '=');
            if (strncmp(*e, "CHUNKD_", 7) == 0 && eq && (size_t)(eq - *e) < sizeof name) {
                memcpy(name, *e, (size_t)(eq - *e));
                name[eq - *e] = '\0';
                break;
            }
        }
        if (!name[0])
            return;
        assert_int_equal(unsetenv(name), 0);
    }
}

static int setup(void **state)
{
    (void)state;
    clear_chunkd_env();
    config_defaults(&cfg);
    memset(err, 0, sizeof err);
    tmp_template(dir, sizeof dir, "/tmp/chunkd-cfg-");
    if (!mkdtemp(dir))
        return -1;
    snprintf(path, sizeof path, "%s/chunkd.conf", dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    clear_chunkd_env();
    if (unlink(path) != 0 && access(path, F_OK) == 0)
        return -1;
    return rmdir(dir);
}

static void write_file(const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* config_load over argv given as a NULL-terminated list after argv[0]. */
static int load(const char *first, ...)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = (char *)"chunkd";
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a; a = va_arg(ap, const char *)) {
        assert_true(argc < 31);
        argv[argc++] = (char *)a;
    }
    va_end(ap);
    argv[argc] = NULL;
    return config_load(&cfg, argc, argv, err, sizeof err);
}

static void assert_err_has(const char *needle)
{
    if (!strstr(err, needle))
        print_error("error text \"%s\" lacks \"%s\"\n", err, needle);
    assert_non_null(strstr(err, needle));
}

static void test_defaults(void **state)
{
    (void)state;
    assert_string_equal(cfg.listen, "127.0.0.1:9400");
    assert_string_equal(cfg.storage_dir, "./var/storage");
    assert_string_equal(cfg.node_id, "");
    assert_string_equal(cfg.ready_file, "");
    assert_string_equal(cfg.log_level, "info");
    assert_string_equal(cfg.redis_host, "127.0.0.1");
    assert_int_equal(cfg.redis_port, 6379);
    assert_int_equal(cfg.redis_db, 0);
    assert_string_equal(cfg.redis_prefix, "chunkd:");
    assert_string_equal(cfg.mysql_host, "127.0.0.1");
    assert_int_equal(cfg.mysql_port, 3306);
    assert_string_equal(cfg.mysql_user, "chunkd");
    assert_string_equal(cfg.mysql_database, "chunkd");
    assert_int_equal(cfg.workers, 0);
    assert_int_equal(cfg.max_file_size, 524288000);
    assert_int_equal(cfg.chunk_size, 65536);
    assert_int_equal(cfg.max_chunk_size, 1048576);
    assert_int_equal(cfg.max_line, 65536);
    assert_int_equal(cfg.max_connections, 10000);
    assert_int_equal(cfg.idle_timeout_ms, 300000);
    assert_int_equal(cfg.upload_ttl_s, 86400);
    assert_int_equal(cfg.list_limit_max, 1000);
    assert_int_equal(config_validate(&cfg, err, sizeof err), 0);
}

static void test_set_names_and_suffixes(void **state)
{
    (void)state;
    assert_int_equal(config_set(&cfg, "max-chunk-size", "2m", err, sizeof err), 0);
    assert_int_equal(cfg.max_chunk_size, 2 * 1048576);
    assert_int_equal(config_set(&cfg, "chunk_size", "64k", err, sizeof err), 0);
    assert_int_equal(cfg.chunk_size, 65536);
    assert_int_equal(config_set(&cfg, "chunk-size", "3K", err, sizeof err), 0);
    assert_int_equal(cfg.chunk_size, 3072);
    assert_int_equal(config_set(&cfg, "max_file_size", "1g", err, sizeof err), 0);
    assert_int_equal(cfg.max_file_size, INT64_C(1) << 30);
    assert_int_equal(config_set(&cfg, "max_file_size", "64G", err, sizeof err), 0);
    assert_true(cfg.max_file_size == INT64_C(64) << 30);
    assert_int_equal(config_set(&cfg, "max_chunk_size", "1M", err, sizeof err), 0);
    assert_int_equal(cfg.max_chunk_size, 1048576);
    assert_int_equal(config_set(&cfg, "redis-port", "6380", err, sizeof err), 0);
    assert_int_equal(cfg.redis_port, 6380);
    assert_int_equal(config_set(&cfg, "storage-dir", "/srv/chunkd", err, sizeof err), 0);
    assert_string_equal(cfg.storage_dir, "/srv/chunkd");
    assert_int_equal(config_set(&cfg, "mysql_password", "", err, sizeof err), 0);
    assert_string_equal(cfg.mysql_password, "");
}

static void test_set_rejects_bad_values(void **state)
{
    (void)state;
    static const char *const junk[] = {"",    " 5",  "5 ",  "1.5",  "12x", "1kk", "k",
                                       "0x10", "--1", "1e3", "64kb", "99999999999999999999"};
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
        err[0] = '\0';
        assert_int_equal(config_set(&cfg, "chunk_size", junk[i], err, sizeof err), -1);
        assert_err_has("chunk_size");
        assert_err_has("not an integer");
    }
    /* Overflow through the suffix is refused, not wrapped. */
    assert_int_equal(config_set(&cfg, "max_file_size", "9223372036854775807k", err, sizeof err), -1);
    assert_err_has("max_file_size");
    assert_int_equal(cfg.chunk_size, 65536); /* failures leave the value alone */
    assert_int_equal(cfg.max_file_size, 524288000);
}

static void test_set_range(void **state)
{
    (void)state;
    assert_int_equal(config_set(&cfg, "chunk_size", "0", err, sizeof err), -1);
    assert_err_has("chunk_size");
    assert_err_has("outside");
    assert_int_equal(config_set(&cfg, "redis_port", "65536", err, sizeof err), -1);
    assert_err_has("redis_port");
    assert_int_equal(config_set(&cfg, "redis_port", "-1", err, sizeof err), -1);
    assert_err_has("redis_port");
    assert_int_equal(config_set(&cfg, "max_file_size", "65g", err, sizeof err), -1);
    assert_err_has("max_file_size");
    assert_int_equal(config_set(&cfg, "max_line", "1023", err, sizeof err), -1);
    assert_err_has("max_line");
    assert_int_equal(config_set(&cfg, "max_line", "1k", err, sizeof err), 0);
    assert_int_equal(cfg.max_line, 1024);
    assert_int_equal(config_set(&cfg, "redis_port", "65535", err, sizeof err), 0);
    assert_int_equal(config_set(&cfg, "workers", "-1", err, sizeof err), -1);
    assert_err_has("workers");
    assert_int_equal(cfg.workers, 0);
}

static void test_set_strings_and_names(void **state)
{
    (void)state;
    char v[CFG_STR_MAX + 1];
    memset(v, 'h', CFG_STR_MAX - 1);
    v[CFG_STR_MAX - 1] = '\0';
    assert_int_equal(config_set(&cfg, "redis_host", v, err, sizeof err), 0);
    assert_string_equal(cfg.redis_host, v);
    v[CFG_STR_MAX - 1] = 'h';
    v[CFG_STR_MAX] = '\0';
    assert_int_equal(config_set(&cfg, "redis_host", v, err, sizeof err), -1);
    assert_err_has("redis_host");

    assert_int_equal(config_set(&cfg, "nope", "1", err, sizeof err), -1);
    assert_err_has("nope");
    assert_int_equal(config_set(&cfg, "chunk", "1", err, sizeof err), -1);
    assert_int_equal(config_set(&cfg, "chunk_size_", "1", err, sizeof err), -1);
    assert_int_equal(config_set(&cfg, "CHUNK_SIZE", "1", err, sizeof err), -1);
}

static void test_file(void **state)
{
    (void)state;
    write_file("# chunkd test configuration\n"
               "\n"
               "   \t \n"
               "  # indented comment = still a comment\n"
               "listen = 0.0.0.0:9500\n"
               "chunk_size=128k   \n"
               "\tmax_file_size   =   1g\n"
               "storage_dir = /tmp/with space\n"
               "redis_password = a=b\n"
               "node_id = no-newline-at-end");
    assert_int_equal(load("--config", path, NULL), 0);
    assert_string_equal(cfg.listen, "0.0.0.0:9500");
    assert_int_equal(cfg.chunk_size, 131072);
    assert_int_equal(cfg.max_file_size, INT64_C(1) << 30);
    assert_string_equal(cfg.storage_dir, "/tmp/with space");
    assert_string_equal(cfg.redis_password, "a=b");
    assert_string_equal(cfg.node_id, "no-newline-at-end");
    assert_int_equal(cfg.max_chunk_size, 1048576); /* untouched */
}

static void test_file_errors_name_the_line(void **state)
{
    (void)state;
    char want[256];

    write_file("# ok\nchunk_size = 1k\nbogus_key = 1\n");
    assert_int_equal(load("--config", path, NULL), -1);
    snprintf(want, sizeof want, "%s:3:", path);
    assert_err_has(want);
    assert_err_has("bogus_key");

    write_file("listen = 127.0.0.1:1\nno equals sign here\n");
    assert_int_equal(load("--config", path, NULL), -1);
    snprintf(want, sizeof want, "%s:2:", path);
    assert_err_has(want);

    write_file("\n\n\n\nchunk_size = 0\n");
    assert_int_equal(load("--config", path, NULL), -1);
    snprintf(want, sizeof want, "%s:5:", path);
    assert_err_has(want);
    assert_err_has("chunk_size");

    char missing[160];
    snprintf(missing, sizeof missing, "%s/absent.conf", dir);
    assert_int_equal(load("--config", missing, NULL), -1);
    assert_err_has(missing);
    assert_err_has("No such file");
}

static void test_precedence(void **state)
{
    (void)state;
    write_file("chunk_size = 128k\nmax_chunk_size = 2m\nredis_host = from-file\n"
               "mysql_host = from-file\n");

    assert_int_equal(setenv("CHUNKD_CHUNK_SIZE", "32k", 1), 0);
    assert_int_equal(setenv("CHUNKD_REDIS_HOST", "from-env", 1), 0);
    assert_int_equal(load("--config", path, "--chunk-size=16k", NULL), 0);
    assert_int_equal(cfg.chunk_size, 16384);            /* argv over env */
    assert_string_equal(cfg.redis_host, "from-env");    /* env over file */
    assert_string_equal(cfg.mysql_host, "from-file");   /* file over default */
    assert_int_equal(cfg.max_chunk_size, 2 * 1048576);

    /* The file applies first even when --config comes last on the line. */
    config_defaults(&cfg);
    assert_int_equal(unsetenv("CHUNKD_CHUNK_SIZE"), 0);
    char eqarg[200];
    snprintf(eqarg, sizeof eqarg, "--config=%s", path);
    assert_int_equal(load("--chunk-size", "8k", eqarg, NULL), 0);
    assert_int_equal(cfg.chunk_size, 8192);
    assert_string_equal(cfg.mysql_host, "from-file");
}

static void test_env_config_path_and_errors(void **state)
{
    (void)state;
    write_file("redis_db = 5\n");
    assert_int_equal(setenv("CHUNKD_CONFIG", path, 1), 0);
    assert_int_equal(load(NULL), 0);
    assert_int_equal(cfg.redis_db, 5);

    assert_int_equal(setenv("CHUNKD_MAX_LINE", "10", 1), 0);
    assert_int_equal(load(NULL), -1);
    assert_err_has("CHUNKD_MAX_LINE");
    assert_err_has("max_line");
}

static void test_argv_errors(void **state)
{
    (void)state;
    assert_int_equal(load("stray", NULL), -1);
    assert_err_has("stray");
    assert_int_equal(load("--bogus=1", NULL), -1);
    assert_err_has("--bogus");
    assert_int_equal(load("--chunk-size", NULL), -1);
    assert_err_has("chunk_size");
    assert_int_equal(load("--config", NULL), -1);
    assert_err_has("--config");
    assert_int_equal(load("--max-line=12", NULL), -1);
    assert_err_has("max_line");
}

/* --help and --version print to stdout and ask the caller to exit 0. */
static void test_help_and_version(void **state)
{
    (void)state;
    assert_int_equal(fflush(stdout), 0);
    int saved = dup(STDOUT_FILENO);
    assert_true(saved >= 0);
    int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    assert_true(devnull >= 0);
    assert_true(dup2(devnull, STDOUT_FILENO) >= 0);
    close(devnull);
    int h1 = load("--help", NULL);
    int h2 = load("--chunk-size=oops", "-h", NULL);
    int v = load("--version", NULL);
    assert_int_equal(fflush(stdout), 0);
    assert_true(dup2(saved, STDOUT_FILENO) >= 0);
    close(saved);
    assert_int_equal(h1, 1);
    assert_int_equal(h2, 1);
    assert_int_equal(v, 1);
}

static void test_validate_relations(void **state)
{
    (void)state;
    assert_int_equal(load("--chunk-size=2m", NULL), -1);
    assert_err_has("chunk_size");
    assert_err_has("max_chunk_size");

    config_defaults(&cfg);
    assert_int_equal(load("--chunk-size=2m", "--max-chunk-size=2m", NULL), 0);

    config_defaults(&cfg);
    cfg.chunk_size = cfg.max_chunk_size + 1;
    assert_int_equal(config_validate(&cfg, err, sizeof err), -1);

    config_defaults(&cfg);
    assert_int_equal(config_set(&cfg, "listen", "nocolon", err, sizeof err), 0);
    assert_int_equal(config_validate(&cfg, err, sizeof err), -1);
    assert_err_has("listen");

    config_defaults(&cfg);
    assert_int_equal(config_set(&cfg, "log_level", "verbose", err, sizeof err), 0);
    assert_int_equal(config_validate(&cfg, err, sizeof err), -1);
    assert_err_has("log_level");

    config_defaults(&cfg);
    assert_int_equal(config_set(&cfg, "storage_dir", "", err, sizeof err), 0);
    assert_int_equal(config_validate(&cfg, err, sizeof err), -1);
    assert_err_has("storage_dir");
}

static void test_split_hostport(void **state)
{
    (void)state;
    char host[64];
    int port = -1;
    assert_int_equal(config_split_hostport("h:1", host, sizeof host, &port), 0);
    assert_string_equal(host, "h");
    assert_int_equal(port, 1);
    assert_int_equal(config_split_hostport("[::1]:80", host, sizeof host, &port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 80);
    assert_int_equal(config_split_hostport("127.0.0.1:0", host, sizeof host, &port), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 0);
    assert_int_equal(config_split_hostport("h:65535", host, sizeof host, &port), 0);
    assert_int_equal(port, 65535);

    static const char *const bad[] = {"nocolon", "h:99999", ":80",   "h:",    "h:-1",
                                      "h:80x",   "h: 80",   "[::1]", "[::1]80", "[::1",
                                      "[]:80",   "",        "h:65536"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        port = -1;
        if (config_split_hostport(bad[i], host, sizeof host, &port) != -1)
            print_error("\"%s\" was accepted (port %d)\n", bad[i], port);
        assert_int_equal(config_split_hostport(bad[i], host, sizeof host, &port), -1);
    }

    /* The host must fit the caller's buffer with its terminator. */
    char small[4];
    assert_int_equal(config_split_hostport("abc:1", small, sizeof small, &port), 0);
    assert_string_equal(small, "abc");
    assert_int_equal(config_split_hostport("abcd:1", small, sizeof small, &port), -1);
}

/* A port is a number, not a size: "1k" must not become 1024. */
static void test_hostport_rejects_size_suffix(void **state)
{
    (void)state;
    char host[64];
    int port = -1;
    assert_int_equal(config_split_hostport("h:1k", host, sizeof host, &port), -1);
    assert_int_equal(config_split_hostport("h:+80", host, sizeof host, &port), -1);
    assert_int_equal(config_split_hostport("h:0x50", host, sizeof host, &port), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_names_and_suffixes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_rejects_bad_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_range, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_strings_and_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_errors_name_the_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_precedence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_config_path_and_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_argv_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_help_and_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_validate_relations, setup, teardown),
        cmocka_unit_test_setup_teardown(test_split_hostport, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostport_rejects_size_suffix, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
