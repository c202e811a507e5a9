/* The table of docs/BAD-INPUTS.md as data: its rows, read from the document
 * itself, and the notation of a row's input turned into the bytes to send.
 * No sockets and no assertions here; it_bad_inputs.c runs the rows. */
#ifndef CHUNKD_BAD_INPUTS_TABLE_H
#define CHUNKD_BAD_INPUTS_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BI_MAX_ANSWERS 8
#define BI_MAX_BREAKS 8

typedef enum bi_setup { BI_SETUP_NONE, BI_SETUP_AUTH, BI_SETUP_UPLOAD } bi_setup;
typedef enum bi_answer_kind {
    BI_ANS_ERROR,
    BI_ANS_OK,
    BI_ANS_SUCCESS,
    BI_ANS_PROGRESS,
} bi_answer_kind;
typedef enum bi_doc { BI_DOC_NONE, BI_DOC_UPLOADING, BI_DOC_COMPLETED, BI_DOC_FAILED } bi_doc;

typedef struct bi_answer {
    bi_answer_kind kind;
    int code;
    char word[48];              /* the reason, or the action of an ok answer */
    int64_t progress;           /* received, for a progress event */
    int64_t expected_offset;    /* -1: not checked */
    char document_status[16];   /* empty: not checked */
    char text[96];              /* as written in the document */
} bi_answer;

typedef struct bi_row {
    char id[8];
    int line_no;
    char name[112];             /* id and reason, for the test report */
    bi_setup setup;
    int64_t setup_size;         /* upload N */
    char *input;                /* owned; the notation, backticks removed */
    bi_answer answers[BI_MAX_ANSWERS];
    int nanswers;
    bool closes;
    bi_doc doc;
    int64_t doc_offset;         /* uploading N */
} bi_row;

/* The values the input notation names; 0 or NULL when a row has none. */
typedef struct bi_vars {
    int64_t uid, ouid, duid;
    const char *cred, *ocred, *dcred;
    int64_t doc, adoc, odoc, done, nodoc;
} bi_vars;

/* A row's bytes, and where sending pauses: before brk_at[i] is reached the
 * sender sends up to it, then waits in silence ('W') or shuts its sending
 * half ('S'). */
typedef struct bi_plan {
    char *buf;
    size_t len, cap;
    size_t brk_at[BI_MAX_BREAKS];
    char brk_kind[BI_MAX_BREAKS];
    int nbrk;
    bool has_fill;
    size_t fill_at;
    int64_t fill_target;
} bi_plan;

/* Reads every table line whose first cell is a row id (a capital letter and
 * two digits) into rows[0..*n). Each row's notation is tried once with
 * stand-in values, so a broken row is reported here. Returns -1 after
 * printing which line is wrong. */
int bi_load(const char *path, bi_row *rows, int max_rows, int *n);
void bi_free(bi_row *rows, int n);

/* Expands r's input into p (reusing its buffer). Returns -1 with a reason in
 * err when the notation is wrong or names a value this row lacks. */
int bi_expand(const bi_row *r, const bi_vars *v, bi_plan *p, char *err, size_t errlen);
void bi_plan_free(bi_plan *p);

#endif
