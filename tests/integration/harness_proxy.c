/* Harness: a TCP proxy on loopback between chunkd and a backend whose
 * replies the test can hold. A reply held keeps a request "in flight" for
 * as long as the test needs (a Redis save while the server says goodbye,
 * say), which no timing could place. */
#include "harness.h"

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { PROXY_MAX_PAIRS = 32 };

struct it_proxy {
    int listen_fd;
    int port;
    int backend_port;
    int wake[2];                /* a byte written: look at the flags again */
    atomic_bool hold;           /* backend-to-client bytes stay unread */
    atomic_bool stop;
    atomic_llong sent;          /* client-to-backend bytes forwarded */
    atomic_llong received;      /* backend-to-client bytes forwarded */
    atomic_llong budget;        /* backend-to-client bytes left before the cut; -1: no cut */
    atomic_bool cut_now;        /* close every connection there is, then clear */
    int client[PROXY_MAX_PAIRS]; /* the thread's alone; -1 free */
    int backend[PROXY_MAX_PAIRS];
    pthread_t thread;
};

static void close_pair(it_proxy *p, int i)
{
    close(p->client[i]);
    close(p->backend[i]);
    p->client[i] = p->backend[i] = -1;
}

/* Moves what `from` has to `to`, at most *budget bytes unless it is
 * NULL; false when either end is done. */
static bool forward(int from, int to, atomic_llong *count, atomic_llong *budget)
{
    char buf[65536];
    long long room = budget ? atomic_load(budget) : -1;
    if (room == 0)
        return false;
    size_t want = room > 0 && room < (long long)sizeof buf ? (size_t)room : sizeof buf;
    ssize_t n = read(from, buf, want);
    if (n < 0 && errno == EINTR)
        return true;
    if (n <= 0)
        return false;
    atomic_fetch_add(count, n);
    if (budget && room > 0)
        atomic_fetch_sub(budget, n);
    for (ssize_t off = 0; off < n;) {
        ssize_t w = send(to, buf + off, (size_t)(n - off), MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        off += w;
    }
    return true;
}

static void accept_pair(it_proxy *p)
{
    int c = accept(p->listen_fd, NULL, NULL);
    if (c < 0)
        return;
    int b = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in to = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)p->backend_port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int slot = -1;
    for (int i = 0; i < PROXY_MAX_PAIRS && slot < 0; i++)
        if (p->client[i] < 0)
            slot = i;
    if (b < 0 || slot < 0 || connect(b, (struct sockaddr *)&to, sizeof to) != 0) {
        fprintf(stderr, "it: proxy: cannot pass a connection on: %s\n",
                slot < 0 ? "too many" : strerror(errno));
        close(c);
        if (b >= 0)
            close(b);
        return;
    }
    p->client[slot] = c;
    p->backend[slot] = b;
}

static void *proxy_main(void *arg)
{
    it_proxy *p = arg;
    while (!atomic_load(&p->stop)) {
        struct pollfd fds[2 + 2 * PROXY_MAX_PAIRS];
        int where[2 + 2 * PROXY_MAX_PAIRS]; /* pair index, backend side + PROXY_MAX_PAIRS */
        int n = 0;
        fds[n++] = (struct pollfd){.fd = p->wake[0], .events = POLLIN};
        fds[n++] = (struct pollfd){.fd = p->listen_fd, .events = POLLIN};
        bool hold = atomic_load(&p->hold);
        for (int i = 0; i < PROXY_MAX_PAIRS; i++) {
            if (p->client[i] < 0)
                continue;
            where[n] = i;
            fds[n++] = (struct pollfd){.fd = p->client[i], .events = POLLIN};
            if (!hold) {
                where[n] = i + PROXY_MAX_PAIRS;
                fds[n++] = (struct pollfd){.fd = p->backend[i], .events = POLLIN};
            }
        }
        int r = poll(fds, (nfds_t)n, 1000); /* the bound: stop is seen within it */
        if (r < 0 && errno != EINTR) {
            fprintf(stderr, "it: proxy: poll: %s\n", strerror(errno));
            break;
        }
        if (r <= 0)
            continue;
        if (fds[0].revents) {
            char drain[64];
            (void)!read(p->wake[0], drain, sizeof drain);
        }
        /* before anything is forwarded: a reply held stays unsent; then a
         * new poll set, since this one's slots may be reused by accepts */
        if (atomic_load(&p->cut_now)) {
            for (int i = 0; i < PROXY_MAX_PAIRS; i++)
                if (p->client[i] >= 0)
                    close_pair(p, i);
            atomic_store(&p->cut_now, false);
            continue;
        }
        if (fds[1].revents & POLLIN)
            accept_pair(p);
        for (int k = 2; k < n; k++) {
            if (!fds[k].revents)
                continue;
            int i = where[k] % PROXY_MAX_PAIRS;
            bool to_backend = where[k] < PROXY_MAX_PAIRS;
            if (p->client[i] < 0)
                continue; /* closed by its other side this turn */
            if (!to_backend && atomic_load(&p->hold))
                continue; /* held since this poll began */
            bool ok = to_backend ? forward(p->client[i], p->backend[i], &p->sent, NULL)
                                 : forward(p->backend[i], p->client[i], &p->received, &p->budget);
            if (!ok)
                close_pair(p, i);
        }
        /* a cut is for every connection: like the backend going away */
        if (atomic_load(&p->budget) == 0)
            for (int i = 0; i < PROXY_MAX_PAIRS; i++)
                if (p->client[i] >= 0)
                    close_pair(p, i);
    }
    return NULL;
}

