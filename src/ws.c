/* WebSocket framing and handshake. See ws.h for the contract.
 *
 * Header checks run in one fixed order and each looks only at bytes that
 * are already there, so a stream yields the same items and the same error
 * whether it arrives whole or a byte at a time. */
#include "chunkd/ws.h"

#include <string.h>

#include <openssl/evp.h>

static const char WS_GUID[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

void ws_init(ws_parser *p, uint64_t max_text, uint64_t max_binary)
{
    memset(p, 0, sizeof *p);
    p->max_text = max_text;
    p->max_binary = max_binary;
}

bool ws_in_message(const ws_parser *p)
{
    return p->in_frame || p->msg_opcode != 0;
}

static void utf8_reset(ws_utf8 *u)
{
    u->need = 0;
    u->lo = 0x80;
    u->hi = 0xBF;
}

/* Advances the checker over s; false at the first byte that cannot be
 * UTF-8 (RFC 3629: no overlong forms, no surrogates, at most U+10FFFF). */
static bool utf8_feed(ws_utf8 *u, const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (u->need > 0) {
            if (c < u->lo || c > u->hi)
                return false;
            u->need--;
            u->lo = 0x80;
            u->hi = 0xBF;
        } else if (c < 0x80) {
            continue;
        } else if (c < 0xC2) {
            return false; /* a stray continuation byte or an overlong 2-byte form */
        } else if (c < 0xE0) {
            u->need = 1;
        } else if (c < 0xF0) {
            u->need = 2;
            u->lo = c == 0xE0 ? 0xA0 : 0x80; /* E0 80..9F would be overlong */
            u->hi = c == 0xED ? 0x9F : 0xBF; /* ED A0..BF would be a surrogate */
        } else if (c < 0xF5) {
            u->need = 3;
            u->lo = c == 0xF0 ? 0x90 : 0x80; /* F0 80..8F would be overlong */
            u->hi = c == 0xF4 ? 0x8F : 0xBF; /* F4 90.. would pass U+10FFFF */
        } else {
            return false;
        }
    }
    return true;
}

bool ws_utf8_valid(const char *s, size_t len)
{
    ws_utf8 u;
    utf8_reset(&u);
    return utf8_feed(&u, (const uint8_t *)s, len) && u.need == 0;
}

bool ws_close_code_valid(uint16_t code)
{
    if (code >= 3000 && code <= 4999)
        return true; /* libraries' and applications' own codes */
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014);
}

static ws_kind fail(ws_parser *p, ws_item *it, uint16_t code, const char *reason)
{
    p->error = code;
    p->error_reason = reason;
    it->kind = WS_ERROR;
    it->close_code = code;
    return WS_ERROR;
}

static bool is_control(uint8_t op)
{
    return (op & 0x8) != 0;
}

static bool opcode_known(uint8_t op)
{
    return op == WS_OP_CONT || op == WS_OP_TEXT || op == WS_OP_BINARY || op == WS_OP_CLOSE ||
           op == WS_OP_PING || op == WS_OP_PONG;
}

/* Eight bytes at a time: a 1 MiB chunk is unmasked in well under a
 * millisecond. memcpy keeps unaligned buffers legal. */
static void unmask(const uint8_t mask[4], uint64_t pos, char *data, size_t n)
{
    size_t i = 0;
    if (n >= 16) {
        uint8_t m8[8];
        for (int k = 0; k < 8; k++)
            m8[k] = mask[(pos + (uint64_t)k) & 3];
        uint64_t m;
        memcpy(&m, m8, 8);
        for (; i + 8 <= n; i += 8) {
            uint64_t w;
            memcpy(&w, data + i, 8);
            w ^= m;
            memcpy(data + i, &w, 8);
        }
    }
    for (; i < n; i++)
        data[i] = (char)(data[i] ^ mask[(pos + i) & 3]);
}

static size_t header_fail(ws_parser *p, ws_item *it, uint16_t code, const char *reason)
{
    fail(p, it, code, reason);
    return 0;
}

