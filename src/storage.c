/* Document files on disk. */
#include "chunkd/storage.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "chunkd/log.h"
#include "chunkd/storage_layout.h"
#include "chunkd/util.h"

static int mkdir_p(const char *path, mode_t mode)
{
    char buf[PATH_MAX];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(buf, path, n + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, mode) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(buf, mode) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

/* Set by storage_init, before any thread runs: whether the process umask
 * leaves STORAGE_FILE_MODE as it is, so new files need no fchmod. */
static bool umask_keeps_mode;

int storage_init(const char *root, char *err, size_t errlen)
{
    mode_t mask = umask(0); /* the only way to read it: set it back at once */
    umask(mask);
    umask_keeps_mode = (STORAGE_FILE_MODE & ~mask) == STORAGE_FILE_MODE;
    if (mkdir_p(root, STORAGE_DIR_MODE) != 0) {
        snprintf(err, errlen, "storage_dir %s: %s", root, strerror(errno));
        return -1;
    }
    struct stat st;
    if (stat(root, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "storage_dir %s is not a directory", root);
        return -1;
    }
    if (access(root, W_OK | X_OK) != 0) {
        snprintf(err, errlen, "storage_dir %s: %s", root, strerror(errno));
        return -1;
    }
    return storage_layout_claim(root, err, errlen);
}

void storage_rel_path(uint64_t document_id, char out[STORAGE_REL_PATH_MAX])
{
    /* 256 buckets keep directories small without a deep tree. */
    snprintf(out, STORAGE_REL_PATH_MAX, "%02x/%" PRIu64 ".data", storage_bucket(document_id),
             document_id);
}

static int full_path(const char *root, uint64_t document_id, char *out, size_t size)
{
    char rel[STORAGE_REL_PATH_MAX];
    storage_rel_path(document_id, rel);
    int n = snprintf(out, size, "%s/%s", root, rel);
    if (n < 0 || (size_t)n >= size) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}

static int bucket_path(const char *root, uint64_t document_id, char *out, size_t size)
{
    int n = snprintf(out, size, "%s/%02x", root, storage_bucket(document_id));
    if (n < 0 || (size_t)n >= size) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}

int storage_sync_dir_path(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

static int create_with(const char *root, uint64_t document_id, int how)
{
    char dir[PATH_MAX], path[PATH_MAX];
    if (bucket_path(root, document_id, dir, sizeof dir) != 0 ||
        full_path(root, document_id, path, sizeof path) != 0)
        return -1;
    /* The bucket usually exists: make it only when the open says so. */
    int fd = open(path, O_RDWR | O_CREAT | how | O_CLOEXEC, STORAGE_FILE_MODE);
    if (fd < 0 && errno == ENOENT) {
        /* A new bucket's own name must be durable before any file in it
         * is called complete (the completion syncs only the bucket): sync
         * the root when the bucket is made, also when another worker made
         * it a moment ago and may still be syncing. */
        if ((mkdir(dir, STORAGE_DIR_MODE) != 0 && errno != EEXIST) ||
            storage_sync_dir_path(root) != 0)
            return -1;
        fd = open(path, O_RDWR | O_CREAT | how | O_CLOEXEC, STORAGE_FILE_MODE);
    }
    if (fd < 0)
        return -1;
    /* The umask may have narrowed the mode; the documented mode is 0640. */
    if (!umask_keeps_mode && fchmod(fd, STORAGE_FILE_MODE) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

int storage_create(const char *root, uint64_t document_id)
{
    return create_with(root, document_id, O_TRUNC);
}

int storage_open_or_create(const char *root, uint64_t document_id)
{
    return create_with(root, document_id, 0);
}

int storage_open(const char *root, uint64_t document_id)
{
    char path[PATH_MAX];
    if (full_path(root, document_id, path, sizeof path) != 0)
        return -1;
    return open(path, O_RDWR | O_CLOEXEC);
}

storage_result storage_classify_errno(int e)
{
    return (e == ENOSPC || e == EDQUOT) ? STORAGE_NO_SPACE : STORAGE_ERROR;
}

storage_result storage_pwrite_all(int fd, const void *buf, size_t len, int64_t off)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return storage_classify_errno(errno);
        }
        if (n == 0) /* no progress and no error: treat as a full disk */
            return STORAGE_NO_SPACE;
        p += n;
        len -= (size_t)n;
        off += n;
    }
    return STORAGE_OK;
}

storage_result storage_sync(int fd)
{
    if (fdatasync(fd) != 0)
        return storage_classify_errno(errno);
    return STORAGE_OK;
}

void storage_start_writeback_range(int fd, int64_t off, int64_t len)
{
    if (sync_file_range(fd, (off_t)off, (off_t)len, SYNC_FILE_RANGE_WRITE) != 0)
        log_debug("event=writeback_not_started error=\"%s\"", strerror(errno));
}

void storage_start_writeback(int fd)
{
    storage_start_writeback_range(fd, 0, 0); /* length 0: to the end of the file */
}

int storage_open_dir(const char *root, uint64_t document_id)
{
    char dir[PATH_MAX];
    if (bucket_path(root, document_id, dir, sizeof dir) != 0)
        return -1;
    return open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

int storage_sync_dir(const char *root, uint64_t document_id)
{
    char dir[PATH_MAX];
    if (bucket_path(root, document_id, dir, sizeof dir) != 0)
        return -1;
    return storage_sync_dir_path(dir);
}

static int copy_range(int in, int out, int64_t len)
{
    loff_t off_in = 0, off_out = 0;
    while (off_in < len) {
        ssize_t n = copy_file_range(in, &off_in, out, &off_out, (size_t)(len - off_in), 0);
        if (n > 0)
            continue;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno != EXDEV && errno != ENOSYS && errno != EINVAL && errno != EOPNOTSUPP)
            return -1;
        break; /* not supported here (or no progress): copy by hand */
    }
    static _Thread_local char buf[1 << 17];
    while (off_in < len) {
        size_t want = (size_t)(len - off_in < (int64_t)sizeof buf ? len - off_in : (int64_t)sizeof buf);
        ssize_t n = pread(in, buf, want, off_in);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO; /* the file is shorter than len */
            return -1;
        }
        if (storage_pwrite_all(out, buf, (size_t)n, off_out) != STORAGE_OK)
            return -1;
        off_in += n;
        off_out += n;
    }
    return 0;
}

