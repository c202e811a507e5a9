/* The little HTTP/1.1 chunkd speaks on its client port: request heads (for
 * the web UI's static files and the WebSocket upgrade), without sockets, and
 * static files resolved safely under web_root.
 *
 * Only GET and HEAD without a body are served; every answer closes the
 * connection, so there is no keep-alive state to get wrong. */
#ifndef CHUNKD_HTTP_H
#define CHUNKD_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP_HEAD_MAX 8192    /* request line and headers, the blank line included */
#define HTTP_PATH_MAX 256     /* a target longer than this is answered 414 */
#define HTTP_HEADERS_MAX 64
#define HTTP_FILE_MAX (8u << 20) /* larger files in web_root are not served */

typedef enum http_parse {
    HTTP_NEED_MORE,
    HTTP_DONE,       /* the head is complete and well formed */
    HTTP_BAD,        /* answer req->status and close */
} http_parse;

typedef struct http_request {
    char method[8];
    char path[HTTP_PATH_MAX];   /* the target up to '?', as sent (no decoding) */
    int minor;                  /* HTTP/1.minor */
    bool has_host;
    bool has_body;              /* Content-Length other than 0, or Transfer-Encoding */
    bool upgrade_websocket;     /* Upgrade names websocket */
    bool connection_upgrade;    /* Connection names upgrade */
    char ws_key[32];            /* Sec-WebSocket-Key, empty when absent or too long */
    size_t ws_key_len;
    int ws_version;             /* Sec-WebSocket-Version; -1 when absent or not a number */
    size_t head_len;            /* bytes of the head, its blank line included */
    int status;                 /* HTTP_BAD: the status to answer */
    const char *error;          /* HTTP_BAD: why, for the log and the answer's body */
} http_request;

/* Looks for a complete head in buf[0..len). *scanned carries how far the
 * search for its end got between calls (start at 0), so a head trickling in
 * costs O(n). */
http_parse http_parse_head(const char *buf, size_t len, size_t *scanned, http_request *req);

/* The Content-Type a file is served with, from its extension; NULL for a
 * file that is never served. */
const char *http_content_type(const char *path);

/* Maps a request path to a path relative to web_root: "/" and paths ending
 * in "/" get "index.html". Refused (-1): anything but letters, digits, '-',
 * '_', '.', '/'; a segment that is empty or starts with '.' (so no "..",
 * no hidden files); a name without a served extension. */
int http_safe_path(const char *path, char *rel, size_t relcap);

typedef struct http_file {
    int fd;
    uint64_t size;
    const char *content_type;
} http_file;

/* Opens rel (from http_safe_path) under root one segment at a time with
 * O_NOFOLLOW, so no symbolic link leads outside it; the file must be a
 * regular file of at most HTTP_FILE_MAX bytes. Returns 200 with f->fd open
 * (the caller closes it), or the status to answer: 404, 403 or 500. */
int http_open_static(const char *root, const char *rel, http_file *f);

const char *http_status_text(int status);

/* Writes a response head for a body of `length` bytes with the headers
 * every answer carries (Connection: close, nosniff, a strict
 * Content-Security-Policy); extra holds further header lines, each ending
 * in "\r\n" (NULL for none). Returns its length, or -1 when it does not fit. */
int http_format_head(char *out, size_t cap, int status, const char *content_type,
                     uint64_t length, const char *extra);

#endif
