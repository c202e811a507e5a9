/* A chunkd cluster as deployed (deploy/): HAProxy in TCP mode in front of
 * three chunkd instances that share the test stack's Redis and MariaDB and
 * one storage folder, all on loopback.
 *
 * It runs the deployment's own files: HAProxy reads deploy/haproxy.cfg
 * (CHUNKD_HAPROXY_CFG) with the loopback addresses and short check timings
 * given through its environment variables, and every instance gets the
 * settings of deploy/cluster.env (CHUNKD_CLUSTER_ENV), so the test and
 * docker-compose.yml describe one cluster. Ports are picked free once and
 * kept, so an instance restarts where HAProxy expects it.
 *
 * Functions return 0 on success and -1 after printing why on stderr. */
#ifndef CHUNKD_IT_HAPROXY_CLUSTER_H
#define CHUNKD_IT_HAPROXY_CLUSTER_H

#include "harness.h"

/* The deployment's three replicas, chunkd1..3 (docker-compose.yml). */
#define HC_NODES 3

typedef struct hc_cluster {
    it_server node[HC_NODES];
    char node_id[HC_NODES][64];
    int port[HC_NODES];        /* client port of each instance, fixed */
    int admin_port[HC_NODES];  /* its admin endpoint (GET /health) */
    bool frozen[HC_NODES];     /* SIGSTOPped */
    char dir[IT_DIR_MAX];      /* storage, HAProxy's log and environment */
    char storage[IT_PATH_MAX];
    /* flags for every instance after the cluster's own, NULL-terminated */
    const char *const *extra_args;
    pid_t haproxy_pid;
    int lb_port, stats_port;
    char lb_port_str[8];
    char haproxy_log[IT_PATH_MAX];
    /* folders of instances that were killed, removed with the cluster */
    char old_dirs[8][IT_DIR_MAX];
    int nold;
} hc_cluster;

/* A port nothing listens on right now (bind to 0, read it, close). */
int hc_free_port(void);

/* Starts the three instances and HAProxy, and waits until HAProxy's
 * health checks see every instance up. extra_args (may be NULL) go to
 * every instance, now and at restarts. On failure nothing is left running. */
int hc_start(hc_cluster *c, const char *const *extra_args);
/* Kills HAProxy and every instance (thawing frozen ones first) and removes
 * the cluster's folders. Safe on a cluster that failed to start. */
void hc_stop(hc_cluster *c);

/* (Re)starts instance i on its own port, node id and the shared storage. */
int hc_node_start(hc_cluster *c, int i);
/* SIGKILL, as a crash: no goodbye, leases and sockets left to lapse. */
int hc_node_kill(hc_cluster *c, int i);
/* SIGSTOP / SIGCONT: a frozen process keeps its sockets and state. */
int hc_node_freeze(hc_cluster *c, int i);
int hc_node_thaw(hc_cluster *c, int i);
/* Index of the instance with this node id, -1 if none. */
int hc_node_index(const hc_cluster *c, const char *node_id);

/* One backend server as HAProxy's stats page shows it. */
typedef struct hc_server_stat {
    char status[32];       /* UP, DOWN, "UP 1/3", "DOWN 1/2", MAINT, ... */
    char check_status[32]; /* L7OK, L4CON, L4TOUT, L7STS, ... */
    int64_t scur;          /* connections open now */
    int64_t stot;          /* connections since HAProxy started */
} hc_server_stat;

int hc_server_stat_get(const hc_cluster *c, int i, hc_server_stat *out);
/* Waits until HAProxy reports instance i exactly "UP" (with a passing
 * check) or exactly "DOWN". */
int hc_wait_state(const hc_cluster *c, int i, bool up, int timeout_ms);

/* 1 when the upload's lease key (<prefix>lease:<id>) exists, 0 when not,
 * -1 on error. Main thread only. */
int hc_lease_exists(int64_t id);

/* Runs deploy/chunkd-healthcheck.sh (the image's HEALTHCHECK) against
 * instance i's admin endpoint: its exit status, or -1 when it could not run. */
int hc_healthcheck(const hc_cluster *c, int i);

#endif
