/* Internal to the chunkup client library: the connection object, socket I/O
 * with poll() deadlines, the bounded line buffer and error helpers. */
#ifndef CHUNKUP_CLIENT_IO_H
#define CHUNKUP_CLIENT_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunkup/client.h"

/* Longest answer line accepted. The server's largest answer is a list of up
 * to 1000 documents (well under 1 MiB); anything longer means the stream is
 * not chunkd, and an unbounded buffer would let a peer exhaust our memory. */
#define CU_MAX_LINE ((size_t)4 * 1024 * 1024)

struct cu_conn {
    int fd;              /* non-blocking; every wait goes through poll() */
    int timeout_ms;      /* <= 0: wait without limit */
    /* Set once requests and answers may no longer pair up (a half-written
     * chunk, an unread answer, a dead socket); only cu_close helps then. */
    bool broken;
    char *buf;           /* received bytes; unconsumed ones are [pos, len) */
    size_t cap, len, pos;
    size_t scanned;      /* bytes after pos already known to hold no '\n' */
};

typedef enum cu_io_result {
    CU_IO_OK,
    CU_IO_AGAIN,         /* would block */
    CU_IO_EOF,           /* the server closed the connection */
    CU_IO_ERROR          /* err filled */
} cu_io_result;

void cu_err_clear(cu_error *err);
void cu_err_set(cu_error *err, int code, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Fills err from an answer whose status is "error". */
void cu_err_from_reply(const json_t *reply, cu_error *err);

/* Monotonic milliseconds. */
int64_t cu_now_ms(void);

/* Fails (reason "io") when the connection is no longer usable. */
int cu_io_check(cu_conn *c, cu_error *err);

/* One poll() on the socket. Returns 1 with *revents set, 0 on timeout, -1 on
 * error. Interrupted waits are retried with the remaining time. */
int cu_io_poll(cu_conn *c, short events, int timeout_ms, short *revents, cu_error *err);

/* One recv() into the line buffer. */
cu_io_result cu_io_fill(cu_conn *c, cu_error *err);

/* The next complete line from the buffer, NUL-terminated in place without its
 * '\n', or NULL when none is complete yet. Valid until the next fill. */
char *cu_io_take_line(cu_conn *c, size_t *len);

/* One send() of up to n bytes; *sent says how many went. */
cu_io_result cu_io_send_some(cu_conn *c, const void *p, size_t n, size_t *sent, cu_error *err);

/* Sends all n bytes, waiting up to timeout_ms without progress. */
int cu_io_send_all(cu_conn *c, const void *p, size_t n, cu_error *err);

/* Reads one line, waiting up to timeout_ms for all of it. */
int cu_io_read_line(cu_conn *c, char **line, size_t *len, cu_error *err);

/* Parses one answer line; it must be a JSON object. New reference. */
int cu_parse_reply(const char *line, size_t len, json_t **out, cu_error *err);

#endif
