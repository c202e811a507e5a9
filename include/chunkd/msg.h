/* Control messages: JSON text to typed requests, and answers back to text.
 *
 * Parsing checks shape and types (and the filename's form); rules that need
 * configuration or state (size limits, offsets, ownership) live in upload.c. */
#ifndef CHUNKD_MSG_H
#define CHUNKD_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define MSG_FILENAME_MAX 255
#define MSG_CREDENTIAL_MAX 128
#define MSG_PROTOCOL_VERSION 1

typedef enum msg_action {
    ACT_UPLOAD,
    ACT_CHUNK,
    ACT_COMPLETE,
    ACT_RESUME,
    ACT_STATUS,
    ACT_LIST,
    ACT_ABORT,
} msg_action;

typedef struct msg_request {
    msg_action action;
    int64_t document_id;   /* -1 when absent */
    int64_t offset;        /* -1 when absent */
    int64_t length;        /* chunk only */
    int64_t filesize;
    int64_t user_id;       /* 0 when absent */
    int64_t limit;         /* list; 0 when absent */
    bool has_credential;
    bool has_sha256;
    char filename[MSG_FILENAME_MAX + 1];
    char credential[MSG_CREDENTIAL_MAX + 1];
    char sha256[65];
} msg_request;

/* An error answer. `reason` is one of the stable words of docs/PROTOCOL.md. */
typedef struct msg_error {
    int code;
    const char *reason;
    char message[256];
    int64_t expected_offset;   /* >= 0: sent as expected_offset */
    int64_t retry_after_ms;    /* > 0: sent as retry_after_ms */
    const char *document_status; /* non-NULL: sent as document_status */
    bool close;                /* the connection closes after the answer */
} msg_error;

/* Fills *err; returns -1 so callers can `return msg_fail(...)`. */
int msg_fail(msg_error *err, int code, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Parses one control line; an upload's filesize is checked against
 * max_file_size here so that errors come in the documented order. On
 * success returns 0. On failure returns -1 with
 * *err filled; for a chunk whose length was readable, req->length is set so
 * the caller can skip the body (err->close is false then). */
int msg_parse(const char *line, size_t len, int64_t max_file_size, msg_request *req,
              msg_error *err);

/* True when name is acceptable as a document's filename (see PROTOCOL.md). */
bool msg_filename_valid(const char *name, size_t len);

/* Serialises an answer as one line with '\n'. The answer gains "v".
 * Returns a malloc'd string the caller frees, or NULL on allocation failure. */
char *msg_dump_line(json_t *answer, size_t *len);

/* Builds an error answer object (new reference). */
json_t *msg_error_json(const msg_error *err);

/* Formats a progress event into buf; returns its length or -1 if too small. */
int msg_progress_line(char *buf, size_t size, int64_t document_id, int64_t received,
                      int64_t total);

const char *msg_action_name(msg_action a);

#endif
