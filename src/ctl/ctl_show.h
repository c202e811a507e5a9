/* `chunkctl show ID`: one document's MySQL row, Redis state, lease and
 * file, then a verdict. Exit status 0 when they agree, 1 when they do not
 * or when they could not be read (reason in err). */
#ifndef CHUNKCTL_SHOW_H
#define CHUNKCTL_SHOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunkd/config.h"

int ctl_show(const chunkd_config *cfg, uint64_t id, bool json, char *err, size_t errlen);

#endif
