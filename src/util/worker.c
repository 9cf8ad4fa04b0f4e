#include "herald/worker.h"

static unsigned worker_count = 1;
static _Thread_local unsigned worker_index;

void hd_worker_set_count(unsigned count)
{
    worker_count = count;
}

unsigned hd_worker_count(void)
{
    return worker_count;
}

void hd_worker_set_index(unsigned index)
{
    worker_index = index;
}

unsigned hd_worker_index(void)
{
    return worker_index;
}
