/* Warm memory for a measured run.
 *
 * On this benchmark's virtual machines the guest reports free memory to the
 * host (virtio-balloon free page reporting), and the first write to such a
 * page afterwards costs a fault in the host too: 3-4 s per GiB here,
 * against 7 ms for a second pass over the same pages. A run that grows the
 * page cache by hundreds of MiB pays that wherever it allocates (for a
 * server, inside its pwrite), by an amount that depends on what ran before
 * it. The load generator therefore touches as much memory as the run will
 * write and gives it back just before it starts the clock, so every system
 * starts from the same warm pages. */
#ifndef BENCH_LG_WARM_H
#define BENCH_LG_WARM_H

#include <stdint.h>

/* Writes one byte per page of mib MiB of fresh memory, then unmaps it.
 * 0, or -1 with a message on stderr. */
int lg_warm_memory(int64_t mib);

#endif
