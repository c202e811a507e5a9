/* Whether one document's four records agree: its MySQL row, its Redis
 * resume state, its lease and its file (docs/DURABILITY.md says what each
 * holds). Pure: the facts are gathered by ctl_show. */
#ifndef CHUNKCTL_VERDICT_H
#define CHUNKCTL_VERDICT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include <jansson.h>

#include "chunkd/docstore_mysql.h"
#include "chunkd/state_redis.h"
#include "chunkd/storage.h"
#include "ctl_redis.h"

typedef struct doc_facts {
    uint64_t id;
    bool row_found;
    doc_row row;
    bool redis_key;     /* the upload hash exists (any fields) */
    bool state_found;   /* ... and rstate_get could read it */
    upload_state st;
    int64_t redis_ttl_s; /* -2 no key, -1 no TTL */
    ctl_lease lease;
    char rel_path[STORAGE_REL_PATH_MAX]; /* where the server keeps the bytes */
    bool file_exists;
    int stat_errno;     /* why stat failed, when not ENOENT */
    struct stat sb;
    bool sha_done;      /* SHA-256 computed (completed rows only) */
    char sha256[65];
    int sha_errno;      /* why it could not be, when !sha_done and it was tried */
} doc_facts;

/* Appends a sentence (JSON string) to problems for every disagreement and
 * to notes for states that are normal but worth knowing. 0, or -1 when out
 * of memory. */
int verdict_check(const doc_facts *f, json_t *problems, json_t *notes);

#endif
