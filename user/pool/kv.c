/* The key-value store behind TykGateway.store_data/get_data.
 *
 * It lives in sluiced, so every worker sees the same data and a worker's
 * death loses nothing. Entries with a TTL expire: a read of an expired entry
 * removes it, and a sweep walks a slice of the table on every pool tick so
 * that keys nobody reads again do not stay forever. The store holds at most
 * max_bytes of keys and values; a store_data that would pass the bound is
 * refused (after dropping what has expired) and logged, at most once per
 * ten seconds with a count of the refusals since.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/hash.h"
#include "common/log.h"
#include "pool/pool_int.h"

#define KV_BUCKETS_MIN	 1024
#define KV_SWEEP_SLICE	 4096
#define KV_ENTRY_BYTES	 64 /* bookkeeping counted per entry */
#define KV_WARN_EVERY_MS 10000

struct kv_entry {
	struct kv_entry *next;
	uint64_t hash;
	int64_t expires_ms; /* 0: never */
	size_t klen, vlen;
	char *key;
	char *value;
};

struct kv_store {
	uint64_t seed; /* of the hash */
	struct kv_entry **buckets;
	size_t nbuckets;
	size_t count;
	size_t bytes, max_bytes;
	size_t sweep_at;
	uint64_t refused;
	int64_t warned_ms;
};

static size_t kv_entry_size(size_t klen, size_t vlen)
{
	return klen + vlen + KV_ENTRY_BYTES;
}

struct kv_store *kv_new(size_t max_bytes)
{
	struct kv_store *kv = calloc(1, sizeof(*kv));

	if (!kv)
		return NULL;
	kv->nbuckets = KV_BUCKETS_MIN;
	kv->buckets = calloc(kv->nbuckets, sizeof(*kv->buckets));
	if (!kv->buckets) {
		free(kv);
		return NULL;
	}
	kv->max_bytes = max_bytes;
	kv->seed = hash_seed();
	return kv;
}

static void kv_entry_free(struct kv_store *kv, struct kv_entry *e)
{
	kv->bytes -= kv_entry_size(e->klen, e->vlen);
	kv->count--;
	free(e->key);
	free(e->value);
	free(e);
}

void kv_free(struct kv_store *kv)
{
	if (!kv)
		return;
	for (size_t i = 0; i < kv->nbuckets; i++) {
		while (kv->buckets[i]) {
			struct kv_entry *e = kv->buckets[i];

			kv->buckets[i] = e->next;
			kv_entry_free(kv, e);
		}
	}
	free(kv->buckets);
	free(kv);
}

/* Double the table when it is fuller than one entry per bucket. A failed
 * allocation keeps the old table: longer chains, nothing lost. */
static void kv_grow(struct kv_store *kv)
{
	size_t n = kv->nbuckets * 2;
	struct kv_entry **b;

	if (kv->count <= kv->nbuckets)
		return;
	b = calloc(n, sizeof(*b));
	if (!b)
		return;
	for (size_t i = 0; i < kv->nbuckets; i++) {
		while (kv->buckets[i]) {
			struct kv_entry *e = kv->buckets[i];

			kv->buckets[i] = e->next;
			e->next = b[e->hash & (n - 1)];
			b[e->hash & (n - 1)] = e;
		}
	}
	free(kv->buckets);
	kv->buckets = b;
	kv->nbuckets = n;
	kv->sweep_at = 0;
}

static bool kv_expired(const struct kv_entry *e, int64_t now)
{
	return e->expires_ms && e->expires_ms <= now;
}

/* The link that points at KEY's entry (or at the NULL ending its chain). */
static struct kv_entry **kv_slot(struct kv_store *kv, const char *key,
				 size_t klen, uint64_t h)
{
	struct kv_entry **p = &kv->buckets[h & (kv->nbuckets - 1)];

	while (*p && !((*p)->hash == h && (*p)->klen == klen &&
		       memcmp((*p)->key, key, klen) == 0))
		p = &(*p)->next;
	return p;
}

