/* chunkd's Redis state (state_redis.c) against the test stack's Redis,
 * without a server around it: a state is written only by the holder of the
 * upload's lease, so a writer busy while the upload was ended (the lease
 * broken, the state deleted) cannot bring the state back. The document ids
 * are far above any the stack's MySQL hands out. */
#include "harness_core.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "chunkd/config.h"
#include "chunkd/state_redis.h"

static chunkd_config cfg;
static redis_state *rs;
static char workdir[IT_DIR_MAX];
static uint64_t next_id;

static int group_setup(void **state)
{
    (void)state;
    if (it_core_setup("it_state_redis", &cfg, workdir) != 0)
        return -1;
    rs = rstate_new(&cfg);
    next_id = 900000000000000ull + (uint64_t)getpid() * 100;
    return rs ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    rstate_free(rs);
    it_rmtree(workdir);
    it_shutdown();
    return 0;
}

static upload_state new_state(const char *writer)
{
    upload_state st;
    memset(&st, 0, sizeof st);
    st.document_id = next_id++;
    st.user_id = 1;
    st.filesize = 4096;
    st.offset = 1024;
    st.synced_offset = 1024;
    st.created_ms = st.updated_ms = it_wall_ms();
    snprintf(st.filename, sizeof st.filename, "a.bin");
    snprintf(st.path, sizeof st.path, "00/%llu.data", (unsigned long long)st.document_id);
    snprintf(st.node, sizeof st.node, "it");
    snprintf(st.writer, sizeof st.writer, "%s", writer);
    return st;
}

static void take(const upload_state *st, const char *token)
{
    bool acquired = false;
    int64_t retry = 0;
    assert_int_equal(rstate_lease_acquire(rs, st->document_id, token, &acquired, &retry), 0);
    assert_true(acquired);
}

/* rstate_put and rstate_save_offset: both write only under the lease. */
typedef int (*state_write)(redis_state *, const upload_state *, const char *, bool *);

/* w, with no hash there: refused and nothing written while nobody holds
 * the lease; once token takes it, the whole state is written (with its
 * TTL: never a hash without one). */
static void assert_write_needs_lease(state_write w, const upload_state *st, const char *token)
{
    bool lost = false;
    assert_int_equal(w(rs, st, token, &lost), 0);
    assert_true(lost);
    assert_int_equal(it_redis_exists((int64_t)st->document_id), 0);
    take(st, token);
    assert_int_equal(w(rs, st, token, &lost), 0);
    assert_false(lost);
    it_rkey k;
    assert_int_equal(it_redis_upload((int64_t)st->document_id, &k), 0);
    assert_true(k.exists);
    assert_int_equal(k.offset, st->offset);
    assert_int_equal(k.filesize, st->filesize); /* the whole state, not the offset alone */
    assert_true(k.ttl > 0);
}

static void test_put_needs_the_lease(void **state)
{
    (void)state;
    upload_state st = new_state("it-node/a");
    assert_write_needs_lease(rstate_put, &st, "it-node/a");
    bool lost = false;
    it_rkey k;

    /* someone else's lease: the state is left as it was */
    st.offset = 2048;
    assert_int_equal(rstate_put(rs, &st, "it-node/b", &lost), 0);
    assert_true(lost);
    assert_int_equal(it_redis_upload((int64_t)st.document_id, &k), 0);
    assert_int_equal(k.offset, 1024);

    /* the key vanished: a save rewrites the whole state only under the
     * lease */
    assert_int_equal(rstate_del(rs, st.document_id), 0);
    assert_int_equal(rstate_lease_release(rs, st.document_id, "it-node/a"), 0);
    assert_write_needs_lease(rstate_save_offset, &st, "it-node/a");
    assert_int_equal(rstate_end(rs, st.document_id), 0);
    it_pass();
}

/* An upload ended (lifecycle_fail_upload) while a writer was busy with it:
 * the writer's lease, its state and its reservation go in one step, and
 * for a while the lease says "ended", so that nothing the writer (or a new
 * one) does next can write the state back or take the lease. */
