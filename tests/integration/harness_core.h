/* For the integration tests that link the server's code (chunkd_core) and
 * drive its modules without a server around them: the harness started
 * and a configuration as chunkd would load it, from the test stack's
 * environment. Header-only: each such program includes it once. */
#ifndef CHUNKD_HARNESS_CORE_H
#define CHUNKD_HARNESS_CORE_H

#include "harness.h"

#include <stdio.h>

#include "chunkd/config.h"

/* it_init(prog), a scratch folder (its storage_dir) in workdir, and cfg
 * loaded; 0, or -1 with why on stderr. */
static inline int it_core_setup(const char *prog, chunkd_config *cfg, char *workdir)
{
    if (it_init(prog) != 0 || it_tmpdir("core", workdir, IT_DIR_MAX) != 0)
        return -1;
    config_defaults(cfg);
    char *argv[] = {(char *)prog, "--storage-dir", workdir, NULL};
    char err[256];
    if (config_load(cfg, 3, argv, err, sizeof err) != 0) {
        fprintf(stderr, "it: config: %s\n", err);
        return -1;
    }
    return 0;
}

#endif
