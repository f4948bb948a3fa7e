#include "front/stats.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"

static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static char slot_names[STATS_MAX_APIS][64];
static int slot_count;

int stats_slot(const char *name)
{
	int slot = -1;

	pthread_mutex_lock(&slots_lock);
	for (int i = 0; i < slot_count; i++)
		if (strcmp(slot_names[i], name) == 0)
			slot = i;
	if (slot < 0 && slot_count < STATS_MAX_APIS) {
		slot = slot_count++;
		snprintf(slot_names[slot], sizeof(slot_names[slot]), "%s",
			 name);
	} else if (slot < 0) {
		log_warn("stats table full api=%s max=%d: not counted", name,
			 STATS_MAX_APIS);
	}
	pthread_mutex_unlock(&slots_lock);
	return slot;
}

const char *stats_slot_name(int slot)
{
	return slot_names[slot];
}

int stats_slot_count(void)
{
	return __atomic_load_n(&slot_count, __ATOMIC_ACQUIRE);
}

/* Bucket i covers (2^((i-1)/4), 2^(i/4)] µs; bucket 0 is <= 1 µs. */
static int latency_bucket(uint64_t us)
{
	int b;

	if (us <= 1)
		return 0;
	b = (int)ceil(4.0 * log2((double)us));
	return b >= STATS_LAT_BUCKETS ? STATS_LAT_BUCKETS - 1 : b;
}

double stats_bucket_upper_us(int i)
{
	return pow(2.0, i / 4.0);
}

void stats_record(struct stats_thread *stats, int slot, int status,
		  uint64_t latency_us, uint64_t bytes_in, uint64_t bytes_out)
{
	struct stats_api *api;
	int class = status / 100;

	if (slot < 0)
		return;
	api = &stats->apis[slot];
	if (class >= 1 && class <= 5)
		api->classes[class]++;
	api->latency[latency_bucket(latency_us)]++;
	api->latency_sum_us += latency_us;
	api->bytes_in += bytes_in;
	api->bytes_out += bytes_out;
}

void stats_sum(struct stats_thread *const *threads, int count, int slot,
	       struct stats_api *out)
{
	memset(out, 0, sizeof(*out));
	for (int t = 0; t < count; t++) {
		const struct stats_api *a = &threads[t]->apis[slot];

		for (int c = 0; c < 6; c++)
			out->classes[c] += a->classes[c];
		for (int b = 0; b < STATS_LAT_BUCKETS; b++)
			out->latency[b] += a->latency[b];
		out->latency_sum_us += a->latency_sum_us;
		out->bytes_in += a->bytes_in;
		out->bytes_out += a->bytes_out;
		out->spliced += a->spliced;
		out->inflight += a->inflight;
	}
}

double stats_quantile_us(const struct stats_api *api, double q)
{
	uint64_t total = 0, seen = 0, rank;

	for (int b = 0; b < STATS_LAT_BUCKETS; b++)
		total += api->latency[b];
	if (total == 0)
		return 0;
	rank = (uint64_t)ceil(q * (double)total);
	if (rank == 0)
		rank = 1;
	for (int b = 0; b < STATS_LAT_BUCKETS; b++) {
		uint64_t n = api->latency[b];
		double lo, hi;

		if (seen + n < rank) {
			seen += n;
			continue;
		}
		/* Interpolate inside the bucket. */
		lo = b ? stats_bucket_upper_us(b - 1) : 0;
		hi = stats_bucket_upper_us(b);
		return lo + (hi - lo) * (double)(rank - seen) / (double)n;
	}
	return stats_bucket_upper_us(STATS_LAT_BUCKETS - 1);
}
