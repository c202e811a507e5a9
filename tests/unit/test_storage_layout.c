/* The storage root's layout marker: new roots marked, old and unknown
 * layouts refused, and the move of a layout-1 root. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chunkd/storage.h"
#include "chunkd/storage_layout.h"
#include "test_tmpdir.h"

static char root[64];

static int setup(void **state)
{
    (void)state;
    return test_tmpdir_make(root, sizeof root, "/tmp/chunkd-layout-");
}

static int teardown(void **state)
{
    (void)state;
    return test_tmpdir_remove(root);
}

static void at(char *out, size_t size, const char *rel)
{
    int n = snprintf(out, size, "%s/%s", root, rel);
    assert_true(n > 0 && (size_t)n < size);
}

/* Writes rel (making its directory) with content body. */
static void put(const char *rel, const char *body)
{
    char p[256];
    at(p, sizeof p, rel);
    char *slash = strrchr(p, '/');
    *slash = '\0';
    assert_true(mkdir(p, 0750) == 0 || errno == EEXIST);
    *slash = '/';
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    assert_int_equal(fputs(body, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* The content of rel, or "" when it cannot be read. */
static const char *get(const char *rel)
{
    static char buf[64];
    char p[256];
    at(p, sizeof p, rel);
    buf[0] = '\0';
    FILE *f = fopen(p, "r");
    if (!f)
        return buf;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static bool exists(const char *rel)
{
    char p[256];
    at(p, sizeof p, rel);
    return access(p, F_OK) == 0;
}

static void test_new_root_is_marked(void **state)
{
    (void)state;
    char e[512] = "";
    assert_int_equal(storage_layout_check(root, e, sizeof e), 0);
    assert_false(exists(STORAGE_LAYOUT_FILE)); /* check never writes */
    assert_int_equal(storage_init(root, e, sizeof e), 0);
    assert_string_equal(get(STORAGE_LAYOUT_FILE), "2\n");
    char p[256];
    struct stat st;
    at(p, sizeof p, STORAGE_LAYOUT_FILE);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0644); /* chunkctl may run as someone else */
    assert_int_equal(storage_layout_claim(root, e, sizeof e), 0); /* again */
    assert_int_equal(storage_layout_check(root, e, sizeof e), 0);

    /* Files this build makes go where layout 2 says. */
    int fd = storage_create(root, 0x2a05);
    assert_true(fd >= 0);
    assert_int_equal(close(fd), 0);
    assert_true(exists("2a/10757.data"));
}

/* Bucket directories without files were never used: nothing to move. */
static void test_empty_buckets_are_not_a_layout(void **state)
{
    (void)state;
    char p[256], e[512] = "";
    at(p, sizeof p, "2a");
    assert_int_equal(mkdir(p, 0750), 0);
    assert_int_equal(storage_layout_claim(root, e, sizeof e), 0);
    assert_string_equal(get(STORAGE_LAYOUT_FILE), "2\n");
}

static void test_old_root_refused(void **state)
{
    (void)state;
    put("2a/42.data", "x");
    char e[512] = "";
    assert_int_equal(storage_init(root, e, sizeof e), -1);
    assert_non_null(strstr(e, root));
    assert_non_null(strstr(e, "layout 1"));
    assert_non_null(strstr(e, "chunkctl storage-migrate"));
    assert_false(exists(STORAGE_LAYOUT_FILE));
    e[0] = '\0';
    assert_int_equal(storage_layout_check(root, e, sizeof e), -1);
    assert_non_null(strstr(e, "chunkctl storage-migrate"));
}

static void test_unknown_markers_refused(void **state)
{
    (void)state;
    static const struct {
        const char *body, *reason;
    } rows[] = {
        {"3\n", "newer than this build's 2"},
        {"junk\n", "does not hold a layout version"},
        {"", "does not hold a layout version"},
        {"2x\n", "does not hold a layout version"},
        {"0\n", "does not hold a layout version"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        put(STORAGE_LAYOUT_FILE, rows[i].body);
        char e[512] = "";
        assert_int_equal(storage_layout_claim(root, e, sizeof e), -1);
        if (!strstr(e, rows[i].reason))
            fail_msg("marker '%s': %s", rows[i].body, e);
        storage_migration m;
        assert_int_equal(storage_layout_migrate(root, &m, e, sizeof e), -1);
        assert_string_equal(get(STORAGE_LAYOUT_FILE), rows[i].body); /* left alone */
    }
}

static void test_migrate_moves_files(void **state)
{
    (void)state;
    /* Layout 1: bucket = id & 0xff. */
    put("01/1.data", "one");
    put("2a/42.data", "forty-two");
    put("00/256.data", "two-five-six");
    put("2a/10794.data", "in place");      /* 0x2a2a: 2a in both layouts */
    put("2a/42.data.fence", "a leftover"); /* not a document file: stays */
    put("2a/notes.txt", "operator's");
    put("2a/042.data", "not a name the server makes"); /* stays */

    storage_migration m;
    char e[512] = "";
    if (storage_layout_migrate(root, &m, e, sizeof e) != 0)
        fail_msg("migrate: %s", e);
    assert_int_equal(m.moved, 3);
    assert_int_equal(m.in_place, 1);
    assert_int_equal(m.other, 3);
    assert_string_equal(get("00/1.data"), "one");
    assert_string_equal(get("00/42.data"), "forty-two");
    assert_string_equal(get("01/256.data"), "two-five-six");
    assert_string_equal(get("2a/10794.data"), "in place");
    assert_false(exists("01/1.data"));
    assert_false(exists("2a/42.data"));
    assert_false(exists("00/256.data"));
    assert_true(exists("2a/42.data.fence"));
    assert_true(exists("2a/notes.txt"));
    assert_true(exists("2a/042.data"));
    assert_string_equal(get(STORAGE_LAYOUT_FILE), "2\n");

    /* The server opens what the migration moved. */
    assert_int_equal(storage_init(root, e, sizeof e), 0);
    assert_int_equal(storage_file_size(root, 42), 9);
    assert_int_equal(storage_file_size(root, 256), 12);

    /* Again: nothing to do. */
    assert_int_equal(storage_layout_migrate(root, &m, e, sizeof e), 0);
    assert_int_equal(m.moved + m.in_place + m.other, 0);
}

/* Two files for one id: never one over the other, and the root stays
 * unmarked, so no chunkd starts on it until an operator looks. */
static void test_migrate_never_overwrites(void **state)
{
    (void)state;
    put("01/1.data", "one");
    put("2a/42.data", "layout 1");
    put("00/42.data", "already there");
    storage_migration m;
    char e[512] = "";
    assert_int_equal(storage_layout_migrate(root, &m, e, sizeof e), -1);
    assert_non_null(strstr(e, "42.data"));
    assert_non_null(strstr(e, strerror(EEXIST)));
    assert_string_equal(get("2a/42.data"), "layout 1");
    assert_string_equal(get("00/42.data"), "already there");
    assert_false(exists(STORAGE_LAYOUT_FILE));
    assert_int_equal(storage_layout_claim(root, e, sizeof e), -1);

    /* Once the operator removes the stray copy, a second run finishes. */
    char p[256];
    at(p, sizeof p, "00/42.data");
    assert_int_equal(unlink(p), 0);
    assert_int_equal(storage_layout_migrate(root, &m, e, sizeof e), 0);
    assert_string_equal(get("00/42.data"), "layout 1");
    assert_string_equal(get("00/1.data"), "one");
    assert_string_equal(get(STORAGE_LAYOUT_FILE), "2\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_new_root_is_marked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_buckets_are_not_a_layout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_old_root_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_markers_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_moves_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_never_overwrites, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
