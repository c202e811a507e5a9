/* Document files: generated paths, modes, writes, hashing, removal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "chunkd/storage.h"
#include "test_tmpdir.h"

#define SHA_ABC "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
#define SHA_EMPTY "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static char root[64];

static int setup(void **state)
{
    (void)state;
    return test_tmpdir_make(root, sizeof root, "/tmp/chunkd-storage-");
}

static int teardown(void **state)
{
    (void)state;
    return test_tmpdir_remove(root);
}

static void file_path(char *out, size_t size, const char *rel)
{
    int n = snprintf(out, size, "%s/%s", root, rel);
    assert_true(n > 0 && (size_t)n < size);
}

static void test_rel_path(void **state)
{
    (void)state;
    static const struct {
        uint64_t id;
        const char *want;
    } rows[] = {
        {1, "00/1.data"},
        {42, "00/42.data"},
        {255, "00/255.data"},
        {256, "01/256.data"},
        {0x1ff, "01/511.data"},
        {0x2a00, "2a/10752.data"},
        {0x12345, "23/74565.data"},
        {UINT64_MAX, "ff/18446744073709551615.data"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        char out[STORAGE_REL_PATH_MAX];
        storage_rel_path(rows[i].id, out);
        assert_string_equal(out, rows[i].want);
    }
}

/* The documented mode holds whatever the process umask is. */
static void test_create_mode_under_umask(void **state)
{
    (void)state;
    mode_t old = umask(077);
    int fd = storage_create(root, 0x2a2a);
    int e = errno;
    umask(old);
    if (fd < 0)
        print_error("storage_create: %s\n", strerror(e));
    assert_true(fd >= 0);

    char p[256];
    struct stat st;
    file_path(p, sizeof p, "2a");
    assert_int_equal(stat(p, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    file_path(p, sizeof p, "2a/10794.data");
    assert_int_equal(stat(p, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0640);
    assert_int_equal(st.st_size, 0);
    assert_true((fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0);
    assert_int_equal(close(fd), 0);
}

/* A second create of the same document starts it again from nothing. */
static void test_create_truncates(void **state)
{
    (void)state;
    int fd = storage_create(root, 7);
    assert_true(fd >= 0);
    assert_int_equal(storage_pwrite_all(fd, "hello", 5, 0), STORAGE_OK);
    assert_int_equal(close(fd), 0);
    fd = storage_create(root, 7);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal(st.st_size, 0);
    assert_int_equal(close(fd), 0);
}

static void test_write_and_hash(void **state)
{
    (void)state;
    int fd = storage_create(root, 1);
    assert_true(fd >= 0);
    char hex[65];
    assert_int_equal(storage_sha256(fd, 0, hex), 0);
    assert_string_equal(hex, SHA_EMPTY);

    /* Out of order, at their offsets, the bytes make "abc". */
    assert_int_equal(storage_pwrite_all(fd, "bc", 2, 1), STORAGE_OK);
    assert_int_equal(storage_pwrite_all(fd, "a", 1, 0), STORAGE_OK);
    assert_int_equal(storage_pwrite_all(fd, "", 0, 3), STORAGE_OK);
    assert_int_equal(storage_sync(fd), STORAGE_OK);
    assert_int_equal(storage_sync_dir(root, 1), 0);
    assert_int_equal(storage_sha256(fd, 3, hex), 0);
    assert_string_equal(hex, SHA_ABC);
    /* Only the first len bytes count. */
    assert_int_equal(storage_pwrite_all(fd, "zz", 2, 3), STORAGE_OK);
    assert_int_equal(storage_sha256(fd, 3, hex), 0);
    assert_string_equal(hex, SHA_ABC);

    /* Asking for more than the file holds is an error, not a short hash. */
    errno = 0;
    int rc = storage_sha256(fd, 6, hex);
    int e = errno;
    assert_int_equal(rc, -1);
    assert_int_equal(e, EIO);

    char p[256];
    file_path(p, sizeof p, "00/1.data");
    FILE *f = fopen(p, "rb");
    assert_non_null(f);
    char got[8] = {0};
    assert_int_equal(fread(got, 1, sizeof got, f), 5);
    assert_memory_equal(got, "abczz", 5);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(close(fd), 0);
}

/* Larger than the hashing buffer, so the read loop runs several times. */
static void test_hash_large_file(void **state)
{
    (void)state;
    size_t n = 3 * (1u << 17) + 12345;
    unsigned char *data = malloc(n);
    assert_non_null(data);
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        data[i] = (unsigned char)x;
    }
    unsigned char md[32];
    unsigned int mdlen = 0;
    assert_int_equal(EVP_Digest(data, n, md, &mdlen, EVP_sha256(), NULL), 1);
    char want[65];
    for (size_t i = 0; i < 32; i++)
        snprintf(want + 2 * i, 3, "%02x", md[i]);

    int fd = storage_create(root, 300);
    assert_true(fd >= 0);
    size_t half = n / 2;
    assert_int_equal(storage_pwrite_all(fd, data, half, 0), STORAGE_OK);
    assert_int_equal(storage_pwrite_all(fd, data + half, n - half, (int64_t)half), STORAGE_OK);
    char hex[65];
    assert_int_equal(storage_sha256(fd, (int64_t)n, hex), 0);
    assert_string_equal(hex, want);
    assert_int_equal(close(fd), 0);
    free(data);
}

static void test_open(void **state)
{
    (void)state;
    errno = 0;
    int fd = storage_open(root, 99);
    int e = errno;
    assert_int_equal(fd, -1);
    assert_int_equal(e, ENOENT);

    fd = storage_create(root, 99);
    assert_true(fd >= 0);
    assert_int_equal(storage_pwrite_all(fd, "ab", 2, 0), STORAGE_OK);
    assert_int_equal(close(fd), 0);

    fd = storage_open(root, 99);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal(st.st_size, 2); /* opening does not truncate */
    assert_int_equal(storage_pwrite_all(fd, "c", 1, 2), STORAGE_OK);
    char hex[65];
    assert_int_equal(storage_sha256(fd, 3, hex), 0);
    assert_string_equal(hex, SHA_ABC);
    assert_int_equal(close(fd), 0);
}

static void test_remove_idempotent(void **state)
{
    (void)state;
    assert_int_equal(storage_remove(root, 5), 0); /* not even a bucket yet */
    int fd = storage_create(root, 5);
    assert_true(fd >= 0);
    assert_int_equal(close(fd), 0);
    assert_int_equal(storage_remove(root, 5), 0);
    char p[256];
    file_path(p, sizeof p, "00/5.data");
    assert_int_equal(access(p, F_OK), -1);
    assert_int_equal(storage_remove(root, 5), 0);
    errno = 0;
    fd = storage_open(root, 5);
    int e = errno;
    assert_int_equal(fd, -1);
    assert_int_equal(e, ENOENT);
}

/* ---- fencing: storage_replace_with_copy ---------------------------------- */

enum { COPY_DOC = 7, COPY_SIZE = 10000, COPY_LEN = 6000 };

static int bucket_names(char *out, size_t size);

/* Yes, after noting the bucket's names in arg (512 bytes): what the copy
 * is called right before it takes the path. */
static int say_yes(void *arg)
{
    return bucket_names(arg, 512);
}

static int say_no(void *arg)
{
    int *asked = arg;
    (*asked)++;
    return -1;
}

/* The names in document COPY_DOC's bucket, as one string ("7.data "). */
static int bucket_names(char *out, size_t size)
{
    char dir[256];
    file_path(dir, sizeof dir, "00");
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    out[0] = '\0';
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        size_t n = strlen(out);
        snprintf(out + n, size - n, "%s ", e->d_name);
    }
    return closedir(d);
}

/* Not cmocka's asserts: this also runs in a forked child, where a failed
 * assert would go on with the rest of the tests. The failed line, or 0. */
#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "test_storage.c:%d: %s (errno %s)\n", __LINE__, #cond,     \
                    strerror(errno));                                                  \
            return __LINE__;                                                           \
        }                                                                              \
    } while (0)

