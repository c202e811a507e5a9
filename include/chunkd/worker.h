/* Worker threads. Each owns an epoll loop, its connections, and its own
 * Redis and MySQL handles; the acceptor hands it connections through a small
 * mutex-protected queue and an eventfd wake-up (the memcached pattern). */
#ifndef CHUNKD_WORKER_H
#define CHUNKD_WORKER_H

#include <stddef.h>

#include "chunkd/config.h"
#include "chunkd/conn_limits.h"
#include "chunkd/syncer.h"
#include "chunkd/upload.h"

typedef struct worker worker;

/* Creates the worker's loop and queue, so connections can be dispatched to
 * it before its thread runs; sync says how its syncer syncs files (its
 * metrics field is ignored: the worker gives its syncer a block of its
 * own). NULL with a reason in err. */
worker *worker_create(int id, const chunkd_config *cfg, const char *node_id,
                      const char *boot_id, conn_limits *limits, const syncer_options *sync,
                      char *err, size_t errlen);
int worker_start(worker *w, char *err, size_t errlen);

/* Hands a connected socket, counted in the limits under ip, to the worker
 * (ownership of fd and of the count pass on success; on -1 the caller still
 * owns both). Thread-safe. */
int worker_dispatch(worker *w, int fd, const char *ip, const char *peer);

/* Asks the worker to close its connections and end. Thread-safe. */
int worker_stop(worker *w);

/* Waits for the thread (if started) and frees the worker. Its metrics
 * block goes with it: stop the metrics reader first. */
void worker_join_and_free(worker *w);

#endif
