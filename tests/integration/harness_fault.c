/* Harness for the fault tests: private stacks, chunkup in the background,
 * server logs. */
#include "harness_fault.h"
#include "harness_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- small helpers ---------------------------------------------------------- */

int it_find_program(const char *name, char *out, size_t outlen)
{
    const char *path = it_env("PATH", "/usr/bin:/bin");
    size_t n = strlen(path);
    char *dirs = malloc(n + sizeof ":/usr/sbin:/sbin");
    if (!dirs)
        return -1;
    memcpy(dirs, path, n);
    memcpy(dirs + n, ":/usr/sbin:/sbin", sizeof ":/usr/sbin:/sbin");
    int rc = -1;
    char *save = NULL;
    for (char *d = strtok_r(dirs, ":", &save); d && rc != 0; d = strtok_r(NULL, ":", &save)) {
        int w = snprintf(out, outlen, "%s/%s", d, name);
        if (*d == '/' && w > 0 && (size_t)w < outlen && access(out, X_OK) == 0)
            rc = 0;
    }
    free(dirs);
    if (rc != 0)
        fprintf(stderr, "it: %s not found in PATH\n", name);
    return rc;
}

int64_t it_file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
}

static int file_count;

static int count_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)path;
    (void)st;
    if (flag == FTW_F && ftw->level >= 2)
        file_count++;
    return 0;
}

int it_count_files(const char *dir)
{
    file_count = 0;
    if (nftw(dir, count_entry, 16, FTW_PHYS) != 0) {
        fprintf(stderr, "it: nftw %s: %s\n", dir, strerror(errno));
        return -1;
    }
    return file_count;
}

/* The pid recorded in a pid file, 0 when there is none. */
static pid_t read_pid_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    long pid = 0;
    if (fscanf(f, "%ld", &pid) != 1 || pid <= 0)
        pid = 0;
    fclose(f);
    return (pid_t)pid;
}

/* Not ours to reap (daemons started by stack.sh): alive means present and
 * not a zombie. */
static bool process_alive(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *paren = strrchr(buf, ')');
    return paren && paren[1] == ' ' && paren[2] != 'Z';
}

static int wait_gone(pid_t pid, int timeout_ms)
{
    int64_t deadline = it_now_ms() + timeout_ms;
    while (process_alive(pid)) {
        if (it_now_ms() >= deadline) {
            fprintf(stderr, "it: pid %d still alive after %d ms\n", (int)pid, timeout_ms);
            return -1;
        }
        it_sleep_ms(20);
    }
    return 0;
}

/* ---- private stack ---------------------------------------------------------- */

static int stack_run(it_stack *st, const char *cmd, const char *arg)
{
    const char *script = it_bin("CHUNKD_STACK_SH");
    char bash[IT_PATH_MAX];
    if (!script || it_find_program("bash", bash, sizeof bash) != 0)
        return -1;
    char e_dir[IT_DIR_MAX + 32], e_redis[64], e_mysql[64];
    snprintf(e_dir, sizeof e_dir, "CHUNKD_STACK_DIR=%s", st->dir);
    snprintf(e_redis, sizeof e_redis, "CHUNKD_STACK_REDIS_PORT=%d", st->redis_port);
    snprintf(e_mysql, sizeof e_mysql, "CHUNKD_STACK_MYSQL_PORT=%d", st->mysql_port);
    const char *env[] = {e_dir, e_redis, e_mysql, NULL};
    const char *argv[] = {bash, script, cmd, arg, NULL};
    char *out = NULL;
    int rc = it_run(argv, env, st->log_path, 240000, &out);
    free(out);
    if (rc != 0) {
        fprintf(stderr, "it: stack.sh %s %s failed (%d)\n", cmd, arg ? arg : "", rc);
        it_print_file("stack.sh output", st->log_path);
        return -1;
    }
    return 0;
}