/* Copies COPY_DOC's file, refused first and then allowed. named: the
 * copy has its name from the start (no O_TMPFILE); otherwise it has none
 * until the rename. Leaks descriptors on failure, which ends the test. */
static int copy_refused_then_taken(bool named)
{
    static unsigned char data[COPY_SIZE], got[COPY_LEN];
    for (int i = 0; i < COPY_SIZE; i++)
        data[i] = (unsigned char)(i * 7 + 3);
    int old_fd = storage_create(root, COPY_DOC);
    CHECK(old_fd >= 0);
    CHECK(storage_pwrite_all(old_fd, data, COPY_SIZE, 0) == STORAGE_OK);
    struct stat before, after;
    CHECK(fstat(old_fd, &before) == 0);
    char names[512];

    /* refused at the last moment: the path keeps the old file, no copy */
    int asked = 0;
    errno = 0;
    CHECK(storage_replace_with_copy(root, COPY_DOC, old_fd, COPY_LEN, say_no, &asked) == -1);
    CHECK(errno == ECANCELED);
    CHECK(asked == 1);
    CHECK(storage_is_current(root, COPY_DOC, &before) == 1);
    CHECK(bucket_names(names, sizeof names) == 0);
    CHECK(strcmp(names, "7.data ") == 0);

    /* taken: the path has a fresh file with the first COPY_LEN bytes, and
     * the old descriptor writes where nobody reads */
    char at_rename[512];
    int fd = storage_replace_with_copy(root, COPY_DOC, old_fd, COPY_LEN, say_yes, at_rename);
    CHECK(fd >= 0);
    if (named)
        CHECK(strncmp(at_rename, "7.data.fence.", 13) == 0 || strstr(at_rename, " 7.data.fence."));
    else
        CHECK(strcmp(at_rename, "7.data ") == 0);
    CHECK(fstat(fd, &after) == 0);
    CHECK(after.st_ino != before.st_ino);
    CHECK(after.st_size == COPY_LEN);
    CHECK((after.st_mode & 07777) == STORAGE_FILE_MODE);
    CHECK(storage_is_current(root, COPY_DOC, &before) == 0);
    CHECK(storage_is_current(root, COPY_DOC, &after) == 1);
    CHECK(storage_pwrite_all(old_fd, "late", 4, 0) == STORAGE_OK);
    CHECK(pread(fd, got, COPY_LEN, 0) == COPY_LEN);
    CHECK(memcmp(got, data, COPY_LEN) == 0);
    CHECK(bucket_names(names, sizeof names) == 0);
    CHECK(strcmp(names, "7.data ") == 0);
    CHECK(close(fd) == 0);
    CHECK(close(old_fd) == 0);
    return 0;
}

