/* chunkup client requests: one JSON line out, one JSON line back, and the
 * typed views of the answers (docs/PROTOCOL.md). */
#include <string.h>

#include "client_io.h"

#define DEFAULT_CHUNK 65536

int cu_request(cu_conn *c, json_t *req, json_t **reply, cu_error *err)
{
    cu_error scratch;
    json_t *status;
    const char *s;
    char *text;
    size_t n;
    int rc;

    if (err == NULL)
        err = &scratch;
    cu_err_clear(err);
    *reply = NULL;
    if (cu_io_check(c, err) < 0)
        return -1;
    /* Compact output holds no raw newline (strings escape it), so the
     * request stays one line. */
    text = json_dumps(req, JSON_COMPACT);
    if (text == NULL) {
        cu_err_set(err, 0, "internal", "cannot encode the request as JSON");
        return -1;
    }
    n = strlen(text);
    text[n] = '\n';
    rc = cu_io_send_all(c, text, n + 1, err);
    free(text);
    if (rc < 0)
        return -1;
    if (cu_read_reply(c, reply, err) < 0)
        return -1;
    status = json_object_get(*reply, "status");
    s = json_is_string(status) ? json_string_value(status) : "";
    if (strcmp(s, "ok") == 0 || strcmp(s, "SUCCESS") == 0)
        return 0;
    if (strcmp(s, "error") == 0) {
        cu_err_from_reply(*reply, err);
        return -1;
    }
    json_decref(*reply);
    *reply = NULL;
    cu_err_set(err, 0, "protocol", "answer without a known status");
    c->broken = true;
    return -1;
}

/* Adds key: value to obj, taking ownership of value even on failure. */
static int put(json_t *obj, const char *key, json_t *value)
{
    if (value == NULL)
        return -1;
    return json_object_set_new(obj, key, value);
}

/* A request object {"v":1,"action":action} plus the credentials, if any. */
static json_t *new_request(const char *action, const cu_auth *auth, cu_error *err)
{
    json_t *req = json_object();

    if (req == NULL || put(req, "v", json_integer(1)) < 0 ||
        put(req, "action", json_string(action)) < 0)
        goto fail;
    if (auth != NULL) {
        if (put(req, "user_id", json_integer(auth->user_id)) < 0)
            goto fail;
        if (auth->credential != NULL && put(req, "credential", json_string(auth->credential)) < 0)
            goto fail;
    }
    return req;
fail:
    json_decref(req);
    cu_err_set(err, 0, "internal", "cannot build the %s request (credential not valid UTF-8?)",
               action);
    return NULL;
}

static int get_int(const json_t *obj, const char *key, int64_t *out)
{
    json_t *v = json_object_get(obj, key);

    if (!json_is_integer(v))
        return -1;
    *out = json_integer_value(v);
    return 0;
}

/* Reads the answer to upload/resume; the numbers must make sense together,
 * because cu_send_file trusts them for its reads and chunk sizes. */
static int parse_upload_info(cu_conn *c, const json_t *reply, cu_upload_info *out, cu_error *err)
{
    cu_upload_info info;

    if (get_int(reply, "document_id", &info.document_id) < 0 || info.document_id <= 0 ||
        get_int(reply, "filesize", &info.filesize) < 0 || info.filesize < 0 ||
        get_int(reply, "offset", &info.offset) < 0 || info.offset < 0 ||
        info.offset > info.filesize) {
        cu_err_set(err, 0, "protocol", "upload answer lacks a valid document_id, filesize or offset");
        c->broken = true;
        return -1;
    }
    if (get_int(reply, "chunk_size", &info.chunk_size) < 0 || info.chunk_size <= 0)
        info.chunk_size = DEFAULT_CHUNK;
    if (get_int(reply, "max_chunk_size", &info.max_chunk_size) < 0 || info.max_chunk_size <= 0)
        info.max_chunk_size = info.chunk_size;
    if (info.chunk_size > info.max_chunk_size)
        info.chunk_size = info.max_chunk_size;
    *out = info;
    return 0;
}

/* Sends an upload or resume request (taken) and reads its answer into
 * *out, which must be what was asked for: the document asked to resume
 * (want_id > 0), or a new upload of want_size bytes from offset 0
 * (want_size >= 0). Anything else (a proxy or server mixing up uploads)
 * would send the wrong bytes: a protocol error, and *out is left as it
 * was. */
static int open_upload(cu_conn *c, json_t *req, int64_t want_id, int64_t want_size,
                       cu_upload_info *out, cu_error *err)
{
    json_t *reply;
    cu_upload_info info;
    int rc = cu_request(c, req, &reply, err);

    json_decref(req);
    if (rc == 0)
        rc = parse_upload_info(c, reply, &info, err);
    json_decref(reply);
    if (rc != 0)
        return rc;
    if (want_id > 0 && info.document_id != want_id) {
        cu_err_set(err, 0, "protocol", "the server resumed document_id=%lld, not %lld",
                   (long long)info.document_id, (long long)want_id);
        c->broken = true;
        return -1;
    }
    if (want_size >= 0 && (info.filesize != want_size || info.offset != 0)) {
        cu_err_set(err, 0, "protocol",
                   "the server opened document_id=%lld as %lld bytes at offset %lld, "
                   "not %lld bytes from 0",
                   (long long)info.document_id, (long long)info.filesize,
                   (long long)info.offset, (long long)want_size);
        c->broken = true;
        return -1;
    }
    *out = info;
    return 0;
}

