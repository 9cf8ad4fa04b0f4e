/*
 * Logging to stderr, one line per event worth knowing:
 *   2026-11-24T21:50:00.123Z info listening on 127.0.0.1:8080
 * The level is process-wide because stderr is; everything else about herald
 * lives in objects.
 */
#ifndef HERALD_LOG_H
#define HERALD_LOG_H

typedef enum hd_log_level {
    HD_LOG_DEBUG,
    HD_LOG_INFO,
    HD_LOG_WARN,
    HD_LOG_ERROR,
} hd_log_level;

/* Thread-safe: takes effect at once for every thread. */
void hd_log_set_level(hd_log_level level);
/* Parses "debug", "info", "warn" or "error"; returns -1 for anything else. */
int hd_log_level_parse(const char *name, hd_log_level *out);
void hd_log(hd_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define hd_log_debug(...) hd_log(HD_LOG_DEBUG, __VA_ARGS__)
#define hd_log_info(...) hd_log(HD_LOG_INFO, __VA_ARGS__)
#define hd_log_warn(...) hd_log(HD_LOG_WARN, __VA_ARGS__)
#define hd_log_error(...) hd_log(HD_LOG_ERROR, __VA_ARGS__)

#endif
