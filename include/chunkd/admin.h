/* The admin endpoint: a small HTTP/1.1 listener on its own port
 * (admin_listen) for operators and load balancers.
 *   GET /health   200 "ok" when Redis and MySQL answer, else 503 and why
 *   GET /metrics  Prometheus text format (docs/OPERATIONS.md)
 * One request per connection, served on the admin thread with its own
 * backend handles, so a scrape never touches a worker. */
#ifndef CHUNKD_ADMIN_H
#define CHUNKD_ADMIN_H

#include <stddef.h>

#include "chunkd/config.h"
#include "chunkd/conn_limits.h"

typedef struct admin admin;

/* Binds admin_listen and starts the thread; with admin_listen empty,
 * returns a handle that does nothing. NULL with a reason in err. */
admin *admin_start(const chunkd_config *cfg, const char *node_id, conn_limits *limits,
                   char *err, size_t errlen);

/* The bound port, or 0 when disabled. */
int admin_port(const admin *a);

/* Stops and joins; accepts NULL. */
void admin_stop(admin *a);

#endif
