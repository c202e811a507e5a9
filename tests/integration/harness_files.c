/* Harness: random files, SHA-256, and where the server keeps its files. */
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

void it_random_bytes(void *buf, size_t n)
{
    unsigned char *p = buf;
    while (n > 0) {
        int step = n > (1 << 20) ? (1 << 20) : (int)n;
        if (RAND_bytes(p, step) != 1) {
            fprintf(stderr, "it: RAND_bytes failed\n");
            abort();
        }
        p += step;
        n -= (size_t)step;
    }
}

unsigned char *it_random_payload(size_t n, char sha[65])
{
    unsigned char *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "it: out of memory for %zu random bytes\n", n);
        abort();
    }
    it_random_bytes(p, n);
    it_sha256_hex(p, n, sha);
    return p;
}

static void hex(const unsigned char *d, unsigned n, char *out)
{
    for (unsigned i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

void it_sha256_hex(const void *p, size_t n, char out[65])
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned dl = 0;
    if (EVP_Digest(p, n, d, &dl, EVP_sha256(), NULL) != 1 || dl != 32) {
        fprintf(stderr, "it: EVP_Digest failed\n");
        abort();
    }
    hex(d, dl, out);
}

/* SHA-256 of what fd holds from its current position to the end. */
static int sha256_fd(int fd, char out[65])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(ctx);
        return -1;
    }
    static __thread unsigned char buf[1 << 16];
    int rc = 0;
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -1;
            break;
        }
        if (r == 0)
            break;
        if (EVP_DigestUpdate(ctx, buf, (size_t)r) != 1) {
            rc = -1;
            break;
        }
    }
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned dl = 0;
    if (rc == 0 && (EVP_DigestFinal_ex(ctx, d, &dl) != 1 || dl != 32))
        rc = -1;
    EVP_MD_CTX_free(ctx);
    if (rc == 0)
        hex(d, dl, out);
    return rc;
}

int it_sha256_file(const char *path, char out[65])
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "it: open %s: %s\n", path, strerror(errno));
        return -1;
    }
    int rc = sha256_fd(fd, out);
    if (rc != 0)
        fprintf(stderr, "it: hashing %s: %s\n", path, strerror(errno));
    close(fd);
    return rc;
}

static int fill_fd(int fd, int64_t size, char sha_out[65])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(ctx);
        return -1;
    }
    size_t cap = 1 << 20;
    unsigned char *buf = malloc(cap);
    int rc = buf ? 0 : -1;
    for (int64_t left = size; rc == 0 && left > 0;) {
        size_t n = left > (int64_t)cap ? cap : (size_t)left;
        it_random_bytes(buf, n);
        if (EVP_DigestUpdate(ctx, buf, n) != 1) {
            rc = -1;
            break;
        }
        for (size_t off = 0; off < n;) {
            ssize_t w = write(fd, buf + off, n - off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                fprintf(stderr, "it: write: %s\n", strerror(errno));
                rc = -1;
                break;
            }
            off += (size_t)w;
        }
        left -= (int64_t)n;
    }
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned dl = 0;
    if (rc == 0 && (EVP_DigestFinal_ex(ctx, d, &dl) != 1 || dl != 32))
        rc = -1;
    if (rc == 0)
        hex(d, dl, sha_out);
    free(buf);
    EVP_MD_CTX_free(ctx);
    return rc;
}

int it_make_file(const char *path, int64_t size, char sha_out[65])
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf(stderr, "it: create %s: %s\n", path, strerror(errno));
        return -1;
    }
    int rc = fill_fd(fd, size, sha_out);
    if (close(fd) != 0) {
        fprintf(stderr, "it: close %s: %s\n", path, strerror(errno));
        rc = -1;
    }
    return rc;
}

int it_make_memfd(int64_t size, char sha_out[65])
{
    int fd = memfd_create("it-upload", MFD_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "it: memfd_create: %s\n", strerror(errno));
        return -1;
    }
    if (fill_fd(fd, size, sha_out) != 0 || lseek(fd, 0, SEEK_SET) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Written out here rather than taken from storage.h, so a change of the
 * server's layout that the docs do not announce fails the tests. */
static unsigned it_bucket(int64_t id)
{
    return (unsigned)((id / 256) % 256); /* docs/OPERATIONS.md, layout 2 */
}

void it_data_rel_path(int64_t id, char *out, size_t outlen)
{
    snprintf(out, outlen, "%02x/%lld.data", it_bucket(id), (long long)id);
}

void it_upload_path(const it_server *s, int64_t id, char *out, size_t outlen)
{
    char rel[48];
    it_data_rel_path(id, rel, sizeof rel);
    snprintf(out, outlen, "%s/%s", s->storage_dir, rel);
}

/* Files in the document's bucket named "<id>" or "<id>.<anything>" other
 * than "<id>.data": leftovers such as temporary or partial files. */
int it_stray_files(const it_server *s, int64_t id)
{
    char dir[IT_PATH_MAX + 8], prefix[32], data[40];
    snprintf(dir, sizeof dir, "%s/%02x", s->storage_dir, it_bucket(id));
    int pl = snprintf(prefix, sizeof prefix, "%lld", (long long)id);
    snprintf(data, sizeof data, "%lld.data", (long long)id);
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "it: opendir %s: %s\n", dir, strerror(errno));
        return -1;
    }
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, prefix, (size_t)pl) != 0 ||
            (e->d_name[pl] != '\0' && e->d_name[pl] != '.') || strcmp(e->d_name, data) == 0)
            continue;
        fprintf(stderr, "it: stray file %s/%s\n", dir, e->d_name);
        n++;
    }
    closedir(d);
    return n;
}

void it_assert_stored(const it_server *s, int64_t id, int64_t size, const char *sha)
{
    it_doc d;
    it_assert_doc_status(id, "completed", &d);
    char rel[64];
    it_data_rel_path(id, rel, sizeof rel);
    assert_false(d.file_path_null);
    assert_string_equal(d.file_path, rel);
    assert_false(d.sha256_null);
    assert_string_equal(d.sha256, sha);
    assert_false(d.completed_at_null);
    assert_true(d.failure_reason_null);
    assert_int_equal(d.filesize, size);

    char path[IT_PATH_MAX + sizeof d.file_path + 2];
    snprintf(path, sizeof path, "%s/%s", s->storage_dir, d.file_path);
    struct stat st;
    if (stat(path, &st) != 0)
        fprintf(stderr, "it: stored file %s: %s\n", path, strerror(errno));
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0640);
    assert_int_equal(st.st_size, size);
    char got[65];
    assert_int_equal(it_sha256_file(path, got), 0);
    assert_string_equal(got, sha);

    assert_int_equal(it_stray_files(s, id), 0);
    assert_int_equal(it_redis_wait_gone(id, 5000), 0);
}
