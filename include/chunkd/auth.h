/* Credentials: users present a random token; the database keeps only its
 * SHA-256, and the comparison takes the same time whatever matches. */
#ifndef CHUNKD_AUTH_H
#define CHUNKD_AUTH_H

#include <stdbool.h>
#include <stddef.h>

/* Hex SHA-256 of credential into out[65]; -1 if hashing failed. */
int auth_hash_credential(const char *credential, size_t len, char out[65]);

/* True when credential hashes to stored_hash_hex (64 hex digits). */
bool auth_credential_matches(const char *credential, size_t len, const char *stored_hash_hex);

/* True when got_hex (auth_hash_credential's output) is stored_hash_hex;
 * false for an empty got_hex. For a credential hashed before its user's
 * row is read. */
bool auth_hash_matches(const char *got_hex, const char *stored_hash_hex);

#endif
