/* A real full disk: chunkd runs in a mount namespace of its own where its
 * storage folder is a small tmpfs, invisible to the rest of the machine.
 * Admission (docs/CONFIG.md) lets the upload in because the volume has room
 * when it starts; then something else fills the volume, as another program
 * sharing it would. The chunk that does not fit is refused with 507 and
 * what was accepted is kept; once the tmpfs grows, the same chunkup
 * command resumes the upload. Needs root (mount namespaces); skipped
 * otherwise. */
#include "harness_fault.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static it_server srv;
static it_user user;
static it_chunkup cup;
static char workdir[IT_DIR_MAX];
static char mnt[IT_DIR_MAX];
static char backing[IT_DIR_MAX + 8]; /* the write-back test's disk image lives here */

static int group_setup(void **state)
{
    (void)state;
    if (it_init("it_fault_disk") != 0 || it_user_create(&user) != 0 ||
        it_tmpdir("files", workdir, sizeof workdir) != 0)
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    it_rmtree(workdir);
    it_shutdown();
    return 0;
}

/* The server goes first: its mount namespace, and the tmpfs, end with it. */
static int test_teardown(void **state)
{
    (void)state;
    it_chunkup_cleanup(&cup);
    it_own_server_end(&srv);
    if (mnt[0])
        it_rmtree(mnt);
    if (backing[0])
        it_rmtree(backing);
    mnt[0] = backing[0] = '\0';
    return 0;
}

/* Whether this process may mount a tmpfs in a new mount namespace. */
static bool can_mount_privately(const char *unshare, const char *sh)
{
    const char *argv[] = {unshare, "-m", "--propagation", "private", sh, "-c",
                          "mount -t tmpfs -o size=1m tmpfs \"$0\"", mnt, NULL};
    char *out = NULL;
    int rc = it_run(argv, NULL, NULL, 20000, &out);
    free(out);
    return rc == 0;
}

/* Writes a file into the server's storage volume until the volume is full;
 * returns the bytes written, or -1 unless the end was ENOSPC. */
static int64_t fill_volume(const char *dir)
{
    char path[IT_PATH_MAX + 16];
    it_line(path, sizeof path, "%s/filler", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "it: create %s: %s\n", path, strerror(errno));
        return -1;
    }
    static char block[64 * 1024];
    memset(block, 'f', sizeof block);
    int64_t total = 0;
    int e = 0;
    for (;;) {
        ssize_t w = write(fd, block, sizeof block);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            e = errno;
            break;
        }
        total += w;
    }
    close(fd);
    if (e != ENOSPC) {
        fprintf(stderr, "it: filling %s: %s\n", path, strerror(e));
        return -1;
    }
    return total;
}

/* Starts chunkd (one worker, no free-space reserve: the whole small volume
 * is there to be admitted) in a mount namespace of its own, where sh runs
 * script with the storage folder as $0 and then becomes chunkd ("$@"), so
 * the spawned pid is chunkd's. *view is the server with its storage folder
 * as chunkd sees it: through its own root. */
static void start_in_namespace(const char *unshare, const char *sh, const char *script,
                               it_server *view)
{
    const char *wrapper[] = {unshare, "-m", "--propagation", "private", sh, "-c", script, mnt,
                             NULL};
    /* Syncs batched whatever else the machine is writing (tests run side
     * by side), so a batch is what meets the write-back error; a
     * checkpoint every MiB. */
    static const char *const args[] = {"--workers", "1", "--min-free-bytes", "0",
                                       "--sync-batch-max-unwritten", "1099511627776",
                                       "--sync-interval-bytes", "1048576", NULL};
    it_server_opts o = {.args = args, .storage_dir = mnt, .wrapper = wrapper};
    assert_int_equal(it_server_start(&srv, &o), 0);
    it_test_begin(&srv);
    *view = srv;
    it_line(view->storage_dir, sizeof view->storage_dir, "/proc/%d/root%s", (int)srv.pid, mnt);
}

