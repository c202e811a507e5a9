/* chunkd's load generator: one epoll loop, many connections, three
 * protocols (chunkd, tus, and the raw bytes the baseline sink takes).
 *
 *   loadgen --proto chunkd|tus|raw --server HOST:PORT --size BYTES
 *           [--uploads N] [--concurrency C] [--idle N] [--chunk BYTES]
 *           [--window W] [--user-id ID --credential HEX] [--server-pid PID]
 *           [--tus-path /files/] [--max-connecting N] [--timeout-s S]
 *           [--label TEXT] [--warm-mib MIB]
 *
 * C connections run N uploads of BYTES each between them, one after another
 * on each connection. With --idle, that many more connections are opened
 * first and held while the uploads run; afterwards each asks the server one
 * question (chunkd: status of an uploaded document; tus: HEAD of an upload),
 * which proves it was still being served. Every file is the same
 * pseudo-random payload whose SHA-256 is computed before the clock starts;
 * chunkd's SUCCESS must carry it. --warm-mib touches that much memory just
 * before the clock starts (lg_warm.h).
 *
 * Prints one line "result key=value ..." (see report()); exits 0 only when
 * every upload and every idle question succeeded. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench_net.h"
#include "lg.h"
#include "lg_proc.h"
#include "lg_warm.h"

enum { MAX_SHOWN_ERRORS = 10, SAMPLE_MS = 50, MAX_EVENTS = 512 };

typedef struct loop {
    lg *g;
    int epfd;
    lg_client *clients;
    int nclients;
    /* Clients waiting to connect, oldest first (a ring of client indexes). */
    int *connq;
    int connq_head, connq_len;
    int connecting;           /* connects in progress */
    int idle_ready;           /* idle connections established */
    bool running;             /* the uploads have been released */
    bool pinging;
    int64_t t_run_start, t_run_end;
    lg_proc_sample srv_start, srv_end, srv_max;
    bool srv_ok;
    double lg_cpu_start, lg_cpu_end;
} loop;

static loop L;

