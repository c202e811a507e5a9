/* chunkup status / list / abort: one request each, printed for people or,
 * with --json, as one JSON line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "state.h"

#define NAME_COLUMN_MAX 40

static int64_t document_arg(const cu_options *o)
{
    int64_t id = 0;

    /* Already validated by cu_options_parse. */
    (void)cu_parse_int(o->args[0], 1, INT64_MAX, &id);
    return id;
}

static cu_auth auth_of(const cu_options *o)
{
    cu_auth a = { o->user_id, o->credential };

    return a;
}

static int print_json(const cu_options *o, const json_t *v)
{
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);

    if (text == NULL)
        return cmd_fail(o, o->command, CU_EXIT_UNAVAILABLE, "cannot encode the answer as JSON",
                        NULL);
    printf("%s\n", text);
    free(text);
    return CU_EXIT_OK;
}

/* A field as text: strings as they are, numbers in decimal, null as "-". */
static void field(char *buf, size_t cap, const json_t *doc, const char *key)
{
    json_t *v = json_object_get(doc, key);

    if (json_is_string(v))
        snprintf(buf, cap, "%s", json_string_value(v));
    else if (json_is_integer(v))
        snprintf(buf, cap, "%lld", (long long)json_integer_value(v));
    else if (json_is_true(v) || json_is_false(v))
        snprintf(buf, cap, "%s", json_is_true(v) ? "true" : "false");
    else
        snprintf(buf, cap, "-");
}

int cmd_status(const cu_options *o)
{
    static const char *const keys[] = { "document_id", "filename", "filesize", "status",
                                        "offset", "sha256", "failure_reason", "file_path",
                                        "created_at", "updated_at", "completed_at" };
    cu_auth auth = auth_of(o);
    cu_error err;
    json_t *reply = NULL, *doc;
    cu_conn *c = cmd_connect(o, &err);
    int rc;

    if (c == NULL)
        return cmd_fail_request(o, "status", cu_exit_status(&err), &err);
    rc = cu_status(c, &auth, document_arg(o), &reply, &err);
    cu_close(c);
    if (rc < 0)
        return cmd_fail_request(o, "status", cu_exit_status(&err), &err);
    doc = json_object_get(reply, "document");
    if (!json_is_object(doc)) {
        json_decref(reply);
        return cmd_fail(o, "status", CU_EXIT_PROTOCOL, "answer carries no document", NULL);
    }
    if (o->json) {
        rc = print_json(o, doc);
    } else {
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
            char value[1024];

            /* offset only exists while uploading. */
            if (strcmp(keys[i], "offset") == 0 && json_object_get(doc, "offset") == NULL)
                continue;
            field(value, sizeof value, doc, keys[i]);
            printf("%-15s %s\n", keys[i], value);
        }
    }
    json_decref(reply);
    return rc;
}

static int column_width(const json_t *docs, const char *key, int title, int max)
{
    int w = title;
    size_t i;
    json_t *d;

    json_array_foreach(docs, i, d) {
        char value[1024];
        int n;

        field(value, sizeof value, d, key);
        n = (int)strlen(value);
        if (n > w)
            w = n;
    }
    return w > max ? max : w;
}

static void print_table(const json_t *docs)
{
    int wid = column_width(docs, "document_id", 2, 20);
    int wst = column_width(docs, "status", 6, 12);
    int wsz = column_width(docs, "filesize", 4, 20);
    int wnm = column_width(docs, "filename", 4, NAME_COLUMN_MAX);
    size_t i;
    json_t *d;

    printf("%-*s  %-*s  %*s  %-*s  %s\n", wid, "ID", wst, "STATUS", wsz, "SIZE", wnm, "NAME",
           "CREATED");
    json_array_foreach(docs, i, d) {
        char id[32], st[32], sz[32], name[1024], created[64];

        field(id, sizeof id, d, "document_id");
        field(st, sizeof st, d, "status");
        field(sz, sizeof sz, d, "filesize");
        field(name, sizeof name, d, "filename");
        field(created, sizeof created, d, "created_at");
        /* Long names are cut, on a UTF-8 boundary, so the table stays a table. */
        if ((int)strlen(name) > NAME_COLUMN_MAX) {
            size_t cut = NAME_COLUMN_MAX - 3;

            while (cut > 0 && ((unsigned char)name[cut] & 0xC0) == 0x80)
                cut--;
            memcpy(name + cut, "...", 4);
        }
        printf("%-*s  %-*s  %*s  %-*s  %s\n", wid, id, wst, st, wsz, sz, wnm, name, created);
    }
}

int cmd_list(const cu_options *o)
{
    cu_auth auth = auth_of(o);
    cu_error err;
    json_t *reply = NULL, *docs;
    cu_conn *c = cmd_connect(o, &err);
    int rc;

    if (c == NULL)
        return cmd_fail_request(o, "list", cu_exit_status(&err), &err);
    rc = cu_list(c, &auth, o->list_limit, &reply, &err);
    cu_close(c);
    if (rc < 0)
        return cmd_fail_request(o, "list", cu_exit_status(&err), &err);
    docs = json_object_get(reply, "documents");
    if (!json_is_array(docs)) {
        json_decref(reply);
        return cmd_fail(o, "list", CU_EXIT_PROTOCOL, "answer carries no document list", NULL);
    }
    if (o->json)
        rc = print_json(o, docs);
    else if (json_array_size(docs) == 0)
        printf("No documents.\n");
    else
        print_table(docs);
    json_decref(reply);
    return rc;
}

/* An aborted document cannot be resumed; forget it so the next upload of
 * that file starts afresh without a wasted resume. */
static void forget_in_state(const cu_options *o, int64_t id)
{
    char path[4096], msg[1024];
    cu_state *st;

    if (cmd_state_path(o, path, sizeof path) < 0)
        return;
    st = cu_state_open(path, msg, sizeof msg);
    if (st == NULL) {
        fprintf(stderr, "chunkup: warning: %s\n", msg);
        return;
    }
    if (cu_state_forget_document(st, o->server, o->user_id, id) > 0 &&
        cu_state_save(st, msg, sizeof msg) < 0)
        fprintf(stderr, "chunkup: warning: %s\n", msg);
    cu_state_close(st);
}

int cmd_abort(const cu_options *o)
{
    cu_auth auth = auth_of(o);
    cu_error err;
    int64_t id = document_arg(o);
    cu_conn *c = cmd_connect(o, &err);
    int rc;

    if (c == NULL)
        return cmd_fail_request(o, "abort", cu_exit_status(&err), &err);
    rc = cu_abort(c, &auth, id, &err);
    cu_close(c);
    if (rc < 0)
        return cmd_fail_request(o, "abort", cu_exit_status(&err), &err);
    forget_in_state(o, id);
    if (o->json) {
        json_t *obj = json_pack("{s:I, s:s}", "document_id", (json_int_t)id, "status", "aborted");

        if (obj == NULL)
            return cmd_fail(o, "abort", CU_EXIT_UNAVAILABLE, "cannot encode the result", NULL);
        rc = print_json(o, obj);
        json_decref(obj);
        return rc;
    }
    printf("Aborted document_id=%lld\n", (long long)id);
    return CU_EXIT_OK;
}
