/* The benchmark's baseline: the fastest plain way to land bytes from a TCP
 * connection in a file on this machine, with no protocol at all.
 *
 *   sink --listen HOST:PORT --dir DIR [--sync] [--sha] [--ready-file FILE]
 *
 * Each accepted connection gets its own thread and its own file
 * DIR/<n>.data; the thread reads until the client shuts down its side,
 * writes every byte to the file, calls fdatasync when --sync is given, then
 * answers with the byte count as decimal digits and a newline and closes.
 * With --sha it also hashes every byte as it arrives (OpenSSL's SHA-256, as
 * chunkd does) and puts the digest in hex after the count, which the load
 * generator checks: the machine's limit for landing bytes that are
 * verified and synced, what chunkd must do at the least.
 * The client stops its clock when that answer arrives, so "done" means what
 * SUCCESS means for chunkd: every byte is in the file (and on the disk with
 * --sync). Runs until SIGTERM or SIGINT. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "bench_net.h"

enum { READ_BUF = 256 * 1024 }; /* what chunkd reads with while a body streams */

typedef struct sink_opts {
    const char *listen;
    const char *dir;
    const char *ready_file;
    bool sync;
    bool sha;
} sink_opts;

typedef struct job {
    int fd;
    uint64_t n;
    const sink_opts *o;
} job;

static atomic_uint_fast64_t next_file;

static void usage(void)
{
    fprintf(stderr, "usage: sink --listen HOST:PORT --dir DIR [--sync] [--sha] [--ready-file FILE]\n");
    exit(2);
}

static int write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Receives one connection into one file; returns the byte count or -1 with
 * the reason printed. With md (--sha), every byte goes through it too. */
static int64_t receive(const job *j, char *buf, EVP_MD_CTX *md)
{
    char path[4096];
    int n = snprintf(path, sizeof path, "%s/%" PRIu64 ".data", j->o->dir, j->n);
    if (n < 0 || (size_t)n >= sizeof path) {
        fprintf(stderr, "sink: path too long under %s\n", j->o->dir);
        return -1;
    }
    int out = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (out < 0) {
        fprintf(stderr, "sink: open %s: %s\n", path, strerror(errno));
        return -1;
    }
    int64_t total = 0;
    for (;;) {
        ssize_t r = read(j->fd, buf, READ_BUF);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            fprintf(stderr, "sink: read: %s\n", strerror(errno));
            total = -1;
            break;
        }
        if (r == 0)
            break;
        if (md && EVP_DigestUpdate(md, buf, (size_t)r) != 1) {
            fprintf(stderr, "sink: SHA-256 update failed\n");
            total = -1;
            break;
        }
        if (write_all(out, buf, (size_t)r) != 0) {
            fprintf(stderr, "sink: write %s: %s\n", path, strerror(errno));
            total = -1;
            break;
        }
        total += r;
    }
    if (total >= 0 && j->o->sync && fdatasync(out) != 0) {
        fprintf(stderr, "sink: fdatasync %s: %s\n", path, strerror(errno));
        total = -1;
    }
    if (close(out) != 0) {
        fprintf(stderr, "sink: close %s: %s\n", path, strerror(errno));
        total = -1;
    }
    return total;
}

/* The answer after the count: "" or " " and the digest in hex. -1 when
 * the digest cannot be had. */
static int sha_suffix(EVP_MD_CTX *md, char *out, size_t outlen)
{
    out[0] = '\0';
    if (!md)
        return 0;
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    if (EVP_DigestFinal_ex(md, d, &dlen) != 1 || 2 * (size_t)dlen + 2 > outlen)
        return -1;
    out[0] = ' ';
    for (unsigned int i = 0; i < dlen; i++)
        snprintf(out + 1 + 2 * i, 3, "%02x", d[i]);
    return 0;
}

