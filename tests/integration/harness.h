/* Integration test harness: real chunkd processes against the real Redis and
 * MySQL of the test stack (CHUNKD_TEST_STACK_ENV), plus the probes the tests
 * assert with (documents rows, Redis upload keys, raw sockets, files).
 *
 * Every test program starts its own servers on port 0 with their own storage
 * directories and creates its own users, so programs run in parallel against
 * one stack. Functions return 0 on success and -1 after printing why on
 * stderr; the it_assert_* helpers fail the current cmocka test instead. */
#ifndef CHUNKD_IT_HARNESS_H
#define CHUNKD_IT_HARNESS_H

/* cmocka.h needs these first */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include <jansson.h>

#include "chunkup/client.h"

#define IT_PATH_MAX 1024
/* a folder that still leaves room for names inside it */
#define IT_DIR_MAX 512
#define IT_KiB INT64_C(1024)
#define IT_MiB (INT64_C(1024) * 1024)

/* Generous: the same tests run against a ThreadSanitizer build. */
#define IT_REPLY_TIMEOUT_MS 20000

/* ---- process-wide set-up ---------------------------------------------- */

/* Loads the stack env file into this process's environment (children
 * inherit it), ignores SIGPIPE, connects to MySQL and Redis. Call once from
 * the group setup, before any thread starts. */
int it_init(const char *program);
void it_shutdown(void);

/* getenv with a default. */
const char *it_env(const char *key, const char *def);
/* Path of a built program from CHUNKD_BIN / CHUNKUP_BIN / CHUNKCTL_BIN. */
const char *it_bin(const char *env_key);

/* ---- per-test bookkeeping ---------------------------------------------- */

/* A test calls it_pass() as its last statement; a teardown that finds the
 * flag unset knows the test failed and prints the server log since
 * it_test_begin(). */
struct it_server;
void it_test_begin(struct it_server *s);
void it_pass(void);
void it_test_end(struct it_server *s);

/* ---- shared cmocka fixtures ---------------------------------------------- */

/* For a program that runs every test against one server: its group setup
 * registers the server (before starting it), and the tests use these as
 * their setup and teardown and the group's teardown. */
void it_fixture_server(struct it_server *s);
/* it_test_begin on the registered server; fails when none is. */
int it_fixture_test_setup(void **state);
/* it_test_end on the registered server (its log when the test failed). */
int it_fixture_test_teardown(void **state);
/* Stops the registered server, then it_shutdown. */
int it_fixture_group_teardown(void **state);
/* A cmocka test entry with the two per-test fixtures. */
#define IT_FIXTURE_TEST(f) \
    cmocka_unit_test_setup_teardown(f, it_fixture_test_setup, it_fixture_test_teardown)

/* For a program whose tests start servers of their own: the setup
 * (it_test_begin with no server yet) ... */
int it_own_servers_test_setup(void **state);
/* ... and, in its teardown, for each such server: it_test_end (its log when
 * the test failed), stopped, cleared; nothing for one that never started. */
void it_own_server_end(struct it_server *s);
/* That teardown for the one server registered with it_fixture_server,
 * which each test starts its own way. */
int it_own_server_test_teardown(void **state);

/* ---- temporary directories --------------------------------------------- */

/* Creates a fresh directory under CHUNKD_IT_TMPDIR (or TMPDIR, or /tmp). */
int it_tmpdir(const char *tag, char *out, size_t outlen);
/* Removes a tree; keeps it when CHUNKD_IT_KEEP is set. */
int it_rmtree(const char *path);

/* ---- chunkd ------------------------------------------------------------ */

typedef struct it_server_opts {
    const char *storage_dir;     /* NULL: <dir>/storage */
    const char *const *args;     /* extra flags, NULL-terminated */
    const char *const *env;      /* extra KEY=value, override the stack env */
    /* argv (NULL-terminated) that the chunkd command line is appended to,
     * e.g. unshare ... sh -c '... exec "$@"'; it must end by exec'ing
     * chunkd in the same process, so the pid is chunkd's. */
    const char *const *wrapper;
} it_server_opts;