/* Root, and each program of names (NULL-terminated) found into paths;
 * otherwise the test is skipped, saying why. */
static void require(const char *test, const char *const *names, char (*paths)[IT_PATH_MAX])
{
    if (geteuid() != 0) {
        fprintf(stderr, "it: SKIP %s: needs root to mount in a mount namespace\n", test);
        skip();
    }
    for (size_t i = 0; names[i]; i++) {
        if (it_find_program(names[i], paths[i], IT_PATH_MAX) != 0) {
            fprintf(stderr, "it: SKIP %s: %s is needed (Debian packages util-linux, "
                            "e2fsprogs)\n", test, names[i]);
            skip();
        }
    }
}

static void test_enospc_then_room_again(void **state)
{
    (void)state;
    static const char *const tools[] = {"unshare", "nsenter", "sh", NULL};
    char paths[3][IT_PATH_MAX];
    require("full disk", tools, paths);
    const char *unshare = paths[0], *nsenter = paths[1], *sh = paths[2];
    assert_int_equal(it_tmpdir("mnt", mnt, sizeof mnt), 0);
    if (!can_mount_privately(unshare, sh)) {
        fprintf(stderr, "it: SKIP full disk: cannot mount a tmpfs in a new mount namespace "
                        "here\n");
        skip();
    }

    it_server view;
    start_in_namespace(unshare, sh,
                       "mount -t tmpfs -o size=8m,mode=0750 tmpfs \"$0\" && exec \"$@\"", &view);

    it_user u;
    assert_int_equal(it_user_create(&u), 0);
    const int64_t size = 4 * IT_MiB;
    char path[IT_PATH_MAX], sha[65];
    it_line(path, sizeof path, "%s/squeezed.bin", workdir);
    assert_int_equal(it_make_file(path, size, sha), 0);

    static const char *const slow[] = {"--limit-rate", "2m", NULL};
    assert_int_equal(it_chunkup_start(&cup, &srv, &u, path, slow), 0);
    int64_t id = 0;
    int64_t seen = it_wait_acked(u.id, IT_MiB, 60000, &id);
    if (seen < 0)
        it_chunkup_print(&cup);
    assert_true(seen >= IT_MiB);
    int64_t filler = fill_volume(view.storage_dir);
    assert_true(filler > 0);
    fprintf(stderr, "it: filled the volume with %lld bytes at offset %lld\n", (long long)filler,
            (long long)seen);

    int code = -1;
    assert_int_equal(it_chunkup_wait(&cup, 120000, &code), 0);
    if (code != 6)
        it_chunkup_print(&cup);
    assert_int_equal(code, 6); /* docs/CLIENT.md: out of storage, resume later */
    json_t *res = it_chunkup_result(&cup);
    if (!res)
        it_chunkup_print(&cup);
    assert_non_null(res);
    assert_string_equal(it_json_str(res, "status"), "error");
    assert_int_equal(it_json_int(res, "code"), 507);
    assert_string_equal(it_json_str(res, "reason"), "insufficient_storage");
    json_decref(res);

    assert_int_equal(it_doc_newest(u.id), id);
    it_assert_doc_status(id, "uploading", NULL);
    assert_true(it_log_count(&srv, "event=storage_full") >= 1);
    cu_conn *c = it_cu_connect(&srv);
    cu_auth auth = {.user_id = u.id, .credential = u.credential};
    cu_error err;
    json_t *reply;
    IT_CU_OK(cu_status(c, &auth, id, &reply, &err), err);
    json_t *doc = json_object_get(reply, "document");
    assert_string_equal(it_json_str(doc, "status"), "uploading");
    int64_t kept = it_json_int(doc, "offset");
    json_decref(reply);
    cu_close(c);
    fprintf(stderr, "it: the full disk kept %lld of %lld bytes\n", (long long)kept,
            (long long)size);
    assert_true(kept >= seen && kept < size);
    it_rkey k;
    assert_int_equal(it_redis_upload(id, &k), 0);
    assert_true(k.exists);
    assert_int_equal(k.offset, kept);
    /* exactly the accepted bytes: the chunk that did not fit was cut off */
    char data[IT_PATH_MAX + 64];
    it_upload_path(&view, id, data, sizeof data);
    assert_int_equal(it_file_size(data), kept);
    /* and none of it outside the namespace */
    assert_int_equal(it_count_files(mnt), 0);

    char pid[16];
    snprintf(pid, sizeof pid, "%d", (int)srv.pid);
    const char *grow[] = {nsenter, "-t", pid, "-m", "mount", "-o", "remount,size=16m", mnt,
                          NULL};
    char *out = NULL;
    assert_int_equal(it_run(grow, NULL, NULL, 20000, &out), 0);
    free(out);

    /* the same command again resumes from the kept bytes */
    assert_int_equal(it_chunkup_start(&cup, &srv, &u, path, NULL), 0);
    assert_int_equal(it_chunkup_wait(&cup, 120000, &code), 0);
    if (code != 0)
        it_chunkup_print(&cup);
    assert_int_equal(code, 0);
    res = it_chunkup_result(&cup);
    assert_non_null(res);
    assert_string_equal(it_json_str(res, "status"), "SUCCESS");
    assert_int_equal(it_json_int(res, "document_id"), id);
    assert_string_equal(it_json_str(res, "sha256"), sha);
    json_decref(res);
    int64_t resumed[4];
    assert_int_equal(it_chunkup_resumes(&cup, id, resumed, 4), 1);
    assert_int_equal(resumed[0], kept);
    it_assert_stored(&view, id, size, sha);
    assert_int_equal(it_doc_count(u.id, NULL), 1);
    assert_int_equal(it_count_files(mnt), 0);
    it_assert_server_stops_cleanly(&srv);
    it_pass();
}

