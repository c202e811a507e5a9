/* Fuzzes the upload rules (src/upload.c) through a session, framed the way
 * conn.c's process_input frames a connection's bytes.
 *
 * The backends are real handles pointed at a loopback port that is bound
 * but not listening, so every Redis or MySQL call is refused at once and
 * answered 503. No upload can be opened that way, so a header bit pre-opens
 * one on a memfd, as a successful upload would have left it: chunk bodies
 * are then written, hashed and rolled back when Redis refuses the offset.
 *
 * Input: 3 header bytes, then the client's byte stream.
 *   byte 0  bit 0: document 42 (user 7) is open on the session
 *           bit 1: user 7 signed in with credential "fuzz-credential"
 *           bit 2: answers after the first (byte 0 >> 4) cannot be queued
 *           bit 3: the open upload starts half way (else at 0)
 *   byte 1  the open upload's filesize / 8
 *   byte 2  seeds the sizes of the pieces the stream arrives in
 *
 * Checked: every answer is one JSON line; every request gets exactly one
 * answer, by the end of its body; a session closes only on the documented
 * closing errors; the acknowledged offset never moves without Redis and the
 * file never keeps bytes past it; nothing is answered after close; and the
 * stream gives as many answers in one piece as in many, the same ones up to
 * the first refused offset save (see before_refused_save). */
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <mysql.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chunkd/auth.h"
#include "chunkd/log.h"
#include "chunkd/proto.h"
#include "chunkd/upload.h"
#include "fuzz_util.h"

#define FUZZ_DOC 42
#define FUZZ_USER 7
#define FUZZ_CREDENTIAL "fuzz-credential"
#define HEADER 3

enum {
    F_OPEN = 1,
    F_SIGNED_IN = 2,
    F_EMIT_FAILS = 4,
    F_HALF_WAY = 8,
};

static chunkd_config cfg;
static metrics counters;
static upload_env env;
static int dead_fd = -1;
static bool verbose; /* CHUNKD_FUZZ_VERBOSE set: print the answers (reproducing a crash) */

/* What one run of the stream produced. */
typedef struct outcome {
    char *out;            /* every answer, in order */
    size_t out_len, out_cap;
    size_t answers;       /* queued */
    size_t refused;       /* emit calls refused */
    size_t emit_limit;    /* SIZE_MAX: never refuse */
    bool gone;            /* the connection is closed: nothing may be emitted */
    size_t errors;        /* queued answers with status "error" */
    int last_code;
    char last_reason[64];
} outcome;

/* libmariadb's connect sleeps (usleep(1), then backs off) after every
 * attempt, even one refused at once; on a busy machine each such sleep costs
 * a trip through the scheduler, and the sleeps were most of this target's
 * time. This definition takes the place of libc's for the whole process:
 * the connect still fails exactly as it would, only without the pause.
 * Nothing else in the process calls usleep. */
int usleep(useconds_t usec)
{
    (void)usec;
    return 0;
}

static void cleanup(void)
{
    rstate_free(env.rs);
    docstore_free(env.ds);
    if (dead_fd >= 0)
        close(dead_fd);
    mysql_library_end();
}

/* A loopback port that is bound but not listening refuses connections at
 * once; holding it keeps anything else from listening there. */
static int bind_dead_port(void)
{
    dead_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    FUZZ_CHECK(dead_fd >= 0, "socket: %s", strerror(errno));
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    FUZZ_CHECK(bind(dead_fd, (struct sockaddr *)&a, sizeof a) == 0, "bind: %s", strerror(errno));
    FUZZ_CHECK(getsockname(dead_fd, (struct sockaddr *)&a, &alen) == 0, "getsockname: %s",
               strerror(errno));
    return ntohs(a.sin_port);
}

