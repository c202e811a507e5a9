/* The chunkup state file: load under a lock, look up, change, save
 * atomically, and set a corrupt file aside instead of overwriting it. */
#include "state.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#define STATE_VERSION 1
/* A state file holds a handful of entries; anything this big is not ours. */
#define MAX_STATE_BYTES (16 * 1024 * 1024)
#define MAX_CORRUPT_COPIES 100

struct cu_state {
    char *path;
    char *dir;
    int lock_fd;
    json_t *root;      /* {"version":1,"uploads":[entry...]} */
};

int cu_state_default_path(char *buf, size_t cap)
{
    const char *xdg = getenv("XDG_STATE_HOME");
    const char *home = getenv("HOME");
    int n;

    /* The XDG spec says relative values are to be ignored. */
    if (xdg != NULL && xdg[0] == '/')
        n = snprintf(buf, cap, "%s/chunkup/uploads_state.json", xdg);
    else if (home != NULL && home[0] == '/')
        n = snprintf(buf, cap, "%s/.local/state/chunkup/uploads_state.json", home);
    else
        return -1;
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

/* mkdir -p with mode 0700 for the parts it creates. */
static int make_dirs(const char *dir, char *msg, size_t cap)
{
    char *p = strdup(dir);

    if (p == NULL) {
        snprintf(msg, cap, "out of memory");
        return -1;
    }
    for (char *s = p + 1;; s++) {
        bool end = *s == '\0';

        if (*s != '/' && !end)
            continue;
        *s = '\0';
        if (mkdir(p, 0700) < 0 && errno != EEXIST) {
            snprintf(msg, cap, "cannot create directory %s: %s", p, strerror(errno));
            free(p);
            return -1;
        }
        if (end)
            break;
        *s = '/';
    }
    free(p);
    return 0;
}

static bool is_hex64(const char *s)
{
    size_t n = strlen(s);

    return n == 64 && strspn(s, "0123456789abcdef") == 64;
}

static bool int_field(const json_t *e, const char *key, int64_t min, int64_t max, int64_t *out)
{
    json_t *v = json_object_get(e, key);

    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
        return false;
    if (out != NULL)
        *out = json_integer_value(v);
    return true;
}

static bool valid_entry(const json_t *e)
{
    json_t *sha = json_object_get(e, "sha256");

    return json_is_object(e) && json_is_string(json_object_get(e, "server")) &&
           json_is_string(json_object_get(e, "path")) && json_is_string(sha) &&
           is_hex64(json_string_value(sha)) && int_field(e, "user_id", 1, INT64_MAX, NULL) &&
           int_field(e, "size", 0, INT64_MAX, NULL) &&
           int_field(e, "mtime", INT64_MIN, INT64_MAX, NULL) &&
           int_field(e, "mtime_nsec", 0, 999999999, NULL) &&
           int_field(e, "document_id", 1, INT64_MAX, NULL);
}

/* 0: valid; 1: not a state file (set it aside); -1: from a newer chunkup. */
static int check_root(const json_t *root)
{
    json_t *uploads = json_object_get(root, "uploads");
    int64_t version;
    size_t i;
    json_t *e;

    if (!json_is_object(root) || !int_field(root, "version", 1, INT64_MAX, &version))
        return 1;
    if (version > STATE_VERSION)
        return -1;
    if (!json_is_array(uploads))
        return 1;
    json_array_foreach(uploads, i, e) {
        if (!valid_entry(e))
            return 1;
    }
    return 0;
}

static json_t *empty_root(void)
{
    json_t *root = json_object();

    if (root == NULL || json_object_set_new(root, "version", json_integer(STATE_VERSION)) < 0 ||
        json_object_set_new(root, "uploads", json_array()) < 0 ||
        !json_is_array(json_object_get(root, "uploads"))) {
        json_decref(root);
        return NULL;
    }
    return root;
}

/* Reads the whole file. 1 when it does not exist. */
static int read_file(const char *path, char **data, size_t *len, char *msg, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    size_t got = 0;
    char *buf;

    if (fd < 0 && errno == ENOENT)
        return 1;
    if (fd < 0) {
        snprintf(msg, cap, "cannot open state file %s: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > MAX_STATE_BYTES) {
        snprintf(msg, cap, "state file %s is not a regular file of sane size", path);
        (void)close(fd);
        return -1;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL) {
        snprintf(msg, cap, "out of memory reading %s", path);
        (void)close(fd);
        return -1;
    }
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(msg, cap, "cannot read state file %s: %s", path,
                     n < 0 ? strerror(errno) : "file shrank while reading");
            free(buf);
            (void)close(fd);
            return -1;
        }
        got += (size_t)n;
    }
    (void)close(fd);
    *data = buf;
    *len = got;
    return 0;
}

