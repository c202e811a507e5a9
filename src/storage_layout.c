/* The storage root's layout marker, and the move from layout 1. */
#include "chunkd/storage_layout.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chunkd/storage.h"

#define NBUCKETS 256

static int join(char *out, size_t size, const char *a, const char *b)
{
    int n = snprintf(out, size, "%s/%s", a, b);
    if (n < 0 || (size_t)n >= size) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}

static int bucket_dir(char *out, size_t size, const char *root, unsigned bucket)
{
    char name[4];
    snprintf(name, sizeof name, "%02x", bucket & 0xffu);
    return join(out, size, root, name);
}

/* The marker's version: 1 when root has none (whatever it holds), -1 with
 * the reason when it cannot be read or names no version. */
static int read_marker(const char *root, char *err, size_t errlen)
{
    char path[PATH_MAX];
    if (join(path, sizeof path, root, STORAGE_LAYOUT_FILE) != 0) {
        snprintf(err, errlen, "storage_dir %s: %s", root, strerror(errno));
        return -1;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT)
        return 1;
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    char buf[32];
    ssize_t n;
    do
        n = read(fd, buf, sizeof buf - 1);
    while (n < 0 && errno == EINTR);
    int e = errno;
    close(fd);
    if (n < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        return -1;
    }
    buf[n] = '\0';
    char *end;
    errno = 0;
    long v = strtol(buf, &end, 10);
    if (errno != 0 || end == buf || (*end != '\n' && *end != '\0') || v < 1 || v > 1000) {
        snprintf(err, errlen, "%s does not hold a layout version (expected \"%d\")", path,
                 STORAGE_LAYOUT_VERSION);
        return -1;
    }
    return (int)v;
}

/* Whether any bucket directory holds an entry: 1 yes, 0 no, -1 with the
 * reason. */
static int has_bucket_entries(const char *root, char *err, size_t errlen)
{
    for (unsigned b = 0; b < NBUCKETS; b++) {
        char dir[PATH_MAX];
        if (bucket_dir(dir, sizeof dir, root, b) != 0) {
            snprintf(err, errlen, "storage_dir %s: %s", root, strerror(errno));
            return -1;
        }
        DIR *d = opendir(dir);
        if (!d && (errno == ENOENT || errno == ENOTDIR))
            continue;
        if (!d) {
            snprintf(err, errlen, "%s: %s", dir, strerror(errno));
            return -1;
        }
        bool found = false;
        struct dirent *de;
        errno = 0;
        while (!found && (de = readdir(d)) != NULL)
            found = strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
        int e = errno;
        closedir(d);
        if (!found && e != 0) {
            snprintf(err, errlen, "%s: %s", dir, strerror(e));
            return -1;
        }
        if (found)
            return 1;
    }
    return 0;
}

/* Writes the marker durably: a whole file renamed into place, then the
 * root's entry synced. Instances starting at once each rename a copy of
 * the same content; the copies' names are random (mkstemp), not by pid,
 * since containers on other hosts sharing the volume all run as pid 1. */
static int write_marker(const char *root, char *err, size_t errlen)
{
    char path[PATH_MAX], tmp[PATH_MAX];
    int n = snprintf(tmp, sizeof tmp, "%s/%s.XXXXXX", root, STORAGE_LAYOUT_FILE);
    if (join(path, sizeof path, root, STORAGE_LAYOUT_FILE) != 0 || n < 0 ||
        (size_t)n >= sizeof tmp) {
        snprintf(err, errlen, "storage_dir %s: %s", root, strerror(ENAMETOOLONG));
        return -1;
    }
    char body[16];
    int len = snprintf(body, sizeof body, "%d\n", STORAGE_LAYOUT_VERSION);
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "creating %s: %s", tmp, strerror(errno));
        return -1;
    }
    /* Readable by chunkctl under another account, like the documents'
     * directories; mkstemp makes it 0600. */
    ssize_t wrote = write(fd, body, (size_t)len);
    bool ok = fchmod(fd, 0644) == 0 && wrote == len && fsync(fd) == 0;
    int e = ok ? 0 : (wrote >= 0 && wrote < len ? EIO : errno);
    if (close(fd) != 0 && ok) {
        ok = false;
        e = errno;
    }
    if (ok && rename(tmp, path) != 0) {
        ok = false;
        e = errno;
    }
    if (!ok) {
        unlink(tmp);
        snprintf(err, errlen, "writing %s: %s", path, strerror(e));
        return -1;
    }
    if (storage_sync_dir_path(root) != 0) {
        snprintf(err, errlen, "syncing %s: %s", root, strerror(errno));
        return -1;
    }
    return 0;
}

/* The verdict both entry points share: 0 in this layout (or unused, in
 * which case *unmarked is set), -1 with the reason. */
