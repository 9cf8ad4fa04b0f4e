/*
 * The JSON control protocol spoken on /ws (docs/protocol.md), parsed into a command
 * without side effects, so that it can be unit-tested and fuzzed alone:
 *
 *   {"op":"subscribe","topics":["A","B"],"since":"ID","ref":1}
 *   {"op":"unsubscribe","topics":["A"],"ref":2}
 *   {"op":"publish","topic":"A","data":"…","event":"x","idempotency_key":"K","ref":3}
 *   {"op":"ping","ref":4}
 *
 * ref is optional: a string of at most 128 bytes, echoed as given, or an
 * integer of at most 2^53-1 in magnitude, echoed in plain decimal; anything
 * else is invalid_ref. A command that cannot be parsed still carries its ref
 * when one was readable, so the error frame can name it.
 */
#ifndef HERALD_TRANSPORT_WS_CONTROL_H
#define HERALD_TRANSPORT_WS_CONTROL_H

#include <stddef.h>

#include "herald/buf.h"

typedef enum hd_ws_op {
    HD_WS_OP_SUBSCRIBE,
    HD_WS_OP_UNSUBSCRIBE,
    HD_WS_OP_PUBLISH,
    HD_WS_OP_PING,
} hd_ws_op;

typedef struct hd_ws_command {
    hd_ws_op op;
    char *ref;           /* JSON text of the ref, NULL when absent */
    const char **topics; /* subscribe/unsubscribe; borrowed from the parsed tree */
    size_t topic_count;
    const char *since; /* NULL when absent */
    const char *topic; /* publish */
    const char *event; /* NULL when absent */
    const char *data;  /* publish */
    size_t data_len;
    const char *idempotency_key; /* publish; NULL when absent */
    void *tree;                  /* the parsed JSON, owned */
    const char *error;           /* NULL, or the error code... */
    char message[160];           /* ...and its sentence */
} hd_ws_command;

/*
 * Parses one text message. Returns 0, or -1 with command->error and message
 * set (invalid_json, invalid_op, invalid_topic, invalid_event, too_many_topics,
 * invalid_ref, invalid_cursor for a since that is not a string,
 * invalid_idempotency_key). Names are
 * validated here; cursor values and sizes by the caller.
 * Always call hd_ws_command_free afterwards.
 */
int hd_ws_command_parse(const char *text, size_t len, size_t max_topics, hd_ws_command *command);
void hd_ws_command_free(hd_ws_command *command);

/* Appends "ref":<ref>, (with the comma) when ref (a command's) is not NULL. */
void hd_ws_append_ref(const char *ref, hd_strbuf *sb);

#endif
