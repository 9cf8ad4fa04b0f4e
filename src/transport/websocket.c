/*
 * WebSocket sessions. Inbound bytes go through the pure frame reader; its
 * events become control-protocol commands (or echoes). Outbound, a
 * subscribed message is the message's shared frame: HD_WIRE_WS_DEFLATE when
 * the connection negotiated permessage-deflate with a full window, else
 * HD_WIRE_WS. Replies (acks, errors, gaps) are per-connection frames, sent
 * uncompressed (RSV1 is per message, so that is always allowed).
 */
#include "transport/websocket.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/alloc.h"
#include "herald/clock.h"
#include "engine/engine.h"
#include "http/access_log.h"
#include "http/response.h"
#include "ops/metrics.h"
#include "transport/authorize.h"
#include "transport/catch_up.h"
#include "transport/context.h"
#include "transport/publish.h"
#include "transport/subscribe_params.h"
#include "transport/ws_control.h"
#include "ws/ws_deflate.h"
#include "ws/ws_frame.h"
#include "ws/ws_handshake.h"

typedef struct ws_session ws_session;

/*
 * A publish whose ack is owed. The engine answers it in a callback: at once
 * for the memory engine (the command still owns its ref then), or later, when
 * the publish stays listed in the session and owns the ref until it is acked,
 * or cancelled when the session closes first. One is embedded in the session,
 * so the common case, one publish at a time, allocates nothing.
 */
typedef struct ws_publish {
    hd_list node; /* in session->publishes while the engine holds it */
    ws_session *session;
    hd_engine_request *request; /* NULL while the engine's call is under way */
    char *ref;                  /* the command's ref: borrowed during the call, then owned */
} ws_publish;

/*
 * A subscribe without since that came while a resume was still being sent:
 * its topics are subscribed at once, but the ack waits for a read of them
 * (without a cursor), as a first subscribe's does, so that everything
 * published after the ack reaches the client (an engine that confirms
 * subscriptions later). Listed in the session until then. Live messages of
 * the topics it added are held until then too, sent after the ack: a read
 * that fails undoes those topics and drops what was held of them, so the
 * client saw nothing of a subscription it was refused (and misses nothing
 * when it subscribes again).
 */
typedef struct ws_late_ack {
    hd_list node;
    ws_session *session;
    hd_engine_request *read; /* NULL while the engine's call is under way */
    char *ref;               /* the command's ref, owned */
    char **added;            /* the topics the subscribe added, owned copies */
    size_t added_count;
    hd_message **held; /* live messages of added topics, one reference each, oldest first */
    size_t held_count;
    size_t held_cap;
} ws_late_ack;

/* Late acks one session may have pending: each holds an engine read. */
#define MAX_LATE_ACKS 16

struct ws_session {
    hd_subscriber subscriber; /* first: the hub hands it back to deliver */
    hd_conn *conn;
    bool echo;
    bool close_sent;
    hd_ws_deflate_params deflate;
    hd_access_stream log; /* for the access log's line when the stream ends */
    /*
     * Both exist only while a frame or message is being received: an idle
     * connection holds no reader state and no zlib stream (herald asks for
     * client_no_context_takeover, so nothing carries over between messages).
     */
    hd_ws_inflater *inflater;
    hd_ws_reader *reader;
    hd_catch_up *catch_up; /* while history is still owed */
    /*
     * A subscribe the engine has yet to confirm (catch_up.h): acked then,
     * or refused and undone (the topics it added, owned copies).
     */
    bool subscribing;
    char *subscribing_ref;
    char **subscribing_added;
    size_t subscribing_added_count;
    /* What the client may do, read from the upgrade request and kept for the session's
     * lifetime: a copy, since a reload (SIGHUP) may free the auth it came from. */
    hd_access access;
    uint64_t last_heard_ms;      /* monotonic time of the last bytes from the peer */
    uint64_t message_started_ms; /* when the data message being received began; 0: none */
    uint64_t pending_reserved;   /* of limits.max_pending_body_bytes, for the reader's message */
    ws_publish publish;          /* for one publish in flight; more are allocated */
    hd_list publishes;           /* in flight, in the order they were sent */
    hd_list late_acks;           /* ws_late_ack, oldest first */
    size_t late_ack_count;
    uint64_t held_bytes; /* hd_message_cost of the late acks' held messages */
};

/* ------------------------------------------------------------------------ */
/* Outbound frames                                                          */

/* The envelope as a text frame; compressed with deflater when it is not NULL. */
static hd_buf *encode_envelope_frame(const hd_message *msg, hd_ws_deflater *deflater)
{
    hd_strbuf envelope;
    hd_strbuf_init(&envelope);
    hd_strbuf_reserve(&envelope, msg->data_len + msg->topic_len + 128);
    hd_message_append_envelope(msg, &envelope);
    hd_buf *frame = deflater != NULL
                        ? hd_ws_deflate_frame(deflater, HD_WS_TEXT, envelope.data, envelope.len)
                        : hd_ws_frame_build(HD_WS_TEXT, false, envelope.data, envelope.len);
    hd_strbuf_free(&envelope);
    return frame;
}

hd_buf *hd_websocket_encode_message(const hd_message *msg, void *ctx)
{
    (void)ctx;
    return encode_envelope_frame(msg, NULL);
}

