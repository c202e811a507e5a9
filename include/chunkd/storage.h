/* Where uploaded bytes live on disk.
 *
 * Paths are generated from the document id alone: the user's filename never
 * reaches the file system. A document's bytes stay at one path from the first
 * chunk to completion (MySQL says whether they are complete), so no rename can
 * leave a row and its file disagreeing. */
#ifndef CHUNKD_STORAGE_H
#define CHUNKD_STORAGE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#define STORAGE_REL_PATH_MAX 64
#define STORAGE_FILE_MODE 0640
#define STORAGE_DIR_MODE 0750

/* Result of an I/O step: the errno-derived class decides the answer code. */
typedef enum storage_result {
    STORAGE_OK = 0,
    STORAGE_NO_SPACE,  /* ENOSPC / EDQUOT: 507, keep what is there */
    STORAGE_ERROR,     /* anything else: 500 with the reason */
} storage_result;

/* Checks that root exists (creating it), is a writable directory and is in
 * this build's layout (storage_layout_claim: a new root is marked). */
int storage_init(const char *root, char *err, size_t errlen);

/* Files are spread over 256 bucket directories by document id, 256
 * consecutive ids to a bucket (storage_layout.h: layout 2). Ids are handed
 * out in runs (one group's INSERT), and the files of a run complete
 * together: in one bucket, one directory fsync covers them all. */
static inline unsigned storage_bucket(uint64_t document_id)
{
    return (unsigned)((document_id >> 8) & 0xff);
}

/* "<bucket>/<id>.data", relative to the storage root. */
void storage_rel_path(uint64_t document_id, char out[STORAGE_REL_PATH_MAX]);

/* Creates (or truncates) the document's file, creating its bucket directory.
 * Returns an fd the caller owns, or -1 with errno set. */
int storage_create(const char *root, uint64_t document_id);
/* The same, but a file that is there already is opened as it is. */
int storage_open_or_create(const char *root, uint64_t document_id);

/* Opens an existing document file for writing; -1 with errno (ENOENT when
 * missing). The caller owns the fd. */
int storage_open(const char *root, uint64_t document_id);

/* Writes all of buf at off; on a short write of a full disk the bytes that
 * did land are the caller's to cut off. */
storage_result storage_pwrite_all(int fd, const void *buf, size_t len, int64_t off);

/* Flushes file data and, for a new file, its directory entry. */
storage_result storage_sync(int fd);
/* Starts writing fd's dirty pages back without waiting. Syncing many files
 * at once, starting them all first lets their fdatasyncs share journal
 * commits and device flushes. Best effort: the fdatasync that follows
 * reports any error. */
void storage_start_writeback(int fd);
/* The same for len bytes at off. */
void storage_start_writeback_range(int fd, int64_t off, int64_t len);
int storage_sync_dir(const char *root, uint64_t document_id);
/* fsync of the directory at path dir; -1 with errno. */
int storage_sync_dir_path(const char *dir);
/* The directory that holds the document's file, for an fsync elsewhere
 * (syncer.h); -1 with errno. */
int storage_open_dir(const char *root, uint64_t document_id);

/* Removes the document's file: 0 when it is gone (or was not there), -1
 * with errno. */
int storage_remove(const char *root, uint64_t document_id);
/* The same, telling apart: 1 removed, 0 not there, -1 with errno. */
int storage_remove_existing(const char *root, uint64_t document_id);

/* Fencing: replaces the document's file by a fresh copy of its first len
 * bytes (from old_fd), synced and renamed into place. Anyone still holding
 * a descriptor of the old file writes to an inode nobody reads any more.
 * The copy is an unnamed file (O_TMPFILE) until it is about to take the
 * path, then `<file>.fence.<pid>.<n>` for the rename; on a filesystem
 * without unnamed files it has that name from the start. Copies never
 * share a file. may_rename is asked right before the rename, after the
 * slow part: non-zero stops there (the copy is removed).
 * Returns the new file's fd (the caller owns it and still owns old_fd), or
 * -1 with errno: nothing changed, or (the bucket's sync failed) the copy
 * took the path but its name may not be durable. */
int storage_replace_with_copy(const char *root, uint64_t document_id, int old_fd, int64_t len,
                              int (*may_rename)(void *arg), void *arg);

/* Whether the open file whose fstat is open_file is still the document's
 * file: 1 yes, 0 another file took its place (fencing, see
 * storage_replace_with_copy), -1 no file there. */
int storage_is_current(const char *root, uint64_t document_id, const struct stat *open_file);

/* Bytes an unprivileged writer may still use on the volume of root. */
int storage_available(const char *root, int64_t *bytes);

/* Size of the document's file; -1 with errno when it cannot be read. */
int64_t storage_file_size(const char *root, uint64_t document_id);
/* Last modification of the document's file in Unix ms; -1 with errno. */
int64_t storage_file_mtime_ms(const char *root, uint64_t document_id);

/* Reads the first len bytes of fd and returns their SHA-256 in hex. */
int storage_sha256(int fd, int64_t len, char out[65]);

storage_result storage_classify_errno(int e);

#endif
