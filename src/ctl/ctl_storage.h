/* `chunkctl storage-migrate`: moves a storage root written by an older
 * chunkd to the current layout (storage_layout.h), with the paths MySQL
 * and Redis keep of its files. */
#ifndef CHUNKCTL_STORAGE_H
#define CHUNKCTL_STORAGE_H

#include <stdbool.h>
#include <stddef.h>

#include "chunkd/config.h"

int ctl_storage_migrate(const chunkd_config *cfg, bool json, char *err, size_t errlen);

#endif
