/* JSON control messages. */
#include "chunkd/msg.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chunkd/util.h"

static const char *const action_names[] = {
    [ACT_UPLOAD] = "upload", [ACT_CHUNK] = "chunk",   [ACT_COMPLETE] = "upload_complete",
    [ACT_RESUME] = "resume", [ACT_STATUS] = "status", [ACT_LIST] = "list",
    [ACT_ABORT] = "abort",
};

const char *msg_action_name(msg_action a)
{
    return action_names[a];
}

int msg_fail(msg_error *err, int code, const char *reason, const char *fmt, ...)
{
    err->code = code;
    err->reason = reason;
    err->expected_offset = -1;
    err->retry_after_ms = 0;
    err->document_status = NULL;
    err->close = false;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return -1;
}

bool msg_filename_valid(const char *name, size_t len)
{
    if (len == 0 || len > MSG_FILENAME_MAX)
        return false;
    if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.'))
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c < 0x20 || c == 0x7f || c == '/' || c == '\\')
            return false;
    }
    return true;
}

/* Reads an optional non-negative integer field. Returns 1 if present and
 * valid, 0 if absent, -1 if present but not a non-negative integer. */
static int get_uint(json_t *obj, const char *key, int64_t *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return -1;
    *out = json_integer_value(v);
    return 1;
}

/* document_id must be a positive integer. */
static int need_document_id(json_t *obj, msg_request *req, msg_error *err)
{
    int r = get_uint(obj, "document_id", &req->document_id);
    if (r <= 0 || req->document_id == 0) {
        req->document_id = -1;
        return msg_fail(err, 400, "invalid_document_id",
                        "document_id must be a positive integer");
    }
    return 0;
}

static int parse_auth(json_t *obj, msg_request *req, msg_error *err)
{
    json_t *uid = json_object_get(obj, "user_id");
    if (uid) {
        if (!json_is_integer(uid) || json_integer_value(uid) <= 0)
            return msg_fail(err, 400, "invalid_request", "user_id must be a positive integer");
        req->user_id = json_integer_value(uid);
    }
    json_t *cred = json_object_get(obj, "credential");
    if (cred) {
        if (!json_is_string(cred))
            return msg_fail(err, 400, "invalid_request", "credential must be a string");
        size_t n = json_string_length(cred);
        const char *s = json_string_value(cred);
        /* A credential that cannot be ours is a wrong credential, not a
         * malformed request: the answer must not tell them apart. */
        if (n > MSG_CREDENTIAL_MAX || memchr(s, '\0', n)) {
            req->credential[0] = '\0';
        } else {
            memcpy(req->credential, s, n + 1);
        }
        req->has_credential = true;
    }
    return 0;
}

static int parse_upload(json_t *obj, int64_t max_file_size, msg_request *req, msg_error *err)
{
    json_t *fn = json_object_get(obj, "filename");
    if (!json_is_string(fn))
        return msg_fail(err, 400, "invalid_filename", "filename must be a string");
    size_t n = json_string_length(fn);
    const char *s = json_string_value(fn);
    if (!msg_filename_valid(s, n))
        return msg_fail(err, 400, "invalid_filename",
                        "filename must be 1 to %d bytes without '/', '\\', control "
                        "characters, and not '.' or '..'",
                        MSG_FILENAME_MAX);
    memcpy(req->filename, s, n + 1);

    json_t *fs = json_object_get(obj, "filesize");
    if (!json_is_integer(fs))
        return msg_fail(err, 400, "invalid_filesize", "filesize must be an integer");
    req->filesize = json_integer_value(fs);
    if (req->filesize < 0)
        return msg_fail(err, 400, "invalid_filesize", "filesize must not be negative");
    if (req->filesize > max_file_size)
        return msg_fail(err, 413, "file_too_large",
                        "filesize %" PRId64 " exceeds the limit of %" PRId64 " bytes",
                        req->filesize, max_file_size);

    json_t *sha = json_object_get(obj, "sha256");
    if (sha && !json_is_null(sha)) {
        if (!json_is_string(sha) || json_string_length(sha) != 64 ||
            !util_parse_sha256_hex(json_string_value(sha), req->sha256))
            return msg_fail(err, 400, "invalid_sha256", "sha256 must be 64 hex digits");
        req->has_sha256 = true;
    }
    return 0;
}

