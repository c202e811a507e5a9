/* Upload progress for people: a redrawn bar on a terminal, plain lines
 * (at most one a second, plus a final one) otherwise. */
#ifndef CHUNKUP_PROGRESS_H
#define CHUNKUP_PROGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Redraw intervals: a bar ten times a second, a plain line once a second. */
#define CU_PROGRESS_TTY_MS 100
#define CU_PROGRESS_PLAIN_MS 1000

typedef struct cu_progress {
    FILE *out;
    const char *name;      /* borrowed */
    bool tty;
    bool on_screen;        /* a bar is drawn and needs a newline at the end */
    int64_t total;
    int64_t base_ms;       /* rate measured from here ... */
    int64_t base_bytes;    /* ... and this many bytes */
    int64_t last_ms;       /* last draw, -1 before the first */
    int64_t last_done;
} cu_progress;

/* "12.3 MB", "512 B" (decimal units, as transfer rates usually are). */
void cu_fmt_bytes(char *buf, size_t cap, double bytes);
/* "45s", "3m07s", "2h05m"; "--" when unknown (negative). */
void cu_fmt_duration(char *buf, size_t cap, double seconds);
/* "doc.pdf: 655360/1048576 bytes (62%) 12.3 MB/s ETA 1s" */
void cu_progress_line(char *buf, size_t cap, const char *name, int64_t done, int64_t total,
                      double bytes_per_sec);
/* "doc.pdf [=======>      ]  62% 655.4 kB/1.0 MB 12.3 MB/s ETA 1s" */
void cu_progress_bar(char *buf, size_t cap, const char *name, int64_t done, int64_t total,
                     double bytes_per_sec);

/* Monotonic milliseconds: the clock every now_ms below is read from. */
int64_t cu_progress_clock_ms(void);

void cu_progress_init(cu_progress *p, FILE *out, bool tty, const char *name, int64_t total,
                      int64_t done, int64_t now_ms);
/* Restarts the rate measurement (after a reconnect the offset may move). */
void cu_progress_rebase(cu_progress *p, int64_t done, int64_t now_ms);
/* Draws when due; `final` always draws and ends the bar's line. Returns
 * true when something was written. */
bool cu_progress_update(cu_progress *p, int64_t done, int64_t now_ms, bool final);
/* Ends a bar's line before other output goes to the same terminal. */
void cu_progress_break(cu_progress *p);

#endif
