/* Connection counts in total and per client address. */
#include "chunkd/conn_limits.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "chunkd/util.h"

enum { BUCKETS = 1024 };

typedef struct ip_count {
    char ip[CONN_IP_MAX];
    int64_t n;
    struct ip_count *next;
} ip_count;

struct conn_limits {
    pthread_mutex_t lock; /* guards everything below; a leaf lock */
    int64_t max_total, max_per_ip;
    int64_t total;
    ip_count *buckets[BUCKETS];
};

conn_limits *conn_limits_new(int64_t max_total, int64_t max_per_ip)
{
    conn_limits *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    if (pthread_mutex_init(&l->lock, NULL) != 0) {
        free(l);
        return NULL;
    }
    l->max_total = max_total;
    l->max_per_ip = max_per_ip;
    return l;
}

void conn_limits_free(conn_limits *l)
{
    if (!l)
        return;
    for (int i = 0; i < BUCKETS; i++)
        for (ip_count *e = l->buckets[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    pthread_mutex_destroy(&l->lock);
    free(l);
}

static unsigned bucket_of(const char *ip)
{
    unsigned h = 2166136261u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)ip; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h % BUCKETS;
}

/* With the lock held: the entry for ip, or NULL. */
static ip_count **find(conn_limits *l, const char *ip)
{
    ip_count **pp = &l->buckets[bucket_of(ip)];
    while (*pp && strcmp((*pp)->ip, ip) != 0)
        pp = &(*pp)->next;
    return pp;
}

conn_admit conn_limits_take(conn_limits *l, const char *ip)
{
    conn_admit rc = CONN_ADMITTED;
    pthread_mutex_lock(&l->lock);
    ip_count **pp = find(l, ip);
    if (l->total >= l->max_total) {
        rc = CONN_FULL;
    } else if (*pp && (*pp)->n >= l->max_per_ip) {
        rc = CONN_IP_FULL;
    } else {
        if (!*pp) {
            *pp = calloc(1, sizeof **pp);
            if (!*pp) {
                rc = CONN_NO_MEMORY;
                goto out;
            }
            util_strlcpy((*pp)->ip, ip, sizeof (*pp)->ip);
        }
        (*pp)->n++;
        l->total++;
    }
out:
    pthread_mutex_unlock(&l->lock);
    return rc;
}

void conn_limits_give(conn_limits *l, const char *ip)
{
    pthread_mutex_lock(&l->lock);
    ip_count **pp = find(l, ip);
    if (*pp) {
        l->total--;
        if (--(*pp)->n == 0) {
            ip_count *e = *pp;
            *pp = e->next;
            free(e);
        }
    }
    pthread_mutex_unlock(&l->lock);
}

int64_t conn_limits_total(conn_limits *l)
{
    pthread_mutex_lock(&l->lock);
    int64_t n = l->total;
    pthread_mutex_unlock(&l->lock);
    return n;
}
