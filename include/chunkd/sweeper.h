/* The expiry sweep: uploads idle past upload_expiry_s are failed with reason
 * 'expired', their files removed and their Redis state deleted.
 *
 * Runs on its own thread with its own Redis and MySQL handles, so a sweep
 * never delays a connection. Safe with several instances sweeping at once:
 * the sweeper takes an upload's lease before expiring it (an upload being
 * written is never touched), and only the instance whose conditional UPDATE
 * moved the row to 'failed' removes anything, but for the leftovers of
 * failed uploads (sweeper_remove_leftovers). */
#ifndef CHUNKD_SWEEPER_H
#define CHUNKD_SWEEPER_H

#include <stddef.h>
#include <stdint.h>

#include "chunkd/config.h"
#include "chunkd/docstore_mysql.h"
#include "chunkd/metrics.h"
#include "chunkd/state_redis.h"

typedef struct sweeper sweeper;

/* Starts the thread (or does nothing useful when sweep_interval_s is 0).
 * NULL with a reason in err. */
sweeper *sweeper_start(const chunkd_config *cfg, const char *node_id, char *err, size_t errlen);

/* Stops and joins the thread; accepts NULL. */
void sweeper_stop(sweeper *sw);

/* One pass: returns how many uploads were expired, or -1 when a backend
 * failed (the reason is logged). token names the sweeper's leases. A
 * pass reads the candidates a page at a time and ends early, between
 * pages, once stopfd (-1: none) is readable. */
int sweeper_run_once(const chunkd_config *cfg, const char *token, redis_state *rs, docstore *ds,
                     metrics *m, int stopfd);

/* After each pass, the files of uploads failed in the last within_s
 * seconds that are still there are removed: a failure whose removal did
 * not work (EIO, a bucket out of reach) or whose UPDATE's answer was lost
 * leaves one, and no later pass of the expiry sweep lists a failed row. A
 * failed row outlives no file, and removing one twice is harmless, so
 * instances need not agree on who does it. Returns how many it removed,
 * with in *kept how many it found but could not remove (logged; the
 * thread looks again at the next pass), or -1 when MySQL failed (logged).
 * Pages end early as in sweeper_run_once. */
int sweeper_remove_leftovers(const chunkd_config *cfg, docstore *ds, int64_t within_s, int stopfd,
                             size_t *kept);

#endif
