/*
 * One logical link to one Redis server (SPEC §5): a command connection,
 * on which many commands are in flight at once (pipelined, answered in
 * order), and a pub/sub connection. Built on hiredis 0.14's async API and
 * its libuv adapter, with what 0.14 lacks added here (see
 * ../shared/design/redis-engine.md, "hiredis 0.14.1 pitfalls"):
 *
 *  - Connecting. The host is resolved once per attempt and both
 *    connections go to that one address. Each sends AUTH (when the URL has
 *    a password), SELECT (db other than 0; command connection only, since
 *    pub/sub ignores the db), SCRIPT LOAD of every registered script
 *    (command connection), INFO server and, on the command connection, a
 *    PING that fails while Redis is still loading its data. The link is UP
 *    once every answer came back clean and both connections report the
 *    same run_id (a proxy in front of Redis would break the resume
 *    protocol). An attempt that is not UP within timeout_ms is abandoned,
 *    since 0.14 never reports a refused connect (pitfall #1).
 *  - Failure. Any failure tears down both connections: the link goes DOWN
 *    with a reason, answers every command in flight, and tries again after
 *    hd_redis_link_backoff_ms(attempt), attempt counting from 0 after UP.
 *    It notices a connection closed or reset by the server at once, a
 *    command connection whose oldest command is older than timeout_ms
 *    (0.14 has no command timeout, pitfall #2), and a pub/sub connection
 *    that stays silent: after probe_idle_ms without a pub/sub reply it
 *    publishes to probe_channel (to which it is always subscribed) over
 *    the command connection, and fails when nothing comes back within
 *    timeout_ms or when the publish reached no subscriber at all.
 *  - Pub/sub. The link keeps the set of channels wanted, sends SUBSCRIBE
 *    and UNSUBSCRIBE in batches of up to 512 at the end of the loop pass,
 *    and again for the whole set after every reconnect. On the pub/sub
 *    connection it only ever sends (UN)SUBSCRIBE (pitfall #5).
 *  - Sentinel (when sentinels are given). The address comes from the
 *    sentinels (redis_sentinel.h) at every attempt instead of the URL's
 *    host and port, so a failed master is followed by asking again; the
 *    command connection's handshake adds ROLE, and a server that is not a
 *    master (a replica the sentinels have not promoted yet, or a demoted
 *    old master) fails the attempt. A +switch-master for the master ends
 *    the connection at once and reconnects (attempt 0) to the new one.
 *  - Scripts go out as EVALSHA; on NOSCRIPT (SCRIPT FLUSH, a failover) the
 *    link sends SCRIPT LOAD and the same EVALSHA once more (or, for
 *    hd_redis_link_evalsha_once, passes the NOSCRIPT answer on).
 *
 * Every argument is sent with its length: channels, keys and payloads are
 * binary-safe.
 *
 * The process must ignore SIGPIPE (hiredis 0.14 writes with write(2));
 * herald's main does.
 *
 * Threading: a link, and every call on it, belongs to the one thread that
 * runs its loop (a hiredis context is not thread-safe, pitfall #7).
 * Callbacks run on that loop, never from inside the call that caused them
 * unless said otherwise; they may call any function here, including
 * hd_redis_link_close.
 */
#ifndef HERALD_ENGINE_REDIS_LINK_H
#define HERALD_ENGINE_REDIS_LINK_H

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "engine/redis_sentinel.h"
#include "engine/redis_url.h"

typedef struct hd_redis_link hd_redis_link;
typedef struct hd_redis_script hd_redis_script;

typedef enum hd_redis_link_state {
    HD_REDIS_LINK_DOWN,       /* not connected; waiting for the next attempt (or not started) */
    HD_REDIS_LINK_CONNECTING, /* an attempt is under way */
    HD_REDIS_LINK_UP,         /* both connections ready; commands are sent */
} hd_redis_link_state;

/* How a command was answered. */
typedef enum hd_redis_status {
    /* Redis answered: reply is its answer, which may be an error reply (REDIS_REPLY_ERROR). */
    HD_REDIS_OK,
    /* The link is not UP: nothing was sent. Returned at once, never passed to a callback. */
    HD_REDIS_UNAVAILABLE,
    /* More than max_inflight_bytes would be in flight: nothing was sent. Returned at once. */
    HD_REDIS_FULL,
    /* Sent, then the connection broke (or the link closed): Redis may or may not have run it. */
    HD_REDIS_OUTCOME_UNKNOWN,
    /*
     * Sent, then Redis stopped answering for timeout_ms; the link was torn down.
     * Redis may or may not have run it.
     */
    HD_REDIS_TIMEOUT,
} hd_redis_status;

