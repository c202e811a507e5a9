/* What the file system under the storage folder offers for making many
 * files durable at once.
 *
 * One fdatasync per file costs one device cache flush per file (and one
 * more per directory for a new file's name): for thousands of small files
 * a second, the flushes are the limit. syncfs writes every dirty file and
 * all metadata of a file system and flushes once, so a batch of files
 * costs two flushes (see syncer.c). That is only sound where syncfs
 * reports write-back errors and covers what fdatasync would: checked here
 * once at start. It also waits for every other dirty page of the file
 * system, so the syncer asks fs_sync_unwritten_bytes before each batch. */
#ifndef CHUNKD_FS_SYNC_H
#define CHUNKD_FS_SYNC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Whether files in dir may be made durable a batch at a time with syncfs:
 * Linux 5.8 or later (before, syncfs did not return write-back errors) and
 * a local file system whose syncfs writes and flushes every file's data and
 * metadata (ext2/3/4, XFS). *dev is dir's device (a file elsewhere is not
 * batched). false with the reason in why. */
bool fs_sync_batch_supported(const char *dir, dev_t *dev, char *why, size_t whylen);

/* The same checks on their inputs (uname's release, statfs's f_type), for
 * tests. */
bool fs_sync_kernel_ok(const char *release);
bool fs_sync_type_ok(long f_type, const char **name);

/* Page-cache bytes of the whole machine not yet on disk (Dirty plus
 * Writeback in /proc/meminfo): an upper bound on what a syncfs waits for.
 * -1 when it cannot be read. */
int64_t fs_sync_unwritten_bytes(void);
/* The same from the text of /proc/meminfo, for tests. */
int64_t fs_sync_parse_unwritten(const char *meminfo);

#endif
