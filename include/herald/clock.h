#ifndef HERALD_CLOCK_H
#define HERALD_CLOCK_H

#include <stdint.h>

/* Wall-clock time in Unix milliseconds: message times and history TTL. */
int64_t hd_clock_wall_ms(void);

#endif
