/* The end of an upload that will never complete, shared by the protocol
 * (abort, failed validation), the expiry sweep and chunkctl. */
#ifndef CHUNKD_LIFECYCLE_H
#define CHUNKD_LIFECYCLE_H

#include <stdbool.h>
#include <stdint.h>

#include "chunkd/docstore_mysql.h"
#include "chunkd/state_redis.h"

/* Moves the row from 'uploading' to 'failed' with reason, then ends it in
 * Redis (the lease marked ended, the state gone: rstate_end) and removes
 * the file; a document that someone else completed meanwhile is never
 * touched (*changed false, nothing removed). An UPDATE that failed, perhaps
 * only its answer, is followed by a read of the row: failed now, the
 * clean-up runs all the same (twice is harmless), and *changed says
 * whether for this reason.
 * Returns -1 when MySQL could not be updated (nothing removed;
 * docstore_error says why). Failures to remove are logged: the Redis keys
 * expire (their TTLs), a file stays until an operator removes it. */
int lifecycle_fail_upload(docstore *ds, redis_state *rs, const char *storage_dir, uint64_t doc,
                          const char *reason, bool *changed);

#endif
