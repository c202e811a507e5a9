/* Shared by the fuzz targets: a failed check that libFuzzer reports as a
 * crash, a small deterministic generator for cutting inputs into pieces, and
 * the check every answer line must pass. */
#ifndef CHUNKD_FUZZ_UTIL_H
#define CHUNKD_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* libFuzzer's entry points; declared here for -Wmissing-prototypes. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Prints where and why, then aborts: libFuzzer saves the input as a crash. */
void fuzz_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));

#define FUZZ_CHECK(cond, ...)                                                                \
    do {                                                                                     \
        if (!(cond))                                                                         \
            fuzz_fail(__FILE__, __LINE__, "check failed: " #cond "; " __VA_ARGS__);          \
    } while (0)

/* splitmix64: piece sizes must depend on the input alone, so that a saved
 * crash replays the same way. */
typedef struct fuzz_rng {
    uint64_t s;
} fuzz_rng;

void fuzz_rng_seed(fuzz_rng *r, uint64_t seed);
uint64_t fuzz_rng_next(fuzz_rng *r);

/* The size of the next piece to feed: 1..max, biased towards small pieces
 * (where framing bugs live) with an occasional large one. */
size_t fuzz_piece_size(fuzz_rng *r, size_t max);

/* Checks that data[0..len) is one answer line as docs/PROTOCOL.md defines
 * it: a JSON object with "v": 1, compact, ending in exactly one '\n' and
 * holding no other. Returns the parsed object (the caller owns it). */
json_t *fuzz_check_answer_line(const char *data, size_t len);

/* Marks buf[len..cap) unreadable under ASan, so that a parser reading past
 * the bytes it was given is reported even inside a larger buffer. */
void fuzz_poison_tail(const char *buf, size_t len, size_t cap);
void fuzz_unpoison(const char *buf, size_t cap);

#endif
