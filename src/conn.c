/* Connection I/O: read into a per-connection buffer, feed the framing parser
 * and the session, queue answers, write them when the socket allows. A
 * connection whose first bytes are an HTTP request is handed to conn_web.c
 * (web UI files and the WebSocket transport); the socket, the buffers and
 * the close path stay here.
 *
 * Memory per connection stays small while idle: the input buffer is freed
 * whenever it is empty and no upload is open, and grows only as far as a
 * control line or a body slice needs. */
#include "chunkd/conn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "chunkd/conn_web.h"
#include "chunkd/log.h"
#include "chunkd/util.h"

enum {
    LINE_BUF = 16 * 1024,    /* enough for any ordinary control line */
    BODY_BUF = 256 * 1024,   /* several 64 KiB chunks per read while uploading */
    OUT_KEEP = 64 * 1024,    /* output buffers larger than this are freed when drained */
    LINGER_MS = 2000,        /* how long a closing connection drops what still arrives */
    BORROW_CARRY_MAX = 256,  /* left-over input moved into a borrowed buffer: a frame's
                              * head (14), or a control frame that came in part (131) */
    READS_PER_EVENT = 16,    /* bounds one connection's turn so others get theirs */
    TURN_READ_BUDGET = 8 * 1024 * 1024, /* conn_begin_turn */
};

static int conn_emit(void *arg, const char *data, size_t len);
static void conn_session_ready(void *arg);
static size_t pending_out(const conn *c) { return conn_pending_out(c); }

static void set_interest(conn *c, uint32_t events)
{
    if (events == c->events)
        return;
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(c->owner->epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0) {
        /* Cannot happen for a registered fd; if it does the connection
         * would hang, so say so loudly. */
        log_error("event=epoll_mod_failed peer=%s error=\"%s\"", c->peer, strerror(errno));
        return;
    }
    c->events = events;
}

conn *conn_open(conn_owner *owner, int fd, const char *ip, const char *peer)
{
    conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        conn_limits_give(owner->limits, ip);
        return NULL;
    }
    c->owner = owner;
    c->fd = fd;
    util_strlcpy(c->ip, ip, sizeof c->ip);
    snprintf(c->peer, sizeof c->peer, "%s", peer);
    proto_init(&c->parser, (size_t)owner->cfg->max_line);
    session_init(&c->sess, owner->env.node_id, c->peer, conn_emit, c);
    c->sess.ready = conn_session_ready;
    c->last_active_ms = util_mono_ms();
    c->events = EPOLLIN;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(owner->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        log_error("event=epoll_add_failed peer=%s error=\"%s\"", peer, strerror(errno));
        close(fd);
        conn_limits_give(owner->limits, ip);
        free(c);
        return NULL;
    }
    c->next = owner->head;
    if (owner->head)
        owner->head->prev = c;
    owner->head = c;
    owner->count++;
    log_debug("event=conn_open peer=%s", peer);
    return c;
}

