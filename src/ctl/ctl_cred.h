/* Upload credentials: 256-bit random tokens, stored only as a hash.
 *
 * The token is handed to the user as 64 lowercase hex digits; the server
 * keeps the SHA-256 of those 64 ASCII characters, again as lowercase hex,
 * in users.credential_hash. chunkd's auth must hash the same way. */
#ifndef CHUNKCTL_CRED_H
#define CHUNKCTL_CRED_H

#include <stddef.h>

#define CRED_BYTES 32
#define CRED_HEX_LEN (2 * CRED_BYTES)
#define CRED_HASH_HEX_LEN 64

/* Fills out with a new token from the OpenSSL CSPRNG; -1 with a reason in
 * err when the generator fails. */
int cred_generate(char out[CRED_HEX_LEN + 1], char *err, size_t errlen);

/* Fills out with the hex SHA-256 of cred (a NUL-terminated string). */
int cred_hash(const char *cred, char out[CRED_HASH_HEX_LEN + 1], char *err, size_t errlen);

/* Overwrites a secret so it does not linger in memory after use. */
void cred_wipe(void *p, size_t len);

#endif