static int parse_chunk(json_t *obj, msg_request *req, msg_error *err)
{
    /* length first: without it the body cannot be skipped, so every later
     * error leaves the connection usable. */
    if (get_uint(obj, "length", &req->length) <= 0) {
        req->length = -1;
        msg_fail(err, 400, "invalid_length", "length must be a non-negative integer");
        err->close = true;
        return -1;
    }
    if (need_document_id(obj, req, err) != 0)
        return -1;
    if (get_uint(obj, "offset", &req->offset) <= 0) {
        req->offset = -1;
        return msg_fail(err, 400, "invalid_offset", "offset must be a non-negative integer");
    }
    if (req->length == 0)
        return msg_fail(err, 400, "invalid_length", "a chunk must carry at least one byte");
    return 0;
}

static int lookup_action(json_t *name, msg_action *out)
{
    /* Compare lengths too: a name may carry a NUL ("list\u0000junk"). */
    const char *s = json_string_value(name);
    size_t n = json_string_length(name);
    for (size_t i = 0; i < sizeof action_names / sizeof action_names[0]; i++)
        if (strlen(action_names[i]) == n && memcmp(s, action_names[i], n) == 0) {
            *out = (msg_action)i;
            return 0;
        }
    return -1;
}

/* Reads a JSON integer of at most 18 digits at *p (no sign, no leading
 * zero: what JSON allows and surely fits int64_t), moving *p past it. */
static bool take_digits(const char **p, const char *end, int64_t *out)
{
    const char *q = *p;
    int64_t v = 0;
    int n = 0;
    while (q < end && *q >= '0' && *q <= '9' && n < 18) {
        v = v * 10 + (*q++ - '0');
        n++;
    }
    bool more = q < end && *q >= '0' && *q <= '9'; /* a 19th digit: not read here */
    if (n == 0 || more || (n > 1 && **p == '0'))
        return false;
    *p = q;
    *out = v;
    return true;
}

static bool take_text(const char **p, const char *end, const char *text, size_t n)
{
    if ((size_t)(end - *p) < n || memcmp(*p, text, n) != 0)
        return false;
    *p += n;
    return true;
}

#define TAKE(p, end, lit) take_text(p, end, lit, sizeof lit - 1)

/* The line that comes with every chunk, in the shape the clients send it
 * ({"v":1,"action":"chunk","document_id":N,"offset":N,"length":N}, "v"
 * optional), with values msg_parse accepts: read without building a JSON
 * tree (with thousands of chunks a second, jansson's parse and its
 * allocations were about 5% of the server's CPU). False for anything
 * else, which msg_parse reads the general way with the same outcome. */
static bool parse_chunk_line(const char *line, size_t len, msg_request *req)
{
    const char *p = line, *end = line + len;
    int64_t doc, off, n;
    if (!TAKE(&p, end, "{"))
        return false;
    (void)TAKE(&p, end, "\"v\":1,");
    if (!TAKE(&p, end, "\"action\":\"chunk\",\"document_id\":") || !take_digits(&p, end, &doc) ||
        !TAKE(&p, end, ",\"offset\":") || !take_digits(&p, end, &off) ||
        !TAKE(&p, end, ",\"length\":") || !take_digits(&p, end, &n) || !TAKE(&p, end, "}") ||
        p != end || doc == 0 || n == 0)
        return false;
    req->action = ACT_CHUNK;
    req->document_id = doc;
    req->offset = off;
    req->length = n;
    return true;
}