/* The write-back test's volume: in chunkd's mount namespace, a tmpfs at
 * <mnt>.back holds a sparse disk image larger than itself, and the image,
 * an ext4 without a journal on a loop device, is mounted over the storage
 * folder. Once something fills the tmpfs, the loop device fails every
 * write it cannot place: a real write-back error (ENOSPC) under a file
 * system that accepted the bytes into its cache, as a thin-provisioned or
 * failing disk gives. */
static const char loop_volume[] =
    "mkdir -p \"$0.back\" && mount -t tmpfs -o size=24m tmpfs \"$0.back\" && "
    "truncate -s 256m \"$0.back/disk\" && mkfs.ext4 -q -O ^has_journal \"$0.back/disk\" && "
    "mount -o loop,errors=continue \"$0.back/disk\" \"$0\" && chmod 0750 \"$0\" && ";

/* Whether this process may build that volume in a new mount namespace. */
static bool can_mount_loop_volume(const char *unshare, const char *sh)
{
    char script[sizeof loop_volume + 16];
    snprintf(script, sizeof script, "%strue", loop_volume);
    const char *argv[] = {unshare, "-m", "--propagation", "private", sh, "-c", script, mnt, NULL};
    char *out = NULL;
    int rc = it_run(argv, NULL, NULL, 30000, &out);
    free(out);
    return rc == 0;
}

/* Starts chunkd in a mount namespace of its own on the loop volume (root
 * and the tools needed, or the test named `test` is skipped); *view sees
 * its storage from here, back_view the folder of the volume's backing
 * store, which fill_volume fills. */
static void start_on_loop_volume(const char *test, it_server *view, char *back_view,
                                 size_t back_size)
{
    static const char *const tools[] = {"unshare", "sh", "mkfs.ext4", NULL};
    char paths[3][IT_PATH_MAX];
    require(test, tools, paths);
    const char *unshare = paths[0], *sh = paths[1];
    assert_int_equal(it_tmpdir("mnt", mnt, sizeof mnt), 0);
    it_line(backing, sizeof backing, "%s.back", mnt);
    if (!can_mount_loop_volume(unshare, sh)) {
        fprintf(stderr, "it: SKIP %s: cannot mount a loop device in a new mount namespace "
                        "here\n", test);
        skip();
    }
    char script[sizeof loop_volume + 16];
    snprintf(script, sizeof script, "%sexec \"$@\"", loop_volume);
    start_in_namespace(unshare, sh, script, view);
    it_line(back_view, back_size, "/proc/%d/root%s", (int)srv.pid, backing);
}

