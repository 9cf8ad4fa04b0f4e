/*
 * Publishing over HTTP: POST /topics/{topic} (the body is the data) and the
 * all-or-nothing batch POST /publish (docs/protocol.md).
 */
#ifndef HERALD_TRANSPORT_PUBLISH_H
#define HERALD_TRANSPORT_PUBLISH_H

#include "net/conn.h"

void hd_publish_handle_topic(hd_conn *conn);
void hd_publish_handle_batch(hd_conn *conn);

#endif