static hd_buf *encode_compressed(const hd_message *msg, void *deflater)
{
    return encode_envelope_frame(msg, deflater);
}

static bool compresses_shared(const ws_session *session)
{
    return session->deflate.enabled && session->deflate.server_max_window_bits == 15;
}

/* Ends the session with a close frame; the connection closes once it is written. */
static void send_close(ws_session *session, uint16_t code, const char *reason)
{
    if (session->close_sent)
        return;
    session->close_sent = true;
    if (session->reader != NULL)
        hd_ws_reader_stop(session->reader);
    hd_conn_send_last(session->conn, hd_ws_frame_build_close(code, reason));
}

/* Queues a frame; a peer too slow to take it is told so by session_on_slow_consumer. */
static bool send_frame(ws_session *session, hd_buf *frame, bool owned)
{
    if (session->close_sent) {
        if (owned)
            hd_buf_release(frame);
        return false;
    }
    return (owned ? hd_conn_send_owned : hd_conn_send)(session->conn, frame) == 0;
}

static void send_json(ws_session *session, hd_strbuf *json)
{
    send_frame(session, hd_ws_frame_build(HD_WS_TEXT, false, json->data, json->len), true);
    hd_strbuf_free(json);
}

/* ref: the command's, NULL when it had none (or there was no command). */
static void send_error_ref(ws_session *session, const char *ref, const char *code,
                           const char *message)
{
    hd_strbuf json;
    hd_strbuf_init(&json);
    hd_strbuf_append_str(&json, "{\"type\":\"error\",");
    hd_ws_append_ref(ref, &json);
    hd_strbuf_append_str(&json, "\"error\":");
    hd_strbuf_append_json_string(&json, code, strlen(code));
    hd_strbuf_append_str(&json, ",\"message\":");
    hd_strbuf_append_json_string(&json, message, strlen(message));
    hd_strbuf_append_str(&json, "}");
    send_json(session, &json);
}

static void send_error(ws_session *session, const hd_ws_command *command, const char *code,
                       const char *message)
{
    send_error_ref(session, command != NULL ? command->ref : NULL, code, message);
}

/*
 * A connection outlives no token: once it has expired, nothing more is
 * delivered and the connection is closed (1008). Only tokens with an exp pay
 * for reading the clock.
 */
static bool token_expired(ws_session *session)
{
    int64_t expires_ms = session->access.grant.expires_ms;
    if (expires_ms == 0 || (!session->close_sent && hd_clock_wall_ms() < expires_ms))
        return false;
    hd_conn_set_end_reason(session->conn, "token expired");
    send_close(session, HD_WS_CLOSE_POLICY, "token expired");
    return true;
}

static bool queue_message(void *ctx, hd_message *msg)
{
    ws_session *session = ctx;
    if (token_expired(session))
        return false;
    hd_buf *frame = compresses_shared(session)
                        ? hd_message_encoded(msg, HD_WIRE_WS_DEFLATE, encode_compressed,
                                             hd_transport_ws_deflater(session->conn))
                        : hd_message_encoded(msg, HD_WIRE_WS, hd_websocket_encode_message, NULL);
    if (!send_frame(session, frame, false))
        return false;
    hd_metric_add(&hd_conn_metrics(session->conn)->deliveries[HD_TRANSPORT_WEBSOCKET], 1);
    return true;
}

static void queue_gap(void *ctx, const hd_gap *gap)
{
    hd_strbuf json;
    hd_strbuf_init(&json);
    hd_strbuf_append_str(&json, "{\"type\":\"gap\",");
    hd_gap_append_json_fields(gap, &json);
    hd_strbuf_append_str(&json, "}");
    send_json(ctx, &json);
}

static void send_ack_ref(ws_session *session, const char *ref, const hd_strbuf *extra);

/* Undoes what a refused subscribe added; the topics the session had before stay. */
static void unsubscribe_added(ws_session *session, char **added, size_t count)
{
    hd_hub *hub = hd_conn_hub(session->conn);
    for (size_t i = 0; i < count; i++)
        hd_hub_unsubscribe(hub, &session->subscriber, added[i], strlen(added[i]));
}

static void free_topics(char **topics, size_t count)
{
    for (size_t i = 0; i < count; i++)
        free(topics[i]);
    free(topics);
}

/* Drops topic from a list of owned copies; returns whether it was there. */
static bool drop_topic(char **topics, size_t *count, const char *topic)
{
    for (size_t i = 0; i < *count; i++) {
        if (strcmp(topics[i], topic) == 0) {
            free(topics[i]);
            topics[i] = topics[--*count];
            return true;
        }
    }
    return false;
}

/*
 * A topic a pending op added belongs to it only until a newer op names it
 * (confirmed: the topic stays) or the client unsubscribes: a refusal of
 * the older op must not undo what came after. Live messages the catch-up
 * holds of it are then the newer op's too: losing them is a hole. Those a
 * late ack held of it are sent now when the topic stays (live delivery of
 * it goes on from here), dropped when the client unsubscribed.
 */
static void late_ack_release(ws_late_ack *ack, const char *topic, bool send);

