#include "chunkd/lifecycle.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "chunkd/log.h"
#include "chunkd/storage.h"

int lifecycle_fail_upload(docstore *ds, redis_state *rs, const char *storage_dir, uint64_t doc,
                          const char *reason, bool *changed)
{
    *changed = false;
    if (docstore_fail_document(ds, doc, reason, changed) != 0)
        return -1;
    if (!*changed)
        return 0;
    /* Redis before the file, in one step: the lease becomes the ended
     * marker and the state goes. A writer busy with the upload right now (a
     * resume past its read of the row, a new upload between its row and
     * its open) writes the state only while it holds the lease (rstate_put,
     * open_lua): if its write came first, the file it made is older than
     * the removal below; if after, it is refused, and the writer, finding
     * the row failed, removes what it made (handle_resume, open_group). */
    if (rstate_end(rs, doc) != 0)
        log_warn("event=redis_end_failed doc=%" PRIu64 " error=\"%s\"", doc, rstate_error(rs));
    if (storage_remove(storage_dir, doc) != 0)
        log_error("event=remove_failed doc=%" PRIu64 " error=\"%s\"", doc, strerror(errno));
    log_info("event=upload_failed doc=%" PRIu64 " reason=%s", doc, reason);
    return 0;
}
