/* chunkd's MySQL statements (docstore_mysql.c) against the test stack's
 * MariaDB, without a server around them: groups of every size are
 * inserted and completed row for row, and the connection keeps a bounded
 * number of prepared statements whatever the sizes (a server's
 * max_prepared_stmt_count is shared by all its clients). */
#include "harness_core.h"

#include <stdio.h>
#include <stdlib.h>

#include "chunkd/config.h"
#include "chunkd/docstore_mysql.h"
#include "chunkd/storage.h"

static chunkd_config cfg;
static char workdir[IT_DIR_MAX];

static int group_setup(void **state)
{
    (void)state;
    return it_core_setup("it_docstore", &cfg, workdir);
}

static int group_teardown(void **state)
{
    (void)state;
    it_rmtree(workdir);
    it_shutdown();
    return 0;
}

enum { MAX_GROUP = 40, PADDED_SIZES = 7, INSERT_SIZES_KEPT = 16 };

/* Groups of 1 to MAX_GROUP rows, each inserted in one call and completed
 * in one call, with its second row ended elsewhere first (from 3 rows on):
 * every row gets its own id, hash and path, the ended row stays as it
 * was, and the statements kept never pass the fixed ones plus 7 UPDATE
 * sizes (powers of two) and 16 INSERT sizes. */
static void test_groups_of_every_size(void **state)
{
    (void)state;
    it_user u;
    assert_int_equal(it_user_create(&u), 0);
    docstore *ds = docstore_new(&cfg);
    assert_non_null(ds);
    size_t fixed = 0;
    for (size_t n = 1; n <= MAX_GROUP; n++) {
        doc_insert rows[MAX_GROUP];
        uint64_t ids[MAX_GROUP];
        char shas[MAX_GROUP][65], paths[MAX_GROUP][64];
        const char *sha_of[MAX_GROUP], *path_of[MAX_GROUP];
        bool changed[MAX_GROUP];
        for (size_t i = 0; i < n; i++)
            rows[i] = (doc_insert){.user_id = (uint64_t)u.id, .filename = "group.bin",
                                   .filesize = (int64_t)(n * 1000 + i)};
        assert_int_equal(docstore_insert_documents(ds, n, rows, ids), 0);
        for (size_t i = 0; i < n; i++) {
            it_doc d;
            assert_int_equal(it_doc_get((int64_t)ids[i], &d), 1);
            assert_int_equal(d.filesize, (int64_t)(n * 1000 + i));
            assert_string_equal(d.status, "uploading");
            snprintf(shas[i], sizeof shas[i], "%064zx", n * 1000 + i);
            /* the path chunkd gives it: chunkctl storage-migrate (in
             * another program) rewrites any other */
            char rel[STORAGE_REL_PATH_MAX];
            storage_rel_path(ids[i], rel);
            snprintf(paths[i], sizeof paths[i], "%s", rel);
            sha_of[i] = shas[i];
            path_of[i] = paths[i];
        }
        if (n >= 3)
            assert_int_equal(it_doc_end_behind_server((int64_t)ids[1], "ended elsewhere"), 0);
        assert_int_equal(docstore_complete_documents(ds, n, ids, sha_of, path_of, changed), 0);
        for (size_t i = 0; i < n; i++) {
            bool ended = n >= 3 && i == 1;
            it_doc d;
            assert_int_equal(it_doc_get((int64_t)ids[i], &d), 1);
            if (changed[i] == ended)
                fail_msg("group of %zu: row %zu reported %s", n, i,
                         changed[i] ? "changed" : "unchanged");
            assert_string_equal(d.status, ended ? "failed" : "completed");
            if (!ended) {
                assert_string_equal(d.sha256, shas[i]);
                assert_string_equal(d.file_path, paths[i]);
            }
        }
        if (n == 1)
            fixed = docstore_statements(ds); /* the statements prepared at connect */
        size_t kept = docstore_statements(ds);
        if (kept > fixed + PADDED_SIZES + INSERT_SIZES_KEPT)
            fail_msg("after groups of 1 to %zu rows: %zu statements kept (%zu fixed)", n, kept,
                     fixed);
    }
    fprintf(stderr, "it: %zu statements kept after groups of 1 to %d rows (%zu fixed)\n",
            docstore_statements(ds), MAX_GROUP, fixed);
    /* a size whose statement went long ago is prepared again */
    doc_insert two[2] = {{.user_id = (uint64_t)u.id, .filename = "again.bin", .filesize = 1},
                         {.user_id = (uint64_t)u.id, .filename = "again.bin", .filesize = 2}};
    uint64_t ids[2];
    assert_int_equal(docstore_insert_documents(ds, 2, two, ids), 0);
    for (int i = 0; i < 2; i++) {
        it_doc d;
        assert_int_equal(it_doc_get((int64_t)ids[i], &d), 1);
        assert_int_equal(d.filesize, i + 1);
    }
    assert_true(docstore_statements(ds) <= fixed + PADDED_SIZES + INSERT_SIZES_KEPT);
    docstore_free(ds);
    it_pass();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_groups_of_every_size),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
