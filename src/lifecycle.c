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
    /* The lease before the file and the state. A writer reopening the
     * upload right now (a resume past its read of the row) may create the
     * file anew, and writes the state only while it holds the lease
     * (rstate_put): if that write comes before the break, the file it made
     * is older than the removal below, and the state goes with the DEL;
     * if after, the write is refused and the writer, finding the row
     * failed, removes what it made (handle_resume). */
    bool redis_ok = rstate_lease_break(rs, doc) == 0;
    if (storage_remove(storage_dir, doc) != 0)
        log_error("event=remove_failed doc=%" PRIu64 " error=\"%s\"", doc, strerror(errno));
    if (!redis_ok || rstate_del(rs, doc) != 0)
        log_warn("event=redis_del_failed doc=%" PRIu64 " error=\"%s\"", doc, rstate_error(rs));
    log_info("event=upload_failed doc=%" PRIu64 " reason=%s", doc, reason);
    return 0;
}
