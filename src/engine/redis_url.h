/*
 * The address of the Redis server of SPEC §5 ("cluster.redis"):
 *
 *   redis://[[user]:password@]host[:port][/db]
 *
 * host is a name, an IPv4 address or a bracketed IPv6 address ("[::1]");
 * port defaults to 6379 and db to 0. user and password may be
 * percent-encoded (so they can hold ':', '@' or '/'); a user selects the
 * ACL form of AUTH (Redis 6 and later). Anything else is refused with one
 * line saying why: another scheme (rediss://, since herald's hiredis 0.14
 * has no TLS), a query string, a userinfo without ':', an empty password,
 * a bad port or db.
 *
 * Pure: no allocation, no I/O; the result is a plain value.
 */
#ifndef HERALD_ENGINE_REDIS_URL_H
#define HERALD_ENGINE_REDIS_URL_H

#include <stddef.h>

#define HD_REDIS_URL_HOST_MAX 255     /* DNS names are at most 253 bytes */
#define HD_REDIS_URL_USER_MAX 128     /* after percent-decoding */
#define HD_REDIS_URL_PASSWORD_MAX 512 /* after percent-decoding */

typedef struct hd_redis_url {
    char host[HD_REDIS_URL_HOST_MAX + 1];         /* without the brackets of an IPv6 address */
    int port;                                     /* 1-65535 */
    int db;                                       /* 0 and up */
    char user[HD_REDIS_URL_USER_MAX + 1];         /* "" = no user: AUTH <password> */
    char password[HD_REDIS_URL_PASSWORD_MAX + 1]; /* "" = no AUTH */
} hd_redis_url;

/*
 * Parses url (a NUL-terminated string) into *out. Returns 0, or -1 with a
 * one-line reason in err (err_len bytes, always terminated). The reason
 * never repeats the password.
 */
int hd_redis_url_parse(const char *url, hd_redis_url *out, char *err, size_t err_len);

#endif
