/*
 * The configuration table and its JSON loader (STYLE habit 12, after Redis
 * src/config.c static_configs[]): one row per key gives its dotted name,
 * type, bounds, default and offset into hd_config. hd_config_init, the
 * loader and hd_config_free all walk the same table, so adding a key is
 * adding a row (and a line in config.example.json).
 */
#include "herald/config.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <ctype.h>
#include <openssl/crypto.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/alloc.h"
#include "herald/utf8.h"

typedef enum key_type {
    KEY_U32,
    KEY_U64,
    KEY_BOOL,
    KEY_STRING,
    KEY_STRINGS,
    KEY_LOG_LEVEL,
} key_type;

typedef struct config_key {
    const char *name; /* dotted path in the JSON document, e.g. "limits.max_headers" */
    key_type type;
    size_t offset; /* into hd_config */
    /* Integers: inclusive bounds. String arrays: min 1 forbids an empty array. */
    uint64_t min;
    uint64_t max;
    uint64_t def;        /* default of integers, bools and the log level */
    const char *def_str; /* default of strings; string arrays: this one item, or none when NULL */
    /* Extra rule for a string or each array item: NULL when valid, else what is required. */
    const char *(*check)(const char *value);
} config_key;

/*
 * The offset of a field, and a compile error ("no association matches") when
 * the field's C type is not the one the row's type stores through it.
 */
#define FIELD(ctype, field) _Generic(((hd_config *)0)->field, ctype : offsetof(hd_config, field))

/* One macro per type keeps each row on one line; clang-format would split them into blocks. */
/* clang-format off */
#define U32(n, f, lo, hi, d) \
    {.name = n, .type = KEY_U32, .offset = FIELD(uint32_t, f), .min = lo, .max = hi, .def = d}
#define U64(n, f, lo, hi, d) \
    {.name = n, .type = KEY_U64, .offset = FIELD(uint64_t, f), .min = lo, .max = hi, .def = d}
#define BOOL(n, f, d) {.name = n, .type = KEY_BOOL, .offset = FIELD(bool, f), .def = d}
#define STRING(n, f, d, chk) \
    {.name = n, .type = KEY_STRING, .offset = FIELD(char *, f), .def_str = d, .check = chk}
#define STRINGS(n, f, min_items, d, chk) \
    {.name = n, .type = KEY_STRINGS, .offset = FIELD(hd_strings, f), .min = min_items, \
     .def_str = d, .check = chk}
#define LOG_LEVEL(n, f, d) \
    {.name = n, .type = KEY_LOG_LEVEL, .offset = FIELD(hd_log_level, f), .def = d}
/* clang-format on */

static const char *check_listen(const char *value);
static const char *check_path(const char *value);
static const char *check_redis(const char *value);
static const char *check_prefix(const char *value);
static const char *check_sentinel(const char *value);
static const char *check_sentinel_master(const char *value);
static const char *check_log_format(const char *value);

/*
 * Integer bounds stay below 2^53 so that cJSON's double holds every value in
 * range exactly (see apply_integer). "0 = none" keys have a minimum of 0.
 */