/* A whole control frame whose header is hlen bytes. */
static size_t control_frame(ws_parser *p, char *buf, size_t hlen, uint8_t op, uint64_t len,
                            ws_item *it)
{
    char *payload = buf + hlen;
    unmask(p->mask, 0, payload, (size_t)len);
    it->data = payload;
    it->len = (size_t)len;
    if (op == WS_OP_PING) {
        it->kind = WS_PING;
    } else if (op == WS_OP_PONG) {
        it->kind = WS_PONG;
    } else {
        if (len == 1) {
            fail(p, it, WS_CLOSE_PROTOCOL, "a close frame of one byte");
            return 0;
        }
        uint16_t code = WS_CLOSE_NO_STATUS;
        if (len >= 2) {
            code = (uint16_t)(((uint8_t)payload[0] << 8) | (uint8_t)payload[1]);
            if (!ws_close_code_valid(code)) {
                fail(p, it, WS_CLOSE_PROTOCOL, "a close frame with an invalid code");
                return 0;
            }
            if (!ws_utf8_valid(payload + 2, (size_t)len - 2)) {
                fail(p, it, WS_CLOSE_INVALID_DATA, "a close reason that is not UTF-8");
                return 0;
            }
            it->data = payload + 2;
            it->len = (size_t)len - 2;
        }
        it->kind = WS_CLOSE;
        it->close_code = code;
        p->closed = true;
    }
    return hlen + (size_t)len;
}

/* Reads a frame header at buf; returns its length, or 0 with item->kind set
 * (NEED_MORE, ERROR, or a whole control frame, whose size is then returned
 * through *control_used). */
static size_t frame_header(ws_parser *p, char *buf, size_t avail, ws_item *it,
                           size_t *control_used)
{
    *control_used = 0;
    it->kind = WS_NEED_MORE;
    if (avail < 2)
        return 0;
    const uint8_t *b = (const uint8_t *)buf;
    bool fin = (b[0] & 0x80) != 0;
    uint8_t op = b[0] & 0x0F;
    uint64_t len = b[1] & 0x7F;
    if (b[0] & 0x70)
        return header_fail(p, it, WS_CLOSE_PROTOCOL, "reserved bits set without an extension");
    if (!opcode_known(op))
        return header_fail(p, it, WS_CLOSE_PROTOCOL, "an unknown opcode");
    if (!(b[1] & 0x80))
        return header_fail(p, it, WS_CLOSE_PROTOCOL, "a client frame that is not masked");
    if (is_control(op)) {
        if (!fin)
            return header_fail(p, it, WS_CLOSE_PROTOCOL, "a fragmented control frame");
        if (len > WS_MAX_CONTROL)
            return header_fail(p, it, WS_CLOSE_PROTOCOL, "a control frame over 125 bytes");
    } else if (op == WS_OP_CONT && p->msg_opcode == 0) {
        return header_fail(p, it, WS_CLOSE_PROTOCOL, "a continuation frame outside a message");
    } else if (op != WS_OP_CONT && p->msg_opcode != 0) {
        return header_fail(p, it, WS_CLOSE_PROTOCOL, "a new message inside a fragmented one");
    }
    size_t ext = len == 126 ? 2 : len == 127 ? 8 : 0;
    size_t hlen = 2 + ext + 4;
    if (avail < hlen)
        return 0;
    if (ext == 2) {
        len = ((uint64_t)b[2] << 8) | b[3];
        if (len < 126)
            return header_fail(p, it, WS_CLOSE_PROTOCOL, "a length not in its shortest form");
    } else if (ext == 8) {
        len = 0;
        for (int i = 0; i < 8; i++)
            len = (len << 8) | b[2 + i];
        if (len >> 63)
            return header_fail(p, it, WS_CLOSE_PROTOCOL, "a length with its top bit set");
        if (len <= 0xFFFF)
            return header_fail(p, it, WS_CLOSE_PROTOCOL, "a length not in its shortest form");
    }
    memcpy(p->mask, b + 2 + ext, 4);
    if (is_control(op)) {
        if (avail - hlen < len)
            return 0; /* handed out whole: wait for all of it */
        *control_used = control_frame(p, buf, hlen, op, len, it);
        return 0;
    }
    uint8_t msg_op = op == WS_OP_CONT ? p->msg_opcode : op;
    uint64_t max = msg_op == WS_OP_TEXT ? p->max_text : p->max_binary;
    uint64_t so_far = op == WS_OP_CONT ? p->msg_len : 0;
    if (so_far > max || len > max - so_far) {
        p->error_opcode = msg_op;
        return header_fail(p, it, WS_CLOSE_TOO_BIG,
                           msg_op == WS_OP_TEXT ? "a text message over the size limit"
                                                : "a binary message over the size limit");
    }
    if (op != WS_OP_CONT) {
        p->msg_opcode = op;
        p->msg_started = false;
        p->msg_len = 0;
        utf8_reset(&p->utf8);
    }
    p->msg_len += len;
    p->in_frame = true;
    p->fin = fin;
    p->opcode = op;
    p->frame_left = len;
    p->frame_pos = 0;
    return hlen;
}