typedef struct it_server {
    pid_t pid;                   /* 0 when not running */
    int port;
    char port_str[8];
    char node_id[128];
    char dir[IT_DIR_MAX];
    char storage_dir[IT_PATH_MAX];
    char log_path[IT_PATH_MAX];
    off_t log_mark;              /* log size when the current test began */
} it_server;

/* Starts chunkd on 127.0.0.1:0 and waits for its ready file. opts may be
 * NULL. On failure prints the server log and leaves nothing running. */
int it_server_start(it_server *s, const it_server_opts *opts);
/* SIGTERM, bounded wait, then SIGKILL. Returns the wait status (or -1 when
 * the server was not running) and removes its directory. Accepts a server
 * that never started. */
int it_server_stop(it_server *s);
/* Stops the server and fails the test unless it exited 0 on SIGTERM (a
 * sanitizer report or a crash during shutdown shows up here). */
void it_assert_server_stops_cleanly(it_server *s);
/* Prints the last `lines` lines of the log written since `from`. */
void it_server_log_tail(const it_server *s, off_t from, int lines);
/* Waits up to timeout_ms for chunkd to exit (after a signal the test sent
 * itself), keeping its directory, storage and log for it_server_restart.
 * 0 with the wait status in *wstatus (may be NULL); -1 on timeout, after
 * which the process is killed. */
int it_server_wait(it_server *s, int timeout_ms, int *wstatus);
/* Sends sig, then it_server_wait. */
int it_server_kill(it_server *s, int sig, int timeout_ms, int *wstatus);
/* Starts chunkd again on the port, storage and directory of a server that
 * it_server_kill ended, as an operator restarts a crashed instance; the log
 * goes on in the same file. opts as for it_server_start (its storage_dir is
 * not used). */
int it_server_restart(it_server *s, const it_server_opts *opts);

/* ---- the admin endpoint (harness_http.c) -------------------------------- */

/* Starts a chunkd with one worker and an admin port (*port); env as in
 * it_server_opts. */
int it_server_start_admin(it_server *s, int *port, const char *const *env);
/* One HTTP GET; returns the status code and the body (malloc'd). Fails the
 * test when no whole answer arrives. */
int it_http_get(int port, const char *path, char **body);
/* The value of the sample line "name{labels} value" whose name and labels
 * start with prefix; fails the test when there is none. */
long long it_metric(const char *text, const char *prefix);
/* it_metric of the server's /metrics at admin port `port`, now. */
long long it_admin_metric(int port, const char *prefix);

/* ---- other processes (chunkup, chunkctl) ------------------------------- */

/* fork/exec in its own process group; stdout to out_path, stderr to
 * err_path (NULL: /dev/null). extra_env entries are KEY=value. */
int it_spawn(const char *const *argv, const char *const *extra_env, const char *out_path,
             const char *err_path, pid_t *pid);
/* Waits up to timeout_ms. 0 with *wstatus, or -1 on timeout (the process
 * group is then killed and reaped). */
int it_wait(pid_t pid, int timeout_ms, int *wstatus);
/* Runs to completion, returning exit code (or -1) and stdout (malloc'd,
 * NUL-terminated) in *out; stderr goes to err_path. */
int it_run(const char *const *argv, const char *const *extra_env, const char *err_path,
           int timeout_ms, char **out);
/* Prints a file's content to stderr (a failed command's stderr). */
void it_print_file(const char *label, const char *path);
/* Runs chunkctl ARGS... against s (its --storage-dir, unless ARGS name one;
 * MySQL and Redis from the stack env) as it_run does, with stderr in
 * err_path. */
int it_chunkctl(const struct it_server *s, const char *const *args, const char *err_path,
                char **out);