static void *serve(void *arg)
{
    job *j = arg;
    char *buf = malloc(READ_BUF);
    EVP_MD_CTX *md = NULL;
    bool ready = buf != NULL;
    if (ready && j->o->sha) {
        md = EVP_MD_CTX_new();
        ready = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;
    }
    int64_t total = ready ? receive(j, buf, md) : -1;
    if (!ready)
        fprintf(stderr, "sink: out of memory\n");
    free(buf);
    char digest[2 * EVP_MAX_MD_SIZE + 2];
    if (total >= 0 && sha_suffix(md, digest, sizeof digest) != 0) {
        fprintf(stderr, "sink: SHA-256 final failed\n");
        total = -1;
    }
    EVP_MD_CTX_free(md);
    if (total >= 0) {
        char line[32 + sizeof digest];
        int n = snprintf(line, sizeof line, "%" PRId64 "%s\n", total, digest);
        if (write_all(j->fd, line, (size_t)n) != 0)
            fprintf(stderr, "sink: answer: %s\n", strerror(errno));
    }
    /* Without an answer the client sees EOF and counts a failure. */
    if (close(j->fd) != 0)
        fprintf(stderr, "sink: close socket: %s\n", strerror(errno));
    free(j);
    return NULL;
}

static void parse_args(int argc, char **argv, sink_opts *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--sync") == 0) {
            o->sync = true;
        } else if (strcmp(a, "--sha") == 0) {
            o->sha = true;
        } else if (i + 1 < argc && strcmp(a, "--listen") == 0) {
            o->listen = argv[++i];
        } else if (i + 1 < argc && strcmp(a, "--dir") == 0) {
            o->dir = argv[++i];
        } else if (i + 1 < argc && strcmp(a, "--ready-file") == 0) {
            o->ready_file = argv[++i];
        } else {
            usage();
        }
    }
    if (!o->listen || !o->dir)
        usage();
}

static int accept_loop(int lfd, const sink_opts *o)
{
    pthread_attr_t attr;
    if (pthread_attr_init(&attr) != 0 ||
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) != 0) {
        fprintf(stderr, "sink: pthread attributes failed\n");
        return -1;
    }
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE) {
                /* Wait for connections to finish; an interrupted sleep
                 * only retries sooner. */
                (void)usleep(10000);
                continue;
            }
            fprintf(stderr, "sink: accept: %s\n", strerror(errno));
            return -1;
        }
        job *j = malloc(sizeof *j);
        if (!j) {
            fprintf(stderr, "sink: out of memory\n");
            close(fd);
            continue;
        }
        j->fd = fd;
        j->n = atomic_fetch_add(&next_file, 1);
        j->o = o;
        pthread_t t;
        int rc = pthread_create(&t, &attr, serve, j);
        if (rc != 0) {
            fprintf(stderr, "sink: pthread_create: %s\n", strerror(rc));
            close(fd);
            free(j);
        }
    }
}

static void on_signal(int sig)
{
    (void)sig;
    _exit(0); /* nothing to flush: every file is closed by its own thread */
}

int main(int argc, char **argv)
{
    sink_opts o = {0};
    parse_args(argc, argv, &o);
    if (mkdir(o.dir, 0750) != 0 && errno != EEXIST) {
        fprintf(stderr, "sink: mkdir %s: %s\n", o.dir, strerror(errno));
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0 ||
        signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
        fprintf(stderr, "sink: signal handlers: %s\n", strerror(errno));
        return 1;
    }
    char err[256];
    int port = 0;
    int lfd = bn_listen(o.listen, &port, err, sizeof err);
    if (lfd < 0) {
        fprintf(stderr, "sink: %s\n", err);
        return 1;
    }
    if (o.ready_file && bn_write_ready_file(o.ready_file, port, err, sizeof err) != 0) {
        fprintf(stderr, "sink: %s\n", err);
        return 1;
    }
    fprintf(stderr, "sink: listening on port %d, files in %s, %s%s\n", port, o.dir,
            o.sync ? "fdatasync at the end of each file" : "no sync",
            o.sha ? ", SHA-256 of every byte" : "");
    return accept_loop(lfd, &o) == 0 ? 0 : 1;
}
