/* The baseline's "protocol": one connection per file, the bytes and
 * nothing else, then a half-close; the sink answers with the byte count
 * once the file is written (and synced, if it was started with --sync). */
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
    for (const char *p = c->in; p < nl; p++) {
        if (*p < '0' || *p > '9' || got > INT64_MAX / 10)
            return lg_fail(g, c, "sink answered '%.*s'", (int)(nl - c->in), c->in);
        got = got * 10 + (*p - '0');
    }
    if (got != c->size)
        return lg_fail(g, c, "sink stored %" PRId64 " of %" PRId64 " bytes", got, c->size);
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