static void set_option(const char *name, const char *value)
{
    char err[256];
    FUZZ_CHECK(config_set(&cfg, name, value, err, sizeof err) == 0, "%s=%s: %s", name, value,
               err);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    verbose = getenv("CHUNKD_FUZZ_VERBOSE") != NULL;
    FUZZ_CHECK(log_set_level(verbose ? "debug" : "error") == 0, "log level");
    FUZZ_CHECK(mysql_library_init(0, NULL, NULL) == 0, "mysql_library_init failed");
    config_defaults(&cfg);
    char port[16];
    snprintf(port, sizeof port, "%d", bind_dead_port());
    /* No path reachable without backends creates a file; should one try,
     * it fails (ENOTDIR) instead of leaving files behind, since libFuzzer
     * often exits without running atexit handlers. */
    set_option("storage_dir", "/dev/null/chunkd-fuzz");
    set_option("redis_host", "127.0.0.1");
    set_option("redis_port", port);
    set_option("mysql_host", "127.0.0.1");
    set_option("mysql_port", port);
    set_option("mysql_socket", "");
    set_option("backend_timeout_ms", "100");
    /* The smallest limits the server accepts, so that short inputs reach
     * them: line_too_long, chunk_too_large. */
    set_option("max_line", "1024");
    set_option("max_line_unauth", "256");
    set_option("max_chunk_size", "4096");
    set_option("chunk_size", "1024");
    char err[256];
    FUZZ_CHECK(config_validate(&cfg, err, sizeof err) == 0, "config: %s", err);
    env.cfg = &cfg;
    env.node_id = "fuzz";
    env.boot_id = "fuzz-boot";
    env.metrics = &counters;
    env.rs = rstate_new(&cfg);
    env.ds = docstore_new(&cfg);
    FUZZ_CHECK(env.rs && env.ds, "out of memory");
    rstate_set_metrics(env.rs, &counters);
    docstore_set_metrics(env.ds, &counters);
    FUZZ_CHECK(atexit(cleanup) == 0, "atexit");
    return 0;
}

static int emit_cb(void *arg, const char *data, size_t len)
{
    outcome *o = arg;
    FUZZ_CHECK(!o->gone, "an answer after the connection closed: %.*s", (int)len, data);
    if (o->answers >= o->emit_limit) {
        o->refused++;
        return -1;
    }
    json_t *a = fuzz_check_answer_line(data, len);
    json_t *status = json_object_get(a, "status");
    o->last_code = 0;
    o->last_reason[0] = '\0';
    if (status && strcmp(json_string_value(status), "error") == 0) {
        o->errors++;
        o->last_code = (int)json_integer_value(json_object_get(a, "code"));
        snprintf(o->last_reason, sizeof o->last_reason, "%s",
                 json_string_value(json_object_get(a, "reason")));
    }
    json_decref(a);
    if (verbose)
        fprintf(stderr, "answer: %.*s", (int)len, data);
    if (o->out_len + len > o->out_cap) {
        while (o->out_len + len > o->out_cap)
            o->out_cap = o->out_cap ? o->out_cap * 2 : 1024;
        o->out = realloc(o->out, o->out_cap);
        FUZZ_CHECK(o->out != NULL, "out of memory");
    }
    memcpy(o->out + o->out_len, data, len);
    o->out_len += len;
    o->answers++;
    return 0;
}

/* Leaves document FUZZ_DOC open on s, as handle_upload or handle_resume
 * would have: its file holds exactly `offset` bytes. */
static void preopen(session *s, int64_t filesize, int64_t offset)
{
    open_upload *up = calloc(1, sizeof *up);
    FUZZ_CHECK(up != NULL, "out of memory");
    up->fd = memfd_create("chunkd-fuzz", MFD_CLOEXEC);
    FUZZ_CHECK(up->fd >= 0, "memfd_create: %s", strerror(errno));
    FUZZ_CHECK(ftruncate(up->fd, offset) == 0, "ftruncate: %s", strerror(errno));
    up->st.document_id = FUZZ_DOC;
    up->st.user_id = FUZZ_USER;
    up->st.filesize = filesize;
    up->st.offset = offset;
    up->saved_offset = offset; /* as set_open_upload does */
    snprintf(up->st.filename, sizeof up->st.filename, "fuzz.bin");
    storage_rel_path(FUZZ_DOC, up->st.path);
    snprintf(up->st.node, sizeof up->st.node, "fuzz");
    if (offset == 0) {
        up->hash = EVP_MD_CTX_new();
        FUZZ_CHECK(up->hash && EVP_DigestInit_ex(up->hash, EVP_sha256(), NULL) == 1, "sha256");
    }
    s->up = up;
}

static void sign_in(session *s)
{
    s->user_id = FUZZ_USER;
    FUZZ_CHECK(auth_hash_credential(FUZZ_CREDENTIAL, strlen(FUZZ_CREDENTIAL),
                                    s->credential_hash) == 0,
               "hash");
}

/* Without Redis nothing can move the acknowledged offset, and a chunk
 * that could not be saved must leave no bytes behind in the file. Chunks
 * written but not yet flushed (pending_acks) are ahead until the flush
 * tries to save them and, failing, rolls them back. */
