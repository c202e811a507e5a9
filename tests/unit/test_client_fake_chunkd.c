/* The fake chunkd peer: see test_client_fake_chunkd.h. */
#include "test_client_fake_chunkd.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>

static int send_error(int fd, int code, const char *reason, json_t *extra)
{
    json_t *e = json_pack("{s:i, s:s, s:i, s:s, s:s}", "v", 1, "status", "error", "code", code,
                          "reason", reason, "message", reason);

    if (e != NULL && extra != NULL)
        json_object_update(e, extra);
    json_decref(extra);
    return peer_send_json(fd, e);
}

/* As chunkd ends a connection after a closing answer: shut for writing,
 * then read and drop until the client closes (2 s at most), so the bytes
 * it pipelined behind the request do not turn into a reset that destroys
 * the answer. */
static void linger(int fd)
{
    char sink[4096];
    if (shutdown(fd, SHUT_WR) != 0)
        return;
    for (int i = 0; i < 1000; i++) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 2000) <= 0 || read(fd, sink, sizeof sink) <= 0)
            return;
    }
}

static fake_doc *find(fake_chunkd *f, int64_t id)
{
    for (int i = 0; i < f->ndocs; i++) {
        if (f->docs[i].id == id)
            return &f->docs[i];
    }
    return NULL;
}

static const char *status_name(int s)
{
    return s == DOC_UPLOADING ? "uploading" : s == DOC_COMPLETED ? "completed" : "failed";
}

