/* Socket helpers shared by the benchmark's load generator and sink. */
#ifndef BENCH_NET_H
#define BENCH_NET_H

#include <stddef.h>
#include <sys/socket.h>

/* Splits "HOST:PORT" (IPv4 dotted quad, or "localhost") into a socket
 * address. 0 on success; on failure err says why. */
int bn_parse_addr(const char *hostport, struct sockaddr_storage *out, socklen_t *len, char *err,
                  size_t errlen);

/* A listening TCP socket on HOST:PORT (port 0 picks one); *port gets the
 * bound port. The descriptor, or -1 with err filled. */
int bn_listen(const char *hostport, int *port, char *err, size_t errlen);

/* Writes the port to FILE atomically (a temporary file renamed over it), so
 * a script polling for FILE never reads half of it. */
int bn_write_ready_file(const char *file, int port, char *err, size_t errlen);

/* Starts a non-blocking connect; the descriptor (connected or in progress),
 * or -1 with errno set. */
int bn_connect_start(const struct sockaddr_storage *addr, socklen_t len);

#endif
