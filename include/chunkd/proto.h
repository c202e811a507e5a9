/* Framing of the chunkd protocol, without sockets.
 *
 * The byte stream is a sequence of control lines ("...\n"), some of which
 * announce a body of N raw bytes that follows the line. The parser is fed the
 * bytes the caller has buffered and reports the next item; it never copies.
 * After a line that announces a body the caller calls proto_expect_body();
 * the parser then hands out the body in slices as bytes arrive. Errors are
 * sticky: once a line is too long the stream cannot be trusted again. */
#ifndef CHUNKD_PROTO_H
#define CHUNKD_PROTO_H

#include <stddef.h>
#include <stdint.h>

typedef enum proto_kind {
    PROTO_NEED_MORE,  /* nothing complete yet: read more bytes */
    PROTO_LINE,       /* a control line, without its '\n' (and '\r') */
    PROTO_BODY,       /* a slice of the current body */
    PROTO_ERROR,      /* sticky; see proto_parser.error */
} proto_kind;

typedef enum proto_error {
    PROTO_OK = 0,
    PROTO_ERR_LINE_TOO_LONG,
} proto_error;

typedef struct proto_item {
    proto_kind kind;
    const char *data; /* points into the caller's buffer */
    size_t len;
    int body_done;    /* PROTO_BODY: this slice ends the body */
} proto_item;

typedef struct proto_parser {
    size_t max_line;     /* longest line, excluding the '\n' */
    uint64_t body_left;  /* bytes of the current body not yet handed out */
    size_t scanned;      /* bytes of the pending line already searched for '\n' */
    proto_error error;
} proto_parser;

void proto_init(proto_parser *p, size_t max_line);

/* Looks at buf[0..avail) and fills *item. Returns how many bytes of buf the
 * item consumed; the caller drops them before the next call. */
size_t proto_next(proto_parser *p, const char *buf, size_t avail, proto_item *item);

/* The line just returned is followed by n body bytes. */
void proto_expect_body(proto_parser *p, uint64_t n);

static inline int proto_in_body(const proto_parser *p) { return p->body_left > 0; }

#endif
