/* A client that keeps going: one upload through the balancer, started,
 * resumed and completed over as many connections as it takes, the way a
 * client behind a load balancer must behave while instances die and come
 * back. One thread per job (hc_job_thread); no cmocka assertions inside,
 * the caller checks the results after joining.
 *
 * On a broken connection or a retryable answer (503, 409 locked,
 * lease_lost, incomplete, offset_mismatch, upload_not_open) it reconnects
 * and resumes from the server's offset, waiting out another connection's
 * lease as the server asks. An upload request whose answer was lost may
 * have created a row: the job finds it by its unique file name and goes on
 * with it (aborting a second one), so none is left uploading. A completion
 * whose answer was lost shows as not_resumable; the row then says how the
 * upload ended. Any other refusal ends the job with the reason in `why`. */
#ifndef CHUNKD_IT_HAPROXY_CLIENT_H
#define CHUNKD_IT_HAPROXY_CLIENT_H

#include <pthread.h>
#include <stdatomic.h>

#include "harness.h"

/* bounds every read and write of a client; a frozen instance answers nothing */
#define HC_CLIENT_TIMEOUT_MS 30000
/* a job gives up after this long */
#define HC_JOB_DEADLINE_MS 420000

typedef struct hc_job {
    /* set by the caller */
    const it_user *user;
    const char *port;          /* the balancer's port on 127.0.0.1 */
    char filename[64];         /* unique: how a lost upload answer is found */
    int fd;                    /* the file's bytes, read with pread */
    int64_t size;
    char sha[65];
    int64_t rate_bps;          /* send rate cap, 0 for none */
    atomic_bool *abort;        /* stops every job when set */
    pthread_barrier_t *start;  /* waited on before the first connection */
    /* progress, read by other threads */
    atomic_llong acked;        /* highest offset the server acknowledged */
    /* results, read after the join */
    bool ok;
    int64_t document_id;
    char server_sha[65];       /* from SUCCESS, or the completed row */
    int attempts;              /* connections made */
    int orphans_aborted;       /* rows of lost upload answers, aborted */
    char last[768];            /* the last error, retried */
    char why[1024];            /* why the job gave up */
} hc_job;

/* Runs one job to its end; arg is the hc_job. */
void *hc_job_thread(void *arg);

#endif