/* Each answer to a completion whose file could not be written is an error
 * and never SUCCESS; the upload stays resumable with its offset cut back
 * to what is known to be on disk (nothing, for one-chunk files), and once
 * the disk has room again each upload is resumed and completes with its
 * own bytes. */
static void test_write_back_error_at_completion(void **state)
{
    (void)state;
    enum { N = 8, SIZE = 64 * 1024 };
    it_server view;
    char back_view[IT_PATH_MAX];
    start_on_loop_volume("write-back error", &view, back_view, sizeof back_view);

    it_user u;
    assert_int_equal(it_user_create(&u), 0);
    static unsigned char data[N][SIZE];
    char sha[N][65];
    it_sock socks[N];
    int64_t ids[N];
    for (int i = 0; i < N; i++) {
        it_random_bytes(data[i], SIZE);
        it_sha256_hex(data[i], SIZE, sha[i]);
        assert_int_equal(it_sock_connect(&socks[i], srv.port), 0);
        it_sock_auth(&socks[i], &u);
        ids[i] = it_sock_upload(&socks[i], "unwritable.bin", SIZE);
    }
    int64_t filler = fill_volume(back_view);
    assert_true(filler > 0);
    /* Every last chunk and completion at once: the syncs come as one batch
     * or a few. Every other client hangs up right after asking: its sync
     * fails with nobody to answer, and must leave the same state behind. */
    for (int i = 0; i < N; i++) {
        it_sock_send_whole_and_complete(&socks[i], ids[i], data[i], SIZE);
        if (i % 2)
            it_sock_close(&socks[i]);
    }
    for (int i = 1; i < N; i += 2) {
        char needle[64];
        it_line(needle, sizeof needle, "doc=%lld ", (long long)ids[i]);
        int64_t deadline = it_now_ms() + IT_REPLY_TIMEOUT_MS;
        while (it_log_count(&srv, needle) < 1 && it_now_ms() < deadline)
            it_sleep_ms(20);
    }
    for (int i = 0; i < N; i++) {
        if (i % 2) {
            /* Left: the lease let go, the row still uploading, nothing
             * on disk for it, and the offset a resume starts from (below)
             * is 0 like the others', not the bytes the cache had. */
            it_assert_doc_status(ids[i], "uploading", NULL);
            assert_int_equal(it_redis_wait_lease_free(ids[i], IT_REPLY_TIMEOUT_MS), 0);
            continue;
        }
        json_t *r = NULL;
        assert_int_equal(it_sock_read_json(&socks[i], IT_REPLY_TIMEOUT_MS, &r), IT_READ_OK);
        assert_string_equal(it_json_str(r, "event"), "progress");
        json_decref(r);
        assert_int_equal(it_sock_read_json(&socks[i], IT_REPLY_TIMEOUT_MS, &r), IT_READ_OK);
        assert_string_equal(it_json_str(r, "status"), "error");
        int64_t code = it_json_int(r, "code");
        if (code == 507)
            it_assert_error(r, 507, "insufficient_storage");
        else
            it_assert_error(r, 500, "internal");
        json_decref(r);
        it_assert_doc_status(ids[i], "uploading", NULL);
        it_rkey k;
        assert_int_equal(it_redis_upload(ids[i], &k), 0);
        assert_true(k.exists);
        assert_int_equal(k.offset, 0);
    }
    /* At least one batch met the error and fell back to a sync a file. */
    int fallbacks = it_log_count(&srv, "event=batch_sync_failed");
    fprintf(stderr, "it: %d batch syncs failed and fell back to one sync a file\n", fallbacks);
    assert_true(fallbacks >= 1);

    /* Room again: each upload resumes from nothing and completes. */
    char path[IT_PATH_MAX + 16];
    it_line(path, sizeof path, "%s/filler", back_view);
    assert_int_equal(unlink(path), 0);
    for (int i = 0; i < N; i++) {
        if (i % 2) {
            assert_int_equal(it_sock_connect(&socks[i], srv.port), 0);
            it_sock_auth(&socks[i], &u);
        }
        char line[128];
        it_line(line, sizeof line, "{\"action\":\"resume\",\"document_id\":%lld}",
                (long long)ids[i]);
        json_t *r = it_sock_req(&socks[i], line);
        it_assert_ok(r, "resume");
        assert_int_equal(it_json_int(r, "offset"), 0);
        json_decref(r);
        it_sock_chunk_ok(&socks[i], ids[i], 0, data[i], SIZE);
        r = it_sock_complete(&socks[i], ids[i]);
        assert_string_equal(it_json_str(r, "status"), "SUCCESS");
        assert_string_equal(it_json_str(r, "sha256"), sha[i]);
        json_decref(r);
        it_assert_stored(&view, ids[i], SIZE, sha[i]);
        it_sock_close(&socks[i]);
    }
    it_assert_server_stops_cleanly(&srv);
    it_pass();
}

