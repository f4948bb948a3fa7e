/* Per-API request counters and latency histograms.
 *
 * Each front thread owns one stats_thread and bumps its counters without
 * locks; the admin endpoint sums the threads' tables when asked (racy reads
 * of aligned 64-bit counters are fine for monitoring). APIs keep their slot
 * across reloads: slots are handed out by name and never reused.
 */
#ifndef SLUICE_STATS_H
#define SLUICE_STATS_H

#include <stdint.h>

#define STATS_MAX_APIS 256
/* Latency buckets: 4 per power of two from 1 µs, so ~19% resolution up to
 * 2^27 µs (about two minutes). */
#define STATS_LAT_BUCKETS 108

struct stats_api {
	uint64_t classes[6]; /* index = status / 100; [0] unused */
	uint64_t latency[STATS_LAT_BUCKETS];
	uint64_t latency_sum_us;
	uint64_t bytes_in, bytes_out;
	uint64_t spliced;
	int64_t inflight;
};

struct stats_thread {
	struct stats_api apis[STATS_MAX_APIS];
};

/* The slot for API NAME, assigned on first sight; -1 when the table is
 * full (the API is then not counted, and a warning is logged once). */
int stats_slot(const char *name);
const char *stats_slot_name(int slot);
int stats_slot_count(void);

void stats_record(struct stats_thread *stats, int slot, int status,
		  uint64_t latency_us, uint64_t bytes_in, uint64_t bytes_out);

/* Sum of SLOT over COUNT thread tables into out. */
void stats_sum(struct stats_thread *const *threads, int count, int slot,
	       struct stats_api *out);
/* Latency quantile Q (0..1) in microseconds from a summed table. */
double stats_quantile_us(const struct stats_api *api, double q);
/* Upper bound of bucket I in microseconds. */
double stats_bucket_upper_us(int i);

#endif
