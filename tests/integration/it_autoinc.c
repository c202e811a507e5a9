/* A group's rows go in with one multi-row INSERT, and chunkd works out each
 * row's id from the first one: right only when MariaDB hands a statement's
 * ids out together, in steps of auto_increment_increment. Both settings
 * that change that are tried here on a private MariaDB of this program's
 * own: the "interleaved" lock mode (innodb_autoinc_lock_mode=2, as Galera
 * requires), where chunkd must fall back to one INSERT per row, and a step
 * of 3 (auto_increment_increment, as a Galera cluster of three sets it).
 * Either way every upload must get the row with its own fields, and finish. */
#include "harness_fault.h"

#include <stdio.h>
#include <stdlib.h>

#define NCONN 16
#define FILESIZE 3000
/* private ports: the shared stack's plus this */
#define PORT_OFFSET 30

static it_stack stack;
static it_server srv;
static int admin_port;
static it_user user, other;

static int group_setup(void **state)
{
    (void)state;
    it_fixture_server(&srv); /* each test starts it, after the database is set up its way */
    if (it_init("it_autoinc") != 0)
        return -1;
    /* stack.sh passes these to mariadbd (the test runner's own
     * environment never has them). */
    if (setenv("CHUNKD_STACK_MYSQL_OPTS", "--innodb-autoinc-lock-mode=2", 1) != 0 ||
        it_stack_start(&stack, "it_autoinc", PORT_OFFSET) != 0 || it_user_create(&user) != 0 ||
        it_user_create(&other) != 0) {
        it_stack_destroy(&stack);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    it_stack_destroy(&stack);
    it_shutdown();
    return 0;
}

/* What a test does at two points of upload_in_groups (NULL: nothing). */
typedef struct group_hooks {
    /* with every connection signed in (then the uploads carry no
     * credential), before the uploads are sent */
    void (*signed_in)(void);
    /* once every upload is answered, before any byte is sent */
    void (*opened)(void);
} group_hooks;

/* NCONN connections each send `upload` before any answer is read, so one
 * worker runs them as one group (or a few); then each sends its bytes and
 * completes. Checks every row's fields and every stored file; returns the
 * ids in ids[]. */
static void upload_in_groups(int64_t ids[NCONN], const group_hooks *hooks)
{
    it_sock socks[NCONN];
    unsigned char data[NCONN][FILESIZE];
    char sha[NCONN][65], names[NCONN][32];
    const it_user *owner[NCONN];
    for (int i = 0; i < NCONN; i++) {
        it_random_bytes(data[i], FILESIZE);
        it_sha256_hex(data[i], (size_t)(FILESIZE - i), sha[i]);
        snprintf(names[i], sizeof names[i], "autoinc-%d.bin", i);
        owner[i] = i % 3 ? &user : &other;
        assert_int_equal(it_sock_connect(&socks[i], srv.port), 0);
    }
    bool signed_in = hooks && hooks->signed_in;
    if (signed_in) {
        for (int i = 0; i < NCONN; i++)
            it_sock_auth(&socks[i], owner[i]);
        hooks->signed_in();
    }
    for (int i = 0; i < NCONN; i++) {
        json_t *req = signed_in
                          ? json_pack("{s:s, s:s, s:I, s:s}", "action", "upload", "filename",
                                      names[i], "filesize", (json_int_t)(FILESIZE - i), "sha256",
                                      sha[i])
                          : json_pack("{s:s, s:I, s:s, s:s, s:I, s:s}", "action", "upload",
                                      "user_id", (json_int_t)owner[i]->id, "credential",
                                      owner[i]->credential, "filename", names[i], "filesize",
                                      (json_int_t)(FILESIZE - i), "sha256", sha[i]);
        assert_non_null(req);
        char *line = it_json_line(req);
        json_decref(req);
        assert_int_equal(it_sock_send_str(&socks[i], line), 0);
        free(line);
    }
    for (int i = 0; i < NCONN; i++) {
        json_t *r = NULL;
        assert_int_equal(it_sock_read_json(&socks[i], IT_REPLY_TIMEOUT_MS, &r), IT_READ_OK);
        it_assert_ok(r, "upload");
        ids[i] = it_json_int(r, "document_id");
        json_decref(r);
        for (int k = 0; k < i; k++)
            assert_true(ids[k] != ids[i]);
    }
    if (hooks && hooks->opened)
        hooks->opened();
    /* The numbering is only tried when rows share a statement: some group
     * took more than one upload (the server has run nothing else). */
    long long groups = it_admin_metric(admin_port, "chunkd_commit_groups_total{");
    long long requests = it_admin_metric(admin_port, "chunkd_commit_group_requests_total{");
    fprintf(stderr, "it: %lld uploads in %lld groups\n", requests, groups);
    assert_int_equal(requests, NCONN);
    assert_true(groups < requests);
    for (int i = 0; i < NCONN; i++) {
        it_doc d;
        assert_int_equal(it_doc_get(ids[i], &d), 1);
        assert_int_equal(d.user_id, owner[i]->id);
        assert_string_equal(d.filename, names[i]);
        assert_int_equal(d.filesize, FILESIZE - i);
        assert_string_equal(d.declared_sha256, sha[i]);
        assert_string_equal(d.status, "uploading");
    }
    /* The rows were right; now each upload's bytes and completion. */
    for (int i = 0; i < NCONN; i++) {
        char hdr[160];
        it_line(hdr, sizeof hdr,
                "{\"action\":\"chunk\",\"document_id\":%lld,\"offset\":0,\"length\":%d}",
                (long long)ids[i], FILESIZE - i);
        json_t *r = it_sock_chunk(&socks[i], hdr, data[i], (size_t)(FILESIZE - i));
        assert_string_equal(it_json_str(r, "event"), "progress");
        json_decref(r);
        r = it_sock_complete(&socks[i], ids[i]);
        assert_string_equal(it_json_str(r, "status"), "SUCCESS");
        assert_int_equal(it_json_int(r, "document_id"), ids[i]);
        json_decref(r);
        it_assert_stored(&srv, ids[i], FILESIZE - i, sha[i]);
        it_assert_doc_status(ids[i], "completed", NULL);
        it_sock_close(&socks[i]);
    }
}

/* One worker, so that every connection shares its groups, and the admin
 * endpoint for their count; env: more settings (NULL: none). */
static void start_server_with(const char *const *env)
{
    assert_int_equal(it_server_start_admin(&srv, &admin_port, env), 0);
    it_test_begin(&srv);
}

static void start_server(void)
{
    start_server_with(NULL);
}

/* MariaDB started again with `opts`. */
static void restart_mysql(const char *opts)
{
    assert_int_equal(it_stack_mysql_stop(&stack), 0);
    assert_int_equal(setenv("CHUNKD_STACK_MYSQL_OPTS", opts, 1), 0);
    assert_int_equal(it_stack_up(&stack), 0);
}

static int64_t executes_after_restart;

static void restart_interleaved(void)
{
    restart_mysql("--innodb-autoinc-lock-mode=2");
    executes_after_restart = it_mysql_global_status("COM_STMT_EXECUTE");
    assert_true(executes_after_restart >= 0);
}

static int64_t executes_for_group;

static void count_executes(void)
{
    executes_for_group = it_mysql_global_status("COM_STMT_EXECUTE") - executes_after_restart;
}

/* Interleaved lock mode: the ids of one statement may belong to rows of
 * others, so chunkd inserts a group's rows one by one (and says so). */
static void test_interleaved_lock_mode(void **state)
{
    (void)state;
    start_server();
    int64_t ids[NCONN];
    upload_in_groups(ids, NULL);
    assert_true(it_log_count(&srv, "event=mysql_rows_inserted_one_by_one "
                                   "innodb_autoinc_lock_mode=2") >= 1);
    it_pass();
}

/* Consecutive lock mode with a step of 3 (and an offset of 2): one
 * statement's ids are 3 apart, and chunkd numbers the rows that way. */
static void test_increment_of_three(void **state)
{
    (void)state;
    restart_mysql("--auto-increment-increment=3 --auto-increment-offset=2");
    start_server();
    int64_t ids[NCONN];
    upload_in_groups(ids, NULL);
    for (int i = 0; i < NCONN; i++)
        assert_int_equal(ids[i] % 3, 2 % 3); /* offset 2, step 3 */
    assert_int_equal(it_log_count(&srv, "event=mysql_rows_inserted_one_by_one"), 0);
    it_pass();
}

/* MariaDB restarted in the interleaved lock mode under a chunkd whose
 * connections had signed in (and with no per-user limit): the group's
 * INSERT is the first statement after the restart, and chunkd must learn
 * the new mode before it chooses one statement for the whole group: the
 * rows go in one by one (a statement each, counted by the server), each
 * with its own id and fields. */
static void test_lock_mode_changes_under_the_server(void **state)
{
    (void)state;
    restart_mysql("");
    static const char *const env[] = {"CHUNKD_MAX_UPLOADS_PER_USER=0", NULL};
    start_server_with(env);
    int64_t ids[NCONN];
    group_hooks hooks = {.signed_in = restart_interleaved, .opened = count_executes};
    upload_in_groups(ids, &hooks);
    fprintf(stderr, "it: %lld statements executed for the group's rows\n",
            (long long)executes_for_group);
    assert_true(executes_for_group >= NCONN);
    it_pass();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_interleaved_lock_mode, it_own_servers_test_setup,
                                        it_own_server_test_teardown),
        cmocka_unit_test_setup_teardown(test_increment_of_three, it_own_servers_test_setup,
                                        it_own_server_test_teardown),
        cmocka_unit_test_setup_teardown(test_lock_mode_changes_under_the_server,
                                        it_own_servers_test_setup, it_own_server_test_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
