/*
 * Tests for src/config/config.c: defaults, every kind of rejected document
 * with its exact one-line message, the listen address rules, files, and
 * config.example.json (which must load, list every key and document each).
 */
#include "herald/config.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"

/* Every key of config.example.json: names are part of the contract. */
static const char *const all_keys[] = {
    "listen",
    "log_level",
    "log_format",
    "access_log",
    "heartbeat_s",
    "shutdown_grace_s",
    "history.max_messages",
    "history.max_bytes",
    "history.ttl_s",
    "limits.max_connections",
    "limits.max_connections_per_ip",
    "limits.max_message_bytes",
    "limits.max_request_bytes",
    "limits.max_topics_per_subscription",
    "limits.max_topics",
    "limits.max_outbound_bytes",
    "limits.max_header_bytes",
    "limits.max_headers",
    "limits.header_timeout_s",
    "limits.request_timeout_s",
    "limits.max_pending_body_bytes",
    "limits.close_timeout_s",
    "limits.poll_timeout_max_s",
    "limits.max_idempotency_keys",
    "publish.idempotency_ttl_s",
    "sse.retry_ms",
    "cors.allow_origins",
    "websocket.allow_origins",
    "websocket.compression",
    "websocket.echo_path",
    "ui.enabled",
    "tls.cert",
    "tls.key",
    "auth.jwt_secret",
    "auth.jwt_secret_file",
    "auth.jwt_public_key",
    "auth.anonymous_subscribe",
    "auth.anonymous_publish",
    "cluster.redis",
    "cluster.prefix",
    "cluster.timeout_ms",
    "cluster.trust_redis_persistence",
    "cluster.max_held_messages",
    "cluster.sentinels",
    "cluster.sentinel_master",
    "cluster.sentinel_password",
    "cluster.sentinel_password_file",
    "cluster.master_password",
    "cluster.master_password_file",
    "cluster.master_db",
};

/* ------------------------------------------------------------- helpers */

/*
 * Applies json to a default config and returns the error, or "(accepted)".
 * Also checks the promise that every error is one line.
 */
static const char *apply_error(const char *json)
{
    static char err[HD_CONFIG_ERROR_MAX];
    hd_config cfg;
    hd_config_init(&cfg);
    strcpy(err, "(accepted)");
    int rc = hd_config_apply_json(&cfg, json, strlen(json), err, sizeof(err));
    hd_config_free(&cfg);
    if (rc == 0)
        CHECK_EQ_STR(err, "(accepted)");
    else
        CHECK(strchr(err, '\n') == NULL && err[0] != '\0');
    return rc == 0 ? "(accepted)" : err;
}

/* {"a": value} for "a", {"a": {"b": value}} for "a.b". */
static const char *key_json(const char *dotted, const char *value)
{
    static char json[256];
    const char *dot = strchr(dotted, '.');
    if (dot != NULL)
        snprintf(json, sizeof(json), "{\"%.*s\": {\"%s\": %s}}", (int)(dot - dotted), dotted,
                 dot + 1, value);
    else
        snprintf(json, sizeof(json), "{\"%s\": %s}", dotted, value);
    return json;
}

static bool same_strings(const hd_strings *a, const hd_strings *b)
{
    if (a->count != b->count)
        return false;
    for (size_t i = 0; i < a->count; i++) {
        if (strcmp(a->items[i], b->items[i]) != 0)
            return false;
    }
    return true;
}

/* Field by field, because padding makes memcmp meaningless and strings are pointers. */
static bool same_config(const hd_config *a, const hd_config *b)
{
    return same_strings(&a->listen, &b->listen) && a->log_level == b->log_level &&
           a->heartbeat_s == b->heartbeat_s && a->shutdown_grace_s == b->shutdown_grace_s &&
           a->history.max_messages == b->history.max_messages &&
           a->history.max_bytes == b->history.max_bytes && a->history.ttl_s == b->history.ttl_s &&
           a->limits.max_connections == b->limits.max_connections &&
           a->limits.max_connections_per_ip == b->limits.max_connections_per_ip &&
           a->limits.max_message_bytes == b->limits.max_message_bytes &&
           a->limits.max_request_bytes == b->limits.max_request_bytes &&
           a->limits.max_topics_per_subscription == b->limits.max_topics_per_subscription &&
           a->limits.max_topics == b->limits.max_topics &&
           a->limits.max_outbound_bytes == b->limits.max_outbound_bytes &&
           a->limits.max_header_bytes == b->limits.max_header_bytes &&
           a->limits.max_headers == b->limits.max_headers &&
           a->limits.header_timeout_s == b->limits.header_timeout_s &&
           a->limits.request_timeout_s == b->limits.request_timeout_s &&
           a->limits.max_pending_body_bytes == b->limits.max_pending_body_bytes &&
           a->limits.close_timeout_s == b->limits.close_timeout_s &&
           a->limits.poll_timeout_max_s == b->limits.poll_timeout_max_s &&
           a->sse.retry_ms == b->sse.retry_ms &&
           same_strings(&a->cors.allow_origins, &b->cors.allow_origins) &&
           same_strings(&a->websocket.allow_origins, &b->websocket.allow_origins) &&
           a->websocket.compression == b->websocket.compression &&
           strcmp(a->websocket.echo_path, b->websocket.echo_path) == 0 &&
           a->ui.enabled == b->ui.enabled && strcmp(a->tls.cert, b->tls.cert) == 0 &&
           strcmp(a->tls.key, b->tls.key) == 0 &&
           strcmp(a->auth.jwt_secret, b->auth.jwt_secret) == 0 &&
           strcmp(a->auth.jwt_public_key, b->auth.jwt_public_key) == 0 &&
           a->auth.anonymous_subscribe == b->auth.anonymous_subscribe &&
           a->auth.anonymous_publish == b->auth.anonymous_publish &&
           strcmp(a->cluster.redis, b->cluster.redis) == 0 &&
           strcmp(a->cluster.prefix, b->cluster.prefix) == 0 &&
           a->cluster.timeout_ms == b->cluster.timeout_ms &&
           a->cluster.trust_redis_persistence == b->cluster.trust_redis_persistence &&
           a->cluster.max_held_messages == b->cluster.max_held_messages &&
           same_strings(&a->cluster.sentinels, &b->cluster.sentinels) &&
           strcmp(a->cluster.sentinel_master, b->cluster.sentinel_master) == 0 &&
           strcmp(a->cluster.sentinel_password, b->cluster.sentinel_password) == 0 &&
           strcmp(a->cluster.master_password, b->cluster.master_password) == 0 &&
           a->cluster.master_db == b->cluster.master_db;
}

/* Writes text to a new temporary file and returns its path (static storage). */
static const char *temp_file(const char *text)
{
    static char path[64];
    strcpy(path, "/tmp/herald-test-config-XXXXXX");
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    size_t len = strlen(text);
    CHECK_EQ_INT(write(fd, text, len), len);
    close(fd);
    return path;
}

/* --------------------------------------------------------------- tests */

