/* chunkup state file: round trip, identity lookup, atomic replace,
 * permissions, corrupt files set aside, locking. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "state.h"

#define SHA_A "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
#define SHA_B "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"

typedef struct fixture {
    char dir[64];
    char path[256];
} fixture;

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);

    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/chunkup-state-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    /* A directory that does not exist yet: open must create it. */
    snprintf(f->path, sizeof f->path, "%s/sub/dir/uploads_state.json", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;

    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static cu_state_key key_a(void)
{
    cu_state_key k = { "127.0.0.1:9400", 7, "/home/u/doc.pdf", 1048576, 1700000000, 123456789,
                       SHA_A };

    return k;
}

static cu_state *open_ok(const fixture *f)
{
    char msg[1024];
    cu_state *st = cu_state_open(f->path, msg, sizeof msg);

    if (st == NULL)
        fail_msg("cu_state_open: %s", msg);
    assert_string_equal(msg, "");
    return st;
}

static void put_save(const fixture *f, const cu_state_key *k, int64_t id)
{
    char msg[1024];
    cu_state *st = open_ok(f);

    assert_int_equal(cu_state_put(st, k, id, msg, sizeof msg), 0);
    if (cu_state_save(st, msg, sizeof msg) < 0)
        fail_msg("cu_state_save: %s", msg);
    cu_state_close(st);
}

static void write_text(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");

    assert_non_null(fp);
    assert_true(fputs(text, fp) >= 0);
    assert_int_equal(fclose(fp), 0);
}

static void test_missing_file_is_empty(void **state)
{
    fixture *f = *state;
    char dir[300];
    struct stat sb;
    cu_state *st = open_ok(f);

    assert_int_equal(cu_state_count(st), 0);
    cu_state_close(st);
    snprintf(dir, sizeof dir, "%s/sub/dir", f->dir);
    assert_int_equal(stat(dir, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0700);
    /* Opening alone writes no state file. */
    assert_int_equal(access(f->path, F_OK), -1);
}

static void test_round_trip(void **state)
{
    fixture *f = *state;
    cu_state_key a = key_a(), b = key_a();
    cu_state *st;

    b.path = "/home/u/other.bin";
    b.sha256 = SHA_B;
    put_save(f, &a, 42);
    put_save(f, &b, 43);
    st = open_ok(f);
    assert_int_equal(cu_state_count(st), 2);
    assert_int_equal(cu_state_find(st, &a), 42);
    assert_int_equal(cu_state_find(st, &b), 43);
    cu_state_close(st);
}

static void test_file_format(void **state)
{
    fixture *f = *state;
    cu_state_key a = key_a();
    json_error_t jerr;
    json_t *root, *e;

    put_save(f, &a, 42);
    root = json_load_file(f->path, 0, &jerr);
    assert_non_null(root);
    assert_int_equal(json_integer_value(json_object_get(root, "version")), 1);
    e = json_array_get(json_object_get(root, "uploads"), 0);
    assert_non_null(e);
    assert_string_equal(json_string_value(json_object_get(e, "server")), "127.0.0.1:9400");
    assert_int_equal(json_integer_value(json_object_get(e, "user_id")), 7);
    assert_string_equal(json_string_value(json_object_get(e, "path")), "/home/u/doc.pdf");
    assert_int_equal(json_integer_value(json_object_get(e, "size")), 1048576);
    assert_int_equal(json_integer_value(json_object_get(e, "mtime")), 1700000000);
    assert_int_equal(json_integer_value(json_object_get(e, "mtime_nsec")), 123456789);
    assert_string_equal(json_string_value(json_object_get(e, "sha256")), SHA_A);
    assert_int_equal(json_integer_value(json_object_get(e, "document_id")), 42);
    assert_true(json_is_string(json_object_get(e, "recorded_at")));
    json_decref(root);
}

static void test_lookup_needs_every_field(void **state)
{
    fixture *f = *state;
    cu_state_key a = key_a(), k;
    cu_state *st;

    put_save(f, &a, 42);
    st = open_ok(f);
    assert_int_equal(cu_state_find(st, &a), 42);
    k = a; k.size++;
    assert_int_equal(cu_state_find(st, &k), 0);
    k = a; k.mtime_sec++;
    assert_int_equal(cu_state_find(st, &k), 0);
    k = a; k.mtime_nsec++;
    assert_int_equal(cu_state_find(st, &k), 0);
    k = a; k.sha256 = SHA_B;
    assert_int_equal(cu_state_find(st, &k), 0);
    k = a; k.server = "127.0.0.1:9401";
    assert_int_equal(cu_state_find(st, &k), 0);
    k = a; k.user_id = 8;
    assert_int_equal(cu_state_find(st, &k), 0);
    k = a; k.path = "/home/u/doc.pdf2";
    assert_int_equal(cu_state_find(st, &k), 0);
    cu_state_close(st);
}

static void test_put_replaces_older_version(void **state)
{
    fixture *f = *state;
    cu_state_key a = key_a(), newer = key_a();
    cu_state *st;

    newer.mtime_sec += 60;
    newer.size = 2000;
    newer.sha256 = SHA_B;
    put_save(f, &a, 42);
    put_save(f, &newer, 50);
    st = open_ok(f);
    assert_int_equal(cu_state_count(st), 1);
    assert_int_equal(cu_state_find(st, &a), 0);
    assert_int_equal(cu_state_find(st, &newer), 50);
    cu_state_close(st);
}

static void test_forget(void **state)
{
    fixture *f = *state;
    char msg[1024];
    cu_state_key a = key_a(), b = key_a();
    cu_state *st;

    b.path = "/home/u/b";
    put_save(f, &a, 42);
    put_save(f, &b, 43);
    st = open_ok(f);
    assert_int_equal(cu_state_forget(st, &a), 1);
    assert_int_equal(cu_state_forget(st, &a), 0);
    /* Another user's entry with that id is not ours to drop. */
    assert_int_equal(cu_state_forget_document(st, "127.0.0.1:9400", 8, 43), 0);
    assert_int_equal(cu_state_forget_document(st, "127.0.0.1:9400", 7, 43), 1);
    assert_int_equal(cu_state_save(st, msg, sizeof msg), 0);
    cu_state_close(st);
    st = open_ok(f);
    assert_int_equal(cu_state_count(st), 0);
    cu_state_close(st);
}

static void test_atomic_replace_leaves_no_temp(void **state)
{
    fixture *f = *state;
    cu_state_key a = key_a(), b = key_a();
    char dir[300];
    struct stat s1, s2;
    struct dirent *de;
    DIR *d;
    int files = 0;

    b.path = "/b";
    put_save(f, &a, 1);
    assert_int_equal(stat(f->path, &s1), 0);
    put_save(f, &b, 2);
    assert_int_equal(stat(f->path, &s2), 0);
    /* A new inode each time: the old file was replaced by rename, never
     * rewritten in place where a crash could leave it half written. */
    assert_true(s1.st_ino != s2.st_ino);
    snprintf(dir, sizeof dir, "%s/sub/dir", f->dir);
    d = opendir(dir);
    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        files++;
        if (strcmp(de->d_name, "uploads_state.json") != 0 &&
            strcmp(de->d_name, "uploads_state.json.lock") != 0)
            fail_msg("unexpected file left behind: %s", de->d_name);
    }
    closedir(d);
    assert_int_equal(files, 2);
}

static void test_permissions_0600(void **state)
{
    fixture *f = *state;
    cu_state_key a = key_a();
    mode_t old = umask(0);
    struct stat sb;
    char lock[300];

    put_save(f, &a, 1);
    assert_int_equal(stat(f->path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    snprintf(lock, sizeof lock, "%s.lock", f->path);
    assert_int_equal(stat(lock, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    /* A file someone made world-readable is tightened on the next save. */
    assert_int_equal(chmod(f->path, 0644), 0);
    put_save(f, &a, 2);
    assert_int_equal(stat(f->path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    umask(old);
}

static void expect_set_aside(const fixture *f, const char *content, const char *aside)
{
    char msg[1024], text[256];
    cu_state *st;
    FILE *fp;
    size_t n;

    write_text(f->path, content);
    st = cu_state_open(f->path, msg, sizeof msg);
    assert_non_null(st);
    assert_non_null(strstr(msg, aside));
    assert_int_equal(cu_state_count(st), 0);
    cu_state_close(st);
    /* The bad file is kept for inspection, with its contents intact. */
    fp = fopen(aside, "r");
    assert_non_null(fp);
    n = fread(text, 1, sizeof text - 1, fp);
    text[n] = '\0';
    fclose(fp);
    assert_string_equal(text, content);
    assert_int_equal(access(f->path, F_OK), -1);
}

static void test_corrupt_file_set_aside(void **state)
{
    fixture *f = *state;
    char aside[300], aside1[300];
    cu_state_key a = key_a();
    cu_state *st;

    put_save(f, &a, 1);   /* creates the directory */
    snprintf(aside, sizeof aside, "%s.corrupt", f->path);
    snprintf(aside1, sizeof aside1, "%s.corrupt.1", f->path);
    expect_set_aside(f, "{\"version\":1,\"uploads\":[", aside);
    /* A second corrupt file must not overwrite the first one set aside. */
    expect_set_aside(f, "", aside1);
    assert_int_equal(access(aside, F_OK), 0);
    /* And the state works again afterwards. */
    put_save(f, &a, 9);
    st = open_ok(f);
    assert_int_equal(cu_state_find(st, &a), 9);
    cu_state_close(st);
}

static void test_wrong_shape_is_corrupt(void **state)
{
    fixture *f = *state;
    char aside[300];
    cu_state_key a = key_a();

    put_save(f, &a, 1);
    snprintf(aside, sizeof aside, "%s.corrupt", f->path);
    /* Valid JSON, but an entry without sha256. */
    expect_set_aside(f,
                     "{\"version\":1,\"uploads\":[{\"server\":\"s\",\"user_id\":1,\"path\":\"/p\","
                     "\"size\":1,\"mtime\":1,\"mtime_nsec\":0,\"document_id\":3}]}",
                     aside);
}

static void test_newer_version_is_left_alone(void **state)
{
    fixture *f = *state;
    const char *text = "{\"version\":2,\"uploads\":[]}";
    cu_state_key a = key_a();
    char msg[1024];
    cu_state *st;

    put_save(f, &a, 1);
    write_text(f->path, text);
    st = cu_state_open(f->path, msg, sizeof msg);
    assert_null(st);
    assert_non_null(strstr(msg, "newer"));
    assert_int_equal(access(f->path, F_OK), 0);
}

static void test_lock_is_exclusive(void **state)
{
    fixture *f = *state;
    char lock[300];
    cu_state *st = open_ok(f);
    int fd;

    snprintf(lock, sizeof lock, "%s.lock", f->path);
    fd = open(lock, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(flock(fd, LOCK_EX | LOCK_NB), -1);
    assert_int_equal(errno, EWOULDBLOCK);
    cu_state_close(st);
    assert_int_equal(flock(fd, LOCK_EX | LOCK_NB), 0);
    close(fd);
    cu_state_close(NULL);
}

static void test_invalid_entry_refused(void **state)
{
    fixture *f = *state;
    cu_state_key a = key_a();
    char msg[1024];
    cu_state *st = open_ok(f);

    a.sha256 = "not-a-hash";
    assert_int_equal(cu_state_put(st, &a, 1, msg, sizeof msg), -1);
    a = key_a();
    assert_int_equal(cu_state_put(st, &a, 0, msg, sizeof msg), -1);
    assert_int_equal(cu_state_count(st), 0);
    cu_state_close(st);
}

static void test_default_path(void **state)
{
    char buf[256];

    (void)state;
    assert_int_equal(setenv("XDG_STATE_HOME", "/xdg", 1), 0);
    assert_int_equal(setenv("HOME", "/home/u", 1), 0);
    assert_int_equal(cu_state_default_path(buf, sizeof buf), 0);
    assert_string_equal(buf, "/xdg/chunkup/uploads_state.json");
    /* Relative XDG values are ignored, as the XDG spec requires. */
    assert_int_equal(setenv("XDG_STATE_HOME", "rel", 1), 0);
    assert_int_equal(cu_state_default_path(buf, sizeof buf), 0);
    assert_string_equal(buf, "/home/u/.local/state/chunkup/uploads_state.json");
    assert_int_equal(unsetenv("XDG_STATE_HOME"), 0);
    assert_int_equal(cu_state_default_path(buf, sizeof buf), 0);
    assert_string_equal(buf, "/home/u/.local/state/chunkup/uploads_state.json");
    assert_int_equal(unsetenv("HOME"), 0);
    assert_int_equal(cu_state_default_path(buf, sizeof buf), -1);
    assert_int_equal(setenv("HOME", "/home/u", 1), 0);
    assert_int_equal(cu_state_default_path(buf, 10), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_missing_file_is_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_format, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lookup_needs_every_field, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_replaces_older_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_atomic_replace_leaves_no_temp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_permissions_0600, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_file_set_aside, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_shape_is_corrupt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_version_is_left_alone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock_is_exclusive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_entry_refused, setup, teardown),
        cmocka_unit_test(test_default_path),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