static int64_t now_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
        /* Without a clock no figure means anything. */
        perror("loadgen: clock_gettime");
        exit(2);
    }
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static double self_cpu_s(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* ---- queueing, for drivers -------------------------------------------- */

int lg_queue_head(lg_client *c, const char *fmt, ...)
{
    if (c->hdr_off == c->hdr_len)
        c->hdr_off = c->hdr_len = 0;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(c->hdr + c->hdr_len, sizeof c->hdr - c->hdr_len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof c->hdr - c->hdr_len)
        return lg_fail(L.g, c, "request head longer than %d bytes", LG_HDR_CAP);
    c->hdr_len += (size_t)n;
    return 0;
}

void lg_queue_body(lg_client *c, int64_t pos, int64_t len)
{
    c->body_pos = pos;
    c->body_left = len;
}

/* ---- connections ------------------------------------------------------ */

static void set_interest(lg_client *c, uint32_t ev)
{
    if (c->fd < 0 || ev == c->events)
        return;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    if (epoll_ctl(L.epfd, EPOLL_CTL_MOD, c->fd, &e) != 0)
        fprintf(stderr, "loadgen: epoll_ctl: %s\n", strerror(errno));
    c->events = ev;
}

static void close_client(lg_client *c)
{
    if (c->fd >= 0) {
        if (c->phase == PH_CONNECTING)
            L.connecting--;
        if (close(c->fd) != 0)
            fprintf(stderr, "loadgen: close: %s\n", strerror(errno));
    }
    c->fd = -1;
    c->phase = PH_CLOSED;
    c->events = 0;
    c->hdr_len = c->hdr_off = 0;
    c->body_left = 0;
    c->in_len = 0;
    c->shut_after = false;
    c->authed = false;
}

static void enqueue_connect(lg_client *c)
{
    L.connq[(L.connq_head + L.connq_len) % L.nclients] = c->id;
    L.connq_len++;
}

/* Hands the client its next upload, if any is left. */
static bool assign_upload(lg *g, lg_client *c)
{
    if (g->next_upload >= g->o.uploads)
        return false;
    g->next_upload++;
    c->assigned = true;
    c->size = g->o.size;
    c->sent = c->acked = 0;
    c->inflight = 0;
    c->finishing = c->timed = false;
    c->t_start_ns = now_ns();
    c->t_sent_ns = 0;
    return true;
}

int lg_fail(lg *g, lg_client *c, const char *fmt, ...)
{
    if (g->shown_errors < MAX_SHOWN_ERRORS) {
        char msg[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        fprintf(stderr, "loadgen: %s connection %d: %s\n", g->o.proto, c->id, msg);
    } else if (g->shown_errors == MAX_SHOWN_ERRORS) {
        fprintf(stderr, "loadgen: further errors are counted, not shown\n");
    }
    g->shown_errors++;
    if (c->role == ROLE_IDLE) {
        g->pings_failed++;
    } else if (c->assigned) {
        g->failed++;
        c->assigned = false;
    }
    close_client(c);
    /* An uploader gets a new connection while uploads remain. */
    if (c->role == ROLE_UPLOADER && L.running && assign_upload(g, c))
        enqueue_connect(c);
    return -1;
}

void lg_mark_latency(lg *g, lg_client *c)
{
    if (!c->timed && g->nlat < g->o.uploads)
        g->lat_ns[g->nlat++] = now_ns() - c->t_start_ns;
    c->timed = true;
}

void lg_upload_done(lg *g, lg_client *c)
{
    lg_mark_latency(g, c);
    if (g->trace) {
        /* Milliseconds since the run's clock started: where an upload's
         * time goes (waiting for its first answer, sending, waiting for
         * the last) shows in the gaps. */
        int64_t t0 = L.t_run_start;
        fprintf(g->trace, "upload connection=%d began_ms=%.2f sent_ms=%.2f done_ms=%.2f\n", c->id,
                (double)(c->t_start_ns - t0) / 1e6,
                c->t_sent_ns ? (double)(c->t_sent_ns - t0) / 1e6 : -1.0,
                (double)(now_ns() - t0) / 1e6);
    }
    g->ok++;
    g->bytes_ok += c->size;
    c->assigned = false;
    c->phase = PH_READY;
}

void lg_remember(lg *g, int64_t id, const char *path)
{
    if (g->ndone >= LG_DONE_KEEP)
        return;
    g->done_ids[g->ndone] = id;
    snprintf(g->done_paths[g->ndone], sizeof g->done_paths[g->ndone], "%s", path);
    g->ndone++;
}

int lg_pick(const lg *g, const lg_client *c)
{
    return g->ndone > 0 ? c->id % g->ndone : 0;
}

void lg_ping_done(lg *g, lg_client *c)
{
    g->pings_ok++;
    c->phase = PH_READY;
}

static void start_connect(lg_client *c)
{
    c->fd = bn_connect_start(&L.g->o.addr, L.g->o.addrlen);
    if (c->fd < 0) {
        lg_fail(L.g, c, "connect: %s", strerror(errno));
        return;
    }
    c->phase = PH_CONNECTING;
    L.connecting++;
    struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
    c->events = EPOLLOUT;
    if (epoll_ctl(L.epfd, EPOLL_CTL_ADD, c->fd, &e) != 0)
        lg_fail(L.g, c, "epoll_ctl add: %s", strerror(errno));
}

static void pump_connects(void)
{
    while (L.connq_len > 0 && L.connecting < L.g->o.max_connecting) {
        lg_client *c = &L.clients[L.connq[L.connq_head]];
        L.connq_head = (L.connq_head + 1) % L.nclients;
        L.connq_len--;
        start_connect(c);
    }
}

/* Writes what is queued, asking the driver for more whenever it drains. */
static int flush(lg_client *c)
{
    lg *g = L.g;
    for (;;) {
        if (c->hdr_off == c->hdr_len && c->body_left == 0) {
            if (c->shut_after) {
                c->shut_after = false;
                if (shutdown(c->fd, SHUT_WR) != 0)
                    return lg_fail(g, c, "shutdown: %s", strerror(errno));
            }
            if (c->phase == PH_BUSY && g->drv->fill(g, c) != 0)
                return -1;
            if (c->hdr_off == c->hdr_len && c->body_left == 0)
                break;
        }
        struct iovec iov[2];
        int n = 0;
        if (c->hdr_off < c->hdr_len)
            iov[n++] = (struct iovec){c->hdr + c->hdr_off, c->hdr_len - c->hdr_off};
        if (c->body_left > 0) {
            int64_t len = c->body_left;
            const unsigned char *p = lg_payload_at(&g->pay, c->body_pos, &len);
            iov[n++] = (struct iovec){(void *)p, (size_t)len};
        }
        /* sendmsg rather than writev for MSG_NOSIGNAL: a server that hangs
         * up must cost one failed upload, not the whole run. */
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            return lg_fail(g, c, "write: %s", strerror(errno));
        }
        size_t left = (size_t)w;
        size_t h = c->hdr_len - c->hdr_off < left ? c->hdr_len - c->hdr_off : left;
        c->hdr_off += h;
        left -= h;
        c->body_pos += (int64_t)left;
        c->body_left -= (int64_t)left;
        if (c->assigned && c->t_sent_ns == 0 && c->body_left == 0 && c->sent >= c->size)
            c->t_sent_ns = now_ns();
    }
    bool pending = c->hdr_off < c->hdr_len || c->body_left > 0;
    set_interest(c, EPOLLIN | (pending ? EPOLLOUT : 0));
    return 0;
}

/* The next step of a client that has nothing in flight. */
static void advance(lg_client *c)
{
    lg *g = L.g;
    if (c->phase != PH_READY)
        return;
    if (c->role == ROLE_IDLE) {
        /* Asked once: lg_ping_done() makes it READY again, and then it
         * waits for the end with pinging already over for it. */
        if (!L.pinging || c->pinged)
            return;
        c->pinged = true;
        c->phase = PH_BUSY;
        if (g->drv->ping(g, c) == 0)
            flush(c);
        return;
    }
    if (g->drv->one_upload_per_connection && c->fd >= 0 && !c->assigned) {
        close_client(c);
        if (assign_upload(g, c))
            enqueue_connect(c);
        return;
    }
    if (!c->assigned && !assign_upload(g, c))
        return; /* stays open, unused, until the end */
    c->phase = PH_BUSY;
    if (g->drv->start(g, c) != 0)
        return;
    flush(c);
}

static void on_connected(lg_client *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (err != 0) {
        lg_fail(L.g, c, "connect: %s", strerror(err));
        return;
    }
    L.connecting--;
    c->phase = PH_READY;
    set_interest(c, EPOLLIN);
    if (c->role == ROLE_IDLE)
        L.idle_ready++;
    else
        advance(c);
}

static void on_readable(lg_client *c)
{
    lg *g = L.g;
    for (;;) {
        ssize_t n = read(c->fd, c->in + c->in_len, sizeof c->in - c->in_len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                lg_fail(g, c, "read: %s", strerror(errno));
            return;
        }
        if (n == 0) {
            if (c->phase == PH_BUSY || c->role == ROLE_IDLE)
                lg_fail(g, c, "the server closed the connection");
            else
                close_client(c);
            return;
        }
        c->in_len += (size_t)n;
        while (c->in_len > 0 && c->phase == PH_BUSY) {
            long used = g->drv->consume(g, c);
            if (used < 0)
                return; /* closed by lg_fail */
            if (used == 0)
                break;
            memmove(c->in, c->in + used, c->in_len - (size_t)used);
            c->in_len -= (size_t)used;
        }
        if (c->in_len > 0 && c->phase != PH_BUSY) {
            lg_fail(g, c, "unexpected bytes from the server: %.*s", (int)(c->in_len < 200 ? c->in_len : 200),
                    c->in);
            return;
        }
        if (c->in_len == sizeof c->in) {
            lg_fail(g, c, "an answer longer than %zu bytes", sizeof c->in);
            return;
        }
        if (c->phase == PH_READY)
            advance(c);
        else if (flush(c) != 0)
            return;
        if (c->fd < 0)
            return;
    }
}

static void on_event(lg_client *c, uint32_t ev)
{
    if (c->phase == PH_CONNECTING) {
        on_connected(c);
        return;
    }
    if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR))
        on_readable(c);
    if (c->fd >= 0 && (ev & EPOLLOUT))
        flush(c);
}