/* What the client does once the chunk that starts a failing checkpoint is
 * sent. */
typedef enum {
    HANG_UP_AFTER_FAILURE, /* waits for the chunk's answer and the failure, hangs up */
    HANG_UP_AT_ONCE,       /* hangs up at once, mostly while the sync is on its way */
    RESUME_AT_ONCE,        /* asks to resume the same upload on the same connection */
} after_chunk;

/* A checkpoint's sync fails (write-back error), and the client leaves its
 * upload in one of those ways. The pages that failed are clean in the
 * page cache but not on disk, so a resume must start from the last good
 * checkpoint (here: none, 0), not from the bytes the cache still shows; and
 * what is finally stored must be what reached the disk. */
static void checkpoint_failure_then_leave(after_chunk how)
{
    enum { CHUNK = 64 * 1024, SIZE = 3 * 1024 * 1024, SENT = 1024 * 1024 };
    it_server view;
    char back_view[IT_PATH_MAX];
    start_on_loop_volume("checkpoint failure", &view, back_view, sizeof back_view);

    it_user u;
    assert_int_equal(it_user_create(&u), 0);
    static unsigned char data[SIZE];
    it_random_bytes(data, SIZE);
    char sha[65];
    it_sha256_hex(data, SIZE, sha);
    it_sock s;
    assert_int_equal(it_sock_connect(&s, srv.port), 0);
    it_sock_auth(&s, &u);
    int64_t id = it_sock_upload(&s, "hung-up.bin", SIZE);
    assert_true(fill_volume(back_view) > 0);
    off_t mark = it_log_size(&srv);
    for (int64_t off = 0; off < SENT - CHUNK; off += CHUNK)
        it_sock_chunk_ok(&s, id, off, data + off, CHUNK);
    char needle[64], line[128];
    it_line(needle, sizeof needle, "event=checkpoint_failed doc=%lld ", (long long)id);
    it_line(line, sizeof line, "{\"action\":\"resume\",\"document_id\":%lld}", (long long)id);
    if (how == HANG_UP_AFTER_FAILURE) {
        it_sock_chunk_ok(&s, id, SENT - CHUNK, data + SENT - CHUNK, CHUNK);
        assert_int_equal(it_log_wait(&srv, mark, needle, IT_REPLY_TIMEOUT_MS), 0);
        it_sock_close(&s);
    } else {
        char hdr[160];
        it_line(hdr, sizeof hdr,
                "{\"action\":\"chunk\",\"document_id\":%lld,\"offset\":%lld,\"length\":%d}",
                (long long)id, (long long)(SENT - CHUNK), CHUNK);
        assert_int_equal(it_sock_send_chunk(&s, hdr, data + SENT - CHUNK, CHUNK), 0);
        if (how == RESUME_AT_ONCE) {
            /* The sync on its way holds the upload's lease: locked, or,
             * once it is back, the offset it left (0); never the bytes
             * the cache shows. */
            assert_int_equal(it_sock_send_str(&s, line), 0);
            assert_int_equal(it_sock_send(&s, "\n", 1), 0);
            json_t *r = NULL;
            assert_int_equal(it_sock_read_json(&s, IT_REPLY_TIMEOUT_MS, &r), IT_READ_OK);
            assert_string_equal(it_json_str(r, "event"), "progress");
            json_decref(r);
            assert_int_equal(it_sock_read_json(&s, IT_REPLY_TIMEOUT_MS, &r), IT_READ_OK);
            if (strcmp(it_json_str(r, "status"), "ok") == 0) {
                assert_int_equal(it_json_int(r, "offset"), 0);
                fprintf(stderr, "it: the resume came after the sync was back\n");
            } else {
                it_assert_error(r, 409, "locked");
                fprintf(stderr, "it: the resume found the sync on its way: locked\n");
            }
            json_decref(r);
        }
        it_sock_close(&s);
        assert_int_equal(it_log_wait(&srv, mark, needle, IT_REPLY_TIMEOUT_MS), 0);
        it_line(needle, sizeof needle, "event=upload_kept_for_sync doc=%lld ", (long long)id);
        fprintf(stderr, "it: the upload was let go %s its checkpoint's sync was back\n",
                it_log_count(&srv, needle) > 0 ? "before" : "after");
    }
    /* The upload is let go with its lease: released, not expired (a
     * lease lives 10 s). */
    assert_int_equal(it_redis_wait_lease_free(id, 5000), 0);

    char path[IT_PATH_MAX + 16];
    it_line(path, sizeof path, "%s/filler", back_view);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(it_sock_connect(&s, srv.port), 0);
    it_sock_auth(&s, &u);
    json_t *r = it_sock_req(&s, line);
    it_assert_ok(r, "resume");
    int64_t from = it_json_int(r, "offset");
    json_decref(r);
    assert_int_equal(from, 0);
    for (int64_t off = from; off < SIZE; off += CHUNK)
        it_sock_chunk_ok(&s, id, off, data + off, CHUNK);
    r = it_sock_complete(&s, id);
    assert_string_equal(it_json_str(r, "status"), "SUCCESS");
    json_decref(r);
    it_sock_close(&s);
    /* The lease was let go cleanly (its writer cleared), by whichever token
     * held it last: the resume needed no fenced copy. */
    it_line(needle, sizeof needle, "event=takeover_fenced doc=%lld ", (long long)id);
    assert_int_equal(it_log_count(&srv, needle), 0);
    /* What is stored is what the disk holds, not what the cache held: the
     * pages whose write-back failed are clean and go with the caches. */
    assert_int_equal(it_drop_caches(), 0);
    it_assert_stored(&view, id, SIZE, sha);
    it_assert_server_stops_cleanly(&srv);
    it_pass();
}

static void test_checkpoint_failure_then_hang_up(void **state)
{
    (void)state;
    checkpoint_failure_then_leave(HANG_UP_AFTER_FAILURE);
}

static void test_hang_up_while_checkpoint_fails(void **state)
{
    (void)state;
    checkpoint_failure_then_leave(HANG_UP_AT_ONCE);
}

static void test_resume_while_checkpoint_fails(void **state)
{
    (void)state;
    checkpoint_failure_then_leave(RESUME_AT_ONCE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_enospc_then_room_again, it_own_servers_test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_write_back_error_at_completion,
                                        it_own_servers_test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_checkpoint_failure_then_hang_up,
                                        it_own_servers_test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_hang_up_while_checkpoint_fails,
                                        it_own_servers_test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_resume_while_checkpoint_fails,
                                        it_own_servers_test_setup, test_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
