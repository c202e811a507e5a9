/* Harness: stack environment, temporary directories, child processes and
 * chunkd servers. */
#include "harness.h"
#include "harness_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static char it_program[64] = "it";
static bool it_passed;
static unsigned it_seq;

/* Servers still running, so an early exit (a crash, a failed group setup)
 * does not leave them behind. */
#define IT_MAX_CHILDREN 64
static pid_t it_children[IT_MAX_CHILDREN];

static void track_child(pid_t pid)
{
    for (int i = 0; i < IT_MAX_CHILDREN; i++)
        if (it_children[i] == 0) {
            it_children[i] = pid;
            return;
        }
}

static void untrack_child(pid_t pid)
{
    for (int i = 0; i < IT_MAX_CHILDREN; i++)
        if (it_children[i] == pid)
            it_children[i] = 0;
}

static void kill_children_at_exit(void)
{
    for (int i = 0; i < IT_MAX_CHILDREN; i++)
        if (it_children[i] > 0) {
            kill(-it_children[i], SIGKILL);
            waitpid(it_children[i], NULL, 0);
            it_children[i] = 0;
        }
}

int64_t it_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t it_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void it_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

const char *it_env(const char *key, const char *def)
{
    const char *v = getenv(key);
    return v && *v ? v : def;
}

const char *it_bin(const char *env_key)
{
    const char *v = getenv(env_key);
    if (!v || !*v) {
        fprintf(stderr, "it: %s is not set (run through ctest)\n", env_key);
        return NULL;
    }
    return v;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
        *--e = '\0';
    return s;
}

/* KEY=value lines; '#' comments, an optional "export ", optional quotes. */
static int load_stack_env(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "it: stack env %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[1024];
    int n = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        char *s = trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        if (strncmp(s, "export ", 7) == 0)
            s = trim(s + 7);
        char *eq = strchr(s, '=');
        if (!eq || eq == s) {
            fprintf(stderr, "it: stack env %s: not KEY=value: %s\n", path, s);
            rc = -1;
            break;
        }
        *eq = '\0';
        char *val = eq + 1;
        size_t vl = strlen(val);
        if (vl >= 2 && (val[0] == '"' || val[0] == '\'') && val[vl - 1] == val[0]) {
            val[vl - 1] = '\0';
            val++;
        }
        if (setenv(s, val, 1) != 0) {
            fprintf(stderr, "it: setenv %s: %s\n", s, strerror(errno));
            rc = -1;
            break;
        }
        n++;
    }
    if (rc == 0 && ferror(f)) {
        fprintf(stderr, "it: stack env %s: read error\n", path);
        rc = -1;
    }
    fclose(f);
    if (rc == 0 && n == 0) {
        fprintf(stderr, "it: stack env %s has no variables\n", path);
        rc = -1;
    }
    return rc;
}

int it_load_env_file(const char *path)
{
    return load_stack_env(path);
}

int it_init(const char *program)
{
    snprintf(it_program, sizeof it_program, "%s", program);
    /* A write to a connection the server closed must be an error we assert
     * on, not the end of the test program. */
    if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
        perror("it: signal(SIGPIPE)");
        return -1;
    }
    if (atexit(kill_children_at_exit) != 0) {
        fprintf(stderr, "it: atexit failed\n");
        return -1;
    }
    const char *env = getenv("CHUNKD_TEST_STACK_ENV");
    if (!env || !*env) {
        fprintf(stderr, "it: CHUNKD_TEST_STACK_ENV is not set; run through ctest "
                        "(fixture test_stack) or point it at a stack env file\n");
        return -1;
    }
    if (load_stack_env(env) != 0)
        return -1;
    if (it_db_connect() != 0)
        return -1;
    if (it_redis_connect() != 0) {
        it_db_disconnect();
        return -1;
    }
    return 0;
}

void it_shutdown(void)
{
    it_redis_disconnect();
    it_db_disconnect();
    kill_children_at_exit();
}

void it_test_begin(it_server *s)
{
    it_passed = false;
    if (s && s->pid > 0) {
        struct stat st;
        s->log_mark = stat(s->log_path, &st) == 0 ? st.st_size : 0;
    }
}

