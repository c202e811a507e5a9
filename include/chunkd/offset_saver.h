/* Offset saves that do not block the worker: one non-blocking Redis
 * connection per worker, driven by the worker's epoll loop (hiredis' async
 * API with chunkd's own event hooks, as redis' ae.c drives its clients).
 *
 * A chunk is acknowledged only once Redis has its offset, but the worker
 * does not wait for that: while the save travels, it reads and writes the
 * next chunks and serves its other connections, and the progress events go
 * out when the reply arrives. Replies come back in the order the saves were
 * sent. Everything here runs on the worker's thread. */
#ifndef CHUNKD_OFFSET_SAVER_H
#define CHUNKD_OFFSET_SAVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunkd/config.h"
#include "chunkd/metrics.h"

typedef struct offset_saver offset_saver;

/* A save's outcome: ok with Redis' integer reply, or not ok with why. */
typedef void (*saver_done_fn)(void *arg, bool ok, long long reply, const char *why);

/* Registers nothing yet: the connection opens with the first save. The
 * config, epfd and metrics block must outlive the saver. NULL when out of
 * memory. */
offset_saver *saver_new(const chunkd_config *cfg, int epfd, metrics *m);
/* Ends the connection; saves still waiting get done(arg, false, ...), and a
 * saver_send from those callbacks returns -1. */
void saver_free(offset_saver *sv);

/* Sends a command in Redis' wire format (see rstate_format_save_offset);
 * done(arg, ...) runs when its reply arrives or the connection fails,
 * from saver_handle_event, saver_wait, saver_tick or saver_free. -1 when
 * it could not even be queued (no reply will come; saver_error says why). */
int saver_send(offset_saver *sv, const char *cmd, size_t len, saver_done_fn done, void *arg);

/* The epoll_event.data.ptr its socket is registered with. */
const void *saver_event_tag(const offset_saver *sv);
/* Reads replies or writes queued commands, as epoll reported. */
void saver_handle_event(offset_saver *sv, uint32_t events);
/* Writes the saves queued since the last call (the worker calls it at the
 * end of every loop turn, before epoll_wait); what the socket does not
 * take goes out on EPOLLOUT. Accepts NULL. */
void saver_flush(offset_saver *sv);

/* Blocks until finished(arg) is true, handling replies (any save's) as they
 * come; when Redis says nothing at all for backend_timeout_ms the
 * connection is dropped, which fails every waiting save. */
void saver_wait(offset_saver *sv, bool (*finished)(void *arg), void *arg);

/* Called every loop tick: drops the connection when saves have waited for
 * longer than backend_timeout_ms without any reply. */
void saver_tick(offset_saver *sv, int64_t now_ms);

const char *saver_error(const offset_saver *sv);

#endif
