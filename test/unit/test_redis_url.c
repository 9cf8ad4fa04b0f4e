/*
 * Tests for src/engine/redis_url.c: the accepted forms (defaults, IPv6,
 * both AUTH forms, percent-encoded and unencoded special characters in a
 * password) and every refusal with its reason, which never shows the
 * password.
 */
#include "engine/redis_url.h"

#include <stdbool.h>

#include "test.h"

static hd_redis_url url;
static char err[256];

static int parse(const char *text)
{
    memset(&url, 0x5a, sizeof(url)); /* no field may survive from an earlier parse */
    return hd_redis_url_parse(text, &url, err, sizeof(err));
}

/* Whether text is refused with a reason that contains reason. */
static bool refused(const char *text, const char *reason)
{
    return parse(text) == -1 && strstr(err, reason) != NULL;
}

/* Whether text is accepted as host, port and db. */
static bool accepted(const char *text, const char *host, int port, int db)
{
    return parse(text) == 0 && strcmp(url.host, host) == 0 && url.port == port && url.db == db;
}

static void test_defaults(void)
{
    CHECK(accepted("redis://localhost", "localhost", 6379, 0));
    CHECK_EQ_STR(url.user, "");
    CHECK_EQ_STR(url.password, "");
    CHECK_EQ_STR(err, "");
    CHECK(accepted("redis://10.0.0.7:6380/", "10.0.0.7", 6380, 0));
    CHECK(accepted("REDIS://cache-1.internal_x:1/15", "cache-1.internal_x", 1, 15));
    CHECK(accepted("redis://h:65535/2147483647", "h", 65535, 2147483647));
}

static void test_ipv6(void)
{
    CHECK(accepted("redis://[::1]:6390/3", "::1", 6390, 3));
    CHECK(accepted("redis://:pw@[fe80::1:2]", "fe80::1:2", 6379, 0));
    CHECK_EQ_STR(url.password, "pw");

    CHECK(refused("redis://[::1", "unclosed '['"));
    CHECK(refused("redis://[not-v6]:6379", "not a valid IPv6 address"));
    CHECK(refused("redis://[::1]x", "unexpected text after the host"));
    CHECK(refused("redis://::1:6379", "brackets"));
}

static void test_credentials(void)
{
    CHECK(accepted("redis://:s3cret@db:7000/1", "db", 7000, 1));
    CHECK_EQ_STR(url.user, "");
    CHECK_EQ_STR(url.password, "s3cret");

    CHECK_EQ_INT(parse("redis://herald:s3cret@db"), 0);
    CHECK_EQ_STR(url.user, "herald");
    CHECK_EQ_STR(url.password, "s3cret");

    /* Percent-encoded, and unencoded '@', ':' and '/' (the last '@' ends the credentials). */
    CHECK_EQ_INT(parse("redis://:p%40ss%3Aw%2Fd%25@db"), 0);
    CHECK_EQ_STR(url.password, "p@ss:w/d%");
    CHECK(accepted("redis://u%3Ax:a:b@c/d@db:1/2", "db", 1, 2));
    CHECK_EQ_STR(url.user, "u:x");
    CHECK_EQ_STR(url.password, "a:b@c/d");

    char longest[16 + HD_REDIS_URL_PASSWORD_MAX + 8];
    snprintf(longest, sizeof(longest), "redis://:%0*d@h", HD_REDIS_URL_PASSWORD_MAX, 0);
    CHECK_EQ_INT(parse(longest), 0);
    CHECK_EQ_INT(strlen(url.password), HD_REDIS_URL_PASSWORD_MAX);
    snprintf(longest, sizeof(longest), "redis://:%0*d@h", HD_REDIS_URL_PASSWORD_MAX + 1, 0);
    CHECK(refused(longest, "password is invalid"));
}

static void test_credential_errors(void)
{
    CHECK(refused("redis://hunter2@db", "':password@' or 'user:password@'"));
    CHECK(strstr(err, "hunter2") == NULL);
    CHECK(refused("redis://:@db", "password is empty"));
    CHECK(refused("redis://:hunter%2@db", "password is invalid"));
    CHECK(strstr(err, "hunter") == NULL);
    CHECK(refused("redis://:a%00b@db", "password is invalid"));
    CHECK(refused("redis://u%zz:pw@db", "user is invalid"));
}

static void test_refusals(void)
{
    CHECK_EQ_INT(parse("rediss://db:6380"), -1);
    CHECK_EQ_STR(err, "TLS to Redis is not supported (rediss://); use redis://");
    CHECK(refused("unix:///tmp/redis.sock", "must start with redis://"));
    CHECK(refused("db:6379", "must start with redis://"));
    CHECK(refused("", "must start with redis://"));
    CHECK(refused("redis://", "no host"));
    CHECK(refused("redis://:6379", "no host"));
    CHECK(refused("redis://db:", "port must be"));
    CHECK(refused("redis://db:0", "port must be"));
    CHECK(refused("redis://db:65536", "port must be"));
    CHECK(refused("redis://db:99999999999", "port must be"));
    CHECK(refused("redis://db:63a9", "port must be"));
    CHECK(refused("redis://db/x", "database must be a number"));
    CHECK(refused("redis://db/-1", "database must be a number"));
    CHECK(refused("redis://db/2147483648", "database must be a number"));
    CHECK(refused("redis://db/0/1", "database must be a number"));
    CHECK(refused("redis://db?timeout=1", "options ('?...') are not supported"));
    CHECK(refused("redis://db#x", "options ('#...') are not supported"));
    CHECK(refused("redis://d b", "space or control character"));
    CHECK(refused("redis://db\n", "space or control character"));
    CHECK(refused("redis://d*b", "invalid character '*'"));

    char long_host[300];
    snprintf(long_host, sizeof(long_host), "redis://%0*d", HD_REDIS_URL_HOST_MAX + 1, 0);
    CHECK(refused(long_host, "host is longer than"));
    snprintf(long_host, sizeof(long_host), "redis://%0*d", HD_REDIS_URL_HOST_MAX, 0);
    CHECK_EQ_INT(parse(long_host), 0);

    /* A tiny error buffer is still terminated. */
    char small[8];
    CHECK_EQ_INT(hd_redis_url_parse("rediss://x", &url, small, sizeof(small)), -1);
    CHECK_EQ_STR(small, "TLS to ");
}

int main(void)
{
    RUN_TEST(test_defaults);
    RUN_TEST(test_ipv6);
    RUN_TEST(test_credentials);
    RUN_TEST(test_credential_errors);
    RUN_TEST(test_refusals);
    return test_summary();
}
