/* Rate limits and quotas per key (limit.h).
 *
 * The rate is a token bucket: a key holds up to RATE tokens (at least
 * one), a request takes one, and they come back at RATE per PER seconds.
 * So a quiet key may send RATE requests at once, then one every PER/RATE
 * seconds. The quota counts requests from the first one of a period;
 * after QUOTA_PERIOD seconds the count starts again.
 *
 * One table for all threads, under one lock: a lookup and a few
 * arithmetic steps, done once per hooked request of an API whose
 * auth_check sets limits. A key at rest (its bucket full again, its quota
 * period over or unused) holds nothing worth keeping; when the table is
 * full such keys are dropped to make room.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/hash.h"
#include "common/log.h"
#include "front/limit.h"

#define LIMIT_WARN_EVERY_MS 10000
/* A full table is swept for keys at rest at most this often: a sweep
 * walks every key under the lock. */
#define LIMIT_SWEEP_EVERY_MS 1000

struct limit_entry {
	struct limit_entry *next;
	uint64_t hash;
	double tokens;
	double rate, per; /* as last asked */
	int64_t refilled_ms;
	int64_t quota_start_ms, quota_period_ms;
	int64_t quota_used;
	size_t api_len, key_len;
	char id[]; /* the API's name, NUL, the key */
};

struct limits {
	pthread_mutex_t lock;
	uint64_t seed; /* of the hash */
	struct limit_entry **buckets;
	size_t nbuckets, count, max_keys;
	size_t bytes, max_bytes; /* of the entries */
	uint64_t unlimited; /* new keys passed because the table was full */
	int64_t warned_ms, swept_ms;
};

struct limits *limits_new(size_t max_keys, size_t max_bytes)
{
	struct limits *l = calloc(1, sizeof(*l));

	if (!l)
		return NULL;
	l->max_keys = max_keys ? max_keys : 1;
	l->max_bytes = max_bytes;
	l->nbuckets = 64;
	while (l->nbuckets < l->max_keys / 2)
		l->nbuckets *= 2;
	l->buckets = calloc(l->nbuckets, sizeof(*l->buckets));
	if (!l->buckets) {
		free(l);
		return NULL;
	}
	pthread_mutex_init(&l->lock, NULL);
	l->seed = hash_seed();
	return l;
}

void limits_free(struct limits *l)
{
	if (!l)
		return;
	for (size_t i = 0; i < l->nbuckets; i++) {
		struct limit_entry *e = l->buckets[i], *next;

		for (; e; e = next) {
			next = e->next;
			free(e);
		}
	}
	pthread_mutex_destroy(&l->lock);
	free(l->buckets);
	free(l);
}

static bool rate_limited(double rate, double per)
{
	return rate > 0 && per > 0;
}

static double bucket_size(double rate)
{
	return rate < 1 ? 1 : rate;
}

/* E's tokens at NOW_MS, not above the bucket's size. */
static double tokens_at(const struct limit_entry *e, int64_t now_ms)
{
	double t = e->tokens;

	if (rate_limited(e->rate, e->per) && now_ms > e->refilled_ms)
		t += (double)(now_ms - e->refilled_ms) / 1000.0 * e->rate /
		     e->per;
	return t < bucket_size(e->rate) ? t : bucket_size(e->rate);
}

static bool at_rest(const struct limit_entry *e, int64_t now_ms)
{
	if (rate_limited(e->rate, e->per) &&
	    tokens_at(e, now_ms) < bucket_size(e->rate))
		return false;
	return e->quota_used == 0 ||
	       (e->quota_period_ms > 0 &&
		now_ms - e->quota_start_ms >= e->quota_period_ms);
}

static size_t entry_size(size_t api_len, size_t key_len)
{
	return sizeof(struct limit_entry) + api_len + 1 + key_len;
}

static bool full(const struct limits *l, size_t need)
{
	return l->count >= l->max_keys || l->bytes + need > l->max_bytes;
}

static void drop_resting(struct limits *l, int64_t now_ms)
{
	for (size_t i = 0; i < l->nbuckets; i++) {
		struct limit_entry **p = &l->buckets[i];

		while (*p) {
			struct limit_entry *e = *p;

			if (at_rest(e, now_ms)) {
				*p = e->next;
				l->bytes -= entry_size(e->api_len, e->key_len);
				l->count--;
				free(e);
			} else {
				p = &e->next;
			}
		}
	}
}

static struct limit_entry *find(struct limits *l, uint64_t h, const char *api,
				size_t api_len, const char *key, size_t key_len)
{
	struct limit_entry *e = l->buckets[h & (l->nbuckets - 1)];

	for (; e; e = e->next)
		if (e->hash == h && e->api_len == api_len &&
		    e->key_len == key_len && !memcmp(e->id, api, api_len) &&
		    !memcmp(e->id + api_len + 1, key, key_len))
			return e;
	return NULL;
}

