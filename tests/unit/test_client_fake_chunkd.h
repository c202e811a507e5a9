/* An in-memory stand-in for chunkd's protocol (docs/PROTOCOL.md) on a
 * loopback peer, with switches for the failures chunkup must survive:
 * dropped connections, 507, lost answers, corrupted bytes. It keeps
 * documents in memory; it is a protocol peer for client tests, not a model
 * of the server's storage, Redis or MySQL. */
#ifndef TEST_CLIENT_FAKE_CHUNKD_H
#define TEST_CLIENT_FAKE_CHUNKD_H

#include <stdbool.h>
#include <stdint.h>

#include "test_client_peer.h"

#define FAKE_MAX_DOCS 16

enum { DOC_UPLOADING, DOC_COMPLETED, DOC_FAILED };

typedef struct fake_doc {
    int64_t id;
    char name[256];
    int64_t size;
    char declared_sha[65];       /* "" when the client gave none */
    unsigned char *data;
    int64_t offset;
    int status;
    char failure[32];
} fake_doc;

typedef struct fake_chunkd {
    peer p;
    int64_t user_id;
    const char *credential;
    int64_t chunk_size;
    int64_t max_file_size;
    fake_doc docs[FAKE_MAX_DOCS];
    int ndocs;

    /* Failures, each happening once, counted in chunks over all connections. */
    int drop_at_chunk;           /* cut the connection inside this chunk */
    int fail_507_at_chunk;       /* answer 507 to this chunk */
    int fail_at_chunk;           /* answer fail_code/fail_reason to this chunk; */
    int fail_code;               /* 408 also closes the connection, as chunkd does */
    const char *fail_reason;
    int64_t fail_retry_after_ms; /* > 0: sent as retry_after_ms with it */
    bool lose_complete_answer;   /* complete the upload, then hang up */
    bool corrupt_bytes;          /* flip a stored byte before complete */
    /* Answers that break the protocol, every time: an upload answer with
     * another size, a resume answer for another document. */
    bool misanswer_upload;
    bool misanswer_resume;

    /* What happened. */
    int chunks;
    int uploads;
    int resumes;
    int completes;

    bool running;
    char port[16];               /* kept across fake_stop/fake_start */
} fake_chunkd;

int fake_start(fake_chunkd *f);
/* Joins the thread, after which the counters and documents may be read
 * without racing it. Does nothing when already stopped. */
void fake_stop(fake_chunkd *f);
void fake_free(fake_chunkd *f);

#endif
