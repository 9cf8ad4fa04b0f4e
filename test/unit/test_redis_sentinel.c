/*
 * Tests for the pure parts of src/engine/redis_sentinel.c: the answer to
 * SENTINEL get-master-addr-by-name, +switch-master messages and ROLE
 * answers, each fed as RESP bytes through hiredis's own reader, as they
 * come off the wire.
 */
#include "engine/redis_sentinel.h"

#include <hiredis/read.h>
#include <stdbool.h>

#include "test.h"

/* A string literal and its length, NULs included. */
#define RESP(literal) literal, sizeof(literal) - 1

static redisReply *reply_of(const char *resp, size_t len)
{
    redisReader *reader = redisReaderCreate();
    redisReaderFeed(reader, resp, len);
    void *reply = NULL;
    if (redisReaderGetReply(reader, &reply) != REDIS_OK)
        reply = NULL;
    redisReaderFree(reader);
    return reply;
}

static char host[HD_SENTINEL_HOST_MAX + 1];
static int port;
static char err[128];

/* Parses resp as the master's address: 0 or -1, like the function. */
static int master_of(const char *resp, size_t len)
{
    redisReply *reply = reply_of(resp, len);
    CHECK(reply != NULL);
    strcpy(host, "untouched");
    port = -1;
    err[0] = '\0';
    int rc =
        reply ? hd_redis_sentinel_parse_master(reply, host, sizeof(host), &port, err, sizeof(err))
              : -2;
    freeReplyObject(reply);
    return rc;
}

static void test_master(void)
{
    CHECK_EQ_INT(master_of(RESP("*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6380\r\n")), 0);
    CHECK_EQ_STR(host, "127.0.0.1");
    CHECK_EQ_INT(port, 6380);
    CHECK_EQ_INT(master_of(RESP("*2\r\n$3\r\n::1\r\n$5\r\n65535\r\n")), 0);
    CHECK_EQ_STR(host, "::1");
    CHECK_EQ_INT(port, 65535);
    CHECK_EQ_INT(master_of(RESP("*2\r\n$13\r\nredis-0.cache\r\n$1\r\n1\r\n")), 0);
    CHECK_EQ_STR(host, "redis-0.cache");
}

static void test_master_refusals(void)
{
    /* The sentinel monitors no master by that name. */
    CHECK_EQ_INT(master_of(RESP("$-1\r\n")), -1);
    CHECK(strstr(err, "no master by that name") != NULL);
    CHECK_EQ_INT(master_of(RESP("*-1\r\n")), -1);
    CHECK_EQ_INT(master_of(RESP("-NOAUTH Authentication required.\r\n")), -1);
    CHECK_EQ_STR(err, "refused: NOAUTH Authentication required.");

    static const struct {
        const char *resp;
        size_t len;
    } malformed[] = {
        {RESP("*0\r\n")},
        {RESP("*1\r\n$9\r\n127.0.0.1\r\n")},
        {RESP("*3\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\n2\r\n")},
        {RESP("*2\r\n$0\r\n\r\n$4\r\n6379\r\n")},            /* empty host */
        {RESP("*2\r\n$9\r\n127.0.0.1\r\n$1\r\n0\r\n")},      /* port 0 */
        {RESP("*2\r\n$9\r\n127.0.0.1\r\n$5\r\n65536\r\n")},  /* port too large */
        {RESP("*2\r\n$9\r\n127.0.0.1\r\n$6\r\n006379\r\n")}, /* too many digits */
        {RESP("*2\r\n$9\r\n127.0.0.1\r\n$3\r\n-80\r\n")},
        {RESP("*2\r\n$9\r\n127.0.0.1\r\n$0\r\n\r\n")},
        {RESP("*2\r\n$9\r\n127.0.0.1\r\n:6379\r\n")}, /* an integer, not a string */
        {RESP("*2\r\n$3\r\na\0b\r\n$4\r\n6379\r\n")}, /* NUL in the host */
        {RESP("+OK\r\n")},
        {RESP(":1\r\n")},
    };
    for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++) {
        CHECK_EQ_INT(master_of(malformed[i].resp, malformed[i].len), -1);
        CHECK_EQ_STR(err, "answered something other than a host and a port");
    }

    /* A host longer than the buffer is refused, not cut. */
    char resp[600];
    char long_host[300];
    memset(long_host, 'h', 256);
    long_host[256] = '\0';
    int n = snprintf(resp, sizeof(resp), "*2\r\n$256\r\n%s\r\n$4\r\n6379\r\n", long_host);
    CHECK_EQ_INT(master_of(resp, (size_t)n), -1);
    n = snprintf(resp, sizeof(resp), "*2\r\n$255\r\n%.255s\r\n$4\r\n6379\r\n", long_host);
    CHECK_EQ_INT(master_of(resp, (size_t)n), 0);
    CHECK_EQ_INT((int)strlen(host), 255);
}

