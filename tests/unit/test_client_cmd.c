/* The chunkup command end to end against the fake chunkd peer: uploads,
 * retries after a dropped connection, resume across runs from the state
 * file, exit statuses, --json, status/list/abort. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "test_client_fake_chunkd.h"

#ifndef CHUNKUP_BIN
#error "CHUNKUP_BIN must name the chunkup executable"
#endif

#define RUN_LIMIT_MS 30000

typedef struct fixture {
    fake_chunkd f;
    char dir[64];
    char file[128];
    char state[128];
    char sha[65];
    unsigned char *data;
    int64_t size;
    const char *stdout_to;       /* where chunkup's stdout goes; NULL: a file read into out */
    char out[65536];             /* the last run's stdout */
    char err[65536];             /* and stderr */
} fixture;

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void make_file(fixture *x, const char *name, int64_t size)
{
    unsigned char md[32];
    unsigned int len = 0;
    FILE *fp;

    free(x->data);
    x->data = malloc((size_t)size + 1);
    assert_non_null(x->data);
    for (int64_t i = 0; i < size; i++)
        x->data[i] = (unsigned char)(i * 31 + i / 65536);
    x->size = size;
    snprintf(x->file, sizeof x->file, "%s/%s", x->dir, name);
    fp = fopen(x->file, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(x->data, 1, (size_t)size, fp), (size_t)size);
    assert_int_equal(fclose(fp), 0);
    assert_int_equal(EVP_Digest(x->data, (size_t)size, md, &len, EVP_sha256(), NULL), 1);
    for (int i = 0; i < 32; i++)
        snprintf(x->sha + 2 * i, 3, "%02x", md[i]);
}

static int setup(void **state)
{
    fixture *x = calloc(1, sizeof *x);

    assert_non_null(x);
    snprintf(x->dir, sizeof x->dir, "/tmp/chunkup-cmd-XXXXXX");
    assert_non_null(mkdtemp(x->dir));
    snprintf(x->state, sizeof x->state, "%s/state/uploads_state.json", x->dir);
    x->f.user_id = 7;
    x->f.credential = "secret";
    assert_int_equal(fake_start(&x->f), 0);
    make_file(x, "f.bin", 300 * 1024 + 5);
    *state = x;
    return 0;
}

static int teardown(void **state)
{
    fixture *x = *state;

    fake_free(&x->f);
    nftw(x->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(x->data);
    free(x);
    return 0;
}

static void slurp(const char *path, char *buf, size_t cap)
{
    FILE *fp = fopen(path, "r");
    size_t n = 0;

    if (fp != NULL) {
        n = fread(buf, 1, cap - 1, fp);
        fclose(fp);
    }
    buf[n] = '\0';
}

/* Runs chunkup with the fixture's server, user, credential and state file
 * plus args; returns its exit status, output in x->out and x->err. */
static int run(fixture *x, const char *credential, const char *const *args)
{
    char server[64], out[160], err[160];
    const char *argv[32];
    int n = 0, status = 0;
    int64_t waited = 0;
    pid_t pid;

    snprintf(server, sizeof server, "127.0.0.1:%s", x->f.p.port);
    snprintf(out, sizeof out, "%s", x->stdout_to ? x->stdout_to : "");
    if (x->stdout_to == NULL)
        snprintf(out, sizeof out, "%s/stdout", x->dir);
    snprintf(err, sizeof err, "%s/stderr", x->dir);
    argv[n++] = CHUNKUP_BIN;
    argv[n++] = "--server";
    argv[n++] = server;
    argv[n++] = "--user";
    argv[n++] = "7";
    argv[n++] = "--credential";
    argv[n++] = credential;
    argv[n++] = "--state";
    argv[n++] = x->state;
    argv[n++] = "--timeout";
    argv[n++] = "5";
    for (; *args != NULL && n < 31; args++)
        argv[n++] = *args;
    argv[n] = NULL;
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int o = open(out, O_WRONLY | O_CREAT | (x->stdout_to ? 0 : O_TRUNC), 0600);
        int e = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0600);

        if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0)
            _exit(126);
        unsetenv("CHUNKUP_SERVER");
        unsetenv("CHUNKUP_USER");
        unsetenv("CHUNKUP_CREDENTIAL");
        execv(CHUNKUP_BIN, (char *const *)argv);
        _exit(127);
    }
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (waited > RUN_LIMIT_MS) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            fail_msg("chunkup did not finish in %d ms", RUN_LIMIT_MS);
        }
        usleep(10000);
        waited += 10;
    }
    if (x->stdout_to == NULL)
        slurp(out, x->out, sizeof x->out);
    else
        x->out[0] = '\0';
    slurp(err, x->err, sizeof x->err);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static int upload(fixture *x, const char *extra)
{
    const char *args[] = { "upload", x->file, NULL, NULL };

    if (extra != NULL) {
        args[0] = extra;
        args[1] = "upload";
        args[2] = x->file;
    }
    return run(x, "secret", args);
}

