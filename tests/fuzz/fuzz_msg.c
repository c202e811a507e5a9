/* Fuzzes control-message parsing (src/msg.c): the input is one control
 * line. A parsed request must satisfy what upload.c relies on; a refused
 * one must carry a documented code and reason, and its error answer must
 * serialise to one valid JSON line. jansson, read independently, is the
 * oracle for the fields the parser copied out. */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chunkd/msg.h"
#include "fuzz_util.h"

#define MAX_FILE_SIZE (500 * 1024 * 1024LL) /* the server's default */
#define SMALL_MAX_FILE_SIZE 4096LL

static const char *const parse_reasons[] = {
    "malformed_json",   "invalid_request",  "unknown_action",      "unsupported_version",
    "invalid_filename", "invalid_filesize", "invalid_sha256",      "invalid_document_id",
    "invalid_offset",   "invalid_length",   "invalid_limit",       "file_too_large",
};

static bool known_reason(const char *r)
{
    for (size_t i = 0; i < sizeof parse_reasons / sizeof parse_reasons[0]; i++)
        if (strcmp(r, parse_reasons[i]) == 0)
            return true;
    return false;
}

static bool lower_hex64(const char *s)
{
    if (strlen(s) != 64)
        return false;
    for (size_t i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* The value jansson sees for key, as a request field: -1 when absent or
 * not an integer. */
static int64_t oracle_int(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
}

static void check_progress(int64_t doc, int64_t received, int64_t total)
{
    char line[256];
    int n = msg_progress_line(line, sizeof line, doc, received, total);
    FUZZ_CHECK(n > 0, "progress line for doc %" PRId64 " did not fit", doc);
    json_t *o = fuzz_check_answer_line(line, (size_t)n);
    FUZZ_CHECK(oracle_int(o, "received") == received && oracle_int(o, "total") == total,
               "progress line with other numbers: %s", line);
    json_decref(o);
}

static void check_parsed(const msg_request *req, json_t *obj)
{
    json_t *act = json_object_get(obj, "action");
    const char *name = msg_action_name(req->action);
    FUZZ_CHECK(json_is_string(act) && json_string_length(act) == strlen(name) &&
                   memcmp(json_string_value(act), name, strlen(name)) == 0,
               "parsed as %s", name);
    FUZZ_CHECK(req->user_id >= 0, "user_id %" PRId64, req->user_id);
    if (req->user_id > 0)
        FUZZ_CHECK(oracle_int(obj, "user_id") == req->user_id, "user_id differs from the line");
    if (req->has_credential)
        FUZZ_CHECK(strlen(req->credential) <= MSG_CREDENTIAL_MAX, "credential too long");
    switch (req->action) {
    case ACT_UPLOAD: {
        size_t n = strlen(req->filename);
        FUZZ_CHECK(msg_filename_valid(req->filename, n), "accepted filename is invalid");
        json_t *fn = json_object_get(obj, "filename");
        FUZZ_CHECK(json_string_length(fn) == n &&
                       memcmp(json_string_value(fn), req->filename, n) == 0,
                   "filename differs from the line");
        /* status and list echo the name back through jansson. */
        json_t *echo = json_string(req->filename);
        FUZZ_CHECK(echo != NULL, "an accepted filename cannot be sent back");
        json_decref(echo);
        FUZZ_CHECK(req->filesize >= 0 && req->filesize <= MAX_FILE_SIZE,
                   "filesize %" PRId64, req->filesize);
        FUZZ_CHECK(oracle_int(obj, "filesize") == req->filesize, "filesize differs");
        if (req->has_sha256)
            FUZZ_CHECK(lower_hex64(req->sha256), "sha256 %s", req->sha256);
        break;
    }
    case ACT_CHUNK:
        FUZZ_CHECK(req->document_id > 0 && req->offset >= 0 && req->length > 0,
                   "chunk %" PRId64 " at %" PRId64 " of %" PRId64, req->document_id,
                   req->offset, req->length);
        FUZZ_CHECK(oracle_int(obj, "document_id") == req->document_id &&
                       oracle_int(obj, "offset") == req->offset &&
                       oracle_int(obj, "length") == req->length,
                   "chunk fields differ from the line");
        if (req->offset <= INT64_MAX - req->length)
            check_progress(req->document_id, req->offset + req->length, req->offset + req->length);
        break;
    case ACT_COMPLETE:
    case ACT_RESUME:
    case ACT_STATUS:
    case ACT_ABORT:
        FUZZ_CHECK(req->document_id > 0, "document_id %" PRId64, req->document_id);
        FUZZ_CHECK(oracle_int(obj, "document_id") == req->document_id, "document_id differs");
        break;
    case ACT_LIST:
        FUZZ_CHECK(req->limit >= 0, "limit %" PRId64, req->limit);
        if (req->limit > 0)
            FUZZ_CHECK(oracle_int(obj, "limit") == req->limit, "limit differs");
        break;
    default:
        FUZZ_CHECK(0, "action %d out of range", (int)req->action);
    }
}

static void check_refused(const msg_request *req, const msg_error *err, json_t *obj)
{
    FUZZ_CHECK(err->code == 400 || err->code == 401 || err->code == 413, "code %d", err->code);
    FUZZ_CHECK(err->reason && err->reason[0], "an error without a reason");
    FUZZ_CHECK(known_reason(err->reason), "undocumented reason %s", err->reason);
    FUZZ_CHECK(err->message[0] != '\0', "an error without a message (%s)", err->reason);
    FUZZ_CHECK((err->code == 413) == (strcmp(err->reason, "file_too_large") == 0),
               "%d %s", err->code, err->reason);
    FUZZ_CHECK(!obj == (strcmp(err->reason, "malformed_json") == 0),
               "jansson and msg_parse disagree whether the line is JSON (%s)", err->reason);
    /* A refused chunk's bytes still follow: the stream is lost exactly when
     * their count is unknown, and otherwise the caller skips req->length. */
    if (req->action == ACT_CHUNK)
        FUZZ_CHECK(err->close == (req->length < 0), "chunk refused with %s, length %" PRId64
                   ", close %d", err->reason, req->length, (int)err->close);
    else
        FUZZ_CHECK(!err->close, "closing on %s", err->reason);
    if (strcmp(err->reason, "file_too_large") == 0)
        FUZZ_CHECK(req->action == ACT_UPLOAD && req->filesize > MAX_FILE_SIZE,
                   "file_too_large for %" PRId64, req->filesize);
}

/* The answer for a refused line must reach the client as one JSON line. */
static void check_error_answer(const msg_error *err)
{
    json_t *answer = msg_error_json(err);
    FUZZ_CHECK(answer != NULL, "no answer can be built for %s: \"%s\"", err->reason,
               err->message);
    size_t len = 0;
    char *line = msg_dump_line(answer, &len);
    json_decref(answer);
    FUZZ_CHECK(line != NULL && len == strlen(line), "the answer did not serialise");
    json_t *back = fuzz_check_answer_line(line, len);
    json_t *reason = json_object_get(back, "reason");
    json_t *message = json_object_get(back, "message");
    FUZZ_CHECK(oracle_int(back, "code") == err->code &&
                   strcmp(json_string_value(reason), err->reason) == 0 &&
                   strcmp(json_string_value(message), err->message) == 0,
               "the answer does not say what the error says: %s", line);
    json_decref(back);
    free(line);
}

/* A tighter size limit may only turn an accepted upload into 413, or an
 * error into 413 that the wider limit found later in the line. */
static void check_limit_monotonic(const char *line, size_t len, int rc, const msg_request *req,
                                  const msg_error *err)
{
    msg_request small;
    msg_error serr;
    int src = msg_parse(line, len, SMALL_MAX_FILE_SIZE, &small, &serr);
    bool small_413 = src != 0 && strcmp(serr.reason, "file_too_large") == 0;
    if (src == 0 && small.action == ACT_UPLOAD)
        FUZZ_CHECK(small.filesize <= SMALL_MAX_FILE_SIZE,
                   "filesize %" PRId64 " passed a limit of %lld", small.filesize,
                   SMALL_MAX_FILE_SIZE);
    if (rc == 0) {
        FUZZ_CHECK(src == 0 || (small_413 && req->filesize > SMALL_MAX_FILE_SIZE),
                   "a smaller limit refused with %s", serr.reason);
        if (src == 0)
            FUZZ_CHECK(small.action == req->action && small.document_id == req->document_id &&
                           small.offset == req->offset && small.length == req->length &&
                           small.filesize == req->filesize && small.user_id == req->user_id &&
                           small.limit == req->limit &&
                           strcmp(small.filename, req->filename) == 0,
                       "the same line parsed differently");
    } else {
        FUZZ_CHECK(src != 0, "a smaller limit accepted what a larger one refused");
        FUZZ_CHECK(small_413 || strcmp(serr.reason, err->reason) == 0, "%s vs %s", serr.reason,
                   err->reason);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *line = (const char *)data;
    msg_request req;
    msg_error err;
    int rc = msg_parse(line, size, MAX_FILE_SIZE, &req, &err);
    FUZZ_CHECK(rc == 0 || rc == -1, "msg_parse returned %d", rc);

    json_error_t jerr;
    json_t *obj = json_loadb(line, size, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (rc == 0) {
        FUZZ_CHECK(obj != NULL && json_is_object(obj), "accepted a line that is no object");
        check_parsed(&req, obj);
    } else {
        check_refused(&req, &err, obj);
        check_error_answer(&err);
    }
    check_limit_monotonic(line, size, rc, &req, &err);
    json_decref(obj);
    return 0;
}