int msg_parse(const char *line, size_t len, int64_t max_file_size, msg_request *req,
              msg_error *err)
{
    memset(req, 0, sizeof *req);
    req->document_id = -1;
    req->offset = -1;
    req->length = -1;
    if (parse_chunk_line(line, len, req))
        return 0;

    json_error_t jerr;
    json_t *obj = json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!obj) {
        /* jansson quotes the offending input, possibly cut mid-character:
         * keep the answer valid UTF-8 by showing only printable ASCII. */
        char why[sizeof jerr.text];
        size_t i = 0;
        for (; jerr.text[i] && i + 1 < sizeof why; i++) {
            unsigned char c = (unsigned char)jerr.text[i];
            why[i] = (c >= 0x20 && c <= 0x7e) ? (char)c : '?';
        }
        why[i] = '\0';
        return msg_fail(err, 400, "malformed_json", "malformed JSON: %s", why);
    }
    int rc = -1;
    if (!json_is_object(obj)) {
        msg_fail(err, 400, "invalid_request", "a request must be a JSON object");
        goto out;
    }
    json_t *act = json_object_get(obj, "action");
    json_t *v = json_object_get(obj, "v");
    if (v && (!json_is_integer(v) || json_integer_value(v) != MSG_PROTOCOL_VERSION)) {
        /* Even refused, a chunk's bytes follow: say how many, so the caller
         * can skip them and stay in step. */
        bool chunk = json_is_string(act) && lookup_action(act, &req->action) == 0 &&
                     req->action == ACT_CHUNK;
        if (chunk && get_uint(obj, "length", &req->length) <= 0)
            req->length = -1;
        msg_fail(err, 400, "unsupported_version", "this server speaks protocol version %d",
                 MSG_PROTOCOL_VERSION);
        err->close = chunk && req->length < 0; /* bytes of unknown count follow */
        goto out;
    }
    if (!json_is_string(act)) {
        msg_fail(err, 400, "invalid_request", "action must be a string");
        goto out;
    }
    if (lookup_action(act, &req->action) != 0) {
        msg_fail(err, 400, "unknown_action", "unknown action");
        goto out;
    }
    switch (req->action) {
    case ACT_CHUNK:
        rc = parse_chunk(obj, req, err);
        goto out; /* chunks carry no credentials */
    case ACT_UPLOAD:
        rc = parse_upload(obj, max_file_size, req, err);
        break;
    case ACT_COMPLETE:
    case ACT_RESUME:
    case ACT_STATUS:
    case ACT_ABORT:
        rc = need_document_id(obj, req, err);
        break;
    case ACT_LIST: {
        int r = get_uint(obj, "limit", &req->limit);
        rc = 0;
        if (r < 0 || (r == 1 && req->limit == 0))
            rc = msg_fail(err, 400, "invalid_limit", "limit must be a positive integer");
        break;
    }
    }
    if (rc == 0)
        rc = parse_auth(obj, req, err);
out:
    json_decref(obj);
    return rc;
}

char *msg_dump_line(json_t *answer, size_t *len)
{
    if (json_object_set_new(answer, "v", json_integer(MSG_PROTOCOL_VERSION)) != 0)
        return NULL;
    char *s = json_dumps(answer, JSON_COMPACT);
    if (!s)
        return NULL;
    size_t n = strlen(s);
    char *line = realloc(s, n + 2);
    if (!line) {
        free(s);
        return NULL;
    }
    line[n] = '\n';
    line[n + 1] = '\0';
    *len = n + 1;
    return line;
}

json_t *msg_error_json(const msg_error *err)
{
    json_t *o = json_pack("{s:s, s:i, s:s, s:s}", "status", "error", "code", err->code,
                          "reason", err->reason, "message", err->message);
    if (!o)
        return NULL;
    if (err->expected_offset >= 0 &&
        json_object_set_new(o, "expected_offset", json_integer(err->expected_offset)) != 0)
        goto fail;
    if (err->retry_after_ms > 0 &&
        json_object_set_new(o, "retry_after_ms", json_integer(err->retry_after_ms)) != 0)
        goto fail;
    if (err->document_status &&
        json_object_set_new(o, "document_status", json_string(err->document_status)) != 0)
        goto fail;
    return o;
fail:
    json_decref(o);
    return NULL;
}

int msg_progress_line(char *buf, size_t size, int64_t document_id, int64_t received,
                      int64_t total)
{
    int n = snprintf(buf, size,
                     "{\"v\":1,\"event\":\"progress\",\"document_id\":%" PRId64
                     ",\"received\":%" PRId64 ",\"total\":%" PRId64
                     ",\"progress\":\"%" PRId64 "/%" PRId64 " bytes\"}\n",
                     document_id, received, total, received, total);
    return (n < 0 || (size_t)n >= size) ? -1 : n;
}