/* Knobs and documents are touched only while the peer thread is stopped, so
 * the join and thread start order every access (ThreadSanitizer agrees). */
static void restart(fixture *x)
{
    fake_stop(&x->f);
    assert_int_equal(fake_start(&x->f), 0);
}

static void expect_stderr(const fixture *x, const char *needle)
{
    if (strstr(x->err, needle) == NULL)
        fail_msg("stderr lacks '%s':\n%s", needle, x->err);
}

static void expect_success_line(const fixture *x, int64_t id)
{
    char want[256];

    snprintf(want, sizeof want, "Upload complete! document_id=%lld sha256=%s\n", (long long)id,
             x->sha);
    assert_string_equal(x->out, want);
}

/* The fake's document holds exactly the file's bytes. */
static void expect_stored(const fixture *x, int64_t id, int status)
{
    const fake_doc *d = &x->f.docs[id - 1];

    assert_int_equal(d->status, status);
    assert_int_equal(d->size, x->size);
    if (status == DOC_COMPLETED) {
        assert_int_equal(d->offset, x->size);
        assert_memory_equal(d->data, x->data, (size_t)x->size);
    }
}

/* Number of entries in the state file (0 when it does not exist). */
static size_t state_entries(const fixture *x, int64_t *first_id)
{
    json_t *root = json_load_file(x->state, 0, NULL);
    json_t *arr = json_object_get(root, "uploads");
    size_t n = json_array_size(arr);

    if (first_id != NULL)
        *first_id = json_integer_value(json_object_get(json_array_get(arr, 0), "document_id"));
    json_decref(root);
    return n;
}

static void test_upload(void **state)
{
    fixture *x = *state;
    char progress[128];

    assert_int_equal(upload(x, NULL), 0);
    expect_success_line(x, 1);
    /* Not a terminal: plain lines, the final one always. */
    snprintf(progress, sizeof progress, "f.bin: %lld/%lld bytes (100%%)", (long long)x->size,
             (long long)x->size);
    expect_stderr(x, progress);
    assert_null(strchr(x->err, '\r'));
    assert_int_equal(state_entries(x, NULL), 0);
    fake_stop(&x->f);
    assert_int_equal(x->f.uploads, 1);
    assert_int_equal(x->f.resumes, 0);
    assert_int_equal(x->f.chunks, 5);
    expect_stored(x, 1, DOC_COMPLETED);
    assert_string_equal(x->f.docs[0].name, "f.bin");
    assert_string_equal(x->f.docs[0].declared_sha, x->sha);
}

static void test_json_and_quiet(void **state)
{
    fixture *x = *state;
    const char *args[] = { "--json", "--quiet", "upload", x->file, NULL };
    json_t *v;

    assert_int_equal(run(x, "secret", args), 0);
    v = json_loads(x->out, 0, NULL);
    assert_non_null(v);
    assert_int_equal(json_integer_value(json_object_get(v, "document_id")), 1);
    assert_string_equal(json_string_value(json_object_get(v, "sha256")), x->sha);
    assert_string_equal(json_string_value(json_object_get(v, "status")), "SUCCESS");
    json_decref(v);
    assert_string_equal(x->err, "");
}

static void test_retry_after_dropped_connection(void **state)
{
    fixture *x = *state;

    x->f.drop_at_chunk = 3;
    restart(x);
    assert_int_equal(upload(x, NULL), 0);
    expect_success_line(x, 1);
    expect_stderr(x, "retrying in 0.2 s");
    expect_stderr(x, "resuming document_id=1 at 131072 of");
    fake_stop(&x->f);
    /* The same document, resumed from the last acknowledged chunk. */
    assert_int_equal(x->f.uploads, 1);
    assert_int_equal(x->f.resumes, 1);
    expect_stored(x, 1, DOC_COMPLETED);
}