/* ---- the run ---------------------------------------------------------- */

static void sample_server(lg_proc_sample *into)
{
    if (L.g->o.server_pid <= 0)
        return;
    lg_proc_sample s;
    if (lg_proc_read(L.g->o.server_pid, &s) != 0) {
        L.srv_ok = false;
        return;
    }
    if (into)
        *into = s;
    if (s.rss_kb > L.srv_max.rss_kb)
        L.srv_max.rss_kb = s.rss_kb;
    if (s.threads > L.srv_max.threads)
        L.srv_max.threads = s.threads;
}

static bool all_done(const lg *g)
{
    if (g->ok + g->failed < g->o.uploads)
        return false;
    return g->o.idle == 0 || g->pings_ok + g->pings_failed >= g->o.idle;
}

static void release_uploads(void)
{
    /* Best effort: a run on cold memory is still a run. */
    (void)lg_warm_memory(L.g->o.warm_mib);
    L.running = true;
    L.t_run_start = now_ns();
    L.lg_cpu_start = self_cpu_s();
    sample_server(&L.srv_start);
    for (int i = 0; i < L.nclients; i++) {
        lg_client *c = &L.clients[i];
        if (c->role == ROLE_UPLOADER && assign_upload(L.g, c))
            enqueue_connect(c);
    }
}