int conn_out_appendv(conn *c, const struct iovec *iov, int n)
{
    size_t len = 0;
    for (int i = 0; i < n; i++)
        len += iov[i].iov_len;
    if (c->out_off > 0 && c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    if (c->out_len + len > c->out_cap) {
        /* Slide unsent bytes to the front before growing. */
        if (c->out_off > 0) {
            memmove(c->out, c->out + c->out_off, pending_out(c));
            c->out_len -= c->out_off;
            c->out_off = 0;
        }
        if (c->out_len + len > c->out_cap) {
            size_t cap = c->out_cap ? c->out_cap : 4096;
            while (cap < c->out_len + len)
                cap *= 2;
            char *p = realloc(c->out, cap);
            if (!p)
                return -1;
            c->out = p;
            c->out_cap = cap;
        }
    }
    for (int i = 0; i < n; i++) {
        if (iov[i].iov_len > 0)
            memcpy(c->out + c->out_len, iov[i].iov_base, iov[i].iov_len);
        c->out_len += iov[i].iov_len;
    }
    return 0;
}

int conn_out_append(conn *c, const void *data, size_t len)
{
    struct iovec one = {.iov_base = (void *)data, .iov_len = len};
    return conn_out_appendv(c, &one, 1);
}

static int conn_emit(void *arg, const char *data, size_t len)
{
    conn *c = arg;
    if (!c->unsent) {
        /* An answer may come from an offset save's reply, outside this
         * connection's event: make sure it gets sent. */
        c->unsent = true;
        c->unsent_next = c->owner->unsent;
        c->owner->unsent = c;
    }
    if (c->web)
        return conn_web_emit(c, data, len);
    return conn_out_append(c, data, len);
}

static void unpark(conn *c)
{
    conn_owner *o = c->owner;
    conn *prev = NULL;
    for (conn *p = o->parked; p; prev = p, p = p->parked_next) {
        if (p != c)
            continue;
        if (prev)
            prev->parked_next = c->parked_next;
        else
            o->parked = c->parked_next;
        if (o->parked_tail == c)
            o->parked_tail = prev;
        break;
    }
    c->parked = false;
    c->parked_next = NULL;
}

/* Puts a session that just parked on its owner's list. */
static void park_if_waiting(conn *c)
{
    if (c->parked || !session_parked(&c->sess) || c->sess.deferred.syncing)
        return; /* a syncing request comes back through conn_session_ready */
    conn_owner *o = c->owner;
    c->parked = true;
    c->parked_next = NULL;
    if (o->parked_tail)
        o->parked_tail->parked_next = c;
    else
        o->parked = c;
    o->parked_tail = c;
}

static void forget_unsent(conn *c)
{
    conn **pp = &c->owner->unsent;
    while (*pp && *pp != c)
        pp = &(*pp)->unsent_next;
    if (*pp)
        *pp = c->unsent_next;
    c->unsent = false;
    c->unsent_next = NULL;
}

/* A parked request whose file sync came back goes to the next group. */
static void conn_session_ready(void *arg)
{
    park_if_waiting(arg);
}

/* Lets go of the connection's session and its upload: at close, or when
 * it starts to linger, so that a client that reconnects at once can
 * resume. */
static void end_session(conn *c, const char *why)
{
    if (c->sess.up)
        log_info("event=upload_detached doc=%llu peer=%s offset=%lld why=%s",
                 (unsigned long long)c->sess.up->st.document_id, c->peer,
                 (long long)c->sess.up->st.offset, why);
    session_release(&c->owner->env, &c->sess);
}

void conn_close(conn *c, const char *why, int goodbye_code, const char *goodbye_reason)
{
    conn_owner *o = c->owner;
    if (c->parked)
        unpark(c); /* its request changed nothing yet: dropping it is safe */
    if (!c->lingering && goodbye_reason && pending_out(c) == 0) {
        /* Best effort, so that a client sees why: the answers owed, the
         * error (framed by the transport; nothing on plain HTTP) and on a
         * WebSocket its close frame, in one non-blocking send. A lingering
         * connection has answered and shut for writing already. */
        upload_say_goodbye(&o->env, &c->sess, goodbye_code, goodbye_reason);
        if (c->web)
            conn_web_close_after(c, goodbye_code, goodbye_reason);
        if (pending_out(c) > 0 &&
            send(c->fd, c->out + c->out_off, pending_out(c), MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
            log_debug("event=goodbye_not_sent peer=%s error=\"%s\"", c->peer, strerror(errno));
    }
    log_debug("event=conn_close peer=%s why=%s", c->peer, why);
    end_session(c, why);
    if (c->unsent)
        forget_unsent(c);
    /* close() also removes the fd from the epoll set. */
    if (close(c->fd) != 0)
        log_warn("event=close_failed peer=%s error=\"%s\"", c->peer, strerror(errno));
    if (c->prev)
        c->prev->next = c->next;
    else
        o->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    o->count--;
    conn_limits_give(o->limits, c->ip);
    conn_web_free(c);
    free(c->in);
    free(c->out);
    free(c);
}

/* Makes room to read into. -1 when out of memory. */
static int reserve_input(conn *c)
{
    size_t want = c->in_cap;
    size_t line_max = (size_t)c->owner->cfg->max_line + 2; /* the line, "\r\n" */
    if (c->web ? conn_web_in_body(c) : proto_in_body(&c->parser)) {
        if (want < BODY_BUF)
            want = BODY_BUF;
    } else if (c->in_len == c->in_cap) {
        /* A control line longer than the buffer: grow, up to the limit
         * (the parser reports anything longer). */
        want = c->in_cap < LINE_BUF ? LINE_BUF : c->in_cap * 2;
        if (want > line_max && c->in_cap < line_max)
            want = line_max;
    }
    if (want > c->in_cap) {
        char *p = realloc(c->in, want);
        if (!p)
            return -1;
        c->in = p;
        c->in_cap = want;
    }
    return c->in_len < c->in_cap ? 0 : -1;
}

static void send_line_too_long(conn *c)
{
    msg_error err;
    msg_fail(&err, 400, "line_too_long", "a control line exceeds %lld bytes",
             (long long)c->owner->cfg->max_line);
    err.close = true;
    upload_send_error(&c->owner->env, &c->sess, &err);
}

/* The request clock and the idle input buffer, after input was processed. */
static void after_input(conn *c, bool finished_item, bool unfinished)
{
    /* The request clock runs from the first byte of an unfinished item. */
    if (!unfinished)
        c->item_started_ms = 0;
    else if (finished_item || c->item_started_ms == 0)
        c->item_started_ms = util_mono_ms();
    if (c->in_len == 0 && !c->sess.up && c->in_cap > 0 && !c->in_shared) {
        free(c->in);
        c->in = NULL;
        c->in_cap = 0;
    }
}

/* Decides the transport from the first bytes: an HTTP request goes to
 * conn_web.c, anything else is the line protocol (whose lines start with
 * '{', so nothing valid is taken away). False while the bytes so far are
 * the start of a method name and more are needed to tell. */
static bool sniff(conn *c)
{
    static const char *const methods[] = {"GET ", "HEAD "};
    bool maybe = false;
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
        size_t n = strlen(methods[i]);
        size_t k = c->in_len < n ? c->in_len : n;
        if (memcmp(c->in, methods[i], k) != 0)
            continue;
        if (k < n) {
            maybe = true;
            continue;
        }
        if (conn_web_start(c) != 0) {
            log_error("event=conn_oom peer=%s", c->peer);
            c->sess.close = true;
            return false;
        }
        return true;
    }
    if (maybe)
        return false;
    c->transport = CONN_LINES;
    return true;
}

bool conn_output_full(const conn *c)
{
    return pending_out(c) > (size_t)c->owner->cfg->max_output_buffer;
}

/* The line protocol's items in the input buffer, run through the
 * session; true when a request was finished. */
static bool lines_input(conn *c)
{
    size_t pos = 0;
    bool finished_item = false;
    while (!c->sess.close && !session_parked(&c->sess) &&
           (proto_in_body(&c->parser) || !conn_output_full(c))) {
        /* Until it has authenticated, a connection gets the short limit. */
        c->parser.max_line = (size_t)(c->sess.user_id ? c->owner->cfg->max_line
                                                      : c->owner->cfg->max_line_unauth);
        proto_item it;
        /* An idle connection's buffer is freed (after_input): NULL, and
         * NULL + 0 is undefined. */
        const char *at = c->in ? c->in + pos : NULL;
        size_t used = proto_next(&c->parser, at, c->in_len - pos, &it);
        if (it.kind == PROTO_NEED_MORE)
            break;
        if (it.kind == PROTO_ERROR) {
            send_line_too_long(c);
            break;
        }
        pos += used;
        if (it.kind == PROTO_LINE) {
            uint64_t body = upload_on_line(&c->owner->env, &c->sess, it.data, it.len);
            if (body > 0)
                proto_expect_body(&c->parser, body);
            else
                finished_item = true;
        } else {
            upload_on_body(&c->owner->env, &c->sess, it.data, it.len, it.body_done != 0);
            finished_item |= it.body_done != 0;
        }
    }
    if (pos > 0) {
        memmove(c->in, c->in + pos, c->in_len - pos);
        c->in_len -= pos;
    }
    return finished_item;
}

/* Runs every complete item in the input buffer through the session, or
 * those before the answers pass max_output_buffer: a client that sends
 * requests faster than it reads their answers would otherwise have the
 * server queue them all (a list of 1000 documents answers with 300 KB,
 * a line of two bytes with an error of 100). The rest waits in `in`
 * (input_waits) until flush_output has sent enough. */
static void process_input(conn *c)
{
    if (c->transport == CONN_SNIFF && !sniff(c)) {
        after_input(c, false, c->in_len > 0);
        return;
    }
    bool finished = c->web ? conn_web_input(c) : lines_input(c);
    bool in_item = c->web ? conn_web_unfinished(c) : proto_in_body(&c->parser);
    c->input_waits = c->in_len > 0 && conn_output_full(c);
    /* Requests that arrived whole and wait for the client to read are the
     * server's delay, not a slow sender's: no request clock for them. */
    after_input(c, finished, (c->in_len > 0 && !c->input_waits) || in_item);
    park_if_waiting(c);
}

/* The answers before a completion whose file is being synced (its chunks'
 * progress events) go out with its SUCCESS: one send, and one wake-up of
 * the client, instead of two for each small upload. The client has sent
 * every chunk by then, so nothing of it waits for them; a closing session
 * sends at once. */
static bool holds_output(const conn *c)
{
    return c->sess.deferred.syncing && c->sess.deferred.kind == DEFER_COMPLETE &&
           !c->sess.close;
}

/* The server ends a connection whose answers are all sent. If the peer may
 * still be sending (a refused request's body, the rest of an oversized
 * head, chunks pipelined behind an error), closing now would make the
 * kernel answer those bytes with a reset, which can destroy the answers
 * before the client, or a proxy in front of chunkd, reads them. Instead
 * the socket is shut for writing (the client sees the end of the stream
 * right behind the last answer) and what still arrives is read and
 * dropped until the peer closes too, or LINGER_MS pass, as nginx's
 * lingering close does. The session ends first: answers it still owed
 * (chunks whose offset save was on its way) are queued then, and go out
 * before the shutdown (true, not lingering yet; the next call shuts).
 * False when there is nothing to wait for: close at once. */
static bool start_linger(conn *c)
{
    if (c->peer_done)
        return false;
    end_session(c, "closed_by_protocol");
    if (pending_out(c) > 0)
        return true;
    if (shutdown(c->fd, SHUT_WR) != 0) {
        log_debug("event=shutdown_failed peer=%s error=\"%s\"", c->peer, strerror(errno));
        return false;
    }
    c->lingering = true;
    c->linger_until_ms = util_mono_ms() + LINGER_MS;
    return true;
}

/* Reads and drops what a lingering connection's peer sends (a bounded
 * amount a turn, like any reader); closes it at the end of the stream or
 * on an error. */
static void linger_read(conn *c)
{
    char sink[4096];
    for (int i = 0; i < 16; i++) {
        ssize_t n = read(c->fd, sink, sizeof sink);
        if (n > 0 || (n < 0 && errno == EINTR))
            continue;
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
            conn_close(c, "closed_by_protocol", 0, NULL);
        return;
    }
}

/* Returns false when the connection was closed. */
static bool flush_output(conn *c)
{
    bool hold = holds_output(c);
    for (;;) {
        while (!hold && pending_out(c) > 0) {
            ssize_t n = send(c->fd, c->out + c->out_off, pending_out(c), MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    break;
                conn_close(c, "write_error", 0, NULL);
                return false;
            }
            c->out_off += (size_t)n;
            c->last_active_ms = util_mono_ms();
        }
        /* The client read enough: the requests that waited for it go on
         * (no read will come for bytes already received). */
        if (!c->input_waits || conn_output_full(c) || c->sess.close || c->lingering)
            break;
        process_input(c);
        upload_flush(&c->owner->env, &c->sess);
        hold = holds_output(c);
    }
    if (pending_out(c) == 0) {
        c->out_off = c->out_len = 0;
        if (c->out_cap > OUT_KEEP) {
            free(c->out);
            c->out = NULL;
            c->out_cap = 0;
        }
        if (c->sess.close && !session_parked(&c->sess) && !c->lingering) {
            if (!start_linger(c)) {
                conn_close(c, "closed_by_protocol", 0, NULL);
                return false;
            }
            if (pending_out(c) > 0)
                return flush_output(c);
        }
    }
    uint32_t want = 0;
    /* A completion waiting for its file's sync reads nothing for turns on
     * end: while its socket stays readable (more requests sent, or the
     * client's FIN), level-triggered EPOLLIN would wake the loop at once,
     * every turn, until the sync is back (conn_run_parked then asks
     * again). */
    if ((!c->sess.close || c->lingering) && !c->sess.deferred.syncing &&
        pending_out(c) <= (size_t)c->owner->cfg->max_output_buffer)
        want |= EPOLLIN;
    if (pending_out(c) > 0 && !hold)
        want |= EPOLLOUT;
    set_interest(c, want);
    return true;
}

/* A connection in the middle of a chunk body reads into its owner's
 * buffer: body bytes are written to the file as they arrive, so what is
 * left once they are processed (a partial line, a WebSocket frame's head
 * cut short, or input behind a request that parked) is all a connection
 * needs a buffer of its own for. One BODY_BUF per worker instead of one
 * per uploading connection: 500 uploads at once used to fault in 128 MiB
 * of buffers, 15% of the server's CPU in that benchmark, and on WebSocket
 * anyone could make a connection keep 256 KiB. What the connection had
 * left (up to BORROW_CARRY_MAX) goes in front. False (read into its own)
 * when this does not apply. */
static bool borrow_body_buf(conn *c)
{
    bool in_body = c->transport == CONN_LINES  ? proto_in_body(&c->parser)
                   : c->transport == CONN_WEB ? conn_web_in_body(c)
                                              : false;
    if (!in_body || c->in_len > BORROW_CARRY_MAX)
        return false;
    conn_owner *o = c->owner;
    if (!o->body_buf && !(o->body_buf = malloc(BODY_BUF)))
        return false;
    if (c->in_len > 0)
        memcpy(o->body_buf, c->in, c->in_len);
    c->in_shared = true;
    c->in = o->body_buf;
    c->in_cap = BODY_BUF;
    return true;
}

/* Gives the owner's buffer back, keeping what was left in it in the
 * connection's own buffer (own, own_cap). -1 when out of memory. */
static int return_body_buf(conn *c, char *own, size_t own_cap)
{
    size_t left = c->in_len;
    c->in_shared = false;
    if (left > own_cap) {
        size_t cap = left > LINE_BUF ? left : LINE_BUF;
        char *p = realloc(own, cap);
        if (!p) {
            c->in = own;
            c->in_cap = own_cap;
            c->in_len = 0;
            return -1;
        }
        own = p;
        own_cap = cap;
    }
    if (left > 0)
        memcpy(own, c->in, left);
    c->in = own;
    c->in_cap = own_cap;
    if (left == 0 && !c->sess.up && own) {
        free(own);
        c->in = NULL;
        c->in_cap = 0;
    }
    return 0;
}

void conn_begin_turn(conn_owner *owner)
{
    owner->turn_read_left = TURN_READ_BUDGET;
}

/* false when the turn's budget was spent before c could read anything. */
static bool on_readable(conn *c)
{
    conn_owner *o = c->owner;
    if (o->turn_read_left == 0)
        return false;
    /* A parked connection reads nothing until its request is answered:
     * what it sent stays in the socket (and counts against its window). */
    for (int i = 0; i < READS_PER_EVENT && o->turn_read_left > 0 && !c->sess.close &&
                    !session_parked(&c->sess);
         i++) {
        if (pending_out(c) > (size_t)c->owner->cfg->max_output_buffer)
            break; /* the client is not reading its answers: stop reading it */
        char *own = c->in;
        size_t own_cap = c->in_cap;
        bool borrowed = borrow_body_buf(c);
        if (!borrowed && reserve_input(c) != 0) {
            log_error("event=conn_oom peer=%s", c->peer);
            c->sess.close = true;
            break;
        }
        size_t room = c->in_cap - c->in_len;
        if (room > o->turn_read_left)
            room = o->turn_read_left;
        ssize_t n = read(c->fd, c->in + c->in_len, room);
        int read_errno = errno;
        if (n > 0) {
            o->turn_read_left -= (size_t)n;
            c->in_len += (size_t)n;
            c->last_active_ms = util_mono_ms();
            process_input(c);
        }
        if (borrowed && return_body_buf(c, own, own_cap) != 0) {
            log_error("event=conn_oom peer=%s", c->peer);
            c->sess.close = true;
            break;
        }
        if (n < 0) {
            if (read_errno == EINTR)
                continue;
            if (read_errno != EAGAIN && read_errno != EWOULDBLOCK) {
                log_debug("event=read_error peer=%s error=\"%s\"", c->peer,
                          strerror(read_errno));
                c->sess.close = true;
                c->peer_done = true;
            }
            break;
        }
        if (n == 0) {
            /* The peer is done sending; answer what it sent, then close. A
             * chunk cut short here never counts: its offset was not saved. */
            c->sess.close = true;
            c->peer_done = true;
            break;
        }
    }
    /* The input is used up: acknowledge the chunks that this turn's reads
     * carried, with one Redis round trip for all of them. */
    upload_flush(&o->env, &c->sess);
    return true;
}

bool conn_handle_event(conn *c, uint32_t events)
{
    if (events & EPOLLERR) {
        conn_close(c, "socket_error", 0, NULL);
        return true;
    }
    if (c->lingering) {
        linger_read(c); /* may close it */
        return true;
    }
    bool served = true;
    if (events & (EPOLLIN | EPOLLHUP))
        served = on_readable(c);
    flush_output(c);
    return served;
}

void conn_send_pending(conn_owner *owner)
{
    while (owner->unsent) {
        conn *c = owner->unsent;
        owner->unsent = c->unsent_next;
        c->unsent = false;
        c->unsent_next = NULL;
        flush_output(c); /* may close it */
    }
}

void conn_run_parked(conn_owner *owner)
{
    conn *c = owner->parked;
    owner->parked = owner->parked_tail = NULL;
    while (c) {
        conn *taken[UPLOAD_GROUP_MAX];
        session *group[UPLOAD_GROUP_MAX];
        size_t n = 0;
        for (; c && n < UPLOAD_GROUP_MAX; c = c->parked_next) {
            c->parked = false;
            taken[n] = c;
            group[n++] = &c->sess;
        }
        for (size_t i = 0; i < n; i++)
            taken[i]->parked_next = NULL;
        upload_run_deferred(&owner->env, group, n);
        for (size_t i = 0; i < n; i++) {
            process_input(taken[i]); /* may park again, for the next turn */
            upload_flush(&owner->env, &taken[i]->sess);
            flush_output(taken[i]);  /* may close it */
        }
    }
}

void conn_owner_release(conn_owner *owner)
{
    free(owner->body_buf);
    owner->body_buf = NULL;
}

size_t conn_close_unbusy(conn_owner *owner)
{
    size_t busy = 0;
    conn *c = owner->head;
    while (c) {
        conn *next = c->next;
        bool answering = c->sess.saving || c->sess.pending_acks > 0;
        if ((c->sess.chunk.active || session_parked(&c->sess) || answering) && !c->sess.close) {
            busy++;
        } else {
            /* Answers already queued go first, if the socket takes them. */
            if (pending_out(c) > 0 && send(c->fd, c->out + c->out_off, pending_out(c),
                                           MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)pending_out(c))
                c->out_off = c->out_len;
            conn_close(c, "shutdown", 503, "shutting_down");
        }
        c = next;
    }
    return busy;
}

void conn_sweep_idle(conn_owner *owner, int64_t now_ms)
{
    conn *c = owner->head;
    while (c) {
        conn *next = c->next;
        if (c->lingering) {
            if (now_ms >= c->linger_until_ms)
                conn_close(c, "linger_timeout", 0, NULL);
        } else if (now_ms - c->last_active_ms > owner->cfg->idle_timeout_ms)
            conn_close(c, "idle_timeout", 503, "idle_timeout");
        else if (c->item_started_ms && now_ms - c->item_started_ms > owner->cfg->request_timeout_ms)
            conn_close(c, "request_timeout", 408, "request_timeout");
        c = next;
    }
}
