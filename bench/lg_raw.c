/* The baseline's "protocol": one connection per file, the bytes and
 * nothing else, then a half-close; the sink answers with the byte count
 * once the file is written (and synced, if it was started with --sync),
 * followed by a space and the bytes' SHA-256 in hex if it was started with
 * --sha, which must be the payload's. */
#include <inttypes.h>
#include <string.h>

#include "lg.h"

static int start(lg *g, lg_client *c)
{
    (void)g;
    lg_queue_body(c, 0, c->size);
    c->sent = c->size;
    c->shut_after = true;
    return 0;
}

static int fill(lg *g, lg_client *c)
{
    (void)g;
    (void)c;
    return 0;
}

static int ping(lg *g, lg_client *c)
{
    return lg_fail(g, c, "the raw protocol has no question for an idle connection");
}

static long consume(lg *g, lg_client *c)
{
    char *nl = memchr(c->in, '\n', c->in_len);
    if (!nl)
        return 0;
    int64_t got = 0;
    const char *p = c->in;
    for (; p < nl && *p != ' '; p++) {
        if (*p < '0' || *p > '9' || got > INT64_MAX / 10)
            return lg_fail(g, c, "sink answered '%.*s'", (int)(nl - c->in), c->in);
        got = got * 10 + (*p - '0');
    }
    if (p == c->in)
        return lg_fail(g, c, "sink answered '%.*s'", (int)(nl - c->in), c->in);
    if (got != c->size)
        return lg_fail(g, c, "sink stored %" PRId64 " of %" PRId64 " bytes", got, c->size);
    if (p < nl && (nl - p - 1 != 64 || strncmp(p + 1, g->sha, 64) != 0))
        return lg_fail(g, c, "sink's SHA-256 '%.*s' is not the payload's %s", (int)(nl - p - 1),
                       p + 1, g->sha);
    c->acked = got;
    lg_upload_done(g, c);
    return (long)(nl - c->in) + 1;
}

const lg_driver lg_raw_driver = {
    .name = "raw",
    .one_upload_per_connection = true,
    .start = start,
    .fill = fill,
    .consume = consume,
    .ping = ping,
};
