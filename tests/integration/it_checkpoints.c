/* Checkpoints (docs/DURABILITY.md): while an upload's bytes arrive, the
 * offset that survives a power cut (synced_offset in its Redis hash) moves
 * on every sync_interval_bytes, and with sync_when_idle also every 4 MiB
 * while the worker has no sync running. Each test starts a server of its
 * own with one worker, so that worker's syncer has nothing else to do. */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHUNK (64 * IT_KiB)
#define FILESIZE (12 * IT_MiB)
#define STEP (4 * IT_MiB) /* upload.c's write-back step */
#define WAIT_MS 10000

static it_server srv;
static int admin_port;
static it_user user;
static unsigned char *data;
static char data_sha[65];

static int group_setup(void **state)
{
    (void)state;
    it_fixture_server(&srv);
    if (it_init("it_checkpoints") != 0 || it_user_create(&user) != 0)
        return -1;
    data = it_random_payload(FILESIZE, data_sha);
    return 0;
}

static int group_teardown(void **state)
{
    free(data);
    return it_fixture_group_teardown(state);
}

/* Sends the chunks of [from, to), each acknowledged before the next. */
static void send_range(it_sock *s, int64_t id, int64_t from, int64_t to)
{
    for (int64_t off = from; off < to; off += CHUNK)
        it_sock_chunk_ok(s, id, off, data + off, CHUNK);
}

/* The worker's syncs so far (checkpoints, before any completion). */
static long long syncs(void)
{
    return it_admin_metric(admin_port, "chunkd_fsync_seconds_count{");
}

/* Waits, bounded, until at least `want` syncs have come back. */
static void wait_for_syncs(long long want)
{
    for (int waited = 0; syncs() < want; waited += 20) {
        if (waited >= WAIT_MS)
            fail_msg("no checkpoint came back within %d ms", WAIT_MS);
        usleep(20 * 1000);
    }
}

static int64_t synced_offset(int64_t id)
{
    it_rkey k;
    assert_int_equal(it_redis_upload(id, &k), 0);
    assert_true(k.exists);
    return k.synced_offset;
}

/* The rest of the file, its completion, and the stored hash. */
static void finish(it_sock *s, int64_t id, int64_t from)
{
    send_range(s, id, from, FILESIZE);
    json_t *r = it_sock_complete(s, id);
    assert_string_equal(it_json_str(r, "status"), "SUCCESS");
    assert_string_equal(it_json_str(r, "sha256"), data_sha);
    json_decref(r);
}

static int64_t start_upload(it_sock *s, const char *const *env)
{
    assert_int_equal(it_server_start_admin(&srv, &admin_port, env), 0);
    assert_int_equal(it_sock_connect(s, srv.port), 0);
    it_sock_auth(s, &user);
    return it_sock_upload(s, "checkpointed.bin", FILESIZE);
}

/* The interval is far above the file, so only the idle syncer checkpoints:
 * the first at 4 MiB, and synced_offset reaches Redis with the next
 * chunk's offset. */
static void test_idle_syncer_checkpoints_every_step(void **state)
{
    (void)state;
    static const char *const env[] = {"CHUNKD_SYNC_INTERVAL_BYTES=1g", NULL};
    it_sock s;
    int64_t id = start_upload(&s, env);
    assert_int_equal(syncs(), 0);
    send_range(&s, id, 0, 2 * STEP);
    wait_for_syncs(1);
    send_range(&s, id, 2 * STEP, 2 * STEP + CHUNK);
    int64_t synced = synced_offset(id);
    fprintf(stderr, "it: synced_offset %lld after %lld bytes, %lld syncs\n", (long long)synced,
            (long long)(2 * STEP + CHUNK), syncs());
    assert_true(synced == STEP || synced == 2 * STEP);
    finish(&s, id, 2 * STEP + CHUNK);
    it_sock_close(&s);
    it_pass();
}

/* sync_when_idle 0: nothing until the interval (6 MiB), then exactly
 * there. */
static void test_only_the_interval_when_told(void **state)
{
    (void)state;
    static const char *const env[] = {"CHUNKD_SYNC_INTERVAL_BYTES=6m", "CHUNKD_SYNC_WHEN_IDLE=0",
                                      NULL};
    it_sock s;
    int64_t id = start_upload(&s, env);
    const int64_t interval = 6 * IT_MiB;
    send_range(&s, id, 0, interval - CHUNK);
    /* Past the step, with the syncer idle all along: still no sync. The
     * offset saves of these chunks came back, so a checkpoint handed over
     * with one of them would have been counted by now or soon after. */
    usleep(200 * 1000);
    assert_int_equal(syncs(), 0);
    assert_int_equal(synced_offset(id), 0);
    send_range(&s, id, interval - CHUNK, interval);
    wait_for_syncs(1);
    send_range(&s, id, interval, interval + CHUNK);
    assert_int_equal(synced_offset(id), interval);
    assert_int_equal(syncs(), 1);
    finish(&s, id, interval + CHUNK);
    it_sock_close(&s);
    it_pass();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_idle_syncer_checkpoints_every_step,
                                        it_own_servers_test_setup, it_own_server_test_teardown),
        cmocka_unit_test_setup_teardown(test_only_the_interval_when_told, it_own_servers_test_setup,
                                        it_own_server_test_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