static int env_port_plus(const char *key, int offset, int *out)
{
    const char *v = it_env(key, NULL);
    char *end;
    errno = 0;
    long p = v ? strtol(v, &end, 10) : 0;
    if (!v || errno != 0 || *end != '\0' || p <= 0 || p + offset > 65535 || p + offset <= 0) {
        fprintf(stderr, "it: %s=%s plus %d is not a port\n", key, v ? v : "(unset)", offset);
        return -1;
    }
    *out = (int)p + offset;
    return 0;
}

int it_stack_start(it_stack *st, const char *tag, int port_offset)
{
    memset(st, 0, sizeof *st);
    const char *base = it_env("CHUNKD_IT_TMPDIR", it_env("TMPDIR", "/tmp"));
    if (mkdir(base, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "it: mkdir %s: %s\n", base, strerror(errno));
        return -1;
    }
    int n = snprintf(st->dir, sizeof st->dir, "%s/%s-stack", base, tag);
    if (n < 0 || (size_t)n >= sizeof st->dir) {
        fprintf(stderr, "it: stack folder name too long under %s\n", base);
        return -1;
    }
    snprintf(st->env_file, sizeof st->env_file, "%s/stack.env", st->dir);
    snprintf(st->log_path, sizeof st->log_path, "%s.log", st->dir);
    if (env_port_plus("CHUNKD_REDIS_PORT", port_offset, &st->redis_port) != 0 ||
        env_port_plus("CHUNKD_MYSQL_PORT", port_offset, &st->mysql_port) != 0)
        return -1;
    int fd = open(st->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || close(fd) != 0) {
        fprintf(stderr, "it: create %s: %s\n", st->log_path, strerror(errno));
        return -1;
    }
    fprintf(stderr, "it: private stack in %s, Redis %d, MariaDB %d\n", st->dir, st->redis_port,
            st->mysql_port);
    st->started = true;
    /* --fresh: no data of an earlier run, and a stack that run left behind
     * (killed on a timeout) is stopped first. */
    if (stack_run(st, "up", "--fresh") != 0)
        return -1;
    return it_stack_use(st);
}

int it_stack_use(it_stack *st)
{
    if (it_load_env_file(st->env_file) != 0 || it_backends_reconnect() != 0) {
        fprintf(stderr, "it: cannot use the stack in %s\n", st->dir);
        return -1;
    }
    return 0;
}

int it_stack_up(it_stack *st)
{
    if (stack_run(st, "up", NULL) != 0)
        return -1;
    return it_stack_use(st);
}

int it_stack_redis_stop(it_stack *st, bool keep_data)
{
    char pidfile[IT_DIR_MAX + 16];
    snprintf(pidfile, sizeof pidfile, "%s/redis.pid", st->dir);
    pid_t pid = read_pid_file(pidfile);
    if (pid <= 0) {
        fprintf(stderr, "it: no Redis pid in %s\n", pidfile);
        return -1;
    }
    if (it_redis_shutdown() != 0 || wait_gone(pid, 30000) != 0)
        return -1;
    if (keep_data)
        return 0;
    /* Moved aside rather than deleted: the next start finds no data either
     * way, and the old folder is there to look at after a failure. */
    char data[IT_DIR_MAX + 16], aside[IT_DIR_MAX + 48];
    snprintf(data, sizeof data, "%s/redis", st->dir);
    snprintf(aside, sizeof aside, "%s/redis.lost-%lld", st->dir, (long long)it_now_ms());
    if (rename(data, aside) != 0) {
        fprintf(stderr, "it: rename %s: %s\n", data, strerror(errno));
        return -1;
    }
    return 0;
}

