/* WebSocket (RFC 6455), server side, without sockets.
 *
 * The parser is fed the bytes a connection has buffered and reports the
 * next item, in the style of proto.h: it never copies, it unmasks payload in
 * place, and its errors are sticky. Data frames are handed out in slices as
 * their bytes arrive (a 1 MiB binary chunk is never buffered whole); a text
 * message is checked as UTF-8 slice by slice, so the caller joins the slices
 * of a fragmented message without checking them again. Control frames are
 * handed out whole (their payload is at most 125 bytes).
 *
 * The encoder writes the unmasked frames a server sends, and the handshake
 * helpers check an upgrade request's key and compute Sec-WebSocket-Accept. */
#ifndef CHUNKD_WS_H
#define CHUNKD_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Close codes (RFC 6455 section 7.4.1). */
enum {
    WS_CLOSE_NORMAL = 1000,
    WS_CLOSE_GOING_AWAY = 1001,
    WS_CLOSE_PROTOCOL = 1002,
    WS_CLOSE_UNSUPPORTED = 1003,
    WS_CLOSE_NO_STATUS = 1005,   /* never sent: a close frame without a code */
    WS_CLOSE_INVALID_DATA = 1007,
    WS_CLOSE_POLICY = 1008,
    WS_CLOSE_TOO_BIG = 1009,
    WS_CLOSE_INTERNAL = 1011,
};

enum {
    WS_OP_CONT = 0x0,
    WS_OP_TEXT = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8,
    WS_OP_PING = 0x9,
    WS_OP_PONG = 0xA,
};

#define WS_MAX_HEADER 14          /* 2 + 8 length bytes + 4 mask bytes */
#define WS_MAX_CONTROL 125
#define WS_MAX_CLOSE_REASON 123   /* a close payload is the code plus this */

typedef enum ws_kind {
    WS_NEED_MORE,   /* nothing complete: read more (bytes may still have been consumed) */
    WS_TEXT,        /* a slice of a text message */
    WS_BINARY,      /* a slice of a binary message */
    WS_PING,        /* whole; answer with a pong carrying the same payload */
    WS_PONG,
    WS_CLOSE,       /* the peer's close frame; close_code is WS_CLOSE_NO_STATUS without one */
    WS_ERROR,       /* sticky; close with close_code, reason in ws_parser.error_reason */
} ws_kind;

typedef struct ws_item {
    ws_kind kind;
    char *data;          /* unmasked payload, inside the caller's buffer */
    size_t len;
    bool first;          /* TEXT/BINARY: the first slice of its message */
    bool fin;            /* TEXT/BINARY: the last slice of its message */
    uint64_t frame_rest; /* TEXT/BINARY: this frame's payload from this slice on, this slice included */
    uint16_t close_code; /* CLOSE: the peer's code; ERROR: the code to close with */
} ws_item;

/* UTF-8 checking state carried across slices. */
typedef struct ws_utf8 {
    uint8_t need;        /* continuation bytes still expected */
    uint8_t lo, hi;      /* allowed range of the next continuation byte */
} ws_utf8;

typedef struct ws_parser {
    uint64_t max_text;   /* longest text message; the caller may change it between calls */
    uint64_t max_binary; /* longest binary message */
    /* the frame being read; in_frame is false between frames */
    bool in_frame;
    bool fin;
    uint8_t opcode;
    uint8_t mask[4];
    uint64_t frame_left; /* payload bytes of this frame not yet handed out */
    uint64_t frame_pos;  /* payload bytes already handed out, for the mask phase */
    /* the data message being read; msg_opcode 0 between messages */
    uint8_t msg_opcode;
    bool msg_started;    /* a slice of it has been handed out */
    uint64_t msg_len;    /* its payload so far, frames announced included */
    ws_utf8 utf8;
    bool closed;         /* the peer's close frame was seen */
    uint16_t error;      /* sticky close code; 0 while fine */
    uint8_t error_opcode; /* WS_OP_TEXT or WS_OP_BINARY when a message was too big */
    const char *error_reason;
} ws_parser;

void ws_init(ws_parser *p, uint64_t max_text, uint64_t max_binary);

/* Looks at buf[0..avail) and fills *item. Returns how many bytes the call
 * consumed, which the caller drops before the next call whatever the kind
 * (a frame header is consumed as soon as it is complete, so NEED_MORE can
 * consume bytes). After the peer's close frame every byte is consumed and
 * dropped. */
size_t ws_next(ws_parser *p, char *buf, size_t avail, ws_item *item);

/* True while a frame or a message is only partly read. */
bool ws_in_message(const ws_parser *p);

/* True while the parser is inside a binary message. */
static inline bool ws_in_binary(const ws_parser *p) { return p->msg_opcode == WS_OP_BINARY; }

/* Checks a whole byte string as UTF-8 (no overlong forms, no surrogates,
 * nothing past U+10FFFF). */
bool ws_utf8_valid(const char *s, size_t len);

/* Writes the header of an unmasked server frame with FIN set into out
 * (WS_MAX_HEADER bytes are enough) and returns its length. */
size_t ws_frame_header(uint8_t *out, uint8_t opcode, uint64_t payload_len);

/* Writes a whole close frame (code, then the reason cut to
 * WS_MAX_CLOSE_REASON bytes on a UTF-8 boundary) into out, which needs
 * 2 + 2 + WS_MAX_CLOSE_REASON bytes; returns its length. */
size_t ws_close_frame(uint8_t *out, uint16_t code, const char *reason);

/* A code that may travel in a close frame (RFC 6455 section 7.4). */
bool ws_close_code_valid(uint16_t code);

/* Sec-WebSocket-Key must be base64 of 16 bytes. */
bool ws_key_valid(const char *key, size_t len);

/* Sec-WebSocket-Accept for a valid key: base64(SHA-1(key GUID)), 28
 * characters plus NUL. -1 when hashing fails. */
int ws_accept_value(const char *key, size_t len, char out[29]);

#endif
