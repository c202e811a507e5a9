/* chunkup client library: speaks docs/PROTOCOL.md to a chunkd server.
 *
 * Blocking API over one TCP connection, with a per-call timeout. Used by the
 * chunkup command and by the integration tests. Not thread-safe per
 * connection; use one cu_conn per thread.
 *
 * Errors: functions return 0 on success and -1 on failure, filling the
 * caller's cu_error with the server's code/reason/message when the server
 * answered with an error, or with code 0 and a local reason when the
 * failure happened here: "connect", "io", "timeout", "file", "cancelled", "protocol"
 * (the server's answer does not follow the protocol) or "internal" (a
 * request could not be built: out of memory). */
#ifndef CHUNKUP_CLIENT_H
#define CHUNKUP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

typedef struct cu_error {
    int code;              /* server error code (400, 401, ...) or 0 for a local failure */
    char reason[64];       /* server's machine-readable reason, or a local one */
    char message[512];     /* for people */
    int64_t expected_offset; /* from 409 answers, else -1 */
    int64_t retry_after_ms;  /* from 409 locked answers: when to try again, else 0 */
} cu_error;

typedef struct cu_conn cu_conn;

typedef struct cu_auth {
    int64_t user_id;
    const char *credential;
} cu_auth;

/* Connects to host:port (port as a string, so names work too).
 * timeout_ms bounds connect and every later read/write. NULL on failure. */
cu_conn *cu_connect(const char *host, const char *port, int timeout_ms, cu_error *err);
/* Accepts NULL. */
void cu_close(cu_conn *c);

/* Sends one JSON request line and reads one answer line.
 * *reply is a new reference the caller owns (json_decref) on success; on an
 * error answer it is also returned (and err filled) so callers can inspect
 * extra fields; on a local failure *reply is NULL. Borrowing req. */
int cu_request(cu_conn *c, json_t *req, json_t **reply, cu_error *err);

/* Low level, for tests that speak the protocol byte by byte: write raw bytes,
 * and read one answer line as JSON (new reference). */
int cu_send_raw(cu_conn *c, const void *buf, size_t len, cu_error *err);
int cu_read_reply(cu_conn *c, json_t **reply, cu_error *err);

typedef struct cu_upload_info {
    int64_t document_id;
    int64_t offset;        /* where to continue */
    int64_t filesize;
    int64_t chunk_size;
    int64_t max_chunk_size;
} cu_upload_info;

/* upload request; sha256_hex may be NULL. An answer that opens anything
 * but `filesize` bytes from offset 0 is a "protocol" error (and so is a
 * resume answered for another document). */
int cu_start_upload(cu_conn *c, const cu_auth *auth, const char *filename, int64_t filesize,
                    const char *sha256_hex, cu_upload_info *out, cu_error *err);
/* resume request. */
int cu_resume(cu_conn *c, const cu_auth *auth, int64_t document_id, cu_upload_info *out,
              cu_error *err);

/* Called after every progress event; return false to stop the transfer
 * (the call then fails with reason "cancelled"). */
typedef bool (*cu_progress_fn)(void *arg, int64_t received, int64_t total);

/* Streams bytes [info->offset, info->filesize) of the open file descriptor fd
 * as chunks of info->chunk_size, pipelining up to `window` chunks (0: about 2 MiB of them, at least 8) and
 * reading progress events as they come. Updates info->offset to the last
 * acknowledged offset, also on failure, so the caller can resume from it.
 * rate_limit_bps > 0 caps the send rate (tests and demos). */
int cu_send_file(cu_conn *c, int fd, cu_upload_info *info, int window, int64_t rate_limit_bps,
                 cu_progress_fn progress, void *arg, cu_error *err);

typedef struct cu_complete_info {
    int64_t document_id;
    int64_t filesize;
    char sha256[65];
    char file_path[512];
} cu_complete_info;

int cu_complete(cu_conn *c, int64_t document_id, cu_complete_info *out, cu_error *err);

/* status / list / abort; *reply is a new reference on success. */
int cu_status(cu_conn *c, const cu_auth *auth, int64_t document_id, json_t **reply,
              cu_error *err);
int cu_list(cu_conn *c, const cu_auth *auth, int limit, json_t **reply, cu_error *err);
int cu_abort(cu_conn *c, const cu_auth *auth, int64_t document_id, cu_error *err);

/* SHA-256 of a whole file as 64 lowercase hex digits plus NUL. */
int cu_sha256_file(const char *path, char out[65], cu_error *err);
/* The same for an open file, read from its start with pread (the
 * descriptor's offset is left as it was); path names it in errors. */
int cu_sha256_fd(int fd, const char *path, char out[65], cu_error *err);

#endif