/* A name for a copy on its way to the path: the pid and a count keep
 * this host's copies apart; a host sharing the directory may meet one, so
 * the name is taken exclusively and the next one tried on EEXIST. */
static int next_copy_name(const char *path, char *out, size_t size)
{
    static _Atomic unsigned long copies;
    unsigned long n = atomic_fetch_add(&copies, 1);
    int k = snprintf(out, size, "%s.fence.%ld.%lu", path, (long)getpid(), n);
    if (k < 0 || (size_t)k >= size) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}

enum { COPY_NAME_TRIES = 16 };

/* Tries fresh copy names next to path (into tmp) until take() gets one
 * (take fails with EEXIST when the name is another's): take's result, or
 * -1 with errno and tmp emptied. */
static int claim_copy_name(const char *path, char *tmp, size_t size,
                           int (*take)(const char *name, void *arg), void *arg)
{
    for (int i = 0; i < COPY_NAME_TRIES; i++) {
        if (next_copy_name(path, tmp, size) != 0)
            break;
        int r = take(tmp, arg);
        if (r >= 0)
            return r;
        if (errno != EEXIST)
            break;
    }
    int e = errno;
    tmp[0] = '\0';
    errno = e;
    return -1;
}

/* Names the unnamed file *(int *)fd_arg: linkat through /proc, which
 * needs no privilege (open(2), O_TMPFILE). */
static int link_unnamed(const char *name, void *fd_arg)
{
    char proc[48];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", *(const int *)fd_arg);
    return linkat(AT_FDCWD, proc, AT_FDCWD, name, AT_SYMLINK_FOLLOW);
}

/* A named copy, where the filesystem has no unnamed files (NFS), made
 * exclusively so that the name is this copy's alone; its fd. */
static int create_named(const char *name, void *unused)
{
    (void)unused;
    int fd = open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, STORAGE_FILE_MODE);
    if (fd < 0 && (errno == EPERM || errno == EACCES)) {
        /* An open refused after the create (a security module, a
         * scanner's fanotify verdict) leaves the name behind. */
        int e = errno;
        unlink(name);
        errno = e;
    }
    return fd;
}

