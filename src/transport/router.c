#include "transport/router.h"

#include <string.h>

#include "herald/log.h"
#include "engine/engine.h"
#include "http/response.h"
#include "ops/metrics.h"
#include "transport/assets.h"
#include "transport/poll.h"
#include "transport/publish.h"
#include "transport/sse.h"
#include "transport/topics.h"
#include "transport/websocket.h"

#define TOPICS_PREFIX "/topics/"

static bool path_is(const hd_request *req, const char *path)
{
    size_t len = strlen(path);
    return req->path_len == len && memcmp(req->path, path, len) == 0;
}

static bool path_is_topic(const hd_request *req)
{
    size_t len = sizeof(TOPICS_PREFIX) - 1;
    return req->path_len > len && memcmp(req->path, TOPICS_PREFIX, len) == 0;
}

static bool is_echo_path(const hd_conn *conn)
{
    const char *echo_path = hd_conn_config(conn)->websocket.echo_path;
    return echo_path != NULL && echo_path[0] != '\0' && path_is(conn->request, echo_path);
}

/* The body size the request's route accepts, known once the head is parsed. */
static uint64_t route_body_limit(const hd_conn *conn)
{
    const hd_config *config = hd_conn_config(conn);
    if (path_is(conn->request, "/publish"))
        return config->limits.max_request_bytes;
    return config->limits.max_message_bytes;
}

static void answer_preflight(hd_conn *conn)
{
    static const char headers[] =
        "Access-Control-Allow-Methods: GET, POST, OPTIONS\r\n"
        "Access-Control-Allow-Headers: Content-Type, Last-Event-ID, X-Event, Authorization, "
        "Idempotency-Key\r\n"
        "Access-Control-Max-Age: 86400\r\n";
    hd_response_send(conn, 204, "text/plain", headers, "", 0, 0);
}

static void answer_health(hd_conn *conn)
{
    if (hd_conn_server_draining(conn)) {
        hd_response_error(conn, 503, "draining", HD_RESPONSE_CLOSE, "herald is shutting down.");
        return;
    }
    /* A readiness probe: a node whose engine cannot publish takes no traffic. */
    const hd_engine *engine = hd_conn_engine(conn);
    hd_engine_state state = hd_engine_get_state(engine);
    if (state != HD_ENGINE_UP) {
        hd_response_error(conn, 503, "unavailable", 0, "The %s engine is %s.",
                          hd_engine_name(engine), hd_engine_state_name(state));
        return;
    }
    hd_response_send(conn, 200, "text/plain; charset=utf-8", NULL, "ok\n", 3, 0);
}

static void answer_metrics(hd_conn *conn)
{
    hd_metrics_gauges gauges = {
        .connections = hd_conn_server_connections(conn),
        .draining = hd_conn_server_draining(conn),
    };
    hd_hub_get_stats(hd_conn_hub(conn), &gauges.hub);
    const hd_engine *engine = hd_conn_engine(conn);
    if (engine->ops->stats != NULL) {
        hd_engine_stats stats;
        engine->ops->stats(engine, &stats);
        gauges.cluster = true;
        gauges.engine_state = hd_engine_state_name(hd_engine_get_state(engine));
        gauges.engine = stats;
    }
    hd_metrics total;
    hd_conn_group_metrics(conn, &total, &gauges);
    hd_strbuf body;
    hd_strbuf_init(&body);
    hd_metrics_render(&total, &gauges, &body);
    hd_response_send(conn, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, body.data,
                     body.len, 0);
    hd_strbuf_free(&body);
}

static void answer_websocket(hd_conn *conn)
{
    hd_websocket_handle(conn, false);
}

static void answer_echo(hd_conn *conn)
{
    hd_websocket_handle(conn, true);
}

typedef void (*route_handler)(hd_conn *conn);

/* Answers 405 for a known path; its route has no handler then. */
static route_handler refuse_method(hd_conn *conn, const char *allow)
{
    hd_response_method_not_allowed(conn, allow);
    return NULL;
}

/*
 * The handler for the request's method and path, or NULL after answering
 * 404 or 405. HEAD goes wherever GET does: each handler answers it with
 * the head its GET would get (RFC 9110 §9.3.2).
 */
static route_handler find_route(hd_conn *conn)
{
    const hd_request *req = conn->request;
    int method = req->method;
    bool read = method == HTTP_GET || method == HTTP_HEAD;
    if (method == HTTP_OPTIONS)
        return answer_preflight;
    if (path_is(req, "/healthz"))
        return read ? answer_health : refuse_method(conn, "GET, HEAD");
    if (path_is(req, "/events"))
        return read ? hd_sse_handle : refuse_method(conn, "GET, HEAD");
    if (path_is(req, "/poll"))
        return read ? hd_poll_handle : refuse_method(conn, "GET, HEAD");
    if (path_is(req, "/metrics"))
        return read ? answer_metrics : refuse_method(conn, "GET, HEAD");
    if (path_is(req, "/topics"))
        return read ? hd_topics_handle_list : refuse_method(conn, "GET, HEAD");
    if (path_is(req, "/ws"))
        return read ? answer_websocket : refuse_method(conn, "GET, HEAD");
    if (is_echo_path(conn))
        return read ? answer_echo : refuse_method(conn, "GET, HEAD");
    if (hd_assets_has(conn))
        return read ? hd_assets_handle : refuse_method(conn, "GET, HEAD");
    if (path_is(req, "/publish"))
        return method == HTTP_POST ? hd_publish_handle_batch : refuse_method(conn, "POST");
    if (path_is_topic(req)) {
        if (method == HTTP_POST)
            return hd_publish_handle_topic;
        return read ? hd_topics_handle_info : refuse_method(conn, "GET, HEAD, POST");
    }
    hd_response_error(conn, 404, "not_found", 0, "There is nothing at this path.");
    return NULL;
}

/*
 * Whether the request may go on to send its body, judged from its head
 * (method, path, query, headers) before the body is read: false after
 * answering the refusal the head alone earns (404, 405, 401, 403, 415...).
 * For Expect: 100-continue; the request is dispatched as usual later.
 */
static bool route_head_acceptable(hd_conn *conn)
{
    route_handler handler = find_route(conn);
    if (handler == hd_publish_handle_topic)
        return hd_publish_topic_head_acceptable(conn);
    if (handler == hd_publish_handle_batch)
        return hd_publish_batch_head_acceptable(conn);
    return handler != NULL;
}

/* Answers the request, or hands the connection to a streaming transport. */
static void route_dispatch(hd_conn *conn)
{
    const hd_request *req = conn->request;
    /* The path only: query strings may carry tokens, which never reach a log. */
    hd_log_debug("%s %s %.*s", conn->peer, llhttp_method_name(req->method),
                 (int)(req->path_len > 256 ? 256 : req->path_len), req->path);
    route_handler handler = find_route(conn);
    if (handler != NULL)
        handler(conn);
}

/* Publishes: their answers may be deferred, and each is queued in request order. */
static bool route_may_overlap(const hd_conn *conn)
{
    const hd_request *req = conn->request;
    return req->method == HTTP_POST && (path_is(req, "/publish") || path_is_topic(req));
}

const hd_http_handlers hd_router_handlers = {
    .body_limit = route_body_limit,
    .head_acceptable = route_head_acceptable,
    .dispatch = route_dispatch,
    .may_overlap = route_may_overlap,
};
