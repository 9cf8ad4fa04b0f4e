/*
 * Publishing over HTTP: POST /topics/{topic} (the body is the data) and the
 * all-or-nothing batch POST /publish (docs/protocol.md).
 */
#ifndef HERALD_TRANSPORT_PUBLISH_H
#define HERALD_TRANSPORT_PUBLISH_H

#include "net/conn.h"

void hd_publish_handle_topic(hd_conn *conn);
void hd_publish_handle_batch(hd_conn *conn);

/*
 * What the handlers check before they look at the body (topic and event
 * names, the token, the content type), alone: false after answering the
 * refusal. For a client that waits for 100 Continue before the body.
 */
bool hd_publish_topic_head_acceptable(hd_conn *conn);
bool hd_publish_batch_head_acceptable(hd_conn *conn);

#endif