static const config_key config_keys[] = {
    STRINGS("listen", listen, 1, "127.0.0.1:8080", check_listen),
    LOG_LEVEL("log_level", log_level, HD_LOG_INFO),
    STRING("log_format", log_format, "text", check_log_format),
    BOOL("access_log", access_log, true),
    U32("heartbeat_s", heartbeat_s, 1, 3600, 15),
    U32("shutdown_grace_s", shutdown_grace_s, 0, 300, 5),
    U32("workers", workers, 0, 64, 0),
    U32("history.max_messages", history.max_messages, 1, 10000000, 1000),
    U64("history.max_bytes", history.max_bytes, 1, UINT64_C(1) << 40, 4194304),
    U32("history.ttl_s", history.ttl_s, 0, 31536000, 0),
    U64("history.max_total_bytes", history.max_total_bytes, 1, UINT64_C(1) << 42,
        UINT64_C(1) << 30),
    U32("limits.max_connections", limits.max_connections, 1, 10000000, 100000),
    U32("limits.max_connections_per_ip", limits.max_connections_per_ip, 0, 10000000, 0),
    U32("limits.max_message_bytes", limits.max_message_bytes, 1, 16777216, 65536),
    U32("limits.max_request_bytes", limits.max_request_bytes, 1, 268435456, 1048576),
    U32("limits.max_topics_per_subscription", limits.max_topics_per_subscription, 1, 10000, 64),
    U32("limits.max_topics", limits.max_topics, 0, UINT32_MAX, 1000000),
    U64("limits.max_outbound_bytes", limits.max_outbound_bytes, 1024, UINT64_C(1) << 34, 1048576),
    U32("limits.max_header_bytes", limits.max_header_bytes, 1024, 1048576, 16384),
    U32("limits.max_headers", limits.max_headers, 1, 10000, 100),
    U32("limits.header_timeout_s", limits.header_timeout_s, 1, 3600, 10),
    U32("limits.request_timeout_s", limits.request_timeout_s, 1, 3600, 30),
    U64("limits.max_pending_body_bytes", limits.max_pending_body_bytes, 1024, UINT64_C(1) << 40,
        UINT64_C(64) << 20),
    U32("limits.close_timeout_s", limits.close_timeout_s, 1, 3600, 30),
    U32("limits.poll_timeout_max_s", limits.poll_timeout_max_s, 1, 3600, 120),
    U32("limits.max_idempotency_keys", limits.max_idempotency_keys, 1, 100000000, 100000),
    U32("publish.idempotency_ttl_s", publish.idempotency_ttl_s, 0, 86400, 300),
    U32("sse.retry_ms", sse.retry_ms, 0, 3600000, 2000),
    STRINGS("cors.allow_origins", cors.allow_origins, 0, "*", NULL),
    STRINGS("websocket.allow_origins", websocket.allow_origins, 0, "*", NULL),
    BOOL("websocket.compression", websocket.compression, true),
    STRING("websocket.echo_path", websocket.echo_path, "", check_path),
    BOOL("ui.enabled", ui.enabled, true),
    STRING("tls.cert", tls.cert, "", NULL),
    STRING("tls.key", tls.key, "", NULL),
    STRING("auth.jwt_secret", auth.jwt_secret, "", NULL),
    STRING("auth.jwt_secret_file", auth.jwt_secret_file, "", NULL),
    STRING("auth.jwt_public_key", auth.jwt_public_key, "", NULL),
    BOOL("auth.anonymous_subscribe", auth.anonymous_subscribe, true),
    BOOL("auth.anonymous_publish", auth.anonymous_publish, true),
    STRING("cluster.redis", cluster.redis, "", check_redis),
    STRING("cluster.prefix", cluster.prefix, "herald", check_prefix),
    U32("cluster.timeout_ms", cluster.timeout_ms, 100, 60000, 2000),
    BOOL("cluster.trust_redis_persistence", cluster.trust_redis_persistence, false),
    U32("cluster.max_held_messages", cluster.max_held_messages, 1, 16777216, 65536),
    STRINGS("cluster.sentinels", cluster.sentinels, 0, NULL, check_sentinel),
    STRING("cluster.sentinel_master", cluster.sentinel_master, "", check_sentinel_master),
    STRING("cluster.sentinel_password", cluster.sentinel_password, "", NULL),
    STRING("cluster.sentinel_password_file", cluster.sentinel_password_file, "", NULL),
    STRING("cluster.master_password", cluster.master_password, "", NULL),
    STRING("cluster.master_password_file", cluster.master_password_file, "", NULL),
    U32("cluster.master_db", cluster.master_db, 0, 2147483647, 0),
    U32("cluster.max_inflight_bytes", cluster.max_inflight_bytes, 1, 1073741824, 67108864),
};

#define N_KEYS (sizeof(config_keys) / sizeof(config_keys[0]))

/*
 * Keys read once, at start: the listeners, the threads, the bounds built
 * into the hub, the cluster engine. A reload keeps their running values
 * (hd_config_keep_restart_keys); every other key may change at run time.
 */
static const char *const restart_keys[] = {
    "listen",
    "workers",
    "history.max_messages",
    "history.max_bytes",
    "history.ttl_s",
    "history.max_total_bytes",
    "limits.max_topics",
    "limits.max_idempotency_keys",
    "publish.idempotency_ttl_s",
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
    "cluster.max_inflight_bytes",
};

/* Redis passwords (cluster.sentinel_password, cluster.master_password), as a URL's may be. */
#define PASSWORD_MAX 512

/* Config files are small; the cap only stops a wrong path (a device, a log) from eating memory. */
#define MAX_FILE_BYTES ((size_t)16 << 20)
/* A secret file holds one secret (auth.jwt_secret_file, ...). */
#define MAX_SECRET_BYTES ((size_t)64 << 10)

/* ---------------------------------------------------------------- errors */

static int fail(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t err_len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
    return -1;
}

/*
 * Copies user text (a key, a value, a path) for quoting in an error, with
 * control bytes replaced by '?': errors are promised to be one line, and a
 * JSON key may well contain "\n".
 */
