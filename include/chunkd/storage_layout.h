/* Which layout a storage root is in, and moving a root to the current one.
 *
 * The layout is the rule that turns a document id into its file's path
 * (storage_rel_path). Every chunkd and chunkctl on one root must agree on
 * it, so the root says which one it holds: a file named
 * STORAGE_LAYOUT_FILE with the version number. A root without one that
 * already holds bucket directories with files is layout 1 (buckets by
 * id & 0xff, chunkd before the marker existed). */
#ifndef CHUNKD_STORAGE_LAYOUT_H
#define CHUNKD_STORAGE_LAYOUT_H

#include <stddef.h>

/* Layout 2: "<(id >> 8) & 0xff as two hex digits>/<id>.data". */
#define STORAGE_LAYOUT_VERSION 2
#define STORAGE_LAYOUT_FILE "chunkd-layout"

/* For chunkd at start-up: succeeds when root is in this layout, writing the
 * marker (durably) into a root that holds no document files yet. -1 with
 * the reason in err otherwise; for an older layout the reason names the
 * command that migrates it. */
int storage_layout_claim(const char *root, char *err, size_t errlen);

/* The same verdict without writing anything (for chunkctl, which must not
 * mark a root that no chunkd has used). A root with no marker and no files
 * passes. */
int storage_layout_check(const char *root, char *err, size_t errlen);

typedef struct storage_migration {
    long moved;    /* files renamed to their layout-2 bucket */
    long in_place; /* files whose bucket is the same in both layouts */
    long other;    /* entries of bucket directories that are not "<id>.data" */
} storage_migration;

/* For chunkctl storage-migrate, before it changes anything in MySQL or
 * Redis: root is a folder in layout 1 that holds document files, or one
 * already in this layout (a run again). -1 with the reason otherwise: a
 * newer or unreadable marker, or a folder with neither marker nor files
 * (most likely the wrong one). */
int storage_layout_can_migrate(const char *root, char *err, size_t errlen);

/* Moves every "<id>.data" of a layout-1 root to where layout 2 puts it,
 * syncs the directories, then writes the marker. Renames only (same file
 * system, nothing copied), never over an existing file, so it is safe to
 * run again after a crash part way; on a root already in layout 2 it does
 * nothing. No chunkd may run on root meanwhile. -1 with the reason in err
 * (what was moved before it stays moved: run it again). */
int storage_layout_migrate(const char *root, storage_migration *out, char *err, size_t errlen);

#endif