static void disown_topic(ws_session *session, const char *topic, bool confirmed)
{
    if (drop_topic(session->subscribing_added, &session->subscribing_added_count, topic))
        hd_catch_up_keep_topic(session->catch_up, topic, strlen(topic));
    hd_list *pos, *tmp;
    hd_list_foreach_safe(pos, tmp, &session->late_acks)
    {
        ws_late_ack *ack = hd_container_of(pos, ws_late_ack, node);
        if (drop_topic(ack->added, &ack->added_count, topic))
            late_ack_release(ack, topic, confirmed);
    }
}

static void forget_subscribing(ws_session *session)
{
    free_topics(session->subscribing_added, session->subscribing_added_count);
    free(session->subscribing_ref);
    session->subscribing_added = NULL;
    session->subscribing_added_count = 0;
    session->subscribing_ref = NULL;
    session->subscribing = false;
}

/* The engine answered a subscribe's first read: ack it, or undo it (a cursor beyond the newest
 * id). A subscription of the upgrade request has no command: refused, it ends with the error. */
static void session_on_started(void *ctx, bool valid)
{
    ws_session *session = ctx;
    if (valid) {
        if (session->subscribing)
            send_ack_ref(session, session->subscribing_ref, NULL);
        forget_subscribing(session);
        return;
    }
    unsubscribe_added(session, session->subscribing_added, session->subscribing_added_count);
    if (!session->subscribing)
        hd_hub_unsubscribe_all(hd_conn_hub(session->conn), &session->subscriber);
    send_error_ref(session, session->subscribing_ref, "invalid_cursor",
                   "since is not an id herald issued: malformed, or beyond the newest id.");
    forget_subscribing(session);
}

#define UNAVAILABLE_MESSAGE "The message store could not be read: try again shortly."

/*
 * The catch-up's read failed (the store refused it or cannot take it now).
 * A subscribe op not acked yet gets an error frame and is undone, as for a
 * cursor refused; the connection and its other subscriptions stay. Live
 * messages skipped meanwhile of the topics it added go with it (the
 * catch-up was told they are fresh). Once history was being sent or live
 * messages were skipped of topics the session had before (a hole), or for
 * the upgrade request's subscription (no op to answer), the connection is
 * closed with 1013, so that nothing after the hole is delivered: the
 * client reconnects and resumes from its last id.
 */
static void session_on_failed(void *ctx, bool hole)
{
    ws_session *session = ctx;
    if (!hole && session->subscribing) {
        unsubscribe_added(session, session->subscribing_added, session->subscribing_added_count);
        send_error_ref(session, session->subscribing_ref, "unavailable", UNAVAILABLE_MESSAGE);
        forget_subscribing(session);
        return;
    }
    /* A subscribe op still owed its answer gets it before the close. */
    send_error_ref(session, session->subscribing ? session->subscribing_ref : NULL, "unavailable",
                   UNAVAILABLE_MESSAGE);
    forget_subscribing(session);
    hd_conn_set_end_reason(session->conn, "unavailable");
    send_close(session, HD_WS_CLOSE_TRY_AGAIN, "unavailable");
}

static const hd_catch_up_ops ws_catch_up_ops = {
    .send_message = queue_message,
    .send_gap = queue_gap,
    .started = session_on_started,
    .failed = session_on_failed,
};

static void deliver_live(ws_session *session, hd_message *msg)
{
    if (queue_message(session, msg))
        hd_conn_note_publish(session->conn, msg->time_ms);
}

static bool late_ack_holds(ws_session *session, hd_message *msg);

static void session_on_deliver(hd_subscriber *sub, hd_message *msg)
{
    ws_session *session = (ws_session *)sub;
    if (!hd_catch_up_holds(session->catch_up, msg) && !late_ack_holds(session, msg))
        deliver_live(session, msg);
}

static void session_on_gap(hd_subscriber *sub, const hd_gap *gap)
{
    queue_gap((ws_session *)sub, gap);
}

static const hd_subscriber_ops ws_subscriber_ops = {
    .deliver = session_on_deliver,
    .gap = session_on_gap,
    .transport = HD_TRANSPORT_WEBSOCKET,
};

/* ------------------------------------------------------------------------ */
/* Control protocol                                                         */

/* extra: more members, each followed by a comma, or NULL. */
static void send_ack_ref(ws_session *session, const char *ref, const hd_strbuf *extra)
{
    hd_strbuf json;
    hd_strbuf_init(&json);
    hd_strbuf_append_str(&json, "{\"type\":\"ack\",");
    hd_ws_append_ref(ref, &json);
    if (extra != NULL)
        hd_strbuf_append(&json, extra->data, extra->len);
    /* Every member ends with a comma; the last one closes the object instead. */
    json.data[json.len - 1] = '}';
    send_json(session, &json);
}

static void send_ack(ws_session *session, const hd_ws_command *command, const hd_strbuf *extra)
{
    send_ack_ref(session, command->ref, extra);
}

/* Whether the session may act on the topic; sends the error frame when not. */
static bool command_allowed(ws_session *session, const hd_ws_command *command,
                            hd_auth_action action, const char *topic)
{
    if (hd_access_allows(&session->access, action, topic, strlen(topic)))
        return true;
    const char *verb = action == HD_AUTH_PUBLISH ? "publish" : "subscribe";
    char message[320];
    hd_auth_refusal why =
        session->access.has_token ? HD_AUTH_REFUSED_FORBIDDEN : HD_AUTH_REFUSED_NO_TOKEN;
    hd_metric_add(&hd_conn_metrics(session->conn)->auth_refusals[why], 1);
    if (session->access.has_token) {
        snprintf(message, sizeof(message), "The token does not allow you to %s to '%s'.", verb,
                 topic);
        send_error(session, command, "forbidden", message);
    } else {
        snprintf(message, sizeof(message), "A token is required to %s to '%s'.", verb, topic);
        send_error(session, command, "unauthorized", message);
    }
    return false;
}