static const char *printable(char *out, size_t out_len, const char *text)
{
    size_t i = 0;
    for (; text[i] != '\0' && i + 1 < out_len; i++) {
        unsigned char c = (unsigned char)text[i];
        out[i] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    out[i] = '\0';
    return out;
}

/* ------------------------------------------------------- value checks */

int hd_config_parse_address(const char *address, char *host, size_t host_len, int *port)
{
    const char *host_start, *host_end, *colon;
    if (address[0] == '[') {
        host_start = address + 1;
        host_end = strchr(host_start, ']');
        if (host_end == NULL || host_end[1] != ':')
            return -1;
        colon = host_end + 1;
    } else {
        host_start = address;
        colon = strrchr(address, ':');
        if (colon == NULL)
            return -1;
        host_end = colon;
        /* An IPv6 literal needs brackets, or its last group would read as the port. */
        if (memchr(host_start, ':', (size_t)(host_end - host_start)) != NULL)
            return -1;
    }
    size_t len = (size_t)(host_end - host_start);
    if (len == 0 || len + 1 > host_len)
        return -1;

    /* strtol would accept signs and leading spaces; a port is 1 to 5 digits, nothing else. */
    const char *digits = colon + 1;
    size_t n = strlen(digits);
    if (n == 0 || n > 5 || strspn(digits, "0123456789") != n)
        return -1;
    int value = atoi(digits);
    if (value > 65535)
        return -1;

    memcpy(host, host_start, len);
    host[len] = '\0';
    *port = value;
    return 0;
}

/*
 * Hosts are numeric so that binding never waits on DNS, with "localhost" as
 * the one convenience; brackets are for IPv6 only, as in URLs.
 */
static const char *check_listen(const char *value)
{
    static const char rule[] = "must be IPV4:PORT, [IPV6]:PORT or localhost:PORT, port 0-65535";
    char host[INET6_ADDRSTRLEN];
    int port;
    if (hd_config_parse_address(value, host, sizeof(host), &port) != 0)
        return rule;
    unsigned char addr[sizeof(struct in6_addr)];
    bool ok = value[0] == '['
                  ? inet_pton(AF_INET6, host, addr) == 1
                  : strcmp(host, "localhost") == 0 || inet_pton(AF_INET, host, addr) == 1;
    return ok ? NULL : rule;
}

/*
 * The paths herald answers itself (src/transport/router.c, assets.c): an
 * echo endpoint there would hide the route, or be hidden by it.
 */
static const char *const builtin_paths[] = {
    "/",        "/healthz",   "/events",      "/poll",       "/metrics",     "/topics",      "/ws",
    "/publish", "/herald.js", "/herald.d.ts", "/console.js", "/console.css", "/console.svg",
};

static const char *check_path(const char *value)
{
    if (value[0] == '\0')
        return NULL;
    if (value[0] != '/')
        return "must be empty or start with '/'";
    for (size_t i = 0; i < sizeof(builtin_paths) / sizeof(builtin_paths[0]); i++) {
        if (strcmp(value, builtin_paths[i]) == 0)
            return "must not be a path herald answers itself (/, /ws, /events, /poll, "
                   "/publish, /topics, /healthz, /metrics, /herald.js, /console.js...)";
    }
    if (strncmp(value, "/topics/", 8) == 0)
        return "must not start with /topics/ (herald's topic routes)";
    return NULL;
}

static const char *check_redis(const char *value)
{
    return value[0] == '\0' || strncmp(value, "redis://", 8) == 0
               ? NULL
               : "must be empty or start with 'redis://'";
}

/* A sentinel's HOST:PORT, as Redis Sentinel's own sentinel.conf names them. */
static const char *check_sentinel(const char *value)
{
    char host[256];
    int port;
    return hd_config_parse_address(value, host, sizeof(host), &port) == 0 && port != 0
               ? NULL
               : "must be HOST:PORT or [IPV6]:PORT, port 1-65535";
}

/* Sentinel's +switch-master message separates words by spaces: the name cannot hold one. */
static const char *check_sentinel_master(const char *value)
{
    size_t len = strlen(value);
    bool ok = len <= 128;
    for (size_t i = 0; ok && i < len; i++)
        ok = value[i] > ' ' && value[i] < 127;
    return ok ? NULL : "must be at most 128 printable ASCII characters without spaces";
}

static const char *check_log_format(const char *value)
{
    return strcmp(value, "text") == 0 || strcmp(value, "json") == 0 ? NULL : "must be text or json";
}

/* Inside a Redis hash tag ("{prefix}"): no braces, and short, since every key repeats it. */
static const char *check_prefix(const char *value)
{
    size_t len = strlen(value);
    bool ok = len >= 1 && len <= 64;
    for (size_t i = 0; ok && i < len; i++)
        ok = value[i] > ' ' && value[i] < 127 && value[i] != '{' && value[i] != '}';
    return ok ? NULL : "must be 1 to 64 printable ASCII characters without spaces, '{' or '}'";
}

/* -------------------------------------------------------------- fields */

static void *field_of(hd_config *cfg, const config_key *key)
{
    return (char *)cfg + key->offset;
}

static void strings_free(hd_strings *list)
{
    for (size_t i = 0; i < list->count; i++)
        free(list->items[i]);
    free(list->items);
    list->items = NULL;
    list->count = 0;
}

static void strings_set_one(hd_strings *list, const char *value)
{
    strings_free(list);
    list->items = hd_alloc(sizeof(char *));
    list->items[0] = hd_strdup(value);
    list->count = 1;
}

void hd_config_init(hd_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < N_KEYS; i++) {
        const config_key *key = &config_keys[i];
        void *field = field_of(cfg, key);
        switch (key->type) {
        case KEY_U32:
            *(uint32_t *)field = (uint32_t)key->def;
            break;
        case KEY_U64:
            *(uint64_t *)field = key->def;
            break;
        case KEY_BOOL:
            *(bool *)field = key->def != 0;
            break;
        case KEY_STRING:
            *(char **)field = hd_strdup(key->def_str);
            break;
        case KEY_STRINGS:
            if (key->def_str != NULL)
                strings_set_one(field, key->def_str);
            break;
        case KEY_LOG_LEVEL:
            *(hd_log_level *)field = (hd_log_level)key->def;
            break;
        }
    }
}

