/*
 * Catching a subscriber up from history, in batches the connection can take.
 *
 * A client resuming from an old cursor may be owed more history than its
 * outbound queue may hold. The catch-up reads history (through the engine)
 * in batches, each sent until the queue is half full, and continues when
 * the connection has drained to half its limit. Until it reaches the end of
 * history, live messages of its topics are skipped by the transport
 * (hd_catch_up_holds), because a later batch reads them from history
 * anyway: the cursor is an id, so a lagging client pins no memory and loses
 * nothing that history still holds.
 */
#ifndef HERALD_TRANSPORT_CATCH_UP_H
#define HERALD_TRANSPORT_CATCH_UP_H

#include <stdbool.h>
#include <stddef.h>

#include "herald/hub.h"
#include "net/conn.h"

typedef struct hd_catch_up_ops {
    /* Queues one message; false when the connection refused it (closing). */
    bool (*send_message)(void *ctx, hd_message *msg);
    void (*send_gap)(void *ctx, const hd_gap *gap);
} hd_catch_up_ops;

/*
 * A catch-up exists only while history is still owed: a session holds a
 * pointer that is NULL otherwise, so an idle subscriber pays nothing for it.
 */
typedef struct hd_catch_up hd_catch_up;

/*
 * Starts catching up from cursor for the topics (copied), when it is
 * present: *owner (the session's pointer, NULL before) holds the catch-up
 * while history is owed, and is set back to NULL when everything was sent,
 * which can happen before this returns (an engine that reads at once).
 * Messages and gaps go to ops with ctx.
 */
void hd_catch_up_start(hd_catch_up **owner, hd_conn *conn, hd_subscriber *subscriber,
                       const hd_catch_up_ops *ops, void *ctx, char *const *topics,
                       const size_t *topic_lens, size_t topic_count, const hd_cursor *cursor);
/*
 * Sends the next batch; call when the connection drained below half its
 * limit (nothing happens while a read is still under way). Frees the
 * catch-up and sets *catch_up to NULL once it is done. NULL-safe, like
 * every function here.
 */
void hd_catch_up_continue(hd_catch_up **catch_up);
/* Stops catching up on one topic (the client unsubscribed from it). */
void hd_catch_up_remove_topic(hd_catch_up **catch_up, const char *topic, size_t topic_len);
/*
 * Whether a live delivery of msg must be skipped because a batch will carry
 * it; the catch-up then remembers it must read at least that far.
 */
bool hd_catch_up_holds(hd_catch_up *catch_up, const hd_message *msg);
/* Cancels a read still under way, frees the catch-up and sets *catch_up to NULL. */
void hd_catch_up_free(hd_catch_up **catch_up);

#endif
