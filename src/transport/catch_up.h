/*
 * Catching a subscriber up from history, in batches the connection can take.
 *
 * A client resuming from an old cursor may be owed more history than its
 * outbound queue may hold. The catch-up reads history in batches, each
 * stopping when the queue is half full, and continues when the connection
 * has drained to half its limit. Until it reaches the end of history, live messages of its
 * topics are skipped by the transport (hd_catch_up_holds), because the next
 * batch reads them from history anyway: the cursor is an id, so a lagging
 * client pins no memory and loses nothing that history still holds.
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

typedef struct hd_catch_up {
    bool active;
    char **topics; /* owned copies */
    size_t *topic_lens;
    uint64_t *gap_reported; /* per topic: 1 + the newest lost seq already reported, 0 = none */
    size_t topic_count;
    uint64_t last_seq;
    char last_id[HD_ID_MAX];
    hd_conn *conn;
    hd_subscriber *subscriber; /* told what history served, so queued live copies are skipped */
    const hd_catch_up_ops *ops;
    void *ctx;
} hd_catch_up;

/*
 * Sends the first batch of history after cursor for the topics (copied), and
 * stays active while more is held. A cursor that is not present sends
 * nothing. The catch-up must be inactive.
 */
void hd_catch_up_start(hd_catch_up *catch_up, hd_conn *conn, hd_subscriber *subscriber,
                       const hd_catch_up_ops *ops, void *ctx, char *const *topics,
                       const size_t *topic_lens, size_t topic_count, const hd_cursor *cursor);
/* Sends the next batch, if active; call when the connection drained below half its limit. */
void hd_catch_up_continue(hd_catch_up *catch_up);
/* Stops catching up on one topic (the client unsubscribed from it). */
void hd_catch_up_remove_topic(hd_catch_up *catch_up, const char *topic, size_t topic_len);
/* Whether a live delivery of msg must be skipped because a batch will carry it. */
bool hd_catch_up_holds(const hd_catch_up *catch_up, const hd_message *msg);
void hd_catch_up_free(hd_catch_up *catch_up);

#endif