static void start_pings(void)
{
    L.pinging = true;
    for (int i = 0; i < L.nclients; i++) {
        lg_client *c = &L.clients[i];
        if (c->role == ROLE_IDLE && c->phase == PH_READY)
            advance(c);
    }
}

static int run(lg *g)
{
    L.g = g;
    L.srv_ok = true;
    L.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (L.epfd < 0) {
        fprintf(stderr, "loadgen: epoll_create1: %s\n", strerror(errno));
        return -1;
    }
    for (int i = 0; i < L.nclients; i++)
        if (L.clients[i].role == ROLE_IDLE)
            enqueue_connect(&L.clients[i]);
    if (g->o.idle == 0)
        release_uploads();
    int64_t deadline = now_ns() + (int64_t)g->o.timeout_s * 1000000000;
    int64_t next_sample = 0;
    struct epoll_event evs[MAX_EVENTS];
    while (!all_done(g)) {
        pump_connects();
        int n = epoll_wait(L.epfd, evs, MAX_EVENTS, SAMPLE_MS);
        if (n < 0 && errno != EINTR) {
            fprintf(stderr, "loadgen: epoll_wait: %s\n", strerror(errno));
            return -1;
        }
        for (int i = 0; i < n; i++)
            on_event(evs[i].data.ptr, evs[i].events);
        int64_t t = now_ns();
        if (t >= next_sample) {
            sample_server(NULL);
            next_sample = t + SAMPLE_MS * 1000000LL;
        }
        if (!L.running && L.connq_len == 0 && L.connecting == 0) {
            int lost = g->pings_failed;
            fprintf(stderr, "loadgen: %d idle connections open (%d failed); starting uploads\n",
                    L.idle_ready - lost, lost);
            release_uploads();
        }
        if (L.running && L.t_run_end == 0 && g->ok + g->failed >= g->o.uploads) {
            L.t_run_end = t;
            L.lg_cpu_end = self_cpu_s();
            sample_server(&L.srv_end);
            if (g->o.idle > 0)
                start_pings();
        }
        if (t > deadline) {
            fprintf(stderr, "loadgen: timed out after %d s with %d of %d uploads done\n",
                    g->o.timeout_s, g->ok + g->failed, g->o.uploads);
            g->failed += g->o.uploads - g->ok - g->failed;
            if (g->o.idle > 0)
                g->pings_failed = g->o.idle - g->pings_ok;
            if (L.t_run_end == 0) {
                L.t_run_end = t;
                L.lg_cpu_end = self_cpu_s();
            }
            break;
        }
    }
    if (L.t_run_end == 0) {
        L.t_run_end = now_ns();
        L.lg_cpu_end = self_cpu_s();
        sample_server(&L.srv_end);
    }
    /* Measured while every connection is still open. */
    lg_proc_sample fin = {0};
    sample_server(&fin);
    if (fin.hwm_kb > 0)
        L.srv_end.hwm_kb = fin.hwm_kb;
    if (fin.rss_kb > 0) {
        L.srv_end.rss_kb = fin.rss_kb;
        L.srv_end.threads = fin.threads;
    }
    int open_conns = 0;
    for (int i = 0; i < L.nclients; i++) {
        if (L.clients[i].fd >= 0)
            open_conns++;
        close_client(&L.clients[i]);
    }
    fprintf(stderr, "loadgen: %d connections were open at the end\n", open_conns);
    close(L.epfd);
    return 0;
}

