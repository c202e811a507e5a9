/* HAProxy's stats page as the scale test reads it: GET /stats;csv on the
 * stats frontend of deploy/haproxy.cfg, one line per backend server. */
#include "haproxy_cluster.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* Decodes a chunked body in place; *len is its length before and after. */
static int dechunk(char *body, size_t *len)
{
    const char *in = body, *end = body + *len;
    char *out = body;
    for (;;) {
        char *eol;
        errno = 0;
        unsigned long n = strtoul(in, &eol, 16);
        if (errno != 0 || eol == in || end - eol < 2 || memcmp(eol, "\r\n", 2) != 0)
            return -1;
        in = eol + 2;
        if (n == 0)
            break;
        if ((size_t)(end - in) < n + 2 || memcmp(in + n, "\r\n", 2) != 0)
            return -1;
        memmove(out, in, n);
        out += n;
        in += n + 2;
    }
    *len = (size_t)(out - body);
    return 0;
}

/* GET path from the stats frontend; the body, malloc'd, or NULL. */
static char *stats_get(const hc_cluster *c, const char *path)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    struct timeval tv = {.tv_sec = 5};
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)c->stats_port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0 ||
        connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return NULL;
    }
    char req[256];
    int rl = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: stats\r\n\r\n", path);
    if (send(fd, req, (size_t)rl, MSG_NOSIGNAL) != rl) {
        close(fd);
        return NULL;
    }
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    ssize_t r = 0;
    while (buf && (r = recv(fd, buf + len, cap - len - 1, 0)) > 0) {
        len += (size_t)r;
        if (cap - len - 1 == 0) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    close(fd);
    if (!buf)
        return NULL;
    buf[len] = '\0';
    char *body = strstr(buf, "\r\n\r\n");
    if (r < 0 || strncmp(buf, "HTTP/1.", 7) != 0 || strncmp(buf + 8, " 200", 4) != 0 || !body) {
        free(buf);
        return NULL;
    }
    *body = '\0';
    bool chunked = strcasestr(buf, "\ntransfer-encoding: chunked") != NULL;
    body += 4;
    size_t blen = len - (size_t)(body - buf);
    /* HAProxy answers even an HTTP/1.0 request in chunks */
    if (chunked && dechunk(body, &blen) != 0) {
        fprintf(stderr, "it: HAProxy's stats answer is not well-formed chunked encoding\n");
        free(buf);
        return NULL;
    }
    memmove(buf, body, blen);
    buf[blen] = '\0';
    return buf;
}

/* Field `col` of a CSV line (no quoting in the columns read here). */
static bool csv_field(const char *line, int col, char *out, size_t outlen)
{
    const char *p = line;
    for (int k = 0; k < col; k++) {
        p = strchr(p, ',');
        if (!p)
            return false;
        p++;
    }
    size_t n = strcspn(p, ",\n");
    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, p, n);
    out[n] = '\0';
    return true;
}

static int csv_column(const char *header, const char *name)
{
    int col = 0;
    const char *p = header;
    size_t nl = strlen(name);
    for (;;) {
        size_t n = strcspn(p, ",\n");
        if (n == nl && strncmp(p, name, nl) == 0)
            return col;
        if (p[n] != ',')
            return -1;
        p += n + 1;
        col++;
    }
}

int hc_server_stat_get(const hc_cluster *c, int i, hc_server_stat *out)
{
    memset(out, 0, sizeof *out);
    char *csv = stats_get(c, "/stats;csv");
    if (!csv)
        return -1;
    int rc = -1;
    /* "# pxname,svname,..." then one line per proxy and server */
    const char *header = strncmp(csv, "# ", 2) == 0 ? csv + 2 : NULL;
    int c_px = header ? csv_column(header, "pxname") : -1;
    int c_sv = header ? csv_column(header, "svname") : -1;
    int c_status = header ? csv_column(header, "status") : -1;
    int c_check = header ? csv_column(header, "check_status") : -1;
    int c_scur = header ? csv_column(header, "scur") : -1;
    int c_stot = header ? csv_column(header, "stot") : -1;
    if (c_px < 0 || c_sv < 0 || c_status < 0 || c_check < 0 || c_scur < 0 || c_stot < 0) {
        fprintf(stderr, "it: HAProxy's stats CSV lacks the expected columns\n");
        free(csv);
        return -1;
    }
    /* haproxy.cfg names its backend chunkd and its servers chunkd1..3 */
    char want[24];
    snprintf(want, sizeof want, "chunkd%d", i + 1);
    for (char *line = strchr(csv, '\n'); line && line[1]; line = strchr(line, '\n')) {
        line++;
        char px[64], sv[64], num[32];
        if (!csv_field(line, c_px, px, sizeof px) || !csv_field(line, c_sv, sv, sizeof sv) ||
            strcmp(px, "chunkd") != 0 || strcmp(sv, want) != 0)
            continue;
        if (csv_field(line, c_status, out->status, sizeof out->status) &&
            csv_field(line, c_check, out->check_status, sizeof out->check_status) &&
            csv_field(line, c_scur, num, sizeof num)) {
            out->scur = strtoll(num, NULL, 10);
            if (csv_field(line, c_stot, num, sizeof num)) {
                out->stot = strtoll(num, NULL, 10);
                rc = 0;
            }
        }
        break;
    }
    if (rc != 0)
        fprintf(stderr, "it: HAProxy's stats have no line for chunkd/%s\n", want);
    free(csv);
    return rc;
}