void it_pass(void)
{
    it_passed = true;
}

void it_test_end(it_server *s)
{
    /* A row a failed test left locked would stall the tests after it. */
    if (it_doc_unlock() != 0)
        fprintf(stderr, "it: could not end the test's row lock\n");
    if (!it_passed && s && s->log_path[0]) {
        fprintf(stderr, "it: test failed; server log since the test began (%s):\n",
                s->log_path);
        it_server_log_tail(s, s->log_mark, 60);
    }
}

/* The server of the program's fixtures. A program has at most one, so a
 * file-scope pointer is enough, and the cmocka state stays free for the
 * tests' own use (it_bad_inputs passes each row there). */
static it_server *it_fixture_srv;

void it_fixture_server(it_server *s)
{
    it_fixture_srv = s;
}

int it_fixture_test_setup(void **state)
{
    (void)state;
    if (!it_fixture_srv) {
        fprintf(stderr, "it: %s uses the shared fixtures without it_fixture_server\n",
                it_program);
        return -1;
    }
    it_test_begin(it_fixture_srv);
    return 0;
}

int it_fixture_test_teardown(void **state)
{
    (void)state;
    it_test_end(it_fixture_srv);
    return 0;
}

int it_fixture_group_teardown(void **state)
{
    (void)state;
    if (it_fixture_srv)
        it_server_stop(it_fixture_srv);
    it_shutdown();
    return 0;
}

int it_own_servers_test_setup(void **state)
{
    (void)state;
    it_test_begin(NULL);
    return 0;
}

void it_own_server_end(it_server *s)
{
    if (s->dir[0]) {
        it_test_end(s);
        it_server_stop(s);
    }
    memset(s, 0, sizeof *s);
}

int it_own_server_test_teardown(void **state)
{
    (void)state;
    if (it_fixture_srv)
        it_own_server_end(it_fixture_srv);
    return 0;
}

/* ---- temporary directories ---------------------------------------------- */

int it_tmpdir(const char *tag, char *out, size_t outlen)
{
    const char *base = it_env("CHUNKD_IT_TMPDIR", it_env("TMPDIR", "/tmp"));
    if (mkdir(base, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "it: mkdir %s: %s\n", base, strerror(errno));
        return -1;
    }
    int n = snprintf(out, outlen, "%s/%s-%s-", base, it_program, tag);
    if (n < 0 || (size_t)n + 6 >= outlen) {
        fprintf(stderr, "it: temporary path too long under %s\n", base);
        return -1;
    }
    /* mkdtemp replaces six trailing 'X' with a unique suffix */
    memset(out + n, 'X', 6);
    out[n + 6] = '\0';
    if (!mkdtemp(out)) {
        fprintf(stderr, "it: mkdtemp %s: %s\n", out, strerror(errno));
        return -1;
    }
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    int rc = flag == FTW_DP ? rmdir(path) : unlink(path);
    if (rc != 0 && errno != ENOENT)
        fprintf(stderr, "it: remove %s: %s\n", path, strerror(errno));
    return 0; /* keep going; report every leftover */
}