static void kv_refuse(struct kv_store *kv, const char *key, size_t klen,
		      size_t vlen)
{
	int64_t now = now_ms();

	kv->refused++;
	if (kv->warned_ms && now - kv->warned_ms < KV_WARN_EVERY_MS)
		return;
	kv->warned_ms = now;
	log_warn("kv store full, store_data refused key=\"%.*s\" "
		 "value_bytes=%zu used_bytes=%zu limit_bytes=%zu "
		 "refused_total=%llu",
		 (int)(klen > 128 ? 128 : klen), key, vlen, kv->bytes,
		 kv->max_bytes, (unsigned long long)kv->refused);
}

void kv_set(struct kv_store *kv, const char *key, size_t klen,
	    const void *value, size_t vlen, int64_t ttl_s)
{
	uint64_t h = hash_bytes(kv->seed, key, klen);
	struct kv_entry **p = kv_slot(kv, key, klen, h), *e = *p;
	size_t old = e ? kv_entry_size(e->klen, e->vlen) : 0;
	char *copy;

	if (kv->bytes - old + kv_entry_size(klen, vlen) > kv->max_bytes) {
		kv->sweep_at = 0;
		for (size_t i = 0; i < kv->nbuckets; i += KV_SWEEP_SLICE)
			kv_sweep(kv);
		p = kv_slot(kv, key, klen, h);
		e = *p;
		old = e ? kv_entry_size(e->klen, e->vlen) : 0;
		if (kv->bytes - old + kv_entry_size(klen, vlen) >
		    kv->max_bytes) {
			kv_refuse(kv, key, klen, vlen);
			return;
		}
	}

	copy = malloc(vlen ? vlen : 1);
	if (!copy)
		return;
	memcpy(copy, value, vlen);
	if (!e) {
		e = calloc(1, sizeof(*e));
		if (!e || !(e->key = malloc(klen ? klen : 1))) {
			free(e);
			free(copy);
			return;
		}
		memcpy(e->key, key, klen);
		e->klen = klen;
		e->hash = h;
		*p = e;
		kv->count++;
	} else {
		kv->bytes -= old;
		free(e->value);
	}
	e->value = copy;
	e->vlen = vlen;
	e->expires_ms = ttl_s > 0 ? now_ms() + ttl_s * 1000 : 0;
	kv->bytes += kv_entry_size(klen, vlen);
	kv_grow(kv);
}

const void *kv_get(struct kv_store *kv, const char *key, size_t klen,
		   size_t *vlen)
{
	uint64_t h = hash_bytes(kv->seed, key, klen);
	struct kv_entry **p = kv_slot(kv, key, klen, h), *e = *p;

	if (!e)
		return NULL;
	if (kv_expired(e, now_ms())) {
		*p = e->next;
		kv_entry_free(kv, e);
		return NULL;
	}
	*vlen = e->vlen;
	return e->value;
}

/* Drop expired entries from the next KV_SWEEP_SLICE buckets. */
void kv_sweep(struct kv_store *kv)
{
	int64_t now = now_ms();
	size_t end = kv->sweep_at + KV_SWEEP_SLICE;

	if (end > kv->nbuckets)
		end = kv->nbuckets;
	for (size_t i = kv->sweep_at; i < end; i++) {
		struct kv_entry **p = &kv->buckets[i];

		while (*p) {
			struct kv_entry *e = *p;

			if (kv_expired(e, now)) {
				*p = e->next;
				kv_entry_free(kv, e);
			} else {
				p = &e->next;
			}
		}
	}
	kv->sweep_at = end == kv->nbuckets ? 0 : end;
}

size_t kv_count(const struct kv_store *kv)
{
	return kv->count;
}

size_t kv_bytes(const struct kv_store *kv)
{
	return kv->bytes;
}
