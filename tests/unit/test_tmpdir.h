/* A scratch directory for a unit test, and its removal with everything in
 * it. Header-only: each test program that wants it includes it once. */
#ifndef CHUNKD_TEST_TMPDIR_H
#define CHUNKD_TEST_TMPDIR_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_tmpdir_rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

/* Makes "<prefix><6 random characters>" (mkdtemp) into out; -1 on failure. */
static inline int test_tmpdir_make(char *out, size_t size, const char *prefix)
{
    int n = snprintf(out, size, "%sXXXXXX", prefix);
    if (n < 0 || (size_t)n >= size)
        return -1;
    return mkdtemp(out) ? 0 : -1;
}

/* Removes dir and everything below it, symlinks not followed. */
static inline int test_tmpdir_remove(const char *dir)
{
    return nftw(dir, test_tmpdir_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