/* Sends (send) or drops the messages ack held, oldest first, of topic (NULL: all). */
static void late_ack_release(ws_late_ack *ack, const char *topic, bool send)
{
    ws_session *session = ack->session;
    size_t topic_len = topic != NULL ? strlen(topic) : 0;
    size_t kept = 0;
    for (size_t i = 0; i < ack->held_count; i++) {
        hd_message *msg = ack->held[i];
        if (topic != NULL &&
            (msg->topic_len != topic_len || memcmp(msg->topic, topic, topic_len) != 0)) {
            ack->held[kept++] = msg;
            continue;
        }
        session->held_bytes -= hd_message_cost(msg);
        if (send)
            deliver_live(session, msg);
        hd_message_release(msg);
    }
    ack->held_count = kept;
}

/*
 * Holds msg when a late ack added its topic. What all late acks hold is
 * bounded by limits.max_outbound_bytes, as the queue it would go to: past
 * that the connection is closed with 1013, and the client resumes from
 * its last id (what was held was never sent).
 */
static bool late_ack_holds(ws_session *session, hd_message *msg)
{
    hd_list *pos;
    for (pos = session->late_acks.next; pos != &session->late_acks; pos = pos->next) {
        ws_late_ack *ack = hd_container_of(pos, ws_late_ack, node);
        for (size_t i = 0; i < ack->added_count; i++) {
            if (strlen(ack->added[i]) != msg->topic_len ||
                memcmp(ack->added[i], msg->topic, msg->topic_len) != 0)
                continue;
            session->held_bytes += hd_message_cost(msg);
            if (session->held_bytes > hd_conn_config(session->conn)->limits.max_outbound_bytes) {
                session->held_bytes -= hd_message_cost(msg);
                hd_conn_set_end_reason(session->conn, "too many messages held");
                send_close(session, HD_WS_CLOSE_TRY_AGAIN, "too many messages held");
                return true;
            }
            if (ack->held_count == ack->held_cap) {
                ack->held_cap = ack->held_cap ? ack->held_cap * 2 : 8;
                ack->held = hd_realloc(ack->held, ack->held_cap * sizeof(*ack->held));
            }
            ack->held[ack->held_count++] = hd_message_retain(msg);
            return true;
        }
    }
    return false;
}

static void late_ack_forget(ws_late_ack *ack)
{
    late_ack_release(ack, NULL, false);
    free(ack->held);
    hd_list_unlink(&ack->node);
    ack->session->late_ack_count--;
    free(ack->ref);
    free_topics(ack->added, ack->added_count);
    free(ack);
}

/*
 * A read that answered: the ack, then what was held of the topics the op
 * added. A read that failed confirms nothing: the op is refused, the
 * topics it added are unsubscribed and what was held of them is dropped
 * (late_ack_forget), so the client saw nothing of them and its retry
 * subscribes afresh.
 */
static void late_ack_on_read(void *ctx, const hd_history_result *result)
{
    ws_late_ack *ack = ctx;
    ws_session *session = ack->session;
    if (result->status == HD_HUB_OK) {
        send_ack_ref(session, ack->ref, NULL);
        late_ack_release(ack, NULL, true);
    } else {
        unsubscribe_added(session, ack->added, ack->added_count);
        send_error_ref(session, ack->ref, "unavailable", UNAVAILABLE_MESSAGE);
    }
    late_ack_forget(ack);
}

/* The session goes first: the reads' answers go nowhere. */
static void cancel_late_acks(ws_session *session)
{
    while (!hd_list_empty(&session->late_acks)) {
        ws_late_ack *ack = hd_container_of(session->late_acks.next, ws_late_ack, node);
        hd_engine_cancel(hd_conn_engine(session->conn), ack->read);
        late_ack_forget(ack);
    }
}

/*
 * Acks a subscribe without since made while a resume is under way (the
 * session has one catch-up only): at once when the engine subscribes at
 * once or cannot confirm now (as hd_catch_up_start does), else once a read
 * of the topics without a cursor answered, which the engine answers only
 * after its subscriptions to them are in place.
 */
static void ack_subscribe_during_resume(ws_session *session, hd_ws_command *command,
                                        const bool *added)
{
    hd_engine *engine = hd_conn_engine(session->conn);
    if (hd_engine_subscribes_at_once(engine) || hd_engine_get_state(engine) != HD_ENGINE_UP) {
        send_ack(session, command, NULL);
        return;
    }
    size_t lens[command->topic_count];
    for (size_t i = 0; i < command->topic_count; i++)
        lens[i] = strlen(command->topics[i]);
    ws_late_ack *ack = hd_calloc(1, sizeof(*ack));
    ack->session = session;
    ack->ref = command->ref;
    command->ref = NULL;
    ack->added = hd_calloc(command->topic_count, sizeof(*ack->added));
    for (size_t i = 0; i < command->topic_count; i++) {
        if (added[i])
            ack->added[ack->added_count++] = hd_strndup(command->topics[i], lens[i]);
    }
    hd_list_insert_tail(&session->late_acks, &ack->node);
    session->late_ack_count++;
    hd_history_query query = {
        .topics = command->topics,
        .topic_lens = lens,
        .topic_count = command->topic_count,
        .limit = 1,
    };
    hd_engine_request *read = hd_engine_read(engine, &query, late_ack_on_read, ack);
    if (read != NULL) /* else acked already, and ack is gone */
        ack->read = read;
}

