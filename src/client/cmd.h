/* chunkup's commands, one function each; they return an exit status. */
#ifndef CHUNKUP_CMD_H
#define CHUNKUP_CMD_H

#include "chunkup/client.h"
#include "cli.h"

int cmd_upload(const cu_options *o);
int cmd_status(const cu_options *o);
int cmd_list(const cu_options *o);
int cmd_abort(const cu_options *o);

/* Shared by the commands. */
cu_conn *cmd_connect(const cu_options *o, cu_error *err);
/* Reports a failure on stderr ("chunkup: WHAT: DESCRIPTION") and, with
 * --json, as an error object on stdout carrying err's code and reason when
 * the server gave one (err may be NULL). Returns status. */
int cmd_fail(const cu_options *o, const char *what, int status, const char *description,
             const cu_error *err);
/* cmd_fail for a failed request, described from err. */
int cmd_fail_request(const cu_options *o, const char *what, int status, const cu_error *err);
/* The state file path: --state, or the default location. */
int cmd_state_path(const cu_options *o, char *buf, size_t cap);

#endif