static void test_replace_with_copy(void **state)
{
    (void)state;
    assert_int_equal(copy_refused_then_taken(false), 0);
}

/* Names of copies another process took, for every count this one may be
 * at (a copy names itself after its pid and a count): made, or removed. */
static int other_copies(bool make)
{
    for (int n = 0; n < 64; n++) {
        char rel[64], p[256];
        snprintf(rel, sizeof rel, "00/7.data.fence.%ld.%d", (long)getpid(), n);
        file_path(p, sizeof p, rel);
        int fd = make ? open(p, O_WRONLY | O_CREAT | O_EXCL, 0600) : 0;
        CHECK(make ? fd >= 0 && write(fd, "x", 1) == 1 && close(fd) == 0 : unlink(p) == 0);
    }
    return 0;
}

/* COPY_DOC's file, COPY_SIZE zero bytes, open; its fstat in *st. -1 on
 * failure. */
static int zero_document(struct stat *st)
{
    static const unsigned char zeros[COPY_SIZE];
    int fd = storage_create(root, COPY_DOC);
    if (fd >= 0 &&
        (storage_pwrite_all(fd, zeros, COPY_SIZE, 0) != STORAGE_OK || fstat(fd, st) != 0)) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* In the child: every name taken (the copy tries a few, then gives up
 * with EEXIST, touching none of them), then the copies as usual. */
static int copies_without_tmpfile(void)
{
    struct stat before;
    int old_fd = zero_document(&before);
    CHECK(old_fd >= 0);
    CHECK(other_copies(true) == 0);
    char at_rename[512];
    errno = 0;
    CHECK(storage_replace_with_copy(root, COPY_DOC, old_fd, COPY_LEN, say_yes, at_rename) == -1);
    CHECK(errno == EEXIST);
    CHECK(storage_is_current(root, COPY_DOC, &before) == 1);
    char p[256];
    snprintf(at_rename, sizeof at_rename, "00/7.data.fence.%ld.0", (long)getpid());
    file_path(p, sizeof p, at_rename);
    struct stat st;
    CHECK(stat(p, &st) == 0 && st.st_size == 1); /* not truncated by the tries */
    CHECK(other_copies(false) == 0);
    CHECK(close(old_fd) == 0);
    return copy_refused_then_taken(true);
}

/* Runs body in a child whose system call nr fails with err, when its
 * argument 2 has a bit of arg2_bits (0: every call), by a seccomp filter;
 * fails the test unless body returned 0 there. */
static void in_child_failing(long nr, uint32_t arg2_bits, int err, int (*body)(void))
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct sock_filter prog[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)nr, 0, 3),
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[2])),
            BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, arg2_bits ? arg2_bits : 0xffffffffu, 0, 1),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (uint32_t)err),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        /* with arg2_bits 0, a call whose argument 2 is 0 must fail too */
        if (!arg2_bits)
            prog[3] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JA, 0, 0, 0);
        struct sock_fprog fprog = {.len = sizeof prog / sizeof prog[0], .filter = prog};
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
            prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog) != 0)
            _exit(2);
        _exit(body() == 0 ? 0 : 1);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static int filter_refuses_tmpfile(void)
{
    char dir[256];
    file_path(dir, sizeof dir, "");
    errno = 0;
    /* the filter must work, or the test would prove nothing */
    CHECK(open(dir, O_TMPFILE | O_RDWR, 0600) == -1 && errno == EOPNOTSUPP);
    return copies_without_tmpfile();
}

/* A filesystem without unnamed files (NFS): open(O_TMPFILE) answers
 * EOPNOTSUPP there, here by a seccomp filter in a child. The copy is then
 * a named file of its own, and neither a refused nor a taken copy leaves
 * one behind. */
