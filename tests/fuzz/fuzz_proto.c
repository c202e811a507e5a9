/* Fuzzes the framing parser (src/proto.c) the way conn.c drives it: bytes
 * are appended to a buffer as they "arrive", every complete item is taken
 * off its front, and a line that announces a body makes the next bytes raw.
 *
 * Input: byte 0 picks max_line, byte 1 seeds the piece sizes, the rest is
 * the stream. A line announces a body when it starts with a decimal number
 * or holds "length":N (as a chunk header does). The stream is fed three
 * ways: in one piece, in pieces of input-derived sizes, and byte by byte.
 * Each call is checked against the parser's contract, and the three runs
 * must see the same lines, the same body bytes and the same end state. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chunkd/proto.h"
#include "fuzz_util.h"

#define MAX_BODY (1u << 20) /* bodies announced beyond the input just stay open */

typedef struct rec {
    char kind;   /* 'L' line, 'B' body, 'E' error */
    size_t off;  /* into trace.bytes */
    size_t len;
    uint64_t announced; /* 'B': the body's announced length */
    bool done;   /* 'B': its last byte was handed out */
} rec;

/* What one run saw, with a body's slices joined: slicing differs between
 * runs, the bytes must not. */
typedef struct trace {
    rec *r;
    size_t n, cap;
    char *bytes;
    size_t blen, bcap;
} trace;

typedef struct feeder {
    proto_parser p;
    size_t max_line;
    char *buf;
    size_t have, cap;
    size_t nl_free;      /* buf[0..nl_free) is known to hold no '\n' */
    bool errored;
    uint64_t announced;  /* of the body being read */
    trace t;
} feeder;

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    FUZZ_CHECK(q != NULL, "out of memory");
    return q;
}

static rec *trace_add(trace *t, char kind)
{
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 16;
        t->r = xrealloc(t->r, t->cap * sizeof *t->r);
    }
    rec *r = &t->r[t->n++];
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->off = t->blen;
    return r;
}

static void trace_bytes(trace *t, rec *r, const char *data, size_t len)
{
    if (len == 0)
        return;
    if (t->blen + len > t->bcap) {
        while (t->blen + len > t->bcap)
            t->bcap = t->bcap ? t->bcap * 2 : 256;
        t->bytes = xrealloc(t->bytes, t->bcap);
    }
    memcpy(t->bytes + t->blen, data, len);
    t->blen += len;
    r->len += len;
}

static void trace_free(trace *t)
{
    free(t->r);
    free(t->bytes);
}

/* The body a line announces: a leading number, or the value of "length". */
static uint64_t announced_body(const char *line, size_t len)
{
    size_t i = 0;
    if (len == 0 || line[0] < '0' || line[0] > '9') {
        static const char key[] = "\"length\":";
        const size_t klen = sizeof key - 1;
        const char *k = NULL;
        for (size_t j = 0; j + klen <= len; j++)
            if (memcmp(line + j, key, klen) == 0) {
                k = line + j;
                break;
            }
        if (!k)
            return 0;
        i = (size_t)(k - line) + klen;
        while (i < len && line[i] == ' ')
            i++;
    }
    uint64_t n = 0;
    for (size_t digits = 0; i < len && line[i] >= '0' && line[i] <= '9' && digits < 8;
         i++, digits++)
        n = n * 10 + (uint64_t)(line[i] - '0');
    return n > MAX_BODY ? MAX_BODY : n;
}

static void feeder_init(feeder *f, size_t max_line, size_t total)
{
    memset(f, 0, sizeof *f);
    proto_init(&f->p, max_line);
    f->max_line = max_line;
    f->cap = total ? total : 1; /* never more than the whole input is buffered */
    f->buf = xrealloc(NULL, f->cap);
    fuzz_poison_tail(f->buf, 0, f->cap);
}

static void feeder_free(feeder *f)
{
    fuzz_unpoison(f->buf, f->cap);
    free(f->buf);
    trace_free(&f->t);
}

static void drop_front(feeder *f, size_t used)
{
    fuzz_unpoison(f->buf, f->cap);
    memmove(f->buf, f->buf + used, f->have - used);
    f->have -= used;
    fuzz_poison_tail(f->buf, f->have, f->cap);
}

