/* chunkup: upload files to a chunkd server, resumably (docs/CLIENT.md). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cmd.h"
#include "state.h"

static const char usage[] =
    "Usage: chunkup [OPTIONS] upload FILE...\n"
    "       chunkup [OPTIONS] status ID\n"
    "       chunkup [OPTIONS] list [--limit N]\n"
    "       chunkup [OPTIONS] abort ID\n"
    "\n"
    "Uploads files to a chunkd server in chunks. An interrupted upload is\n"
    "remembered in a local state file and resumed by running the same command\n"
    "again; dropped connections are retried with backoff.\n"
    "\n"
    "Options:\n"
    "  -s, --server HOST:PORT     server (env CHUNKUP_SERVER, default " CU_DEFAULT_SERVER ")\n"
    "  -u, --user ID              user id (env CHUNKUP_USER)\n"
    "  -c, --credential TOKEN     credential (env CHUNKUP_CREDENTIAL)\n"
    "      --credential-file FILE read the credential from the first line of FILE\n"
    "      --state FILE           state file (default $XDG_STATE_HOME/chunkup/\n"
    "                             uploads_state.json or ~/.local/state/chunkup/...)\n"
    "      --retries N            reconnect attempts without progress (default 10)\n"
    "      --limit-rate BYTES     cap the upload rate, bytes/s; k, m, g suffixes\n"
    "      --window N             chunks in flight before waiting for acks (1-64; default:\n"
    "                             about 2 MiB of chunks, at least 8)\n"
    "      --timeout SECONDS      give up on a silent server after this (default 30)\n"
    "      --limit N              list: at most N documents (1-1000)\n"
    "  -q, --quiet                no progress or notices on stderr\n"
    "      --json                 one JSON result line per file/command on stdout\n"
    "  -h, --help                 this help\n"
    "\n"
    "Exit status:\n"
    "  0  success\n"
    "  1  usage error\n"
    "  2  local file error (missing, unreadable, changed while hashing)\n"
    "  3  authentication failed (401)\n"
    "  4  refused by the server (4xx other than 401)\n"
    "  5  server unavailable: network error, 5xx, retries used up\n"
    "  6  server out of storage (507); run again later to resume\n"
    "  7  checksum mismatch\n"
    "  8  the server's answers do not follow the protocol (not chunkd?)\n";

cu_conn *cmd_connect(const cu_options *o, cu_error *err)
{
    return cu_connect(o->host, o->port, o->timeout_ms, err);
}

int cmd_fail(const cu_options *o, const char *what, int status, const char *description,
             const cu_error *err)
{
    json_t *obj;
    char *text = NULL;

    fprintf(stderr, "chunkup: %s: %s\n", what, description);
    if (!o->json)
        return status;
    obj = json_pack("{s:s, s:s, s:i, s:s}", "status", "error", "what", what, "exit_code", status,
                    "message", description);
    if (obj != NULL && err != NULL && err->code != 0 &&
        (json_object_set_new(obj, "code", json_integer(err->code)) < 0 ||
         json_object_set_new(obj, "reason", json_string(err->reason)) < 0)) {
        json_decref(obj);
        obj = NULL;
    }
    if (obj != NULL)
        text = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (text == NULL) {
        fprintf(stderr, "chunkup: cannot encode the JSON result\n");
        return status;
    }
    printf("%s\n", text);
    fflush(stdout);
    free(text);
    return status;
}

int cmd_fail_request(const cu_options *o, const char *what, int status, const cu_error *err)
{
    char text[768];

    cu_describe_error(text, sizeof text, err);
    return cmd_fail(o, what, status, text, err);
}

int cmd_state_path(const cu_options *o, char *buf, size_t cap)
{
    int n;

    if (o->state_path == NULL)
        return cu_state_default_path(buf, cap);
    n = snprintf(buf, cap, "%s", o->state_path);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

int main(int argc, char **argv)
{
    cu_options o;
    char msg[512];
    int rc = cu_options_parse(argc, argv, &o, msg, sizeof msg);

    if (rc != CU_EXIT_OK) {
        fprintf(stderr, "chunkup: %s\n%s", msg,
                rc == CU_EXIT_USAGE ? "Try 'chunkup --help'.\n" : "");
        cu_options_free(&o);
        return rc;
    }
    if (o.help) {
        fputs(usage, stdout);
        cu_options_free(&o);
        return CU_EXIT_OK;
    }
    /* Writes to a closed socket must fail with EPIPE, not end the process;
     * the library uses MSG_NOSIGNAL, this covers everything else. */
    if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
        perror("chunkup: signal");
    if (strcmp(o.command, "upload") == 0)
        rc = cmd_upload(&o);
    else if (strcmp(o.command, "status") == 0)
        rc = cmd_status(&o);
    else if (strcmp(o.command, "list") == 0)
        rc = cmd_list(&o);
    else
        rc = cmd_abort(&o);
    cu_options_free(&o);
    /* A result line that never reached its reader (a full disk, a closed
     * pipe: SIGPIPE is ignored) must not look like success. */
    int flushed = fflush(stdout);
    int e = errno;
    if (flushed != 0 || ferror(stdout)) {
        fprintf(stderr, "chunkup: cannot write the results to standard output%s%s\n",
                flushed != 0 ? ": " : "", flushed != 0 ? strerror(e) : "");
        if (rc == CU_EXIT_OK)
            rc = CU_EXIT_FILE;
    }
    return rc;
}
