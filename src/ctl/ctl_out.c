/* Checked stdout writes and shared formatting for chunkctl's reports. */
#include "ctl_out.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static bool write_failed;

void out_printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (vprintf(fmt, ap) < 0)
        write_failed = true;
    va_end(ap);
}

void out_text(const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (putchar(c < 0x20 || c == 0x7f ? '?' : c) == EOF)
            write_failed = true;
    }
}

int out_finish(char *err, size_t errlen)
{
    if (fflush(stdout) != 0 || write_failed || ferror(stdout)) {
        snprintf(err, errlen, "writing output failed");
        return -1;
    }
    return 0;
}

int out_json(json_t *v, char *err, size_t errlen)
{
    if (!v) {
        snprintf(err, errlen, "building JSON output failed");
        return 1;
    }
    /* Six significant digits: a percentage reads 33.3, not 33.299999999999997. */
    int rc = json_dumpf(v, stdout, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(6));
    json_decref(v);
    if (rc != 0 || putchar('\n') == EOF)
        write_failed = true;
    return out_finish(err, errlen) == 0 ? 0 : 1;
}

json_t *out_json_bytes(const char *s, size_t n)
{
    json_t *v = json_stringn(s, n);
    if (v)
        return v;
    /* json_stringn refuses only invalid UTF-8 (or a failed allocation). */
    char buf[4096];
    size_t len = 0;
    for (size_t i = 0; i < n && len + 5 < sizeof buf; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f)
            buf[len++] = (char)c;
        else
            len += (size_t)snprintf(buf + len, sizeof buf - len, "\\x%02x", c);
    }
    return json_stringn(buf, len);
}

json_t *out_json_str_or_null(const char *s)
{
    return s[0] ? out_json_bytes(s, strlen(s)) : json_null();
}

int out_set(json_t *obj, const char *key, json_t *val)
{
    if (!val)
        return -1;
    return json_object_set_new(obj, key, val) == 0 ? 0 : -1;
}

void out_iso_ms(int64_t ms, char *out, size_t outlen)
{
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    if (ms < 0 || !gmtime_r(&sec, &tm)) {
        snprintf(out, outlen, "-");
        return;
    }
    snprintf(out, outlen, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

void out_duration(int64_t ms, char *out, size_t outlen)
{
    int64_t s = ms < 0 ? 0 : ms / 1000;
    if (s < 60)
        snprintf(out, outlen, "%" PRId64 "s", s);
    else if (s < 3600)
        snprintf(out, outlen, "%" PRId64 "m%02" PRId64 "s", s / 60, s % 60);
    else if (s < 86400)
        snprintf(out, outlen, "%" PRId64 "h%02" PRId64 "m", s / 3600, s % 3600 / 60);
    else
        snprintf(out, outlen, "%" PRId64 "d%02" PRId64 "h", s / 86400, s % 86400 / 3600);
}
