#include "herald/log.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "herald/utf8.h"

/* Atomic: a reload (SIGHUP) sets them on the main thread while the workers log. */
static hd_log_level current_level = HD_LOG_INFO;
static bool json_lines = false;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

/* A line longer than this is cut (a request target may be 8 KiB; its line keeps the start). */
#define LINE_MAX_BYTES 4096

void hd_log_set_level(hd_log_level level)
{
    __atomic_store_n(&current_level, level, __ATOMIC_RELAXED);
}

void hd_log_set_json(bool json)
{
    __atomic_store_n(&json_lines, json, __ATOMIC_RELAXED);
}

bool hd_log_enabled(hd_log_level level)
{
    return level >= __atomic_load_n(&current_level, __ATOMIC_RELAXED);
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

/*
 * A line being built in a stack buffer. Text stops RESERVE bytes short of
 * the end, where only closers go (a JSON string's quote, the object's brace,
 * the newline): a cut line is still one line, and in JSON still an object.
 */
#define RESERVE 8

typedef struct line {
    char data[LINE_MAX_BYTES];
    size_t len;
} line;

static size_t room(const line *l)
{
    /* Past the mark once a closer went in: no more text. */
    return l->len + RESERVE < sizeof(l->data) ? sizeof(l->data) - RESERVE - l->len : 0;
}

static void put(line *l, const char *bytes, size_t len)
{
    if (len > room(l))
        len = room(l);
    memcpy(l->data + l->len, bytes, len);
    l->len += len;
}

static void put_str(line *l, const char *s)
{
    put(l, s, strlen(s));
}

/* A closer, into the reserve. */
static void put_closer(line *l, char c)
{
    l->data[l->len++] = c;
}

/*
 * As a JSON string's contents: quotes, backslashes and control bytes
 * escaped (and every byte of 0x80 and above when the text is not UTF-8). Where the room ends the
 * text is cut between characters, never inside an escape or a UTF-8 sequence.
 */
static void put_json_escaped(line *l, const char *s, size_t len)
{
    /* JSON is UTF-8: bytes of anything else (a raw request target) are escaped one by one. */
    bool bytes = !hd_utf8_valid(s, len);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        size_t n = 1;
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            n = 2;
        } else if (c < 0x20 || c == 0x7f || (bytes && c >= 0x80)) {
            n = (size_t)snprintf(esc, sizeof(esc), "\\u%04x", c);
        } else {
            esc[0] = (char)c;
        }
        if (n > room(l)) {
            /* Cut inside a UTF-8 sequence: drop its first bytes too. */
            if ((c & 0xc0) == 0x80) {
                while (l->len > 0 && ((unsigned char)l->data[l->len - 1] & 0xc0) == 0x80)
                    l->len--;
                if (l->len > 0 && (unsigned char)l->data[l->len - 1] >= 0xc0)
                    l->len--;
            }
            return;
        }
        memcpy(l->data + l->len, esc, n);
        l->len += n;
    }
}

/* A text line's value: as is when it is one plain word, else quoted like a JSON string. */
static void put_text_value(line *l, const char *s, size_t len)
{
    bool plain = len > 0;
    for (size_t i = 0; plain && i < len; i++)
        plain = s[i] > ' ' && s[i] != '"' && s[i] != '\\' && s[i] != 0x7f;
    if (plain) {
        put(l, s, len);
        return;
    }
    put(l, "\"", 1);
    put_json_escaped(l, s, len);
    put_closer(l, '"');
}

static void begin(line *l, hd_log_level level, bool json)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(l->data, sizeof(l->data),
                     json ? "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\","
                            "\"msg\":\""
                          : "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (long)(tv.tv_usec / 1000), level_names[level]);
    l->len = (size_t)n;
}

/* One write per line so that concurrent writers never interleave inside a line. */
static void end(line *l, bool json)
{
    if (json)
        put_closer(l, '}');
    put_closer(l, '\n');
    fwrite(l->data, 1, l->len, stderr);
    fflush(stderr);
}

void hd_log(hd_log_level level, const char *fmt, ...)
{
    if (!hd_log_enabled(level))
        return;
    bool json = __atomic_load_n(&json_lines, __ATOMIC_RELAXED);
    line l;
    begin(&l, level, json);
    char text[LINE_MAX_BYTES];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (json) {
        put_json_escaped(&l, text, strlen(text));
        put_closer(&l, '"');
    } else {
        put_str(&l, text);
    }
    end(&l, json);
}

void hd_log_event(hd_log_level level, const char *msg, const hd_log_field *fields, size_t count)
{
    if (!hd_log_enabled(level))
        return;
    bool json = __atomic_load_n(&json_lines, __ATOMIC_RELAXED);
    line l;
    begin(&l, level, json);
    put_str(&l, msg);
    if (json)
        put_closer(&l, '"');
    for (size_t i = 0; i < count; i++) {
        const hd_log_field *f = &fields[i];
        /* A field starts only with room for its name and a number: no half-written member. */
        if (room(&l) < strlen(f->name) + 32)
            break;
        char number[32];
        if (f->text == NULL)
            snprintf(number, sizeof(number), "%" PRId64, f->number);
        put_str(&l, json ? ",\"" : " ");
        put_str(&l, f->name);
        put_str(&l, json ? "\":" : "=");
        if (f->text == NULL) {
            put_str(&l, number);
        } else if (json) {
            put(&l, "\"", 1);
            put_json_escaped(&l, f->text, f->len);
            put_closer(&l, '"');
        } else {
            put_text_value(&l, f->text, f->len);
        }
    }
    end(&l, json);
}
