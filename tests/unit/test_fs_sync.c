/* Which kernels and file systems may sync files in batches, and reading
 * the machine's unwritten bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include "chunkd/fs_sync.h"

static void test_kernel_versions(void **state)
{
    (void)state;
    assert_true(fs_sync_kernel_ok("5.8.0"));
    assert_true(fs_sync_kernel_ok("6.1.0-28-amd64"));
    assert_true(fs_sync_kernel_ok("10.0"));
    assert_false(fs_sync_kernel_ok("5.7.19-generic"));
    assert_false(fs_sync_kernel_ok("4.19.0"));
    assert_false(fs_sync_kernel_ok("5"));
    assert_false(fs_sync_kernel_ok(""));
    assert_false(fs_sync_kernel_ok("linux"));
}

static void test_file_system_types(void **state)
{
    (void)state;
    const char *name = "x";
    assert_true(fs_sync_type_ok(0xEF53L, &name));
    assert_string_equal(name, "ext4");
    assert_true(fs_sync_type_ok(0x58465342L, &name));
    assert_string_equal(name, "xfs");
    assert_false(fs_sync_type_ok(0x01021994L, &name)); /* tmpfs */
    assert_null(name);
    assert_false(fs_sync_type_ok(0x6969L, &name)); /* NFS */
    assert_false(fs_sync_type_ok(0x794c7630L, &name)); /* overlayfs */
    assert_false(fs_sync_type_ok(0x9123683EL, &name)); /* btrfs: not checked */
}

static void test_parse_unwritten(void **state)
{
    (void)state;
    const char *meminfo = "MemTotal:       24000000 kB\n"
                          "Dirty:               152 kB\n"
                          "Writeback:            48 kB\n"
                          "WritebackTmp:       9999 kB\n";
    assert_int_equal(fs_sync_parse_unwritten(meminfo), 200 * 1024);
    /* WritebackTmp is not Writeback, whichever comes first. */
    assert_int_equal(fs_sync_parse_unwritten("WritebackTmp: 5 kB\nDirty: 1 kB\nWriteback: 2 kB\n"),
                     3 * 1024);
    assert_int_equal(fs_sync_parse_unwritten("Dirty: 1 kB\nWritebackTmp: 5 kB\n"), -1);
    assert_int_equal(fs_sync_parse_unwritten("Dirty: lots\nWriteback: 0 kB\n"), -1);
    assert_int_equal(fs_sync_parse_unwritten("Dirty: -4 kB\nWriteback: 0 kB\n"), -1);
    assert_int_equal(fs_sync_parse_unwritten(""), -1);
    /* This machine's. */
    assert_true(fs_sync_unwritten_bytes() >= 0);
}

static void test_batch_supported_on_this_machine(void **state)
{
    (void)state;
    char why[256];
    dev_t dev = 0;
    assert_false(fs_sync_batch_supported("/nonexistent/chunkd", &dev, why, sizeof why));
    assert_non_null(strstr(why, "/nonexistent/chunkd"));
    struct statfs fs;
    if (statfs("/dev/shm", &fs) == 0 && fs.f_type == 0x01021994L) {
        assert_false(fs_sync_batch_supported("/dev/shm", &dev, why, sizeof why));
        assert_non_null(strstr(why, "not ext4 or xfs"));
    }
    /* The build folder: ext4 on these machines, where batches are used. */
    const char *name = NULL;
    struct stat sb;
    assert_int_equal(statfs(".", &fs), 0);
    assert_int_equal(stat(".", &sb), 0);
    bool expect = fs_sync_type_ok((long)fs.f_type, &name);
    assert_int_equal(fs_sync_batch_supported(".", &dev, why, sizeof why), expect);
    if (expect) {
        assert_true(dev == sb.st_dev);
        assert_string_equal(why, name);
    } else {
        print_message("build folder on file system 0x%lx: %s\n", (long)fs.f_type, why);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kernel_versions),
        cmocka_unit_test(test_file_system_types),
        cmocka_unit_test(test_parse_unwritten),
        cmocka_unit_test(test_batch_supported_on_this_machine),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
