/* The deployment's cluster on loopback: three chunkd instances and HAProxy
 * running deploy/haproxy.cfg (see haproxy_cluster.h). */
#include "haproxy_cluster.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis.h>

/* Short enough that a dead or frozen instance is noticed within seconds
 * (fall 3 in haproxy.cfg); the deployment's defaults are 2 s each. */
#define HC_CHECK_INTER "500ms"
#define HC_CHECK_TIMEOUT "1s"
#define HC_START_TIMEOUT_MS 30000

#define HC_ENV_MAX 64
#define HC_ENV_LINE 256

/* deploy/cluster.env as KEY=value strings for it_server_opts.env. */
static char cluster_env_buf[HC_ENV_MAX][HC_ENV_LINE];
static const char *cluster_env[HC_ENV_MAX + 1];
static bool cluster_env_loaded;

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
        *--e = '\0';
    return s;
}

static int load_cluster_env(void)
{
    if (cluster_env_loaded)
        return 0;
    const char *path = it_bin("CHUNKD_CLUSTER_ENV");
    if (!path)
        return -1;
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "it: %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[HC_ENV_LINE];
    int n = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        char *s = trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        if (strncmp(s, "CHUNKD_", 7) != 0 || !strchr(s, '=')) {
            fprintf(stderr, "it: %s: not a CHUNKD_KEY=value line: %s\n", path, s);
            rc = -1;
            break;
        }
        if (n == HC_ENV_MAX) {
            fprintf(stderr, "it: %s: more than %d settings\n", path, HC_ENV_MAX);
            rc = -1;
            break;
        }
        snprintf(cluster_env_buf[n], sizeof cluster_env_buf[n], "%s", s);
        cluster_env[n] = cluster_env_buf[n];
        n++;
    }
    if (rc == 0 && ferror(f)) {
        fprintf(stderr, "it: %s: read error\n", path);
        rc = -1;
    }
    fclose(f);
    if (rc == 0 && n == 0) {
        fprintf(stderr, "it: %s has no settings\n", path);
        rc = -1;
    }
    cluster_env[rc == 0 ? n : 0] = NULL;
    cluster_env_loaded = rc == 0;
    return rc;
}

/* Binds a socket to 127.0.0.1:0; its fd and port, or -1. */
static int bind_any(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fprintf(stderr, "it: socket: %s\n", strerror(errno));
        return -1;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        fprintf(stderr, "it: free port: %s\n", strerror(errno));
        close(fd);
        return -1;
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

int hc_free_port(void)
{
    int port = -1;
    int fd = bind_any(&port);
    if (fd < 0)
        return -1;
    close(fd);
    return port;
}

/* n distinct free ports: every probe socket stays bound until all are
 * chosen, so the kernel cannot hand out one port twice. */
static int free_ports(int *out, int n)
{
    int fds[16];
    int rc = 0, k;
    for (k = 0; k < n && k < 16; k++)
        if ((fds[k] = bind_any(&out[k])) < 0) {
            rc = -1;
            break;
        }
    while (k-- > 0)
        close(fds[k]);
    return n <= 16 ? rc : -1;
}

int hc_node_index(const hc_cluster *c, const char *node_id)
{
    for (int i = 0; i < HC_NODES; i++)
        if (strcmp(c->node_id[i], node_id) == 0)
            return i;
    return -1;
}

/* strlcpy: the strings copied here share one struct, which snprintf's
 * restrict rules forbid. */
static void copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap)
        n = cap - 1;
    memmove(dst, src, n);
    dst[n] = '\0';
}

static void keep_old_dir(hc_cluster *c, int i)
{
    if (!c->node[i].dir[0])
        return;
    if (c->nold < (int)(sizeof c->old_dirs / sizeof c->old_dirs[0]))
        copy_str(c->old_dirs[c->nold++], sizeof c->old_dirs[0], c->node[i].dir);
    else
        it_rmtree(c->node[i].dir);
    c->node[i].dir[0] = '\0';
}

int hc_node_start(hc_cluster *c, int i)
{
    if (c->node[i].pid > 0) {
        fprintf(stderr, "it: %s is already running\n", c->node_id[i]);
        return -1;
    }
    /* it_server_start forgets the previous incarnation; its log stays for
     * a look after a failure until the cluster goes. */
    keep_old_dir(c, i);
    char listen[32], admin[32];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", c->port[i]);
    snprintf(admin, sizeof admin, "127.0.0.1:%d", c->admin_port[i]);
    const char *args[48];
    int a = 0;
    /* after the harness's own flags, so these win */
    args[a++] = "--listen";
    args[a++] = listen;
    args[a++] = "--admin-listen";
    args[a++] = admin;
    args[a++] = "--node-id";
    args[a++] = c->node_id[i];
    for (int k = 0; c->extra_args && c->extra_args[k]; k++) {
        if (a >= 47) {
            fprintf(stderr, "it: too many instance flags\n");
            return -1;
        }
        args[a++] = c->extra_args[k];
    }
    args[a] = NULL;
    it_server_opts o = {.storage_dir = c->storage, .args = args, .env = cluster_env};
    if (it_server_start(&c->node[i], &o) != 0)
        return -1;
    /* it_server_start named it after the program; the cluster's name wins
     * on the command line, and logs should say the same. */
    copy_str(c->node[i].node_id, sizeof c->node[i].node_id, c->node_id[i]);
    if (c->node[i].port != c->port[i]) {
        fprintf(stderr, "it: %s listens on %d, expected %d\n", c->node_id[i], c->node[i].port,
                c->port[i]);
        return -1;
    }
    c->frozen[i] = false;
    return 0;
}

