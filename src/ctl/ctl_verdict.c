/* The rules a healthy document follows, per status:
 *   uploading: the file exists with mode 0640 and at most filesize bytes;
 *              the Redis state, when present, belongs to the row and its
 *              offset is covered by the file (resume never hands out bytes
 *              the file does not hold).
 *   completed: the file holds exactly filesize bytes with the row's SHA-256
 *              and mode 0640; nothing is left in Redis.
 *   failed:    neither file nor Redis state nor a held lease is left (the
 *              end marker, RSTATE_LEASE_ENDED, is not held). */
#include "ctl_verdict.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int add(json_t *list, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int add(json_t *list, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    return json_array_append_new(list, json_string(buf)) == 0 ? 0 : -1;
}

#define ADD(list, ...)                                                                     \
    do {                                                                                   \
        if (add(list, __VA_ARGS__) != 0)                                                   \
            return -1;                                                                     \
    } while (0)

static const char *file_type(const struct stat *sb)
{
    return S_ISDIR(sb->st_mode) ? "a directory" : S_ISLNK(sb->st_mode) ? "a symlink"
                                                                      : "not a regular file";
}

/* Checks shared by uploading and completed rows: the file must be there. */
static int check_file_present(const doc_facts *f, json_t *problems, bool *usable)
{
    const doc_row *r = &f->row;
    *usable = false;
    if (!f->file_exists) {
        if (f->stat_errno)
            ADD(problems, "%s row, but its file %s cannot be examined: %s", r->status,
                f->rel_path, strerror(f->stat_errno));
        else
            ADD(problems, "%s row, but its file %s is missing", r->status, f->rel_path);
        return 0;
    }
    if (!S_ISREG(f->sb.st_mode)) {
        ADD(problems, "%s row, but its file %s is %s", r->status, f->rel_path,
            file_type(&f->sb));
        return 0;
    }
    *usable = true;
    unsigned mode = (unsigned)(f->sb.st_mode & 07777);
    if (mode != STORAGE_FILE_MODE)
        ADD(problems, "file mode is %04o, not %04o", mode, STORAGE_FILE_MODE);
    return 0;
}

/* The Redis hash must belong to this row, whatever the status. */
static int check_state_matches_row(const doc_facts *f, json_t *problems)
{
    const doc_row *r = &f->row;
    const upload_state *st = &f->st;
    if (f->redis_key && !f->state_found)
        ADD(problems, "Redis state lacks user_id, offset or filesize (unreadable)");
    if (!f->state_found)
        return 0;
    if (st->user_id != r->user_id)
        ADD(problems, "Redis user_id %" PRIu64 " differs from the row's %" PRIu64, st->user_id,
            r->user_id);
    if (st->filesize != r->filesize)
        ADD(problems, "Redis filesize %" PRId64 " differs from the row's %" PRId64,
            st->filesize, r->filesize);
    if (st->path[0] && strcmp(st->path, f->rel_path) != 0)
        ADD(problems, "Redis path '%s' is not the document's path %s", st->path, f->rel_path);
    if (strcmp(st->declared_sha256, r->declared_sha256) != 0)
        ADD(problems, "Redis declared_sha256 differs from the row's");
    if (f->redis_ttl_s == -1)
        ADD(problems, "Redis state has no TTL, so it would never expire");
    return 0;
}

