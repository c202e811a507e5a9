/* Progress display for chunkup uploads. */
#include "progress.h"

#include <math.h>
#include <string.h>
#include <time.h>

#define BAR_CELLS 20
#define NAME_SHOWN 24

void cu_fmt_bytes(char *buf, size_t cap, double bytes)
{
    static const char *const units[] = { "kB", "MB", "GB", "TB", "PB" };
    size_t u = 0;

    if (!(bytes >= 1000.0)) {
        snprintf(buf, cap, "%.0f B", bytes > 0 ? bytes : 0.0);
        return;
    }
    bytes /= 1000.0;
    /* Switch units before rounding would print "1000.0 kB". */
    while (bytes >= 999.95 && u + 1 < sizeof units / sizeof units[0]) {
        bytes /= 1000.0;
        u++;
    }
    snprintf(buf, cap, "%.1f %s", bytes, units[u]);
}

void cu_fmt_duration(char *buf, size_t cap, double seconds)
{
    long long s;

    if (!(seconds >= 0) || seconds > 359999.0) {
        snprintf(buf, cap, "--");
        return;
    }
    /* Rounded up: "ETA 0s" while bytes remain would be a lie. */
    s = (long long)ceil(seconds);
    if (s < 60)
        snprintf(buf, cap, "%llds", s);
    else if (s < 3600)
        snprintf(buf, cap, "%lldm%02llds", s / 60, s % 60);
    else
        snprintf(buf, cap, "%lldh%02lldm", s / 3600, s % 3600 / 60);
}

static int percent(int64_t done, int64_t total)
{
    if (total <= 0 || done >= total)
        return 100;
    if (done <= 0)
        return 0;
    return (int)((double)done * 100.0 / (double)total);
}

/* Rate and ETA as "12.3 MB/s ETA 1s". */
static void speed(char *buf, size_t cap, int64_t done, int64_t total, double bps)
{
    char rate[32], eta[32];

    cu_fmt_bytes(rate, sizeof rate, bps);
    if (done >= total)
        snprintf(eta, sizeof eta, "0s");
    else
        cu_fmt_duration(eta, sizeof eta, bps > 0 ? (double)(total - done) / bps : -1.0);
    snprintf(buf, cap, "%s/s ETA %s", rate, eta);
}

void cu_progress_line(char *buf, size_t cap, const char *name, int64_t done, int64_t total,
                      double bytes_per_sec)
{
    char sp[96];

    speed(sp, sizeof sp, done, total, bytes_per_sec);
    snprintf(buf, cap, "%s: %lld/%lld bytes (%d%%) %s", name, (long long)done,
             (long long)total, percent(done, total), sp);
}

/* Copies at most NAME_SHOWN bytes of name, never splitting a UTF-8
 * sequence, so a long name cannot wrap the bar onto a second line. */
static void short_name(char *buf, size_t cap, const char *name)
{
    size_t n = strlen(name);

    if (n <= NAME_SHOWN) {
        snprintf(buf, cap, "%s", name);
        return;
    }
    n = NAME_SHOWN - 3;
    while (n > 0 && ((unsigned char)name[n] & 0xC0) == 0x80)
        n--;
    snprintf(buf, cap, "%.*s...", (int)n, name);
}

void cu_progress_bar(char *buf, size_t cap, const char *name, int64_t done, int64_t total,
                     double bytes_per_sec)
{
    char cells[BAR_CELLS + 1], shown[NAME_SHOWN + 1], d[32], t[32], sp[96];
    int pct = percent(done, total);
    int full = pct * BAR_CELLS / 100;

    for (int i = 0; i < BAR_CELLS; i++)
        cells[i] = i < full ? '=' : i == full ? '>' : ' ';
    cells[BAR_CELLS] = '\0';
    short_name(shown, sizeof shown, name);
    cu_fmt_bytes(d, sizeof d, (double)done);
    cu_fmt_bytes(t, sizeof t, (double)total);
    speed(sp, sizeof sp, done, total, bytes_per_sec);
    snprintf(buf, cap, "%s [%s] %3d%% %s/%s %s", shown, cells, pct, d, t, sp);
}

int64_t cu_progress_clock_ms(void)
{
    struct timespec ts;

    /* Cannot fail with a valid clock id and pointer. */
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void cu_progress_init(cu_progress *p, FILE *out, bool tty, const char *name, int64_t total,
                      int64_t done, int64_t now_ms)
{
    memset(p, 0, sizeof *p);
    p->out = out;
    p->tty = tty;
    p->name = name;
    p->total = total;
    p->last_ms = -1;
    cu_progress_rebase(p, done, now_ms);
}

void cu_progress_rebase(cu_progress *p, int64_t done, int64_t now_ms)
{
    p->base_ms = now_ms;
    p->base_bytes = done;
    p->last_done = done;
}

static double rate(const cu_progress *p, int64_t done, int64_t now_ms)
{
    int64_t ms = now_ms - p->base_ms;

    if (ms <= 0 || done <= p->base_bytes)
        return 0.0;
    return (double)(done - p->base_bytes) * 1000.0 / (double)ms;
}

bool cu_progress_update(cu_progress *p, int64_t done, int64_t now_ms, bool final)
{
    int64_t every = p->tty ? CU_PROGRESS_TTY_MS : CU_PROGRESS_PLAIN_MS;
    /* A bar may appear at once; plain lines wait a full interval so quick
     * uploads print only their final line. */
    int64_t since = p->last_ms >= 0 ? p->last_ms : p->tty ? now_ms - every : p->base_ms;
    char text[256];

    p->last_done = done;
    if (!final && now_ms - since < every)
        return false;
    p->last_ms = now_ms;
    if (p->tty) {
        cu_progress_bar(text, sizeof text, p->name, done, p->total, rate(p, done, now_ms));
        /* \033[K clears what a longer previous line left behind. */
        fprintf(p->out, "\r%s\033[K", text);
        p->on_screen = true;
        if (final)
            cu_progress_break(p);
    } else {
        cu_progress_line(text, sizeof text, p->name, done, p->total, rate(p, done, now_ms));
        fprintf(p->out, "%s\n", text);
    }
    fflush(p->out);
    return true;
}

void cu_progress_break(cu_progress *p)
{
    if (p->on_screen) {
        fputc('\n', p->out);
        fflush(p->out);
        p->on_screen = false;
    }
}