int cu_start_upload(cu_conn *c, const cu_auth *auth, const char *filename, int64_t filesize,
                    const char *sha256_hex, cu_upload_info *out, cu_error *err)
{
    cu_error scratch;
    json_t *req;

    if (err == NULL)
        err = &scratch;
    cu_err_clear(err);
    req = new_request("upload", auth, err);
    if (req == NULL)
        return -1;
    if (put(req, "filename", json_string(filename)) < 0) {
        json_decref(req);
        cu_err_set(err, 0, "file", "file name is not valid UTF-8");
        return -1;
    }
    if (put(req, "filesize", json_integer(filesize)) < 0 ||
        (sha256_hex != NULL && put(req, "sha256", json_string(sha256_hex)) < 0)) {
        json_decref(req);
        cu_err_set(err, 0, "internal", "cannot build the upload request");
        return -1;
    }
    return open_upload(c, req, 0, filesize, out, err);
}

int cu_resume(cu_conn *c, const cu_auth *auth, int64_t document_id, cu_upload_info *out,
              cu_error *err)
{
    cu_error scratch;
    json_t *req;

    if (err == NULL)
        err = &scratch;
    cu_err_clear(err);
    req = new_request("resume", auth, err);
    if (req == NULL)
        return -1;
    if (put(req, "document_id", json_integer(document_id)) < 0) {
        json_decref(req);
        cu_err_set(err, 0, "internal", "cannot build the resume request");
        return -1;
    }
    return open_upload(c, req, document_id, -1, out, err);
}

static bool is_hex64(const char *s)
{
    size_t i;

    for (i = 0; i < 64; i++) {
        char ch = s[i];

        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F')))
            return false;
    }
    return s[64] == '\0';
}

int cu_complete(cu_conn *c, int64_t document_id, cu_complete_info *out, cu_error *err)
{
    cu_error scratch;
    json_t *req, *reply = NULL, *sha, *path;
    const char *status;
    int rc;

    if (err == NULL)
        err = &scratch;
    cu_err_clear(err);
    req = new_request("upload_complete", NULL, err);
    if (req == NULL)
        return -1;
    if (put(req, "document_id", json_integer(document_id)) < 0) {
        json_decref(req);
        cu_err_set(err, 0, "internal", "cannot build the upload_complete request");
        return -1;
    }
    rc = cu_request(c, req, &reply, err);
    json_decref(req);
    if (rc < 0) {
        json_decref(reply);
        return -1;
    }
    status = json_string_value(json_object_get(reply, "status"));
    sha = json_object_get(reply, "sha256");
    path = json_object_get(reply, "file_path");
    if (status == NULL || strcmp(status, "SUCCESS") != 0 || !json_is_string(sha) ||
        !is_hex64(json_string_value(sha)) ||
        get_int(reply, "document_id", &out->document_id) < 0 ||
        get_int(reply, "filesize", &out->filesize) < 0) {
        json_decref(reply);
        cu_err_set(err, 0, "protocol", "upload_complete answer is not a valid SUCCESS");
        return -1;
    }
    memcpy(out->sha256, json_string_value(sha), 65);
    snprintf(out->file_path, sizeof out->file_path, "%s",
             json_is_string(path) ? json_string_value(path) : "");
    json_decref(reply);
    return 0;
}

/* Runs a request built from new_request plus an optional document_id and
 * limit; the answer goes to *reply (new reference) or is dropped. */
static int simple_request(cu_conn *c, const char *action, const cu_auth *auth,
                          int64_t document_id, int limit, json_t **reply, cu_error *err)
{
    cu_error scratch;
    json_t *req, *ans = NULL;
    int rc;

    if (err == NULL)
        err = &scratch;
    cu_err_clear(err);
    if (reply != NULL)
        *reply = NULL;
    req = new_request(action, auth, err);
    if (req == NULL)
        return -1;
    if ((document_id > 0 && put(req, "document_id", json_integer(document_id)) < 0) ||
        (limit > 0 && put(req, "limit", json_integer(limit)) < 0)) {
        json_decref(req);
        cu_err_set(err, 0, "internal", "cannot build the %s request", action);
        return -1;
    }
    rc = cu_request(c, req, &ans, err);
    json_decref(req);
    if (rc < 0 || reply == NULL)
        json_decref(ans);
    else
        *reply = ans;
    return rc;
}

int cu_status(cu_conn *c, const cu_auth *auth, int64_t document_id, json_t **reply,
              cu_error *err)
{
    return simple_request(c, "status", auth, document_id, 0, reply, err);
}

int cu_list(cu_conn *c, const cu_auth *auth, int limit, json_t **reply, cu_error *err)
{
    return simple_request(c, "list", auth, 0, limit, reply, err);
}

int cu_abort(cu_conn *c, const cu_auth *auth, int64_t document_id, cu_error *err)
{
    return simple_request(c, "abort", auth, document_id, 0, NULL, err);
}
