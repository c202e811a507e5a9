/* Storage root maintenance from chunkctl. */
#include "ctl_storage.h"

#include <stdlib.h>

#include "chunkd/storage_layout.h"
#include "ctl_out.h"

int ctl_storage_migrate(const chunkd_config *cfg, bool json, char *err, size_t errlen)
{
    storage_migration m;
    if (storage_layout_migrate(cfg->storage_dir, &m, err, errlen) != 0)
        return EXIT_FAILURE;
    if (json)
        return out_json(json_pack("{s:s, s:i, s:I, s:I, s:I}", "storage_dir", cfg->storage_dir,
                                  "layout", STORAGE_LAYOUT_VERSION, "moved",
                                  (json_int_t)m.moved, "in_place", (json_int_t)m.in_place,
                                  "other", (json_int_t)m.other),
                        err, errlen);
    out_printf("%s: layout %d; %ld files moved, %ld already in place, %ld other entries "
               "left as they were\n",
               cfg->storage_dir, STORAGE_LAYOUT_VERSION, m.moved, m.in_place, m.other);
    return out_finish(err, errlen) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