int storage_replace_with_copy(const char *root, uint64_t document_id, int old_fd, int64_t len,
                              int (*may_rename)(void *arg), void *arg)
{
    char dir[PATH_MAX], path[PATH_MAX], tmp[PATH_MAX + 48] = "";
    if (bucket_path(root, document_id, dir, sizeof dir) != 0 ||
        full_path(root, document_id, path, sizeof path) != 0)
        return -1;
    /* Unnamed until it is whole and may take the path: a copy that is
     * given up, or a crash in the middle, leaves nothing behind, and two
     * copies of one document at once (a resume slower than its lease, and
     * the one that took the lease over) never share a file. */
    bool unnamed = true;
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, STORAGE_FILE_MODE);
    if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR)) {
        unnamed = false;
        fd = claim_copy_name(path, tmp, sizeof tmp, create_named, NULL);
    }
    if (fd < 0)
        return -1;
    if ((!umask_keeps_mode && fchmod(fd, STORAGE_FILE_MODE) != 0) ||
        copy_range(old_fd, fd, len) != 0 || fdatasync(fd) != 0 ||
        (may_rename(arg) != 0 && (errno = ECANCELED)) ||
        (unnamed && claim_copy_name(path, tmp, sizeof tmp, link_unnamed, &fd) != 0) ||
        rename(tmp, path) != 0) {
        int e = errno;
        close(fd);
        if (tmp[0])
            unlink(tmp);
        errno = e;
        return -1;
    }
    /* The copy is the document's file now, but its name may not survive a
     * crash: the caller answers an error, and the next resume finds
     * whichever file the path holds then. */
    if (storage_sync_dir_path(dir) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

int storage_remove_existing(const char *root, uint64_t document_id)
{
    char path[PATH_MAX];
    if (full_path(root, document_id, path, sizeof path) != 0)
        return -1;
    if (unlink(path) == 0)
        return 1;
    return errno == ENOENT ? 0 : -1;
}

int storage_remove(const char *root, uint64_t document_id)
{
    return storage_remove_existing(root, document_id) < 0 ? -1 : 0;
}

int storage_is_current(const char *root, uint64_t document_id, const struct stat *open_file)
{
    char path[PATH_MAX];
    struct stat at_path;
    if (full_path(root, document_id, path, sizeof path) != 0 || stat(path, &at_path) != 0)
        return -1;
    return at_path.st_dev == open_file->st_dev && at_path.st_ino == open_file->st_ino;
}

int storage_available(const char *root, int64_t *bytes)
{
    struct statvfs sv;
    if (statvfs(root, &sv) != 0)
        return -1;
    *bytes = (int64_t)sv.f_bavail * (int64_t)sv.f_frsize;
    return 0;
}

int64_t storage_file_size(const char *root, uint64_t document_id)
{
    char path[PATH_MAX];
    struct stat st;
    if (full_path(root, document_id, path, sizeof path) != 0 || stat(path, &st) != 0)
        return -1;
    return (int64_t)st.st_size;
}

int64_t storage_file_mtime_ms(const char *root, uint64_t document_id)
{
    char path[PATH_MAX];
    struct stat st;
    if (full_path(root, document_id, path, sizeof path) != 0 || stat(path, &st) != 0)
        return -1;
    return (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
}

int storage_sha256(int fd, int64_t len, char out[65])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx)
        return -1;
    int rc = -1;
    static _Thread_local unsigned char buf[1 << 17];
    if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
        goto out;
    int64_t off = 0;
    while (off < len) {
        size_t want = (size_t)(len - off < (int64_t)sizeof buf ? len - off : (int64_t)sizeof buf);
        ssize_t n = pread(fd, buf, want, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO; /* the file is shorter than it should be */
            goto out;
        }
        if (EVP_DigestUpdate(ctx, buf, (size_t)n) != 1)
            goto out;
        off += n;
    }
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (EVP_DigestFinal_ex(ctx, md, &mdlen) != 1 || mdlen != 32)
        goto out;
    util_hex(md, 32, out);
    rc = 0;
out:
    EVP_MD_CTX_free(ctx);
    return rc;
}
