/* The chunkd protocol (docs/PROTOCOL.md) as the load generator speaks it:
 * upload, then chunks pipelined up to `window` unacknowledged, then
 * upload_complete sent straight after the last chunk, and SUCCESS checked
 * against the payload's size and SHA-256. A connection authenticates once;
 * its later uploads leave the credential out, as the protocol allows. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "lg.h"

static int start(lg *g, lg_client *c)
{
    int rc;
    if (c->authed)
        rc = lg_queue_head(c,
                           "{\"action\":\"upload\",\"filename\":\"bench-%d.bin\",\"filesize\":%" PRId64
                           ",\"sha256\":\"%s\"}\n",
                           g->next_upload, c->size, g->sha);
    else
        rc = lg_queue_head(c,
                           "{\"action\":\"upload\",\"filename\":\"bench-%d.bin\",\"filesize\":%" PRId64
                           ",\"sha256\":\"%s\",\"user_id\":%" PRId64 ",\"credential\":\"%s\"}\n",
                           g->next_upload, c->size, g->sha, g->o.user_id, g->o.credential);
    c->doc_id = 0;
    return rc;
}

static int fill(lg *g, lg_client *c)
{
    if (c->role == ROLE_IDLE || c->doc_id == 0 || c->finishing)
        return 0;
    if (c->sent < c->size) {
        if (c->inflight >= g->o.window)
            return 0;
        int64_t len = c->size - c->sent < g->o.chunk ? c->size - c->sent : g->o.chunk;
        if (lg_queue_head(c, "{\"action\":\"chunk\",\"document_id\":%" PRId64 ",\"offset\":%" PRId64
                             ",\"length\":%" PRId64 "}\n",
                          c->doc_id, c->sent, len) != 0)
            return -1;
        lg_queue_body(c, c->sent, len);
        c->sent += len;
        c->inflight++;
        return 0;
    }
    /* Pipelined: the server answers in order, so the completion is handled
     * only after the last chunk's bytes and offset are saved. */
    c->finishing = true;
    return lg_queue_head(c, "{\"action\":\"upload_complete\",\"document_id\":%" PRId64 "}\n",
                         c->doc_id);
}

static int ping(lg *g, lg_client *c)
{
    return lg_queue_head(c,
                         "{\"action\":\"status\",\"document_id\":%" PRId64 ",\"user_id\":%" PRId64
                         ",\"credential\":\"%s\"}\n",
                         g->done_ids[lg_pick(g, c)], g->o.user_id, g->o.credential);
}

static const char *str_field(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

/* One answer line. 0 to go on, -1 after lg_fail(). */
static int on_line(lg *g, lg_client *c, const char *line, size_t len)
{
    json_error_t jerr;
    json_t *o = json_loadb(line, len, 0, &jerr);
    if (!o || !json_is_object(o)) {
        json_decref(o);
        return lg_fail(g, c, "unparsable answer: %.*s", (int)len, line);
    }
    const char *status = str_field(o, "status");
    int rc = 0;
    if (c->role == ROLE_IDLE) {
        if (strcmp(status, "ok") == 0)
            lg_ping_done(g, c);
        else
            rc = lg_fail(g, c, "status answer: %.*s", (int)len, line);
    } else if (strcmp(str_field(o, "event"), "progress") == 0) {
        json_int_t got = json_integer_value(json_object_get(o, "received"));
        if (c->inflight <= 0 || got <= c->acked || got > c->sent)
            rc = lg_fail(g, c, "unexpected progress: %.*s", (int)len, line);
        c->inflight--;
        c->acked = got;
    } else if (strcmp(status, "ok") == 0 && c->doc_id == 0 &&
               strcmp(str_field(o, "action"), "upload") == 0) {
        c->doc_id = json_integer_value(json_object_get(o, "document_id"));
        c->authed = true;
        if (c->doc_id <= 0)
            rc = lg_fail(g, c, "upload answer without document_id: %.*s", (int)len, line);
    } else if (strcmp(status, "SUCCESS") == 0 && c->finishing) {
        if (c->acked != c->size)
            rc = lg_fail(g, c, "SUCCESS after %" PRId64 " of %" PRId64 " bytes acknowledged",
                         c->acked, c->size);
        else if (json_integer_value(json_object_get(o, "filesize")) != c->size)
            rc = lg_fail(g, c, "SUCCESS with the wrong filesize: %.*s", (int)len, line);
        else if (strcmp(str_field(o, "sha256"), g->sha) != 0)
            rc = lg_fail(g, c, "SHA-256 mismatch: sent %s, server says %s", g->sha,
                         str_field(o, "sha256"));
        else {
            lg_remember(g, c->doc_id, "");
            lg_upload_done(g, c);
        }
    } else {
        rc = lg_fail(g, c, "answer: %.*s", (int)len, line);
    }
    json_decref(o);
    return rc;
}

static long consume(lg *g, lg_client *c)
{
    size_t pos = 0;
    for (;;) {
        char *nl = memchr(c->in + pos, '\n', c->in_len - pos);
        if (!nl)
            break;
        size_t len = (size_t)(nl - (c->in + pos));
        if (on_line(g, c, c->in + pos, len) != 0)
            return -1;
        pos += len + 1;
        if (c->phase != PH_BUSY)
            break; /* done: anything further is unexpected */
    }
    return (long)pos;
}

const lg_driver lg_chunkd_driver = {
    .name = "chunkd",
    .one_upload_per_connection = false,
    .start = start,
    .fill = fill,
    .consume = consume,
    .ping = ping,
};
