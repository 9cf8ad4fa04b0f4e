/*
 * Logging to stderr, one line per event worth knowing:
 *   2026-11-24T21:50:00.123Z info listening on 127.0.0.1:8080
 * or, with log_format "json", one JSON object per line for log shippers:
 *   {"time":"2026-11-24T21:50:00.123Z","level":"info","msg":"listening on 127.0.0.1:8080"}
 * Events with fields (the access log) add them as name=value words, or as
 * members of the object. The level and format are process-wide because
 * stderr is; everything else about herald lives in objects. A line is built
 * in a stack buffer (4 KiB, longer is cut) and written with one write.
 */
#ifndef HERALD_LOG_H
#define HERALD_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum hd_log_level {
    HD_LOG_DEBUG,
    HD_LOG_INFO,
    HD_LOG_WARN,
    HD_LOG_ERROR,
} hd_log_level;

/* Thread-safe: takes effect at once for every thread. */
void hd_log_set_level(hd_log_level level);
/* JSON lines (true) or text (false); thread-safe like the level. */
void hd_log_set_json(bool json);
/* Whether a line of this level would be written. */
bool hd_log_enabled(hd_log_level level);
/* Parses "debug", "info", "warn" or "error"; returns -1 for anything else. */
int hd_log_level_parse(const char *name, hd_log_level *out);
void hd_log(hd_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One field of an event: text of len bytes (not NUL-terminated), or a number when text is NULL. */
typedef struct hd_log_field {
    const char *name;
    const char *text;
    size_t len;
    int64_t number;
} hd_log_field;

#define HD_LOG_TEXT(n, t, l) ((hd_log_field){.name = (n), .text = (t), .len = (l)})
#define HD_LOG_NUMBER(n, v) ((hd_log_field){.name = (n), .number = (int64_t)(v)})

/* A line saying msg (a fixed phrase) with its fields. */
void hd_log_event(hd_log_level level, const char *msg, const hd_log_field *fields, size_t count);

#define hd_log_debug(...) hd_log(HD_LOG_DEBUG, __VA_ARGS__)
#define hd_log_info(...) hd_log(HD_LOG_INFO, __VA_ARGS__)
#define hd_log_warn(...) hd_log(HD_LOG_WARN, __VA_ARGS__)
#define hd_log_error(...) hd_log(HD_LOG_ERROR, __VA_ARGS__)

#endif
