#include "herald/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

/* Atomic: a reload (SIGHUP) sets it on the main thread while the workers log. */
static hd_log_level current_level = HD_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void hd_log_set_level(hd_log_level level)
{
    __atomic_store_n(&current_level, level, __ATOMIC_RELAXED);
}

int hd_log_level_parse(const char *name, hd_log_level *out)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (hd_log_level)i;
            return 0;
        }
    }
    return -1;
}

void hd_log(hd_log_level level, const char *fmt, ...)
{
    if (level < __atomic_load_n(&current_level, __ATOMIC_RELAXED))
        return;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char line[1024];
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (long)(tv.tv_usec / 1000), level_names[level]);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = strlen(line);
    line[len++] = '\n';
    /* One write per line so that concurrent writers never interleave inside a line. */
    fwrite(line, 1, len, stderr);
    fflush(stderr);
}