static int judge(const char *root, bool *unmarked, char *err, size_t errlen)
{
    *unmarked = false;
    int v = read_marker(root, err, errlen);
    if (v < 0)
        return -1;
    if (v == STORAGE_LAYOUT_VERSION)
        return 0;
    if (v > STORAGE_LAYOUT_VERSION) {
        snprintf(err, errlen,
                 "storage_dir %s is in layout %d, newer than this build's %d: run the chunkd "
                 "that wrote it",
                 root, v, STORAGE_LAYOUT_VERSION);
        return -1;
    }
    int used = has_bucket_entries(root, err, errlen);
    if (used < 0)
        return -1;
    /* Another instance starting at the same moment may have marked the
     * root and created files since the marker was read. */
    if (used && (v = read_marker(root, err, errlen)) == STORAGE_LAYOUT_VERSION)
        return 0;
    if (v < 0)
        return -1;
    if (used) {
        snprintf(err, errlen,
                 "storage_dir %s holds files in layout %d (buckets by id & 0xff); stop every "
                 "chunkd that uses it and run 'chunkctl storage-migrate' (docs/OPERATIONS.md)",
                 root, v);
        return -1;
    }
    *unmarked = true;
    return 0;
}

int storage_layout_check(const char *root, char *err, size_t errlen)
{
    bool unmarked;
    return judge(root, &unmarked, err, errlen);
}

int storage_layout_claim(const char *root, char *err, size_t errlen)
{
    bool unmarked;
    if (judge(root, &unmarked, err, errlen) != 0)
        return -1;
    return unmarked ? write_marker(root, err, errlen) : 0;
}

/* "<digits>.data" with a value that fits a document id. */
static bool parse_data_name(const char *name, uint64_t *id)
{
    size_t digits = strspn(name, "0123456789");
    /* Only the names the server makes: no leading zero ("042.data" is no
     * document's file, whatever its number). */
    if (digits == 0 || digits > 19 || name[0] == '0' || strcmp(name + digits, ".data") != 0)
        return false;
    errno = 0;
    unsigned long long v = strtoull(name, NULL, 10);
    if (errno != 0 || v == 0 || v > INT64_MAX)
        return false;
    *id = v;
    return true;
}

typedef struct migration_run {
    const char *root;
    storage_migration *count;
    bool dirty[NBUCKETS]; /* bucket directories whose entries changed */
    bool owned[NBUCKETS]; /* buckets made or checked to be the root owner's */
    /* Files moved into a bucket not read yet: found there in place later,
     * and not to be counted as in place then. */
    long moved_ahead[NBUCKETS];
    uid_t owner; /* of the storage root, for the buckets made */
    gid_t group;
    char *err;
    size_t errlen;
} migration_run;

/* Makes the layout-2 bucket dir (its name synced in the root) unless it is
 * there, and sees that it belongs to the storage root's owner. */
static int own_bucket(migration_run *m, const char *dir)
{
    if (mkdir(dir, STORAGE_DIR_MODE) == 0) {
        /* Run as root, the new bucket must still be the server's: it
         * belongs to whoever owns the storage root. */
        if ((geteuid() == 0 && chown(dir, m->owner, m->group) != 0) ||
            storage_sync_dir_path(m->root) != 0) {
            snprintf(m->err, m->errlen, "making %s: %s", dir, strerror(errno));
            return -1;
        }
    } else if (errno != EEXIST) {
        snprintf(m->err, m->errlen, "mkdir %s: %s", dir, strerror(errno));
        return -1;
    } else if (geteuid() == 0 && m->owner != 0) {
        /* Made by a run (as root) that stopped before its chown: root's,
         * where the root's owner should own it. A bucket chunkd made
         * itself is left as it is. */
        struct stat st;
        if (stat(dir, &st) != 0 || (st.st_uid == 0 && chown(dir, m->owner, m->group) != 0)) {
            snprintf(m->err, m->errlen, "making %s: %s", dir, strerror(errno));
            return -1;
        }
    }
    return 0;
}