static void test_defaults(void)
{
    hd_config cfg;
    hd_config_init(&cfg);
    CHECK_EQ_INT(cfg.listen.count, 1);
    CHECK_EQ_STR(cfg.listen.items[0], "127.0.0.1:8080");
    CHECK_EQ_INT(cfg.log_level, HD_LOG_INFO);
    CHECK_EQ_INT(cfg.heartbeat_s, 15);
    CHECK_EQ_INT(cfg.shutdown_grace_s, 5);
    CHECK_EQ_INT(cfg.history.max_messages, 1000);
    CHECK_EQ_INT(cfg.history.max_bytes, 4194304);
    CHECK_EQ_INT(cfg.history.ttl_s, 0);
    CHECK_EQ_INT(cfg.limits.max_connections, 100000);
    CHECK_EQ_INT(cfg.limits.max_connections_per_ip, 0);
    CHECK_EQ_INT(cfg.limits.max_message_bytes, 65536);
    CHECK_EQ_INT(cfg.limits.max_request_bytes, 1048576);
    CHECK_EQ_INT(cfg.limits.max_topics_per_subscription, 64);
    CHECK_EQ_INT(cfg.limits.max_topics, 1000000);
    CHECK_EQ_INT(cfg.limits.max_outbound_bytes, 1048576);
    CHECK_EQ_INT(cfg.limits.max_header_bytes, 16384);
    CHECK_EQ_INT(cfg.limits.max_headers, 100);
    CHECK_EQ_INT(cfg.limits.header_timeout_s, 10);
    CHECK_EQ_INT(cfg.limits.request_timeout_s, 30);
    CHECK(cfg.limits.max_pending_body_bytes == UINT64_C(64) << 20);
    CHECK_EQ_INT(cfg.limits.close_timeout_s, 30);
    CHECK_EQ_INT(cfg.limits.poll_timeout_max_s, 120);
    CHECK_EQ_INT(cfg.sse.retry_ms, 2000);
    CHECK_EQ_INT(cfg.cors.allow_origins.count, 1);
    CHECK_EQ_STR(cfg.cors.allow_origins.items[0], "*");
    CHECK_EQ_INT(cfg.websocket.allow_origins.count, 1);
    CHECK_EQ_STR(cfg.websocket.allow_origins.items[0], "*");
    CHECK(cfg.websocket.compression);
    CHECK_EQ_STR(cfg.websocket.echo_path, "");
    CHECK(cfg.ui.enabled);
    CHECK_EQ_STR(cfg.tls.cert, "");
    CHECK_EQ_STR(cfg.tls.key, "");
    CHECK_EQ_STR(cfg.auth.jwt_secret, "");
    CHECK_EQ_STR(cfg.auth.jwt_public_key, "");
    CHECK(cfg.auth.anonymous_subscribe);
    CHECK(cfg.auth.anonymous_publish);
    CHECK_EQ_STR(cfg.cluster.redis, "");
    CHECK_EQ_STR(cfg.cluster.prefix, "herald");
    CHECK_EQ_INT(cfg.cluster.timeout_ms, 2000);
    CHECK(!cfg.cluster.trust_redis_persistence);
    CHECK_EQ_INT(cfg.cluster.max_held_messages, 65536);
    CHECK_EQ_INT(cfg.cluster.sentinels.count, 0);
    CHECK_EQ_STR(cfg.cluster.sentinel_master, "");
    CHECK_EQ_STR(cfg.cluster.sentinel_password, "");
    CHECK_EQ_STR(cfg.cluster.master_password, "");
    CHECK_EQ_INT(cfg.cluster.master_db, 0);

    /* An empty document changes nothing. */
    hd_config other;
    hd_config_init(&other);
    char err[HD_CONFIG_ERROR_MAX];
    CHECK_EQ_INT(hd_config_apply_json(&other, "{}", 2, err, sizeof(err)), 0);
    CHECK(same_config(&cfg, &other));
    hd_config_free(&other);
    hd_config_free(&cfg);
}

static void test_every_key_set(void)
{
    static const char json[] =
        "{\"listen\": [\"0.0.0.0:80\", \"[::]:443\", \"localhost:0\"], \"log_level\": \"debug\","
        " \"heartbeat_s\": 3600, \"shutdown_grace_s\": 0,"
        " \"history\": {\"max_messages\": 10000000, \"max_bytes\": 1099511627776, \"ttl_s\": 60},"
        " \"limits\": {\"max_connections\": 1, \"max_connections_per_ip\": 7,"
        " \"max_message_bytes\": 16777216, \"max_request_bytes\": 268435456,"
        " \"max_topics_per_subscription\": 1, \"max_topics\": 0,"
        " \"max_outbound_bytes\": 17179869184, \"max_header_bytes\": 1024, \"max_headers\": 1,"
        " \"header_timeout_s\": 1, \"request_timeout_s\": 3600, \"close_timeout_s\": 3600,"
        " \"max_pending_body_bytes\": 1024, \"poll_timeout_max_s\": 3600},"
        " \"sse\": {\"retry_ms\": 0},"
        " \"cors\": {\"allow_origins\": [\"https://a.example\", \"https://b.example\"]},"
        " \"websocket\": {\"allow_origins\": [], \"compression\": false, \"echo_path\": \"/echo\"},"
        " \"ui\": {\"enabled\": false},"
        " \"tls\": {\"cert\": \"c.pem\", \"key\": \"k.pem\"},"
        " \"auth\": {\"jwt_secret\": \"s\", \"jwt_public_key\": \"p\","
        " \"anonymous_subscribe\": false, \"anonymous_publish\": false},"
        " \"cluster\": {\"redis\": \"redis://127.0.0.1:6379\", \"prefix\": \"app1\","
        " \"timeout_ms\": 500, \"trust_redis_persistence\": true}}";
    hd_config cfg;
    hd_config_init(&cfg);
    char err[HD_CONFIG_ERROR_MAX] = "";
    CHECK_EQ_INT(hd_config_apply_json(&cfg, json, strlen(json), err, sizeof(err)), 0);
    CHECK_EQ_STR(err, "");
    CHECK_EQ_INT(cfg.listen.count, 3);
    CHECK_EQ_STR(cfg.listen.items[0], "0.0.0.0:80");
    CHECK_EQ_STR(cfg.listen.items[1], "[::]:443");
    CHECK_EQ_STR(cfg.listen.items[2], "localhost:0");
    CHECK_EQ_INT(cfg.log_level, HD_LOG_DEBUG);
    CHECK_EQ_INT(cfg.heartbeat_s, 3600);
    CHECK_EQ_INT(cfg.shutdown_grace_s, 0);
    CHECK_EQ_INT(cfg.history.max_messages, 10000000);
    CHECK(cfg.history.max_bytes == UINT64_C(1) << 40);
    CHECK_EQ_INT(cfg.history.ttl_s, 60);
    CHECK_EQ_INT(cfg.limits.max_connections, 1);
    CHECK_EQ_INT(cfg.limits.max_connections_per_ip, 7);
    CHECK_EQ_INT(cfg.limits.max_message_bytes, 16777216);
    CHECK_EQ_INT(cfg.limits.max_request_bytes, 268435456);
    CHECK_EQ_INT(cfg.limits.max_topics_per_subscription, 1);
    CHECK_EQ_INT(cfg.limits.max_topics, 0);
    CHECK(cfg.limits.max_outbound_bytes == UINT64_C(1) << 34);
    CHECK_EQ_INT(cfg.limits.max_header_bytes, 1024);
    CHECK_EQ_INT(cfg.limits.max_headers, 1);
    CHECK_EQ_INT(cfg.limits.header_timeout_s, 1);
    CHECK_EQ_INT(cfg.limits.request_timeout_s, 3600);
    CHECK(cfg.limits.max_pending_body_bytes == 1024);
    CHECK_EQ_INT(cfg.limits.close_timeout_s, 3600);
    CHECK_EQ_INT(cfg.limits.poll_timeout_max_s, 3600);
    CHECK_EQ_INT(cfg.sse.retry_ms, 0);
    /* String arrays replace the default wholesale, never append to it. */
    CHECK_EQ_INT(cfg.cors.allow_origins.count, 2);
    CHECK_EQ_STR(cfg.cors.allow_origins.items[0], "https://a.example");
    CHECK_EQ_STR(cfg.cors.allow_origins.items[1], "https://b.example");
    CHECK_EQ_INT(cfg.websocket.allow_origins.count, 0);
    CHECK(!cfg.websocket.compression);
    CHECK_EQ_STR(cfg.websocket.echo_path, "/echo");
    CHECK(!cfg.ui.enabled);
    CHECK_EQ_STR(cfg.tls.cert, "c.pem");
    CHECK_EQ_STR(cfg.tls.key, "k.pem");
    CHECK_EQ_STR(cfg.auth.jwt_secret, "s");
    CHECK_EQ_STR(cfg.auth.jwt_public_key, "p");
    CHECK(!cfg.auth.anonymous_subscribe);
    CHECK(!cfg.auth.anonymous_publish);
    CHECK_EQ_STR(cfg.cluster.redis, "redis://127.0.0.1:6379");
    CHECK_EQ_STR(cfg.cluster.prefix, "app1");
    CHECK_EQ_INT(cfg.cluster.timeout_ms, 500);
    CHECK(cfg.cluster.trust_redis_persistence);

    /* A second document applies on top of the first. */
    static const char more[] = "{\"heartbeat_s\": 20, \"cors\": {\"allow_origins\": [\"*\"]}}";
    CHECK_EQ_INT(hd_config_apply_json(&cfg, more, strlen(more), err, sizeof(err)), 0);
    CHECK_EQ_INT(cfg.heartbeat_s, 20);
    CHECK_EQ_INT(cfg.cors.allow_origins.count, 1);
    CHECK_EQ_INT(cfg.limits.max_headers, 1);
    hd_config_free(&cfg);
}