bool hd_strings_contains(const hd_strings *strings, const char *value, size_t len)
{
    for (size_t i = 0; i < strings->count; i++) {
        if (strlen(strings->items[i]) == len && memcmp(strings->items[i], value, len) == 0)
            return true;
    }
    return false;
}

void hd_config_free(hd_config *cfg)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        const config_key *key = &config_keys[i];
        void *field = field_of(cfg, key);
        if (key->type == KEY_STRING) {
            free(*(char **)field);
            *(char **)field = NULL;
        } else if (key->type == KEY_STRINGS) {
            strings_free(field);
        }
    }
}

/* ------------------------------------------------------------- loader */

typedef struct apply_ctx {
    hd_config *cfg;
    bool seen[N_KEYS]; /* rows already set by this document, to reject duplicates */
    char *err;
    size_t err_len;
} apply_ctx;

static const config_key *find_key(const char *name)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        if (strcmp(config_keys[i].name, name) == 0)
            return &config_keys[i];
    }
    return NULL;
}

/* A section is any proper prefix of a row's name ending at a dot: "limits", "tls". */
static bool is_section(const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < N_KEYS; i++) {
        if (strncmp(config_keys[i].name, name, len) == 0 && config_keys[i].name[len] == '.')
            return true;
    }
    return false;
}

/*
 * cJSON keeps every number as a double. All bounds are below 2^53, so once a
 * value is known to be in range, it is an integer exactly when converting it
 * to uint64_t and back changes nothing (1.5 fails, 1e3 is 1000).
 */
static int apply_integer(apply_ctx *ctx, const config_key *key, const char *label,
                         const cJSON *item)
{
    if (!cJSON_IsNumber(item))
        return fail(ctx->err, ctx->err_len, "%s: expected an integer", label);
    double d = item->valuedouble;
    if (!(d >= (double)key->min && d <= (double)key->max) || (double)(uint64_t)d != d)
        return fail(ctx->err, ctx->err_len,
                    "%s: must be an integer between %" PRIu64 " and %" PRIu64, label, key->min,
                    key->max);
    void *field = field_of(ctx->cfg, key);
    if (key->type == KEY_U32)
        *(uint32_t *)field = (uint32_t)d;
    else
        *(uint64_t *)field = (uint64_t)d;
    return 0;
}

static int check_string(apply_ctx *ctx, const config_key *key, const char *label, const char *value)
{
    const char *rule = key->check ? key->check(value) : NULL;
    if (rule == NULL)
        return 0;
    char quoted[128];
    return fail(ctx->err, ctx->err_len, "%s: %s (got '%s')", label, rule,
                printable(quoted, sizeof(quoted), value));
}

/* Validates every item before touching the field, so a bad array leaves the old list whole. */
static int apply_strings(apply_ctx *ctx, const config_key *key, const char *label,
                         const cJSON *item)
{
    if (!cJSON_IsArray(item))
        return fail(ctx->err, ctx->err_len, "%s: expected an array of strings", label);
    size_t count = (size_t)cJSON_GetArraySize(item);
    if (count < key->min)
        return fail(ctx->err, ctx->err_len, "%s: must not be empty", label);
    size_t index = 0;
    for (const cJSON *el = item->child; el != NULL; el = el->next, index++) {
        char item_label[96];
        snprintf(item_label, sizeof(item_label), "%s[%zu]", label, index);
        if (!cJSON_IsString(el))
            return fail(ctx->err, ctx->err_len, "%s: expected a string", item_label);
        if (check_string(ctx, key, item_label, el->valuestring) != 0)
            return -1;
    }
    hd_strings *list = field_of(ctx->cfg, key);
    strings_free(list);
    list->items = hd_calloc(count, sizeof(char *));
    index = 0;
    for (const cJSON *el = item->child; el != NULL; el = el->next)
        list->items[index++] = hd_strdup(el->valuestring);
    list->count = count;
    return 0;
}

/* label names the key in errors: its dotted name, or the environment variable that set it. */
static int apply_value(apply_ctx *ctx, const config_key *key, const char *label, const cJSON *item)
{
    void *field = field_of(ctx->cfg, key);
    switch (key->type) {
    case KEY_U32:
    case KEY_U64:
        return apply_integer(ctx, key, label, item);
    case KEY_BOOL:
        if (!cJSON_IsBool(item))
            return fail(ctx->err, ctx->err_len, "%s: expected true or false", label);
        *(bool *)field = cJSON_IsTrue(item);
        return 0;
    case KEY_STRING:
        if (!cJSON_IsString(item))
            return fail(ctx->err, ctx->err_len, "%s: expected a string", label);
        if (check_string(ctx, key, label, item->valuestring) != 0)
            return -1;
        free(*(char **)field);
        *(char **)field = hd_strdup(item->valuestring);
        return 0;
    case KEY_STRINGS:
        return apply_strings(ctx, key, label, item);
    case KEY_LOG_LEVEL:
        if (!cJSON_IsString(item))
            return fail(ctx->err, ctx->err_len, "%s: expected a string", label);
        if (hd_log_level_parse(item->valuestring, field) != 0)
            return fail(ctx->err, ctx->err_len, "%s: must be one of debug, info, warn, error",
                        label);
        return 0;
    }
    return 0;
}