/* Renames a corrupt file to a name that does not exist yet; the lock keeps
 * other chunkup runs from racing for the same name. */
static int set_aside(const char *path, char *msg, size_t cap)
{
    size_t n = strlen(path) + 32;
    char *target = malloc(n);
    struct stat st;

    if (target == NULL) {
        snprintf(msg, cap, "out of memory");
        return -1;
    }
    for (int i = 0; i < MAX_CORRUPT_COPIES; i++) {
        if (i == 0)
            snprintf(target, n, "%s.corrupt", path);
        else
            snprintf(target, n, "%s.corrupt.%d", path, i);
        if (lstat(target, &st) == 0)
            continue;
        if (errno != ENOENT)
            break;
        if (rename(path, target) < 0) {
            snprintf(msg, cap, "state file %s is corrupt and cannot be moved aside: %s", path,
                     strerror(errno));
            free(target);
            return -1;
        }
        snprintf(msg, cap, "state file %s was corrupt; moved it to %s and started afresh", path,
                 target);
        free(target);
        return 0;
    }
    snprintf(msg, cap, "state file %s is corrupt and no free .corrupt name is left", path);
    free(target);
    return -1;
}

static int load(cu_state *st, char *msg, size_t cap)
{
    char *data = NULL;
    size_t len = 0;
    json_error_t jerr;
    int rc = read_file(st->path, &data, &len, msg, cap);
    int shape;

    if (rc < 0)
        return -1;
    if (rc == 0) {
        st->root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
        free(data);
        shape = st->root == NULL ? 1 : check_root(st->root);
        if (shape < 0) {
            snprintf(msg, cap, "state file %s was written by a newer chunkup", st->path);
            return -1;
        }
        if (shape == 0)
            return 0;
        json_decref(st->root);
        st->root = NULL;
        if (set_aside(st->path, msg, cap) < 0)
            return -1;
    }
    st->root = empty_root();
    if (st->root == NULL) {
        snprintf(msg, cap, "out of memory");
        return -1;
    }
    return 0;
}

cu_state *cu_state_open(const char *path, char *msg, size_t cap)
{
    cu_state *st = calloc(1, sizeof *st);
    const char *slash = strrchr(path, '/');
    char *lock_path = NULL;

    msg[0] = '\0';
    if (st == NULL) {
        snprintf(msg, cap, "out of memory");
        return NULL;
    }
    st->lock_fd = -1;
    st->path = strdup(path);
    st->dir = slash == NULL ? strdup(".") : slash == path ? strdup("/") : strndup(path, (size_t)(slash - path));
    if (st->path == NULL || st->dir == NULL || asprintf(&lock_path, "%s.lock", path) < 0) {
        lock_path = NULL;
        snprintf(msg, cap, "out of memory");
        goto fail;
    }
    if (make_dirs(st->dir, msg, cap) < 0)
        goto fail;
    st->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (st->lock_fd < 0) {
        snprintf(msg, cap, "cannot open lock file %s: %s", lock_path, strerror(errno));
        goto fail;
    }
    while (flock(st->lock_fd, LOCK_EX) < 0) {
        if (errno != EINTR) {
            snprintf(msg, cap, "cannot lock %s: %s", lock_path, strerror(errno));
            goto fail;
        }
    }
    if (load(st, msg, cap) < 0)
        goto fail;
    free(lock_path);
    return st;
fail:
    free(lock_path);
    cu_state_close(st);
    return NULL;
}

void cu_state_close(cu_state *st)
{
    if (st == NULL)
        return;
    /* Closing the descriptor releases the flock. */
    if (st->lock_fd >= 0)
        (void)close(st->lock_fd);
    json_decref(st->root);
    free(st->path);
    free(st->dir);
    free(st);
}

static json_t *uploads(const cu_state *st)
{
    return json_object_get(st->root, "uploads");
}

static const char *str(const json_t *e, const char *key)
{
    return json_string_value(json_object_get(e, key));
}

static int64_t num(const json_t *e, const char *key)
{
    return json_integer_value(json_object_get(e, key));
}

/* Same server, user and local path: the same place, maybe another version. */
static bool same_place(const json_t *e, const char *server, int64_t user_id, const char *path)
{
    return strcmp(str(e, "server"), server) == 0 && num(e, "user_id") == user_id &&
           strcmp(str(e, "path"), path) == 0;
}