static struct limit_entry *add(struct limits *l, uint64_t h, const char *api,
			       size_t api_len, const char *key, size_t key_len,
			       const struct limit_spec *spec, int64_t now_ms)
{
	struct limit_entry *e;
	size_t slot = h & (l->nbuckets - 1);
	size_t size = entry_size(api_len, key_len);

	if (full(l, size) &&
	    (!l->swept_ms || now_ms - l->swept_ms >= LIMIT_SWEEP_EVERY_MS)) {
		drop_resting(l, now_ms);
		l->swept_ms = now_ms;
	}
	if (full(l, size)) {
		l->unlimited++;
		if (now_ms - l->warned_ms >= LIMIT_WARN_EVERY_MS) {
			log_warn(
			    "rate limiter full: %zu keys busy, new keys pass "
			    "unlimited passed=%llu api=%s",
			    l->count, (unsigned long long)l->unlimited, api);
			l->warned_ms = now_ms;
		}
		return NULL;
	}
	e = calloc(1, size);
	if (!e)
		return NULL;
	e->hash = h;
	e->rate = spec->rate;
	e->per = spec->per;
	e->tokens = bucket_size(spec->rate);
	e->refilled_ms = now_ms;
	e->quota_start_ms = now_ms;
	e->api_len = api_len;
	e->key_len = key_len;
	memcpy(e->id, api, api_len);
	memcpy(e->id + api_len + 1, key, key_len);
	e->next = l->buckets[slot];
	l->buckets[slot] = e;
	l->count++;
	l->bytes += size;
	return e;
}

/* The quota part of *STATE, once E's period is current. */
static void quota_state(const struct limit_entry *e,
			const struct limit_spec *spec, int64_t now_ms,
			struct limit_state *state)
{
	if (spec->quota_max <= 0)
		return;
	state->quota_remaining = spec->quota_max > e->quota_used
				     ? spec->quota_max - e->quota_used
				     : 0;
	state->quota_renews_ms =
	    e->quota_period_ms ? e->quota_start_ms + e->quota_period_ms - now_ms
			       : -1;
}

static enum limit_verdict take(struct limit_entry *e,
			       const struct limit_spec *spec, int64_t now_ms,
			       struct limit_state *state)
{
	bool limited = rate_limited(spec->rate, spec->per);
	enum limit_verdict v = LIMIT_PASS;

	/* The session may say other limits than last time: the new ones
	 * apply from now on. */
	e->tokens = tokens_at(e, now_ms);
	e->refilled_ms = now_ms;
	e->rate = spec->rate;
	e->per = spec->per;
	if (e->tokens > bucket_size(e->rate))
		e->tokens = bucket_size(e->rate);
	e->quota_period_ms =
	    spec->quota_period_s > 0 ? spec->quota_period_s * 1000 : 0;

	if (e->quota_period_ms > 0 &&
	    now_ms - e->quota_start_ms >= e->quota_period_ms) {
		e->quota_start_ms = now_ms;
		e->quota_used = 0;
	}
	if (limited && e->tokens < 1.0) {
		state->wait_ms =
		    (int64_t)((1.0 - e->tokens) * e->per / e->rate * 1000.0) +
		    1;
		v = LIMIT_RATE;
	} else if (spec->quota_max > 0 && e->quota_used >= spec->quota_max) {
		v = LIMIT_QUOTA;
	} else {
		if (spec->quota_max > 0)
			e->quota_used++;
		if (limited)
			e->tokens -= 1.0;
	}
	quota_state(e, spec, now_ms, state);
	if (v == LIMIT_QUOTA)
		state->wait_ms = state->quota_renews_ms;
	return v;
}

enum limit_verdict limit_take(struct limits *l, const char *api,
			      const char *key, size_t key_len,
			      const struct limit_spec *spec, int64_t now_ms,
			      struct limit_state *state)
{
	size_t api_len = strlen(api);
	uint64_t h;
	struct limit_entry *e;
	enum limit_verdict v = LIMIT_PASS;

	state->wait_ms = state->quota_remaining = state->quota_renews_ms = -1;
	if (!rate_limited(spec->rate, spec->per) && spec->quota_max <= 0)
		return LIMIT_PASS;
	/* The API name's hash seeds the key's. */
	h = hash_bytes(hash_bytes(l->seed, api, api_len), key, key_len);
	pthread_mutex_lock(&l->lock);
	e = find(l, h, api, api_len, key, key_len);
	if (!e)
		e = add(l, h, api, api_len, key, key_len, spec, now_ms);
	if (e)
		v = take(e, spec, now_ms, state);
	pthread_mutex_unlock(&l->lock);
	return v;
}
