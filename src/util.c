#include "chunkd/util.h"

#include <pthread.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t clock_ms(clockid_t id)
{
    struct timespec ts;
    if (clock_gettime(id, &ts) != 0)
        return 0; /* cannot fail for these clocks on Linux */
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t util_mono_ms(void) { return clock_ms(CLOCK_MONOTONIC); }
int64_t util_wall_ms(void) { return clock_ms(CLOCK_REALTIME); }

void util_hex(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

int util_parse_sha256_hex(const char *s, char out[65])
{
    for (int i = 0; i < 64; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'F')
            c = (char)(c - 'A' + 'a');
        else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return 0;
        out[i] = c;
    }
    if (s[64] != '\0')
        return 0;
    out[64] = '\0';
    return 1;
}

int util_parse_i64(const char *s, int64_t *out)
{
    if (!s || !*s)
        return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || end == s)
        return -1;
    *out = v;
    return 0;
}

void util_strlcpy(char *dst, const char *src, size_t size)
{
    if (size == 0)
        return;
    size_t n = strnlen(src, size - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

int util_boot_id(char out[40])
{
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (!f)
        return -1;
    char buf[64];
    int rc = fgets(buf, sizeof buf, f) ? 0 : -1;
    fclose(f);
    if (rc != 0)
        return -1;
    buf[strcspn(buf, "\n")] = '\0';
    util_strlcpy(out, buf, 40);
    return out[0] ? 0 : -1;
}

void util_name_thread(const char *name)
{
    char shortened[16];
    util_strlcpy(shortened, name, sizeof shortened);
    /* Fails only for a name that is too long, which cannot happen here. */
    (void)pthread_setname_np(pthread_self(), shortened);
}
