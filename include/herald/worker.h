/*
 * Worker threads: herald runs `workers` event loops, one per thread. Each
 * thread knows its index, so that per-worker state (a message's cached
 * encodings, a topic's subscriber list) is picked without passing it along
 * every call.
 *
 * hd_worker_set_count is called once at start-up, before any worker thread
 * starts; hd_worker_set_index once by each worker thread (the main thread
 * is worker 0, which is all the unit tests need).
 *
 * A thread that serves no connections but works beside the workers (an
 * engine's own thread) sets HD_WORKER_NONE: it has no encoding slots and no
 * subscribers, so it must not encode a message or initialise a subscriber
 * (both assert it), and what it owes a worker it posts to that worker's
 * mailbox (herald/mailbox.h). Left at the default it would pass for worker
 * 0 and race with it on worker 0's encodings.
 */
#ifndef HERALD_WORKER_H
#define HERALD_WORKER_H

#include <limits.h>

#define HD_WORKERS_MAX 64
#define HD_WORKER_NONE UINT_MAX

void hd_worker_set_count(unsigned count);
unsigned hd_worker_count(void);
void hd_worker_set_index(unsigned index);
unsigned hd_worker_index(void);

#endif
