#include "transport/topics.h"

#include <inttypes.h>
#include <string.h>

#include "http/response.h"

int hd_topics_name_from_path(hd_conn *conn, char out[HD_TOPIC_MAX], size_t *len)
{
    const hd_request *req = &conn->request;
    size_t prefix = strlen("/topics/");
    const char *raw = req->path + prefix;
    size_t raw_len = req->path_len - prefix;
    /* Each decoded byte takes one to three raw ones: a longer path cannot be a topic. */
    char decoded[3 * HD_TOPIC_MAX];
    long n = raw_len < sizeof(decoded) ? hd_percent_decode(raw, raw_len, decoded, false) : -1;
    if (n < 0 || (size_t)n >= HD_TOPIC_MAX || !hd_topic_name_valid(decoded, (size_t)n)) {
        hd_response_error(conn, 400, "invalid_topic", 0,
                          "A topic is 1 to 200 bytes of A-Z a-z 0-9 . _ ~ : / @ -.");
        return -1;
    }
    memcpy(out, decoded, (size_t)n);
    out[n] = '\0';
    *len = (size_t)n;
    return 0;
}

void hd_topics_handle_info(hd_conn *conn)
{
    char topic[HD_TOPIC_MAX];
    size_t topic_len;
    if (hd_topics_name_from_path(conn, topic, &topic_len) != 0)
        return;
    hd_topic_info info;
    if (!hd_hub_topic_info(hd_conn_hub(conn), topic, topic_len, &info)) {
        hd_response_error(conn, 404, "not_found", 0,
                          "No such topic: it has no history and no subscribers.");
        return;
    }
    hd_strbuf body;
    hd_strbuf_init(&body);
    hd_strbuf_append_str(&body, "{\"topic\":");
    hd_strbuf_append_json_string(&body, topic, topic_len);
    hd_strbuf_printf(&body,
                     ",\"subscribers\":%zu,\"history\":{\"messages\":%zu,\"bytes\":%" PRIu64 "}",
                     info.subscribers, info.history_messages, info.history_bytes);
    hd_strbuf_append_str(&body, ",\"last_id\":");
    if (info.last_id[0] != '\0')
        hd_strbuf_append_json_string(&body, info.last_id, strlen(info.last_id));
    else
        hd_strbuf_append_str(&body, "null");
    hd_strbuf_append_str(&body, "}\n");
    hd_response_send(conn, 200, "application/json", NULL, body.data, body.len, 0);
    hd_strbuf_free(&body);
}