/* Whether the last `tail` bytes of the file at path hold needle (printing
 * them when not). */
bool it_file_tail_has(const char *path, const char *needle, size_t tail);
/* The same, waiting up to timeout_ms for needle to be written. */
bool it_wait_file_tail_has(const char *path, const char *needle, size_t tail, int timeout_ms);
/* Whether they do not hold needle (printing the file when they do). */
bool it_file_tail_lacks(const char *path, const char *needle, size_t tail);

/* ---- users --------------------------------------------------------------- */

typedef struct it_user {
    int64_t id;
    char name[64];
    char credential[65];
} it_user;

/* Inserts a user with a random credential (its SHA-256 hex is stored). */
int it_user_create(it_user *u);
int it_user_set_disabled(int64_t id, bool disabled);

typedef struct it_user_row {
    char name[65];
    char credential_hash[65];
    bool disabled;
} it_user_row;

/* 1 found, 0 no such user, -1 error. */
int it_user_get(int64_t id, it_user_row *r);

/* ---- MySQL probes -------------------------------------------------------- */

typedef struct it_doc {
    int64_t id;
    int64_t user_id;
    char filename[256];
    int64_t filesize;
    char status[16];
    bool sha256_null, declared_sha256_null, file_path_null, failure_reason_null,
        completed_at_null;
    char sha256[65];
    char declared_sha256[65];
    char file_path[513];
    char failure_reason[256];
} it_doc;

/* 1 found, 0 no such row, -1 error. */
int it_doc_get(int64_t id, it_doc *d);
/* Number of this user's rows, with the given status or any when NULL; -1 on
 * error. */
int64_t it_doc_count(int64_t user_id, const char *status);
/* The user's newest document id, 0 when none, -1 on error. */
int64_t it_doc_newest(int64_t user_id);
/* Adds n document rows (filler-<i>.bin, 1000 bytes, no file) to the
 * user's list, straight in MySQL: failed (expired), or uploading; the
 * first one's id in *first_id (the others follow it, unless rows of other
 * programs come between). 0, or -1. */
int it_docs_insert(int64_t user_id, int n, bool failed, int64_t *first_id);
/* A counter of MariaDB's SHOW GLOBAL STATUS (name as in VARIABLE_NAME,
 * e.g. "COM_STMT_EXECUTE"), or -1. */
int64_t it_mysql_global_status(const char *name);
/* Marks every uploading row failed (test_reset): for a private stack
 * (harness_fault.h) whose expiry sweep must see only the test's rows. */
int it_docs_fail_uploading(void);
/* Marks an uploading row failed straight in MySQL, leaving its file, Redis
 * state and lease alone: what another instance's expiry sweep or an
 * operator does while this server still has the upload open. */
int it_doc_end_behind_server(int64_t id, const char *reason);
/* Marks an uploading row completed with this hash and path, as an earlier
 * attempt whose answer was lost (or another instance) would have. */
int it_doc_complete_behind_server(int64_t id, const char *sha256, const char *file_path);
/* Sets a row's file_path as an older server would have written it. */
int it_doc_set_file_path(int64_t id, const char *file_path);
/* Fails the test unless the row exists with this status. */
void it_assert_doc_status(int64_t id, const char *status, it_doc *out);
/* Holds document id's row locked (SELECT ... FOR UPDATE in a transaction
 * of a connection of its own) until it_doc_unlock: a statement of the
 * server's that writes the row waits for it. One at a time. */
int it_doc_lock(int64_t id);
int it_doc_unlock(void);
/* Waits up to timeout_ms until an UPDATE of documents is under way long
 * enough to be seen: waiting for a row lock (the server's, held by
 * it_doc_lock; another program's may count too). 0, or -1. */
int it_doc_wait_lock_waiter(int timeout_ms);
/* Ends the locked row 'failed' with reason in the lock's own transaction,
 * then commits it, which lets the row go: as an abort or the expiry sweep
 * that got there first. */
