/* The benchmark payload: see lg_payload.h. */
#include "lg_payload.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

int lg_payload_init(lg_payload *p)
{
    p->data = malloc((size_t)LG_PATTERN + LG_PIECE);
    if (!p->data)
        return -1;
    /* xorshift64*: fixed seed, so every run sends the same bytes. */
    uint64_t x = 0x9e3779b97f4a7c15u;
    for (size_t i = 0; i < (size_t)LG_PATTERN; i += 8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        uint64_t v = x * 0x2545f4914f6cdd1du;
        size_t n = LG_PATTERN - i < 8 ? LG_PATTERN - i : 8;
        memcpy(p->data + i, &v, n);
    }
    memcpy(p->data + LG_PATTERN, p->data, LG_PIECE);
    return 0;
}

void lg_payload_free(lg_payload *p)
{
    free(p->data);
    p->data = NULL;
}

const unsigned char *lg_payload_at(const lg_payload *p, int64_t pos, int64_t *len)
{
    if (*len > LG_PIECE)
        *len = LG_PIECE;
    return p->data + pos % LG_PATTERN;
}

int lg_payload_sha256(const lg_payload *p, int64_t size, char out[65])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(ctx);
        return -1;
    }
    int64_t pos = 0;
    while (pos < size) {
        int64_t len = size - pos;
        const unsigned char *s = lg_payload_at(p, pos, &len);
        if (EVP_DigestUpdate(ctx, s, (size_t)len) != 1) {
            EVP_MD_CTX_free(ctx);
            return -1;
        }
        pos += len;
    }
    unsigned char md[32];
    unsigned int mdlen = 0;
    int rc = EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen == 32 ? 0 : -1;
    EVP_MD_CTX_free(ctx);
    for (int i = 0; rc == 0 && i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    return rc;
}
