/*
 * Finding the Redis master through Redis Sentinel (SPEC §5, "High
 * availability"; cluster.sentinels and cluster.sentinel_master).
 *
 *  - Asking. hd_redis_sentinel_ask sends SENTINEL get-master-addr-by-name
 *    to the sentinels one at a time, over a fresh connection each (AUTH
 *    first when they have a password), starting with the one that answered
 *    last; each gets at most timeout_ms to answer, a refused connect fails
 *    at once. The first that names the master wins; when none does, the
 *    answer carries the reason of every sentinel. The link asks at every
 *    connect attempt (redis_link.h), so a failed master is followed by
 *    asking again: the sentinels name the promoted replica once they have
 *    voted.
 *  - Watching. From the first ask on, the module keeps one connection to
 *    one sentinel subscribed to +switch-master, moving to the next sentinel
 *    (after a short delay) whenever that connection fails; on_switch tells
 *    of a failover of this master at once, without waiting for the old
 *    master's connection to fail. A switch missed while no sentinel was
 *    watched is still followed, through the failed connection.
 *
 * Sentinel names hosts by address (or by name with resolve-hostnames),
 * resolved here with uv_getaddrinfo, so the loop never blocks on DNS.
 *
 * Threading: the module, and every call on it, belongs to the one thread
 * that runs its loop (hiredis contexts are not thread-safe). Callbacks run
 * on that loop, never from inside the call that caused them.
 */
#ifndef HERALD_ENGINE_REDIS_SENTINEL_H
#define HERALD_ENGINE_REDIS_SENTINEL_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define HD_SENTINEL_HOST_MAX 255
#define HD_SENTINEL_NAME_MAX 128 /* the master's name (cluster.sentinel_master) */

typedef struct hd_redis_sentinel hd_redis_sentinel;

/* One sentinel's address. */
typedef struct hd_sentinel_addr {
    char host[HD_SENTINEL_HOST_MAX + 1]; /* a name or an address, IPv6 without brackets */
    int port;
} hd_sentinel_addr;

typedef struct hd_redis_sentinel_settings {
    const hd_sentinel_addr *sentinels; /* at least one; copied */
    size_t count;
    const char *master;   /* the name the sentinels monitor the master by; copied */
    const char *password; /* AUTH to the sentinels ("" = none); copied */
    uint32_t timeout_ms;  /* per sentinel: connect and answer */
    /*
     * A sentinel announced that master moved to host:port (+switch-master).
     * host is valid during the call.
     */
    void (*on_switch)(void *ctx, const char *host, int port);
    void *ctx;
} hd_redis_sentinel_settings;

/*
 * The answer to an ask: host:port of the master (host valid during the
 * call), or host NULL and reason a one-line description of why no sentinel
 * named it.
 */
typedef void hd_redis_sentinel_cb(void *ctx, const char *host, int port, const char *reason);

/*
 * A module on loop (which may be created on another thread than the loop's
 * as long as the loop does not run yet); it starts watching with the first
 * ask. Never NULL (aborts on OOM).
 */
hd_redis_sentinel *hd_redis_sentinel_new(uv_loop_t *loop, const hd_redis_sentinel_settings *s);

/*
 * Asks the sentinels where the master is; cb(ctx, ...) is called exactly
 * once, later, unless hd_redis_sentinel_cancel or _close comes first. One
 * ask at a time: a new one cancels the one under way.
 */
void hd_redis_sentinel_ask(hd_redis_sentinel *s, hd_redis_sentinel_cb *cb, void *ctx);

/* Drops the ask under way, if any: its callback is not called. */
void hd_redis_sentinel_cancel(hd_redis_sentinel *s);

/*
 * Ends the module: no callback runs after this returns. Its memory is
 * released by handle close callbacks (run the loop until it has no more
 * handles). May be called from inside its callbacks.
 */
void hd_redis_sentinel_close(hd_redis_sentinel *s);

/* ------------------------------------------------------------------ pure parts, for tests */

/*
 * The answer to SENTINEL get-master-addr-by-name: the master's host (into
 * host, host_len bytes with the terminator) and port. Returns 0; or -1 with
 * a one-line reason in err: an error reply (NOAUTH...), a nil (the sentinel
 * knows no master by that name), or anything else malformed.
 */
int hd_redis_sentinel_parse_master(const redisReply *reply, char *host, size_t host_len, int *port,
                                   char *err, size_t err_len);

/*
 * A +switch-master message, "<name> <old host> <old port> <new host> <new
 * port>": true when it is about master, with the new host and port.
 */
bool hd_redis_sentinel_parse_switch(const char *payload, size_t len, const char *master, char *host,
                                    size_t host_len, int *port);

/*
 * The role in a ROLE answer ("master", "slave", "sentinel"; "" when the
 * answer is not one), borrowed from reply, with its length.
 */
const char *hd_redis_role_of(const redisReply *reply, size_t *len);

#endif