/* Subscribes to every topic or none; then acks and catches up from since. */
static void run_subscribe(ws_session *session, hd_ws_command *command)
{
    hd_hub *hub = hd_conn_hub(session->conn);
    for (size_t i = 0; i < command->topic_count; i++) {
        if (!command_allowed(session, command, HD_AUTH_SUBSCRIBE, command->topics[i]))
            return;
    }
    hd_cursor cursor;
    const char *since = command->since ? command->since : "";
    if (hd_hub_parse_cursor(hub, since, strlen(since), &cursor) != HD_HUB_OK) {
        send_error(session, command, "invalid_cursor",
                   "since is not an id herald issued: malformed, or beyond the newest id.");
        return;
    }
    if (cursor.present && session->catch_up != NULL) {
        send_error(session, command, "resume_in_progress",
                   "A resume is still being sent; subscribe with since once it has finished.");
        return;
    }
    if (session->catch_up != NULL && session->late_ack_count == MAX_LATE_ACKS) {
        send_error(session, command, "resume_in_progress",
                   "Too many subscribes wait for a resume being sent; retry once it has finished.");
        return;
    }
    size_t limit = hd_conn_config(session->conn)->limits.max_topics_per_subscription;
    /* Counts repeated topics twice: conservative, and known before anything changes. */
    if (session->subscriber.subscription_count + command->topic_count > limit) {
        send_error(session, command, "too_many_topics",
                   "The connection would hold more than limits.max_topics_per_subscription "
                   "topics.");
        return;
    }
    bool added[command->topic_count];
    for (size_t i = 0; i < command->topic_count; i++) {
        size_t before = session->subscriber.subscription_count;
        if (hd_hub_subscribe(hub, &session->subscriber, command->topics[i],
                             strlen(command->topics[i])) != HD_HUB_OK) {
            /* All or nothing: drop what this command added, keep what was there. */
            for (size_t j = 0; j < i; j++) {
                if (added[j])
                    hd_hub_unsubscribe(hub, &session->subscriber, command->topics[j],
                                       strlen(command->topics[j]));
            }
            send_error(session, command, "topic_limit",
                       "The server holds limits.max_topics topics already.");
            return;
        }
        added[i] = session->subscriber.subscription_count > before;
    }
    for (size_t i = 0; i < command->topic_count; i++)
        disown_topic(session, command->topics[i], true);
    if (!cursor.present && session->catch_up != NULL) {
        ack_subscribe_during_resume(session, command, added);
        return;
    }
    size_t lens[command->topic_count];
    bool fresh[command->topic_count];
    session->subscribing = true;
    session->subscribing_ref = command->ref != NULL ? hd_strdup(command->ref) : NULL;
    /* Only an engine that confirms later may refuse the cursor and have them undone. */
    bool at_once = hd_engine_subscribes_at_once(hd_conn_engine(session->conn));
    if (!at_once)
        session->subscribing_added = hd_calloc(command->topic_count, sizeof(char *));
    for (size_t i = 0; i < command->topic_count; i++) {
        lens[i] = strlen(command->topics[i]);
        fresh[i] = added[i] && !at_once;
        if (fresh[i])
            session->subscribing_added[session->subscribing_added_count++] =
                hd_strndup(command->topics[i], lens[i]);
    }
    hd_catch_up_start(&session->catch_up, session->conn, &session->subscriber, &ws_catch_up_ops,
                      session, (char *const *)command->topics, lens, fresh, command->topic_count,
                      &cursor);
}

static void run_unsubscribe(ws_session *session, const hd_ws_command *command)
{
    for (size_t i = 0; i < command->topic_count; i++) {
        size_t len = strlen(command->topics[i]);
        hd_hub_unsubscribe(hd_conn_hub(session->conn), &session->subscriber, command->topics[i],
                           len);
        hd_catch_up_remove_topic(&session->catch_up, command->topics[i], len);
        disown_topic(session, command->topics[i], false);
    }
    send_ack(session, command, NULL);
}

/* A publish the engine held is over: its ref and, unless it is the embedded one, itself go. */
static void publish_forget(ws_publish *publish)
{
    hd_list_unlink(&publish->node);
    free(publish->ref);
    if (publish != &publish->session->publish)
        free(publish);
}

/* Acks a publish with its id, or sends the error its refusal stands for. */
static void publish_on_done(void *ctx, const hd_publish_outcome *outcome)
{
    ws_publish *publish = ctx;
    ws_session *session = publish->session;
    if (outcome->status == HD_HUB_OK) {
        hd_strbuf extra;
        hd_strbuf_init(&extra);
        hd_publish_append_result(&extra, outcome, 0);
        hd_strbuf_append(&extra, ",", 1);
        send_ack_ref(session, publish->ref, &extra);
        hd_strbuf_free(&extra);
    } else {
        hd_publish_refusal refusal = hd_publish_refusal_of(outcome->status);
        send_error_ref(session, publish->ref, refusal.code, refusal.message);
    }
    if (publish->request != NULL) /* else answered within the call: the command owns the ref */
        publish_forget(publish);
}

