/* Output of the operator commands: checked writes to stdout, JSON, and the
 * small formatting helpers the tables and reports share. */
#ifndef CHUNKCTL_OUT_H
#define CHUNKCTL_OUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* printf to stdout; a failed write is remembered for out_finish. */
void out_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Writes s with control characters shown as '?', so a name or a Redis
 * value cannot drive the operator's terminal. */
void out_text(const char *s);
/* Flushes stdout; -1 with a reason when any write since the start failed. */
int out_finish(char *err, size_t errlen);

/* Prints v as one compact line and drops the reference; v NULL (a failed
 * json_pack) is an error. Returns 0 or 1 (the exit status) with a reason. */
int out_json(json_t *v, char *err, size_t errlen);

/* A JSON string of n bytes: the bytes themselves when they are UTF-8,
 * else with each byte outside printable ASCII written as \xNN. NULL only
 * when out of memory. */
json_t *out_json_bytes(const char *s, size_t n);
/* s when not empty, else JSON null. */
json_t *out_json_str_or_null(const char *s);
/* Sets key on obj to val (stolen); -1 when val is NULL or the set fails. */
int out_set(json_t *obj, const char *key, json_t *val);

/* Unix ms as "2026-11-30T10:00:00.123Z". */
void out_iso_ms(int64_t ms, char *out, size_t outlen);
/* A duration as "45s", "12m05s", "3h07m" or "2d04h". */
void out_duration(int64_t ms, char *out, size_t outlen);

#endif