static void sha256_hex(const unsigned char *data, int64_t n, char out[65])
{
    unsigned char md[32];
    unsigned int len = 0;

    EVP_Digest(data, (size_t)n, md, &len, EVP_sha256(), NULL);
    for (unsigned int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static json_t *doc_json(const fake_doc *d)
{
    char sha[65];
    json_t *o;

    if (d->status == DOC_COMPLETED)
        sha256_hex(d->data, d->size, sha);
    o = json_pack("{s:I, s:s, s:I, s:s, s:s?, s:s?, s:s}", "document_id", (json_int_t)d->id,
                  "filename", d->name, "filesize", (json_int_t)d->size, "status",
                  status_name(d->status), "sha256", d->status == DOC_COMPLETED ? sha : NULL,
                  "failure_reason", d->status == DOC_FAILED ? d->failure : NULL, "created_at",
                  "2026-11-30T10:00:00Z");
    if (o != NULL && d->status == DOC_UPLOADING)
        json_object_set_new(o, "offset", json_integer(d->offset));
    return o;
}

static json_t *open_answer(const fake_chunkd *f, const char *action, const fake_doc *d)
{
    return json_pack("{s:i, s:s, s:s, s:I, s:I, s:I, s:I, s:i}", "v", 1, "status", "ok", "action",
                     action, "document_id", (json_int_t)d->id, "offset", (json_int_t)d->offset,
                     "filesize", (json_int_t)d->size, "chunk_size", (json_int_t)f->chunk_size,
                     "max_chunk_size", 1048576);
}

/* open_answer, unless the switches say to break the protocol. */
static json_t *open_answer_as_told(const fake_chunkd *f, const char *action, const fake_doc *d)
{
    json_t *a = open_answer(f, action, d);
    bool upload = strcmp(action, "upload") == 0;

    if (a != NULL && upload && f->misanswer_upload)
        json_object_set_new(a, "filesize", json_integer((json_int_t)d->size + 1));
    if (a != NULL && !upload && f->misanswer_resume)
        json_object_set_new(a, "document_id", json_integer((json_int_t)d->id + 100));
    return a;
}

/* false: the connection is to be closed. */
static bool authenticate(fake_chunkd *f, int fd, const json_t *req, bool *authed)
{
    json_t *user = json_object_get(req, "user_id");
    const char *cred = json_string_value(json_object_get(req, "credential"));

    if (*authed && cred == NULL && user == NULL)
        return true;
    if (json_integer_value(user) == f->user_id && cred != NULL &&
        strcmp(cred, f->credential) == 0) {
        *authed = true;
        return true;
    }
    send_error(fd, 401, "unauthorized", NULL);
    return false;
}

static bool do_upload(fake_chunkd *f, int fd, const json_t *req, fake_doc **open)
{
    const char *name = json_string_value(json_object_get(req, "filename"));
    const char *sha = json_string_value(json_object_get(req, "sha256"));
    json_t *size = json_object_get(req, "filesize");
    fake_doc *d;

    if (name == NULL || name[0] == '\0' || strchr(name, '/') != NULL)
        return send_error(fd, 400, "invalid_filename", NULL) == 0;
    if (!json_is_integer(size) || json_integer_value(size) < 0)
        return send_error(fd, 400, "invalid_filesize", NULL) == 0;
    if (json_integer_value(size) > f->max_file_size)
        return send_error(fd, 413, "file_too_large", NULL) == 0;
    if (f->ndocs == FAKE_MAX_DOCS)
        return send_error(fd, 500, "internal", NULL) == 0;
    d = &f->docs[f->ndocs++];
    memset(d, 0, sizeof *d);
    d->id = f->ndocs;
    snprintf(d->name, sizeof d->name, "%s", name);
    snprintf(d->declared_sha, sizeof d->declared_sha, "%s", sha != NULL ? sha : "");
    d->size = json_integer_value(size);
    d->data = malloc((size_t)d->size + 1);
    d->status = DOC_UPLOADING;
    f->uploads++;
    *open = d;
    return peer_send_json(fd, open_answer_as_told(f, "upload", d)) == 0;
}

static bool do_resume(fake_chunkd *f, int fd, const json_t *req, fake_doc **open)
{
    fake_doc *d = find(f, json_integer_value(json_object_get(req, "document_id")));

    if (d == NULL)
        return send_error(fd, 404, "not_found", NULL) == 0;
    if (d->status != DOC_UPLOADING)
        return send_error(fd, 409, "not_resumable",
                          json_pack("{s:s}", "document_status", status_name(d->status))) == 0;
    f->resumes++;
    *open = d;
    return peer_send_json(fd, open_answer_as_told(f, "resume", d)) == 0;
}

static bool do_chunk(fake_chunkd *f, int fd, const json_t *req, fake_doc *open)
{
    int64_t len = json_integer_value(json_object_get(req, "length"));
    int64_t off = json_integer_value(json_object_get(req, "offset"));
    int64_t id = json_integer_value(json_object_get(req, "document_id"));
    unsigned char *buf;
    bool ok;

    if (len <= 0 || len > 1048576) {
        send_error(fd, 400, "invalid_length", NULL);
        return false;
    }
    f->chunks++;
    buf = malloc((size_t)len);
    if (buf == NULL)
        return false;
    if (f->chunks == f->drop_at_chunk) {
        /* Part of the bytes, then gone: this chunk must not count. */
        (void)peer_read_exact(fd, buf, (size_t)len / 2);
        free(buf);
        return false;
    }
    if (peer_read_exact(fd, buf, (size_t)len) < 0) {
        free(buf);
        return false;
    }
    if (open == NULL || open->id != id)
        ok = send_error(fd, 409, "upload_not_open", NULL) == 0;
    else if (off != open->offset)
        ok = send_error(fd, 409, "offset_mismatch",
                        json_pack("{s:I}", "expected_offset", (json_int_t)open->offset)) == 0;
    else if (off + len > open->size)
        ok = send_error(fd, 413, "chunk_past_end", NULL) == 0;
    else if (f->chunks == f->fail_507_at_chunk)
        ok = send_error(fd, 507, "insufficient_storage", NULL) == 0;
    else if (f->chunks == f->fail_at_chunk) {
        ok = send_error(fd, f->fail_code, f->fail_reason,
                        f->fail_retry_after_ms > 0
                            ? json_pack("{s:I}", "retry_after_ms", (json_int_t)f->fail_retry_after_ms)
                            : NULL) == 0;
        if (ok && f->fail_code == 408) {
            linger(fd);
            ok = false;
        }
    }
    else {
        memcpy(open->data + off, buf, (size_t)len);
        open->offset += len;
        ok = peer_send_json(fd, json_pack("{s:i, s:s, s:I, s:I, s:I}", "v", 1, "event",
                                          "progress", "document_id", (json_int_t)id, "received",
                                          (json_int_t)open->offset, "total",
                                          (json_int_t)open->size)) == 0;
    }
    free(buf);
    return ok;
}

static bool do_complete(fake_chunkd *f, int fd, const json_t *req, fake_doc *open)
{
    int64_t id = json_integer_value(json_object_get(req, "document_id"));
    char sha[65], path[64];

    if (open == NULL || open->id != id)
        return send_error(fd, 409, "upload_not_open", NULL) == 0;
    if (open->offset != open->size)
        return send_error(fd, 409, "incomplete",
                          json_pack("{s:I}", "expected_offset", (json_int_t)open->offset)) == 0;
    if (f->corrupt_bytes && open->size > 0)
        open->data[0] ^= 0xff;
    sha256_hex(open->data, open->size, sha);
    f->completes++;
    if (open->declared_sha[0] != '\0' && strcmp(sha, open->declared_sha) != 0) {
        open->status = DOC_FAILED;
        snprintf(open->failure, sizeof open->failure, "checksum_mismatch");
        return send_error(fd, 422, "checksum_mismatch", NULL) == 0;
    }
    open->status = DOC_COMPLETED;
    if (f->lose_complete_answer) {
        f->lose_complete_answer = false;
        return false;
    }
    snprintf(path, sizeof path, "%02llx/%lld.data", (unsigned long long)((open->id >> 8) & 0xff),
             (long long)open->id);
    return peer_send_json(fd, json_pack("{s:i, s:s, s:I, s:I, s:s, s:s}", "v", 1, "status",
                                        "SUCCESS", "document_id", (json_int_t)open->id,
                                        "filesize", (json_int_t)open->size, "sha256", sha,
                                        "file_path", path)) == 0;
}

static bool do_status(fake_chunkd *f, int fd, const json_t *req)
{
    fake_doc *d = find(f, json_integer_value(json_object_get(req, "document_id")));

    if (d == NULL)
        return send_error(fd, 404, "not_found", NULL) == 0;
    return peer_send_json(fd, json_pack("{s:i, s:s, s:s, s:o}", "v", 1, "status", "ok", "action",
                                        "status", "document", doc_json(d))) == 0;
}

static bool do_list(fake_chunkd *f, int fd)
{
    json_t *arr = json_array();

    for (int i = f->ndocs - 1; i >= 0; i--)
        json_array_append_new(arr, doc_json(&f->docs[i]));
    return peer_send_json(fd, json_pack("{s:i, s:s, s:s, s:o}", "v", 1, "status", "ok", "action",
                                        "list", "documents", arr)) == 0;
}

static bool do_abort(fake_chunkd *f, int fd, const json_t *req)
{
    fake_doc *d = find(f, json_integer_value(json_object_get(req, "document_id")));

    if (d == NULL)
        return send_error(fd, 404, "not_found", NULL) == 0;
    if (d->status != DOC_UPLOADING)
        return send_error(fd, 409, "not_resumable", NULL) == 0;
    d->status = DOC_FAILED;
    snprintf(d->failure, sizeof d->failure, "aborted");
    return peer_send_json(fd, json_pack("{s:i, s:s, s:s, s:I}", "v", 1, "status", "ok", "action",
                                        "abort", "document_id", (json_int_t)d->id)) == 0;
}

static void serve(peer *p, int fd)
{
    fake_chunkd *f = p->ctx;
    fake_doc *open = NULL;
    bool authed = false;
    bool go = true;

    while (go) {
        json_t *req = peer_read_json(fd);
        const char *action;

        if (req == NULL)
            return;
        action = json_string_value(json_object_get(req, "action"));
        if (action == NULL) {
            go = send_error(fd, 400, "invalid_request", NULL) == 0;
        } else if (strcmp(action, "chunk") == 0) {
            go = do_chunk(f, fd, req, open);
        } else if (strcmp(action, "upload_complete") == 0) {
            go = do_complete(f, fd, req, open);
        } else if (!authenticate(f, fd, req, &authed)) {
            go = false;
        } else if (strcmp(action, "upload") == 0) {
            go = do_upload(f, fd, req, &open);
        } else if (strcmp(action, "resume") == 0) {
            go = do_resume(f, fd, req, &open);
        } else if (strcmp(action, "status") == 0) {
            go = do_status(f, fd, req);
        } else if (strcmp(action, "list") == 0) {
            go = do_list(f, fd);
        } else if (strcmp(action, "abort") == 0) {
            go = do_abort(f, fd, req);
        } else {
            go = send_error(fd, 400, "unknown_action", NULL) == 0;
        }
        json_decref(req);
    }
}

int fake_start(fake_chunkd *f)
{
    if (f->chunk_size == 0)
        f->chunk_size = 65536;
    if (f->max_file_size == 0)
        f->max_file_size = 500 * 1024 * 1024;
    /* A restart keeps the port: chunkup's state file names the server by it. */
    if (peer_start_on(&f->p, serve, f, f->port[0] != '\0' ? f->port : "0") < 0)
        return -1;
    memcpy(f->port, f->p.port, sizeof f->port);
    f->running = true;
    return 0;
}

void fake_stop(fake_chunkd *f)
{
    if (f->running)
        peer_stop(&f->p);
    f->running = false;
}

void fake_free(fake_chunkd *f)
{
    fake_stop(f);
    for (int i = 0; i < f->ndocs; i++)
        free(f->docs[i].data);
    f->ndocs = 0;
}
