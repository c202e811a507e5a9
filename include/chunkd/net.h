/* Socket helpers. Errors are reported through a caller's buffer. */
#ifndef CHUNKD_NET_H
#define CHUNKD_NET_H

#include <stddef.h>
#include <sys/socket.h>

/* Binds and listens on host:port (port 0: any free port). Returns the fd or
 * -1 with a reason in err. */
int net_listen(const char *host, int port, int backlog, char *err, size_t errlen);

/* The port a bound socket ended up on, or -1. */
int net_local_port(int fd);

/* "ip:port" of a peer address into out. */
void net_format_peer(const struct sockaddr *sa, socklen_t len, char *out, size_t size);

/* Just the address of a peer (no port) into out. */
void net_format_ip(const struct sockaddr *sa, socklen_t len, char *out, size_t size);

/* Disables Nagle: answers are small and latency-bound. */
int net_set_nodelay(int fd);

#endif
