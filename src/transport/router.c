#include "transport/router.h"

#include <string.h>

#include "herald/log.h"
#include "http/response.h"
#include "ops/metrics.h"
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

uint64_t hd_router_body_limit(const hd_conn *conn)
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
        "Access-Control-Allow-Headers: Content-Type, Last-Event-ID, X-Event, Authorization\r\n"
        "Access-Control-Max-Age: 86400\r\n";
    hd_response_send(conn, 204, "text/plain", headers, "", 0, 0);
}

static void answer_health(hd_conn *conn)
{
    if (hd_conn_server_draining(conn)) {
        hd_response_error(conn, 503, "draining", HD_RESPONSE_CLOSE, "herald is shutting down.");
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
    hd_metrics total;
    hd_conn_group_metrics(conn, &total, &gauges);
    hd_strbuf body;
    hd_strbuf_init(&body);
    hd_metrics_render(&total, &gauges, &body);
    hd_response_send(conn, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, body.data,
                     body.len, 0);
    hd_strbuf_free(&body);
}

void hd_router_dispatch(hd_conn *conn)
{
    const hd_request *req = conn->request;
    int method = req->method;
    bool read = method == HTTP_GET || method == HTTP_HEAD;
    /* The path only: query strings may carry tokens, which never reach a log. */
    hd_log_debug("%s %s %.*s", conn->peer, llhttp_method_name(method),
                 (int)(req->path_len > 256 ? 256 : req->path_len), req->path);

    if (method == HTTP_OPTIONS) {
        answer_preflight(conn);
    } else if (path_is(req, "/healthz")) {
        read ? answer_health(conn) : hd_response_method_not_allowed(conn, "GET, HEAD");
    } else if (path_is(req, "/events")) {
        method == HTTP_GET ? hd_sse_handle(conn) : hd_response_method_not_allowed(conn, "GET");
    } else if (path_is(req, "/poll")) {
        method == HTTP_GET ? hd_poll_handle(conn) : hd_response_method_not_allowed(conn, "GET");
    } else if (path_is(req, "/metrics")) {
        read ? answer_metrics(conn) : hd_response_method_not_allowed(conn, "GET, HEAD");
    } else if (path_is(req, "/topics")) {
        read ? hd_topics_handle_list(conn) : hd_response_method_not_allowed(conn, "GET, HEAD");
    } else if (path_is(req, "/ws") || is_echo_path(conn)) {
        method == HTTP_GET ? hd_websocket_handle(conn, !path_is(req, "/ws"))
                           : hd_response_method_not_allowed(conn, "GET");
    } else if (path_is(req, "/publish")) {
        method == HTTP_POST ? hd_publish_handle_batch(conn)
                            : hd_response_method_not_allowed(conn, "POST");
    } else if (path_is_topic(req)) {
        if (method == HTTP_POST)
            hd_publish_handle_topic(conn);
        else if (read)
            hd_topics_handle_info(conn);
        else
            hd_response_method_not_allowed(conn, "GET, HEAD, POST");
    } else {
        hd_response_error(conn, 404, "not_found", 0, "There is nothing at this path.");
    }
}
