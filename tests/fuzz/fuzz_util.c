#include "fuzz_util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sanitizer/asan_interface.h>

void fuzz_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

void fuzz_rng_seed(fuzz_rng *r, uint64_t seed)
{
    r->s = seed;
}

uint64_t fuzz_rng_next(fuzz_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

size_t fuzz_piece_size(fuzz_rng *r, size_t max)
{
    if (max <= 1)
        return 1;
    uint64_t x = fuzz_rng_next(r);
    size_t bound;
    switch (x & 3) {
    case 0: bound = 1; break;
    case 1: bound = 4; break;
    case 2: bound = 32; break;
    default: bound = max; break;
    }
    if (bound > max)
        bound = max;
    return 1 + (size_t)((x >> 2) % bound);
}

static void check_error_fields(json_t *o)
{
    json_t *code = json_object_get(o, "code");
    json_t *reason = json_object_get(o, "reason");
    json_t *message = json_object_get(o, "message");
    FUZZ_CHECK(json_is_integer(code), "an error answer carries a numeric code");
    json_int_t c = json_integer_value(code);
    FUZZ_CHECK(c >= 400 && c <= 599, "error code %lld", (long long)c);
    FUZZ_CHECK(json_is_string(reason) && json_string_length(reason) > 0,
               "an error answer carries a reason");
    FUZZ_CHECK(json_is_string(message), "an error answer carries a message");
}

json_t *fuzz_check_answer_line(const char *data, size_t len)
{
    FUZZ_CHECK(len >= 2, "answer of %zu bytes", len);
    FUZZ_CHECK(data[len - 1] == '\n', "an answer ends in a newline");
    FUZZ_CHECK(memchr(data, '\n', len - 1) == NULL, "an answer is exactly one line");
    json_error_t jerr;
    json_t *o = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    FUZZ_CHECK(o != NULL, "answer is not JSON (%s): %.*s", jerr.text, (int)len, data);
    FUZZ_CHECK(json_is_object(o), "answer is not an object: %.*s", (int)len, data);
    json_t *v = json_object_get(o, "v");
    FUZZ_CHECK(json_is_integer(v) && json_integer_value(v) == 1, "answer without \"v\":1");
    json_t *status = json_object_get(o, "status");
    json_t *event = json_object_get(o, "event");
    FUZZ_CHECK((status != NULL) != (event != NULL), "an answer has status or event: %.*s",
               (int)len, data);
    if (event) {
        FUZZ_CHECK(json_is_string(event) && strcmp(json_string_value(event), "progress") == 0,
                   "unknown event");
    } else {
        FUZZ_CHECK(json_is_string(status), "status is a string");
        const char *s = json_string_value(status);
        FUZZ_CHECK(strcmp(s, "ok") == 0 || strcmp(s, "SUCCESS") == 0 || strcmp(s, "error") == 0,
                   "unknown status %s", s);
        if (strcmp(s, "error") == 0)
            check_error_fields(o);
    }
    return o;
}

void fuzz_poison_tail(const char *buf, size_t len, size_t cap)
{
    if (cap > len)
        ASAN_POISON_MEMORY_REGION(buf + len, cap - len);
}

void fuzz_unpoison(const char *buf, size_t cap)
{
    ASAN_UNPOISON_MEMORY_REGION(buf, cap);
}
