/* Whether the storage file system can sync a batch of files at once, and
 * how much a syncfs would have to write first. */
#include "chunkd/fs_sync.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <unistd.h>

/* From linux/magic.h, spelled out so the build does not need kernel
 * headers. */
#define EXT_SUPER_MAGIC 0xEF53L /* ext2, ext3 and ext4 share it */
#define XFS_SUPER_MAGIC 0x58465342L

bool fs_sync_kernel_ok(const char *release)
{
    int major = 0, minor = 0;
    if (sscanf(release, "%d.%d", &major, &minor) != 2)
        return false;
    return major > 5 || (major == 5 && minor >= 8);
}

bool fs_sync_type_ok(long f_type, const char **name)
{
    /* Others (btrfs, network and overlay file systems, tmpfs) either have
     * nothing to gain or have not been checked to make syncfs cover what
     * fdatasync does: their files keep one fdatasync each. */
    switch (f_type) {
    case EXT_SUPER_MAGIC: *name = "ext4"; return true;
    case XFS_SUPER_MAGIC: *name = "xfs"; return true;
    default: *name = NULL; return false;
    }
}

bool fs_sync_batch_supported(const char *dir, dev_t *dev, char *why, size_t whylen)
{
    struct utsname u;
    if (uname(&u) != 0) {
        snprintf(why, whylen, "uname: %s", strerror(errno));
        return false;
    }
    if (!fs_sync_kernel_ok(u.release)) {
        snprintf(why, whylen, "kernel %s: syncfs reports write-back errors from Linux 5.8 on",
                 u.release);
        return false;
    }
    struct statfs fs;
    struct stat sb;
    if (statfs(dir, &fs) != 0 || stat(dir, &sb) != 0) {
        snprintf(why, whylen, "%s: %s", dir, strerror(errno));
        return false;
    }
    const char *name = NULL;
    if (!fs_sync_type_ok((long)fs.f_type, &name)) {
        snprintf(why, whylen, "file system type 0x%lx is not ext4 or xfs", (long)fs.f_type);
        return false;
    }
    *dev = sb.st_dev;
    snprintf(why, whylen, "%s", name);
    return true;
}

/* The value in kB of a /proc/meminfo line "Name:   123 kB", or -1. */
static int64_t meminfo_kb(const char *text, const char *name)
{
    size_t n = strlen(name);
    for (const char *line = text; line;) {
        if (strncmp(line, name, n) == 0 && line[n] == ':') {
            char *end;
            errno = 0;
            long long kb = strtoll(line + n + 1, &end, 10);
            return errno != 0 || end == line + n + 1 || kb < 0 ? -1 : kb;
        }
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return -1;
}

int64_t fs_sync_unwritten_bytes(void)
{
    int fd = open("/proc/meminfo", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    char buf[4096];
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fd, buf + len, sizeof buf - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
        if (len == sizeof buf - 1)
            break; /* Dirty and Writeback are in the first lines */
    }
    (void)close(fd); /* read-only: nothing is lost if it fails */
    buf[len] = '\0';
    return fs_sync_parse_unwritten(buf);
}

int64_t fs_sync_parse_unwritten(const char *meminfo)
{
    int64_t dirty = meminfo_kb(meminfo, "Dirty"), writeback = meminfo_kb(meminfo, "Writeback");
    if (dirty < 0 || writeback < 0)
        return -1;
    return (dirty + writeback) * 1024;
}
