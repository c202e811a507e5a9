/* The acceptor thread: accepts, enforces max_connections, and hands each
 * connection to a worker in turn. It does nothing else, so a slow request
 * never delays an accept. */
#ifndef CHUNKD_LISTENER_H
#define CHUNKD_LISTENER_H

#include <stddef.h>

#include "chunkd/config.h"
#include "chunkd/conn_limits.h"
#include "chunkd/worker.h"

typedef struct listener listener;

/* Starts accepting on lfd (a listening socket the listener now owns). */
listener *listener_start(int lfd, worker **workers, int nworkers, const chunkd_config *cfg,
                         conn_limits *limits, char *err, size_t errlen);

/* Stops accepting, joins the thread, closes the socket, frees. */
void listener_stop(listener *l);

#endif