it_proxy *it_proxy_start(int backend_port)
{
    it_proxy *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->backend_port = backend_port;
    for (int i = 0; i < PROXY_MAX_PAIRS; i++)
        p->client[i] = p->backend[i] = -1;
    atomic_init(&p->hold, false);
    atomic_init(&p->cut_now, false);
    atomic_init(&p->stop, false);
    atomic_init(&p->sent, 0);
    atomic_init(&p->received, 0);
    atomic_init(&p->budget, -1);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    p->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (p->listen_fd < 0 || bind(p->listen_fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(p->listen_fd, 16) != 0 || getsockname(p->listen_fd, (struct sockaddr *)&a, &len) != 0 ||
        pipe(p->wake) != 0) {
        fprintf(stderr, "it: proxy: %s\n", strerror(errno));
        if (p->listen_fd >= 0)
            close(p->listen_fd);
        free(p);
        return NULL;
    }
    p->port = ntohs(a.sin_port);
    if (pthread_create(&p->thread, NULL, proxy_main, p) != 0) {
        fprintf(stderr, "it: proxy: no thread\n");
        close(p->listen_fd);
        close(p->wake[0]);
        close(p->wake[1]);
        free(p);
        return NULL;
    }
    return p;
}

it_proxy *it_proxy_for(const char *port_var, char *env_line, size_t size)
{
    const char *port = getenv(port_var);
    if (!port)
        fail_msg("it: %s is not set", port_var);
    it_proxy *px = it_proxy_start(atoi(port));
    if (!px)
        fail_msg("it: no proxy for %s", port_var);
    snprintf(env_line, size, "%s=%d", port_var, px->port);
    return px;
}

int it_proxy_port(const it_proxy *p)
{
    return p->port;
}

static void wake(it_proxy *p)
{
    (void)!write(p->wake[1], "w", 1);
}

void it_proxy_hold(it_proxy *p, bool hold)
{
    atomic_store(&p->hold, hold);
    wake(p);
}

int64_t it_proxy_sent(it_proxy *p)
{
    return atomic_load(&p->sent);
}

int64_t it_proxy_received(it_proxy *p)
{
    return atomic_load(&p->received);
}

void it_proxy_cut_after(it_proxy *p, int64_t bytes)
{
    atomic_store(&p->budget, bytes < 0 ? -1 : bytes);
    wake(p);
}

int it_proxy_cut_now(it_proxy *p)
{
    atomic_store(&p->cut_now, true);
    wake(p);
    for (int waited = 0; atomic_load(&p->cut_now) && waited < 5000; waited += 2)
        it_sleep_ms(2);
    return atomic_load(&p->cut_now) ? -1 : 0;
}

void it_proxy_stop(it_proxy *p)
{
    if (!p)
        return;
    atomic_store(&p->stop, true);
    wake(p);
    pthread_join(p->thread, NULL);
    for (int i = 0; i < PROXY_MAX_PAIRS; i++)
        if (p->client[i] >= 0)
            close_pair(p, i);
    close(p->listen_fd);
    close(p->wake[0]);
    close(p->wake[1]);
    free(p);
}