size_t ws_next(ws_parser *p, char *buf, size_t avail, ws_item *it)
{
    memset(it, 0, sizeof *it);
    if (p->error) {
        it->kind = WS_ERROR;
        it->close_code = p->error;
        return 0;
    }
    if (p->closed) {
        it->kind = WS_NEED_MORE;
        return avail;
    }
    size_t used = 0;
    if (!p->in_frame) {
        size_t control_used;
        used = frame_header(p, buf, avail, it, &control_used);
        if (used == 0)
            return control_used;
    }
    size_t rest = avail - used;
    if (p->frame_left > 0 && rest == 0) {
        it->kind = WS_NEED_MORE;
        return used;
    }
    size_t n = rest < p->frame_left ? rest : (size_t)p->frame_left;
    char *data = buf + used;
    unmask(p->mask, p->frame_pos, data, n);
    bool text = p->msg_opcode == WS_OP_TEXT;
    if (text && !utf8_feed(&p->utf8, (const uint8_t *)data, n)) {
        fail(p, it, WS_CLOSE_INVALID_DATA, "a text message that is not UTF-8");
        return used + n;
    }
    it->kind = text ? WS_TEXT : WS_BINARY;
    it->data = data;
    it->len = n;
    it->first = !p->msg_started;
    it->frame_rest = p->frame_left;
    p->msg_started = true;
    p->frame_left -= n;
    p->frame_pos += n;
    if (p->frame_left == 0) {
        p->in_frame = false;
        if (p->fin) {
            if (text && p->utf8.need != 0) {
                fail(p, it, WS_CLOSE_INVALID_DATA, "a text message ending inside a character");
                return used + n;
            }
            it->fin = true;
            p->msg_opcode = 0;
            p->msg_len = 0;
        }
    }
    return used + n;
}

size_t ws_frame_header(uint8_t *out, uint8_t opcode, uint64_t len)
{
    out[0] = (uint8_t)(0x80 | (opcode & 0x0F));
    if (len < 126) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xFFFF) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    return 10;
}

size_t ws_close_frame(uint8_t *out, uint16_t code, const char *reason)
{
    size_t rlen = reason ? strlen(reason) : 0;
    if (rlen > WS_MAX_CLOSE_REASON) {
        rlen = WS_MAX_CLOSE_REASON;
        /* Never cut a character in two: the peer would fail the frame. */
        while (rlen > 0 && ((uint8_t)reason[rlen] & 0xC0) == 0x80)
            rlen--;
    }
    size_t h = ws_frame_header(out, WS_OP_CLOSE, 2 + rlen);
    out[h] = (uint8_t)(code >> 8);
    out[h + 1] = (uint8_t)code;
    if (rlen)
        memcpy(out + h + 2, reason, rlen);
    return h + 2 + rlen;
}

static bool is_b64(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '+' || c == '/';
}

bool ws_key_valid(const char *key, size_t len)
{
    /* 16 bytes are 21 whole base64 digits, one carrying two bits, "==". */
    if (len != 24 || key[22] != '=' || key[23] != '=')
        return false;
    for (size_t i = 0; i < 22; i++)
        if (!is_b64(key[i]))
            return false;
    return strchr("AQgw", key[21]) != NULL;
}

int ws_accept_value(const char *key, size_t len, char out[29])
{
    char joined[64];
    if (len > sizeof joined - (sizeof WS_GUID - 1))
        return -1;
    memcpy(joined, key, len);
    memcpy(joined + len, WS_GUID, sizeof WS_GUID - 1);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(joined, len + sizeof WS_GUID - 1, md, &mdlen, EVP_sha1(), NULL) != 1 ||
        mdlen != 20)
        return -1;
    if (EVP_EncodeBlock((unsigned char *)out, md, 20) != 28)
        return -1;
    out[28] = '\0';
    return 0;
}
