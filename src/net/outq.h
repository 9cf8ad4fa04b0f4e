/*
 * A connection's outbound queue: a ring of references to shared buffers
 * (whole answers, frames or events), with the byte count its owner bounds
 * (conn.c decides what happens at the bound). The first in_flight buffers
 * are being written: they stay in the ring, holding their bytes alive,
 * until the write completes; the ones behind them are not started and can
 * still be dropped, which is why a partial write leaves only the buffer it
 * cut short in flight.
 *
 * Pure bookkeeping: no socket, no loop. The connection makes the writes
 * with the uv_buf_t views handed out here, and tells the queue what the
 * socket took (test/unit/test_outq.c drives it without one).
 *
 * Ownership: the queue holds one reference to each buffer in it, taken over
 * from the caller by hd_outq_push; every release path drops it. Not
 * thread-safe: a queue belongs to its connection's loop.
 */
#ifndef HERALD_NET_OUTQ_H
#define HERALD_NET_OUTQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "herald/buf.h"
#include "net/tls.h"

/* TLS: plaintext sealed per flush at most (see hd_outq_seal). */
#define HD_OUTQ_SEAL_MAX (1024 * 1024)

/* Zero-initialised is empty; hd_outq_free releases what is left. */
typedef struct hd_outq {
    hd_buf **ring;
    size_t head;
    size_t count;   /* in flight plus waiting */
    size_t cap;     /* a power of two, or 0 before the first push */
    uint64_t bytes; /* queued plus in flight */
    size_t in_flight;
} hd_outq;

/* Appends buf, taking over the caller's reference. */
void hd_outq_push(hd_outq *q, hd_buf *buf);
/*
 * Releases every buffer not handed to the socket (on TLS: not sealed), so
 * that shared message encodings go back at once. The buffers in flight stay.
 */
void hd_outq_drop_unstarted(hd_outq *q);
/*
 * Starts a gathered write of up to max buffers from the front: fills bufs
 * with views of them and returns how many, which are then in flight. Call
 * with nothing in flight.
 */
size_t hd_outq_start(hd_outq *q, uv_buf_t *bufs, size_t max);
/*
 * The socket took `written` bytes of the buffers hd_outq_start handed out.
 * Those it took whole are released and their bytes added to *released.
 * When it cut one short, that one stays in flight alone, *rest views its
 * unwritten part, and true is returned (finish it with hd_outq_finish once
 * that write completes); otherwise nothing is in flight any more.
 */
bool hd_outq_took(hd_outq *q, size_t written, uv_buf_t *rest, uint64_t *released);
/* The write of what is in flight ended (done, failed or cancelled): releases it; its bytes. */
uint64_t hd_outq_finish(hd_outq *q);
/*
 * TLS: encrypts queued plaintext, releasing each buffer, up to about
 * HD_OUTQ_SEAL_MAX bytes of it (one write's length must fit in unsigned,
 * and a burst is not copied twice, session then buffer, all at once), and
 * puts the ciphertext the session has, handshake records first, at the
 * front as one buffer of the queue's own. Plaintext past the bound waits
 * behind it for the next seal. Call with nothing in flight; only the front
 * buffer is then ciphertext. Returns -1 when the session failed.
 */
int hd_outq_seal(hd_outq *q, hd_tls *tls);
/* Moves every buffer of from (nothing in flight there) to the end of q, leaving from empty. */
void hd_outq_take_all(hd_outq *q, hd_outq *from);
/* Releases every buffer, in flight or not, and the ring. */
/* The last buffer queued (q->count > 0). */
const hd_buf *hd_outq_last(const hd_outq *q);
/* Replaces the last buffer (not started: q->count > q->in_flight), taking over buf's reference. */
void hd_outq_replace_last(hd_outq *q, hd_buf *buf);
void hd_outq_free(hd_outq *q);

#endif
