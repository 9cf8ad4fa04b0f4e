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
    /*
     * Called once, before anything is sent: the subscription is in place
     * (valid: acknowledge it now), or the cursor is of the engine's epoch
     * but beyond its newest id (!valid: refuse it; the catch-up is over and
     * freed already).
     */
    void (*started)(void *ctx, bool valid);
    /*
     * The engine could not read what is owed (hd_history_result.status):
     * the catch-up is over and freed already, and nothing more of its
     * topics may be delivered on this stream, or the client would miss
     * what lies in between. hole: started was called before, or live
     * messages of its topics were skipped meanwhile (hd_catch_up_holds):
     * the stream misses something only a resume can bring. Live messages
     * skipped of a topic hd_catch_up_start was told is fresh make no hole:
     * the caller undoes that subscription when it sees no hole.
     */
    void (*failed)(void *ctx, bool hole);
} hd_catch_up_ops;

/*
 * A catch-up exists only while history is still owed: a session holds a
 * pointer that is NULL otherwise, so an idle subscriber pays nothing for it.
 */
typedef struct hd_catch_up hd_catch_up;

/*
 * Starts catching up from cursor for the topics (copied), the hub's
 * subscriptions to them just made: *owner (the session's pointer, NULL
 * before) holds the catch-up while history is owed, and is set back to NULL
 * when everything was sent, which can happen before this returns (an engine
 * that reads at once). ops->started is called first, once the engine
 * answered (at once when the engine subscribes at once or cannot answer
 * now, without a read when there is no cursor). Without a cursor, an engine that confirms
 * subscriptions later is asked for its cut (a read of nothing): live
 * messages are held back until then, and those past the cut are sent after
 * started. Messages and gaps go to ops with ctx. fresh (per topic, or NULL
 * for none): the subscription to it was made for this catch-up and is
 * undone if the catch-up fails before started, so what was skipped of it
 * is nobody's loss (see failed).
 */
void hd_catch_up_start(hd_catch_up **owner, hd_conn *conn, hd_subscriber *subscriber,
                       const hd_catch_up_ops *ops, void *ctx, char *const *topics,
                       const size_t *topic_lens, const bool *fresh, size_t topic_count,
                       const hd_cursor *cursor);
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
 * The topic is no longer fresh (hd_catch_up_start): a newer op of the
 * client confirms it, so live messages skipped of it are a loss if the
 * catch-up fails.
 */
void hd_catch_up_keep_topic(hd_catch_up *catch_up, const char *topic, size_t topic_len);
/*
 * Whether a live delivery of msg must be skipped because a batch will carry
 * it; the catch-up then remembers it must read at least that far.
 */
bool hd_catch_up_holds(hd_catch_up *catch_up, const hd_message *msg);
/* Cancels a read still under way, frees the catch-up and sets *catch_up to NULL. */
void hd_catch_up_free(hd_catch_up **catch_up);

#endif