static void test_end_shuts_every_writer_out(void **state)
{
    (void)state;
    upload_state st = new_state("it-node/f");
    int8_t fits[1], opened[1];
    int64_t promised[1];
    assert_int_equal(rstate_admit_open_many(rs, 1, &st, (int64_t)1 << 40, fits, promised, opened),
                     0);
    assert_int_equal(opened[0], 1);
    assert_int_equal(it_redis_reserved((int64_t)st.document_id), 1);
    int64_t id = (int64_t)st.document_id;

    assert_int_equal(rstate_end(rs, st.document_id), 0);
    assert_int_equal(it_redis_exists(id), 0);
    assert_int_equal(it_redis_reserved(id), 0);
    assert_int_equal(it_redis_lease_ended(id), 1);
    long long left = it_redis_lease_pttl(id);
    /* it lapses, after longer than any lease */
    assert_true(left > cfg.lease_ttl_ms && left <= RSTATE_LEASE_ENDED_MS);

    bool lost = false;
    assert_int_equal(rstate_put(rs, &st, "it-node/f", &lost), 0);
    assert_true(lost);
    bool lease_lost = false;
    assert_int_equal(rstate_save_offset(rs, &st, "it-node/f", &lease_lost), 0);
    assert_true(lease_lost);
    assert_int_equal(it_redis_exists(id), 0);

    /* a completion's check, a resume's take, a new upload's open */
    const char *tokens[1] = {"it-node/f"};
    int8_t held[1];
    assert_int_equal(rstate_lease_confirm_many(rs, 1, &st.document_id, tokens, held), 0);
    assert_int_equal(held[0], 0);
    bool acquired = true;
    int64_t retry = -1;
    assert_int_equal(rstate_lease_acquire(rs, st.document_id, "it-node/g", &acquired, &retry), 0);
    assert_false(acquired);
    assert_int_equal(retry, 0); /* ended: no point in waiting */
    assert_int_equal(rstate_admit_open_many(rs, 1, &st, (int64_t)1 << 40, fits, promised, opened),
                     0);
    assert_int_equal(opened[0], 0);
    assert_int_equal(it_redis_exists(id), 0);
    assert_int_equal(it_redis_reserved(id), 0);
    assert_int_equal(it_redis_lease_ended(id), 1);
    it_pass();
}

/* rstate_lease_keep tells a lease held all along (RENEWED) from one that
 * had lapsed and was free (RETAKEN), and both from one that is another's
 * or marks an end (GONE). */
static void test_lease_keep(void **state)
{
    (void)state;
    upload_state st = new_state("it-node/h");
    rstate_lease_kept kept = RSTATE_LEASE_GONE;
    assert_int_equal(rstate_lease_keep(rs, st.document_id, "it-node/h", &kept), 0);
    assert_int_equal(kept, RSTATE_LEASE_RETAKEN); /* free: taken */
    assert_int_equal(rstate_lease_keep(rs, st.document_id, "it-node/h", &kept), 0);
    assert_int_equal(kept, RSTATE_LEASE_RENEWED);
    assert_int_equal(rstate_lease_keep(rs, st.document_id, "it-node/i", &kept), 0);
    assert_int_equal(kept, RSTATE_LEASE_GONE); /* another's */
    assert_int_equal(rstate_end(rs, st.document_id), 0);
    assert_int_equal(rstate_lease_keep(rs, st.document_id, "it-node/h", &kept), 0);
    assert_int_equal(kept, RSTATE_LEASE_GONE); /* ended */
    assert_int_equal(it_redis_lease_ended((int64_t)st.document_id), 1);
    it_pass();
}

/* A new upload whose lease someone else holds (chunkctl ending it a moment
 * after its row was made): nothing is written for it and the room reserved
 * for it is let go, while the upload beside it opens as usual. */
static void test_open_with_a_lease_held_elsewhere(void **state)
{
    (void)state;
    upload_state sts[2] = {new_state("it-node/c"), new_state("it-node/d")};
    take(&sts[0], "chunkctl-it/1");
    int8_t fits[2], opened[2];
    int64_t promised[2];
    assert_int_equal(rstate_admit_open_many(rs, 2, sts, (int64_t)1 << 40, fits, promised, opened),
                     0);
    assert_int_equal(fits[0], 1);
    assert_int_equal(opened[0], 0);
    assert_int_equal(it_redis_exists((int64_t)sts[0].document_id), 0);
    assert_int_equal(it_redis_reserved((int64_t)sts[0].document_id), 0);
    assert_int_equal(fits[1], 1);
    assert_int_equal(opened[1], 1);
    assert_int_equal(it_redis_exists((int64_t)sts[1].document_id), 1);
    assert_int_equal(it_redis_reserved((int64_t)sts[1].document_id), 1);

    /* and without admission */
    upload_state late = new_state("it-node/e");
    take(&late, "chunkctl-it/2");
    assert_int_equal(rstate_admit_open_many(rs, 1, &late, -1, fits, promised, opened), 0);
    assert_int_equal(opened[0], 0);
    assert_int_equal(it_redis_exists((int64_t)late.document_id), 0);

    for (int i = 0; i < 2; i++)
        assert_int_equal(rstate_end(rs, sts[i].document_id), 0);
    assert_int_equal(rstate_end(rs, late.document_id), 0);
    assert_int_equal(it_redis_reserved((int64_t)sts[1].document_id), 0);
    it_pass();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_needs_the_lease),
        cmocka_unit_test(test_open_with_a_lease_held_elsewhere),
        cmocka_unit_test(test_end_shuts_every_writer_out),
        cmocka_unit_test(test_lease_keep),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
