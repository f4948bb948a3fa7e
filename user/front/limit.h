/* Rate limits and quotas per key, as Tyk applies them to the session an
 * auth_check hook returns.
 *
 * The hook sets session.rate and session.per (RATE requests every PER
 * seconds) and session.quota_max and session.quota_renewal_rate (QUOTA_MAX
 * requests in each period of that many seconds), and names the key in
 * metadata["token"]; right after that hook the worker asks sluiced ("limit"
 * in common/msg.h) and the pool's limiter (hooked_limit) asks here, before
 * post_key_auth and post run.
 * Counters are kept per API and key, in sluiced's memory: shared by the
 * front threads and every worker, lost at restart.
 */
#ifndef SLUICE_LIMIT_H
#define SLUICE_LIMIT_H

#include <stddef.h>
#include <stdint.h>

struct limits;

struct limit_spec {
	double rate, per;	/* no rate limit unless both > 0 */
	int64_t quota_max;	/* no quota unless > 0 */
	int64_t quota_period_s; /* <= 0: the quota never renews */
};

enum limit_verdict {
	LIMIT_PASS,
	LIMIT_RATE,  /* answer 429 */
	LIMIT_QUOTA, /* answer 403 */
};

/* sluiced's table: some 10 MiB for this many short keys; long keys (a
 * token may be a whole JWT) are bounded by the bytes. */
#define LIMIT_MAX_KEYS	65536
#define LIMIT_MAX_BYTES (32u << 20)

/* At most MAX_KEYS keys, of at most MAX_BYTES with their bookkeeping, are
 * tracked at once; see limit_take. */
struct limits *limits_new(size_t max_keys, size_t max_bytes);
void limits_free(struct limits *l);

/* What limit_take saw beside its verdict. */
struct limit_state {
	/* Refused: how long until a request could pass; -1: never (a quota
	 * that does not renew). */
	int64_t wait_ms;
	/* The key's quota after this request; -1 when it has none or the
	 * key is not counted (the table is full). */
	int64_t quota_remaining;
	int64_t quota_renews_ms; /* from now; -1: never */
};

/* Count one request of KEY on API at NOW_MS (monotonic) against SPEC,
 * filling *STATE. A request refused for its rate uses none of its quota.
 * When the table is full of busy keys (none at rest to drop), a new key
 * passes unlimited and the log says so. Thread-safe. */
enum limit_verdict limit_take(struct limits *l, const char *api,
			      const char *key, size_t key_len,
			      const struct limit_spec *spec, int64_t now_ms,
			      struct limit_state *state);

#endif