/* ---- options and report ----------------------------------------------- */

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen --proto chunkd|tus|raw --server HOST:PORT --size BYTES\n"
            "               [--uploads N] [--concurrency C] [--idle N] [--chunk BYTES]\n"
            "               [--window W] [--user-id ID --credential HEX] [--server-pid PID]\n"
            "               [--tus-path PATH] [--max-connecting N] [--timeout-s S] [--label TEXT]\n"
            "               [--warm-mib MIB] [--trace FILE]\n"
            "sizes take k, m, g suffixes (powers of 1024)\n");
    exit(2);
}

static int64_t parse_size(const char *name, const char *v, int64_t min, int64_t max)
{
    char *end = NULL;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno != 0 || end == v || n < 0) {
        fprintf(stderr, "loadgen: %s '%s' is not a number\n", name, v);
        exit(2);
    }
    int64_t mult = 1;
    if (*end == 'k' || *end == 'K')
        mult = 1024;
    else if (*end == 'm' || *end == 'M')
        mult = 1024 * 1024;
    else if (*end == 'g' || *end == 'G')
        mult = 1024 * 1024 * 1024;
    if (mult > 1)
        end++;
    if (*end != '\0' || n > max / mult || n * mult < min) {
        fprintf(stderr, "loadgen: %s '%s' must be %" PRId64 " to %" PRId64 "\n", name, v, min, max);
        exit(2);
    }
    return n * mult;
}