int64_t cu_state_find(const cu_state *st, const cu_state_key *key)
{
    size_t i;
    json_t *e;

    json_array_foreach(uploads(st), i, e) {
        if (same_place(e, key->server, key->user_id, key->path) && num(e, "size") == key->size &&
            num(e, "mtime") == key->mtime_sec && num(e, "mtime_nsec") == key->mtime_nsec &&
            strcmp(str(e, "sha256"), key->sha256) == 0)
            return num(e, "document_id");
    }
    return 0;
}

int cu_state_forget(cu_state *st, const cu_state_key *key)
{
    json_t *arr = uploads(st);
    int removed = 0;

    for (size_t i = json_array_size(arr); i-- > 0;) {
        if (same_place(json_array_get(arr, i), key->server, key->user_id, key->path) &&
            json_array_remove(arr, i) == 0)
            removed++;
    }
    return removed;
}

int cu_state_forget_document(cu_state *st, const char *server, int64_t user_id,
                             int64_t document_id)
{
    json_t *arr = uploads(st);
    int removed = 0;

    for (size_t i = json_array_size(arr); i-- > 0;) {
        json_t *e = json_array_get(arr, i);

        if (strcmp(str(e, "server"), server) == 0 && num(e, "user_id") == user_id &&
            num(e, "document_id") == document_id && json_array_remove(arr, i) == 0)
            removed++;
    }
    return removed;
}

size_t cu_state_count(const cu_state *st)
{
    return json_array_size(uploads(st));
}

static void utc_now(char *buf, size_t cap)
{
    time_t now = time(NULL);
    struct tm tm;

    if (gmtime_r(&now, &tm) == NULL || strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, cap, "unknown");
}

int cu_state_put(cu_state *st, const cu_state_key *key, int64_t document_id, char *msg,
                 size_t cap)
{
    char when[32];
    json_t *e;

    if (key->mtime_nsec < 0 || key->mtime_nsec > 999999999 || !is_hex64(key->sha256) ||
        key->user_id <= 0 || key->size < 0 || document_id <= 0) {
        snprintf(msg, cap, "invalid state entry");
        return -1;
    }
    utc_now(when, sizeof when);
    e = json_pack("{s:s, s:I, s:s, s:I, s:I, s:I, s:s, s:I, s:s}", "server", key->server,
                  "user_id", (json_int_t)key->user_id, "path", key->path, "size",
                  (json_int_t)key->size, "mtime", (json_int_t)key->mtime_sec, "mtime_nsec",
                  (json_int_t)key->mtime_nsec, "sha256", key->sha256, "document_id",
                  (json_int_t)document_id, "recorded_at", when);
    if (e == NULL) {
        snprintf(msg, cap, "cannot record %s in the state file (path not valid UTF-8?)",
                 key->path);
        return -1;
    }
    cu_state_forget(st, key);
    if (json_array_append_new(uploads(st), e) < 0) {
        snprintf(msg, cap, "out of memory");
        return -1;
    }
    return 0;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);

        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* The rename is only durable once the directory entry is on disk too. */
static int sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc;

    if (fd < 0)
        return -1;
    rc = fsync(fd);
    (void)close(fd);
    return rc;
}

int cu_state_save(cu_state *st, char *msg, size_t cap)
{
    char *text = json_dumps(st->root, JSON_INDENT(2));
    char *tmp = NULL;
    int fd = -1;

    if (text == NULL || asprintf(&tmp, "%s.tmp-XXXXXX", st->path) < 0) {
        free(text);
        snprintf(msg, cap, "out of memory");
        return -1;
    }
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        snprintf(msg, cap, "cannot create a temporary file next to %s: %s", st->path,
                 strerror(errno));
        goto fail_nofile;
    }
    /* mkostemp already uses 0600; say so explicitly rather than rely on it. */
    if (fchmod(fd, 0600) < 0 || write_all(fd, text, strlen(text)) < 0 ||
        write_all(fd, "\n", 1) < 0 || fsync(fd) < 0) {
        snprintf(msg, cap, "cannot write %s: %s", tmp, strerror(errno));
        goto fail;
    }
    if (close(fd) < 0) {
        fd = -1;
        snprintf(msg, cap, "cannot write %s: %s", tmp, strerror(errno));
        goto fail;
    }
    fd = -1;
    if (rename(tmp, st->path) < 0) {
        snprintf(msg, cap, "cannot replace %s: %s", st->path, strerror(errno));
        goto fail;
    }
    if (sync_dir(st->dir) < 0) {
        snprintf(msg, cap, "cannot sync directory %s: %s", st->dir, strerror(errno));
        free(tmp);
        free(text);
        return -1;
    }
    free(tmp);
    free(text);
    return 0;
fail:
    if (fd >= 0)
        (void)close(fd);
    (void)unlink(tmp);
fail_nofile:
    free(tmp);
    free(text);
    return -1;
}
