/* Harness: an open gate, which holds another process inside its open() of
 * a file until the test lets it go, or makes the open fail (fanotify
 * permission events). A test uses it to stop the server at a known point
 * of its work and do something there, where timing alone could not place
 * it, or to fail one open() the way a security module or a scanner can. */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fanotify.h>
#include <unistd.h>

int it_gate_open_or_skip(const char *path)
{
    int gate = fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC, O_RDONLY | O_LARGEFILE);
    if (gate < 0) {
        /* no permission events here (not root, or not in the kernel) */
        fprintf(stderr, "it: SKIP: no fanotify permission events here (%s)\n", strerror(errno));
        skip();
    }
    if (path && it_gate_mark(gate, path, false) != 0) {
        int e = errno;
        close(gate);
        fail_msg("it: gate on %s: %s", path, strerror(e));
    }
    return gate;
}

int it_gate_mark(int gate, const char *path, bool children)
{
    return fanotify_mark(gate, FAN_MARK_ADD, FAN_OPEN_PERM | (children ? FAN_EVENT_ON_CHILD : 0),
                         AT_FDCWD, path);
}

/* Answers one permission event; the event's own fd is closed. */
static int answer_as(int gate, int event_fd, uint32_t response)
{
    struct fanotify_response r = {.fd = event_fd, .response = response};
    ssize_t w = write(gate, &r, sizeof r);
    int e = errno;
    close(event_fd);
    if (w != (ssize_t)sizeof r) {
        fprintf(stderr, "it: answering a fanotify event: %s\n", w < 0 ? strerror(e) : "short");
        return -1;
    }
    return 0;
}

static int answer(int gate, int event_fd)
{
    return answer_as(gate, event_fd, FAN_ALLOW);
}

/* Whether the event's file is at want (NULL: any file; `*` at the end:
 * any name that begins so). */
static bool event_is(int event_fd, const char *want)
{
    if (!want)
        return true;
    char link[64], at[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", event_fd);
    ssize_t n = readlink(link, at, sizeof at - 1);
    if (n < 0)
        return false;
    at[n] = '\0';
    size_t wl = strlen(want);
    if (wl > 0 && want[wl - 1] == '*')
        return strncmp(at, want, wl - 1) == 0;
    return strcmp(at, want) == 0;
}

int it_gate_wait(int gate, pid_t pid, int timeout_ms, int *held_fd)
{
    return it_gate_wait_for(gate, pid, NULL, timeout_ms, held_fd);
}

int it_gate_wait_for(int gate, pid_t pid, const char *want, int timeout_ms, int *held_fd)
{
    /* As the kernel names it: the folder without symlinks (the file itself
     * may not be there yet). */
    char canon[PATH_MAX + 256];
    const char *path = NULL;
    if (want) {
        char dir[PATH_MAX], real[PATH_MAX];
        const char *slash = strrchr(want, '/');
        int dlen = slash ? (int)(slash - want) : 0;
        snprintf(dir, sizeof dir, "%.*s", dlen, want);
        if (!slash || !realpath(dlen ? dir : "/", real)) {
            fprintf(stderr, "it: gate: cannot resolve %s: %s\n", want, strerror(errno));
            return -1;
        }
        snprintf(canon, sizeof canon, "%s%s", strcmp(real, "/") == 0 ? "" : real, slash);
        path = canon;
    }
    int64_t end = it_now_ms() + timeout_ms;
    for (;;) {
        int left = (int)(end - it_now_ms());
        if (left <= 0) {
            fprintf(stderr, "it: no open by pid %d within %d ms\n", (int)pid, timeout_ms);
            return -1;
        }
        struct pollfd p = {.fd = gate, .events = POLLIN};
        int n = poll(&p, 1, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "it: poll on the gate: %s\n", strerror(errno));
            return -1;
        }
        if (n == 0)
            continue;
        struct fanotify_event_metadata buf[16];
        ssize_t len = read(gate, buf, sizeof buf);
        if (len < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            fprintf(stderr, "it: reading the gate: %s\n", strerror(errno));
            return -1;
        }
        int found = -1;
        for (struct fanotify_event_metadata *m = buf; FAN_EVENT_OK(m, len);
             m = FAN_EVENT_NEXT(m, len)) {
            if (m->vers != FANOTIFY_METADATA_VERSION || m->fd < 0) {
                fprintf(stderr, "it: unexpected fanotify event (version %d, fd %d)\n",
                        (int)m->vers, (int)m->fd);
                return -1;
            }
            /* Someone else's open (a backup, a scanner) goes through. */
            if (m->pid == pid && found < 0 && (m->mask & FAN_OPEN_PERM) && event_is(m->fd, path))
                found = m->fd;
            else if (answer(gate, m->fd) != 0)
                return -1;
        }
        if (found >= 0) {
            *held_fd = found;
            return 0;
        }
    }
}

int it_gate_release(int gate, int held_fd)
{
    return answer(gate, held_fd);
}

int it_gate_deny(int gate, int held_fd)
{
    return answer_as(gate, held_fd, FAN_DENY);
}