/*
 * Applies the members of one JSON object whose dotted path is prefix ("" at
 * the top). Recursion only enters objects that are sections of the table,
 * so its depth is bounded by the table, not by the document.
 */
static int apply_object(apply_ctx *ctx, const cJSON *object, const char *prefix)
{
    for (const cJSON *item = object->child; item != NULL; item = item->next) {
        const char *name = item->string;
        /*
         * JSON has no comments, so config.example.json documents each key
         * with a sibling "//key": "text". Any key starting with "//" is
         * ignored, whatever its value, at every level.
         */
        if (strncmp(name, "//", 2) == 0)
            continue;
        char path[128];
        int n = snprintf(path, sizeof(path), "%s%s%s", prefix, prefix[0] ? "." : "", name);
        /* A dot inside a key would let {"limits.max_headers": 1} pose as a nested key. */
        bool plain = name[0] != '\0' && strchr(name, '.') == NULL && (size_t)n < sizeof(path);
        const config_key *key = plain ? find_key(path) : NULL;
        if (key != NULL) {
            size_t row = (size_t)(key - config_keys);
            if (ctx->seen[row])
                return fail(ctx->err, ctx->err_len, "duplicate key '%s'", key->name);
            ctx->seen[row] = true;
            if (apply_value(ctx, key, key->name, item) != 0)
                return -1;
        } else if (plain && is_section(path)) {
            if (!cJSON_IsObject(item))
                return fail(ctx->err, ctx->err_len, "%s: expected an object", path);
            if (apply_object(ctx, item, path) != 0)
                return -1;
        } else {
            char quoted[128];
            return fail(ctx->err, ctx->err_len, "unknown key '%s%s%s'", prefix,
                        prefix[0] ? "." : "", printable(quoted, sizeof(quoted), name));
        }
    }
    return 0;
}

/* A listen entry as the server binds it (localhost is 127.0.0.1): equal spellings compare equal. */
typedef struct listen_entry {
    int family;
    unsigned char addr[sizeof(struct in6_addr)];
    int port;
    size_t index; /* in the list: the tie-break, so equal entries sort in list order */
} listen_entry;

static int compare_listen_entries(const void *a, const void *b)
{
    const listen_entry *x = a, *y = b;
    /* Bytes before index: family, address and port (the struct is zeroed, padding included). */
    int c = memcmp(x, y, offsetof(listen_entry, index));
    return c != 0 ? c : (x->index > y->index) - (x->index < y->index);
}

static bool same_listen_address(const listen_entry *a, const listen_entry *b)
{
    return memcmp(a, b, offsetof(listen_entry, index)) == 0;
}

/*
 * The second bind of the same address would fail at start with "address
 * already in use", which does not say that herald's own config is the
 * culprit; this names both entries. Port 0 is a fresh port each time, so it may
 * repeat. Sorted, not compared pairwise: the list has no length limit.
 */
static int check_listen_duplicates(const hd_strings *listen, char *err, size_t err_len)
{
    listen_entry *entries = hd_calloc(listen->count, sizeof(*entries));
    for (size_t i = 0; i < listen->count; i++) {
        char host[INET6_ADDRSTRLEN];
        listen_entry *e = &entries[i];
        /* Every item passed check_listen, so both calls succeed. */
        hd_config_parse_address(listen->items[i], host, sizeof(host), &e->port);
        e->family = listen->items[i][0] == '[' ? AF_INET6 : AF_INET;
        inet_pton(e->family, strcmp(host, "localhost") == 0 ? "127.0.0.1" : host, e->addr);
        e->index = i;
    }
    qsort(entries, listen->count, sizeof(*entries), compare_listen_entries);
    size_t first = 0, repeat = listen->count; /* the earliest repeated entry in list order */
    for (size_t i = 1; i < listen->count; i++) {
        if (entries[i].port != 0 && same_listen_address(&entries[i - 1], &entries[i]) &&
            entries[i].index < repeat) {
            first = entries[i - 1].index;
            repeat = entries[i].index;
        }
    }
    free(entries);
    if (repeat == listen->count)
        return 0;
    char got[128], same[128];
    return fail(err, err_len, "listen[%zu]: duplicate of listen[%zu] (got '%s', the same as '%s')",
                repeat, first, printable(got, sizeof(got), listen->items[repeat]),
                printable(same, sizeof(same), listen->items[first]));
}