/* Renames one file into its layout-2 bucket. */
static int move_file(migration_run *m, unsigned from, const char *name, uint64_t id)
{
    unsigned to = storage_bucket(id);
    char src_dir[PATH_MAX], dst_dir[PATH_MAX], src[PATH_MAX], dst[PATH_MAX];
    if (bucket_dir(src_dir, sizeof src_dir, m->root, from) != 0 ||
        bucket_dir(dst_dir, sizeof dst_dir, m->root, to) != 0 ||
        join(src, sizeof src, src_dir, name) != 0 || join(dst, sizeof dst, dst_dir, name) != 0) {
        snprintf(m->err, m->errlen, "storage_dir %s: %s", m->root, strerror(errno));
        return -1;
    }
    if (!m->owned[to] && own_bucket(m, dst_dir) != 0)
        return -1;
    m->owned[to] = true;
    /* Never over a file: two copies of one id mean something else wrote
     * here, which the operator must look at. File systems without
     * RENAME_NOREPLACE (NFS, EINVAL) get link and unlink, which refuses to
     * replace as well. */
    int rc = renameat2(AT_FDCWD, src, AT_FDCWD, dst, RENAME_NOREPLACE);
    if (rc != 0 && errno == EINVAL && (rc = link(src, dst)) == 0 && (rc = unlink(src)) != 0) {
        int e = errno;
        (void)unlink(dst); /* the source is still there: undo the copy's name */
        errno = e;
    }
    if (rc != 0 && errno == EEXIST) {
        /* The same file under both names is a link-and-unlink that
         * stopped between the two (a crash): finish it. */
        struct stat a, b; /* lstat: a symbolic link is never "the same file" */
        if (lstat(src, &a) == 0 && lstat(dst, &b) == 0 && S_ISREG(a.st_mode) &&
            S_ISREG(b.st_mode) && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
            rc = unlink(src);
        else
            errno = EEXIST;
    }
    if (rc != 0) {
        snprintf(m->err, m->errlen, "moving %s to %s: %s", src, dst, strerror(errno));
        return -1;
    }
    m->dirty[from] = m->dirty[to] = true;
    m->count->moved++;
    if (to > from) /* buckets are read in ascending order */
        m->moved_ahead[to]++;
    return 0;
}

static int migrate_bucket(migration_run *m, unsigned b)
{
    char dir[PATH_MAX];
    if (bucket_dir(dir, sizeof dir, m->root, b) != 0) {
        snprintf(m->err, m->errlen, "storage_dir %s: %s", m->root, strerror(errno));
        return -1;
    }
    DIR *d = opendir(dir);
    if (!d && (errno == ENOENT || errno == ENOTDIR))
        return 0;
    if (!d) {
        snprintf(m->err, m->errlen, "%s: %s", dir, strerror(errno));
        return -1;
    }
    int rc = 0;
    struct dirent *de;
    /* Entries renamed out while reading may or may not be returned again
     * (POSIX leaves it open); one that is fails its rename with ENOENT
     * below, so read the names first and move them after. */
    size_t n = 0, cap = 0;
    char **names = NULL;
    errno = 0;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            char **grown = realloc(names, ncap * sizeof *names);
            if (!grown) {
                rc = -1;
                break;
            }
            names = grown;
            cap = ncap;
        }
        if (!(names[n] = strdup(de->d_name))) {
            rc = -1;
            break;
        }
        n++;
        errno = 0;
    }
    if (rc != 0 || errno != 0) {
        snprintf(m->err, m->errlen, "reading %s: %s", dir, strerror(errno ? errno : ENOMEM));
        rc = -1;
    }
    closedir(d);
    long in_place = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        uint64_t id;
        if (!parse_data_name(names[i], &id))
            m->count->other++;
        else if (storage_bucket(id) == b)
            in_place++;
        else
            rc = move_file(m, b, names[i], id);
    }
    m->count->in_place += in_place - m->moved_ahead[b];
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

/* What a migration finds at root: 1 layout 1, to migrate; 0 this layout
 * already (a run again: its steps skip what is done); -1 with the reason.
 * *st: the root's. */
static int migration_source(const char *root, struct stat *st, char *err, size_t errlen)
{
    if (stat(root, st) != 0) {
        snprintf(err, errlen, "storage_dir %s: %s", root, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st->st_mode)) {
        snprintf(err, errlen, "storage_dir %s is not a folder", root);
        return -1;
    }
    int v = read_marker(root, err, errlen);
    if (v < 0)
        return -1;
    if (v == STORAGE_LAYOUT_VERSION)
        return 0;
    if (v != 1) {
        snprintf(err, errlen, "storage_dir %s is in layout %d; this build migrates layout 1 only",
                 root, v);
        return -1;
    }
    return 1;
}

int storage_layout_can_migrate(const char *root, char *err, size_t errlen)
{
    struct stat st;
    int from = migration_source(root, &st, err, errlen);
    if (from <= 0)
        return from;
    int used = has_bucket_entries(root, err, errlen);
    if (used < 0)
        return -1;
    if (!used) {
        snprintf(err, errlen,
                 "storage_dir %s holds no document files and no layout marker: nothing to "
                 "migrate there (is it the folder chunkd uses?)",
                 root);
        return -1;
    }
    return 0;
}

int storage_layout_migrate(const char *root, storage_migration *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    struct stat rst;
    int from = migration_source(root, &rst, err, errlen);
    if (from < 0)
        return -1;
    if (from == 0) {
        /* Done before, but perhaps its last step, syncing the marker's
         * name, failed: do that again. */
        if (storage_sync_dir_path(root) != 0) {
            snprintf(err, errlen, "syncing %s: %s", root, strerror(errno));
            return -1;
        }
        return 0;
    }
    migration_run m = {.root = root,
                       .count = out,
                       .err = err,
                       .errlen = errlen,
                       .owner = rst.st_uid,
                       .group = rst.st_gid};
    /* A file moved into a bucket read later is seen there in place. */
    for (unsigned b = 0; b < NBUCKETS; b++)
        if (migrate_bucket(&m, b) != 0)
            return -1;
    for (unsigned b = 0; b < NBUCKETS; b++) {
        char dir[PATH_MAX];
        if (!m.dirty[b])
            continue;
        if (bucket_dir(dir, sizeof dir, root, b) != 0 || storage_sync_dir_path(dir) != 0) {
            snprintf(err, errlen, "syncing %s: %s", dir, strerror(errno));
            return -1;
        }
    }
    return write_marker(root, err, errlen);
}
