/* `chunkctl uploads`: every documents row still 'uploading', with its
 * progress from Redis, the node holding its lease and how long it has been
 * idle. Returns the exit status; a reason in err on failure. */
#ifndef CHUNKCTL_UPLOADS_H
#define CHUNKCTL_UPLOADS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunkd/config.h"

/* user_filter 0 lists every user's uploads. */
int ctl_uploads(const chunkd_config *cfg, uint64_t user_filter, bool json, char *err,
                size_t errlen);

#endif