static void test_replace_with_copy_without_tmpfile(void **state)
{
    (void)state;
    in_child_failing(SYS_openat, __O_TMPFILE & ~O_DIRECTORY, EOPNOTSUPP, filter_refuses_tmpfile);
}

/* The unnamed copy cannot be given its name (linkat fails with EIO): the
 * copy fails with that errno, and the document's file and bucket are as
 * they were. */
static int copy_cannot_be_named(void)
{
    struct stat before;
    int old_fd = zero_document(&before);
    CHECK(old_fd >= 0);
    char names[512];
    errno = 0;
    CHECK(storage_replace_with_copy(root, COPY_DOC, old_fd, COPY_LEN, say_yes, names) == -1);
    CHECK(errno == EIO);
    CHECK(storage_is_current(root, COPY_DOC, &before) == 1);
    CHECK(bucket_names(names, sizeof names) == 0);
    CHECK(strcmp(names, "7.data ") == 0);
    CHECK(close(old_fd) == 0);
    return 0;
}

static void test_replace_with_copy_unnamed_for_good(void **state)
{
    (void)state;
    in_child_failing(SYS_linkat, 0, EIO, copy_cannot_be_named);
}

static void test_errors_classified(void **state)
{
    (void)state;
    assert_int_equal(storage_classify_errno(ENOSPC), STORAGE_NO_SPACE);
    assert_int_equal(storage_classify_errno(EDQUOT), STORAGE_NO_SPACE);
    assert_int_equal(storage_classify_errno(EIO), STORAGE_ERROR);
    assert_int_equal(storage_classify_errno(EACCES), STORAGE_ERROR);
    assert_int_equal(storage_classify_errno(EBADF), STORAGE_ERROR);

    errno = 0;
    storage_result r = storage_pwrite_all(-1, "x", 1, 0);
    int e = errno;
    assert_int_equal(r, STORAGE_ERROR);
    assert_int_equal(e, EBADF);
    assert_int_equal(storage_sync(-1), STORAGE_ERROR);

    char p[256];
    file_path(p, sizeof p, "ro");
    int w = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    assert_true(w >= 0);
    assert_int_equal(close(w), 0);
    int ro = open(p, O_RDONLY | O_CLOEXEC);
    assert_true(ro >= 0);
    assert_int_equal(storage_pwrite_all(ro, "x", 1, 0), STORAGE_ERROR);
    assert_int_equal(close(ro), 0);

    /* No bucket directory to sync. */
    errno = 0;
    int rc = storage_sync_dir(root, 77);
    e = errno;
    assert_int_equal(rc, -1);
    assert_int_equal(e, ENOENT);
}

static void test_init(void **state)
{
    (void)state;
    char p[256], e[256];
    file_path(p, sizeof p, "a/b/c");
    assert_int_equal(storage_init(p, e, sizeof e), 0);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(storage_init(p, e, sizeof e), 0); /* again: already there */

    file_path(p, sizeof p, "x/y/");
    assert_int_equal(storage_init(p, e, sizeof e), 0);
    file_path(p, sizeof p, "x/y");
    assert_int_equal(stat(p, &st), 0);
    assert_true(S_ISDIR(st.st_mode));

    /* A regular file where the directory should be. */
    file_path(p, sizeof p, "plain");
    int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(close(fd), 0);
    e[0] = '\0';
    assert_int_equal(storage_init(p, e, sizeof e), -1);
    assert_non_null(strstr(e, p));
    assert_non_null(strstr(e, "not a directory"));

    file_path(p, sizeof p, "plain/sub");
    e[0] = '\0';
    assert_int_equal(storage_init(p, e, sizeof e), -1);
    assert_non_null(strstr(e, p));

    assert_int_equal(storage_init("", e, sizeof e), -1);
}

/* Files land where the rel path says, inside the root and nowhere else. */
static void test_create_follows_rel_path(void **state)
{
    (void)state;
    static const uint64_t ids[] = {1, 256, 0x1ff, 1000000007};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        int fd = storage_create(root, ids[i]);
        assert_true(fd >= 0);
        assert_int_equal(close(fd), 0);
        char rel[STORAGE_REL_PATH_MAX], p[256];
        storage_rel_path(ids[i], rel);
        file_path(p, sizeof p, rel);
        assert_int_equal(access(p, F_OK), 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rel_path),
        cmocka_unit_test_setup_teardown(test_create_mode_under_umask, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_truncates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_and_hash, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hash_large_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remove_idempotent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replace_with_copy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replace_with_copy_without_tmpfile, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replace_with_copy_unnamed_for_good, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors_classified, setup, teardown),
        cmocka_unit_test_setup_teardown(test_init, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_follows_rel_path, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
