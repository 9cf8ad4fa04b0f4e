/*
 * herald's configuration: the JSON file of config.example.json, validated strictly.
 *
 * The loader walks one table of keys (type, bounds, default, offset) and
 * rejects unknown keys, wrong types, out-of-range values and invalid JSON
 * with one line naming the key. Strings and string arrays in hd_config are
 * owned by it and freed by hd_config_free.
 */
#ifndef HERALD_CONFIG_H
#define HERALD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herald/log.h"

typedef struct hd_strings {
    char **items;
    size_t count;
} hd_strings;

/* Whether one of the strings is exactly the len bytes of value (an allow-list lookup). */
bool hd_strings_contains(const hd_strings *strings, const char *value, size_t len);

typedef struct hd_config {
    hd_strings listen; /* "ADDR:PORT" ("[v6]:PORT" for IPv6); port 0 = any free port */
    hd_log_level log_level;
    char *log_format; /* "text" or "json" */
    bool access_log;  /* a line per HTTP request and per stream */
    uint32_t heartbeat_s;
    uint32_t shutdown_grace_s;
    uint32_t workers; /* event loop threads; 0 = one per CPU */
    struct {
        uint32_t max_messages;
        uint64_t max_bytes;
        uint32_t ttl_s;
        uint64_t max_total_bytes; /* all topics together */
    } history;
    struct {
        uint32_t max_connections;
        uint32_t max_connections_per_ip;
        uint32_t max_message_bytes;
        uint32_t max_request_bytes; /* body of POST /publish */
        uint32_t max_topics_per_subscription;
        uint32_t max_topics;
        uint64_t max_outbound_bytes;
        uint32_t max_header_bytes;
        uint32_t max_headers;
        uint32_t header_timeout_s;
        uint32_t request_timeout_s;      /* a request's head and body, from its first byte */
        uint64_t max_pending_body_bytes; /* bodies and WebSocket messages being received */
        uint32_t close_timeout_s;        /* to read what is queued once a close was decided */
        uint32_t poll_timeout_max_s;
        uint32_t max_idempotency_keys; /* held by one node (memory engine) */
    } limits;
    struct {
        uint32_t idempotency_ttl_s; /* 0 = keys are not remembered */
    } publish;
    struct {
        uint32_t retry_ms;
    } sse;
    struct {
        hd_strings allow_origins;
    } cors;
    struct {
        hd_strings allow_origins;
        bool compression;
        char *echo_path;
    } websocket;
    struct {
        bool enabled; /* the console at GET / (herald.js is always served) */
    } ui;
    struct {
        char *cert;
        char *key;
    } tls;
    struct {
        char *jwt_secret;
        char *jwt_secret_file; /* read into jwt_secret by hd_config_finish */
        char *jwt_public_key;
        bool anonymous_subscribe;
        bool anonymous_publish;
    } auth;
    struct {
        char *redis;
        char *prefix;
        uint32_t timeout_ms;
        bool trust_redis_persistence;
        uint32_t max_held_messages;
        hd_strings sentinels; /* "host:port" each; empty: no Sentinel */
        char *sentinel_master;
        char *sentinel_password;
        char *sentinel_password_file; /* read into sentinel_password by hd_config_finish */
        char *master_password;
        char *master_password_file; /* read into master_password by hd_config_finish */
        uint32_t master_db;
        uint32_t max_inflight_bytes; /* commands in flight to Redis and publishes queued, at most */
    } cluster;
} hd_config;

#define HD_CONFIG_ERROR_MAX 512

/* Fills cfg with the embedded defaults (the values config.example.json shows). */
void hd_config_init(hd_config *cfg);
/*
 * Applies a JSON document on top of cfg. On error returns -1 and writes one
 * line naming the problem (e.g. "limits.max_message_bytes: must be an integer
 * between 1 and 16777216") into err; cfg may then be partly updated.
 */
int hd_config_apply_json(hd_config *cfg, const char *json, size_t len, char *err, size_t err_len);
/* Reads and applies a file; unreadable file and invalid JSON are errors naming the path. */
int hd_config_load_file(hd_config *cfg, const char *path, char *err, size_t err_len);
/*
 * Applies the environment's overrides on top of cfg: each key from
 * HERALD_<KEY> (the dotted name upper-cased, dots as underscores:
 * HERALD_LIMITS_MAX_CONNECTIONS), checked like the file's, errors naming
 * the variable. Lists: comma-separated, or a JSON array when the value
 * starts with '['. Other HERALD_* variables are ignored.
 */
int hd_config_apply_env(hd_config *cfg, char *err, size_t err_len);
/*
 * Once every source is applied: reads the secret files (auth.jwt_secret_file,
 * cluster.sentinel_password_file, cluster.master_password_file) into their
 * keys and checks the rules that involve several keys. Errors name the key.
 */
int hd_config_finish(hd_config *cfg, char *err, size_t err_len);
/* Replaces the listen list with one address (the --listen override), validating it. */
int hd_config_set_listen(hd_config *cfg, const char *address, char *err, size_t err_len);
/*
 * Splits "ADDR:PORT" / "[V6]:PORT" into host (without brackets, NUL-terminated,
 * at most host_len bytes) and port. Returns -1 when malformed.
 */
int hd_config_parse_address(const char *address, char *host, size_t host_len, int *port);
void hd_config_free(hd_config *cfg);
/*
 * For a reload: each key herald reads only at start (listen, workers,
 * history.*, limits.max_topics, limits.max_idempotency_keys,
 * publish.idempotency_ttl_s, cluster.*; tls.cert and tls.key when
 * they would turn TLS on or off) that differs in next gets running's value
 * back, and its name is appended to names (", " between). Returns how many.
 */
size_t hd_config_keep_restart_keys(hd_config *next, const hd_config *running, char *names,
                                   size_t names_len);

#endif