/* Redis is found one way: cluster.redis, or cluster.sentinels with the keys that go with it. */
static int check_sentinel_keys(const hd_config *cfg, char *err, size_t err_len)
{
    const char *alone = cfg->cluster.sentinel_master[0]     ? "cluster.sentinel_master"
                        : cfg->cluster.sentinel_password[0] ? "cluster.sentinel_password"
                        : cfg->cluster.master_password[0]   ? "cluster.master_password"
                        : cfg->cluster.master_db != 0       ? "cluster.master_db"
                                                            : NULL;
    if (cfg->cluster.sentinels.count == 0)
        return alone == NULL ? 0
                             : fail(err, err_len,
                                    "%s: only with cluster.sentinels (with cluster.redis, the "
                                    "password and db go in its URL)",
                                    alone);
    if (cfg->cluster.redis[0] != '\0')
        return fail(err, err_len,
                    "cluster.redis and cluster.sentinels: set one or the other, not both");
    if (cfg->cluster.sentinel_master[0] == '\0')
        return fail(err, err_len,
                    "cluster.sentinel_master: required with cluster.sentinels (the name the "
                    "sentinels monitor the master by)");
    /* Checked here, not by a row's rule, whose message would quote the password. */
    const char *long_one =
        strlen(cfg->cluster.sentinel_password) > PASSWORD_MAX ? "cluster.sentinel_password"
        : strlen(cfg->cluster.master_password) > PASSWORD_MAX ? "cluster.master_password"
                                                              : NULL;
    if (long_one != NULL)
        return fail(err, err_len, "%s: must be at most %d bytes", long_one, PASSWORD_MAX);
    return 0;
}

/* Rules that involve more than one key or item, checked on the result of a whole document. */
static int check_combination(const hd_config *cfg, char *err, size_t err_len)
{
    if ((cfg->tls.cert[0] == '\0') != (cfg->tls.key[0] == '\0'))
        return fail(err, err_len, "tls.cert and tls.key must be set together");
    if (check_sentinel_keys(cfg, err, err_len) != 0)
        return -1;
    return check_listen_duplicates(&cfg->listen, err, err_len);
}

static int json_error(const char *json, const char *at, const char *what, char *err, size_t err_len)
{
    unsigned line = 1, column = 1;
    for (const char *p = json; p < at; p++) {
        if (*p == '\n') {
            line++;
            column = 1;
        } else {
            column++;
        }
    }
    return fail(err, err_len, "invalid JSON near line %u, column %u%s", line, column, what);
}

int hd_config_apply_json(hd_config *cfg, const char *json, size_t len, char *err, size_t err_len)
{
    /*
     * RFC 8259 §8.1 lets a parser ignore a byte order mark, and Windows
     * editors write one: skipped on purpose (not left to cJSON), so that
     * error columns count from the first real character.
     */
    static const char bom[] = "\xef\xbb\xbf";
    if (len >= sizeof(bom) - 1 && memcmp(json, bom, sizeof(bom) - 1) == 0) {
        json += sizeof(bom) - 1;
        len -= sizeof(bom) - 1;
    }
    /*
     * cJSON stops at a NUL, so an embedded one would silently hide the rest
     * of the document; and requiring the terminator is how cJSON rejects
     * trailing garbage, hence the NUL-terminated copy.
     */
    const char *nul = memchr(json, '\0', len);
    if (nul != NULL)
        return json_error(json, nul, ": NUL byte", err, err_len);
    /* JSON is UTF-8 (RFC 8259); cJSON does not check, and these strings become paths and keys. */
    if (!hd_utf8_valid(json, len)) {
        hd_utf8_state st = {0};
        size_t at = 0;
        while (at < len && hd_utf8_feed(&st, json + at, 1))
            at++;
        return json_error(json, json + at, ": not UTF-8", err, err_len);
    }
    char *text = hd_strndup(json, len);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len + 1, &end, true);
    if (root == NULL) {
        json_error(text, end != NULL ? end : text + len, "", err, err_len);
        free(text);
        return -1;
    }
    free(text);

    int rc;
    if (!cJSON_IsObject(root)) {
        rc = fail(err, err_len, "the top level must be a JSON object");
    } else {
        apply_ctx ctx = {.cfg = cfg, .err = err, .err_len = err_len};
        rc = apply_object(&ctx, root, "");
        if (rc == 0)
            rc = check_combination(cfg, err, err_len);
    }
    cJSON_Delete(root);
    return rc;
}

/*
 * Reads a whole file of at most max_bytes into memory (NUL-terminated, for
 * the secrets); errors start with what ("cannot read config file") and
 * name the path and the reason.
 */