static size_t first_newline(const feeder *f)
{
    const char *nl = memchr(f->buf, '\n', f->have);
    return nl ? (size_t)(nl - f->buf) : f->have;
}

static void on_need_more(feeder *f, const proto_parser *before, size_t used)
{
    FUZZ_CHECK(used == 0, "NEED_MORE consumed %zu bytes", used);
    if (before->body_left > 0) {
        FUZZ_CHECK(f->have == 0, "NEED_MORE inside a body with %zu bytes buffered", f->have);
        return;
    }
    const char *nl = memchr(f->buf + f->nl_free, '\n', f->have - f->nl_free);
    FUZZ_CHECK(nl == NULL, "NEED_MORE with a complete line buffered");
    FUZZ_CHECK(f->have <= f->max_line, "NEED_MORE with %zu bytes and no newline (max %zu)",
               f->have, f->max_line);
    f->nl_free = f->have;
}

static void on_error(feeder *f, const proto_parser *before, size_t used)
{
    FUZZ_CHECK(used == 0, "ERROR consumed %zu bytes", used);
    FUZZ_CHECK(f->p.error != PROTO_OK, "ERROR without an error code");
    if (f->errored)
        return;
    FUZZ_CHECK(before->body_left == 0, "ERROR inside a body");
    /* The raw line (a '\r' included) must really be longer than allowed. */
    FUZZ_CHECK(first_newline(f) > f->max_line, "ERROR for a line of %zu bytes (max %zu)",
               first_newline(f), f->max_line);
    f->errored = true;
    trace_add(&f->t, 'E');
}

static void on_line(feeder *f, const proto_item *it, const proto_parser *before, size_t used)
{
    FUZZ_CHECK(before->body_left == 0, "LINE inside a body");
    FUZZ_CHECK(it->data == f->buf, "a line starts the buffer");
    FUZZ_CHECK(used >= 1 && f->buf[used - 1] == '\n', "a line is consumed with its newline");
    FUZZ_CHECK(memchr(f->buf, '\n', used - 1) == NULL, "a line holds no newline");
    FUZZ_CHECK(used - 1 <= f->max_line, "line of %zu bytes (max %zu)", used - 1, f->max_line);
    bool cr = used >= 2 && f->buf[used - 2] == '\r';
    FUZZ_CHECK(it->len == used - 1 - (cr ? 1 : 0), "line length %zu for %zu bytes consumed",
               it->len, used);
    rec *r = trace_add(&f->t, 'L');
    trace_bytes(&f->t, r, it->data, it->len);
    uint64_t body = announced_body(it->data, it->len);
    if (body > 0) {
        proto_expect_body(&f->p, body);
        FUZZ_CHECK(proto_in_body(&f->p), "expecting a body of %llu", (unsigned long long)body);
        f->announced = body;
        rec *b = trace_add(&f->t, 'B');
        b->announced = body;
    }
}

static void on_body(feeder *f, const proto_item *it, const proto_parser *before, size_t used)
{
    FUZZ_CHECK(before->body_left > 0, "BODY outside a body");
    FUZZ_CHECK(it->data == f->buf, "a slice starts the buffer");
    FUZZ_CHECK(it->len > 0 && used == it->len, "slice of %zu, consumed %zu", it->len, used);
    size_t expect = f->have < before->body_left ? f->have : (size_t)before->body_left;
    FUZZ_CHECK(it->len == expect, "slice of %zu where %zu were available", it->len, expect);
    FUZZ_CHECK(f->p.body_left == before->body_left - it->len, "body_left not reduced by the slice");
    FUZZ_CHECK((it->body_done != 0) == (f->p.body_left == 0), "body_done is wrong");
    FUZZ_CHECK(f->t.n > 0 && f->t.r[f->t.n - 1].kind == 'B' && !f->t.r[f->t.n - 1].done,
               "a slice belongs to the open body");
    rec *b = &f->t.r[f->t.n - 1];
    trace_bytes(&f->t, b, it->data, it->len);
    FUZZ_CHECK(b->len <= b->announced, "body of %zu bytes past the announced %llu", b->len,
               (unsigned long long)b->announced);
    if (it->body_done) {
        FUZZ_CHECK(b->len == b->announced, "body ended after %zu of %llu bytes", b->len,
                   (unsigned long long)b->announced);
        b->done = true;
    }
}

