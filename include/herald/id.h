/*
 * Message ids and cursors (docs/protocol.md).
 *
 * An id is "<epoch>-<seq>": epoch as 8 lowercase hex digits, seq in decimal
 * without leading zeros. Ids order like their seqs within an epoch; the
 * epoch names the sequence they belong to, so an id from another epoch says
 * nothing about this one's positions.
 *
 * A cursor is what a client resumes from: nothing (only new messages), an
 * id, or "earliest" (everything history holds, without a gap). Parsing is
 * pure: whether an id of this epoch was ever issued is the hub's question
 * (hd_hub_parse_cursor).
 */
#ifndef HERALD_ID_H
#define HERALD_ID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest id text: "<8 hex epoch>-<20 digit seq>" plus NUL. */
#define HD_ID_MAX 32

/* Writes the id, NUL-terminated, into out; returns its length (10 to 29). */
size_t hd_id_format(uint32_t epoch, uint64_t seq, char out[HD_ID_MAX]);
/*
 * Parses text (len bytes, no NUL needed) as an id; false when it is not one
 * exactly: uppercase hex, a sign, leading zeros, spaces or a seq past
 * UINT64_MAX are not ids herald issues.
 */
bool hd_id_parse(const char *text, size_t len, uint32_t *epoch, uint64_t *seq);

/* A parsed cursor. */
typedef struct hd_cursor {
    bool present;     /* false: no cursor given (only new messages) */
    bool foreign;     /* from another epoch: everything held is delivered, with a gap */
    bool earliest;    /* "earliest": everything held is delivered, without a gap (seq 0) */
    uint64_t seq;     /* last seq the client saw (valid when !foreign) */
    const char *text; /* the cursor as the client gave it (borrowed) */
    size_t text_len;
} hd_cursor;

/*
 * Parses a client's cursor against the current epoch: an empty text is "no
 * cursor". out->text borrows text. false when it is neither empty,
 * "earliest" nor an id.
 */
bool hd_cursor_parse(const char *text, size_t len, uint32_t epoch, hd_cursor *out);
/*
 * Whether cursor is an id of epoch beyond newest, the newest seq issued in
 * it (a store's cut): never issued, so refused (docs/protocol.md).
 */
bool hd_cursor_beyond(const hd_cursor *cursor, uint32_t epoch, uint64_t newest);

#endif
