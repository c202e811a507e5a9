/* SHA-256 of a file through OpenSSL's EVP interface. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "client_io.h"

#define READ_SIZE (1024 * 1024)

/* pread from offset 0: the descriptor's own offset is left as it was. */
static int hash_fd(int fd, const char *path, EVP_MD_CTX *ctx, unsigned char *buf, cu_error *err)
{
    for (off_t at = 0;;) {
        ssize_t n = pread(fd, buf, READ_SIZE, at);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            cu_err_set(err, 0, "file", "%s: read: %s", path, strerror(errno));
            return -1;
        }
        if (n == 0)
            return 0;
        at += n;
        if (EVP_DigestUpdate(ctx, buf, (size_t)n) != 1) {
            cu_err_set(err, 0, "file", "%s: SHA-256 update failed", path);
            return -1;
        }
    }
}

int cu_sha256_file(const char *path, char out[65], cu_error *err)
{
    cu_error scratch;

    if (err == NULL)
        err = &scratch;
    cu_err_clear(err);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        cu_err_set(err, 0, "file", "%s: %s", path, strerror(errno));
        return -1;
    }
    int rc = cu_sha256_fd(fd, path, out, err);
    /* Read-only descriptor: a close failure cannot lose data. */
    (void)close(fd);
    return rc;
}

int cu_sha256_fd(int fd, const char *path, char out[65], cu_error *err)
{
    static const char hex[] = "0123456789abcdef";
    cu_error scratch;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    unsigned char *buf = NULL;
    EVP_MD_CTX *ctx = NULL;
    int rc = -1;

    if (err == NULL)
        err = &scratch;
    cu_err_clear(err);
    buf = malloc(READ_SIZE);
    ctx = EVP_MD_CTX_new();
    if (buf == NULL || ctx == NULL) {
        cu_err_set(err, 0, "file", "%s: out of memory for hashing", path);
        goto out;
    }
    if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        cu_err_set(err, 0, "file", "%s: SHA-256 unavailable", path);
        goto out;
    }
    if (hash_fd(fd, path, ctx, buf, err) < 0)
        goto out;
    if (EVP_DigestFinal_ex(ctx, md, &mdlen) != 1 || mdlen != 32) {
        cu_err_set(err, 0, "file", "%s: SHA-256 final failed", path);
        goto out;
    }
    for (unsigned int i = 0; i < mdlen; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
    rc = 0;
out:
    EVP_MD_CTX_free(ctx);
    free(buf);
    return rc;
}
