/*
 * Worker threads: herald runs `workers` event loops, one per thread. Each
 * thread knows its index, so that per-worker state (a message's cached
 * encodings, a topic's subscriber list) is picked without passing it along
 * every call.
 *
 * hd_worker_set_count is called once at start-up, before any worker thread
 * starts; hd_worker_set_index once by each worker thread (the main thread
 * is worker 0, which is all the unit tests need).
 */
#ifndef HERALD_WORKER_H
#define HERALD_WORKER_H

#define HD_WORKERS_MAX 64

void hd_worker_set_count(unsigned count);
unsigned hd_worker_count(void);
void hd_worker_set_index(unsigned index);
unsigned hd_worker_index(void);

#endif