static int signal_node(hc_cluster *c, int i, int sig)
{
    if (c->node[i].pid <= 0) {
        fprintf(stderr, "it: %s is not running\n", c->node_id[i]);
        return -1;
    }
    if (kill(c->node[i].pid, sig) != 0) {
        fprintf(stderr, "it: kill %s: %s\n", c->node_id[i], strerror(errno));
        return -1;
    }
    return 0;
}

int hc_node_kill(hc_cluster *c, int i)
{
    if (signal_node(c, i, SIGKILL) != 0)
        return -1;
    int st;
    int rc = it_wait(c->node[i].pid, 10000, &st);
    c->node[i].pid = 0;
    c->frozen[i] = false;
    if (rc != 0)
        return -1;
    if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL) {
        fprintf(stderr, "it: %s ended otherwise than by SIGKILL\n", c->node_id[i]);
        return -1;
    }
    return 0;
}

/* Whether every thread of pid is stopped (state T): SIGSTOP takes effect
 * asynchronously, and a thread inside a blocking system call (fdatasync)
 * runs until it returns. */
static bool all_threads_stopped(pid_t pid)
{
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d/task", (int)pid);
    DIR *d = opendir(dir);
    if (!d)
        return false;
    bool stopped = true;
    int n = 0;
    struct dirent *e;
    while (stopped && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[128], buf[512];
        snprintf(path, sizeof path, "%s/%.32s/stat", dir, e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue; /* the thread just ended */
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[len] = '\0';
        /* "pid (comm) S ...": comm may hold spaces and parentheses */
        const char *p = strrchr(buf, ')');
        stopped = p && p[1] == ' ' && (p[2] == 'T' || p[2] == 't');
        n++;
    }
    closedir(d);
    return stopped && n > 0;
}

int hc_node_freeze(hc_cluster *c, int i)
{
    if (signal_node(c, i, SIGSTOP) != 0)
        return -1;
    c->frozen[i] = true;
    int64_t deadline = it_now_ms() + 10000;
    while (!all_threads_stopped(c->node[i].pid)) {
        if (it_now_ms() >= deadline) {
            fprintf(stderr, "it: %s is not stopped 10 s after SIGSTOP\n", c->node_id[i]);
            return -1;
        }
        it_sleep_ms(1);
    }
    return 0;
}

int hc_node_thaw(hc_cluster *c, int i)
{
    if (signal_node(c, i, SIGCONT) != 0)
        return -1;
    c->frozen[i] = false;
    return 0;
}

/* ---- HAProxy ------------------------------------------------------------ */

static int start_haproxy(hc_cluster *c)
{
    const char *bin = it_bin("CHUNKD_HAPROXY_BIN");
    const char *cfg = it_bin("CHUNKD_HAPROXY_CFG");
    if (!bin || !cfg)
        return -1;
    /* Set in a shell that sourced the deployment's settings, LB_DNS would
     * make HAProxy ask a resolver that does not exist here. */
    unsetenv("LB_DNS");
    static char envbuf[4 + 2 * HC_NODES][64];
    const char *env[4 + 2 * HC_NODES + 1];
    int n = 0;
    snprintf(envbuf[n], sizeof envbuf[n], "LB_BIND=127.0.0.1:%d", c->lb_port);
    env[n] = envbuf[n];
    n++;
    snprintf(envbuf[n], sizeof envbuf[n], "LB_STATS_BIND=127.0.0.1:%d", c->stats_port);
    env[n] = envbuf[n];
    n++;
    snprintf(envbuf[n], sizeof envbuf[n], "LB_CHECK_INTER=%s", HC_CHECK_INTER);
    env[n] = envbuf[n];
    n++;
    snprintf(envbuf[n], sizeof envbuf[n], "LB_CHECK_TIMEOUT=%s", HC_CHECK_TIMEOUT);
    env[n] = envbuf[n];
    n++;
    for (int i = 0; i < HC_NODES; i++) {
        snprintf(envbuf[n], sizeof envbuf[n], "CHUNKD%d_ADDR=127.0.0.1:%d", i + 1, c->port[i]);
        env[n] = envbuf[n];
        n++;
        snprintf(envbuf[n], sizeof envbuf[n], "CHUNKD%d_ADMIN_PORT=%d", i + 1, c->admin_port[i]);
        env[n] = envbuf[n];
        n++;
    }
    env[n] = NULL;

    /* The same settings in a file, to run this HAProxy again by hand:
     * env $(cat haproxy.env) haproxy -db -f deploy/haproxy.cfg */
    char envfile[IT_DIR_MAX + 16];
    snprintf(envfile, sizeof envfile, "%s/haproxy.env", c->dir);
    FILE *f = fopen(envfile, "w");
    if (!f) {
        fprintf(stderr, "it: %s: %s\n", envfile, strerror(errno));
        return -1;
    }
    for (int i = 0; i < n; i++)
        fprintf(f, "%s\n", env[i]);
    if (fclose(f) != 0) {
        fprintf(stderr, "it: %s: %s\n", envfile, strerror(errno));
        return -1;
    }

    snprintf(c->haproxy_log, sizeof c->haproxy_log, "%s/haproxy.log", c->dir);
    const char *argv[] = {bin, "-db", "-f", cfg, NULL};
    return it_spawn(argv, env, c->haproxy_log, c->haproxy_log, &c->haproxy_pid);
}

int hc_wait_state(const hc_cluster *c, int i, bool up, int timeout_ms)
{
    int64_t t0 = it_now_ms(), deadline = t0 + timeout_ms;
    hc_server_stat st;
    memset(&st, 0, sizeof st);
    for (;;) {
        if (hc_server_stat_get(c, i, &st) == 0) {
            bool ok = up ? strcmp(st.status, "UP") == 0 && strncmp(st.check_status, "L7OK", 4) == 0
                         : strcmp(st.status, "DOWN") == 0;
            if (ok) {
                fprintf(stderr, "it: HAProxy sees %s %s after %lld ms (check %s)\n",
                        c->node_id[i], st.status, (long long)(it_now_ms() - t0), st.check_status);
                return 0;
            }
        }
        if (it_now_ms() >= deadline)
            break;
        it_sleep_ms(100);
    }
    fprintf(stderr, "it: HAProxy does not see %s %s within %d ms (status '%s', check '%s')\n",
            c->node_id[i], up ? "UP" : "DOWN", timeout_ms, st.status, st.check_status);
    return -1;
}

int hc_healthcheck(const hc_cluster *c, int i)
{
    const char *script = it_bin("CHUNKD_HEALTHCHECK");
    if (!script)
        return -1;
    char addr[64];
    snprintf(addr, sizeof addr, "CHUNKD_ADMIN_LISTEN=127.0.0.1:%d", c->admin_port[i]);
    const char *argv[] = {"/bin/bash", script, NULL};
    const char *env[] = {addr, "CHUNKD_HEALTHCHECK_TIMEOUT_S=2", NULL};
    char err[IT_DIR_MAX + 32];
    snprintf(err, sizeof err, "%s/healthcheck.err", c->dir);
    char *out = NULL;
    int rc = it_run(argv, env, err, 15000, &out);
    free(out);
    if (rc != 0)
        it_print_file("chunkd-healthcheck stderr", err);
    unlink(err);
    return rc;
}

/* ---- leases --------------------------------------------------------------- */

/* The cluster's own Redis connection, for the lease probe (the harness's
 * probes cover upload keys, not leases). Main thread only. */
static redisContext *lease_rc;

static int lease_connect(void)
{
    if (lease_rc)
        return 0;
    const char *host = it_env("CHUNKD_REDIS_HOST", "127.0.0.1");
    char *end;
    long port = strtol(it_env("CHUNKD_REDIS_PORT", "6379"), &end, 10);
    if (*end != '\0' || port <= 0 || port > 65535) {
        fprintf(stderr, "it: CHUNKD_REDIS_PORT is not a port\n");
        return -1;
    }
    struct timeval tv = {10, 0};
    lease_rc = redisConnectWithTimeout(host, (int)port, tv);
    if (!lease_rc || lease_rc->err || redisSetTimeout(lease_rc, tv) != REDIS_OK) {
        fprintf(stderr, "it: Redis connect %s:%ld: %s\n", host, port,
                lease_rc ? lease_rc->errstr : "out of memory");
        redisFree(lease_rc);
        lease_rc = NULL;
        return -1;
    }
    const char *pw = it_env("CHUNKD_REDIS_PASSWORD", NULL);
    const char *db = it_env("CHUNKD_REDIS_DB", "0");
    redisReply *r = pw ? redisCommand(lease_rc, "AUTH %s", pw) : NULL;
    if (pw && (!r || r->type == REDIS_REPLY_ERROR))
        goto fail;
    freeReplyObject(r);
    r = strcmp(db, "0") != 0 ? redisCommand(lease_rc, "SELECT %s", db) : NULL;
    if (strcmp(db, "0") != 0 && (!r || r->type == REDIS_REPLY_ERROR))
        goto fail;
    freeReplyObject(r);
    return 0;
fail:
    fprintf(stderr, "it: Redis AUTH/SELECT: %s\n", r ? r->str : lease_rc->errstr);
    freeReplyObject(r);
    redisFree(lease_rc);
    lease_rc = NULL;
    return -1;
}

int hc_lease_exists(int64_t id)
{
    if (lease_connect() != 0)
        return -1;
    char key[160];
    snprintf(key, sizeof key, "%slease:%lld", it_env("CHUNKD_REDIS_PREFIX", "chunkd:"),
             (long long)id);
    redisReply *r = redisCommand(lease_rc, "EXISTS %s", key);
    if (!r || r->type != REDIS_REPLY_INTEGER) {
        fprintf(stderr, "it: EXISTS %s: %s\n", key,
                r ? (r->type == REDIS_REPLY_ERROR ? r->str : "not an integer") : lease_rc->errstr);
        freeReplyObject(r);
        /* a broken context cannot be used again */
        redisFree(lease_rc);
        lease_rc = NULL;
        return -1;
    }
    int ret = r->integer > 0;
    freeReplyObject(r);
    return ret;
}

/* ---- the cluster -------------------------------------------------------- */

int hc_start(hc_cluster *c, const char *const *extra_args)
{
    memset(c, 0, sizeof *c);
    c->extra_args = extra_args;
    if (load_cluster_env() != 0 || it_tmpdir("cluster", c->dir, sizeof c->dir) != 0)
        return -1;
    snprintf(c->storage, sizeof c->storage, "%s/storage", c->dir);
    int ports[2 + 2 * HC_NODES];
    if (free_ports(ports, 2 + 2 * HC_NODES) != 0)
        goto fail;
    c->lb_port = ports[0];
    c->stats_port = ports[1];
    snprintf(c->lb_port_str, sizeof c->lb_port_str, "%d", c->lb_port);
    for (int i = 0; i < HC_NODES; i++) {
        /* unique per run: several test programs share the stack's Redis */
        snprintf(c->node_id[i], sizeof c->node_id[i], "chunkd%d-%d", i + 1, (int)getpid());
        c->port[i] = ports[2 + 2 * i];
        c->admin_port[i] = ports[3 + 2 * i];
    }
    for (int i = 0; i < HC_NODES; i++)
        if (hc_node_start(c, i) != 0)
            goto fail;
    if (start_haproxy(c) != 0)
        goto fail;
    for (int i = 0; i < HC_NODES; i++)
        if (hc_wait_state(c, i, true, HC_START_TIMEOUT_MS) != 0)
            goto fail;
    return 0;
fail:
    if (c->haproxy_pid > 0) {
        /* WNOWAIT: hc_stop reaps it through the harness, which tracks it */
        siginfo_t si;
        memset(&si, 0, sizeof si);
        if (waitid(P_PID, (id_t)c->haproxy_pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
            si.si_pid == c->haproxy_pid) {
            fprintf(stderr, "it: HAProxy ended (%s %d)\n",
                    si.si_code == CLD_EXITED ? "exit" : "signal", si.si_status);
        } else {
            fprintf(stderr, "it: HAProxy runs (pid %d) but its stats page does not answer on "
                    "127.0.0.1:%d\n", (int)c->haproxy_pid, c->stats_port);
        }
    }
    if (c->haproxy_log[0] && access(c->haproxy_log, F_OK) != 0)
        fprintf(stderr, "it: %s: %s\n", c->haproxy_log, strerror(errno));
    else if (c->haproxy_log[0])
        it_print_file("haproxy log", c->haproxy_log);
    hc_stop(c);
    return -1;
}

void hc_stop(hc_cluster *c)
{
    if (c->haproxy_pid > 0) {
        kill(c->haproxy_pid, SIGKILL);
        it_wait(c->haproxy_pid, 10000, NULL);
        c->haproxy_pid = 0;
    }
    for (int i = 0; i < HC_NODES; i++) {
        /* SIGTERM waits in a stopped process's queue; let it run first */
        if (c->frozen[i] && c->node[i].pid > 0)
            kill(c->node[i].pid, SIGCONT);
        c->frozen[i] = false;
        it_server_stop(&c->node[i]);
    }
    redisFree(lease_rc);
    lease_rc = NULL;
    for (int k = 0; k < c->nold; k++)
        it_rmtree(c->old_dirs[k]);
    c->nold = 0;
    if (c->dir[0]) {
        it_rmtree(c->dir);
        c->dir[0] = '\0';
    }
}
