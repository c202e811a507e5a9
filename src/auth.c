#include "chunkd/auth.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "chunkd/util.h"

int auth_hash_credential(const char *credential, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (EVP_Digest(credential, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
        return -1;
    util_hex(md, 32, out);
    return 0;
}

bool auth_credential_matches(const char *credential, size_t len, const char *stored_hash_hex)
{
    char got[65];
    if (len == 0 || auth_hash_credential(credential, len, got) != 0)
        return false;
    return auth_hash_matches(got, stored_hash_hex);
}

bool auth_hash_matches(const char *got, const char *stored_hash_hex)
{
    if (strlen(got) != 64 || strlen(stored_hash_hex) != 64)
        return false;
    /* Lowercase the stored side so an operator's uppercase hex still works. */
    char want[65];
    if (!util_parse_sha256_hex(stored_hash_hex, want))
        return false;
    return CRYPTO_memcmp(got, want, 64) == 0;
}
