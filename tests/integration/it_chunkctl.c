/* chunkctl manages the users chunkd authenticates: a credential it prints
 * works for an upload, and disabling or rotating takes effect at once. */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static it_server srv;
static char workdir[IT_DIR_MAX];

static int group_setup(void **state)
{
    (void)state;
    it_fixture_server(&srv);
    if (it_init("it_chunkctl") != 0 || it_tmpdir("ctl", workdir, sizeof workdir) != 0)
        return -1;
    static const char *const args[] = {"--workers", "1", NULL};
    it_server_opts o = {.args = args};
    return it_server_start(&srv, &o);
}

static int group_teardown(void **state)
{
    it_fixture_group_teardown(state);
    it_rmtree(workdir);
    return 0;
}

/* Runs chunkctl --json ARGS... and returns its exit code, printing its
 * stderr when that is not `expect`; *out is the parsed JSON on exit 0 (the
 * caller decrefs), else NULL. extra_env may override the stack's MySQL
 * settings. */
static int ctl(json_t **out, int expect, const char *const *extra_env, const char *a1,
               const char *a2, const char *a3)
{
    *out = NULL;
    const char *bin = it_bin("CHUNKCTL_BIN");
    assert_non_null(bin);
    const char *argv[] = {bin, "--json", a1, a2, a3, NULL};
    char err_path[IT_PATH_MAX + 32];
    snprintf(err_path, sizeof err_path, "%s/chunkctl.err", workdir);
    unlink(err_path);
    char *text = NULL;
    int rc = it_run(argv, extra_env, err_path, 30000, &text);
    if (rc == 0) {
        json_error_t jerr;
        *out = json_loads(text ? text : "", JSON_DISABLE_EOF_CHECK, &jerr);
        if (!*out)
            fprintf(stderr, "it: chunkctl %s %s printed no JSON: %s\n", a2, a3 ? a3 : "",
                    text ? text : "");
        assert_non_null(*out);
    }
    if (rc != expect)
        it_print_file("chunkctl stderr", err_path);
    free(text);
    return rc;
}

/* Tries an upload of a few bytes; returns the answer (new reference). On
 * 401 also checks that the server closed the connection. */
static json_t *try_upload(int64_t user_id, const char *credential)
{
    it_sock s;
    assert_int_equal(it_sock_connect(&s, srv.port), 0);
    json_t *r = it_sock_req_json(
        &s, json_pack("{s:s, s:s, s:i, s:I, s:s}", "action", "upload", "filename", "ctl.txt",
                      "filesize", 5, "user_id", (json_int_t)user_id, "credential", credential));
    const char *st = json_string_value(json_object_get(r, "status"));
    if (st && strcmp(st, "ok") == 0) {
        int64_t id = it_json_int(r, "document_id");
        char hdr[160];
        snprintf(hdr, sizeof hdr,
                 "{\"action\":\"chunk\",\"document_id\":%lld,\"offset\":0,\"length\":5}",
                 (long long)id);
        json_t *ev = it_sock_chunk(&s, hdr, "hello", 5);
        assert_string_equal(it_json_str(ev, "event"), "progress");
        json_decref(ev);
        snprintf(hdr, sizeof hdr, "{\"action\":\"upload_complete\",\"document_id\":%lld}",
                 (long long)id);
        ev = it_sock_req(&s, hdr);
        assert_string_equal(it_json_str(ev, "status"), "SUCCESS");
        char sha[65];
        it_sha256_hex("hello", 5, sha);
        assert_string_equal(it_json_str(ev, "sha256"), sha);
        json_decref(ev);
        it_assert_stored(&srv, id, 5, sha);
    } else {
        json_t *code = json_object_get(r, "code");
        if (json_is_integer(code) && json_integer_value(code) == 401)
            it_assert_closed(&s);
    }
    it_sock_close(&s);
    return r;
}

static void expect_upload_ok(int64_t user_id, const char *credential)
{
    json_t *r = try_upload(user_id, credential);
    it_assert_ok(r, "upload");
    json_decref(r);
}

static void expect_unauthorized(int64_t user_id, const char *credential)
{
    json_t *r = try_upload(user_id, credential);
    it_assert_error(r, 401, "unauthorized");
    json_decref(r);
}