static void test_wrong_types(void)
{
    CHECK_EQ_STR(apply_error("{\"heartbeat_s\": \"15\"}"), "heartbeat_s: expected an integer");
    CHECK_EQ_STR(apply_error("{\"heartbeat_s\": true}"), "heartbeat_s: expected an integer");
    CHECK_EQ_STR(apply_error("{\"heartbeat_s\": null}"), "heartbeat_s: expected an integer");
    CHECK_EQ_STR(apply_error("{\"heartbeat_s\": [15]}"), "heartbeat_s: expected an integer");
    CHECK_EQ_STR(apply_error("{\"heartbeat_s\": {}}"), "heartbeat_s: expected an integer");
    CHECK_EQ_STR(apply_error(key_json("limits.max_message_bytes", "\"64k\"")),
                 "limits.max_message_bytes: expected an integer");
    CHECK_EQ_STR(apply_error(key_json("history.max_bytes", "false")),
                 "history.max_bytes: expected an integer");
    CHECK_EQ_STR(apply_error(key_json("websocket.compression", "1")),
                 "websocket.compression: expected true or false");
    CHECK_EQ_STR(apply_error(key_json("auth.anonymous_publish", "\"true\"")),
                 "auth.anonymous_publish: expected true or false");
    CHECK_EQ_STR(apply_error(key_json("tls.cert", "1")), "tls.cert: expected a string");
    CHECK_EQ_STR(apply_error(key_json("cluster.redis", "null")),
                 "cluster.redis: expected a string");
    CHECK_EQ_STR(apply_error(key_json("cluster.prefix", "\"a{b}\"")),
                 "cluster.prefix: must be 1 to 64 printable ASCII characters without spaces, '{' "
                 "or '}' (got 'a{b}')");
    CHECK_EQ_STR(apply_error(key_json("cluster.timeout_ms", "50")),
                 "cluster.timeout_ms: must be an integer between 100 and 60000");
    CHECK_EQ_STR(apply_error(key_json("cluster.max_held_messages", "0")),
                 "cluster.max_held_messages: must be an integer between 1 and 16777216");
    CHECK_EQ_STR(apply_error(key_json("cluster.sentinels", "\"127.0.0.1:26379\"")),
                 "cluster.sentinels: expected an array of strings");
    CHECK_EQ_STR(apply_error(key_json("cluster.sentinels", "[26379]")),
                 "cluster.sentinels[0]: expected a string");
    CHECK_EQ_STR(apply_error(key_json("cluster.master_db", "-1")),
                 "cluster.master_db: must be an integer between 0 and 2147483647");
    CHECK_EQ_STR(apply_error(key_json("auth.jwt_secret", "[\"x\"]")),
                 "auth.jwt_secret: expected a string");
    CHECK_EQ_STR(apply_error("{\"listen\": \"127.0.0.1:8080\"}"),
                 "listen: expected an array of strings");
    CHECK_EQ_STR(apply_error("{\"listen\": [\"127.0.0.1:8080\", 8081]}"),
                 "listen[1]: expected a string");
    CHECK_EQ_STR(apply_error(key_json("cors.allow_origins", "{}")),
                 "cors.allow_origins: expected an array of strings");
    CHECK_EQ_STR(apply_error(key_json("websocket.allow_origins", "[null]")),
                 "websocket.allow_origins[0]: expected a string");
    CHECK_EQ_STR(apply_error("{\"log_level\": 1}"), "log_level: expected a string");
    CHECK_EQ_STR(apply_error("{\"log_level\": \"verbose\"}"),
                 "log_level: must be one of debug, info, warn, error");
    CHECK_EQ_STR(apply_error("{\"log_level\": \"INFO\"}"),
                 "log_level: must be one of debug, info, warn, error");
    CHECK_EQ_STR(apply_error("{\"limits\": 5}"), "limits: expected an object");
    CHECK_EQ_STR(apply_error("{\"tls\": [\"a\", \"b\"]}"), "tls: expected an object");
    CHECK_EQ_STR(apply_error("{\"history\": null}"), "history: expected an object");

    static const char *const levels[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++) {
        hd_config cfg;
        hd_config_init(&cfg);
        char json[64], err[HD_CONFIG_ERROR_MAX];
        snprintf(json, sizeof(json), "{\"log_level\": \"%s\"}", levels[i]);
        CHECK_EQ_INT(hd_config_apply_json(&cfg, json, strlen(json), err, sizeof(err)), 0);
        CHECK_EQ_INT(cfg.log_level, i);
        hd_config_free(&cfg);
    }
}

