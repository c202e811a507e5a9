/* Request heads and static files. See http.h for the contract. */
#include "chunkd/http.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

static http_parse bad(http_request *req, int status, const char *why)
{
    req->status = status;
    req->error = why;
    return HTTP_BAD;
}

/* RFC 9110 tchar. */
static bool is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Finds the blank line that ends the head: "\r\n\r\n", or "\n\n" from a
 * lenient client. Returns the head's length or 0. */
static size_t find_end(const char *buf, size_t len, size_t *scanned)
{
    size_t i = *scanned > 3 ? *scanned - 3 : 0;
    for (; i < len; i++) {
        if (buf[i] != '\n')
            continue;
        if (i + 1 < len && buf[i + 1] == '\n')
            return i + 2;
        if (i + 2 < len && buf[i + 1] == '\r' && buf[i + 2] == '\n')
            return i + 3;
    }
    *scanned = len;
    return 0;
}

/* The line starting at *pos, without its "\r\n" or "\n"; advances *pos. */
static size_t next_line(const char *buf, size_t end, size_t *pos, const char **line)
{
    const char *start = buf + *pos;
    const char *nl = memchr(start, '\n', end - *pos);
    size_t len = nl ? (size_t)(nl - start) : end - *pos;
    *pos += len + (nl ? 1 : 0);
    if (len > 0 && start[len - 1] == '\r')
        len--;
    *line = start;
    return len;
}

/* Does the comma-separated list hold token (any case)? */
static bool list_has(const char *v, size_t len, const char *token)
{
    size_t tlen = strlen(token);
    size_t i = 0;
    while (i < len) {
        while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t start = i;
        while (i < len && v[i] != ',')
            i++;
        size_t e = i;
        while (e > start && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e - start == tlen && strncasecmp(v + start, token, tlen) == 0)
            return true;
    }
    return false;
}

static bool name_is(const char *name, size_t len, const char *want)
{
    return strlen(want) == len && strncasecmp(name, want, len) == 0;
}

static http_parse request_line(const char *line, size_t len, http_request *req)
{
    size_t i = 0;
    while (i < len && is_tchar((unsigned char)line[i]))
        i++;
    if (i == 0 || i >= len || line[i] != ' ')
        return bad(req, 400, "malformed request line");
    if (i >= sizeof req->method)
        return bad(req, 501, "unknown method");
    memcpy(req->method, line, i);
    req->method[i] = '\0';
    size_t t = ++i;
    while (i < len && line[i] != ' ')
        i++;
    size_t tlen = i - t;
    if (i >= len || tlen == 0)
        return bad(req, 400, "malformed request line");
    for (size_t k = t; k < t + tlen; k++)
        if ((unsigned char)line[k] <= 0x20 || (unsigned char)line[k] >= 0x7F)
            return bad(req, 400, "a request target with control or non-ASCII bytes");
    if (line[t] != '/')
        return bad(req, 400, "a request target that is not a path");
    const char *q = memchr(line + t, '?', tlen);
    size_t plen = q ? (size_t)(q - (line + t)) : tlen;
    if (tlen >= HTTP_PATH_MAX)
        return bad(req, 414, "request target too long");
    memcpy(req->path, line + t, plen);
    req->path[plen] = '\0';
    const char *ver = line + i + 1;
    size_t vlen = len - i - 1;
    if (vlen != 8 || memcmp(ver, "HTTP/", 5) != 0 || ver[6] != '.' || ver[5] < '0' ||
        ver[5] > '9' || ver[7] < '0' || ver[7] > '9')
        return bad(req, 400, "malformed HTTP version");
    if (ver[5] != '1')
        return bad(req, 505, "only HTTP/1.x is spoken here");
    req->minor = ver[7] - '0';
    return HTTP_DONE;
}

