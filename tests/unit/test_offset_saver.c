/* Offset saves over a non-blocking Redis connection, against a fake Redis
 * in this process: a thread that accepts on 127.0.0.1, reads RESP commands
 * and answers each one as the test scripted (a reply, silence, or closing
 * the connection). The saver is driven as the worker drives it: epoll_wait
 * on the worker's set and saver_handle_event for the saver's tag. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "chunkd/offset_saver.h"
#include "chunkd/util.h"

#define WAIT_MS 5000
#define MAX_SCRIPT 16
#define MAX_SEEN 16
#define MAX_CLIENTS 4
#define CLIENT_BUF 4096

/* ---- the fake Redis ---- */

typedef struct fake_step {
    const char *reply;   /* RESP bytes to answer with; NULL: none */
    bool close_after;    /* then close the connection */
    int delay_ms;        /* before answering */
} fake_step;

typedef struct fake_client {
    int fd;
    char buf[CLIENT_BUF];
    size_t len;
} fake_client;

typedef struct fake_redis {
    int lfd;
    int port;
    int stop[2];                 /* a byte on stop[1] ends the thread */
    pthread_t thread;
    pthread_mutex_t lock;
    /* guarded by lock */
    fake_step script[MAX_SCRIPT]; /* answers to the commands, in order */
    size_t nscript;
    size_t next;
    size_t accepted;             /* connections */
    size_t closed_by_us;         /* connections the script closed */
    size_t commands;             /* commands parsed */
    char seen[MAX_SEEN][96];     /* each command's arguments joined by spaces */
    char fault[128];             /* what went wrong in the thread, if anything */
} fake_redis;

static void fake_fault(fake_redis *fr, const char *what)
{
    pthread_mutex_lock(&fr->lock);
    if (!fr->fault[0])
        snprintf(fr->fault, sizeof fr->fault, "%s: %s", what, strerror(errno));
    pthread_mutex_unlock(&fr->lock);
}

/* Reads one "<prefix><integer>\r\n" line at *pos; -1 when incomplete or
 * malformed. */
static long parse_line_int(const char *b, size_t len, size_t *pos, char prefix)
{
    size_t p = *pos;
    if (p >= len || b[p] != prefix)
        return -1;
    long v = 0;
    for (p++; p < len && b[p] >= '0' && b[p] <= '9'; p++)
        v = v * 10 + (b[p] - '0');
    if (p + 1 >= len || b[p] != '\r' || b[p + 1] != '\n' || v > CLIENT_BUF)
        return -1;
    *pos = p + 2;
    return v;
}

/* Parses one RESP array of bulk strings at the start of b: its length, or
 * 0 when it is not complete yet (hiredis sends nothing else). */