static void check_open_upload(const session *s, int64_t offset)
{
    if (!s->up || s->chunk.active || s->pending_acks > 0)
        return;
    FUZZ_CHECK(s->up->st.offset == offset, "offset moved to %lld without Redis",
               (long long)s->up->st.offset);
    struct stat sb;
    FUZZ_CHECK(fstat(s->up->fd, &sb) == 0, "fstat: %s", strerror(errno));
    FUZZ_CHECK(sb.st_size == offset, "the file holds %lld bytes, acknowledged %lld",
               (long long)sb.st_size, (long long)offset);
    FUZZ_CHECK(!s->up->hash || s->up->hashed <= offset, "hashed past the offset");
}

/* The only answers after which a session may close (PROTOCOL.md). */
static bool closing_answer(const outcome *o)
{
    /* unsupported_version closes only for a chunk whose length is unknown;
     * fuzz_msg checks that condition. */
    static const char *const reasons[] = {"invalid_length", "unsupported_version",
                                          "line_too_long", "unauthorized", "chunk_too_large"};
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
        if (strcmp(o->last_reason, reasons[i]) == 0)
            return true;
    return false;
}

typedef struct driver {
    session s;
    proto_parser p;
    outcome o;
    int64_t offset;           /* of the pre-opened upload */
    size_t request_base;      /* answers queued before the current chunk's header */
    bool in_request_body;
} driver;

/* Answers given plus those owed: a written chunk is answered when the
 * session flushes (upload_flush), before anything after it. */
static size_t owed(const driver *d)
{
    return d->o.answers + (size_t)d->s.pending_acks;
}

static void on_line(driver *d, const char *line, size_t len)
{
    size_t before = owed(d);
    uint64_t body = upload_on_line(&env, &d->s, line, len);
    if (session_parked(&d->s)) {
        /* As the worker does at the end of its loop turn. */
        FUZZ_CHECK(body == 0, "a parked request expects a body");
        session *group[1] = {&d->s};
        upload_run_deferred(&env, group, 1);
        FUZZ_CHECK(!session_parked(&d->s), "still parked after the group ran");
    }
    size_t after = owed(d);
    /* Fewer only when the emitter refused answers (then the session closes). */
    FUZZ_CHECK(after >= before || d->o.refused > 0, "answers owed went missing");
    size_t given = after >= before ? after - before : 0;
    FUZZ_CHECK(given <= 1, "%zu answers for one line", given);
    if (body == 0) {
        FUZZ_CHECK(given == 1 || d->o.refused > 0, "a request went unanswered: %.*s", (int)len,
                   line);
        return;
    }
    /* A refused answer closes the session even where the body would have
     * been skipped; conn.c then stops reading, so that is fine. */
    FUZZ_CHECK(!d->s.close || d->o.refused > 0, "a body is expected from a closing session");
    FUZZ_CHECK(body <= (uint64_t)cfg.max_chunk_size, "a body of %llu bytes is read",
               (unsigned long long)body);
    proto_expect_body(&d->p, body);
    d->request_base = before;
    d->in_request_body = true;
}

static void on_body(driver *d, const char *data, size_t len, bool last)
{
    FUZZ_CHECK(d->in_request_body, "body bytes outside a chunk");
    size_t before = owed(d);
    upload_on_body(&env, &d->s, data, len, last);
    if (!last) {
        FUZZ_CHECK(owed(d) == before, "answered in the middle of a body");
        return;
    }
    d->in_request_body = false;
    FUZZ_CHECK(owed(d) == d->request_base + 1 || d->o.refused > 0,
               "a chunk got %zu answers", owed(d) - d->request_base);
}

/* process_input of conn.c, over buf[0..*have); returns false once closed. */
static bool process(driver *d, char *buf, size_t *have, size_t cap)
{
    size_t pos = 0;
    while (!d->s.close) {
        /* As conn.c: the short limit until the session has authenticated. */
        d->p.max_line = (size_t)(d->s.user_id ? cfg.max_line : cfg.max_line_unauth);
        proto_item it;
        size_t used = proto_next(&d->p, buf + pos, *have - pos, &it);
        if (it.kind == PROTO_NEED_MORE)
            break;
        if (it.kind == PROTO_ERROR) {
            msg_error err;
            msg_fail(&err, 400, "line_too_long", "a control line exceeds %lld bytes",
                     (long long)cfg.max_line);
            err.close = true;
            size_t before = owed(d);
            upload_send_error(&env, &d->s, &err);
            FUZZ_CHECK(owed(d) == before + 1 || d->o.refused > 0, "line_too_long unsent");
            break;
        }
        pos += used;
        if (it.kind == PROTO_LINE)
            on_line(d, it.data, it.len);
        else
            on_body(d, it.data, it.len, it.body_done != 0);
        check_open_upload(&d->s, d->offset);
    }
    /* As conn.c's after_input: the input is used up, answer what is owed. */
    size_t before_flush = owed(d);
    upload_flush(&env, &d->s);
    FUZZ_CHECK(d->s.pending_acks == 0 && (owed(d) == before_flush || d->o.refused > 0),
               "a flush lost or added answers");
    check_open_upload(&d->s, d->offset);
    fuzz_unpoison(buf, cap);
    memmove(buf, buf + pos, *have - pos);
    *have -= pos;
    fuzz_poison_tail(buf, *have, cap);
    if (d->s.close)
        FUZZ_CHECK(d->o.refused > 0 || closing_answer(&d->o), "closed after %d %s",
                   d->o.last_code, d->o.last_reason);
    return !d->s.close;
}