static void parse_args(int argc, char **argv, lg *g)
{
    lg_opts *o = &g->o;
    const char *server = NULL;
    *o = (lg_opts){.uploads = 1, .concurrency = 1, .chunk = 65536, .window = 0,
                   .timeout_s = 900, .max_connecting = 256, .tus_path = "/files/",
                   .label = "-", .size = -1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc)
            usage();
        const char *v = argv[++i];
        if (strcmp(a, "--proto") == 0)
            o->proto = v;
        else if (strcmp(a, "--server") == 0)
            server = v;
        else if (strcmp(a, "--size") == 0)
            o->size = parse_size(a, v, 0, (int64_t)64 << 30);
        else if (strcmp(a, "--uploads") == 0)
            o->uploads = (int)parse_size(a, v, 0, 10000000);
        else if (strcmp(a, "--concurrency") == 0)
            o->concurrency = (int)parse_size(a, v, 1, 100000);
        else if (strcmp(a, "--idle") == 0)
            o->idle = (int)parse_size(a, v, 0, 100000);
        else if (strcmp(a, "--chunk") == 0)
            o->chunk = parse_size(a, v, 1, (int64_t)1 << 30);
        else if (strcmp(a, "--window") == 0)
            o->window = (int)parse_size(a, v, 1, 1024);
        else if (strcmp(a, "--user-id") == 0)
            o->user_id = parse_size(a, v, 1, INT64_MAX);
        else if (strcmp(a, "--credential") == 0)
            o->credential = v;
        else if (strcmp(a, "--server-pid") == 0)
            o->server_pid = (int)parse_size(a, v, 1, INT_MAX);
        else if (strcmp(a, "--tus-path") == 0)
            o->tus_path = v;
        else if (strcmp(a, "--max-connecting") == 0)
            o->max_connecting = (int)parse_size(a, v, 1, 100000);
        else if (strcmp(a, "--timeout-s") == 0)
            o->timeout_s = (int)parse_size(a, v, 1, 86400);
        else if (strcmp(a, "--warm-mib") == 0)
            o->warm_mib = parse_size(a, v, 0, (int64_t)1 << 20);
        else if (strcmp(a, "--label") == 0)
            o->label = v;
        else if (strcmp(a, "--trace") == 0)
            o->trace = v;
        else
            usage();
    }
    if (!o->proto || !server || o->size < 0)
        usage();
    if (o->window == 0) {
        /* chunkup's default (client_send.c): about 2 MiB of chunks in
         * flight, at least 8, at most 64. */
        int64_t w = (2 * 1024 * 1024) / o->chunk;
        o->window = w < 8 ? 8 : w > 64 ? 64 : (int)w;
    }
    if (strcmp(o->proto, "chunkd") == 0)
        g->drv = &lg_chunkd_driver;
    else if (strcmp(o->proto, "tus") == 0)
        g->drv = &lg_tus_driver;
    else if (strcmp(o->proto, "raw") == 0)
        g->drv = &lg_raw_driver;
    else
        usage();
    if (g->drv == &lg_chunkd_driver && (o->user_id <= 0 || !o->credential)) {
        fprintf(stderr, "loadgen: --proto chunkd needs --user-id and --credential\n");
        exit(2);
    }
    if (g->drv == &lg_raw_driver && o->idle > 0) {
        fprintf(stderr, "loadgen: --idle needs a protocol with requests (chunkd or tus)\n");
        exit(2);
    }
    char err[256];
    if (bn_parse_addr(server, &o->addr, &o->addrlen, err, sizeof err) != 0) {
        fprintf(stderr, "loadgen: --server: %s\n", err);
        exit(2);
    }
    const char *colon = strrchr(server, ':');
    snprintf(o->host, sizeof o->host, "%.*s", (int)(colon - server), server);
    o->port = (int)strtol(colon + 1, NULL, 10); /* validated by bn_parse_addr */
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile in milliseconds; 0 without samples. */
static double pct_ms(const lg *g, double p)
{
    if (g->nlat == 0)
        return 0;
    int idx = (int)(p * g->nlat + 0.999999) - 1;
    if (idx < 0)
        idx = 0;
    if (idx >= g->nlat)
        idx = g->nlat - 1;
    return (double)g->lat_ns[idx] / 1e6;
}