int it_doc_end_and_unlock(const char *reason);
/* The same, ending it 'completed' with this hash and path: as a completion
 * that got there first. */
int it_doc_complete_and_unlock(const char *sha256, const char *file_path);
/* Waits until a statement that begins with prefix runs on another
 * connection as the harness's user (a server's statement waiting for a
 * lock stays there); 0, or -1 after timeout_ms. Any connection's: which
 * one waits for it_doc_lock's row is only visible with the PROCESS
 * privilege (information_schema.INNODB_LOCK_WAITS), which the stack's user
 * does not have, and a prepared statement's text there shows `?` where
 * the row's id goes. So a test waits for a statement only no other server of
 * the moment runs (ctest runs the test programs one at a time). */
int it_mysql_wait_statement(const char *prefix, int timeout_ms);

/* ---- Redis probes -------------------------------------------------------- */

typedef struct it_rkey {
    bool exists;
    long long ttl;               /* seconds, -1 no TTL, -2 no key */
    int64_t offset;
    int64_t synced_offset;       /* the bytes made durable by a checkpoint */
    int64_t filesize;
    int64_t user_id;
    char path[IT_PATH_MAX];
    char node[128];
    char filename[256];
    char declared_sha256[65];
    int nfields;
} it_rkey;

/* HGETALL and TTL of <prefix>upload:<id>. */
int it_redis_upload(int64_t id, it_rkey *k);
/* HSET of one field of an existing <prefix>upload:<id>; -1 when it is not there. */
int it_redis_set_upload_field(int64_t id, const char *field, const char *value);
/* 1 when the key exists, 0 when not, -1 on error. */
int it_redis_exists(int64_t id);
/* Waits up to timeout_ms for <prefix>upload:<id> to go: 0 once it is gone,
 * 1 if it is still there, -1 on error. A completion's clean-up goes to
 * Redis ahead of its SUCCESS but on another connection, and is not waited
 * for: a client that reads SUCCESS and asks Redis at once may see the key
 * for a moment. */
int it_redis_wait_gone(int64_t id, int timeout_ms);
int it_redis_del_upload(int64_t id);
/* Watching Redis for what is done to keys <prefix><kind>:<id> (keyspace
 * notifications, switched on for the watch and off after it), to tell that
 * something was never written even for a moment. */
int it_redis_watch_start(const char *kind);
/* How many notifications for <prefix><kind>:<id> arrived since the start,
 * waiting wait_ms for late ones; -1 on error. Ends the watch. */
int it_redis_watch_end(int64_t id, int wait_ms);
/* 1 when a writer holds <prefix>lease:<id>, 0 when nobody does (no key, or
 * the end marker "ended" an ended upload leaves for a while), -1 on error. */
int it_redis_lease_exists(int64_t id);
/* 1 when the lease holds the end marker, 0 when not, -1 on error. */
int it_redis_lease_ended(int64_t id);
/* PTTL of <prefix>lease:<id>: ms left, -1 without a TTL, -2 no key, -3 on
 * error. */
long long it_redis_lease_pttl(int64_t id);
/* Waits up to timeout_ms until no writer holds <prefix>lease:<id>: 0 once
 * free, 1 if still held, -1 on error. */
int it_redis_wait_lease_free(int64_t id, int timeout_ms);
/* SET <prefix>lease:<id> to token for ttl_ms, whoever held it. */
int it_redis_set_lease(int64_t id, const char *token, int ttl_ms);
/* DEL <prefix>lease:<id>. */
int it_redis_del_lease(int64_t id);
/* 1 when a <prefix>reserved:<volume> hash (storage admission) still holds
 * a field for the upload, 0 when none does, -1 on error. */
int it_redis_reserved(int64_t id);
/* The name of the <prefix>reserved:<volume> hash of the instances that
 * store into storage_dir, as chunkd forms it (FNV-1a of the path). */