/* The publishes the engine still holds, when the session goes first: their acks go nowhere. */
static void cancel_publishes(ws_session *session)
{
    while (!hd_list_empty(&session->publishes)) {
        ws_publish *publish = hd_container_of(session->publishes.next, ws_publish, node);
        hd_engine_cancel(hd_conn_engine(session->conn), publish->request);
        publish_forget(publish);
    }
}

static void run_publish(ws_session *session, hd_ws_command *command)
{
    if (!command_allowed(session, command, HD_AUTH_PUBLISH, command->topic))
        return;
    if (command->data_len > hd_conn_config(session->conn)->limits.max_message_bytes) {
        send_error(session, command, "payload_too_large",
                   "The data exceeds limits.max_message_bytes.");
        return;
    }
    ws_publish *publish =
        hd_list_linked(&session->publish.node) ? hd_alloc(sizeof(*publish)) : &session->publish;
    *publish = (ws_publish){.session = session, .ref = command->ref};
    hd_list_init(&publish->node);
    hd_publish_item item = {
        .topic = command->topic,
        .topic_len = strlen(command->topic),
        .event = command->event,
        .event_len = command->event ? strlen(command->event) : 0,
        .data = command->data,
        .data_len = command->data_len,
        .idempotency_key = command->idempotency_key,
        .idempotency_key_len = command->idempotency_key ? strlen(command->idempotency_key) : 0,
    };
    hd_engine_request *request = hd_engine_publish(hd_conn_engine(session->conn), &item, 1,
                                                   hd_clock_wall_ms(), publish_on_done, publish);
    if (request == NULL)
        return; /* acked already */
    publish->request = request;
    command->ref = NULL; /* the publish owns it until its ack */
    hd_list_insert_tail(&session->publishes, &publish->node);
}

static void run_command(ws_session *session, const char *text, size_t len)
{
    if (token_expired(session))
        return;
    hd_ws_command command;
    size_t max_topics = hd_conn_config(session->conn)->limits.max_topics_per_subscription;
    if (hd_ws_command_parse(text, len, max_topics, &command) != 0) {
        send_error(session, &command, command.error, command.message);
    } else {
        switch (command.op) {
        case HD_WS_OP_SUBSCRIBE:
            run_subscribe(session, &command);
            break;
        case HD_WS_OP_UNSUBSCRIBE:
            run_unsubscribe(session, &command);
            break;
        case HD_WS_OP_PUBLISH:
            run_publish(session, &command);
            break;
        case HD_WS_OP_PING:
            send_ack(session, &command, NULL);
            break;
        }
    }
    hd_ws_command_free(&command);
}

/* ------------------------------------------------------------------------ */
/* Reader events                                                            */

static void echo_message(ws_session *session, hd_ws_opcode opcode, const char *data, size_t len)
{
    hd_buf *frame =
        compresses_shared(session)
            ? hd_ws_deflate_frame(hd_transport_ws_deflater(session->conn), opcode, data, len)
            : hd_ws_frame_build(opcode, false, data, len);
    send_frame(session, frame, true);
}

static void reader_on_message(void *ctx, hd_ws_opcode opcode, const char *data, size_t len)
{
    ws_session *session = ctx;
    if (session->echo)
        echo_message(session, opcode, data, len);
    else if (opcode == HD_WS_TEXT)
        run_command(session, data, len);
    else
        send_error(session, NULL, "unsupported_data",
                   "herald carries text: send control messages as JSON text frames.");
}

static void reader_on_control(void *ctx, hd_ws_opcode opcode, uint16_t code, const char *payload,
                              size_t len)
{
    ws_session *session = ctx;
    if (opcode == HD_WS_PING) {
        send_frame(session, hd_ws_frame_build(HD_WS_PONG, false, payload, len), true);
    } else if (opcode == HD_WS_CLOSE) {
        /* Echo the peer's code to complete the closing handshake. */
        hd_conn_set_end_reason(session->conn, "client closed");
        send_close(session, code == HD_WS_CLOSE_NO_STATUS ? HD_WS_CLOSE_NORMAL : code, "");
    }
}

static const hd_ws_reader_callbacks reader_callbacks = {
    .on_message = reader_on_message,
    .on_control = reader_on_control,
};

/* ------------------------------------------------------------------------ */
/* Stream hooks                                                             */

static size_t frame_limit(const hd_conn *conn, bool echo);

static void release_reader(ws_session *session)
{
    hd_ws_reader_free(session->reader);
    hd_ws_inflater_free(session->inflater);
    session->reader = NULL;
    session->inflater = NULL;
}

/*
 * Called after each read and timeout, outside the reader's callbacks: a
 * closing session, or one between messages, gives its reader back; a
 * message being received counts against limits.max_pending_body_bytes
 * (checked after each read, so a message may pass it by one read's worth
 * before it is dropped). Past it the peer is told to come back (1013).
 */
