/* What the server under test costs, read from /proc/<pid>: memory and
 * threads from status, CPU time from stat. */
#ifndef BENCH_LG_PROC_H
#define BENCH_LG_PROC_H

#include <stdint.h>

typedef struct lg_proc_sample {
    int64_t rss_kb;      /* VmRSS */
    int64_t hwm_kb;      /* VmHWM: the peak RSS since the process started */
    int64_t threads;
    double cpu_s;        /* user + system time of all its threads */
} lg_proc_sample;

/* 0 on success; -1 when the process cannot be read (it exited). */
int lg_proc_read(int pid, lg_proc_sample *out);

#endif
