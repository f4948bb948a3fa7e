/* FNV-1a over bytes: the hash of sluiced's in-memory tables (the hooks'
 * key-value store, the rate limiter). Keys there come from hooks, not from
 * clients directly, so a keyed hash buys nothing. */
#ifndef SLUICE_HASH_H
#define SLUICE_HASH_H

#include <stddef.h>
#include <stdint.h>

static inline uint64_t hash_bytes(const void *data, size_t len)
{
	const unsigned char *p = data;
	uint64_t h = 1469598103934665603ULL;

	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 1099511628211ULL;
	}
	return h;
}

#endif
