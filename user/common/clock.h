/* Monotonic time, for deadlines and latencies. */
#ifndef SLUICE_CLOCK_H
#define SLUICE_CLOCK_H

#include <stdint.h>

int64_t now_ms(void);
int64_t now_us(void);

#endif