static http_parse header_line(const char *line, size_t len, http_request *req)
{
    if (line[0] == ' ' || line[0] == '\t')
        return bad(req, 400, "folded header lines are not accepted");
    size_t n = 0;
    while (n < len && is_tchar((unsigned char)line[n]))
        n++;
    if (n == 0 || n >= len || line[n] != ':')
        return bad(req, 400, "malformed header line");
    size_t v = n + 1, e = len;
    while (v < e && (line[v] == ' ' || line[v] == '\t'))
        v++;
    while (e > v && (line[e - 1] == ' ' || line[e - 1] == '\t'))
        e--;
    for (size_t k = v; k < e; k++)
        if ((unsigned char)line[k] < 0x20 && line[k] != '\t')
            return bad(req, 400, "a header value with control bytes");
    const char *val = line + v;
    size_t vlen = e - v;
    if (name_is(line, n, "host")) {
        if (req->has_host)
            return bad(req, 400, "more than one Host header");
        req->has_host = true;
    } else if (name_is(line, n, "content-length")) {
        if (!(vlen == 1 && val[0] == '0'))
            req->has_body = true;
    } else if (name_is(line, n, "transfer-encoding")) {
        req->has_body = true;
    } else if (name_is(line, n, "upgrade")) {
        req->upgrade_websocket |= list_has(val, vlen, "websocket");
    } else if (name_is(line, n, "connection")) {
        req->connection_upgrade |= list_has(val, vlen, "upgrade");
    } else if (name_is(line, n, "sec-websocket-key")) {
        if (req->ws_key_len > 0 || vlen >= sizeof req->ws_key)
            return bad(req, 400, "a bad Sec-WebSocket-Key");
        memcpy(req->ws_key, val, vlen);
        req->ws_key[vlen] = '\0';
        req->ws_key_len = vlen;
    } else if (name_is(line, n, "sec-websocket-version")) {
        int ver = 0;
        bool ok = vlen > 0 && vlen <= 3;
        for (size_t k = 0; ok && k < vlen; k++) {
            ok = val[k] >= '0' && val[k] <= '9';
            ver = ver * 10 + (val[k] - '0');
        }
        req->ws_version = ok ? ver : -1;
    }
    return HTTP_DONE;
}

http_parse http_parse_head(const char *buf, size_t len, size_t *scanned, http_request *req)
{
    memset(req, 0, sizeof *req);
    req->ws_version = -1;
    size_t end = find_end(buf, len, scanned);
    if (end == 0) {
        if (len >= HTTP_HEAD_MAX)
            return bad(req, 431, "request head too large");
        return HTTP_NEED_MORE;
    }
    if (end > HTTP_HEAD_MAX)
        return bad(req, 431, "request head too large");
    req->head_len = end;
    size_t pos = 0;
    const char *line;
    size_t llen = next_line(buf, end, &pos, &line);
    http_parse r = request_line(line, llen, req);
    if (r != HTTP_DONE)
        return r;
    int headers = 0;
    for (;;) {
        llen = next_line(buf, end, &pos, &line);
        if (llen == 0)
            break; /* the blank line */
        if (++headers > HTTP_HEADERS_MAX)
            return bad(req, 431, "too many header lines");
        r = header_line(line, llen, req);
        if (r != HTTP_DONE)
            return r;
    }
    if (req->minor >= 1 && !req->has_host)
        return bad(req, 400, "an HTTP/1.1 request without Host");
    return HTTP_DONE;
}

static const struct {
    const char *ext;
    const char *type;
} content_types[] = {
    {"html", "text/html; charset=utf-8"},
    {"css", "text/css; charset=utf-8"},
    {"js", "text/javascript; charset=utf-8"},
    {"mjs", "text/javascript; charset=utf-8"},
    {"json", "application/json"},
    {"svg", "image/svg+xml"},
    {"png", "image/png"},
    {"ico", "image/x-icon"},
    {"txt", "text/plain; charset=utf-8"},
};

