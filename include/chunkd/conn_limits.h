/* Admission of connections: max_connections in total and
 * max_connections_per_ip per client address. Taken by the acceptor, given
 * back by whichever thread closes the connection; one mutex, touched only
 * when a connection opens or closes, never per request. */
#ifndef CHUNKD_CONN_LIMITS_H
#define CHUNKD_CONN_LIMITS_H

#include <stdint.h>

#define CONN_IP_MAX 64

typedef struct conn_limits conn_limits;

typedef enum conn_admit {
    CONN_ADMITTED = 0,
    CONN_FULL,          /* max_connections reached */
    CONN_IP_FULL,       /* this address has max_connections_per_ip */
    CONN_NO_MEMORY,
} conn_admit;

conn_limits *conn_limits_new(int64_t max_total, int64_t max_per_ip);
void conn_limits_free(conn_limits *l); /* accepts NULL */

/* Counts a new connection from ip unless a limit is reached. */
conn_admit conn_limits_take(conn_limits *l, const char *ip);
/* Connections counted now. */
int64_t conn_limits_total(conn_limits *l);

/* Gives back what conn_limits_take counted for ip. */
void conn_limits_give(conn_limits *l, const char *ip);

#endif