int it_stack_mysql_stop(it_stack *st)
{
    char pidfile[IT_DIR_MAX + 16];
    snprintf(pidfile, sizeof pidfile, "%s/mysqld.pid", st->dir);
    pid_t pid = read_pid_file(pidfile);
    if (pid <= 0 || !process_alive(pid)) {
        fprintf(stderr, "it: no running MariaDB pid in %s\n", pidfile);
        return -1;
    }
    if (kill(pid, SIGTERM) != 0) {
        fprintf(stderr, "it: kill %d: %s\n", (int)pid, strerror(errno));
        return -1;
    }
    return wait_gone(pid, 60000);
}

void it_stack_destroy(it_stack *st)
{
    if (!st->started)
        return;
    st->started = false;
    bool keep = getenv("CHUNKD_IT_KEEP") != NULL;
    if (stack_run(st, keep ? "down" : "destroy", NULL) == 0 && !keep)
        unlink(st->log_path);
}

/* ---- chunkup ------------------------------------------------------------------ */

/* Empties a file (each run's output stands alone). */
static int truncate_file(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || close(fd) != 0) {
        fprintf(stderr, "it: truncate %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

int it_chunkup_start(it_chunkup *c, const it_server *s, const it_user *u, const char *file,
                     const char *const *extra)
{
    const char *bin = it_bin("CHUNKUP_BIN");
    if (!bin)
        return -1;
    if (!c->dir[0]) {
        if (it_tmpdir("chunkup", c->dir, sizeof c->dir) != 0)
            return -1;
        snprintf(c->out_path, sizeof c->out_path, "%s/stdout", c->dir);
        snprintf(c->err_path, sizeof c->err_path, "%s/stderr", c->dir);
        snprintf(c->state_path, sizeof c->state_path, "%s/uploads_state.json", c->dir);
    }
    if (truncate_file(c->out_path) != 0 || truncate_file(c->err_path) != 0)
        return -1;
    char server[64], uid[32];
    snprintf(server, sizeof server, "127.0.0.1:%d", s->port);
    snprintf(uid, sizeof uid, "%lld", (long long)u->id);
    const char *argv[48];
    int a = 0;
    const char *fixed[] = {bin,          "upload",  file,  "--server",     server,
                           "--user",     uid,       "--credential", u->credential,
                           "--state",    c->state_path, "--json", NULL};
    for (int i = 0; fixed[i]; i++)
        argv[a++] = fixed[i];
    for (int i = 0; extra && extra[i]; i++) {
        if (a >= 47) {
            fprintf(stderr, "it: too many chunkup flags\n");
            return -1;
        }
        argv[a++] = extra[i];
    }
    argv[a] = NULL;
    return it_spawn(argv, NULL, c->out_path, c->err_path, &c->pid);
}

int it_chunkup_wait(it_chunkup *c, int timeout_ms, int *code)
{
    int st;
    int rc = it_wait(c->pid, timeout_ms, &st);
    c->pid = 0;
    if (rc != 0)
        return -1;
    *code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    return 0;
}

json_t *it_chunkup_result(const it_chunkup *c)
{
    FILE *f = fopen(c->out_path, "r");
    if (!f)
        return NULL;
    json_t *last = NULL;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *j = json_loads(line, 0, NULL);
        if (json_is_object(j)) {
            json_decref(last);
            last = j;
        } else {
            json_decref(j);
        }
    }
    free(line);
    fclose(f);
    return last;
}

int it_chunkup_resumes(const it_chunkup *c, int64_t id, int64_t *offsets, int max)
{
    FILE *f = fopen(c->err_path, "r");
    if (!f) {
        fprintf(stderr, "it: open %s: %s\n", c->err_path, strerror(errno));
        return -1;
    }
    char want[96];
    snprintf(want, sizeof want, "resuming document_id=%lld at ", (long long)id);
    int n = 0;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        char *p = strstr(line, want);
        if (!p || n >= max)
            continue;
        char *end;
        errno = 0;
        long long v = strtoll(p + strlen(want), &end, 10);
        if (errno == 0 && end != p + strlen(want))
            offsets[n++] = v;
    }
    free(line);
    fclose(f);
    return n;
}