const char *http_content_type(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *dot = strrchr(slash ? slash + 1 : path, '.');
    if (!dot)
        return NULL;
    for (size_t i = 0; i < sizeof content_types / sizeof content_types[0]; i++)
        if (strcmp(dot + 1, content_types[i].ext) == 0)
            return content_types[i].type;
    return NULL;
}

static bool path_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_' || c == '.' || c == '/';
}

int http_safe_path(const char *path, char *rel, size_t relcap)
{
    static const char index_name[] = "index.html";
    if (path[0] != '/')
        return -1;
    size_t len = strlen(path + 1);
    bool dir = len == 0 || path[len] == '/';
    size_t need = len + (dir ? sizeof index_name - 1 : 0) + 1;
    if (need > relcap)
        return -1;
    memcpy(rel, path + 1, len);
    if (dir)
        memcpy(rel + len, index_name, sizeof index_name - 1);
    rel[need - 1] = '\0';
    for (const char *p = rel; *p; p++)
        if (!path_char(*p))
            return -1;
    /* Every segment: not empty, not starting with '.' */
    for (const char *seg = rel;;) {
        if (*seg == '/' || *seg == '\0' || *seg == '.')
            return -1;
        const char *next = strchr(seg, '/');
        if (!next)
            break;
        seg = next + 1;
    }
    return http_content_type(rel) ? 0 : -1;
}

static int status_for_errno(int e)
{
    if (e == ENOENT || e == ENOTDIR || e == ELOOP || e == ENAMETOOLONG)
        return 404; /* a symbolic link (ELOOP with O_NOFOLLOW) is as good as absent */
    if (e == EACCES || e == EPERM)
        return 403;
    return 500;
}

int http_open_static(const char *root, const char *rel, http_file *f)
{
    memset(f, 0, sizeof *f);
    f->fd = -1;
    f->content_type = http_content_type(rel);
    if (!f->content_type || !root[0])
        return 404;
    int dir = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        return status_for_errno(errno);
    char seg[HTTP_PATH_MAX];
    const char *p = rel;
    int fd = -1;
    int status = 200;
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (n == 0 || n >= sizeof seg) {
            status = 404;
            break;
        }
        memcpy(seg, p, n);
        seg[n] = '\0';
        int flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | (slash ? O_DIRECTORY : O_NONBLOCK);
        int next = openat(dir, seg, flags);
        int e = errno;
        close(dir);
        dir = -1;
        if (next < 0) {
            status = status_for_errno(e);
            break;
        }
        if (!slash) {
            fd = next;
            break;
        }
        dir = next;
        p = slash + 1;
    }
    if (dir >= 0)
        close(dir);
    if (status != 200)
        return status;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return 500;
    }
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > HTTP_FILE_MAX) {
        close(fd);
        return 404; /* a FIFO or device would block the worker; a huge file is not ours */
    }
    f->fd = fd;
    f->size = (uint64_t)st.st_size;
    return 200;
}

const char *http_status_text(int status)
{
    switch (status) {
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 426: return "Upgrade Required";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
    }
}

int http_format_head(char *out, size_t cap, int status, const char *content_type,
                     uint64_t length, const char *extra)
{
    /* The page needs only its own files and its own WebSocket: 'self'
     * covers ws:// to the same host and port. */
    int n = snprintf(out, cap,
                     "HTTP/1.1 %d %s\r\n"
                     "Content-Type: %s\r\n"
                     "Content-Length: %llu\r\n"
                     "Cache-Control: no-cache\r\n"
                     "X-Content-Type-Options: nosniff\r\n"
                     "Referrer-Policy: no-referrer\r\n"
                     "Content-Security-Policy: default-src 'self'; connect-src 'self'; "
                     "img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                     "frame-ancestors 'none'\r\n"
                     "Connection: close\r\n"
                     "%s\r\n",
                     status, http_status_text(status), content_type,
                     (unsigned long long)length, extra ? extra : "");
    if (n < 0 || (size_t)n >= cap)
        return -1;
    return n;
}