static char *read_file(const char *path, const char *what, size_t max_bytes, size_t *len_out,
                       char *err, size_t err_len)
{
    char shown[256];
    printable(shown, sizeof(shown), path);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fail(err, err_len, "%s '%s': %s", what, shown, strerror(errno));
        return NULL;
    }
    size_t len = 0, cap = 16384;
    char *buf = hd_alloc(cap + 1);
    for (;;) {
        if (len == cap) {
            cap *= 2;
            buf = hd_realloc(buf, cap + 1);
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0 || len > max_bytes)
            break;
    }
    /* fread reports errors (EISDIR for a directory) only through ferror and errno. */
    bool failed = ferror(f) != 0;
    int read_errno = errno;
    fclose(f);
    if (failed || len > max_bytes) {
        if (failed)
            fail(err, err_len, "%s '%s': %s", what, shown, strerror(read_errno));
        else
            fail(err, err_len, "%s '%s': larger than %zu KiB", what, shown, max_bytes >> 10);
        free(buf);
        return NULL;
    }
    buf[len] = '\0';
    *len_out = len;
    return buf;
}

int hd_config_load_file(hd_config *cfg, const char *path, char *err, size_t err_len)
{
    size_t len;
    char *text = read_file(path, "cannot read config file", MAX_FILE_BYTES, &len, err, err_len);
    if (text == NULL)
        return -1;
    char inner[HD_CONFIG_ERROR_MAX];
    int rc = hd_config_apply_json(cfg, text, len, inner, sizeof(inner));
    free(text);
    if (rc != 0) {
        char shown[256];
        fail(err, err_len, "%s: %s", printable(shown, sizeof(shown), path), inner);
    }
    return rc;
}

/* -------------------------------------------------------- environment */

/* "HERALD_" and the dotted name upper-cased, dots to underscores: HERALD_LIMITS_MAX_CONNECTIONS. */
static void env_name(const config_key *key, char *out, size_t out_len)
{
    size_t n = (size_t)snprintf(out, out_len, "HERALD_");
    for (const char *p = key->name; *p != '\0' && n + 1 < out_len; p++)
        out[n++] = *p == '.' ? '_' : (char)toupper((unsigned char)*p);
    out[n] = '\0';
}

/*
 * A list from the environment: a JSON array when it starts with '[', else
 * comma-separated items with the spaces around each trimmed ("" is the
 * empty list). NULL for a JSON text that does not parse.
 */