static void report(lg *g)
{
    qsort(g->lat_ns, (size_t)g->nlat, sizeof *g->lat_ns, cmp_i64);
    double secs = (double)(L.t_run_end - L.t_run_start) / 1e9;
    if (secs <= 0)
        secs = 1e-9;
    const lg_opts *o = &g->o;
    printf("result label=%s proto=%s size=%" PRId64 " uploads=%d concurrency=%d idle=%d chunk=%" PRId64
           " window=%d ok=%d failed=%d idle_ok=%d idle_failed=%d seconds=%.3f mb_s=%.1f"
           " uploads_s=%.1f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f lg_cpu_s=%.2f",
           o->label, o->proto, o->size, o->uploads, o->concurrency, o->idle, o->chunk, o->window,
           g->ok, g->failed, g->pings_ok, g->pings_failed, secs, (double)g->bytes_ok / 1e6 / secs,
           g->ok / secs, pct_ms(g, 0.50), pct_ms(g, 0.90), pct_ms(g, 0.99), pct_ms(g, 1.0),
           L.lg_cpu_end - L.lg_cpu_start);
    if (o->server_pid > 0 && L.srv_ok)
        printf(" srv_cpu_s=%.2f srv_rss_max_kb=%" PRId64 " srv_rss_end_kb=%" PRId64
               " srv_hwm_kb=%" PRId64 " srv_threads_max=%" PRId64 " srv_threads_end=%" PRId64,
               L.srv_end.cpu_s - L.srv_start.cpu_s, L.srv_max.rss_kb, L.srv_end.rss_kb,
               L.srv_end.hwm_kb, L.srv_max.threads, L.srv_end.threads);
    printf(" sha256=%s\n", g->sha);
    fflush(stdout);
}

static int raise_fd_limit(int need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            return -1;
    }
    if (rl.rlim_cur < (rlim_t)need) {
        fprintf(stderr, "loadgen: %d connections need %d descriptors; ulimit -n allows %llu\n",
                need - 16, need, (unsigned long long)rl.rlim_cur);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static lg g;
    parse_args(argc, argv, &g);
    int uploaders = g.o.concurrency < g.o.uploads ? g.o.concurrency : g.o.uploads;
    L.nclients = uploaders + g.o.idle;
    if (L.nclients == 0 || raise_fd_limit(L.nclients + 16) != 0)
        return L.nclients == 0 ? 0 : 2;
    if (lg_payload_init(&g.pay) != 0 || lg_payload_sha256(&g.pay, g.o.size, g.sha) != 0) {
        fprintf(stderr, "loadgen: cannot prepare the payload\n");
        return 2;
    }
    L.clients = calloc((size_t)L.nclients, sizeof *L.clients);
    L.connq = calloc((size_t)L.nclients, sizeof *L.connq);
    g.lat_ns = calloc((size_t)g.o.uploads + 1, sizeof *g.lat_ns);
    if (!L.clients || !L.connq || !g.lat_ns) {
        fprintf(stderr, "loadgen: out of memory for %d connections\n", L.nclients);
        return 2;
    }
    if (g.o.trace && !(g.trace = fopen(g.o.trace, "w"))) {
        fprintf(stderr, "loadgen: --trace %s: %s\n", g.o.trace, strerror(errno));
        return 2;
    }
    /* Idle connections first: they are all open before any upload starts. */
    for (int i = 0; i < L.nclients; i++) {
        L.clients[i].id = i;
        L.clients[i].fd = -1;
        L.clients[i].phase = PH_CLOSED;
        L.clients[i].role = i < g.o.idle ? ROLE_IDLE : ROLE_UPLOADER;
    }
    int rc = run(&g);
    if (rc == 0)
        report(&g);
    if (g.trace && fclose(g.trace) != 0) {
        fprintf(stderr, "loadgen: --trace %s: %s\n", g.o.trace, strerror(errno));
        rc = 1;
    }
    free(L.clients);
    free(L.connq);
    free(g.lat_ns);
    lg_payload_free(&g.pay);
    if (rc != 0)
        return 1;
    return g.failed == 0 && g.pings_failed == 0 && g.ok == g.o.uploads ? 0 : 1;
}