static void test_unknown_keys(void)
{
    CHECK_EQ_STR(apply_error("{\"heartbeat\": 15}"), "unknown key 'heartbeat'");
    CHECK_EQ_STR(apply_error("{\"limits\": {\"max_fooo\": 1}}"), "unknown key 'limits.max_fooo'");
    CHECK_EQ_STR(apply_error("{\"limits\": {\"max_headers\": 5, \"x\": {\"y\": 1}}}"),
                 "unknown key 'limits.x'");
    CHECK_EQ_STR(apply_error("{\"history2\": {}}"), "unknown key 'history2'");
    CHECK_EQ_STR(apply_error("{\"max_headers\": 5}"), "unknown key 'max_headers'");
    CHECK_EQ_STR(apply_error("{\"Heartbeat_s\": 5}"), "unknown key 'Heartbeat_s'");
    CHECK_EQ_STR(apply_error("{\"\": 5}"), "unknown key ''");
    /* A section's keys only exist inside it, and a key is never a section. */
    CHECK_EQ_STR(apply_error("{\"tls\": {\"limits\": {}}}"), "unknown key 'tls.limits'");
    CHECK_EQ_STR(apply_error("{\"heartbeat_s\": 15, \"listen\": [\"127.0.0.1:1\"], \"x\": 1}"),
                 "unknown key 'x'");
    /* A dotted key must not pass for the nested one, nor a prefix of a name for a section. */
    CHECK_EQ_STR(apply_error("{\"limits.max_headers\": 5}"), "unknown key 'limits.max_headers'");
    CHECK_EQ_STR(apply_error("{\"lim\": {}}"), "unknown key 'lim'");
    CHECK_EQ_STR(apply_error("{\"limits\": {\"max\": {}}}"), "unknown key 'limits.max'");
    /* Keys are quoted on one line whatever they contain. */
    CHECK_EQ_STR(apply_error("{\"a\\nb\": 1}"), "unknown key 'a?b'");
    /* A single slash is not a comment. */
    CHECK_EQ_STR(apply_error("{\"/heartbeat_s\": \"x\"}"), "unknown key '/heartbeat_s'");
}

static void test_duplicate_keys(void)
{
    CHECK_EQ_STR(apply_error("{\"heartbeat_s\": 1, \"heartbeat_s\": 2}"),
                 "duplicate key 'heartbeat_s'");
    CHECK_EQ_STR(
        apply_error("{\"limits\": {\"max_headers\": 1}, \"limits\": {\"max_headers\": 2}}"),
        "duplicate key 'limits.max_headers'");
    /* Comment keys may repeat. */
    CHECK_EQ_STR(apply_error("{\"//\": \"a\", \"//\": \"b\"}"), "(accepted)");
}

typedef struct int_key {
    const char *name;
    uint64_t min, max;
} int_key;

static void test_integer_ranges(void)
{
    static const int_key keys[] = {
        {"heartbeat_s", 1, 3600},
        {"shutdown_grace_s", 0, 300},
        {"history.max_messages", 1, 10000000},
        {"history.max_bytes", 1, UINT64_C(1) << 40},
        {"history.ttl_s", 0, 31536000},
        {"limits.max_connections", 1, 10000000},
        {"limits.max_connections_per_ip", 0, 10000000},
        {"limits.max_message_bytes", 1, 16777216},
        {"limits.max_request_bytes", 1, 268435456},
        {"limits.max_topics_per_subscription", 1, 10000},
        {"limits.max_topics", 0, UINT32_MAX},
        {"limits.max_outbound_bytes", 1024, UINT64_C(1) << 34},
        {"limits.max_header_bytes", 1024, 1048576},
        {"limits.max_headers", 1, 10000},
        {"limits.header_timeout_s", 1, 3600},
        {"limits.close_timeout_s", 1, 3600},
        {"limits.poll_timeout_max_s", 1, 3600},
        {"sse.retry_ms", 0, 3600000},
    };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        const int_key *k = &keys[i];
        char expected[160], value[32];
        snprintf(expected, sizeof(expected), "%s: must be an integer between %llu and %llu",
                 k->name, (unsigned long long)k->min, (unsigned long long)k->max);
        snprintf(value, sizeof(value), "%llu", (unsigned long long)k->min);
        CHECK_EQ_STR(apply_error(key_json(k->name, value)), "(accepted)");
        snprintf(value, sizeof(value), "%llu", (unsigned long long)k->max);
        CHECK_EQ_STR(apply_error(key_json(k->name, value)), "(accepted)");
        snprintf(value, sizeof(value), "%llu", (unsigned long long)k->max + 1);
        CHECK_EQ_STR(apply_error(key_json(k->name, value)), expected);
        snprintf(value, sizeof(value), "%lld", (long long)k->min - 1);
        CHECK_EQ_STR(apply_error(key_json(k->name, value)), expected);
        CHECK_EQ_STR(apply_error(key_json(k->name, "1.5")), expected);
        CHECK_EQ_STR(apply_error(key_json(k->name, "1e300")), expected);
        CHECK_EQ_STR(apply_error(key_json(k->name, "-1e300")), expected);
    }

    /* The value is what counts, not its spelling: 1e3 and 20.0 are integers. */
    hd_config cfg;
    hd_config_init(&cfg);
    char err[HD_CONFIG_ERROR_MAX];
    const char *json = "{\"heartbeat_s\": 20.0, \"limits\": {\"max_headers\": 1e3}}";
    CHECK_EQ_INT(hd_config_apply_json(&cfg, json, strlen(json), err, sizeof(err)), 0);
    CHECK_EQ_INT(cfg.heartbeat_s, 20);
    CHECK_EQ_INT(cfg.limits.max_headers, 1000);
    /* Exactness near the largest bound, where a double still holds every integer. */
    json = "{\"history\": {\"max_bytes\": 1099511627775}}";
    CHECK_EQ_INT(hd_config_apply_json(&cfg, json, strlen(json), err, sizeof(err)), 0);
    CHECK(cfg.history.max_bytes == (UINT64_C(1) << 40) - 1);
    hd_config_free(&cfg);
}

static void test_invalid_json(void)
{
    CHECK_EQ_STR(apply_error(""), "invalid JSON near line 1, column 1");
    CHECK_EQ_STR(apply_error("{"), "invalid JSON near line 1, column 2");
    CHECK_EQ_STR(apply_error("{\n  \"heartbeat_s\": 15,\n}"), "invalid JSON near line 3, column 2");
    CHECK_EQ_STR(apply_error("{\n  \"heartbeat_s\": 15\n  \"log_level\": \"info\"\n}"),
                 "invalid JSON near line 3, column 3");
    CHECK_EQ_STR(apply_error("{\"heartbeat_s\": 15x}"), "invalid JSON near line 1, column 19");
    CHECK_EQ_STR(apply_error("{} {}"), "invalid JSON near line 1, column 4");
    CHECK_EQ_STR(apply_error("{\"a\": 1} // comment"), "invalid JSON near line 1, column 10");
    /* JSON has no comments of its own. */
    CHECK(strncmp(apply_error("{\n/* c */ \"heartbeat_s\": 1}"), "invalid JSON near line 2", 24) ==
          0);
    CHECK_EQ_STR(apply_error("{\"tls\": {\"cert\": \"caf\xc3\"}}"),
                 "invalid JSON near line 1, column 23: not UTF-8");
    CHECK_EQ_STR(apply_error("{\"x\": \"\xed\xa0\x80\"}"),
                 "invalid JSON near line 1, column 9: not UTF-8");
    /* Trailing whitespace is fine. */
    CHECK_EQ_STR(apply_error("\n{}\n\n"), "(accepted)");

    /* A UTF-8 byte order mark at the start is skipped on purpose (Windows editors write it)... */
    CHECK_EQ_STR(apply_error("\xef\xbb\xbf{\"heartbeat_s\": 15}"), "(accepted)");
    /* ...and error columns count from the first character after it. */
    CHECK_EQ_STR(apply_error("{,}"), "invalid JSON near line 1, column 3");
    CHECK_EQ_STR(apply_error("\xef\xbb\xbf{,}"), "invalid JSON near line 1, column 3");
    CHECK_EQ_STR(apply_error("\xef\xbb\xbf"), "invalid JSON near line 1, column 1");
    /* Anywhere else it is a character like any other, which JSON does not allow there. */
    CHECK_EQ_STR(apply_error(" \xef\xbb\xbf{}"), "invalid JSON near line 1, column 2");

    /* An embedded NUL must not hide what follows it; the length is what counts. */
    static const char with_nul[] = "{}\0{\"x\": 1}";
    hd_config cfg;
    hd_config_init(&cfg);
    char err[HD_CONFIG_ERROR_MAX];
    CHECK_EQ_INT(hd_config_apply_json(&cfg, with_nul, sizeof(with_nul) - 1, err, sizeof(err)), -1);
    CHECK_EQ_STR(err, "invalid JSON near line 1, column 3: NUL byte");
    /* And the document need not be NUL-terminated. */
    static const char unterminated[] = "{\"heartbeat_s\": 42}XXXX";
    CHECK_EQ_INT(hd_config_apply_json(&cfg, unterminated, 19, err, sizeof(err)), 0);
    CHECK_EQ_INT(cfg.heartbeat_s, 42);
    hd_config_free(&cfg);
}

