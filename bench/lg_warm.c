/* Warming memory before a run (lg_warm.h). */
#include "lg_warm.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int lg_warm_memory(int64_t mib)
{
    if (mib <= 0)
        return 0;
    size_t len = (size_t)mib << 20;
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0)
        page = 4096;
    volatile char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "loadgen: warming %lld MiB: mmap: %s\n", (long long)mib, strerror(errno));
        return -1;
    }
    for (size_t off = 0; off < len; off += (size_t)page)
        p[off] = 1;
    if (munmap((void *)p, len) != 0) {
        fprintf(stderr, "loadgen: warming: munmap: %s\n", strerror(errno));
        return -1;
    }
    return 0;
}
