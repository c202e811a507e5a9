/* Users and documents in MySQL/MariaDB, through prepared statements only.
 * One docstore per worker thread (a MYSQL handle is single-threaded). */
#ifndef CHUNKD_DOCSTORE_MYSQL_H
#define CHUNKD_DOCSTORE_MYSQL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunkd/config.h"
#include "chunkd/metrics.h"
#include "chunkd/msg.h"

typedef struct user_row {
    uint64_t id;
    char credential_hash[65];
    bool disabled;
    int64_t uploading; /* its rows in 'uploading'; -1 when not asked */
} user_row;

#define DOC_TIME_MAX 32

typedef struct doc_row {
    uint64_t id;
    uint64_t user_id;
    int64_t filesize;
    char filename[4 * MSG_FILENAME_MAX + 1]; /* utf8mb4: up to 4 bytes a character */
    char declared_sha256[65]; /* empty when NULL */
    char sha256[65];          /* empty when NULL */
    char status[16];          /* uploading, completed, failed */
    char file_path[513];      /* empty when NULL */
    char failure_reason[256]; /* empty when NULL */
    char created_at[DOC_TIME_MAX];   /* ISO 8601 UTC, e.g. 2026-11-30T10:00:00.123Z */
    char updated_at[DOC_TIME_MAX];
    char completed_at[DOC_TIME_MAX]; /* empty when NULL */
} doc_row;

typedef struct docstore docstore;

/* The most rows one bulk call takes (docstore_insert_documents,
 * docstore_complete_documents). */
#define DOCSTORE_BULK_MAX 128

/* Connects lazily; the config must outlive the handle. NULL when out of memory. */
docstore *docstore_new(const chunkd_config *cfg);
void docstore_free(docstore *ds); /* accepts NULL */
/* Counts errors and times statements into m (NULL: not counted). */
void docstore_set_metrics(docstore *ds, metrics *m);
/* 0 when the database answers. */
int docstore_ping(docstore *ds);

/* All calls: 0 on success, -1 when the database could not be reached or
 * failed (docstore_error() says why; the handle reconnects next time). */
int docstore_get_user(docstore *ds, uint64_t user_id, user_row *out, bool *found);
/* The same, with out->uploading as docstore_count_uploading would give it:
 * one statement where a new connection's upload needs both. */
int docstore_get_user_counting(docstore *ds, uint64_t user_id, user_row *out, bool *found);
/* A new 'uploading' row. */
typedef struct doc_insert {
    uint64_t user_id;
    const char *filename;
    int64_t filesize;
    const char *declared_sha256; /* NULL: none declared */
} doc_insert;
/* Inserts n rows (at most DOCSTORE_BULK_MAX), all or none, outside any
 * transaction, and gives each one's id in ids[i]. One statement and one
 * round trip where the server numbers a multi-row INSERT's rows
 * consecutively (innodb_autoinc_lock_mode 0 or 1, the default); otherwise a
 * statement a row in one transaction. */
int docstore_insert_documents(docstore *ds, size_t n, const doc_insert *rows, uint64_t *ids);
int docstore_get_document(docstore *ds, uint64_t document_id, doc_row *out, bool *found);
/* Moves n 'uploading' rows (at most DOCSTORE_BULK_MAX) to 'completed' with
 * their hashes and paths: one statement, one round trip and one commit.
 * changed[i] is true when row i is completed with shas[i] at paths[i] now,
 * and false when it had ended otherwise (someone else failed or aborted
 * it). A row completed the same way before (an earlier attempt whose
 * answer was lost) counts as changed, so a retry after a failure is safe;
 * only when some row was not uploading is each row read back. */
int docstore_complete_documents(docstore *ds, size_t n, const uint64_t *ids,
                                const char *const *shas, const char *const *paths,
                                bool *changed);
/* Moves an 'uploading' row to 'failed' with a reason; *changed as above. */
int docstore_fail_document(docstore *ds, uint64_t document_id, const char *reason,
                           bool *changed);
/* Calls fn for each of the user's documents, newest first, at most limit. */
int docstore_list_documents(docstore *ds, uint64_t user_id, int64_t limit,
                            int (*fn)(void *arg, const doc_row *row), void *arg);
/* Ids of uploads still 'uploading' that were created more than
 * older_than_s ago, above after_id, lowest first, at most max (ids[0..*n)):
 * candidates for the expiry sweep, a page at a time. */
int docstore_list_stale_uploads(docstore *ds, int64_t older_than_s, uint64_t after_id,
                                uint64_t *ids, size_t max, size_t *n);
/* Ids of documents made 'failed' in the last within_s seconds, above
 * after_id, lowest first, at most max: where the sweep looks for files
 * that a failure could not remove (docs/OPERATIONS.md, leftovers). */
int docstore_list_recently_failed(docstore *ds, int64_t within_s, uint64_t after_id,
                                  uint64_t *ids, size_t max, size_t *n);
/* How many of the user's documents are 'uploading'. */
int docstore_count_uploading(docstore *ds, uint64_t user_id, int64_t *count);
/* The reason of the last call that failed; a call that succeeds leaves it. */
const char *docstore_error(const docstore *ds);
/* Statements prepared on the connection now: at most ST_COUNT + 7 + 16
 * whatever the group sizes (docstore_mysql.c, rows_stmt). */
size_t docstore_statements(const docstore *ds);

#endif