static size_t parse_command(const char *b, size_t len, char *text, size_t textlen)
{
    size_t pos = 0;
    long argc = parse_line_int(b, len, &pos, '*');
    if (argc < 0)
        return 0;
    size_t used = 0;
    text[0] = '\0';
    for (long i = 0; i < argc; i++) {
        long n = parse_line_int(b, len, &pos, '$');
        if (n < 0 || pos + (size_t)n + 2 > len)
            return 0;
        int w = snprintf(text + used, textlen - used, "%s%.*s", i ? " " : "", (int)n, b + pos);
        if (w > 0)
            used = used + (size_t)w < textlen ? used + (size_t)w : textlen - 1;
        pos += (size_t)n + 2;
    }
    return pos;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Answers every complete command in the client's buffer; false once the
 * script closed the connection. */
static bool fake_serve(fake_redis *fr, fake_client *c)
{
    for (;;) {
        char text[96];
        size_t used = parse_command(c->buf, c->len, text, sizeof text);
        if (used == 0)
            return true;
        memmove(c->buf, c->buf + used, c->len - used);
        c->len -= used;
        fake_step step = {0};
        pthread_mutex_lock(&fr->lock);
        if (fr->commands < MAX_SEEN)
            snprintf(fr->seen[fr->commands], sizeof fr->seen[0], "%s", text);
        fr->commands++;
        if (fr->next < fr->nscript)
            step = fr->script[fr->next++];
        pthread_mutex_unlock(&fr->lock);
        if (step.delay_ms > 0)
            poll(NULL, 0, step.delay_ms);
        if (step.reply && write_all(c->fd, step.reply, strlen(step.reply)) != 0)
            fake_fault(fr, "fake send");
        if (step.close_after) {
            close(c->fd);
            c->fd = -1;
            pthread_mutex_lock(&fr->lock);
            fr->closed_by_us++;
            pthread_mutex_unlock(&fr->lock);
            return false;
        }
    }
}

static void *fake_main(void *arg)
{
    fake_redis *fr = arg;
    fake_client clients[MAX_CLIENTS];
    for (size_t i = 0; i < MAX_CLIENTS; i++)
        clients[i].fd = -1;
    for (;;) {
        struct pollfd pfd[2 + MAX_CLIENTS];
        pfd[0] = (struct pollfd){.fd = fr->stop[0], .events = POLLIN};
        pfd[1] = (struct pollfd){.fd = fr->lfd, .events = POLLIN};
        for (size_t i = 0; i < MAX_CLIENTS; i++)
            pfd[2 + i] = (struct pollfd){.fd = clients[i].fd, .events = POLLIN};
        int n = poll(pfd, 2 + MAX_CLIENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fake_fault(fr, "fake poll");
            break;
        }
        if (pfd[0].revents)
            break;
        if (pfd[1].revents & POLLIN) {
            int fd = accept4(fr->lfd, NULL, NULL, SOCK_CLOEXEC);
            size_t slot = 0;
            while (slot < MAX_CLIENTS && clients[slot].fd >= 0)
                slot++;
            if (fd < 0 || slot == MAX_CLIENTS) {
                fake_fault(fr, "fake accept");
                if (fd >= 0)
                    close(fd);
            } else {
                clients[slot].fd = fd;
                clients[slot].len = 0;
                pthread_mutex_lock(&fr->lock);
                fr->accepted++;
                pthread_mutex_unlock(&fr->lock);
            }
        }
        for (size_t i = 0; i < MAX_CLIENTS; i++) {
            fake_client *c = &clients[i];
            if (c->fd < 0 || !(pfd[2 + i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t r = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
            if (r <= 0) {
                if (r < 0 && errno == EINTR)
                    continue;
                close(c->fd); /* the client went away (or reset) */
                c->fd = -1;
                continue;
            }
            c->len += (size_t)r;
            fake_serve(fr, c);
            if (c->fd >= 0 && c->len == sizeof c->buf) {
                errno = EMSGSIZE;
                fake_fault(fr, "fake command too long");
                close(c->fd);
                c->fd = -1;
            }
        }
    }
    for (size_t i = 0; i < MAX_CLIENTS; i++)
        if (clients[i].fd >= 0)
            close(clients[i].fd);
    return NULL;
}

static int fake_start(fake_redis *fr)
{
    memset(fr, 0, sizeof *fr);
    fr->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fr->lfd < 0)
        return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    if (bind(fr->lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fr->lfd, 8) != 0 ||
        getsockname(fr->lfd, (struct sockaddr *)&a, &alen) != 0 ||
        pipe2(fr->stop, O_CLOEXEC) != 0) {
        close(fr->lfd);
        return -1;
    }
    fr->port = ntohs(a.sin_port);
    if (pthread_mutex_init(&fr->lock, NULL) != 0) {
        close(fr->stop[0]);
        close(fr->stop[1]);
        close(fr->lfd);
        return -1;
    }
    if (pthread_create(&fr->thread, NULL, fake_main, fr) != 0) {
        pthread_mutex_destroy(&fr->lock);
        close(fr->stop[0]);
        close(fr->stop[1]);
        close(fr->lfd);
        return -1;
    }
    return 0;
}

static int fake_stop(fake_redis *fr)
{
    int rc = 0;
    if (write(fr->stop[1], "x", 1) != 1 || pthread_join(fr->thread, NULL) != 0)
        rc = -1;
    close(fr->stop[0]);
    close(fr->stop[1]);
    close(fr->lfd);
    pthread_mutex_destroy(&fr->lock);
    return rc;
}

static size_t fake_count(fake_redis *fr, const size_t *field)
{
    pthread_mutex_lock(&fr->lock);
    size_t v = *field;
    pthread_mutex_unlock(&fr->lock);
    return v;
}

static void fake_expect(fake_redis *fr, const char *reply, bool close_after, int delay_ms)
{
    assert_true(fake_count(fr, &fr->nscript) < MAX_SCRIPT);
    pthread_mutex_lock(&fr->lock);
    fr->script[fr->nscript++] = (fake_step){reply, close_after, delay_ms};
    pthread_mutex_unlock(&fr->lock);
}

static void fake_assert_seen(fake_redis *fr, size_t i, const char *text)
{
    pthread_mutex_lock(&fr->lock);
    char copy[sizeof fr->seen[0]] = "";
    size_t n = fr->commands;
    if (i < MAX_SEEN)
        memcpy(copy, fr->seen[i], sizeof copy);
    pthread_mutex_unlock(&fr->lock);
    assert_true(i < n);
    assert_string_equal(copy, text);
}

/* ---- the saver under test ---- */

typedef struct outcome {
    int calls;
    bool ok;
    long long reply;
    char why[256];
} outcome;

typedef struct fixture fixture;

/* A save's argument: its outcome, and what its done does next. */
typedef struct save {
    fixture *f;
    outcome out;
    struct save *then_send;  /* sends this save from the done callback */
    bool wait_inside;        /* calls saver_wait from the done callback */
    int64_t inner_wait_ms;   /* how long that call took */
    int order;               /* position among the dones that ran */
} save;

struct fixture {
    chunkd_config cfg;
    metrics m;
    fake_redis fake;
    int epfd;
    offset_saver *sv;
    int hold_fd;             /* a bound, never listening port; -1: none */
    int dones;
};

static const char eval_cmd_fmt[] = "EVAL %s 0";

static bool never(void *arg)
{
    (void)arg;
    return false;
}

static int send_eval(fixture *f, const char *script, save *s);

static void on_done(void *arg, bool ok, long long reply, const char *why)
{
    save *s = arg;
    s->out.calls++;
    s->out.ok = ok;
    s->out.reply = reply;
    snprintf(s->out.why, sizeof s->out.why, "%s", why ? why : "(null)");
    s->order = s->f->dones++;
    if (s->wait_inside) {
        int64_t t0 = util_mono_ms();
        saver_wait(s->f->sv, never, NULL);
        s->inner_wait_ms = util_mono_ms() - t0;
    }
    if (s->then_send) {
        save *next = s->then_send;
        s->then_send = NULL;
        if (send_eval(s->f, "next", next) != 0)
            next->out.calls = -1; /* noticed by the test */
    }
}

static int send_eval(fixture *f, const char *script, save *s)
{
    char *cmd = NULL;
    int len = redisFormatCommand(&cmd, eval_cmd_fmt, script);
    assert_true(len > 0);
    s->f = f;
    int rc = saver_send(f->sv, cmd, (size_t)len, on_done, s);
    redisFreeCommand(cmd);
    return rc;
}

static bool got_reply(void *arg)
{
    return ((const save *)arg)->out.calls > 0;
}

/* Runs the worker's loop until pred(arg) holds; every event must be the
 * saver's. */
static void drive(fixture *f, bool (*pred)(void *), void *arg)
{
    int64_t deadline = util_mono_ms() + WAIT_MS;
    while (!pred(arg)) {
        int64_t left = deadline - util_mono_ms();
        assert_true(left > 0);
        saver_flush(f->sv); /* as the worker does before each epoll_wait */
        struct epoll_event ev[4];
        int n = epoll_wait(f->epfd, ev, 4, left > 50 ? 50 : (int)left);
        assert_true(n >= 0 || errno == EINTR);
        for (int i = 0; i < n; i++) {
            assert_ptr_equal(ev[i].data.ptr, saver_event_tag(f->sv));
            saver_handle_event(f->sv, ev[i].events);
        }
    }
}

typedef struct count_wait {
    fake_redis *fr;
    const size_t *field;
    size_t want;
} count_wait;

static bool count_reached(void *arg)
{
    count_wait *w = arg;
    return fake_count(w->fr, w->field) >= w->want;
}

/* Drives the loop until the fake has parsed `want` commands. */
static void drive_until_commands(fixture *f, size_t want)
{
    count_wait w = {&f->fake, &f->fake.commands, want};
    drive(f, count_reached, &w);
}

/* Waits, without touching the saver, until the fake closed `want`
 * connections. */
static void wait_fake_closed(fixture *f, size_t want)
{
    int64_t deadline = util_mono_ms() + WAIT_MS;
    while (fake_count(&f->fake, &f->fake.closed_by_us) < want) {
        assert_true(util_mono_ms() < deadline);
        poll(NULL, 0, 5);
    }
}

/* Nothing of the saver is registered, or nothing is pending. */
static void assert_quiet(fixture *f)
{
    struct epoll_event ev;
    assert_int_equal(epoll_wait(f->epfd, &ev, 1, 0), 0);
}

static void assert_no_fault(fixture *f)
{
    pthread_mutex_lock(&f->fake.lock);
    char fault[sizeof f->fake.fault];
    memcpy(fault, f->fake.fault, sizeof fault);
    pthread_mutex_unlock(&f->fake.lock);
    assert_string_equal(fault, "");
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    f->hold_fd = -1;
    config_defaults(&f->cfg);
    snprintf(f->cfg.redis_host, sizeof f->cfg.redis_host, "127.0.0.1");
    f->cfg.redis_password[0] = '\0';
    f->cfg.redis_db = 0;
    f->cfg.backend_timeout_ms = 2000;
    f->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (f->epfd < 0) {
        free(f);
        return -1;
    }
    if (fake_start(&f->fake) != 0) {
        close(f->epfd);
        free(f);
        return -1;
    }
    f->cfg.redis_port = f->fake.port;
    f->sv = saver_new(&f->cfg, f->epfd, &f->m);
    if (!f->sv) {
        fake_stop(&f->fake);
        close(f->epfd);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    saver_free(f->sv);
    int rc = fake_stop(&f->fake);
    if (f->hold_fd >= 0)
        close(f->hold_fd);
    if (close(f->epfd) != 0)
        rc = -1;
    free(f);
    return rc;
}

static uint64_t redis_errors(fixture *f)
{
    return atomic_load(&f->m.counter[M_REDIS_ERRORS]);
}

static uint64_t redis_round_trips(fixture *f)
{
    uint64_t n = 0;
    for (size_t b = 0; b <= METRICS_BUCKETS; b++)
        n += atomic_load(&f->m.bucket[H_REDIS][b]);
    return n;
}

/* ---- tests ---- */

static void test_integer_reply(void **state)
{
    fixture *f = *state;
    fake_expect(&f->fake, ":7\r\n", false, 0);
    save s = {0};
    assert_int_equal(send_eval(f, "x", &s), 0);
    assert_int_equal(s.out.calls, 0); /* nothing answers before the loop runs */
    drive(f, got_reply, &s);
    assert_int_equal(s.out.calls, 1);
    assert_true(s.out.ok);
    assert_int_equal(s.out.reply, 7);
    assert_string_equal(s.out.why, "");
    fake_assert_seen(&f->fake, 0, "EVAL x 0");
    assert_int_equal(fake_count(&f->fake, &f->fake.accepted), 1);
    assert_int_equal(redis_errors(f), 0);
    assert_int_equal(redis_round_trips(f), 1);
    assert_no_fault(f);
}

static void test_error_reply(void **state)
{
    fixture *f = *state;
    fake_expect(&f->fake, "-ERR boom\r\n", false, 0);
    save s = {0};
    assert_int_equal(send_eval(f, "x", &s), 0);
    drive(f, got_reply, &s);
    assert_int_equal(s.out.calls, 1);
    assert_false(s.out.ok);
    assert_non_null(strstr(s.out.why, "boom"));
    assert_int_equal(redis_errors(f), 1);
    assert_no_fault(f);
}

static void test_unexpected_reply_type(void **state)
{
    fixture *f = *state;
    fake_expect(&f->fake, "+OK\r\n", false, 0);
    save s = {0};
    assert_int_equal(send_eval(f, "x", &s), 0);
    drive(f, got_reply, &s);
    assert_int_equal(s.out.calls, 1);
    assert_false(s.out.ok);
    assert_non_null(strstr(s.out.why, "unexpected reply type"));
    assert_int_equal(redis_errors(f), 1);
}

static bool all_three(void *arg)
{
    save *s = arg;
    return s[0].out.calls && s[1].out.calls && s[2].out.calls;
}

static void test_pipelined_replies_in_order(void **state)
{
    fixture *f = *state;
    fake_expect(&f->fake, ":11\r\n", false, 0);
    fake_expect(&f->fake, "-ERR second\r\n", false, 0);
    fake_expect(&f->fake, ":33\r\n", false, 0);
    save s[3] = {{0}};
    assert_int_equal(send_eval(f, "a", &s[0]), 0);
    assert_int_equal(send_eval(f, "b", &s[1]), 0);
    assert_int_equal(send_eval(f, "c", &s[2]), 0);
    drive(f, all_three, s);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(s[i].out.calls, 1);
        assert_int_equal(s[i].order, i);
    }
    assert_true(s[0].out.ok);
    assert_int_equal(s[0].out.reply, 11);
    assert_false(s[1].out.ok);
    assert_non_null(strstr(s[1].out.why, "second"));
    assert_true(s[2].out.ok);
    assert_int_equal(s[2].out.reply, 33);
    fake_assert_seen(&f->fake, 0, "EVAL a 0");
    fake_assert_seen(&f->fake, 1, "EVAL b 0");
    fake_assert_seen(&f->fake, 2, "EVAL c 0");
    assert_int_equal(fake_count(&f->fake, &f->fake.accepted), 1);
}

static void test_auth_and_select_go_first(void **state)
{
    fixture *f = *state;
    snprintf(f->cfg.redis_password, sizeof f->cfg.redis_password, "s3cret");
    f->cfg.redis_db = 3;
    fake_expect(&f->fake, "+OK\r\n", false, 0);
    fake_expect(&f->fake, "+OK\r\n", false, 0);
    fake_expect(&f->fake, ":5\r\n", false, 0);
    save s = {0};
    assert_int_equal(send_eval(f, "x", &s), 0);
    drive(f, got_reply, &s);
    /* The setup replies are not mistaken for the save's. */
    assert_true(s.out.ok);
    assert_int_equal(s.out.reply, 5);
    fake_assert_seen(&f->fake, 0, "AUTH s3cret");
    fake_assert_seen(&f->fake, 1, "SELECT 3");
    fake_assert_seen(&f->fake, 2, "EVAL x 0");
}

static void test_failed_auth_shows_in_the_save(void **state)
{
    fixture *f = *state;
    snprintf(f->cfg.redis_password, sizeof f->cfg.redis_password, "wrong");
    fake_expect(&f->fake, "-WRONGPASS invalid username-password pair\r\n", false, 0);
    fake_expect(&f->fake, "-NOAUTH Authentication required.\r\n", false, 0);
    save s = {0};
    assert_int_equal(send_eval(f, "x", &s), 0);
    drive(f, got_reply, &s);
    assert_int_equal(s.out.calls, 1);
    assert_false(s.out.ok);
    assert_non_null(strstr(s.out.why, "NOAUTH"));
}

static void test_wait_returns_on_reply(void **state)
{
    fixture *f = *state;
    fake_expect(&f->fake, ":9\r\n", false, 150);
    save s = {0};
    assert_int_equal(send_eval(f, "x", &s), 0);
    int64_t t0 = util_mono_ms();
    saver_wait(f->sv, got_reply, &s);
    int64_t took = util_mono_ms() - t0;
    assert_int_equal(s.out.calls, 1);
    assert_true(s.out.ok);
    assert_int_equal(s.out.reply, 9);
    /* It blocked for the slow reply, and not until the timeout. */
    assert_true(took >= 100);
    assert_true(took < f->cfg.backend_timeout_ms);
    /* Already true: returns at once, touching nothing. */
    t0 = util_mono_ms();
    saver_wait(f->sv, got_reply, &s);
    assert_true(util_mono_ms() - t0 < 100);
    assert_int_equal(s.out.calls, 1);
}

static void test_wait_gives_up(void **state)
{
    fixture *f = *state;
    f->cfg.backend_timeout_ms = 200;
    fake_expect(&f->fake, NULL, false, 0); /* never answers */
    fake_expect(&f->fake, ":2\r\n", false, 0);
    save s = {0};
    assert_int_equal(send_eval(f, "x", &s), 0);
    int64_t t0 = util_mono_ms();
    saver_wait(f->sv, got_reply, &s);
    int64_t took = util_mono_ms() - t0;
    assert_true(took >= 150);
    assert_true(took < WAIT_MS);
    assert_int_equal(s.out.calls, 1);
    assert_false(s.out.ok);
    assert_non_null(strstr(s.out.why, "no reply in time"));
    assert_non_null(strstr(saver_error(f->sv), "no reply in time"));
    assert_int_equal(redis_errors(f), 1);
    assert_quiet(f); /* the dropped connection left the epoll set */
    /* The next save opens a new connection. */
    save s2 = {0};
    assert_int_equal(send_eval(f, "y", &s2), 0);
    drive(f, got_reply, &s2);
    assert_true(s2.out.ok);
    assert_int_equal(s2.out.reply, 2);
    assert_int_equal(fake_count(&f->fake, &f->fake.accepted), 2);
}

static void test_wait_without_connection_returns(void **state)
{
    fixture *f = *state;
    int64_t t0 = util_mono_ms();
    saver_wait(f->sv, never, NULL);
    assert_true(util_mono_ms() - t0 < 100);
    assert_int_equal(fake_count(&f->fake, &f->fake.accepted), 0);
}

static void test_tick_drops_a_silent_connection(void **state)
{
    fixture *f = *state;
    f->cfg.backend_timeout_ms = 200;
    fake_expect(&f->fake, ":1\r\n", false, 0);
    fake_expect(&f->fake, NULL, false, 0);
    save s1 = {0}, s2 = {0};
    assert_int_equal(send_eval(f, "a", &s1), 0);
    drive(f, got_reply, &s1);
    assert_true(s1.out.ok);
    /* Nothing waiting: an idle connection is never dropped. */
    saver_tick(f->sv, util_mono_ms() + 10 * f->cfg.backend_timeout_ms);
    int64_t sent = util_mono_ms();
    assert_int_equal(send_eval(f, "b", &s2), 0);
    drive_until_commands(f, 2);
    assert_int_equal(fake_count(&f->fake, &f->fake.accepted), 1);
    /* Within the timeout (as seen from the send, however slow this run
     * is): still waiting. */
    saver_tick(f->sv, sent + f->cfg.backend_timeout_ms / 2);
    assert_int_equal(s2.out.calls, 0);
    /* Past it: dropped, and the save fails now. */
    saver_tick(f->sv, util_mono_ms() + f->cfg.backend_timeout_ms + 100);
    assert_int_equal(s2.out.calls, 1);
    assert_false(s2.out.ok);
    assert_non_null(strstr(s2.out.why, "no reply in time"));
    assert_quiet(f);
}

/* A bound socket that never listens: connections to it are refused, and no
 * other program can take the port meanwhile. */
static int dead_port(fixture *f)
{
    f->hold_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(f->hold_fd >= 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    assert_int_equal(bind(f->hold_fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(f->hold_fd, (struct sockaddr *)&a, &alen), 0);
    return ntohs(a.sin_port);
}

static void test_connection_refused(void **state)
{
    fixture *f = *state;
    f->cfg.redis_port = dead_port(f);
    save s = {0};
    int rc = send_eval(f, "x", &s);
    if (rc != 0) {
        assert_int_equal(s.out.calls, 0); /* no done for a save never queued */
        assert_non_null(strstr(saver_error(f->sv), "refused"));
    } else {
        drive(f, got_reply, &s);
        assert_int_equal(s.out.calls, 1);
        assert_false(s.out.ok);
        assert_non_null(strstr(s.out.why, "refused"));
        assert_non_null(strstr(saver_error(f->sv), "refused"));
    }
    assert_quiet(f);
    /* Still usable once Redis is back. */
    f->cfg.redis_port = f->fake.port;
    fake_expect(&f->fake, ":4\r\n", false, 0);
    save s2 = {0};
    assert_int_equal(send_eval(f, "y", &s2), 0);
    drive(f, got_reply, &s2);
    assert_true(s2.out.ok);
    assert_int_equal(s2.out.reply, 4);
}

static bool quiet_for_a_while(void *arg)
{
    fixture *f = arg;
    struct epoll_event ev;
    return epoll_wait(f->epfd, &ev, 1, 100) == 0;
}

static void test_reconnects_after_server_close(void **state)
{
    fixture *f = *state;
    fake_expect(&f->fake, ":1\r\n", true, 0);
    fake_expect(&f->fake, ":2\r\n", false, 0);
    save s1 = {0}, s2 = {0};
    assert_int_equal(send_eval(f, "a", &s1), 0);
    drive(f, got_reply, &s1);
    assert_true(s1.out.ok);
    wait_fake_closed(f, 1);
    /* The loop sees the end of the connection and lets it go: once the
     * set stays quiet, the socket has left it. */
    int64_t deadline = util_mono_ms() + WAIT_MS;
    for (;;) {
        struct epoll_event ev;
        int n = epoll_wait(f->epfd, &ev, 1, 100);
        if (n == 0)
            break;
        assert_true(util_mono_ms() < deadline);
        if (n == 1) {
            assert_ptr_equal(ev.data.ptr, saver_event_tag(f->sv));
            saver_handle_event(f->sv, ev.events);
        }
    }
    assert_true(quiet_for_a_while(f));
    assert_int_equal(s1.out.calls, 1); /* no second done for an answered save */
    assert_int_equal(send_eval(f, "b", &s2), 0);
    drive(f, got_reply, &s2);
    assert_true(s2.out.ok);
    assert_int_equal(s2.out.reply, 2);
    assert_int_equal(fake_count(&f->fake, &f->fake.accepted), 2);
    assert_no_fault(f);
}

static void test_unnoticed_close_fails_one_save(void **state)
{
    fixture *f = *state;
    fake_expect(&f->fake, ":1\r\n", true, 0);
    fake_expect(&f->fake, ":3\r\n", false, 0);
    save s1 = {0}, s2 = {0}, s3 = {0};
    assert_int_equal(send_eval(f, "a", &s1), 0);
    drive(f, got_reply, &s1);
    wait_fake_closed(f, 1);
    /* Sent before the loop saw the close: goes to the dead connection. */
    assert_int_equal(send_eval(f, "b", &s2), 0);
    drive(f, got_reply, &s2);
    assert_int_equal(s2.out.calls, 1);
    assert_false(s2.out.ok);
    assert_true(strlen(s2.out.why) > strlen("redis, not waited for: "));
    assert_int_equal(send_eval(f, "c", &s3), 0);
    drive(f, got_reply, &s3);
    assert_true(s3.out.ok);
    assert_int_equal(s3.out.reply, 3);
    assert_int_equal(fake_count(&f->fake, &f->fake.accepted), 2);
}

static void test_free_fails_waiting_saves(void **state)
{
    fixture *f = *state;
    fake_expect(&f->fake, NULL, false, 0);
    save s1 = {0}, s2 = {0};
    assert_int_equal(send_eval(f, "a", &s1), 0);
    drive_until_commands(f, 1);
    assert_int_equal(send_eval(f, "b", &s2), 0); /* queued, maybe not even written */
    uint64_t errors = redis_errors(f);
    saver_free(f->sv);
    f->sv = NULL;
    assert_int_equal(s1.out.calls, 1);
    assert_false(s1.out.ok);
    assert_non_null(strstr(s1.out.why, "shutting down"));
    assert_int_equal(s2.out.calls, 1);
    assert_false(s2.out.ok);
    assert_true(s1.order < s2.order);
    assert_int_equal(redis_errors(f), errors + 2);
    assert_quiet(f);
    saver_free(NULL);
}

static void test_free_before_connect_completes(void **state)
{
    fixture *f = *state;
    save s = {0};
    assert_int_equal(send_eval(f, "a", &s), 0);
    saver_free(f->sv); /* no event handled: the command was never written */
    f->sv = NULL;
    assert_int_equal(s.out.calls, 1);
    assert_false(s.out.ok);
    assert_quiet(f);
}

/* Replies that keep coming are not silence: with a 400 ms timeout and four
 * pipelined saves answered 150 ms apart, waiting for the last one must not
 * drop the connection although the wait lasts longer than the timeout. */
static bool last_of_four(void *arg)
{
    return ((const save *)arg)[3].out.calls > 0;
}

static void test_wait_deadline_moves_with_replies(void **state)
{
    fixture *f = *state;
    f->cfg.backend_timeout_ms = 400;
    for (int i = 0; i < 4; i++)
        fake_expect(&f->fake, ":1\r\n", false, 150);
    save s[4] = {{0}};
    for (int i = 0; i < 4; i++)
        assert_int_equal(send_eval(f, "x", &s[i]), 0);
    int64_t t0 = util_mono_ms();
    saver_wait(f->sv, last_of_four, s);
    int64_t took = util_mono_ms() - t0;
    for (int i = 0; i < 4; i++) {
        assert_int_equal(s[i].out.calls, 1);
        assert_true(s[i].out.ok);
    }
    assert_true(took >= 400); /* longer than the timeout, yet nothing failed */
    assert_int_equal(fake_count(&f->fake, &f->fake.accepted), 1);
}

/* A done callback that sends again while saver_free runs gets -1 instead of
 * a new connection that would outlive the saver. */
static void test_send_from_done_during_free_is_refused(void **state)
{
    fixture *f = *state;
    fake_expect(&f->fake, NULL, false, 0);
    save s[2] = {{0}};
    s[0].then_send = &s[1];
    assert_int_equal(send_eval(f, "a", &s[0]), 0);
    drive_until_commands(f, 1);
    saver_free(f->sv);
    f->sv = NULL;
    assert_int_equal(s[0].out.calls, 1);
    assert_false(s[0].out.ok);
    assert_int_equal(s[1].out.calls, -1); /* its send returned -1 */
    assert_quiet(f);
    assert_int_equal(fake_count(&f->fake, &f->fake.accepted), 1);
}

static bool both(void *arg)
{
    save *s = arg;
    return s[0].out.calls && s[1].out.calls;
}

/* Saves queued in a loop turn go out when the worker flushes at its end,
 * together; the loop alone, without a flush, sends nothing (and asks for
 * no EPOLLOUT). */
static void test_saves_wait_for_the_flush(void **state)
{
    fixture *f = *state;
    fake_expect(&f->fake, ":1\r\n", false, 0);
    fake_expect(&f->fake, ":2\r\n", false, 0);
    save s[2] = {{0}, {0}};
    assert_int_equal(send_eval(f, "a", &s[0]), 0);
    assert_int_equal(send_eval(f, "b", &s[1]), 0);
    for (int i = 0; i < 3; i++) {
        struct epoll_event ev;
        int n = epoll_wait(f->epfd, &ev, 1, 50);
        assert_true(n == 0 || (n < 0 && errno == EINTR));
    }
    assert_int_equal(fake_count(&f->fake, &f->fake.commands), 0);
    assert_int_equal(s[0].out.calls + s[1].out.calls, 0);
    drive(f, both, s);
    assert_int_equal(s[0].out.reply, 1);
    assert_int_equal(s[1].out.reply, 2);
    fake_assert_seen(&f->fake, 0, "EVAL a 0");
    fake_assert_seen(&f->fake, 1, "EVAL b 0");
    /* Everything written: the socket is back to EPOLLIN only. */
    assert_quiet(f);
    assert_no_fault(f);
}

static void test_done_may_send_the_next_save(void **state)
{
    fixture *f = *state;
    fake_expect(&f->fake, ":1\r\n", false, 0);
    fake_expect(&f->fake, ":2\r\n", false, 0);
    save s[2] = {{0}};
    s[0].then_send = &s[1];
    assert_int_equal(send_eval(f, "first", &s[0]), 0);
    drive(f, both, s);
    assert_true(s[0].out.ok);
    assert_int_equal(s[0].out.reply, 1);
    assert_int_equal(s[1].out.calls, 1);
    assert_true(s[1].out.ok);
    assert_int_equal(s[1].out.reply, 2);
    fake_assert_seen(&f->fake, 1, "EVAL next 0");
    assert_int_equal(fake_count(&f->fake, &f->fake.accepted), 1);
}

/* The same inside saver_wait, as a completion's drain does: the save a
 * reply's callback queues must be written while the wait goes on, or the
 * wait for it would only end at the timeout. */
static bool second_answered(void *arg)
{
    return ((save *)arg)[1].out.calls > 0;
}

static void test_wait_writes_saves_queued_by_callbacks(void **state)
{
    fixture *f = *state;
    f->cfg.backend_timeout_ms = 5000;
    fake_expect(&f->fake, ":1\r\n", false, 0);
    fake_expect(&f->fake, ":2\r\n", false, 0);
    save s[2] = {{0}};
    s[0].then_send = &s[1];
    assert_int_equal(send_eval(f, "first", &s[0]), 0);
    int64_t t0 = util_mono_ms();
    saver_wait(f->sv, second_answered, s);
    assert_true(util_mono_ms() - t0 < f->cfg.backend_timeout_ms);
    assert_true(s[1].out.ok);
    assert_int_equal(s[1].out.reply, 2);
    fake_assert_seen(&f->fake, 1, "EVAL next 0");
}

static void test_done_of_a_dropped_save_may_send_again(void **state)
{
    fixture *f = *state;
    f->cfg.backend_timeout_ms = 200;
    fake_expect(&f->fake, NULL, false, 0);
    fake_expect(&f->fake, ":8\r\n", false, 0);
    save s[2] = {{0}};
    s[0].then_send = &s[1];
    assert_int_equal(send_eval(f, "first", &s[0]), 0);
    drive_until_commands(f, 1);
    saver_tick(f->sv, util_mono_ms() + 1000);
    assert_int_equal(s[0].out.calls, 1);
    assert_false(s[0].out.ok);
    /* Sent from inside the drop: it must go to a new connection. */
    assert_int_equal(s[1].out.calls, 0);
    drive(f, got_reply, &s[1]);
    assert_true(s[1].out.ok);
    assert_int_equal(s[1].out.reply, 8);
    assert_int_equal(fake_count(&f->fake, &f->fake.accepted), 2);
}

static bool answered_or_refused(void *arg)
{
    return ((const save *)arg)->out.calls != 0;
}

static void test_done_of_a_lost_save_may_send_again(void **state)
{
    fixture *f = *state;
    fake_expect(&f->fake, NULL, true, 0); /* closes instead of answering */
    fake_expect(&f->fake, ":6\r\n", false, 0);
    save s[2] = {{0}};
    s[0].then_send = &s[1];
    assert_int_equal(send_eval(f, "first", &s[0]), 0);
    drive(f, got_reply, &s[0]);
    assert_false(s[0].out.ok);
    assert_true(strlen(s[0].out.why) > strlen("redis, not waited for: "));
    /* Sent while the lost connection is being torn down: a new one takes it
     * (-1 in calls: saver_send refused it). */
    drive(f, answered_or_refused, &s[1]);
    assert_int_equal(s[1].out.calls, 1);
    assert_true(s[1].out.ok);
    assert_int_equal(s[1].out.reply, 6);
    assert_int_equal(fake_count(&f->fake, &f->fake.accepted), 2);
}

static void test_wait_inside_done_returns(void **state)
{
    fixture *f = *state;
    fake_expect(&f->fake, ":1\r\n", false, 0);
    save s = {0};
    s.wait_inside = true;
    assert_int_equal(send_eval(f, "x", &s), 0);
    drive(f, got_reply, &s);
    assert_int_equal(s.out.calls, 1);
    assert_true(s.out.ok);
    assert_true(s.inner_wait_ms < f->cfg.backend_timeout_ms / 2);
}

int main(void)
{
    /* The worker blocks SIGPIPE; hiredis writes with write(2). */
    if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
        perror("signal");
        return 1;
    }
    /* A saver_wait that never returns would otherwise hang the run. */
    alarm(120);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_integer_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_saves_wait_for_the_flush, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unexpected_reply_type, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipelined_replies_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_auth_and_select_go_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_auth_shows_in_the_save, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wait_returns_on_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wait_gives_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wait_without_connection_returns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tick_drops_a_silent_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconnects_after_server_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unnoticed_close_fails_one_save, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_fails_waiting_saves, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_before_connect_completes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wait_deadline_moves_with_replies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_from_done_during_free_is_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_done_may_send_the_next_save, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wait_writes_saves_queued_by_callbacks, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_done_of_a_dropped_save_may_send_again, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_done_of_a_lost_save_may_send_again, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_wait_inside_done_returns, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