void it_redis_reserved_key(const char *storage_dir, char *out, size_t size);
/* HGET: 1 with the value in out, 0 when the field or key is not there, -1
 * on error. */
int it_redis_hget(const char *key, const char *field, char *out, size_t size);
/* HSET of one field: 0, or -1 on error. */
int it_redis_hset(const char *key, const char *field, const char *value);
/* SET key value (whatever the key held) and DEL key: 0, or -1 on error. */
int it_redis_set(const char *key, const char *value);
int it_redis_del(const char *key);
/* FLUSHALL: every key of the Redis the harness is connected to is lost. */
int it_redis_flushall(void);
/* SHUTDOWN of the Redis the harness is connected to, as `redis-cli
 * shutdown` does: its persistence (the stack's AOF) is flushed first. The
 * process may still be exiting on return. The harness's Redis probes need
 * it_backends_reconnect once a Redis runs again. */
int it_redis_shutdown(void);
/* Opens the harness's MySQL and Redis probes again, after a backend
 * restarted or after the environment was pointed at another stack. */
int it_backends_reconnect(void);

/* ---- raw sockets --------------------------------------------------------- */

typedef struct it_sock {
    int fd;
    char *buf;
    size_t len, cap;
} it_sock;

enum it_read {
    IT_READ_OK,
    IT_READ_EOF,       /* the server closed (FIN or RST) */
    IT_READ_TIMEOUT,
    IT_READ_ERROR,
    IT_READ_BADJSON,   /* a line arrived but was not a JSON object */
};

int it_sock_connect(it_sock *s, int port);
void it_sock_close(it_sock *s);
/* Sends everything (MSG_NOSIGNAL); -1 when the peer is gone. */
int it_sock_send(it_sock *s, const void *p, size_t n);
int it_sock_send_str(it_sock *s, const char *str);
/* Reads one line as a JSON object (new reference in *out). */
enum it_read it_sock_read_json(it_sock *s, int timeout_ms, json_t **out);

/* Sends `line` plus '\n' and returns the answer; fails the test when none
 * arrives. */
json_t *it_sock_req(it_sock *s, const char *line);
/* Same with a jansson object (stolen). */
json_t *it_sock_req_json(it_sock *s, json_t *req);
/* upload_complete of document id; the answer (caller decrefs). */
json_t *it_sock_complete(it_sock *s, int64_t id);
/* Sends a chunk control line (header, without '\n') and n payload bytes
 * (payload NULL: n filler bytes). */
int it_sock_send_chunk(it_sock *s, const char *header, const void *payload, size_t n);
/* Same, then reads one answer; fails the test when none arrives. */
json_t *it_sock_chunk(it_sock *s, const char *header, const void *payload, size_t n);
/* The bytes a client sends for a whole upload of data[0, n): every chunk
 * of `chunk` bytes (the last one shorter) with its header, then
 * upload_complete. Returns the length; *out is malloc'ed, the caller's. */
size_t it_upload_stream(int64_t id, const void *data, size_t n, size_t chunk, char **out);
/* Sends a one-chunk file's only chunk and its upload_complete together,
 * without reading the answers (its progress event, then the completion's);
 * fails the test when sending fails. */
void it_sock_send_whole_and_complete(it_sock *s, int64_t id, const void *data, size_t n);
/* json_dumps compact plus '\n'; malloc'd. Borrows req. */
char *it_json_line(const json_t *req);