int it_rmtree(const char *path)
{
    if (!path || !*path)
        return 0;
    if (getenv("CHUNKD_IT_KEEP")) {
        fprintf(stderr, "it: keeping %s (CHUNKD_IT_KEEP)\n", path);
        return 0;
    }
    if (nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0 && errno != ENOENT) {
        fprintf(stderr, "it: nftw %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* ---- child processes ------------------------------------------------------ */

/* environ with extra KEY=value entries replacing same-named ones; the
 * array is malloc'd, the strings borrowed. */
static char **build_env(const char *const *extra)
{
    size_t ne = 0, nx = 0;
    while (environ[ne])
        ne++;
    while (extra && extra[nx])
        nx++;
    char **envp = calloc(ne + nx + 1, sizeof *envp);
    if (!envp)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < ne; i++) {
        const char *eq = strchr(environ[i], '=');
        size_t kl = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
        bool replaced = false;
        for (size_t j = 0; j < nx && !replaced; j++)
            replaced = strncmp(extra[j], environ[i], kl) == 0 && extra[j][kl] == '=';
        if (!replaced)
            envp[k++] = environ[i];
    }
    for (size_t j = 0; j < nx; j++)
        envp[k++] = (char *)extra[j];
    envp[k] = NULL;
    return envp;
}

static int open_out(const char *path)
{
    return open(path ? path : "/dev/null", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

int it_spawn(const char *const *argv, const char *const *extra_env, const char *out_path,
             const char *err_path, pid_t *pid)
{
    char **envp = build_env(extra_env);
    if (!envp) {
        fprintf(stderr, "it: out of memory\n");
        return -1;
    }
    int outfd = open_out(out_path);
    int errfd = open_out(err_path);
    int nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (outfd < 0 || errfd < 0 || nullfd < 0) {
        fprintf(stderr, "it: open output of %s: %s\n", argv[0], strerror(errno));
        if (outfd >= 0)
            close(outfd);
        if (errfd >= 0)
            close(errfd);
        if (nullfd >= 0)
            close(nullfd);
        free(envp);
        return -1;
    }
    pid_t parent = getpid();
    pid_t p = fork();
    if (p < 0) {
        fprintf(stderr, "it: fork: %s\n", strerror(errno));
        close(outfd);
        close(errfd);
        close(nullfd);
        free(envp);
        return -1;
    }
    if (p == 0) {
        /* Own process group so teardown can kill everything it started; and
         * die with the test program when ctest kills it on a timeout. */
        if (setpgid(0, 0) != 0 || prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 ||
            getppid() != parent)
            _exit(126);
        if (dup2(nullfd, 0) < 0 || dup2(outfd, 1) < 0 || dup2(errfd, 2) < 0)
            _exit(126);
        execve(argv[0], (char *const *)argv, envp);
        dprintf(2, "it: exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    /* Also in the parent, so a kill(-pid) right after fork cannot miss. */
    if (setpgid(p, p) != 0 && errno != EACCES && errno != ESRCH)
        fprintf(stderr, "it: setpgid %d: %s\n", (int)p, strerror(errno));
    close(outfd);
    close(errfd);
    close(nullfd);
    free(envp);
    track_child(p);
    *pid = p;
    return 0;
}

int it_wait(pid_t pid, int timeout_ms, int *wstatus)
{
    int64_t deadline = it_now_ms() + timeout_ms;
    for (;;) {
        /* WNOWAIT leaves the zombie in place, so its pid (the group id)
         * cannot be reused before the group is killed below. */
        siginfo_t si;
        memset(&si, 0, sizeof si);
        int r = waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT);
        if (r == 0 && si.si_pid == pid) {
            /* whatever it left in its group goes too */
            kill(-pid, SIGKILL);
            int st;
            while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
            }
            untrack_child(pid);
            if (wstatus)
                *wstatus = st;
            return 0;
        }
        if (r < 0 && errno != EINTR) {
            fprintf(stderr, "it: waitid %d: %s\n", (int)pid, strerror(errno));
            untrack_child(pid);
            return -1;
        }
        if (it_now_ms() >= deadline)
            break;
        it_sleep_ms(10);
    }
    fprintf(stderr, "it: pid %d still running after %d ms; killing it\n", (int)pid,
            timeout_ms);
    kill(-pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
    untrack_child(pid);
    return -1;
}

void it_print_file(const char *label, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    fprintf(stderr, "---- %s (%s) ----\n", label, path);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        fwrite(buf, 1, n, stderr);
    fprintf(stderr, "---- end of %s ----\n", label);
    fclose(f);
}

/* Whether the last `tail` bytes of path hold needle; when not and `report`,
 * says so with what they hold. */
static bool tail_has(const char *path, const char *needle, size_t tail, bool report)
{
    FILE *f = fopen(path, "r");
    char *buf = malloc(tail + 1);
    bool found = false;
    if (f && buf && fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f);
        long from = size > (long)tail ? size - (long)tail : 0;
        if (size >= 0 && fseek(f, from, SEEK_SET) == 0) {
            size_t n = fread(buf, 1, tail, f);
            buf[n] = '\0';
            found = strstr(buf, needle) != NULL;
            if (!found && report)
                fprintf(stderr, "it: %s lacks \"%s\": %s\n", path, needle, buf);
        }
    } else if (report) {
        fprintf(stderr, "it: cannot read %s\n", path);
    }
    if (f)
        fclose(f);
    free(buf);
    return found;
}

bool it_file_tail_has(const char *path, const char *needle, size_t tail)
{
    return tail_has(path, needle, tail, true);
}

bool it_file_tail_lacks(const char *path, const char *needle, size_t tail)
{
    if (!tail_has(path, needle, tail, false))
        return true;
    char label[128];
    snprintf(label, sizeof label, "holds \"%.100s\"", needle);
    it_print_file(label, path);
    return false;
}

bool it_wait_file_tail_has(const char *path, const char *needle, size_t tail, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited += 20) {
        if (tail_has(path, needle, tail, false))
            return true;
        usleep(20 * 1000);
    }
    return it_file_tail_has(path, needle, tail);
}

int it_run(const char *const *argv, const char *const *extra_env, const char *err_path,
           int timeout_ms, char **out)
{
    *out = NULL;
    char dir[IT_DIR_MAX], out_path[IT_DIR_MAX + 16];
    if (it_tmpdir("run", dir, sizeof dir) != 0)
        return -1;
    snprintf(out_path, sizeof out_path, "%s/stdout", dir);
    pid_t pid;
    int st, rc = -1;
    if (it_spawn(argv, extra_env, out_path, err_path, &pid) == 0 &&
        it_wait(pid, timeout_ms, &st) == 0) {
        FILE *f = fopen(out_path, "r");
        if (f) {
            size_t cap = 4096, len = 0;
            char *buf = malloc(cap);
            size_t n;
            while (buf && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
                len += n;
                if (cap - len - 1 == 0) {
                    char *nb = realloc(buf, cap * 2);
                    if (!nb) {
                        free(buf);
                        buf = NULL;
                        break;
                    }
                    buf = nb;
                    cap *= 2;
                }
            }
            fclose(f);
            if (buf) {
                buf[len] = '\0';
                *out = buf;
            }
        }
        if (!*out)
            fprintf(stderr, "it: cannot read the output of %s\n", argv[0]);
        else if (WIFEXITED(st))
            rc = WEXITSTATUS(st);
        else
            fprintf(stderr, "it: %s died with signal %d\n", argv[0],
                    WIFSIGNALED(st) ? WTERMSIG(st) : -1);
    }
    it_rmtree(dir);
    return rc;
}

int it_chunkctl(const it_server *s, const char *const *args, const char *err_path, char **out)
{
    const char *argv[32];
    int n = 0;
    argv[n++] = it_bin("CHUNKCTL_BIN");
    bool own_dir = false;
    for (int i = 0; args[i] && n < 28; i++) {
        own_dir |= strcmp(args[i], "--storage-dir") == 0;
        argv[n++] = args[i];
    }
    if (!own_dir) {
        argv[n++] = "--storage-dir";
        argv[n++] = s->storage_dir;
    }
    argv[n] = NULL;
    if (!argv[0])
        return -1;
    unlink(err_path);
    return it_run(argv, NULL, err_path, 30000, out);
}

/* ---- chunkd ---------------------------------------------------------------- */

void it_server_log_tail(const it_server *s, off_t from, int lines)
{
    FILE *f = fopen(s->log_path, "r");
    if (!f) {
        fprintf(stderr, "it: no server log at %s\n", s->log_path);
        return;
    }
    if (fseeko(f, from, SEEK_SET) != 0) {
        fclose(f);
        return;
    }
    /* keep the last `lines` lines in a ring */
    char **ring = calloc((size_t)lines, sizeof *ring);
    char buf[2048];
    int n = 0;
    while (ring && fgets(buf, sizeof buf, f)) {
        free(ring[n % lines]);
        ring[n % lines] = strdup(buf);
        n++;
    }
    fclose(f);
    if (!ring)
        return;
    int first = n > lines ? n - lines : 0;
    fprintf(stderr, "---- chunkd %s log, last %d lines ----\n", s->node_id, n - first);
    for (int i = first; i < n; i++)
        if (ring[i % lines])
            fputs(ring[i % lines], stderr);
    fprintf(stderr, "---- end of chunkd log ----\n");
    for (int i = 0; i < lines; i++)
        free(ring[i]);
    free(ring);
}

/* The ready file holds the port and a newline; chunkd renames it into
 * place, so a file that exists is complete. */
static int read_ready_port(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char buf[32] = "";
    char *ok = fgets(buf, sizeof buf, f);
    fclose(f);
    if (!ok)
        return -1;
    char *end;
    errno = 0;
    long p = strtol(buf, &end, 10);
    if (errno != 0 || end == buf || *end != '\n' || p <= 0 || p > 65535)
        return -1;
    return (int)p;
}

/* Spawns chunkd for s (dir, storage_dir, node_id already set) listening on
 * `port` (0: any) and waits for its ready file. On failure prints the log;
 * a process that is still running (s->pid) is left to the caller to stop. */
static int launch(it_server *s, const it_server_opts *opts, int port)
{
    const char *bin = it_bin("CHUNKD_BIN");
    if (!bin)
        return -1;
    char ready[IT_PATH_MAX + 16], listen[32];
    snprintf(ready, sizeof ready, "%s/ready", s->dir);
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    /* A restart must not take the previous run's ready file for its own. */
    if (unlink(ready) != 0 && errno != ENOENT) {
        fprintf(stderr, "it: remove %s: %s\n", ready, strerror(errno));
        return -1;
    }

    const char *argv[96];
    int a = 0;
    for (int i = 0; opts->wrapper && opts->wrapper[i]; i++) {
        if (a >= 32) {
            fprintf(stderr, "it: too many wrapper arguments\n");
            return -1;
        }
        argv[a++] = opts->wrapper[i];
    }
    argv[a++] = bin;
    argv[a++] = "--listen";
    argv[a++] = listen;
    argv[a++] = "--ready-file";
    argv[a++] = ready;
    argv[a++] = "--storage-dir";
    argv[a++] = s->storage_dir;
    argv[a++] = "--node-id";
    argv[a++] = s->node_id;
    argv[a++] = "--log-level";
    argv[a++] = it_env("CHUNKD_IT_LOG_LEVEL", "info");
    for (int i = 0; opts->args && opts->args[i]; i++) {
        if (a >= 94) {
            fprintf(stderr, "it: too many server flags\n");
            return -1;
        }
        argv[a++] = opts->args[i];
    }
    argv[a] = NULL;

    if (it_spawn(argv, opts->env, s->log_path, s->log_path, &s->pid) != 0) {
        s->pid = 0;
        return -1;
    }
    int timeout = atoi(it_env("CHUNKD_IT_START_TIMEOUT_MS", "30000"));
    int64_t deadline = it_now_ms() + timeout;
    for (;;) {
        int bound = read_ready_port(ready);
        if (bound > 0) {
            s->port = bound;
            snprintf(s->port_str, sizeof s->port_str, "%d", bound);
            return 0;
        }
        if (bound < 0) {
            fprintf(stderr, "it: malformed ready file %s\n", ready);
            break;
        }
        int st;
        pid_t r = waitpid(s->pid, &st, WNOHANG);
        if (r == s->pid) {
            untrack_child(s->pid);
            s->pid = 0;
            fprintf(stderr, "it: chunkd exited before it was ready (%s %d)\n",
                    WIFEXITED(st) ? "exit" : "signal",
                    WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
            break;
        }
        if (it_now_ms() >= deadline) {
            fprintf(stderr, "it: chunkd not ready after %d ms\n", timeout);
            break;
        }
        it_sleep_ms(20);
    }
    it_server_log_tail(s, 0, 60);
    return -1;
}

int it_server_start(it_server *s, const it_server_opts *opts)
{
    memset(s, 0, sizeof *s);
    static const it_server_opts none = {0};
    if (!opts)
        opts = &none;
    if (!it_bin("CHUNKD_BIN"))
        return -1;
    if (it_tmpdir("srv", s->dir, sizeof s->dir) != 0)
        return -1;
    snprintf(s->log_path, sizeof s->log_path, "%s/chunkd.log", s->dir);
    snprintf(s->node_id, sizeof s->node_id, "%s-%d-%u", it_program, (int)getpid(), it_seq++);
    if (opts->storage_dir)
        snprintf(s->storage_dir, sizeof s->storage_dir, "%s", opts->storage_dir);
    else
        snprintf(s->storage_dir, sizeof s->storage_dir, "%s/storage", s->dir);
    if (launch(s, opts, 0) != 0) {
        it_server_stop(s);
        return -1;
    }
    return 0;
}

int it_server_wait(it_server *s, int timeout_ms, int *wstatus)
{
    if (s->pid <= 0) {
        fprintf(stderr, "it: chunkd %s is not running\n", s->node_id);
        return -1;
    }
    int st = 0;
    int rc = it_wait(s->pid, timeout_ms, &st);
    s->pid = 0;
    if (rc != 0) {
        fprintf(stderr, "it: chunkd %s did not exit within %d ms\n", s->node_id, timeout_ms);
        return -1;
    }
    if (wstatus)
        *wstatus = st;
    return 0;
}

int it_server_kill(it_server *s, int sig, int timeout_ms, int *wstatus)
{
    if (s->pid <= 0) {
        fprintf(stderr, "it: chunkd %s is not running\n", s->node_id);
        return -1;
    }
    if (kill(s->pid, sig) != 0) {
        fprintf(stderr, "it: kill %d: %s\n", (int)s->pid, strerror(errno));
        return -1;
    }
    return it_server_wait(s, timeout_ms, wstatus);
}

int it_server_restart(it_server *s, const it_server_opts *opts)
{
    static const it_server_opts none = {0};
    if (!opts)
        opts = &none;
    if (s->pid > 0 || !s->dir[0] || s->port <= 0) {
        fprintf(stderr, "it: restart needs a server that ran and was stopped with "
                        "it_server_kill\n");
        return -1;
    }
    /* The old listening socket is gone with the process; SO_REUSEADDR in
     * chunkd lets the port be bound again despite connections in TIME_WAIT. */
    if (launch(s, opts, s->port) == 0)
        return 0;
    if (s->pid > 0)
        it_server_kill(s, SIGTERM, atoi(it_env("CHUNKD_IT_STOP_TIMEOUT_MS", "20000")), NULL);
    return -1;
}

int it_server_stop(it_server *s)
{
    int st = -1;
    if (s->pid > 0) {
        if (kill(s->pid, SIGTERM) != 0)
            fprintf(stderr, "it: kill %d: %s\n", (int)s->pid, strerror(errno));
        int timeout = atoi(it_env("CHUNKD_IT_STOP_TIMEOUT_MS", "20000"));
        if (it_wait(s->pid, timeout, &st) != 0) {
            fprintf(stderr, "it: chunkd %s ignored SIGTERM for %d ms\n", s->node_id, timeout);
            it_server_log_tail(s, 0, 40);
            st = -1;
        }
        s->pid = 0;
    }
    if (s->dir[0]) {
        it_rmtree(s->dir);
        s->dir[0] = '\0';
    }
    return st;
}

void it_assert_server_stops_cleanly(it_server *s)
{
    if (s->pid <= 0)
        return;
    /* a copy whose log survives until the tail is printed */
    it_server keep = *s;
    keep.dir[0] = '\0';
    if (kill(s->pid, SIGTERM) != 0)
        fprintf(stderr, "it: kill %d: %s\n", (int)s->pid, strerror(errno));
    int st = -1;
    int timeout = atoi(it_env("CHUNKD_IT_STOP_TIMEOUT_MS", "20000"));
    int rc = it_wait(s->pid, timeout, &st);
    s->pid = 0;
    bool clean = rc == 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
    if (!clean) {
        if (rc != 0)
            fprintf(stderr, "it: chunkd %s did not stop within %d ms of SIGTERM\n",
                    keep.node_id, timeout);
        else if (WIFEXITED(st))
            fprintf(stderr, "it: chunkd %s exited %d after SIGTERM\n", keep.node_id,
                    WEXITSTATUS(st));
        else
            fprintf(stderr, "it: chunkd %s died with signal %d after SIGTERM\n",
                    keep.node_id, WTERMSIG(st));
        it_server_log_tail(&keep, 0, 80);
    }
    it_server_stop(s);
    assert_true(clean);
}