static void test_top_level_not_object(void)
{
    static const char *const docs[] = {"[]",  "[{\"heartbeat_s\": 1}]", "1", "\"x\"", "null",
                                       "true"};
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++)
        CHECK_EQ_STR(apply_error(docs[i]), "the top level must be a JSON object");
}

static void test_comment_keys(void)
{
    const char *json = "{\"//\": \"about this file\", \"//heartbeat_s\": \"seconds\","
                       " \"heartbeat_s\": 30, \"//nonsense\": {\"deep\": [1, 2]},"
                       " \"limits\": {\"//max_headers\": 5, \"max_headers\": 7, \"//\": null},"
                       " \"//limits\": {\"max_fooo\": 1}}";
    hd_config cfg;
    hd_config_init(&cfg);
    char err[HD_CONFIG_ERROR_MAX];
    CHECK_EQ_INT(hd_config_apply_json(&cfg, json, strlen(json), err, sizeof(err)), 0);
    CHECK_EQ_INT(cfg.heartbeat_s, 30);
    CHECK_EQ_INT(cfg.limits.max_headers, 7);
    hd_config_free(&cfg);
}

static void test_listen(void)
{
    static const char *const good[] = {"127.0.0.1:8080", "0.0.0.0:0",        "[::1]:0",
                                       "[::]:65535",     "localhost:80",     "[fe80::1]:443",
                                       "10.0.0.1:00080", "255.255.255.255:1"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        char json[128];
        snprintf(json, sizeof(json), "{\"listen\": [\"%s\"]}", good[i]);
        CHECK_EQ_STR(apply_error(json), "(accepted)");
    }
    static const char *const bad[] = {
        "",
        "127.0.0.1",
        "127.0.0.1:",
        ":80",
        "127.0.0.1:65536",
        "127.0.0.1:8o",
        "127.0.0.1:-1",
        "127.0.0.1:+80",
        "127.0.0.1: 80",
        "127.0.0.1:123456",
        "example.com:80",
        "[::1]",
        "[::1]80",
        "::1:80",
        "[127.0.0.1]:80",
        "256.0.0.1:80",
        "[]:80",
        "[::1:80",
        "LOCALHOST:80",
        "localhost:80:80",
        "1.2.3:80",
        "[::g]:80",
        "0x7f.0.0.1:80",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char json[128], expected[256];
        snprintf(json, sizeof(json), "{\"listen\": [\"127.0.0.1:1\", \"%s\"]}", bad[i]);
        snprintf(expected, sizeof(expected),
                 "listen[1]: must be IPV4:PORT, [IPV6]:PORT or localhost:PORT, port 0-65535 "
                 "(got '%s')",
                 bad[i]);
        CHECK_EQ_STR(apply_error(json), expected);
    }
    CHECK_EQ_STR(apply_error("{\"listen\": []}"), "listen: must not be empty");

    /* The same address twice, however spelled, is refused: naming the key and both entries. */
    CHECK_EQ_STR(apply_error("{\"listen\": [\"127.0.0.1:80\", \"[::1]:80\", \"127.0.0.1:80\"]}"),
                 "listen[2]: duplicate of listen[0] (got '127.0.0.1:80', the same as "
                 "'127.0.0.1:80')");
    CHECK_EQ_STR(apply_error("{\"listen\": [\"localhost:8080\", \"127.0.0.1:08080\"]}"),
                 "listen[1]: duplicate of listen[0] (got '127.0.0.1:08080', the same as "
                 "'localhost:8080')");
    CHECK_EQ_STR(apply_error("{\"listen\": [\"[::]:443\", \"[0:0::0]:443\"]}"),
                 "listen[1]: duplicate of listen[0] (got '[0:0::0]:443', the same as '[::]:443')");
    /* The first repeat in list order is named, whatever the sort found first. */
    CHECK_EQ_STR(apply_error("{\"listen\": [\"10.0.0.2:1\", \"10.0.0.1:1\", \"10.0.0.2:1\", "
                             "\"10.0.0.1:1\"]}"),
                 "listen[2]: duplicate of listen[0] (got '10.0.0.2:1', the same as '10.0.0.2:1')");
    /* Other ports, other families, other hosts, and port 0 (a new port each time) are fine. */
    CHECK_EQ_STR(apply_error("{\"listen\": [\"127.0.0.1:80\", \"127.0.0.1:81\", \"[::1]:80\", "
                             "\"0.0.0.0:80\", \"127.0.0.1:0\", \"localhost:0\", \"[::]:0\", "
                             "\"[::]:0\"]}"),
                 "(accepted)");

    /* A rejected list leaves the previous one whole. */
    hd_config cfg;
    hd_config_init(&cfg);
    char err[HD_CONFIG_ERROR_MAX];
    const char *json = "{\"listen\": [\"127.0.0.1:1\", \"nope\"]}";
    CHECK_EQ_INT(hd_config_apply_json(&cfg, json, strlen(json), err, sizeof(err)), -1);
    CHECK_EQ_INT(cfg.listen.count, 1);
    CHECK_EQ_STR(cfg.listen.items[0], "127.0.0.1:8080");
    hd_config_free(&cfg);
}

static void test_parse_address(void)
{
    char host[64];
    int port = -1;
    CHECK_EQ_INT(hd_config_parse_address("127.0.0.1:8080", host, sizeof(host), &port), 0);
    CHECK_EQ_STR(host, "127.0.0.1");
    CHECK_EQ_INT(port, 8080);
    CHECK_EQ_INT(hd_config_parse_address("[::1]:0", host, sizeof(host), &port), 0);
    CHECK_EQ_STR(host, "::1");
    CHECK_EQ_INT(port, 0);
    CHECK_EQ_INT(hd_config_parse_address("localhost:80", host, sizeof(host), &port), 0);
    CHECK_EQ_STR(host, "localhost");
    CHECK_EQ_INT(port, 80);
    CHECK_EQ_INT(hd_config_parse_address("h:65535", host, sizeof(host), &port), 0);
    CHECK_EQ_INT(port, 65535);

    static const char *const bad[] = {"127.0.0.1", "127.0.0.1:",
                                      ":80",       "127.0.0.1:65536",
                                      "h:8o",      "h:-1",
                                      "h:+1",      "h: 1",
                                      "[::1]",     "[::1]:",
                                      "[]:80",     "::1:80",
                                      "[::1]x:80", "h:99999999999999999999",
                                      ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        port = -1;
        CHECK_EQ_INT(hd_config_parse_address(bad[i], host, sizeof(host), &port), -1);
        CHECK_EQ_INT(port, -1);
    }
    /* The host must fit with its terminator. */
    char small[10];
    CHECK_EQ_INT(hd_config_parse_address("127.0.0.1:1", small, sizeof(small), &port), 0);
    CHECK_EQ_INT(hd_config_parse_address("127.0.0.10:1", small, sizeof(small), &port), -1);
}