/*
 * The answer to one command, called exactly once per command that was
 * sent. reply is non-NULL only with HD_REDIS_OK and is valid only during
 * the call (hiredis frees it after).
 */
typedef void hd_redis_reply_cb(void *ctx, hd_redis_status status, const redisReply *reply);

typedef struct hd_redis_link_settings {
    hd_redis_url url;
    uint32_t timeout_ms;    /* connect attempt, command and probe timeout (cluster.timeout_ms) */
    uint32_t probe_idle_ms; /* pub/sub silence before the liveness probe */
    /* Bound on the arguments' bytes of the commands in flight (one command may exceed it). */
    uint64_t max_inflight_bytes;
    /*
     * This node's own channel (required): subscribed to for as long as the
     * link lives, and probed. Messages on it are passed on like any other,
     * except the link's own probes.
     */
    const char *probe_channel;
    size_t probe_channel_len;

    /*
     * The link changed state. reason is a one-line description ("connection
     * refused by 127.0.0.1:6379", "run_id 5b8e...") valid during the call.
     * On DOWN every command in flight has been answered and no channel is
     * confirmed any more.
     */
    void (*on_state)(void *ctx, hd_redis_link_state state, const char *reason);
    /*
     * Redis confirmed a SUBSCRIBE of channel (probe_channel included): from
     * now on it delivers what is published there, and on_message passes it
     * on (nothing is passed on for a channel before this). Called again
     * after every reconnect (the link resubscribes on its own), and after a
     * channel is unsubscribed and subscribed again; not called for a channel
     * unsubscribed since.
     */
    void (*on_subscribed)(void *ctx, const char *channel, size_t channel_len);
    /* A message published on a subscribed channel; both buffers valid during the call only. */
    void (*on_message)(void *ctx, const char *channel, size_t channel_len, const char *payload,
                       size_t payload_len);
    /*
     * Optional: Redis answered a command on the command connection (the
     * handshake's included), ns nanoseconds after it was handed to hiredis
     * (the round trip, with the time spent queued behind earlier commands
     * and running the command). Not called for commands that got no answer.
     */
    void (*on_reply_time)(void *ctx, uint64_t ns);
    /*
     * Optional: Redis answered a command (after its callback), which made
     * room in flight: what found the link full (HD_REDIS_FULL) may go now.
     * Called while the link is up only, whatever the command (a caller's,
     * or the link's own), so that room is never freed unnoticed.
     */
    void (*on_room)(void *ctx);
    void *ctx;

    /*
     * Optional, Redis Sentinel: sentinel_count > 0 finds the master through
     * these sentinels (copied), by the name sentinel_master, with AUTH
     * sentinel_password ("" or NULL = none) to the sentinels. url's host and
     * port are then unused; its user, password and db are the master's.
     */
    const hd_sentinel_addr *sentinels;
    size_t sentinel_count;
    const char *sentinel_master;
    const char *sentinel_password;
} hd_redis_link_settings;

/*
 * The delay before reconnect attempt number attempt (0 = the first after a
 * failure): min(5 s, 250 ms * 2^attempt) scaled by 0.5 + uniform / 2,
 * uniform in [0, 1) (so the delay lies in [cap / 2, cap), "equal jitter").
 * Pure.
 */
uint32_t hd_redis_link_backoff_ms(unsigned attempt, double uniform);

/*
 * Finds "field:value" among the lines of an INFO answer (info, len bytes):
 * the value, without its line end, at *value for *value_len bytes. Pure.
 */
bool hd_redis_info_field(const char *info, size_t len, const char *field, const char **value,
                         size_t *value_len);

/*
 * Whether libuv stopped the poll of ac (attached with the libuv adapter)
 * after a socket error that the adapter does not pass on (pitfall #1: a
 * refused connect, a reset); *err is then the socket's error (0 if none).
 */
bool hd_redis_poll_failed(const redisAsyncContext *ac, int *err);

