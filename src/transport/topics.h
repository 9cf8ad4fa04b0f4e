/*
 * /topics/{topic}: the topic name from the path, and GET for introspection.
 */
#ifndef HERALD_TRANSPORT_TOPICS_H
#define HERALD_TRANSPORT_TOPICS_H

#include <stddef.h>

#include "net/conn.h"

/*
 * Percent-decodes the topic from a /topics/{topic} path into out (NUL-terminated). Returns 0,
 * or -1 after answering 400 invalid_topic.
 */
int hd_topics_name_from_path(hd_conn *conn, char out[HD_TOPIC_NAME_MAX + 1], size_t *len);
/* GET /topics/{topic}: subscribers by transport, last id, history length and bytes. */
void hd_topics_handle_info(hd_conn *conn);
/* GET /topics?prefix=&after=&limit=: one page of topics in name order. */
void hd_topics_handle_list(hd_conn *conn);

#endif
