/* Harness for the fault tests (it_fault_*.c): a private Redis and MariaDB
 * that a test may stop and restart without disturbing the programs that run
 * beside it on the shared stack, chunkup runs in the background, and the
 * server logs as evidence. */
#ifndef CHUNKD_IT_HARNESS_FAULT_H
#define CHUNKD_IT_HARNESS_FAULT_H

#include "harness.h"

/* ---- a private stack (scripts/stack.sh, CHUNKD_STACK_SH) ------------------ */

typedef struct it_stack {
    char dir[IT_DIR_MAX];        /* CHUNKD_STACK_DIR */
    char env_file[IT_PATH_MAX];
    char log_path[IT_PATH_MAX];  /* stack.sh's own output */
    int redis_port, mysql_port;
    bool started;
} it_stack;

/* Starts a fresh private stack in <tmp>/<tag>-stack on the shared stack's
 * ports plus port_offset, then points this process at it (it_stack_use).
 * The folder's name is fixed, so a stack left running by a run that was
 * killed is stopped by the next run's start. Call from the group setup,
 * after it_init. */
int it_stack_start(it_stack *st, const char *tag, int port_offset);
/* Loads the stack's env file into the environment (chunkd processes
 * started from now on inherit it) and reconnects the harness's probes. */
int it_stack_use(it_stack *st);
/* `stack.sh up`: starts whatever of the two is stopped, keeping the data,
 * and reconnects the harness's probes. */
int it_stack_up(it_stack *st);
/* Stops Redis (SHUTDOWN, which flushes the AOF) and waits until the
 * process is gone; with keep_data false its data folder is deleted too, as
 * if it had run without persistence. */
int it_stack_redis_stop(it_stack *st, bool keep_data);
/* Stops MariaDB (SIGTERM, a normal shutdown) and waits until it is gone. */
int it_stack_mysql_stop(it_stack *st);
/* `stack.sh destroy` (only `down` when CHUNKD_IT_KEEP is set). Accepts a
 * stack that never started. */
void it_stack_destroy(it_stack *st);

/* ---- chunkup in the background ------------------------------------------ */

typedef struct it_chunkup {
    pid_t pid;                   /* 0 once reaped */
    char dir[IT_DIR_MAX];
    char out_path[IT_PATH_MAX];
    char err_path[IT_PATH_MAX];
    char state_path[IT_PATH_MAX];
} it_chunkup;

/* Starts `chunkup upload FILE --json` against s as u, with its own state
 * file; extra (NULL-terminated, may be NULL) adds flags. A later run with
 * the same c (after it_chunkup_wait) uses the same state file, so it resumes
 * what the earlier one left. */
int it_chunkup_start(it_chunkup *c, const it_server *s, const it_user *u, const char *file,
                     const char *const *extra);
/* Waits up to timeout_ms; 0 with the exit status in *code (128 + signal
 * when it was killed). */
int it_chunkup_wait(it_chunkup *c, int timeout_ms, int *code);
/* The last JSON object chunkup printed on stdout, or NULL. */
json_t *it_chunkup_result(const it_chunkup *c);
/* The offsets of its notices "resuming document_id=<id> at <offset>", in
 * order: their number (at most max), or -1 when stderr cannot be read. */
int it_chunkup_resumes(const it_chunkup *c, int64_t id, int64_t *offsets, int max);
/* Whether chunkup's stderr contains needle. */
bool it_chunkup_said(const it_chunkup *c, const char *needle);
/* Prints chunkup's stdout and stderr (after a failure). */
void it_chunkup_print(const it_chunkup *c);
/* Kills a run still going and removes its folder. Accepts a zeroed c. */
void it_chunkup_cleanup(it_chunkup *c);

/* ---- waiting and evidence -------------------------------------------------- */

/* Waits until the user's newest document has an acknowledged (Redis)
 * offset of at least min_offset; returns that offset with the document id
 * in *id, or -1 after timeout_ms. */
int64_t it_wait_acked(int64_t user_id, int64_t min_offset, int timeout_ms, int64_t *id);
/* Lines of the server's log (every run of it) that contain needle; -1 when
 * the log cannot be read. */
int it_log_count(const it_server *s, const char *needle);
/* Waits until a line containing needle appears in the log past byte
 * `from`; 0, or -1 after timeout_ms. */
int it_log_wait(const it_server *s, off_t from, const char *needle, int timeout_ms);
/* sync(), then drops the kernel's clean page cache (root): what is read
 * next comes from the disks. 0, or -1 with why. */
int it_drop_caches(void);
/* Size of the server log now, for it_log_wait. */
off_t it_log_size(const it_server *s);
/* Size of a file, -1 when it does not exist. */
int64_t it_file_size(const char *path);
/* Regular files in the directories under dir, at any depth: a storage
 * folder's document files, not its own chunkd-layout; -1 on error. */
int it_count_files(const char *dir);
/* Full path of a program found in PATH (or /usr/sbin, /sbin); -1 if none. */
int it_find_program(const char *name, char *out, size_t outlen);

#endif
