/* The worker pool: sluice-worker processes that run Python hooks.
 *
 * Supervision (spawning, reaping, the bulkheads' timers) runs on sluiced's
 * main thread. Each worker belongs to one front thread (a lane), whose event
 * loop reads its answers. A front thread hands the pool a call with
 * pool_submit(): the call goes at once to a free worker, one of its own
 * lane's first, or waits behind its API's bulkhead. The pool watches the
 * deadline and completes the call exactly once by running call->done on the
 * front thread that submitted it (call->origin, that thread's event base).
 *
 * Ownership: the caller allocates the call and keeps it alive until done()
 * has run; done() is where the caller frees it. A front connection that goes
 * away while its call is pending sets nothing in the pool: it waits for
 * done() and then drops the result.
 */
#ifndef SLUICE_POOL_H
#define SLUICE_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct rules;
struct rules_api;
struct pool_api;
struct pool_worker;

enum pool_phase {
	POOL_PHASE_REQUEST = 0,
	POOL_PHASE_RESPONSE,
};

/* How a call ended. The front maps these to statuses (see front/hooked.c). */
enum pool_result {
	POOL_OK = 0,	    /* reply/reply_len hold the worker's "result" */
	POOL_HOOK_ERROR,    /* the hook raised: error holds the traceback */
	POOL_TIMEOUT,	    /* deadline passed; the worker was killed */
	POOL_WORKER_DIED,   /* the worker exited mid-call */
	POOL_QUEUE_FULL,    /* the API's bulkhead queue is full */
	POOL_QUEUE_TIMEOUT, /* waited longer than queue_timeout_ms */
	POOL_UNAVAILABLE, /* the API's modules do not import: error says why */
	POOL_SHUTDOWN,	  /* the pool is stopping */
};

struct pool_call {
	/* Set by the caller before pool_submit(). */
	char api_name[64];
	enum pool_phase phase;
	char *msg; /* msgpack CALL map (common/msg.h), malloc'd */
	size_t msg_len;
	struct event_base *origin;
	void (*done)(struct pool_call *call);
	void *arg;

	/* Set by the pool before done(). */
	enum pool_result result;
	char *reply; /* msgpack "result" map (POOL_OK), malloc'd; a NUL
		      * follows its reply_len bytes, so C string functions
		      * on the strings inside stop at its end */
	size_t reply_len;
	char *error; /* malloc'd text or NULL */

	/* Pool-private links. */
	struct pool *pool;
	struct pool_lane *lane; /* of the submitting thread, or NULL */
	int passed;		/* times passed over at the queue's head */
	struct pool_call *next;
	uint64_t id;
	int64_t queued_at_ms;
	int64_t sent_at_us;
	int64_t deadline_ms;
	struct pool_api *papi;	    /* the API's bulkhead */
	struct pool_worker *worker; /* while on a worker */
};

struct pool;

/* Start the pool for RULES on BASE (the main thread's), with one lane per
 * event base in LANES (the front threads'; none: workers are served on
 * BASE). The lanes' loops must outlive the pool until pool_stop(), which
 * runs after they stopped. WORKER_PATH is the sluice-worker executable,
 * HOOKS_DIR the directory holding the Python packages (sluice/, tyk/,
 * gateway.py). */
struct pool *pool_start(struct event_base *base,
			struct event_base *const *lanes, int nlanes,
			struct rules *rules, const char *worker_path,
			const char *hooks_dir);

/* A lane's thread (or any thread of a pool without lanes). Takes ownership
 * of call->msg. Always completes with done(), never inside this call. */
void pool_submit(struct pool *pool, struct pool_call *call);

/* Main thread: new rules (HUP). Workers are replaced with fresh ones that
 * import the new code. The old ones keep taking calls until the first new
 * one is ready (no gap in service), then take none, finish the calls they
 * hold and are closed. Queued calls stay queued; none fails because of the
 * reload, except calls of an API the new rules no longer hook. */
void pool_reload(struct pool *pool, struct rules *rules);

/* Main thread: fail queued calls with POOL_SHUTDOWN, kill every worker,
 * reap them and free the pool. */
void pool_stop(struct pool *pool);

/* Append the pool's part of /status (a JSON object, no trailing comma) and
 * of /metrics (Prometheus text) to an evbuffer. */
struct evbuffer;
void pool_status_json(struct pool *pool, struct evbuffer *out);
void pool_metrics(struct pool *pool, struct evbuffer *out);

/* Main thread, optional: FN hears of each worker for the sluice_workers
 * map (the front passes it on to sbpf_worker_set/delete). STATE is 0
 * starting, 1 idle, 2 busy, or -1 once the process is gone; API names the
 * API of a call it holds, or NULL; CALLS counts the calls it answered.
 * Called when a worker starts, is ready and is gone, and for every worker
 * once a second: a sample, not a per-call trace. */
typedef void (*pool_worker_fn)(void *arg, int pid, int state, const char *api,
			       uint64_t calls);
void pool_watch_workers(struct pool *pool, pool_worker_fn fn, void *arg);

/* Optional: FN counts a request against the rate limit and quota an
 * auth_check set for its key, when the worker asks right after that hook
 * ("limit" in common/msg.h; LIM is that message), and fills *OUT: the rate
 * only when COUNT_RATE, the quota only when COUNT_QUOTA (with
 * python.store.redis the pool counts the quota, and with shared_rates the
 * rate, in Redis, from what OUT says the hook set). FN runs on the thread
 * that reads the worker, with the pool lock held: it must not call into
 * the pool. Without one, every request passes. */
struct msgpack_object;
struct pool_limit_verdict {
	const char *verdict;	 /* "pass", "rate" or "quota" */
	int64_t wait_ms;	 /* refused: until one could pass; -1: never */
	int64_t quota_remaining; /* after this request; -1: none counted */
	int64_t quota_renews_ms; /* from now; -1: never */
	/* The limits as the hook set them. */
	double rate, per;
	int64_t quota_max, quota_period_s;
};
typedef void (*pool_limit_fn)(void *arg, const char *api,
			      const struct msgpack_object *lim, bool count_rate,
			      bool count_quota, struct pool_limit_verdict *out);
void pool_set_limiter(struct pool *pool, pool_limit_fn fn, void *arg);

/* `sluiced -t`: whether the Redis of python.store answers now; if not,
 * why in WHY. */
struct rules_store;
int pool_check_store(const struct rules_store *conf, char *why, size_t len);

/* `sluiced -t`: start one worker for RULES, wait for "ready", and report
 * every import error as "FILE: api NAME: traceback" on stderr. Returns 0
 * when all modules import. */
int pool_check_imports(struct rules *rules, const char *worker_path,
		       const char *hooks_dir);

#endif