static void test_string_rules(void)
{
    CHECK_EQ_STR(apply_error(key_json("websocket.echo_path", "\"/echo\"")), "(accepted)");
    CHECK_EQ_STR(apply_error(key_json("websocket.echo_path", "\"echo\"")),
                 "websocket.echo_path: must be empty or start with '/' (got 'echo')");
    /* A path herald answers itself would hide the route, or the echo endpoint. */
    static const char *const taken[] = {"/", "/console.js", "/herald.js", "/ws", "/poll"};
    for (size_t i = 0; i < sizeof(taken) / sizeof(taken[0]); i++) {
        char json[64], want[320];
        snprintf(json, sizeof(json), "\"%s\"", taken[i]);
        snprintf(want, sizeof(want),
                 "websocket.echo_path: must not be a path herald answers itself (/, /ws, /events, "
                 "/poll, /publish, /topics, /healthz, /metrics, /herald.js, /console.js...) (got "
                 "'%s')",
                 taken[i]);
        CHECK_EQ_STR(apply_error(key_json("websocket.echo_path", json)), want);
    }
    CHECK_EQ_STR(apply_error(key_json("websocket.echo_path", "\"/topics/x\"")),
                 "websocket.echo_path: must not start with /topics/ (herald's topic routes) (got "
                 "'/topics/x')");
    CHECK_EQ_STR(apply_error(key_json("websocket.echo_path", "\"/topicsx\"")), "(accepted)");
    CHECK_EQ_STR(apply_error(key_json("cluster.redis", "\"redis://r:6379\"")), "(accepted)");
    CHECK_EQ_STR(apply_error(key_json("cluster.redis", "\"r:6379\"")),
                 "cluster.redis: must be empty or start with 'redis://' (got 'r:6379')");
    CHECK_EQ_STR(apply_error(key_json("cluster.redis", "\"redis:\\n//x\"")),
                 "cluster.redis: must be empty or start with 'redis://' (got 'redis:?//x')");

    CHECK_EQ_STR(apply_error("{\"tls\": {\"cert\": \"c.pem\"}}"),
                 "tls.cert and tls.key must be set together");
    CHECK_EQ_STR(apply_error("{\"tls\": {\"key\": \"k.pem\"}}"),
                 "tls.cert and tls.key must be set together");
    CHECK_EQ_STR(apply_error("{\"tls\": {\"cert\": \"c.pem\", \"key\": \"\"}}"),
                 "tls.cert and tls.key must be set together");
    CHECK_EQ_STR(apply_error("{\"tls\": {\"cert\": \"c.pem\", \"key\": \"k.pem\"}}"), "(accepted)");
}

static void test_sentinel_keys(void)
{
    CHECK_EQ_STR(apply_error("{\"cluster\": {\"sentinels\": [\"10.0.0.1:26379\", \"[::1]:26380\","
                             " \"sentinel-2.internal:26381\"], \"sentinel_master\": \"mymaster\","
                             " \"sentinel_password\": \"s\", \"master_password\": \"m\","
                             " \"master_db\": 3}}"),
                 "(accepted)");
    CHECK_EQ_STR(apply_error("{\"cluster\": {\"sentinels\": [], \"redis\": \"redis://r\"}}"),
                 "(accepted)");
    CHECK_EQ_STR(apply_error(key_json("cluster.sentinels", "[\"127.0.0.1:26379\"]")),
                 "cluster.sentinel_master: required with cluster.sentinels (the name the "
                 "sentinels monitor the master by)");
    CHECK_EQ_STR(apply_error("{\"cluster\": {\"sentinels\": [\"127.0.0.1:26379\"],"
                             " \"sentinel_master\": \"m\", \"redis\": \"redis://r\"}}"),
                 "cluster.redis and cluster.sentinels: set one or the other, not both");
    static const char *const alone[] = {"sentinel_master", "sentinel_password", "master_password"};
    for (size_t i = 0; i < 3; i++) {
        char json[128], expected[192];
        snprintf(json, sizeof(json), "{\"cluster\": {\"redis\": \"redis://r\", \"%s\": \"x\"}}",
                 alone[i]);
        snprintf(expected, sizeof(expected),
                 "cluster.%s: only with cluster.sentinels (with cluster.redis, the password and db "
                 "go in its URL)",
                 alone[i]);
        CHECK_EQ_STR(apply_error(json), expected);
    }
    CHECK_EQ_STR(apply_error(key_json("cluster.master_db", "1")),
                 "cluster.master_db: only with cluster.sentinels (with cluster.redis, the password "
                 "and db go in its URL)");

    static const char rule[] = "must be HOST:PORT or [IPV6]:PORT, port 1-65535";
    static const char *const bad[] = {"127.0.0.1", "127.0.0.1:0", ":26379",   "::1:26379",
                                      "h:65536",   "h:-1",        "h:26379x", ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char json[128], expected[192];
        snprintf(json, sizeof(json),
                 "{\"cluster\": {\"sentinels\": [\"h:1\", \"%s\"], \"sentinel_master\": \"m\"}}",
                 bad[i]);
        snprintf(expected, sizeof(expected), "cluster.sentinels[1]: %s (got '%s')", rule, bad[i]);
        CHECK_EQ_STR(apply_error(json), expected);
    }
    CHECK_EQ_STR(apply_error(key_json("cluster.sentinel_master", "\"my master\"")),
                 "cluster.sentinel_master: must be at most 128 printable ASCII characters without "
                 "spaces (got 'my master')");
    char json[1200];
    snprintf(json, sizeof(json),
             "{\"cluster\": {\"sentinels\": [\"h:1\"], \"sentinel_master\": \"m\","
             " \"master_password\": \"%0513d\"}}",
             0);
    CHECK_EQ_STR(apply_error(json), "cluster.master_password: must be at most 512 bytes");
    snprintf(json, sizeof(json),
             "{\"cluster\": {\"sentinels\": [\"h:1\"], \"sentinel_master\": \"m\","
             " \"sentinel_password\": \"%0513d\"}}",
             0);
    CHECK_EQ_STR(apply_error(json), "cluster.sentinel_password: must be at most 512 bytes");
}

static void test_free(void)
{
    /* A failed document may leave cfg partly updated; freeing it must still be exact. */
    hd_config cfg;
    hd_config_init(&cfg);
    char err[HD_CONFIG_ERROR_MAX];
    const char *json = "{\"tls\": {\"cert\": \"c\"}, \"cluster\": {\"redis\": \"redis://x\"},"
                       " \"listen\": [\"127.0.0.1:1\", \"[::1]:2\"], \"heartbeat_s\": 0}";
    CHECK_EQ_INT(hd_config_apply_json(&cfg, json, strlen(json), err, sizeof(err)), -1);
    CHECK_EQ_STR(err, "heartbeat_s: must be an integer between 1 and 3600");
    hd_config_free(&cfg);
    CHECK(cfg.listen.items == NULL && cfg.listen.count == 0);
    CHECK(cfg.tls.cert == NULL && cfg.cluster.redis == NULL);
    hd_config_free(&cfg);

    hd_config zeroed;
    memset(&zeroed, 0, sizeof(zeroed));
    hd_config_free(&zeroed);
}

