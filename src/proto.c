/* Line/body framing. See proto.h for the contract. */
#include "chunkd/proto.h"

#include <string.h>

void proto_init(proto_parser *p, size_t max_line)
{
    memset(p, 0, sizeof *p);
    p->max_line = max_line;
}

void proto_expect_body(proto_parser *p, uint64_t n)
{
    p->body_left = n;
}

size_t proto_next(proto_parser *p, const char *buf, size_t avail, proto_item *item)
{
    memset(item, 0, sizeof *item);
    if (p->error != PROTO_OK) {
        item->kind = PROTO_ERROR;
        return 0;
    }
    if (p->body_left > 0) {
        if (avail == 0) {
            item->kind = PROTO_NEED_MORE;
            return 0;
        }
        size_t n = avail < p->body_left ? avail : (size_t)p->body_left;
        p->body_left -= n;
        item->kind = PROTO_BODY;
        item->data = buf;
        item->len = n;
        item->body_done = p->body_left == 0;
        return n;
    }
    if (avail == 0) {
        /* Nothing buffered (buf may be NULL): nothing to look for. */
        item->kind = PROTO_NEED_MORE;
        return 0;
    }
    /* Resume the search where the last call stopped, so a line trickling in
     * one byte at a time costs O(n) and not O(n^2). */
    size_t from = p->scanned < avail ? p->scanned : avail;
    const char *nl = memchr(buf + from, '\n', avail - from);
    if (!nl) {
        p->scanned = avail;
        if (avail > p->max_line) {
            p->error = PROTO_ERR_LINE_TOO_LONG;
            item->kind = PROTO_ERROR;
        } else {
            item->kind = PROTO_NEED_MORE;
        }
        return 0;
    }
    size_t len = (size_t)(nl - buf);
    p->scanned = 0;
    if (len > p->max_line) {
        p->error = PROTO_ERR_LINE_TOO_LONG;
        item->kind = PROTO_ERROR;
        return 0;
    }
    item->kind = PROTO_LINE;
    item->data = buf;
    item->len = (len > 0 && buf[len - 1] == '\r') ? len - 1 : len;
    return len + 1;
}