static void hold_message(ws_session *session)
{
    if (session->reader != NULL && (session->close_sent || hd_ws_reader_idle(session->reader)))
        release_reader(session);
    uint64_t held = session->reader != NULL ? hd_ws_reader_held_bytes(session->reader) : 0;
    if (hd_conn_hold_pending(session->conn, &session->pending_reserved, held))
        return;
    release_reader(session);
    hd_conn_hold_pending(session->conn, &session->pending_reserved, 0);
    hd_metric_add(&hd_conn_metrics(session->conn)->pending_body_refusals[HD_PROTOCOL_WEBSOCKET], 1);
    hd_conn_set_end_reason(session->conn, "server busy");
    send_close(session, HD_WS_CLOSE_TRY_AGAIN,
               "server busy: too many messages being received; try again later");
}

static void session_on_data(hd_conn *conn, void *ctx, const char *bytes, size_t len)
{
    ws_session *session = ctx;
    session->last_heard_ms = hd_conn_now_ms(session->conn);
    if (session->close_sent)
        return;
    if (session->reader == NULL) {
        if (session->deflate.enabled)
            session->inflater = hd_ws_inflater_new(&session->deflate);
        session->reader = hd_ws_reader_new(frame_limit(conn, session->echo), session->inflater);
    }
    const char *reason = NULL;
    uint16_t code =
        hd_ws_reader_feed(session->reader, bytes, len, &reader_callbacks, session, &reason);
    if (code != 0) {
        hd_metric_add(&hd_conn_metrics(conn)->protocol_errors[HD_PROTOCOL_WEBSOCKET], 1);
        hd_conn_set_end_reason(conn, "protocol error");
        send_close(session, code, reason);
    } else if (!hd_ws_reader_in_message(session->reader)) {
        session->message_started_ms = 0;
    } else if (session->message_started_ms == 0) {
        session->message_started_ms = session->last_heard_ms;
    }
    hold_message(session);
}

static void session_on_heartbeat(hd_conn *conn, void *ctx)
{
    ws_session *session = ctx;
    uint64_t silence = hd_conn_now_ms(session->conn) - session->last_heard_ms;
    uint64_t limit = 2000ull * hd_conn_config(conn)->heartbeat_s;
    if (silence >= limit) {
        hd_conn_set_end_reason(conn, "peer silent");
        send_close(session, HD_WS_CLOSE_POLICY, "no frame from the peer within 2 x heartbeat_s");
        hold_message(session);
        return;
    }
    if (token_expired(session))
        return;
    /*
     * A message trickled in a byte at a time holds its buffer (up to the frame
     * limit) for as long as the peer likes: give it the same deadline.
     */
    if (session->message_started_ms != 0 &&
        hd_conn_now_ms(conn) - session->message_started_ms >= limit) {
        hd_conn_set_end_reason(conn, "message timeout");
        send_close(session, HD_WS_CLOSE_POLICY, "message not completed within 2 x heartbeat_s");
        hold_message(session);
        return;
    }
    send_frame(session, hd_ws_frame_build(HD_WS_PING, false, "", 0), true);
}

static void session_on_drain(hd_conn *conn, void *ctx)
{
    (void)conn;
    ws_session *session = ctx;
    hd_catch_up_continue(&session->catch_up);
}

/* Told with 1013 (it can come back with its last id), not cut off silently. */
static void session_on_slow_consumer(hd_conn *conn, void *ctx)
{
    (void)conn;
    send_close(ctx, HD_WS_CLOSE_TRY_AGAIN, "slow consumer: resume from your last id");
}

static void session_on_shutdown(hd_conn *conn, void *ctx)
{
    (void)conn;
    send_close(ctx, HD_WS_CLOSE_GOING_AWAY, "server shutting down");
}

static void session_on_close(hd_conn *conn, void *ctx)
{
    ws_session *session = ctx;
    hd_access_stream_end(&session->log, conn, "websocket");
    hd_hub_unsubscribe_all(hd_conn_hub(conn), &session->subscriber);
    hd_catch_up_free(&session->catch_up);
    forget_subscribing(session);
    cancel_publishes(session);
    cancel_late_acks(session);
    release_reader(session);
    hd_conn_hold_pending(conn, &session->pending_reserved, 0);
    hd_access_free(&session->access);
    free(session);
}

static const hd_stream_ops ws_stream_ops = {
    .on_close = session_on_close,
    .on_heartbeat = session_on_heartbeat,
    .on_drain = session_on_drain,
    .on_data = session_on_data,
    .on_slow_consumer = session_on_slow_consumer,
    .on_shutdown = session_on_shutdown,
    .heartbeat_when_idle = false,
    .transport = HD_TRANSPORT_WEBSOCKET,
};

/* ------------------------------------------------------------------------ */
/* Handshake                                                                */

static bool header_has_token(const hd_conn *conn, const char *name, const char *token)
{
    size_t len;
    const char *value = hd_request_header(conn->request, name, &len);
    return value != NULL && hd_header_has_token(value, len, token);
}

static bool origin_allowed(const hd_conn *conn)
{
    size_t len;
    const char *origin = hd_request_header(conn->request, "origin", &len);
    const hd_strings *allowed = &hd_conn_config(conn)->websocket.allow_origins;
    return origin == NULL || hd_strings_contains(allowed, "*", 1) ||
           hd_strings_contains(allowed, origin, len);
}

