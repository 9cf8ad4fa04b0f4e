/*
 * The outbound queue (see outq.h): a ring of buffer references whose
 * capacity is a power of two, so a slot is a mask, not a division per
 * delivery.
 */
#include "net/outq.h"

#include <stdlib.h>

#include "herald/alloc.h"

static hd_buf **slot(const hd_outq *q, size_t index)
{
    return &q->ring[(q->head + index) & (q->cap - 1)];
}

static void make_room(hd_outq *q)
{
    if (q->count < q->cap)
        return;
    size_t cap = q->cap ? q->cap * 2 : 4;
    hd_buf **ring = hd_alloc(cap * sizeof(*ring));
    for (size_t i = 0; i < q->count; i++)
        ring[i] = *slot(q, i);
    free(q->ring);
    q->ring = ring;
    q->cap = cap;
    q->head = 0;
}

void hd_outq_push(hd_outq *q, hd_buf *buf)
{
    make_room(q);
    *slot(q, q->count) = buf;
    q->count++;
    q->bytes += buf->len;
}

/* TLS: sealed ciphertext goes before the plaintext a bounded seal left queued. */
static void push_front(hd_outq *q, hd_buf *buf)
{
    make_room(q);
    q->head = (q->head + q->cap - 1) & (q->cap - 1);
    q->ring[q->head] = buf;
    q->count++;
    q->bytes += buf->len;
}

/* Takes the front buffer out (the caller releases it) and uncounts its bytes. */
static hd_buf *pop(hd_outq *q)
{
    hd_buf *buf = q->ring[q->head];
    q->head = (q->head + 1) & (q->cap - 1);
    q->count--;
    q->bytes -= buf->len;
    return buf;
}

void hd_outq_drop_unstarted(hd_outq *q)
{
    while (q->count > q->in_flight) {
        hd_buf *last = *slot(q, q->count - 1);
        q->bytes -= last->len;
        hd_buf_release(last);
        q->count--;
    }
}

size_t hd_outq_start(hd_outq *q, uv_buf_t *bufs, size_t max)
{
    size_t count = 0;
    while (count < q->count && count < max) {
        hd_buf *buf = *slot(q, count);
        bufs[count++] = uv_buf_init(buf->data, (unsigned)buf->len);
    }
    q->in_flight = count;
    return count;
}

/* Releases the first n buffers; their bytes. */
static uint64_t release_front(hd_outq *q, size_t n)
{
    uint64_t bytes = 0;
    for (size_t i = 0; i < n; i++) {
        hd_buf *buf = pop(q);
        bytes += buf->len;
        hd_buf_release(buf);
    }
    return bytes;
}

bool hd_outq_took(hd_outq *q, size_t written, uv_buf_t *rest, uint64_t *released)
{
    size_t whole = 0;
    while (whole < q->in_flight && written >= (*slot(q, whole))->len)
        written -= (*slot(q, whole++))->len;
    bool cut = whole < q->in_flight;
    *released += release_front(q, whole);
    q->in_flight = cut ? 1 : 0;
    if (cut) {
        hd_buf *buf = *slot(q, 0);
        *rest = uv_buf_init(buf->data + written, (unsigned)(buf->len - written));
    }
    return cut;
}

uint64_t hd_outq_finish(hd_outq *q)
{
    uint64_t bytes = release_front(q, q->in_flight);
    q->in_flight = 0;
    return bytes;
}

int hd_outq_seal(hd_outq *q, hd_tls *tls)
{
    size_t sealed = 0;
    while (q->count > 0 && sealed < HD_OUTQ_SEAL_MAX) {
        hd_buf *buf = pop(q);
        sealed += buf->len;
        int rc = buf->len > 0 ? hd_tls_write(tls, buf->data, buf->len) : 0;
        hd_buf_release(buf);
        if (rc != 0)
            return -1;
    }
    hd_buf *cipher = hd_tls_take(tls);
    if (cipher != NULL)
        push_front(q, cipher);
    return 0;
}

void hd_outq_take_all(hd_outq *q, hd_outq *from)
{
    while (from->count > 0)
        hd_outq_push(q, pop(from));
}

const hd_buf *hd_outq_last(const hd_outq *q)
{
    return *slot(q, q->count - 1);
}

void hd_outq_replace_last(hd_outq *q, hd_buf *buf)
{
    hd_buf **last = slot(q, q->count - 1);
    q->bytes = q->bytes - (*last)->len + buf->len;
    hd_buf_release(*last);
    *last = buf;
}

void hd_outq_free(hd_outq *q)
{
    while (q->count > 0)
        hd_buf_release(pop(q));
    free(q->ring);
    q->ring = NULL;
    q->cap = 0;
    q->head = 0;
    q->in_flight = 0;
}