bool it_chunkup_said(const it_chunkup *c, const char *needle)
{
    FILE *f = fopen(c->err_path, "r");
    if (!f)
        return false;
    bool found = false;
    char *line = NULL;
    size_t cap = 0;
    while (!found && getline(&line, &cap, f) > 0)
        found = strstr(line, needle) != NULL;
    free(line);
    fclose(f);
    return found;
}

void it_chunkup_print(const it_chunkup *c)
{
    it_print_file("chunkup stdout", c->out_path);
    it_print_file("chunkup stderr", c->err_path);
}

void it_chunkup_cleanup(it_chunkup *c)
{
    if (c->pid > 0) {
        kill(-c->pid, SIGKILL);
        it_wait(c->pid, 10000, NULL);
        c->pid = 0;
    }
    if (c->dir[0])
        it_rmtree(c->dir);
    memset(c, 0, sizeof *c);
}

/* ---- waiting and evidence ------------------------------------------------------ */

int64_t it_wait_acked(int64_t user_id, int64_t min_offset, int timeout_ms, int64_t *id)
{
    int64_t deadline = it_now_ms() + timeout_ms;
    *id = 0;
    for (;;) {
        if (*id <= 0)
            *id = it_doc_newest(user_id);
        if (*id > 0) {
            it_rkey k;
            if (it_redis_upload(*id, &k) != 0)
                return -1;
            if (k.exists && k.offset >= min_offset)
                return k.offset;
        }
        if (it_now_ms() >= deadline)
            break;
        it_sleep_ms(10);
    }
    fprintf(stderr, "it: user %lld: no upload acknowledged %lld bytes within %d ms\n",
            (long long)user_id, (long long)min_offset, timeout_ms);
    return -1;
}

off_t it_log_size(const it_server *s)
{
    struct stat st;
    return stat(s->log_path, &st) == 0 ? st.st_size : 0;
}

/* Looks for needle in the lines past *pos, moving *pos past every complete
 * line read. 1 found, 0 not yet, -1 error. */
static int scan_log(const char *path, off_t *pos, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    if (fseeko(f, *pos, SEEK_SET) != 0) {
        fclose(f);
        return -1;
    }
    int found = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while (!found && (n = getline(&line, &cap, f)) > 0) {
        if (line[n - 1] != '\n')
            break; /* a line still being written: read it whole next time */
        *pos += n;
        found = strstr(line, needle) != NULL;
    }
    free(line);
    fclose(f);
    return found;
}

int it_drop_caches(void)
{
    sync();
    int fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "it: open /proc/sys/vm/drop_caches: %s\n", strerror(errno));
        return -1;
    }
    ssize_t w = write(fd, "3\n", 2);
    int e = errno;
    close(fd);
    if (w != 2) {
        fprintf(stderr, "it: drop caches: %s\n", w < 0 ? strerror(e) : "short write");
        return -1;
    }
    return 0;
}

int it_log_count(const it_server *s, const char *needle)
{
    FILE *f = fopen(s->log_path, "r");
    if (!f) {
        fprintf(stderr, "it: open %s: %s\n", s->log_path, strerror(errno));
        return -1;
    }
    int n = 0;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0)
        if (strstr(line, needle))
            n++;
    free(line);
    fclose(f);
    return n;
}

int it_log_wait(const it_server *s, off_t from, const char *needle, int timeout_ms)
{
    int64_t deadline = it_now_ms() + timeout_ms;
    off_t pos = from;
    for (;;) {
        int r = scan_log(s->log_path, &pos, needle);
        if (r == 1)
            return 0;
        if (r < 0) {
            fprintf(stderr, "it: cannot read %s\n", s->log_path);
            return -1;
        }
        if (it_now_ms() >= deadline)
            break;
        it_sleep_ms(10);
    }
    fprintf(stderr, "it: \"%s\" not in the log of %s within %d ms\n", needle, s->node_id,
            timeout_ms);
    return -1;
}
