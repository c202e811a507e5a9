/* The bytes every benchmark upload sends: a fixed pseudo-random pattern, so
 * nothing on the way can compress it, and so that the SHA-256 of a file of
 * any size is known before the clock starts. File byte i is
 * pattern[i % LG_PATTERN]; `data` holds the pattern plus its first
 * LG_PIECE bytes again, so any slice of up to LG_PIECE bytes starting
 * anywhere is contiguous in memory and is sent without copying. */
#ifndef BENCH_LG_PAYLOAD_H
#define BENCH_LG_PAYLOAD_H

#include <stdint.h>

enum {
    LG_PATTERN = 4 * 1024 * 1024 + 4093, /* not a multiple of any chunk size */
    LG_PIECE = 1024 * 1024,              /* longest slice handed to one writev */
};

typedef struct lg_payload {
    unsigned char *data;
} lg_payload;

int lg_payload_init(lg_payload *p);
void lg_payload_free(lg_payload *p);

/* Start of the contiguous slice at file offset pos; *len is cut to what is
 * contiguous (at most LG_PIECE). */
const unsigned char *lg_payload_at(const lg_payload *p, int64_t pos, int64_t *len);

/* SHA-256 of a file of `size` bytes, as 64 lowercase hex digits. */
int lg_payload_sha256(const lg_payload *p, int64_t size, char out[65]);

#endif