/* "down", "connecting" or "up". */
const char *hd_redis_link_state_name(hd_redis_link_state state);

/*
 * A link on loop, DOWN until hd_redis_link_start. settings is copied (the
 * probe channel too). Never NULL (aborts on OOM).
 */
hd_redis_link *hd_redis_link_new(uv_loop_t *loop, const hd_redis_link_settings *settings);

/*
 * Starts the first connect attempt. on_state is called from inside:
 * CONNECTING, or DOWN when the host cannot even be looked up.
 */
void hd_redis_link_start(hd_redis_link *link);

/*
 * Ends the link: every command in flight is answered (OUTCOME_UNKNOWN)
 * before this returns, both connections and every registered script are
 * freed, and no callback runs after it returns. The memory itself is
 * released by handle close callbacks: run the loop until it has no more
 * handles, as uv_loop_close requires anyway. The link must not be used
 * after this call. May be called from inside any of the link's callbacks.
 */
void hd_redis_link_close(hd_redis_link *link);

hd_redis_link_state hd_redis_link_get_state(const hd_redis_link *link);

/* The bytes of the commands in flight (counted against max_inflight_bytes). */
uint64_t hd_redis_link_inflight_bytes(const hd_redis_link *link);

/*
 * "host:port" of the server of the current (or last) attempt: the URL's,
 * or the master the sentinels named; "" before the first.
 */
const char *hd_redis_link_address(const hd_redis_link *link);

/* The run_id of the Redis server while UP ("" otherwise): it changes when Redis restarts. */
const char *hd_redis_link_run_id(const hd_redis_link *link);

/*
 * Sends a command: argc arguments with their lengths (the command name is
 * argv[0]); they are copied before this returns. Returns HD_REDIS_OK when
 * it was sent, and cb(ctx, ...) is then called exactly once, later; or
 * HD_REDIS_UNAVAILABLE / HD_REDIS_FULL, and cb is never called.
 * No blocking commands (BLPOP, WAIT...): the command timeout would take
 * one for a Redis that stopped answering.
 */
hd_redis_status hd_redis_link_command(hd_redis_link *link, int argc, const char **argv,
                                      const size_t *argvlen, hd_redis_reply_cb *cb, void *ctx);

/*
 * Registers a Lua script (body copied) for hd_redis_link_evalsha: loaded
 * with SCRIPT LOAD at every connect, and at once when the link is UP. The
 * script belongs to the link and lives until hd_redis_link_close.
 */
const hd_redis_script *hd_redis_link_script(hd_redis_link *link, const char *body, size_t len);

/* The script's SHA1, 40 lowercase hex digits: what EVALSHA names it by. */
const char *hd_redis_script_sha(const hd_redis_script *script);

/*
 * EVALSHA script with nkeys keys followed by the other arguments, argc in
 * all (argv[0 .. nkeys-1] are the keys). Answered like
 * hd_redis_link_command; a NOSCRIPT answer is not passed on but followed
 * by SCRIPT LOAD and the same EVALSHA, once, whose answer is passed on.
 */
hd_redis_status hd_redis_link_evalsha(hd_redis_link *link, const hd_redis_script *script, int nkeys,
                                      int argc, const char **argv, const size_t *argvlen,
                                      hd_redis_reply_cb *cb, void *ctx);

/*
 * Like hd_redis_link_evalsha, but a NOSCRIPT answer is passed on (after the
 * link sent SCRIPT LOAD, so that what is sent next finds the script): for a
 * call that must keep its place among the commands sent with it (a retry
 * would run after them).
 */
hd_redis_status hd_redis_link_evalsha_once(hd_redis_link *link, const hd_redis_script *script,
                                           int nkeys, int argc, const char **argv,
                                           const size_t *argvlen, hd_redis_reply_cb *cb, void *ctx);

/*
 * Adds channel (copied) to the wanted set; idempotent. When the link is UP
 * the SUBSCRIBE goes out at the end of this loop pass, otherwise at the
 * next UP; on_subscribed follows Redis's confirmation.
 */
void hd_redis_link_subscribe(hd_redis_link *link, const char *channel, size_t len);

/* Removes channel from the wanted set; no message of it is passed on from now. Idempotent. */
void hd_redis_link_unsubscribe(hd_redis_link *link, const char *channel, size_t len);

#endif
