/*
 * Long-polling and plain polling on GET /poll (docs/protocol.md, docs/api.md).
 *
 * A poll is answered from history after its cursor. When history holds
 * nothing new, the request waits: the connection is WAITING, a hub
 * subscriber wakes it when one of its topics gets a message, a timer ends
 * the wait. Either way the answer is read from history again, so everything
 * published meanwhile comes in one answer and nothing is lost between polls.
 */
#ifndef HERALD_TRANSPORT_POLL_H
#define HERALD_TRANSPORT_POLL_H

#include "net/conn.h"

void hd_poll_handle(hd_conn *conn);

#endif