/* Feeds the stream in pieces (piece_seed 0: in one piece) and returns
 * what was answered; the caller frees o->out. */
static void run(const uint8_t *hdr, const char *stream, size_t len, uint64_t piece_seed,
                outcome *result)
{
    driver d;
    memset(&d, 0, sizeof d);
    session_init(&d.s, "fuzz", "fuzz-peer", emit_cb, &d.o);
    proto_init(&d.p, (size_t)cfg.max_line);
    d.o.emit_limit = (hdr[0] & F_EMIT_FAILS) ? (size_t)(hdr[0] >> 4) : SIZE_MAX;
    int64_t filesize = (int64_t)hdr[1] * 8;
    d.offset = (hdr[0] & F_HALF_WAY) ? filesize / 2 : 0;
    if (hdr[0] & F_OPEN)
        preopen(&d.s, filesize, d.offset);
    if (hdr[0] & F_SIGNED_IN)
        sign_in(&d.s);
    uint64_t errors_before = atomic_load(&counters.counter[M_ERRORS_SENT]);

    size_t cap = len ? len : 1;
    char *buf = malloc(cap);
    FUZZ_CHECK(buf != NULL, "out of memory");
    fuzz_poison_tail(buf, 0, cap);
    fuzz_rng rng;
    fuzz_rng_seed(&rng, piece_seed);
    size_t have = 0, pos = 0;
    while (pos < len) {
        size_t n = piece_seed == 0 ? len - pos : fuzz_piece_size(&rng, len - pos);
        fuzz_unpoison(buf, cap);
        memcpy(buf + have, stream + pos, n);
        have += n;
        pos += n;
        fuzz_poison_tail(buf, have, cap);
        if (!process(&d, buf, &have, cap))
            break;
    }
    fuzz_unpoison(buf, cap);
    free(buf);

    /* The connection is gone: releasing the session answers nothing more. */
    d.o.gone = true;
    session_release(&env, &d.s);
    FUZZ_CHECK(d.s.up == NULL, "an upload stayed open after release");
    uint64_t errors = atomic_load(&counters.counter[M_ERRORS_SENT]) - errors_before;
    if (d.o.refused == 0)
        FUZZ_CHECK(errors == d.o.errors, "%llu errors counted, %zu sent",
                   (unsigned long long)errors, d.o.errors);
    *result = d.o;
}

/* Where the first 503 from a refused offset save starts in the answers (the
 * end when there is none). Offsets are saved once per read turn, so which
 * pipelined chunks share a refused save, and how the ones after it are
 * refused, depends on where reads ended; everything before it may not. */
static size_t before_refused_save(const outcome *o)
{
    static const char mark[] = "\"reason\":\"unavailable\"";
    const char *p = o->out ? memmem(o->out, o->out_len, mark, sizeof mark - 1) : NULL;
    if (!p)
        return o->out_len;
    while (p > o->out && p[-1] != '\n')
        p--;
    return (size_t)(p - o->out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < HEADER)
        return 0;
    const char *stream = (const char *)data + HEADER;
    size_t len = size - HEADER;
    outcome whole, pieces;
    run(data, stream, len, 0, &whole);
    run(data, stream, len, 0x100 | data[2], &pieces);
    size_t same = before_refused_save(&whole);
    FUZZ_CHECK(whole.answers == pieces.answers && before_refused_save(&pieces) == same &&
                   (same == 0 || memcmp(whole.out, pieces.out, same) == 0) &&
                   (same < whole.out_len || whole.out_len == pieces.out_len),
               "the answers depend on how the stream was cut:\n%.*s\nvs\n%.*s",
               (int)whole.out_len, whole.out ? whole.out : "", (int)pieces.out_len,
               pieces.out ? pieces.out : "");
    free(whole.out);
    free(pieces.out);
    return 0;
}