/* Validates the upgrade request; answers and returns -1 when it is not one. */
static int check_upgrade(hd_conn *conn)
{
    size_t len;
    /* HEAD gets the head of the answer to a GET without Upgrade (RFC 6455 upgrades GET only). */
    if (conn->request->method != HTTP_GET || !header_has_token(conn, "upgrade", "websocket") ||
        !header_has_token(conn, "connection", "upgrade")) {
        hd_response_error_with(conn, 426, "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
                               "upgrade_required",
                               "This is a WebSocket endpoint: send Upgrade: websocket.");
        return -1;
    }
    const char *version = hd_request_header(conn->request, "sec-websocket-version", &len);
    if (version == NULL || len != 2 || memcmp(version, "13", 2) != 0) {
        hd_response_error_with(conn, 426, "Sec-WebSocket-Version: 13\r\n", "unsupported_version",
                               "herald speaks WebSocket version 13.");
        return -1;
    }
    const char *key = hd_request_header(conn->request, "sec-websocket-key", &len);
    if (key == NULL || !hd_ws_key_valid(key, len)) {
        hd_response_error(conn, 400, "invalid_key", 0,
                          "Sec-WebSocket-Key must be the base64 encoding of 16 bytes.");
        return -1;
    }
    if (!origin_allowed(conn)) {
        hd_response_error(conn, 403, "origin_not_allowed", 0,
                          "This Origin is not in websocket.allow_origins.");
        return -1;
    }
    return 0;
}

static void send_switching_protocols(ws_session *session, const char *extensions)
{
    hd_conn *conn = session->conn;
    size_t key_len;
    const char *key = hd_request_header(conn->request, "sec-websocket-key", &key_len);
    char accept[HD_WS_ACCEPT_SIZE];
    hd_ws_accept_key(key, key_len, accept);
    hd_strbuf head;
    hd_strbuf_init(&head);
    hd_strbuf_printf(&head,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n",
                     accept);
    if (extensions[0] != '\0')
        hd_strbuf_printf(&head, "Sec-WebSocket-Extensions: %s\r\n", extensions);
    hd_strbuf_append(&head, "\r\n", 2);
    hd_metrics_count_response(hd_conn_metrics(conn), 101);
    hd_conn_send_owned(conn, hd_strbuf_finish(&head));
}

/*
 * The largest inbound message. On /ws a message is a control message whose
 * data may be up to max_message_bytes after JSON decoding, and JSON escaping
 * can take six bytes per data byte: room for that, so an oversized publish
 * gets its payload_too_large error frame rather than a 1009 close. The echo
 * endpoint's messages are the data itself.
 */
static size_t frame_limit(const hd_conn *conn, bool echo)
{
    size_t max = hd_conn_config(conn)->limits.max_message_bytes;
    return echo ? max : 6 * max + 1024;
}

void hd_websocket_handle(hd_conn *conn, bool echo)
{
    static const char *const cursor_params[] = {"since", "last_event_id", NULL};
    if (check_upgrade(conn) != 0)
        return;
    /* ?topic=…&since=… subscribes at once, with the same rules as GET /events. */
    hd_subscribe_params params;
    hd_access access;
    memset(&params, 0, sizeof(params));
    memset(&access, 0, sizeof(access));
    if (!echo && hd_subscribe_params_parse(conn, NULL, cursor_params, false, &params, &access) != 0)
        return;
    /* The echo endpoint reaches no topic, but a refused token is refused everywhere. */
    if (echo && !hd_authorize_request(conn, &access))
        return;

    ws_session *session = hd_calloc(1, sizeof(*session));
    session->conn = conn;
    session->echo = echo;
    session->access = access; /* the session owns the grant from here */
    hd_list_init(&session->publish.node);
    hd_list_init(&session->publishes);
    hd_list_init(&session->late_acks);
    hd_subscriber_init(&session->subscriber, &ws_subscriber_ops);
    for (size_t i = 0; i < params.topic_count; i++) {
        if (hd_hub_subscribe(hd_conn_hub(conn), &session->subscriber, params.topics[i],
                             params.topic_lens[i]) != HD_HUB_OK) {
            hd_hub_unsubscribe_all(hd_conn_hub(conn), &session->subscriber);
            hd_subscribe_params_free(&params);
            hd_access_free(&session->access);
            free(session);
            hd_response_error(conn, 503, "topic_limit", 0,
                              "The server holds limits.max_topics topics already.");
            return;
        }
    }

    char extensions[256] = "";
    size_t offer_len;
    const char *offer = hd_request_header(conn->request, "sec-websocket-extensions", &offer_len);
    if (offer != NULL && hd_conn_config(conn)->websocket.compression)
        hd_ws_deflate_negotiate(offer, offer_len, &session->deflate, extensions,
                                sizeof(extensions));
    session->last_heard_ms = hd_conn_now_ms(conn);

    send_switching_protocols(session, extensions);
    hd_access_stream_start(&session->log, conn, 101);
    hd_conn_start_stream(conn, &ws_stream_ops, session);
    if (params.topic_count > 0)
        hd_catch_up_start(&session->catch_up, conn, &session->subscriber, &ws_catch_up_ops, session,
                          params.topics, params.topic_lens, NULL, params.topic_count,
                          &params.cursor);
    hd_subscribe_params_free(&params);
}
