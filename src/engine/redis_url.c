#include "engine/redis_url.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

__attribute__((format(printf, 3, 4))) static int fail(char *err, size_t err_len, const char *fmt,
                                                      ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
    return -1;
}

/* hd_percent_decode lives in http/, which engine/ does not depend on. */
static int hex_value(char c)
{
    static const char digits[] = "0123456789abcdef";
    const char *p = c ? strchr(digits, tolower((unsigned char)c)) : NULL;
    return p ? (int)(p - digits) : -1;
}

/*
 * Percent-decodes [s, end) into out (at most max bytes plus the NUL).
 * Returns the decoded length, or -1 for a bad escape, %00 (a C string
 * cannot hold it) or too long a result.
 */
static int decode_userinfo(const char *s, const char *end, char *out, size_t max)
{
    size_t n = 0;
    while (s < end) {
        char c = *s++;
        if (c == '%') {
            int hi = end - s >= 2 ? hex_value(s[0]) : -1;
            int lo = end - s >= 2 ? hex_value(s[1]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return -1;
            c = (char)(hi * 16 + lo);
            s += 2;
        }
        if (n == max)
            return -1;
        out[n++] = c;
    }
    out[n] = '\0';
    return (int)n;
}

/* Parses the decimal digits [s, end) into a value in [min, max]; -1 when they are not. */
static long parse_decimal(const char *s, const char *end, long min, long max)
{
    if (s == end || end - s > 10)
        return -1;
    long v = 0;
    for (; s < end; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (*s - '0');
    }
    return v >= min && v <= max ? v : -1;
}

static bool is_host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_';
}

static int parse_userinfo(const char *s, const char *end, hd_redis_url *out, char *err,
                          size_t err_len)
{
    const char *colon = memchr(s, ':', (size_t)(end - s));
    if (colon == NULL)
        return fail(err, err_len,
                    "Redis URL credentials must be ':password@' or 'user:password@' "
                    "(a userinfo without ':' is ambiguous)");
    if (decode_userinfo(s, colon, out->user, HD_REDIS_URL_USER_MAX) < 0)
        return fail(err, err_len,
                    "Redis URL user is invalid (bad %%-escape, %%00, or longer than %d bytes)",
                    HD_REDIS_URL_USER_MAX);
    int n = decode_userinfo(colon + 1, end, out->password, HD_REDIS_URL_PASSWORD_MAX);
    if (n < 0)
        return fail(err, err_len,
                    "Redis URL password is invalid (bad %%-escape, %%00, or longer than %d bytes)",
                    HD_REDIS_URL_PASSWORD_MAX);
    if (n == 0)
        return fail(err, err_len, "Redis URL password is empty (leave out the '@' part for none)");
    return 0;
}

/* Parses host[:port] in [s, end). */
static int parse_host_port(const char *s, const char *end, hd_redis_url *out, char *err,
                           size_t err_len)
{
    const char *host = s, *host_end;
    if (*s == '[') {
        host = s + 1;
        host_end = memchr(host, ']', (size_t)(end - host));
        if (host_end == NULL)
            return fail(err, err_len, "Redis URL has an unclosed '[' in its host");
        s = host_end + 1;
        char v6[64];
        struct in6_addr addr;
        size_t len = (size_t)(host_end - host);
        if (len >= sizeof(v6))
            return fail(err, err_len, "Redis URL host is not a valid IPv6 address");
        memcpy(v6, host, len);
        v6[len] = '\0';
        if (inet_pton(AF_INET6, v6, &addr) != 1)
            return fail(err, err_len, "Redis URL host is not a valid IPv6 address");
    } else {
        while (s < end && is_host_char(*s))
            s++;
        host_end = s;
        if (s < end && *s == ':' && memchr(s + 1, ':', (size_t)(end - s - 1)) != NULL)
            return fail(err, err_len, "Redis URL IPv6 addresses go in brackets: [::1]:6379");
        if (s < end && *s != ':')
            return fail(err, err_len, "Redis URL host has an invalid character '%c'", *s);
    }
    if (host_end == host)
        return fail(err, err_len, "Redis URL has no host");
    if ((size_t)(host_end - host) > HD_REDIS_URL_HOST_MAX)
        return fail(err, err_len, "Redis URL host is longer than %d bytes", HD_REDIS_URL_HOST_MAX);
    memcpy(out->host, host, (size_t)(host_end - host));
    out->host[host_end - host] = '\0';

    if (s == end)
        return 0;
    if (*s != ':')
        return fail(err, err_len, "Redis URL has unexpected text after the host");
    long port = parse_decimal(s + 1, end, 1, 65535);
    if (port < 0)
        return fail(err, err_len, "Redis URL port must be a number from 1 to 65535");
    out->port = (int)port;
    return 0;
}

int hd_redis_url_parse(const char *url, hd_redis_url *out, char *err, size_t err_len)
{
    static const char scheme[] = "redis://";
    memset(out, 0, sizeof(*out));
    out->port = 6379;
    if (err_len > 0)
        err[0] = '\0';

    for (const char *p = url; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            return fail(err, err_len, "Redis URL contains a space or control character");
    if (strncasecmp(url, "rediss://", 9) == 0)
        return fail(err, err_len, "TLS to Redis is not supported (rediss://); use redis://");
    if (strncasecmp(url, scheme, sizeof(scheme) - 1) != 0)
        return fail(err, err_len,
                    "Redis URL must start with redis:// "
                    "(redis://[:password@]host:port[/db])");
    const char *s = url + sizeof(scheme) - 1;
    const char *end = s + strlen(s);

    /*
     * '@' cannot occur in a host, port or db, so the last one ends the
     * credentials even when an unencoded password holds '@' or '/'.
     */
    const char *at = strrchr(s, '@');
    if (at != NULL) {
        if (parse_userinfo(s, at, out, err, err_len) < 0)
            return -1;
        s = at + 1;
    }
    const char *q = strpbrk(s, "?#");
    if (q != NULL)
        return fail(err, err_len, "Redis URL options ('%c...') are not supported", *q);

    const char *slash = strchr(s, '/');
    const char *authority_end = slash ? slash : end;
    if (parse_host_port(s, authority_end, out, err, err_len) < 0)
        return -1;
    if (slash != NULL && slash + 1 < end) {
        long db = parse_decimal(slash + 1, end, 0, 2147483647);
        if (db < 0)
            return fail(err, err_len, "Redis URL database must be a number (redis://host:port/0)");
        out->db = (int)db;
    }
    return 0;
}