/* Takes every complete item off the front of the buffer. */
static void drain(feeder *f)
{
    for (;;) {
        proto_parser before = f->p;
        proto_item it;
        size_t used = proto_next(&f->p, f->buf, f->have, &it);
        FUZZ_CHECK(used <= f->have, "consumed %zu of %zu bytes", used, f->have);
        if (f->errored)
            FUZZ_CHECK(it.kind == PROTO_ERROR, "the error did not stick");
        switch (it.kind) {
        case PROTO_NEED_MORE: on_need_more(f, &before, used); return;
        case PROTO_ERROR: on_error(f, &before, used); return;
        case PROTO_LINE: on_line(f, &it, &before, used); break;
        case PROTO_BODY: on_body(f, &it, &before, used); break;
        default: FUZZ_CHECK(0, "unknown item kind %d", (int)it.kind);
        }
        drop_front(f, used);
        f->nl_free = 0;
    }
}

static void feed(feeder *f, const char *data, size_t len)
{
    fuzz_unpoison(f->buf, f->cap);
    memcpy(f->buf + f->have, data, len);
    f->have += len;
    fuzz_poison_tail(f->buf, f->have, f->cap);
    drain(f);
}

/* piece: 0 for the whole stream at once, 1 for byte by byte, else random. */
static void run(feeder *f, const char *data, size_t len, int piece, uint64_t seed)
{
    fuzz_rng rng;
    fuzz_rng_seed(&rng, seed);
    size_t pos = 0;
    while (pos < len) {
        size_t n = piece == 0 ? len - pos : piece == 1 ? 1 : fuzz_piece_size(&rng, len - pos);
        feed(f, data + pos, n);
        pos += n;
    }
}

static void same_outcome(const feeder *a, const feeder *b, const char *how)
{
    FUZZ_CHECK(a->t.n == b->t.n, "%s: %zu items, not %zu", how, b->t.n, a->t.n);
    for (size_t i = 0; i < a->t.n; i++) {
        const rec *x = &a->t.r[i], *y = &b->t.r[i];
        FUZZ_CHECK(x->kind == y->kind && x->len == y->len && x->done == y->done &&
                       x->announced == y->announced,
                   "%s: item %zu differs (%c/%zu vs %c/%zu)", how, i, x->kind, x->len, y->kind,
                   y->len);
        FUZZ_CHECK(x->len == 0 || memcmp(a->t.bytes + x->off, b->t.bytes + y->off, x->len) == 0,
                   "%s: item %zu has other bytes", how, i);
    }
    FUZZ_CHECK(a->have == b->have, "%s: %zu bytes left over, not %zu", how, b->have, a->have);
    fuzz_unpoison(a->buf, a->cap);
    fuzz_unpoison(b->buf, b->cap);
    FUZZ_CHECK(a->have == 0 || memcmp(a->buf, b->buf, a->have) == 0, "%s: other bytes left over",
               how);
    fuzz_poison_tail(a->buf, a->have, a->cap);
    fuzz_poison_tail(b->buf, b->have, b->cap);
    FUZZ_CHECK(a->p.error == b->p.error && a->p.body_left == b->p.body_left,
               "%s: the parser ends in another state", how);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    /* Small limits make "too long" reachable; 0 keeps the server default. */
    size_t max_line = data[0] == 0 ? 65536 : (size_t)data[0] * 4;
    uint64_t seed = data[1];
    const char *stream = (const char *)data + 2;
    size_t len = size - 2;

    feeder whole, pieces, bytes;
    feeder_init(&whole, max_line, len);
    feeder_init(&pieces, max_line, len);
    feeder_init(&bytes, max_line, len);
    run(&whole, stream, len, 0, seed);
    run(&pieces, stream, len, 2, seed);
    run(&bytes, stream, len, 1, seed);
    same_outcome(&whole, &pieces, "pieces");
    same_outcome(&whole, &bytes, "byte by byte");
    feeder_free(&whole);
    feeder_free(&pieces);
    feeder_free(&bytes);
    return 0;
}