static void test_small_error_buffer(void)
{
    hd_config cfg;
    hd_config_init(&cfg);
    char err[8];
    const char *json = "{\"limits\": {\"max_fooo\": 1}}";
    CHECK_EQ_INT(hd_config_apply_json(&cfg, json, strlen(json), err, sizeof(err)), -1);
    CHECK_EQ_STR(err, "unknown");
    hd_config_free(&cfg);
}

static void test_load_file(void)
{
    hd_config cfg;
    hd_config_init(&cfg);
    char err[HD_CONFIG_ERROR_MAX];

    const char *path = temp_file("{\"heartbeat_s\": 7}\n");
    CHECK_EQ_INT(hd_config_load_file(&cfg, path, err, sizeof(err)), 0);
    CHECK_EQ_INT(cfg.heartbeat_s, 7);
    unlink(path);

    char expected[HD_CONFIG_ERROR_MAX];
    path = temp_file("{\n  \"limits\": {\"max_fooo\": 1}\n}\n");
    CHECK_EQ_INT(hd_config_load_file(&cfg, path, err, sizeof(err)), -1);
    snprintf(expected, sizeof(expected), "%s: unknown key 'limits.max_fooo'", path);
    CHECK_EQ_STR(err, expected);
    unlink(path);

    path = temp_file("{\n  \"heartbeat_s\": 15,\n}\n");
    CHECK_EQ_INT(hd_config_load_file(&cfg, path, err, sizeof(err)), -1);
    snprintf(expected, sizeof(expected), "%s: invalid JSON near line 3, column 2", path);
    CHECK_EQ_STR(err, expected);
    unlink(path);

    path = temp_file("");
    CHECK_EQ_INT(hd_config_load_file(&cfg, path, err, sizeof(err)), -1);
    snprintf(expected, sizeof(expected), "%s: invalid JSON near line 1, column 1", path);
    CHECK_EQ_STR(err, expected);
    unlink(path);

    CHECK_EQ_INT(hd_config_load_file(&cfg, "/nonexistent/herald.json", err, sizeof(err)), -1);
    CHECK_EQ_STR(err,
                 "cannot read config file '/nonexistent/herald.json': No such file or directory");

    char dir[] = "/tmp/herald-test-dir-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    CHECK_EQ_INT(hd_config_load_file(&cfg, dir, err, sizeof(err)), -1);
    snprintf(expected, sizeof(expected), "cannot read config file '%s': Is a directory", dir);
    CHECK_EQ_STR(err, expected);
    rmdir(dir);

    /* A byte order mark, as Windows editors write it. */
    path = temp_file("\xef\xbb\xbf{\"heartbeat_s\": 8}\r\n");
    CHECK_EQ_INT(hd_config_load_file(&cfg, path, err, sizeof(err)), 0);
    CHECK_EQ_INT(cfg.heartbeat_s, 8);
    unlink(path);

    /* A file larger than the read buffer's first size, padded with whitespace. */
    size_t big = 1 << 20;
    char *text = malloc(big + 32);
    memset(text, ' ', big);
    strcpy(text + big, "{\"heartbeat_s\": 9}");
    path = temp_file(text);
    free(text);
    CHECK_EQ_INT(hd_config_load_file(&cfg, path, err, sizeof(err)), 0);
    CHECK_EQ_INT(cfg.heartbeat_s, 9);
    unlink(path);

    hd_config_free(&cfg);
}

/*
 * config.example.json must load, leave every default as it is, list every
 * key, and precede each with a "//key" note. The unit tests run from the
 * build directory, so CMake passes the source directory in HERALD_SOURCE_DIR.
 */
static void test_example_file(void)
{
    char path[4096];
    const char *dir = getenv("HERALD_SOURCE_DIR");
    snprintf(path, sizeof(path), "%s%sconfig.example.json", dir ? dir : "", dir ? "/" : "");
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    if (f == NULL) {
        fprintf(stderr, "  cannot open %s; set HERALD_SOURCE_DIR\n", path);
        return;
    }
    static char text[1 << 16];
    size_t len = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[len] = '\0';

    hd_config example, defaults;
    hd_config_init(&example);
    hd_config_init(&defaults);
    char err[HD_CONFIG_ERROR_MAX] = "";
    CHECK_EQ_INT(hd_config_load_file(&example, path, err, sizeof(err)), 0);
    CHECK_EQ_STR(err, "");
    CHECK(same_config(&example, &defaults));
    hd_config_free(&example);
    hd_config_free(&defaults);

    cJSON *root = cJSON_Parse(text);
    CHECK(root != NULL);
    for (size_t i = 0; root != NULL && i < sizeof(all_keys) / sizeof(all_keys[0]); i++) {
        char section[64] = "", note[80];
        const char *leaf = all_keys[i];
        const char *dot = strchr(leaf, '.');
        if (dot != NULL) {
            snprintf(section, sizeof(section), "%.*s", (int)(dot - leaf), leaf);
            leaf = dot + 1;
        }
        const cJSON *object = dot ? cJSON_GetObjectItemCaseSensitive(root, section) : root;
        snprintf(note, sizeof(note), "//%s", leaf);
        const cJSON *value = cJSON_GetObjectItemCaseSensitive(object, leaf);
        const cJSON *comment = cJSON_GetObjectItemCaseSensitive(object, note);
        bool documented = value != NULL && cJSON_IsString(comment) &&
                          strlen(comment->valuestring) > 10 && comment->next == value;
        CHECK(documented);
        if (!documented)
            fprintf(stderr, "  %s is missing or not preceded by its \"//\" note\n", all_keys[i]);
    }
    cJSON_Delete(root);
}

/* A reload keeps what only a restart changes, and names it; every other key is the new file's. */
static void test_keep_restart_keys(void)
{
    hd_config running, next;
    hd_config_init(&running);
    hd_config_init(&next);
    char err[HD_CONFIG_ERROR_MAX], names[256];
    CHECK_EQ_INT(hd_config_keep_restart_keys(&next, &running, names, sizeof(names)), 0);
    CHECK_EQ_STR(names, "");

    const char *json = "{\"listen\": [\"127.0.0.1:1\", \"127.0.0.1:2\"], \"workers\": 3,"
                       " \"history\": {\"max_bytes\": 5}, \"cluster\": {\"redis\": \"redis://x\"},"
                       " \"limits\": {\"max_message_bytes\": 7}, \"log_level\": \"debug\","
                       " \"tls\": {\"cert\": \"c.pem\", \"key\": \"k.pem\"}}";
    CHECK_EQ_INT(hd_config_apply_json(&next, json, strlen(json), err, sizeof(err)), 0);
    CHECK_EQ_INT(hd_config_keep_restart_keys(&next, &running, names, sizeof(names)), 6);
    CHECK_EQ_STR(names, "listen, workers, history.max_bytes, cluster.redis, tls.cert, tls.key");
    CHECK_EQ_INT(next.listen.count, 1);
    CHECK_EQ_STR(next.listen.items[0], "127.0.0.1:8080");
    CHECK_EQ_INT(next.workers, 0);
    CHECK_EQ_INT(next.history.max_bytes, 4194304);
    CHECK_EQ_STR(next.cluster.redis, "");
    CHECK_EQ_STR(next.tls.cert, "");
    CHECK_EQ_STR(next.tls.key, "");
    CHECK_EQ_INT(next.limits.max_message_bytes, 7);
    CHECK_EQ_INT(next.log_level, HD_LOG_DEBUG);
    hd_config_free(&next);

    /* A new certificate while TLS stays on is no restart. */
    const char *tls_on = "{\"tls\": {\"cert\": \"a.pem\", \"key\": \"b.pem\"}}";
    const char *tls_new = "{\"tls\": {\"cert\": \"c.pem\", \"key\": \"d.pem\"}}";
    CHECK_EQ_INT(hd_config_apply_json(&running, tls_on, strlen(tls_on), err, sizeof(err)), 0);
    hd_config_init(&next);
    CHECK_EQ_INT(hd_config_apply_json(&next, tls_new, strlen(tls_new), err, sizeof(err)), 0);
    CHECK_EQ_INT(hd_config_keep_restart_keys(&next, &running, names, sizeof(names)), 0);
    CHECK_EQ_STR(next.tls.cert, "c.pem");
    hd_config_free(&next);
    hd_config_free(&running);
}

