/* Credential generation and hashing with OpenSSL. */
#include "ctl_cred.h"

#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

static void hex_encode(const unsigned char *in, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0x0f];
    }
    out[2 * len] = '\0';
}

static void openssl_reason(const char *what, char *err, size_t errlen)
{
    unsigned long e = ERR_get_error();
    char buf[256] = "no reason given";
    if (e != 0)
        ERR_error_string_n(e, buf, sizeof buf);
    snprintf(err, errlen, "%s: %s", what, buf);
    ERR_clear_error();
}

int cred_generate(char out[CRED_HEX_LEN + 1], char *err, size_t errlen)
{
    unsigned char raw[CRED_BYTES];
    if (RAND_bytes(raw, sizeof raw) != 1) {
        openssl_reason("random generator", err, errlen);
        return -1;
    }
    hex_encode(raw, sizeof raw, out);
    cred_wipe(raw, sizeof raw);
    return 0;
}

int cred_hash(const char *cred, char out[CRED_HASH_HEX_LEN + 1], char *err, size_t errlen)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(cred, strlen(cred), md, &mdlen, EVP_sha256(), NULL) != 1) {
        openssl_reason("SHA-256", err, errlen);
        return -1;
    }
    if (mdlen * 2 != CRED_HASH_HEX_LEN) {
        snprintf(err, errlen, "SHA-256: unexpected digest length %u", mdlen);
        return -1;
    }
    hex_encode(md, mdlen, out);
    return 0;
}

void cred_wipe(void *p, size_t len)
{
    OPENSSL_cleanse(p, len);
}
