/* Structured logging: one line per event, `key=value` pairs after a
 * timestamp and level, written with a single write(2) so lines from
 * different threads never interleave. */
#ifndef CHUNKD_LOG_H
#define CHUNKD_LOG_H

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Not thread-safe: call before threads start. -1 on an unknown name. */
int log_set_level(const char *name);
void log_set_node(const char *node_id);
int log_enabled(enum log_level level);

/* fmt produces the key=value part, e.g. "event=chunk doc=%llu". */
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) do { if (log_enabled(LOG_DEBUG)) log_msg(LOG_DEBUG, __VA_ARGS__); } while (0)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