static void test_set_listen(void)
{
    hd_config cfg;
    hd_config_init(&cfg);
    char err[HD_CONFIG_ERROR_MAX];
    const char *json = "{\"listen\": [\"127.0.0.1:1\", \"127.0.0.1:2\"]}";
    CHECK_EQ_INT(hd_config_apply_json(&cfg, json, strlen(json), err, sizeof(err)), 0);
    CHECK_EQ_INT(hd_config_set_listen(&cfg, "[::1]:9000", err, sizeof(err)), 0);
    CHECK_EQ_INT(cfg.listen.count, 1);
    CHECK_EQ_STR(cfg.listen.items[0], "[::1]:9000");

    CHECK_EQ_INT(hd_config_set_listen(&cfg, "example.com:80", err, sizeof(err)), -1);
    CHECK_EQ_STR(err, "listen: must be IPV4:PORT, [IPV6]:PORT or localhost:PORT, port 0-65535 "
                      "(got 'example.com:80')");
    CHECK_EQ_INT(hd_config_set_listen(&cfg, "127.0.0.1:70000", err, sizeof(err)), -1);
    CHECK_EQ_INT(cfg.listen.count, 1);
    CHECK_EQ_STR(cfg.listen.items[0], "[::1]:9000");
    hd_config_free(&cfg);
}

/* HERALD_<KEY> variables: converted and checked as the file's values, errors naming them. */
static void test_environment(void)
{
    hd_config cfg;
    hd_config_init(&cfg);
    char err[HD_CONFIG_ERROR_MAX];
    setenv("HERALD_LIMITS_MAX_CONNECTIONS", "77", 1);
    setenv("HERALD_LISTEN", " 127.0.0.1:1 ,[::1]:2", 1);
    setenv("HERALD_WEBSOCKET_COMPRESSION", "false", 1);
    setenv("HERALD_CORS_ALLOW_ORIGINS", "[\"https://a.example\", \"https://b,example\"]", 1);
    setenv("HERALD_NOT_A_KEY", "whatever", 1);
    CHECK_EQ_INT(hd_config_apply_env(&cfg, err, sizeof(err)), 0);
    CHECK_EQ_INT(cfg.limits.max_connections, 77);
    CHECK_EQ_INT(cfg.listen.count, 2);
    CHECK_EQ_STR(cfg.listen.items[0], "127.0.0.1:1");
    CHECK_EQ_STR(cfg.listen.items[1], "[::1]:2");
    CHECK(!cfg.websocket.compression);
    CHECK_EQ_INT(cfg.cors.allow_origins.count, 2);
    CHECK_EQ_STR(cfg.cors.allow_origins.items[1], "https://b,example");
    unsetenv("HERALD_LISTEN");
    unsetenv("HERALD_WEBSOCKET_COMPRESSION");
    unsetenv("HERALD_CORS_ALLOW_ORIGINS");
    unsetenv("HERALD_NOT_A_KEY");

    static const struct {
        const char *value;
        const char *error;
    } bad[] = {
        {"", "HERALD_LIMITS_MAX_CONNECTIONS: must be an integer between 1 and 10000000"},
        {"1e3", "HERALD_LIMITS_MAX_CONNECTIONS: must be an integer between 1 and 10000000"},
        {" 5", "HERALD_LIMITS_MAX_CONNECTIONS: must be an integer between 1 and 10000000"},
        {"99999999999999999999999",
         "HERALD_LIMITS_MAX_CONNECTIONS: must be an integer between 1 and 10000000"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        setenv("HERALD_LIMITS_MAX_CONNECTIONS", bad[i].value, 1);
        CHECK_EQ_INT(hd_config_apply_env(&cfg, err, sizeof(err)), -1);
        CHECK_EQ_STR(err, bad[i].error);
    }
    unsetenv("HERALD_LIMITS_MAX_CONNECTIONS");
    hd_config_free(&cfg);
}

/* The _file keys: the file's bytes less one trailing newline; errors name the key and path. */
static void test_secret_files(void)
{
    hd_config cfg;
    hd_config_init(&cfg);
    char err[HD_CONFIG_ERROR_MAX], expected[HD_CONFIG_ERROR_MAX];
    const char *path = temp_file("line one\nline two\r\n");
    free(cfg.auth.jwt_secret_file);
    cfg.auth.jwt_secret_file = strdup(path);
    CHECK_EQ_INT(hd_config_finish(&cfg, err, sizeof(err)), 0);
    CHECK_EQ_STR(cfg.auth.jwt_secret, "line one\nline two");
    /* Finishing twice (a file and its key both set now) is the conflict it reports. */
    CHECK_EQ_INT(hd_config_finish(&cfg, err, sizeof(err)), -1);
    CHECK_EQ_STR(err, "auth.jwt_secret and auth.jwt_secret_file: set one or the other, not both");
    unlink(path);
    hd_config_free(&cfg);

    hd_config_init(&cfg);
    free(cfg.auth.jwt_secret_file);
    cfg.auth.jwt_secret_file = strdup(path);
    CHECK_EQ_INT(hd_config_finish(&cfg, err, sizeof(err)), -1);
    snprintf(expected, sizeof(expected),
             "auth.jwt_secret_file: cannot read '%s': No such file or directory", path);
    CHECK_EQ_STR(err, expected);
    hd_config_free(&cfg);
}

int main(void)
{
    RUN_TEST(test_defaults);
    RUN_TEST(test_every_key_set);
    RUN_TEST(test_wrong_types);
    RUN_TEST(test_unknown_keys);
    RUN_TEST(test_duplicate_keys);
    RUN_TEST(test_integer_ranges);
    RUN_TEST(test_invalid_json);
    RUN_TEST(test_top_level_not_object);
    RUN_TEST(test_comment_keys);
    RUN_TEST(test_listen);
    RUN_TEST(test_parse_address);
    RUN_TEST(test_string_rules);
    RUN_TEST(test_sentinel_keys);
    RUN_TEST(test_free);
    RUN_TEST(test_small_error_buffer);
    RUN_TEST(test_load_file);
    RUN_TEST(test_example_file);
    RUN_TEST(test_keep_restart_keys);
    RUN_TEST(test_set_listen);
    RUN_TEST(test_environment);
    RUN_TEST(test_secret_files);
    return test_summary();
}