static void test_507_then_next_run_resumes(void **state)
{
    fixture *x = *state;
    int64_t id = 0;
    struct stat sb;

    x->f.fail_507_at_chunk = 2;
    restart(x);
    assert_int_equal(upload(x, NULL), 6);
    expect_stderr(x, "507 insufficient_storage");
    /* Kept for the next run, which must not start over. */
    assert_int_equal(state_entries(x, &id), 1);
    assert_int_equal(id, 1);
    assert_int_equal(stat(x->state, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal(upload(x, NULL), 0);
    expect_success_line(x, 1);
    expect_stderr(x, "resuming document_id=1 at 65536 of");
    assert_int_equal(state_entries(x, NULL), 0);
    fake_stop(&x->f);
    assert_int_equal(x->f.uploads, 1);
    assert_int_equal(x->f.resumes, 1);
    expect_stored(x, 1, DOC_COMPLETED);
}

/* A 5xx other than 507 (a proxy's 502 or 504, say) and 408 (the server
 * closed a connection that stalled mid-request) leave the upload
 * resumable: chunkup retries and finishes it (docs/CLIENT.md, "Retries"). */
static void test_retried_answers(void **state)
{
    fixture *x = *state;
    static const struct {
        int code;
        const char *reason;
    } answers[] = {{502, "bad_gateway"}, {504, "gateway_timeout"}, {408, "request_timeout"}};

    for (size_t i = 0; i < sizeof answers / sizeof answers[0]; i++) {
        fake_stop(&x->f);
        x->f.chunks = 0;
        x->f.fail_at_chunk = 2;
        x->f.fail_code = answers[i].code;
        x->f.fail_reason = answers[i].reason;
        restart(x);
        assert_int_equal(upload(x, NULL), 0);
        expect_success_line(x, (int64_t)i + 1);
        expect_stderr(x, answers[i].reason);
        expect_stderr(x, "retrying in 0.2 s");
        fake_stop(&x->f);
        expect_stored(x, (int64_t)i + 1, DOC_COMPLETED);
    }
}

/* retry_after_ms is the server's word on when a lease lapses: waited for
 * (plus 0.2 s) instead of the backoff; its bound is test_retry_wait's. */
static void test_retry_after_is_waited(void **state)
{
    fixture *x = *state;

    x->f.fail_at_chunk = 1;
    x->f.fail_code = 409;
    x->f.fail_reason = "locked";
    x->f.fail_retry_after_ms = 900;
    restart(x);
    assert_int_equal(upload(x, NULL), 0);
    expect_success_line(x, 1);
    expect_stderr(x, "retrying in 1.1 s");
}

/* Refused at once, without retries: a FIFO (opening one for reading would
 * wait for a writer) and a credential that cannot travel in JSON. */
static void test_unsendable_input(void **state)
{
    fixture *x = *state;
    char fifo[160];
    const char *args[] = { "upload", fifo, NULL };
    const char *file[] = { "upload", x->file, NULL };

    snprintf(fifo, sizeof fifo, "%s/fifo", x->dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_int_equal(run(x, "secret", args), 2);
    expect_stderr(x, "not a regular file");
    assert_int_equal(run(x, "\xff\xfe", file), 1);
    expect_stderr(x, "not valid UTF-8");
    fake_stop(&x->f);
    assert_int_equal(x->f.uploads, 0);
}

/* The upload succeeds but its result line cannot be written (a full
 * disk): not a silent success. */
static void test_lost_result_line(void **state)
{
    fixture *x = *state;

    x->stdout_to = "/dev/full";
    assert_int_equal(upload(x, NULL), 2);
    expect_stderr(x, "cannot write the results to standard output");
    x->stdout_to = NULL;
    fake_stop(&x->f);
    expect_stored(x, 1, DOC_COMPLETED);
}

static void test_changed_file_starts_fresh(void **state)
{
    fixture *x = *state;
    int64_t id = 0;

    x->f.fail_507_at_chunk = 2;
    restart(x);
    assert_int_equal(upload(x, NULL), 6);
    /* Same path, new content: the old document is not this file. */
    make_file(x, "f.bin", 200 * 1024);
    assert_int_equal(upload(x, NULL), 0);
    expect_success_line(x, 2);
    assert_int_equal(state_entries(x, &id), 0);
    fake_stop(&x->f);
    assert_int_equal(x->f.uploads, 2);
    assert_int_equal(x->f.resumes, 0);
    expect_stored(x, 2, DOC_COMPLETED);
}

static void test_stale_entry_starts_fresh(void **state)
{
    fixture *x = *state;
    const char *abort_args[] = { "abort", "1", NULL };

    x->f.fail_507_at_chunk = 2;
    restart(x);
    assert_int_equal(upload(x, NULL), 6);
    /* Aborted elsewhere: the entry remains in this state file. */
    fake_stop(&x->f);
    x->f.docs[0].status = DOC_FAILED;
    snprintf(x->f.docs[0].failure, sizeof x->f.docs[0].failure, "aborted");
    assert_int_equal(fake_start(&x->f), 0);
    assert_int_equal(upload(x, NULL), 0);
    expect_stderr(x, "cannot be resumed; starting a new upload");
    expect_success_line(x, 2);
    /* Aborting a finished document is refused. */
    assert_int_equal(run(x, "secret", abort_args), 4);
    expect_stderr(x, "409 not_resumable");
}

static void test_lost_complete_answer(void **state)
{
    fixture *x = *state;

    x->f.lose_complete_answer = true;
    restart(x);
    assert_int_equal(upload(x, NULL), 0);
    /* Reconnected, found the document completed with our checksum. */
    expect_success_line(x, 1);
    fake_stop(&x->f);
    assert_int_equal(x->f.uploads, 1);
    assert_int_equal(x->f.completes, 1);
}

static void test_checksum_mismatch(void **state)
{
    fixture *x = *state;

    x->f.corrupt_bytes = true;
    restart(x);
    assert_int_equal(upload(x, NULL), 7);
    expect_stderr(x, "checksum_mismatch");
    assert_string_equal(x->out, "");
    /* The server failed the document: nothing to resume. */
    assert_int_equal(state_entries(x, NULL), 0);
}

static void test_bad_credential(void **state)
{
    fixture *x = *state;
    const char *args[] = { "upload", x->file, NULL };

    assert_int_equal(run(x, "wrong", args), 3);
    expect_stderr(x, "401 unauthorized");
}

static void test_refused_and_local_errors(void **state)
{
    fixture *x = *state;
    const char *missing[] = { "upload", "/nonexistent/chunkup-file", NULL };
    const char *usage[] = { "upload", NULL };
    const char *dir[] = { "upload", x->dir, NULL };

    x->f.max_file_size = 1000;
    restart(x);
    assert_int_equal(upload(x, NULL), 4);
    expect_stderr(x, "413 file_too_large");
    assert_int_equal(run(x, "secret", missing), 2);
    expect_stderr(x, "/nonexistent/chunkup-file");
    assert_int_equal(run(x, "secret", dir), 2);
    expect_stderr(x, "not a regular file");
    assert_int_equal(run(x, "secret", usage), 1);
}

static void test_server_unavailable(void **state)
{
    fixture *x = *state;
    char server[64], port[16];
    const char *args[] = { "--server", server, "--retries", "2", "upload", x->file, NULL };

    peer_dead_port(port);
    snprintf(server, sizeof server, "127.0.0.1:%s", port);
    assert_int_equal(run(x, "secret", args), 5);
    expect_stderr(x, "retrying in 0.2 s (1 of 2)");
    expect_stderr(x, "retrying in 0.4 s (2 of 2)");
    expect_stderr(x, "giving up after 2 retries");
}

/* Answers that break the protocol are not retried (exit status 8): an
 * upload answer for another size made one document, and a retry would
 * make another each time; the next file of the run would meet the same
 * peer, so the run stops. A resume answered for another document keeps
 * the state file's entry for a run against a server that answers right. */
static void test_protocol_errors_are_not_retried(void **state)
{
    fixture *x = *state;
    int64_t id = 0;
    const char *two[] = { "upload", x->file, x->file, NULL };

    x->f.misanswer_upload = true;
    restart(x);
    assert_int_equal(run(x, "secret", two), 8);
    expect_stderr(x, "not 307205 bytes from 0");
    assert_true(strstr(x->err, "retrying") == NULL);
    assert_int_equal(state_entries(x, NULL), 0);
    fake_stop(&x->f);
    assert_int_equal(x->f.uploads, 1);

    x->f.misanswer_upload = false;
    x->f.fail_507_at_chunk = 2;
    restart(x);
    assert_int_equal(upload(x, NULL), 6);
    x->f.misanswer_resume = true;
    restart(x);
    assert_int_equal(upload(x, NULL), 8);
    expect_stderr(x, "the server resumed document_id=102, not 2");
    assert_true(strstr(x->err, "retrying") == NULL);
    assert_int_equal(state_entries(x, &id), 1);
    assert_int_equal(id, 2);
    fake_stop(&x->f);
    assert_int_equal(x->f.resumes, 1);

    x->f.misanswer_resume = false;
    restart(x);
    assert_int_equal(upload(x, NULL), 0);
    expect_success_line(x, 2);
    fake_stop(&x->f);
    expect_stored(x, 2, DOC_COMPLETED);
}

static void test_empty_file(void **state)
{
    fixture *x = *state;

    make_file(x, "empty", 0);
    assert_int_equal(upload(x, NULL), 0);
    assert_string_equal(x->sha, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    expect_success_line(x, 1);
}

static void test_status_list_abort(void **state)
{
    fixture *x = *state;
    const char *list[] = { "list", NULL };
    const char *status[] = { "status", "1", NULL };
    const char *status_json[] = { "--json", "status", "2", NULL };
    const char *abort_args[] = { "abort", "2", NULL };
    const char *missing[] = { "status", "99", NULL };
    json_t *v;

    assert_int_equal(upload(x, NULL), 0);
    fake_stop(&x->f);
    x->f.fail_507_at_chunk = x->f.chunks + 2;
    assert_int_equal(fake_start(&x->f), 0);
    make_file(x, "second.bin", 200 * 1024);
    assert_int_equal(upload(x, NULL), 6);

    assert_int_equal(run(x, "secret", list), 0);
    assert_non_null(strstr(x->out, "ID  STATUS"));
    assert_non_null(strstr(x->out, "2   uploading  204800  second.bin"));
    assert_non_null(strstr(x->out, "1   completed  307205  f.bin"));
    assert_non_null(strstr(x->out, "2026-11-30T10:00:00Z"));

    assert_int_equal(run(x, "secret", status), 0);
    assert_non_null(strstr(x->out, "status          completed\n"));
    assert_null(strstr(x->out, "offset"));

    assert_int_equal(run(x, "secret", status_json), 0);
    v = json_loads(x->out, 0, NULL);
    assert_non_null(v);
    assert_string_equal(json_string_value(json_object_get(v, "status")), "uploading");
    assert_int_equal(json_integer_value(json_object_get(v, "offset")), 65536);
    json_decref(v);

    assert_int_equal(state_entries(x, NULL), 1);
    assert_int_equal(run(x, "secret", abort_args), 0);
    assert_string_equal(x->out, "Aborted document_id=2\n");
    /* The aborted upload is forgotten locally too. */
    assert_int_equal(state_entries(x, NULL), 0);

    assert_int_equal(run(x, "secret", missing), 4);
    expect_stderr(x, "404 not_found");
}

static void test_rate_limit_slows_upload(void **state)
{
    fixture *x = *state;
    const char *args[] = { "--limit-rate", "64k", "upload", x->file, NULL };
    struct timespec a, b;
    int64_t ms;

    /* 300 KiB at 64 KiB/s: about four seconds after the first chunk. */
    clock_gettime(CLOCK_MONOTONIC, &a);
    assert_int_equal(run(x, "secret", args), 0);
    clock_gettime(CLOCK_MONOTONIC, &b);
    ms = (int64_t)(b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
    if (ms < 3500 || ms > 10000)
        fail_msg("300 KiB at 64 KiB/s took %lld ms", (long long)ms);
    /* Slow enough for a progress line per second. */
    expect_stderr(x, "f.bin: 131072/307205 bytes");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_upload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_and_quiet, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_after_dropped_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_507_then_next_run_resumes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retried_answers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_after_is_waited, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unsendable_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_result_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changed_file_starts_fresh, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_entry_starts_fresh, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_complete_answer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checksum_mismatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_credential, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_and_local_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_unavailable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_protocol_errors_are_not_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_list_abort, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rate_limit_slows_upload, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
