/* chunkup's local record of unfinished uploads, so a later run can resume
 * the same document instead of starting over (format: docs/CLIENT.md).
 *
 * Every change is load → modify → atomic save under an exclusive lock on
 * PATH.lock, so concurrent chunkup runs do not lose each other's entries. */
#ifndef CHUNKUP_STATE_H
#define CHUNKUP_STATE_H

#include <stddef.h>
#include <stdint.h>

/* What makes a local file "the same upload": all fields must match. */
typedef struct cu_state_key {
    const char *server;    /* host:port as given to chunkup */
    int64_t user_id;
    const char *path;      /* absolute */
    int64_t size;
    int64_t mtime_sec;
    int64_t mtime_nsec;
    const char *sha256;    /* 64 lowercase hex digits */
} cu_state_key;

typedef struct cu_state cu_state;

/* $XDG_STATE_HOME/chunkup/uploads_state.json, else
 * $HOME/.local/state/chunkup/uploads_state.json. -1 when neither variable
 * gives an absolute directory or the path does not fit. */
int cu_state_default_path(char *buf, size_t cap);

/* Creates the directory (0700) as needed, takes the lock and reads the file;
 * a missing file is an empty state. A file that is not a valid state is
 * renamed to PATH.corrupt (or PATH.corrupt.N) and an empty state returned,
 * with msg saying so; otherwise msg is "" on success. NULL with msg filled on
 * failure. The lock is held until cu_state_close. */
cu_state *cu_state_open(const char *path, char *msg, size_t cap);

/* Releases the lock without saving. Accepts NULL. */
void cu_state_close(cu_state *st);

/* The document_id of the entry matching every field of key, or 0. */
int64_t cu_state_find(const cu_state *st, const cu_state_key *key);

/* Records document_id for key, replacing any entry for the same server,
 * user and path (an older version of the file is no longer resumable). */
int cu_state_put(cu_state *st, const cu_state_key *key, int64_t document_id, char *msg,
                 size_t cap);

/* Removes the entries for key's server, user and path; returns how many. */
int cu_state_forget(cu_state *st, const cu_state_key *key);

/* Removes the entries naming document_id on that server for that user. */
int cu_state_forget_document(cu_state *st, const char *server, int64_t user_id,
                             int64_t document_id);

size_t cu_state_count(const cu_state *st);

/* Replaces the file atomically: a temporary file (0600) in the same
 * directory, fsync, rename over PATH, fsync of the directory. */
int cu_state_save(cu_state *st, char *msg, size_t cap);

#endif