static void test_add_disable_enable_rotate(void **state)
{
    (void)state;
    unsigned char rnd[4];
    it_random_bytes(rnd, sizeof rnd);
    char name[64];
    snprintf(name, sizeof name, "ctl-%d-%02x%02x%02x%02x", (int)getpid(), rnd[0], rnd[1],
             rnd[2], rnd[3]);

    json_t *j;
    assert_int_equal(ctl(&j, 0, NULL, "user", "add", name), 0);
    int64_t id = it_json_int(j, "user_id");
    char cred[128];
    snprintf(cred, sizeof cred, "%s", it_json_str(j, "credential"));
    assert_string_equal(it_json_str(j, "name"), name);
    json_decref(j);
    assert_true(id > 0);
    assert_true(strlen(cred) >= 32);

    /* only the hash is stored */
    it_user_row row;
    assert_int_equal(it_user_get(id, &row), 1);
    assert_string_equal(row.name, name);
    assert_false(row.disabled);
    char hash[65];
    it_sha256_hex(cred, strlen(cred), hash);
    assert_string_equal(row.credential_hash, hash);

    expect_upload_ok(id, cred);

    /* a second user with the same name is refused, the first one intact */
    assert_int_equal(ctl(&j, 1, NULL, "user", "add", name), 1);
    expect_upload_ok(id, cred);

    char idstr[32];
    snprintf(idstr, sizeof idstr, "%lld", (long long)id);
    assert_int_equal(ctl(&j, 0, NULL, "user", "disable", idstr), 0);
    assert_int_equal(it_json_int(j, "user_id"), id);
    assert_true(json_is_true(json_object_get(j, "disabled")));
    json_decref(j);
    assert_int_equal(it_user_get(id, &row), 1);
    assert_true(row.disabled);
    expect_unauthorized(id, cred);
    /* disabling twice is not an error */
    assert_int_equal(ctl(&j, 0, NULL, "user", "disable", idstr), 0);
    json_decref(j);
    expect_unauthorized(id, cred);

    assert_int_equal(ctl(&j, 0, NULL, "user", "enable", idstr), 0);
    assert_true(json_is_false(json_object_get(j, "disabled")));
    json_decref(j);
    expect_upload_ok(id, cred);

    assert_int_equal(ctl(&j, 0, NULL, "user", "rotate", idstr), 0);
    assert_int_equal(it_json_int(j, "user_id"), id);
    char cred2[128];
    snprintf(cred2, sizeof cred2, "%s", it_json_str(j, "credential"));
    json_decref(j);
    assert_string_not_equal(cred, cred2);
    expect_unauthorized(id, cred);
    expect_upload_ok(id, cred2);

    /* list shows the user */
    assert_int_equal(ctl(&j, 0, NULL, "user", "list", NULL), 0);
    assert_true(json_is_array(j));
    bool found = false;
    size_t i;
    json_t *e;
    json_array_foreach(j, i, e)
    {
        json_t *uid = json_object_get(e, "user_id");
        if (json_is_integer(uid) && json_integer_value(uid) == id) {
            found = true;
            assert_string_equal(it_json_str(e, "name"), name);
            assert_true(json_is_false(json_object_get(e, "disabled")));
        }
    }
    json_decref(j);
    assert_true(found);
    it_pass();
}

static void test_failures(void **state)
{
    (void)state;
    json_t *j;
    /* no such user */
    assert_int_equal(ctl(&j, 1, NULL, "user", "disable", "900000000000"), 1);
    /* bad usage */
    assert_int_equal(ctl(&j, 2, NULL, "user", "disable", "abc"), 2);
    assert_int_equal(ctl(&j, 2, NULL, "user", "add", ""), 2);
    assert_int_equal(ctl(&j, 2, NULL, "frobnicate", NULL, NULL), 2);
    /* the database is not there */
    static const char *const down[] = {"CHUNKD_MYSQL_PORT=1", NULL};
    assert_int_equal(ctl(&j, 1, down, "user", "list", NULL), 1);
    it_pass();
}

static void test_server_stops_cleanly(void **state)
{
    (void)state;
    it_assert_server_stops_cleanly(&srv);
    it_pass();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        IT_FIXTURE_TEST(test_add_disable_enable_rotate),
        IT_FIXTURE_TEST(test_failures),
        IT_FIXTURE_TEST(test_server_stops_cleanly),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
