/* Read-only look at chunkd's Redis keys for chunkctl (key schema in
 * docs/OPERATIONS.md): the upload hash as stored, with its TTL, and the
 * holder of an upload's lease. The parsed resume state comes from
 * rstate_get; this adds what the server itself never needs to read. */
#ifndef CHUNKCTL_REDIS_H
#define CHUNKCTL_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "chunkd/config.h"

typedef struct ctl_redis ctl_redis;

/* Connects with the redis_* settings of cfg (AUTH and SELECT included);
 * NULL with a reason in err. cfg must outlive the handle. */
ctl_redis *ctl_redis_connect(const chunkd_config *cfg, char *err, size_t errlen);
void ctl_redis_free(ctl_redis *r); /* accepts NULL */

/* "<prefix>upload:<id>" and "<prefix>lease:<id>", as the server names them. */
void ctl_redis_upload_key(const chunkd_config *cfg, uint64_t doc, char *out, size_t size);
void ctl_redis_lease_key(const chunkd_config *cfg, uint64_t doc, char *out, size_t size);

typedef struct ctl_lease {
    bool held;                    /* by a writer */
    bool ended;                   /* the upload's end marker (RSTATE_LEASE_ENDED), not held */
    char holder[2 * CFG_STR_MAX]; /* the writer's token, <node_id>/<random> */
    char node[2 * CFG_STR_MAX];   /* the token up to its last '/' */
    int64_t ttl_ms;               /* time left; -1 when the key has no TTL */
} ctl_lease;

/* Sets the `path` field of the upload's hash (storage-migrate; the caller
 * has just seen the hash exist, and no chunkd runs), only while the hash is
 * still there: *set says whether it was. 0, or -1 with a reason. */
int ctl_redis_set_upload_path(ctl_redis *r, uint64_t doc, const char *path, bool *set,
                              char *err, size_t errlen);

/* Who holds the upload's lease, if anyone. 0, or -1 with a reason. */
int ctl_redis_lease(ctl_redis *r, uint64_t doc, ctl_lease *out, char *err, size_t errlen);

/* Every field of the upload hash as a JSON object of strings (empty when
 * there is no key; the caller decrefs) and the key's TTL in seconds (-2 no
 * key, -1 no TTL). 0, or -1 with a reason. */
int ctl_redis_upload_fields(ctl_redis *r, uint64_t doc, json_t **fields, int64_t *ttl_s,
                            char *err, size_t errlen);

#endif
