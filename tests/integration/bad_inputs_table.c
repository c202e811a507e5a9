/* Reading docs/BAD-INPUTS.md and expanding its input notation. */
#include "bad_inputs_table.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the document ---------------------------------------------------------------- */

static char *trim(char *s)
{
    while (*s == ' ')
        s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\r'))
        *--e = '\0';
    return s;
}

static bool is_row_id(const char *s)
{
    return strlen(s) == 3 && isupper((unsigned char)s[0]) && isdigit((unsigned char)s[1]) &&
           isdigit((unsigned char)s[2]);
}

static int parse_int(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

/* "CODE REASON [key=value...]", "ok ACTION", "SUCCESS" or "progress N". */
static int parse_answer(char *text, bi_answer *a)
{
    memset(a, 0, sizeof *a);
    a->expected_offset = -1;
    snprintf(a->text, sizeof a->text, "%s", text);
    char *save = NULL;
    char *w1 = strtok_r(text, " ", &save);
    char *w2 = strtok_r(NULL, " ", &save);
    if (!w1)
        return -1;
    if (strcmp(w1, "SUCCESS") == 0) {
        a->kind = BI_ANS_SUCCESS;
        return w2 ? -1 : 0;
    }
    if (!w2 || strlen(w2) >= sizeof a->word)
        return -1;
    snprintf(a->word, sizeof a->word, "%s", w2);
    if (strcmp(w1, "ok") == 0) {
        a->kind = BI_ANS_OK;
    } else if (strcmp(w1, "progress") == 0) {
        a->kind = BI_ANS_PROGRESS;
        if (parse_int(w2, &a->progress) != 0)
            return -1;
    } else {
        int64_t code;
        if (parse_int(w1, &code) != 0 || code < 400 || code > 599)
            return -1;
        a->kind = BI_ANS_ERROR;
        a->code = (int)code;
    }
    for (char *kv; (kv = strtok_r(NULL, " ", &save));) {
        char *eq = strchr(kv, '=');
        if (a->kind != BI_ANS_ERROR || !eq)
            return -1;
        *eq = '\0';
        if (strcmp(kv, "expected_offset") == 0) {
            if (parse_int(eq + 1, &a->expected_offset) != 0)
                return -1;
        } else if (strcmp(kv, "document_status") == 0) {
            snprintf(a->document_status, sizeof a->document_status, "%s", eq + 1);
        } else {
            return -1;
        }
    }
    return 0;
}

/* Fills r from the cells id, setup, input, answers, conn, doc, why. */
static int parse_row(char **cell, bi_row *r)
{
    snprintf(r->id, sizeof r->id, "%s", cell[0]);
    snprintf(r->name, sizeof r->name, "%s %.100s", cell[0], cell[6]);
    int64_t n = 0;
    if (strcmp(cell[1], "none") == 0)
        r->setup = BI_SETUP_NONE;
    else if (strcmp(cell[1], "auth") == 0)
        r->setup = BI_SETUP_AUTH;
    else if (strncmp(cell[1], "upload ", 7) == 0 && parse_int(cell[1] + 7, &n) == 0 && n >= 0)
        r->setup = BI_SETUP_UPLOAD;
    else
        return -1;
    r->setup_size = n;

    size_t len = strlen(cell[2]);
    if (len < 2 || cell[2][0] != '`' || cell[2][len - 1] != '`')
        return -1;
    r->input = strndup(cell[2] + 1, len - 2);
    if (!r->input)
        return -1;

    if (strcmp(cell[3], "none") != 0) {
        char *save = NULL;
        for (char *a = strtok_r(cell[3], ";", &save); a; a = strtok_r(NULL, ";", &save)) {
            if (r->nanswers == BI_MAX_ANSWERS ||
                parse_answer(trim(a), &r->answers[r->nanswers]) != 0)
                return -1;
            r->nanswers++;
        }
        if (r->nanswers == 0)
            return -1;
    }

    if (strcmp(cell[4], "open") != 0 && strcmp(cell[4], "closed") != 0)
        return -1;
    r->closes = strcmp(cell[4], "closed") == 0;

    if (strcmp(cell[5], "-") == 0)
        r->doc = BI_DOC_NONE;
    else if (strcmp(cell[5], "completed") == 0)
        r->doc = BI_DOC_COMPLETED;
    else if (strcmp(cell[5], "failed") == 0)
        r->doc = BI_DOC_FAILED;
    else if (strncmp(cell[5], "uploading ", 10) == 0 &&
             parse_int(cell[5] + 10, &r->doc_offset) == 0)
        r->doc = BI_DOC_UPLOADING;
    else
        return -1;
    /* a document made by the setup must be accounted for afterwards */
    return r->setup == BI_SETUP_UPLOAD && r->doc == BI_DOC_NONE ? -1 : 0;
}

/* Stand-ins for trying a row's notation before any server exists. */
static const bi_vars dry_vars = {.uid = 1,     .ouid = 1,     .duid = 1,
                                 .cred = "c",  .ocred = "c",  .dcred = "c",
                                 .adoc = 1,    .odoc = 1,     .done = 1,
                                 .nodoc = 1};

int bi_load(const char *path, bi_row *rows, int max_rows, int *n)
{
    *n = 0;
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "bad inputs: %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[16384];
    int line_no = 0, rc = 0;
    bi_plan plan = {0};
    while (rc == 0 && fgets(line, sizeof line, f)) {
        line_no++;
        if (line[0] != '|')
            continue;
        line[strcspn(line, "\n")] = '\0';
        char *cell[9];
        int ncell = 0;
        /* cells end at '|'; the tables never hold a '|' of their own */
        for (char *p = line + 1; ncell < 9;) {
            char *bar = strchr(p, '|');
            if (!bar)
                break;
            *bar = '\0';
            cell[ncell++] = trim(p);
            p = bar + 1;
        }
        if (ncell == 0 || !is_row_id(cell[0]))
            continue;
        if (*n == max_rows) {
            fprintf(stderr, "bad inputs: %s: more than %d rows\n", path, max_rows);
            rc = -1;
            break;
        }
        bi_row *r = &rows[*n];
        memset(r, 0, sizeof *r);
        r->line_no = line_no;
        (*n)++;
        char why[256] = "";
        bool bad = ncell != 7 || parse_row(cell, r) != 0;
        if (bad) {
            snprintf(why, sizeof why, "not id | setup | input | answers | conn | doc | why "
                                      "as the document describes");
        } else {
            bi_vars dry = dry_vars;
            dry.doc = r->setup == BI_SETUP_UPLOAD ? 1 : 0;
            bad = bi_expand(r, &dry, &plan, why, sizeof why) != 0;
        }
        for (int i = 0; i + 1 < *n && !bad; i++)
            if (strcmp(rows[i].id, r->id) == 0) {
                snprintf(why, sizeof why, "the id is used twice");
                bad = true;
            }
        if (bad) {
            fprintf(stderr, "bad inputs: %s line %d, row %s: %s\n", path, line_no, cell[0], why);
            rc = -1;
        }
    }
    bi_plan_free(&plan);
    fclose(f);
    return rc;
}

void bi_free(bi_row *rows, int n)
{
    for (int i = 0; i < n; i++) {
        free(rows[i].input);
        rows[i].input = NULL;
    }
}

/* ---- the input notation ------------------------------------------------------------ */

typedef struct expander {
    const bi_row *r;
    const bi_vars *v;
    bi_plan *p;
    char *err;
    size_t errlen;
} expander;

static int ex_fail(expander *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int ex_fail(expander *x, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->err, x->errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static int put(expander *x, const void *data, size_t n)
{
    bi_plan *p = x->p;
    if (p->len + n > p->cap) {
        size_t cap = p->cap ? p->cap : 4096;
        while (cap < p->len + n)
            cap *= 2;
        char *b = realloc(p->buf, cap);
        if (!b)
            return ex_fail(x, "out of memory");
        p->buf = b;
        p->cap = cap;
    }
    memcpy(p->buf + p->len, data, n);
    p->len += n;
    return 0;
}

/* "N:TEXT" */
static int count_and_text(expander *x, const char *arg, int64_t *n, const char **text)
{
    char num[24];
    const char *colon = strchr(arg, ':');
    size_t len = colon ? (size_t)(colon - arg) : 0;
    if (!colon || len == 0 || len >= sizeof num)
        return ex_fail(x, "expected N:TEXT in {{%s}}", arg);
    memcpy(num, arg, len);
    num[len] = '\0';
    if (parse_int(num, n) != 0 || *n < 0)
        return ex_fail(x, "bad count in {{%s}}", arg);
    *text = colon + 1;
    return 0;
}

static int repeat(expander *x, const char *text, size_t len, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (put(x, text, len) != 0)
            return -1;
    return 0;
}

/* Pseudo-random bytes seeded by the row id: the same garbage on every run. */
static int garbage(expander *x, int64_t n)
{
    uint64_t s = UINT64_C(1469598103934665603);
    for (const char *c = x->r->id; *c; c++)
        s = (s ^ (unsigned char)*c) * UINT64_C(1099511628211);
    for (int64_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        char b = (char)(s >> 24);
        if (b == '\n')
            b = '\0';
        if (put(x, &b, 1) != 0)
            return -1;
    }
    return 0;
}

static int named_value(expander *x, const char *d)
{
    const bi_vars *v = x->v;
    const struct {
        const char *name;
        int64_t value;
    } ints[] = {{"UID", v->uid},   {"OUID", v->ouid}, {"DUID", v->duid},
                {"DOC", v->doc},   {"ADOC", v->adoc}, {"ODOC", v->odoc},
                {"DONE", v->done}, {"NODOC", v->nodoc}};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if (strcmp(d, ints[i].name) == 0) {
            if (ints[i].value <= 0)
                return ex_fail(x, "{{%s}} has no value with this row's setup", d);
            char s[32];
            int len = snprintf(s, sizeof s, "%" PRId64, ints[i].value);
            return put(x, s, (size_t)len);
        }
    const struct {
        const char *name;
        const char *value;
    } strs[] = {{"CRED", v->cred}, {"OCRED", v->ocred}, {"DCRED", v->dcred}};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        if (strcmp(d, strs[i].name) == 0)
            return put(x, strs[i].value, strlen(strs[i].value));
    return 1; /* not a name */
}

static int directive(expander *x, const char *d, size_t fill_n)
{
    static const struct {
        const char *name;
        char byte;
    } bytes[] = {{"LF", '\n'}, {"CR", '\r'}, {"TAB", '\t'}, {"NUL", '\0'}};
    for (size_t i = 0; i < sizeof bytes / sizeof bytes[0]; i++)
        if (strcmp(d, bytes[i].name) == 0)
            return put(x, &bytes[i].byte, 1);
    if (d[0] == 'x' && isxdigit((unsigned char)d[1]) && isxdigit((unsigned char)d[2]) && !d[3]) {
        char b = (char)strtol(d + 1, NULL, 16);
        return put(x, &b, 1);
    }
    int rc = named_value(x, d);
    if (rc <= 0)
        return rc;
    bi_plan *p = x->p;
    if (strcmp(d, "WAIT") == 0 || strcmp(d, "SHUT") == 0) {
        if (p->nbrk == BI_MAX_BREAKS)
            return ex_fail(x, "more than %d {{WAIT}} and {{SHUT}}", BI_MAX_BREAKS);
        p->brk_at[p->nbrk] = p->len;
        p->brk_kind[p->nbrk++] = d[0];
        return 0;
    }
    int64_t n;
    const char *text;
    if (strncmp(d, "rep ", 4) == 0)
        return count_and_text(x, d + 4, &n, &text) != 0 ? -1 : repeat(x, text, strlen(text), n);
    if (strncmp(d, "fill ", 5) == 0) {
        if (count_and_text(x, d + 5, &n, &text) != 0)
            return -1;
        if (strlen(text) != 1 || p->has_fill)
            return ex_fail(x, "{{fill N:C}} takes one character, once per row");
        p->has_fill = true;
        p->fill_at = p->len;
        p->fill_target = n;
        return repeat(x, text, 1, (int64_t)fill_n);
    }
    if (strncmp(d, "bytes ", 6) == 0 && parse_int(d + 6, &n) == 0 && n >= 0)
        return garbage(x, n);
    return ex_fail(x, "unknown notation {{%s}}", d);
}

static int expand_pass(expander *x, size_t fill_n)
{
    bi_plan *p = x->p;
    p->len = 0;
    p->nbrk = 0;
    p->has_fill = false;
    for (const char *s = x->r->input; *s;) {
        const char *open = strstr(s, "{{");
        if (!open)
            return put(x, s, strlen(s));
        if (put(x, s, (size_t)(open - s)) != 0)
            return -1;
        const char *close = strstr(open + 2, "}}");
        if (!close)
            return ex_fail(x, "a {{ without }}");
        char d[256];
        size_t n = (size_t)(close - open - 2);
        if (n >= sizeof d)
            return ex_fail(x, "notation longer than %zu bytes", sizeof d - 1);
        memcpy(d, open + 2, n);
        d[n] = '\0';
        if (directive(x, d, fill_n) != 0)
            return -1;
        s = close + 2;
    }
    return 0;
}

int bi_expand(const bi_row *r, const bi_vars *v, bi_plan *p, char *err, size_t errlen)
{
    expander x = {.r = r, .v = v, .p = p, .err = err, .errlen = errlen};
    if (expand_pass(&x, 0) != 0)
        return -1;
    if (!p->has_fill)
        return 0;
    /* The first pass measured the padded line without its padding. */
    size_t start = p->fill_at, end = p->fill_at;
    while (start > 0 && p->buf[start - 1] != '\n')
        start--;
    while (end < p->len && p->buf[end] != '\n')
        end++;
    if (end == p->len)
        return ex_fail(&x, "{{fill}} needs a {{LF}} after it on its line");
    if ((int64_t)(end - start) > p->fill_target)
        return ex_fail(&x, "the line is already longer than %" PRId64 " bytes", p->fill_target);
    return expand_pass(&x, (size_t)(p->fill_target - (int64_t)(end - start)));
}

void bi_plan_free(bi_plan *p)
{
    free(p->buf);
    memset(p, 0, sizeof *p);
}