static int check_uploading(const doc_facts *f, json_t *problems, json_t *notes)
{
    const doc_row *r = &f->row;
    const upload_state *st = &f->st;
    bool usable;
    if (check_file_present(f, problems, &usable) != 0)
        return -1;
    int64_t size = usable ? (int64_t)f->sb.st_size : -1;
    if (usable && size > r->filesize)
        ADD(problems, "file size %" PRId64 " exceeds the declared size %" PRId64, size,
            r->filesize);
    if (f->state_found) {
        if (st->offset > r->filesize)
            ADD(problems, "Redis offset %" PRId64 " exceeds the declared size %" PRId64,
                st->offset, r->filesize);
        if (usable && st->offset > size)
            ADD(problems, "Redis offset %" PRId64 " > file size %" PRId64, st->offset, size);
        if (st->synced_offset > st->offset)
            ADD(problems, "Redis synced_offset %" PRId64 " exceeds offset %" PRId64,
                st->synced_offset, st->offset);
        if (usable && st->offset < size)
            ADD(notes,
                "file holds %" PRId64 " bytes past the saved offset (an unacknowledged chunk; "
                "resume cuts them off)",
                size - st->offset);
    } else if (!f->redis_key) {
        ADD(notes, "no Redis state: resume rebuilds it from the row and the file");
    }
    if (f->lease.held)
        ADD(notes, "being written: lease held by %s", f->lease.holder);
    if (f->lease.ended)
        ADD(problems, "the lease says the upload ended, but the row is uploading");
    return 0;
}

static int check_completed(const doc_facts *f, json_t *problems)
{
    const doc_row *r = &f->row;
    bool usable;
    if (check_file_present(f, problems, &usable) != 0)
        return -1;
    if (usable && (int64_t)f->sb.st_size != r->filesize)
        ADD(problems, "completed row, but the file has %lld bytes instead of %" PRId64,
            (long long)f->sb.st_size, r->filesize);
    if (!r->sha256[0])
        ADD(problems, "completed row without a sha256");
    else if (usable && f->sha_done && strcmp(f->sha256, r->sha256) != 0)
        ADD(problems, "completed row, but the file's SHA-256 %s differs from the row's %s",
            f->sha256, r->sha256);
    else if (usable && !f->sha_done)
        ADD(problems, "the file's SHA-256 could not be computed: %s", strerror(f->sha_errno));
    if (r->declared_sha256[0] && r->sha256[0] && strcmp(r->declared_sha256, r->sha256) != 0)
        ADD(problems, "completed row whose sha256 differs from the declared one");
    if (strcmp(r->file_path, f->rel_path) != 0)
        ADD(problems, "row file_path '%s' is not the document's path %s", r->file_path,
            f->rel_path);
    if (!r->completed_at[0])
        ADD(problems, "completed row without completed_at");
    return 0;
}

static int check_ended(const doc_facts *f, json_t *problems)
{
    const char *status = f->row.status;
    if (strcmp(status, "failed") == 0 && f->file_exists)
        ADD(problems, "file %s present for a failed row", f->rel_path);
    if (f->redis_key)
        ADD(problems, "Redis key present for a %s row", status);
    if (f->lease.held)
        ADD(problems, "lease held by %s for a %s row", f->lease.holder, status);
    return 0;
}

/* No row: anything else about the id is a leftover. */
static int check_orphan(const doc_facts *f, json_t *problems)
{
    if (f->file_exists)
        ADD(problems, "no documents row, but file %s exists", f->rel_path);
    if (f->redis_key)
        ADD(problems, "no documents row, but a Redis key exists");
    if (f->lease.held)
        ADD(problems, "no documents row, but a lease is held by %s", f->lease.holder);
    return 0;
}

int verdict_check(const doc_facts *f, json_t *problems, json_t *notes)
{
    if (f->lease.held && f->lease.ttl_ms < 0)
        ADD(problems, "lease has no TTL, so it would never lapse");
    if (!f->row_found)
        return check_orphan(f, problems);
    const char *status = f->row.status;
    if (check_state_matches_row(f, problems) != 0)
        return -1;
    if (strcmp(status, "uploading") == 0)
        return check_uploading(f, problems, notes);
    if (strcmp(status, "completed") == 0) {
        if (check_completed(f, problems) != 0)
            return -1;
        return check_ended(f, problems);
    }
    if (strcmp(status, "failed") == 0) {
        if (!f->row.failure_reason[0])
            ADD(notes, "failed row without a failure_reason");
        return check_ended(f, problems);
    }
    ADD(problems, "unknown status '%s'", status);
    return 0;
}