static bool switch_of(const char *payload, const char *master)
{
    strcpy(host, "untouched");
    port = -1;
    return hd_redis_sentinel_parse_switch(payload, strlen(payload), master, host, sizeof(host),
                                          &port);
}

static void test_switch(void)
{
    CHECK(switch_of("mymaster 127.0.0.1 6379 127.0.0.1 6380", "mymaster"));
    CHECK_EQ_STR(host, "127.0.0.1");
    CHECK_EQ_INT(port, 6380);
    CHECK(switch_of("m ::1 1 fe80::2 26379", "m"));
    CHECK_EQ_STR(host, "fe80::2");
    CHECK_EQ_INT(port, 26379);

    /* Another master of the same sentinels. */
    CHECK(!switch_of("other 127.0.0.1 6379 127.0.0.1 6380", "mymaster"));
    CHECK(!switch_of("mymaster2 127.0.0.1 6379 127.0.0.1 6380", "mymaster"));
    CHECK(!switch_of("mymaste 127.0.0.1 6379 127.0.0.1 6380", "mymaster"));
    CHECK_EQ_STR(host, "untouched");

    CHECK(!switch_of("", "m"));
    CHECK(!switch_of("m 127.0.0.1 6379 127.0.0.1", "m"));
    CHECK(!switch_of("m 127.0.0.1 6379 127.0.0.1 6380 extra", "m"));
    CHECK(!switch_of("m 127.0.0.1 6379 127.0.0.1 port", "m"));
    CHECK(!switch_of("m 127.0.0.1 6379 127.0.0.1 0", "m"));
    CHECK(!switch_of("m 127.0.0.1 6379 127.0.0.1 70000", "m"));
}

static void test_role(void)
{
    size_t len;
    redisReply *r = reply_of(RESP("*3\r\n$6\r\nmaster\r\n:3129659\r\n*0\r\n"));
    const char *role = hd_redis_role_of(r, &len);
    CHECK_EQ_MEM(role, len, "master", 6);
    freeReplyObject(r);

    r = reply_of(
        RESP("*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:9000\r\n$9\r\nconnected\r\n:3167038\r\n"));
    role = hd_redis_role_of(r, &len);
    CHECK_EQ_MEM(role, len, "slave", 5);
    freeReplyObject(r);

    r = reply_of(RESP("+OK\r\n"));
    role = hd_redis_role_of(r, &len);
    CHECK_EQ_MEM(role, len, "", 0);
    freeReplyObject(r);

    r = reply_of(RESP("*1\r\n:1\r\n"));
    role = hd_redis_role_of(r, &len);
    CHECK_EQ_MEM(role, len, "", 0);
    freeReplyObject(r);

    r = reply_of(RESP("*0\r\n"));
    role = hd_redis_role_of(r, &len);
    CHECK_EQ_MEM(role, len, "", 0);
    freeReplyObject(r);
}

int main(void)
{
    RUN_TEST(test_master);
    RUN_TEST(test_master_refusals);
    RUN_TEST(test_switch);
    RUN_TEST(test_role);
    return test_summary();
}
