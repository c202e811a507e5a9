/* Small helpers shared by several modules. */
#ifndef CHUNKD_UTIL_H
#define CHUNKD_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Milliseconds on the monotonic clock (for timeouts) and the wall clock
 * (for timestamps that leave the process). */
int64_t util_mono_ms(void);
int64_t util_wall_ms(void);

/* Lowercase hex of n bytes into out (2n+1 bytes, NUL-terminated). */
void util_hex(const unsigned char *in, size_t n, char *out);

/* True when s is exactly 64 hex digits; copies it lowercased into out[65]. */
int util_parse_sha256_hex(const char *s, char out[65]);

/* Parses a decimal int64 from a NUL-terminated string; -1 on any junk,
 * sign where not allowed, or overflow. */
int util_parse_i64(const char *s, int64_t *out);

/* The kernel's boot id (changes at every boot) into out[40]; -1 if unknown. */
int util_boot_id(char out[40]);

/* Copies src into dst[size], cutting it short if needed; always terminated. */
void util_strlcpy(char *dst, const char *src, size_t size);

/* Names the calling thread (at most 15 characters are kept), so top -H,
 * ps -L and gdb tell chunkd's threads apart. Best effort. */
void util_name_thread(const char *name);

#endif
