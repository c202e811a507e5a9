/* A loopback TCP peer in a thread, for testing the chunkup client's framing,
 * pipelining and error handling without a real chunkd. Each accepted
 * connection is handed to serve(); expectations that fail in the peer's
 * thread are recorded (cmocka asserts must stay in the test's thread). */
#ifndef TEST_CLIENT_PEER_H
#define TEST_CLIENT_PEER_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

typedef struct peer peer;
typedef void (*peer_serve_fn)(peer *p, int fd);

struct peer {
    int lfd;
    char port[16];
    pthread_t thread;
    peer_serve_fn serve;
    void *ctx;
    int connections;           /* accepted so far */
    char failure[512];         /* first failed expectation, "" if none */
};

/* Listens on 127.0.0.1 with a free port and starts accepting. */
int peer_start(peer *p, peer_serve_fn serve, void *ctx);
/* The same on a given port (a restarted peer keeps its address). */
int peer_start_on(peer *p, peer_serve_fn serve, void *ctx, const char *port);
/* Stops accepting and joins the thread (waits for a running serve()). */
void peer_stop(peer *p);
void peer_fail(peer *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Blocking helpers with a 10 s receive timeout; -1 on EOF or error. */
int peer_read_line(int fd, char *buf, size_t cap);
int peer_read_exact(int fd, void *buf, size_t n);
int peer_write(int fd, const void *buf, size_t n);
int peer_write_str(int fd, const char *s);
/* One line as a JSON object (new reference), NULL on EOF or bad JSON. */
json_t *peer_read_json(int fd);
/* Writes obj as one line; takes ownership of obj. */
int peer_send_json(int fd, json_t *obj);

/* A port nothing listens on. */
void peer_dead_port(char port[16]);

#endif