/* snprintf that fails the test when the text does not fit. */
void it_line(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Sends a resume of id (with u's credential, or none when u is NULL: the
 * connection is signed in) without waiting for the answer; 0, or -1. */
int it_sock_send_resume(it_sock *s, int64_t id, const it_user *u);
/* Sends an upload (on a connection already authenticated) and returns the
 * new document_id; fails the test unless the answer is ok. */
int64_t it_sock_upload(it_sock *s, const char *name, int64_t size);
/* Sends one chunk (payload NULL: filler bytes) and fails the test unless
 * the answer is its progress event. */
void it_sock_chunk_ok(it_sock *s, int64_t id, int64_t off, const void *p, size_t n);
/* An error answer after which the connection is still open and in step. */
void it_expect_error_open(it_sock *s, const char *line, int code, const char *reason);
void it_expect_chunk_error_open(it_sock *s, const char *hdr, size_t n, int code,
                                const char *reason);

/* Fails unless reply is {"v":1,"status":"error","code":code,"reason":reason,
 * "message":"..."} . */
void it_assert_error(json_t *reply, int code, const char *reason);
/* Fails unless reply is {"v":1,"status":"ok","action":action}. */
void it_assert_ok(json_t *reply, const char *action);
/* Fails unless the connection is still open and in step: a probe request
 * gets its own answer (not the answer to stray bytes). */
void it_assert_open(it_sock *s);
/* Fails unless the server closes the connection without further answers. */
void it_assert_closed(it_sock *s);
/* Fails unless a fresh connection authenticates as u and lists documents. */
void it_assert_serves(int port, const it_user *u);
/* Authenticates a raw connection as u with a list request. */
void it_sock_auth(it_sock *s, const it_user *u);

/* ---- the client library --------------------------------------------------- */

/* Connects with the library; fails the test on error. */
struct it_server;
cu_conn *it_cu_connect(const struct it_server *s);
void it_print_cu_error(const char *what, const cu_error *e);
/* cu_resume, tried again while another connection still holds the upload's
 * lease (409 locked): a connection that just closed gives its lease back
 * only once the server has seen the close. Thread-safe; no assertions. */
int it_cu_resume(cu_conn *c, const cu_auth *auth, int64_t id, cu_upload_info *info,
                 cu_error *err);
/* Fails the test, printing the library's error, unless call returns 0. */
#define IT_CU_OK(call, err)                                                  \
    do {                                                                     \
        if ((call) != 0) {                                                   \
            it_print_cu_error(#call, &(err));                                \
            fail_msg("%s failed: %d %s", #call, (err).code, (err).reason);   \
        }                                                                    \
    } while (0)
/* Fails the test unless call fails with this server error. */
#define IT_CU_ERR(call, err, want_code, want_reason)                         \
    do {                                                                     \
        memset(&(err), 0, sizeof(err));                                      \
        if ((call) == 0)                                                     \
            fail_msg("%s succeeded, expected %d %s", #call, want_code,       \
                     want_reason);                                           \
        if ((err).code != (want_code) || strcmp((err).reason, want_reason)) { \
            it_print_cu_error(#call, &(err));                                \
            fail_msg("%s: expected %d %s, got %d %s", #call, want_code,      \
                     want_reason, (err).code, (err).reason);                 \
        }                                                                    \
    } while (0)

/* ---- JSON accessors that fail the test ----------------------------------- */

int64_t it_json_int(json_t *obj, const char *key);
const char *it_json_str(json_t *obj, const char *key);
bool it_json_is_null(json_t *obj, const char *key);

/* ---- files ---------------------------------------------------------------- */

void it_random_bytes(void *buf, size_t n);
void it_sha256_hex(const void *p, size_t n, char out[65]);
/* n random bytes (malloc'ed, the caller frees) and their SHA-256 in sha;
 * aborts when out of memory. */
unsigned char *it_random_payload(size_t n, char sha[65]);
int it_sha256_file(const char *path, char out[65]);
/* Writes `size` random bytes to path and returns their SHA-256. */
int it_make_file(const char *path, int64_t size, char sha_out[65]);
/* Anonymous file (memfd) with `size` random bytes, positioned at 0. */
int it_make_memfd(int64_t size, char sha_out[65]);
/* "<bucket>/<id>.data" as the server names it (docs/PROTOCOL.md): one path
 * from the first byte to completion. */
void it_data_rel_path(int64_t id, char *out, size_t outlen);
/* The same under the server's storage directory. */
void it_upload_path(const it_server *s, int64_t id, char *out, size_t outlen);
/* How many files of the document other than "<id>.data" are in its
 * bucket (temporary or partial copies); -1 when it cannot be read. */
int it_stray_files(const it_server *s, int64_t id);
/* Fails unless the completed upload is stored as documented: row completed
 * with path/sha/completed_at, the .data file with mode 0640, this size and
 * SHA-256, no other file of that document in its bucket, no Redis key. */
void it_assert_stored(const it_server *s, int64_t id, int64_t size, const char *sha);

/* ---- open gates (harness_gate.c) ------------------------------------------ */

/* Starts holding every open() of the file at path (NULL: none yet; see
 * it_gate_mark) with fanotify permission events, and returns the gate's
 * fd; close() ends it and lets every held open go on. Where there are no
 * permission events (they need CAP_SYS_ADMIN and a kernel with them) the
 * test is skipped, saying so; a path that cannot be marked fails it. */
int it_gate_open_or_skip(const char *path);
/* Holds the opens of one more file, or with children of every file in
 * the folder at path (also one being created: it is made, then the open
 * fails). 0, or -1 with errno. */
int it_gate_mark(int gate, const char *path, bool children);
/* Waits up to timeout_ms until process pid is held in an open() of a
 * marked file; its event in *held_fd. Others' opens are let through. 0,
 * or -1. */
int it_gate_wait(int gate, pid_t pid, int timeout_ms, int *held_fd);
/* The same for an open() of the file at path only (as the kernel names
 * it; a path that ends in `*`: any name it begins); the opens of other
 * marked files go through. */
int it_gate_wait_for(int gate, pid_t pid, const char *path, int timeout_ms, int *held_fd);
/* Lets the held open() go on. */
int it_gate_release(int gate, int held_fd);
/* Makes the held open() fail with EPERM. */
int it_gate_deny(int gate, int held_fd);

/* Milliseconds on the monotonic clock; sleeping. */
int64_t it_now_ms(void);
/* Wall-clock ms since the epoch, as chunkd stamps what it keeps in Redis. */
int64_t it_wall_ms(void);
void it_sleep_ms(int ms);

/* ---- a proxy whose replies can be held (harness_proxy.c) ----------------- */

/* A TCP proxy on 127.0.0.1 (it_proxy_port) to 127.0.0.1:backend_port, on a
 * thread of its own; NULL on failure (said on stderr). */
typedef struct it_proxy it_proxy;
it_proxy *it_proxy_start(int backend_port);
/* A proxy to the backend whose port the environment variable port_var
 * (CHUNKD_REDIS_PORT, CHUNKD_MYSQL_PORT) names, and in env_line that
 * variable pointing at the proxy, for a chunkd's environment. Fails the
 * test when it cannot. */
it_proxy *it_proxy_for(const char *port_var, char *env_line, size_t size);
int it_proxy_port(const it_proxy *p);
/* hold: the backend's replies stay unread in the proxy's sockets until
 * hold is false again; requests still go through. */
void it_proxy_hold(it_proxy *p, bool hold);
/* Bytes forwarded from clients to the backend, and back, so far. */
int64_t it_proxy_sent(it_proxy *p);
int64_t it_proxy_received(it_proxy *p);
/* After `bytes` more of the backend's (-1: never), every connection
 * through the proxy is closed at once, as when the backend goes away, and
 * so is every one made after, until the next call. */
void it_proxy_cut_after(it_proxy *p, int64_t bytes);
/* Closes every connection through it now, dropping the replies it holds
 * (an answer lost after its statement ran); connections made after pass.
 * 0 once they are closed, -1 if the proxy's thread did not within 5 s. */
int it_proxy_cut_now(it_proxy *p);
/* Closes every connection through it and frees it; NULL does nothing. */
void it_proxy_stop(it_proxy *p);

#endif
