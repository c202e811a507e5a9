/* Reads /proc/<pid>/status and /proc/<pid>/stat; see lg_proc.h. */
#include "lg_proc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int read_file(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, size - 1, f);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad)
        return -1;
    buf[n] = '\0';
    return 0;
}

/* The number after "Key:" in a status file, or -1. */
static int64_t status_field(const char *buf, const char *key)
{
    size_t klen = strlen(key);
    for (const char *p = buf; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, key, klen) == 0 && p[klen] == ':') {
            char *end = NULL;
            long long v = strtoll(p + klen + 1, &end, 10);
            return end == p + klen + 1 ? -1 : (int64_t)v;
        }
    }
    return -1;
}

int lg_proc_read(int pid, lg_proc_sample *out)
{
    char path[64], buf[8192];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    if (read_file(path, buf, sizeof buf) != 0)
        return -1;
    out->rss_kb = status_field(buf, "VmRSS");
    out->hwm_kb = status_field(buf, "VmHWM");
    out->threads = status_field(buf, "Threads");
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    if (read_file(path, buf, sizeof buf) != 0)
        return -1;
    /* The command name may hold spaces and parentheses: fields are counted
     * from the last ')'. utime and stime are fields 14 and 15. */
    const char *p = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
                     &st) != 2)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    out->cpu_s = (double)(ut + st) / (double)(hz > 0 ? hz : 100);
    return 0;
}
