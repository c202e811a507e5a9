/* `chunkctl fail ID` and `chunkctl expire ID`: end an upload that is still
 * 'uploading' through lifecycle_fail_upload, the code chunkd's abort and
 * expiry sweep use (row to failed first; file, Redis state and lease
 * removed only when that update changed the row). Refused, with nothing
 * changed, when the document is not uploading. Returns the exit status;
 * a reason in err on failure. */
#ifndef CHUNKCTL_FAIL_H
#define CHUNKCTL_FAIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunkd/config.h"

int ctl_fail(const chunkd_config *cfg, uint64_t id, const char *reason, bool json, char *err,
             size_t errlen);

#endif
