/*
 * Messages: immutable once published, reference-counted, and encoded at most
 * once per wire format.
 *
 * The hub creates a message with one reference and keeps it in the topic's
 * history; a transport that queues a message (or one of its encodings) past
 * the current call retains what it queues and releases it when done. The
 * encodings are cached in the message, so an SSE frame or a JSON envelope is
 * built for the first subscriber that needs it and shared by every other.
 *
 * Threading: a message is shared by every worker thread (history, their
 * inboxes), so its reference count is atomic. Each worker has its own
 * encoding slots (hd_worker_index): a worker's subscribers share its
 * encodings, and no buffer's reference count is contended across cores.
 */
#ifndef HERALD_MESSAGE_H
#define HERALD_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "herald/buf.h"
#include "herald/id.h"
#include "herald/list.h"

/* One slot per wire format; transports own the encoders. */
typedef enum hd_wire {
    HD_WIRE_ENVELOPE,     /* the JSON envelope of docs/protocol.md */
    HD_WIRE_SSE,          /* an SSE event with the data as data: lines */
    HD_WIRE_SSE_ENVELOPE, /* an SSE event with the envelope as data (format=json) */
    HD_WIRE_WS,           /* a WebSocket text frame carrying the envelope */
    HD_WIRE_WS_DEFLATE,   /* the same frame compressed without context takeover */
    HD_WIRE_COUNT
} hd_wire;

typedef struct hd_message {
    uint32_t refs;
    uint64_t seq;    /* hub-wide sequence number; ids order like seqs */
    uint32_t epoch;  /* the id's epoch: seqs compare only within one */
    int64_t time_ms; /* publish time, Unix milliseconds */
    const char *topic;
    size_t topic_len;
    const char *event; /* NULL when the publisher gave none */
    size_t event_len;
    const char *data;
    size_t data_len;
    char id[HD_ID_MAX]; /* NUL-terminated */
    size_t id_len;
    bool lost;            /* not a message: the hub's marker that topic lost every seq up to seq */
    hd_list history_node; /* the hub's: in its hub-wide history order while held */
    hd_buf **wire;        /* cached encodings, HD_WIRE_COUNT slots per worker, NULL until built */
} hd_message;

/*
 * Builds a message with one reference; topic, event, data and the encoding
 * slots of hd_worker_count() workers share one allocation. event may be NULL.
 */
hd_message *hd_message_new(const char *topic, size_t topic_len, const char *event, size_t event_len,
                           const char *data, size_t data_len, uint64_t seq, uint32_t epoch,
                           int64_t time_ms);
hd_message *hd_message_retain(hd_message *msg);
void hd_message_release(hd_message *msg);

/*
 * Bytes this message counts against a topic's history.max_bytes: the lengths
 * of data, topic and event plus sizeof(hd_message), so that empty messages
 * are not free.
 */
size_t hd_message_cost(const hd_message *msg);

/* ctx is the caller's, passed through (e.g. a compressor shared by a server). */
typedef hd_buf *(*hd_wire_encoder)(const hd_message *msg, void *ctx);

/*
 * The encoding of msg for one wire format, built with encode on first use and
 * cached. The returned buffer is borrowed from the message: retain it to keep
 * it beyond the message's lifetime (e.g. in a write queue).
 */
hd_buf *hd_message_encoded(hd_message *msg, hd_wire wire, hd_wire_encoder encode, void *ctx);

/* Appends the JSON envelope {"type":"message","topic",...} to sb. */
void hd_message_append_envelope(const hd_message *msg, hd_strbuf *sb);
/* The envelope as a buffer: the encoder of HD_WIRE_ENVELOPE (ctx unused). */
hd_buf *hd_message_encode_envelope(const hd_message *msg, void *ctx);

#endif