static cJSON *env_list(const char *value)
{
    if (value[0] == '[')
        return cJSON_Parse(value);
    cJSON *array = cJSON_CreateArray();
    for (const char *p = value; *value != '\0';) {
        const char *comma = strchr(p, ',');
        const char *end = comma != NULL ? comma : p + strlen(p);
        while (p < end && *p == ' ')
            p++;
        while (end > p && end[-1] == ' ')
            end--;
        char *item = hd_strndup(p, (size_t)(end - p));
        cJSON_AddItemToArray(array, cJSON_CreateString(item));
        free(item);
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    return array;
}

/*
 * The JSON value a variable's text stands for, so that apply_value checks
 * it exactly as it checks the file's. Text that is not of the key's type
 * becomes a value apply_value refuses with the file's message for it.
 */
static cJSON *env_value(const config_key *key, const char *value)
{
    size_t len = strlen(value);
    switch (key->type) {
    case KEY_U32:
    case KEY_U64:
        /* -1 is out of every range: "must be an integer between ..." like 1.5 in the file. */
        return cJSON_CreateNumber(
            len > 0 && strspn(value, "0123456789") == len ? strtod(value, NULL) : -1);
    case KEY_BOOL:
        if (strcmp(value, "true") == 0 || strcmp(value, "false") == 0)
            return cJSON_CreateBool(value[0] == 't');
        return cJSON_CreateNull();
    case KEY_STRINGS:
        return env_list(value);
    case KEY_STRING:
    case KEY_LOG_LEVEL:
        break;
    }
    return cJSON_CreateString(value);
}

int hd_config_apply_env(hd_config *cfg, char *err, size_t err_len)
{
    apply_ctx ctx = {.cfg = cfg, .err = err, .err_len = err_len};
    for (size_t i = 0; i < N_KEYS; i++) {
        char name[96];
        env_name(&config_keys[i], name, sizeof(name));
        const char *value = getenv(name);
        if (value == NULL)
            continue;
        if (!hd_utf8_valid(value, strlen(value)))
            return fail(err, err_len, "%s: not UTF-8", name);
        cJSON *item = env_value(&config_keys[i], value);
        int rc = item != NULL ? apply_value(&ctx, &config_keys[i], name, item)
                              : fail(err, err_len,
                                     "%s: expected comma-separated items or a JSON array of "
                                     "strings",
                                     name);
        cJSON_Delete(item);
        if (rc != 0)
            return -1;
    }
    return 0;
}

/* ------------------------------------------------------- secret files */

/*
 * Reads the secret file_key names (if set) into *secret, which must then be
 * unset: the file's bytes, less one trailing newline.
 */
static int read_secret(const char *file_key, const char *path, const char *secret_key,
                       char **secret, char *err, size_t err_len)
{
    if (path[0] == '\0')
        return 0;
    if ((*secret)[0] != '\0')
        return fail(err, err_len, "%s and %s: set one or the other, not both", secret_key,
                    file_key);
    char what[96], shown[256];
    snprintf(what, sizeof(what), "%s: cannot read", file_key);
    size_t len;
    char *text = read_file(path, what, MAX_SECRET_BYTES, &len, err, err_len);
    if (text == NULL)
        return -1;
    if (len > 0 && text[len - 1] == '\n')
        len--;
    if (len > 0 && text[len - 1] == '\r')
        len--;
    text[len] = '\0';
    int rc = 0;
    if (len == 0 || memchr(text, '\0', len) != NULL)
        rc = fail(err, err_len, "%s: '%s' %s", file_key, printable(shown, sizeof(shown), path),
                  len == 0 ? "is empty" : "holds a NUL byte");
    else {
        free(*secret);
        *secret = hd_strdup(text);
    }
    OPENSSL_cleanse(text, len);
    free(text);
    return rc;
}

int hd_config_finish(hd_config *cfg, char *err, size_t err_len)
{
    if (read_secret("auth.jwt_secret_file", cfg->auth.jwt_secret_file, "auth.jwt_secret",
                    &cfg->auth.jwt_secret, err, err_len) != 0 ||
        read_secret("cluster.sentinel_password_file", cfg->cluster.sentinel_password_file,
                    "cluster.sentinel_password", &cfg->cluster.sentinel_password, err,
                    err_len) != 0 ||
        read_secret("cluster.master_password_file", cfg->cluster.master_password_file,
                    "cluster.master_password", &cfg->cluster.master_password, err, err_len) != 0)
        return -1;
    return check_combination(cfg, err, err_len);
}

int hd_config_set_listen(hd_config *cfg, const char *address, char *err, size_t err_len)
{
    const char *rule = check_listen(address);
    if (rule != NULL) {
        char quoted[128];
        return fail(err, err_len, "listen: %s (got '%s')", rule,
                    printable(quoted, sizeof(quoted), address));
    }
    strings_set_one(&cfg->listen, address);
    return 0;
}

/* ------------------------------------------------------------- reload */

static const void *field_of_const(const hd_config *cfg, const config_key *key)
{
    return (const char *)cfg + key->offset;
}

/* The size of a key's field when it holds a plain value (compared and copied bytewise), else 0. */
static size_t value_size(key_type type)
{
    switch (type) {
    case KEY_U32:
        return sizeof(uint32_t);
    case KEY_U64:
        return sizeof(uint64_t);
    case KEY_BOOL:
        return sizeof(bool);
    case KEY_LOG_LEVEL:
        return sizeof(hd_log_level);
    case KEY_STRING:
    case KEY_STRINGS:
        break;
    }
    return 0;
}

static bool field_equal(const config_key *key, const hd_config *a, const hd_config *b)
{
    const void *x = field_of_const(a, key), *y = field_of_const(b, key);
    size_t size = value_size(key->type);
    if (size > 0)
        return memcmp(x, y, size) == 0;
    if (key->type == KEY_STRING)
        return strcmp(*(char *const *)x, *(char *const *)y) == 0;
    const hd_strings *p = x, *q = y;
    if (p->count != q->count)
        return false;
    for (size_t i = 0; i < p->count; i++) {
        if (strcmp(p->items[i], q->items[i]) != 0)
            return false;
    }
    return true;
}

static void field_copy(const config_key *key, hd_config *dst, const hd_config *src)
{
    void *to = field_of(dst, key);
    const void *from = field_of_const(src, key);
    size_t size = value_size(key->type);
    if (size > 0) {
        memcpy(to, from, size);
    } else if (key->type == KEY_STRING) {
        free(*(char **)to);
        *(char **)to = hd_strdup(*(char *const *)from);
    } else {
        const hd_strings *list = from;
        hd_strings *copy = to;
        strings_free(copy);
        copy->items = hd_calloc(list->count, sizeof(char *));
        for (size_t i = 0; i < list->count; i++)
            copy->items[i] = hd_strdup(list->items[i]);
        copy->count = list->count;
    }
}

/* Puts the running value of key back into next when it differs; names it in names. */
static size_t keep_key(hd_config *next, const hd_config *running, const char *name, char *names,
                       size_t names_len)
{
    const config_key *key = find_key(name);
    if (field_equal(key, next, running))
        return 0;
    field_copy(key, next, running);
    size_t used = strlen(names);
    snprintf(names + used, names_len - used, "%s%s", used > 0 ? ", " : "", name);
    return 1;
}

size_t hd_config_keep_restart_keys(hd_config *next, const hd_config *running, char *names,
                                   size_t names_len)
{
    names[0] = '\0';
    size_t kept = 0;
    for (size_t i = 0; i < sizeof(restart_keys) / sizeof(restart_keys[0]); i++)
        kept += keep_key(next, running, restart_keys[i], names, names_len);
    /* A new certificate is fine; turning TLS on or off would change what every listener speaks. */
    if ((next->tls.cert[0] == '\0') != (running->tls.cert[0] == '\0')) {
        kept += keep_key(next, running, "tls.cert", names, names_len);
        kept += keep_key(next, running, "tls.key", names, names_len);
    }
    return kept;
}
