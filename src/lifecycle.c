#include "chunkd/lifecycle.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "chunkd/log.h"
#include "chunkd/storage.h"

/* After a failed UPDATE: its commit may have happened with only the answer
 * lost (the connection dropped after it, CR_SERVER_LOST), and then nobody
 * would remove what belonged to the upload, since no sweep lists a failed
 * row. So the row is read again (on a new connection): 1 when it is failed
 * now, whoever failed it, and the clean-up is due (*changed when for the
 * same reason: the caller answers as if this call had, which is what the
 * row says: a caller that failed it for the same reason meanwhile counts
 * it too); 0 when someone else ended it otherwise (completed); -1 when it
 * is still uploading (docstore_error: the UPDATE's) or cannot be read (the
 * read's: the first thing to fix). A statement cannot commit after being
 * given up on while waiting for a row lock: the server's lock wait is set
 * shorter than ours (docstore_mysql.c, open_connection). */
static int read_back(docstore *ds, uint64_t doc, const char *reason, bool *changed)
{
    char why[256];
    snprintf(why, sizeof why, "%s", docstore_error(ds));
    doc_row row;
    bool found = false;
    if (docstore_get_document(ds, doc, &row, &found) != 0) {
        log_warn("event=fail_not_read_back doc=%" PRIu64 " update_error=\"%s\" error=\"%s\"", doc,
                 why, docstore_error(ds));
        return -1;
    }
    if (!found || strcmp(row.status, "uploading") == 0)
        return -1; /* docstore_error: still the UPDATE's */
    if (strcmp(row.status, "failed") != 0)
        return 0;
    *changed = strcmp(row.failure_reason, reason) == 0;
    log_warn("event=fail_read_back doc=%" PRIu64 " reason=\"%s\" effect=\"the row is failed: "
             "cleaned up\" update_error=\"%s\"",
             doc, row.failure_reason, why);
    return 1;
}

int lifecycle_fail_upload(docstore *ds, redis_state *rs, const char *storage_dir, uint64_t doc,
                          const char *reason, bool *changed)
{
    *changed = false;
    if (docstore_fail_document(ds, doc, reason, changed) != 0) {
        int seen = read_back(ds, doc, reason, changed);
        if (seen <= 0)
            return seen;
    } else if (!*changed) {
        return 0;
    }
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
