/* The pool's life: start, reload, stop, and the table of per-API bulkheads.
 *
 * A reload is a new generation. Its workers start at once with the new
 * rules; the old generation's workers keep taking calls until the first new
 * worker says "ready" (so a reload never leaves a gap in which calls only
 * wait), then they take no new call, finish the ones they hold and are
 * closed. Queued calls stay queued across the switch.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/log.h"
#include "common/msg.h"
#include "pool/pool_int.h"

#define KV_MAX_BYTES  (64u << 20)
#define STOP_GRACE_MS 2000
#define MSG_MAX_EXTRA (1u << 20)

struct pool_api *pool_api_find(struct pool *pool, const char *name)
{
	for (struct pool_api *p = pool->apis; p; p = p->next)
		if (strcmp(p->name, name) == 0)
			return p;
	return NULL;
}

/* The API's index in the rules W was started with, or -1 when W has no
 * hooks for it (an API added or made hooked by a reload). */
int pool_worker_api_index(const struct pool_worker *w,
			  const struct pool_api *papi)
{
	const struct rules_api *api;

	if (w->rules == w->pool->rules)
		return papi->api ? papi->api->index : -1;
	api = rules_find_api(w->rules, papi->name);
	return api && api->middleware ? api->index : -1;
}

static void api_configure(struct pool_api *papi, const struct rules_api *api)
{
	const struct rules_middleware *mw = api->middleware;

	papi->api = api;
	papi->max_inflight = mw->max_inflight > 0 ? mw->max_inflight : 1;
	papi->queue_max = mw->queue >= 0 ? mw->queue : 0;
	papi->queue_timeout_ms = mw->queue_timeout_ms;
	papi->timeout_ms = mw->timeout_ms > 0 ? mw->timeout_ms : 5000;
}

/* Point every bulkhead at RULES: update the known ones in place, add the
 * new ones, and mark the ones no longer hooked (api = NULL). */
static int pool_apis_update(struct pool *pool, struct rules *rules)
{
	for (struct pool_api *p = pool->apis; p; p = p->next)
		p->api = NULL;

	for (size_t i = 0; i < rules->api_count; i++) {
		const struct rules_api *api = &rules->apis[i];
		struct pool_api *papi;

		if (!api->middleware)
			continue;
		papi = pool_api_find(pool, api->name);
		if (!papi) {
			papi = calloc(1, sizeof(*papi));
			if (!papi)
				return -ENOMEM;
			snprintf(papi->name, sizeof(papi->name), "%s",
				 api->name);
			papi->pool = pool;
			papi->queue_timer = evtimer_new(
			    pool->base, dispatch_queue_timer_cb, papi);
			if (!papi->queue_timer) {
				free(papi);
				return -ENOMEM;
			}
			papi->next = pool->apis;
			pool->apis = papi;
		}
		api_configure(papi, api);
		dispatch_queue_timer_arm(papi);
	}
	return 0;
}

static size_t pool_msg_max(const struct rules *rules)
{
	/* A result may carry a new body for the request and the whole reply
	 * body besides its headers. */
	return 2 * rules->limits.body_bytes + MSG_MAX_EXTRA;
}

static int pool_events_new(struct pool *pool)
{
	struct timeval tick = {POOL_TICK_MS / 1000,
			       (POOL_TICK_MS % 1000) * 1000};

	pool->sigchld_ev =
	    evsignal_new(pool->base, SIGCHLD, supervise_sigchld_cb, pool);
	pool->tick_ev =
	    event_new(pool->base, -1, EV_PERSIST, supervise_tick_cb, pool);
	pool->spawn_ev = evtimer_new(pool->base, supervise_spawn_cb, pool);
	pool->grow_ev = evtimer_new(pool->base, supervise_spawn_cb, pool);
	pool->start_ev = event_new(pool->base, -1, 0, supervise_start_cb, pool);
	if (!pool->sigchld_ev || !pool->tick_ev || !pool->spawn_ev ||
	    !pool->grow_ev || !pool->start_ev)
		return -ENOMEM;
	if (event_add(pool->sigchld_ev, NULL) ||
	    event_add(pool->tick_ev, &tick))
		return -EINVAL;
	return 0;
}

static void pool_free(struct pool *pool)
{
	while (pool->apis) {
		struct pool_api *p = pool->apis;

		pool->apis = p->next;
		if (p->queue_timer)
			event_free(p->queue_timer);
		free(p->error);
		free(p);
	}
	redis_stop(pool);
	pool_lanes_free(pool);
	if (pool->sigchld_ev)
		event_free(pool->sigchld_ev);
	if (pool->tick_ev)
		event_free(pool->tick_ev);
	if (pool->spawn_ev)
		event_free(pool->spawn_ev);
	if (pool->grow_ev)
		event_free(pool->grow_ev);
	if (pool->start_ev)
		event_free(pool->start_ev);
	kv_free(pool->kv);
	if (pool->rules)
		rules_unref(pool->rules);
	pthread_mutex_destroy(&pool->lock);
	free(pool->rxbuf);
	free(pool->worker_path);
	free(pool->hooks_dir);
	free(pool);
}

/* Adaptive: a thread that finds the lock taken spins a little before it
 * sleeps. The lock is held for a few microseconds at a time, and sleeping
 * on it costs two context switches. */
static void pool_lock_init(pthread_mutex_t *lock)
{
	pthread_mutexattr_t attr;

	pthread_mutexattr_init(&attr);
	pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
	pthread_mutex_init(lock, &attr);
	pthread_mutexattr_destroy(&attr);
}

struct pool *pool_start(struct event_base *base,
			struct event_base *const *lanes, int nlanes,
			struct rules *rules, const char *worker_path,
			const char *hooks_dir)
{
	struct pool *pool = calloc(1, sizeof(*pool));
	int err = -ENOMEM;

	if (!pool)
		goto fail;
	pool_lock_init(&pool->lock);
	pool->base = base;
	pool->rules = rules_ref(rules);
	pool->generation = 1;
	pool->grow_at_once = (int)sysconf(_SC_NPROCESSORS_ONLN) - 1;
	if (pool->grow_at_once < 1)
		pool->grow_at_once = 1;
	pool->msg_max = pool_msg_max(rules);
	pool->worker_path = strdup(worker_path);
	pool->hooks_dir = strdup(hooks_dir);
	pool->rxbuf = malloc(1 + MSG_RECORD_MAX);
	pool->kv = kv_new(KV_MAX_BYTES);
	if (!pool->worker_path || !pool->hooks_dir || !pool->rxbuf || !pool->kv)
		goto fail_pool;
	err = pool_events_new(pool);
	if (!err)
		err = pool_lanes_new(pool, lanes, nlanes);
	if (!err && rules->python.store.has_redis)
		err = redis_start(pool, &rules->python.store);
	if (err)
		goto fail_pool;
	err = pool_apis_update(pool, rules);
	if (err)
		goto fail_pool;

	log_info("pool starting workers_min=%d workers_max=%d lanes=%d "
		 "worker=%s hooks=%s",
		 rules->python.workers_min, rules->python.workers_max,
		 pool->nlanes, worker_path, hooks_dir);
	pool_enter(pool, NULL, false);
	supervise_ensure_min(pool);
	pool_leave(pool);
	/* The first workers exist when this returns, as a caller counting
	 * its children expects. */
	supervise_start_wanted(pool);
	return pool;

fail_pool:
	pool_free(pool);
fail:
	log_error("pool start failed: %s", strerror(-err));
	errno = -err;
	return NULL;
}

void pool_watch_workers(struct pool *pool, pool_worker_fn fn, void *arg)
{
	pool_enter(pool, NULL, false);
	pool->watch_fn = fn;
	pool->watch_arg = arg;
	for (struct pool_worker *w = pool->workers; w; w = w->next)
		supervise_publish(w, false);
	pool_leave(pool);
}

void pool_set_limiter(struct pool *pool, pool_limit_fn fn, void *arg)
{
	pool_enter(pool, NULL, false);
	pool->limit_fn = fn;
	pool->limit_arg = arg;
	pool_leave(pool);
}

/* The old generation steps down: called when the first worker of the new
 * one is ready. Calls of APIs that the new rules no longer hook cannot run
 * anywhere after this. */
void pool_retire_old(struct pool *pool)
{
	int n = 0;

	for (struct pool_worker *w = pool->workers; w; w = w->next) {
		if (w->generation == pool->generation ||
		    (w->state != WORKER_READY && w->state != WORKER_STARTING))
			continue;
		supervise_drain(w, "reload");
		n++;
	}
	for (struct pool_api *p = pool->apis; p; p = p->next)
		if (!p->api && p->queued)
			dispatch_fail_queue(p, POOL_UNAVAILABLE,
					    "API no longer has hooks after "
					    "reload");
	if (n)
		log_info("pool generation=%u ready, retiring old workers=%d",
			 pool->generation, n);
}

void pool_reload(struct pool *pool, struct rules *rules)
{
	int err;

	if (rules == pool->rules)
		return;
	pool_enter(pool, NULL, false);
	rules_ref(rules);
	rules_unref(pool->rules);
	pool->rules = rules;
	pool->generation++;
	pool->gen_ready = false;
	pool->gen_status = false;
	pool->msg_max = pool_msg_max(rules);
	err = pool_apis_update(pool, rules);
	if (err)
		log_error("pool reload: %s", strerror(-err));

	log_info("pool reload generation=%u workers_min=%d workers_max=%d",
		 pool->generation, rules->python.workers_min,
		 rules->python.workers_max);
	/* Fresh code without waiting out a crash backoff of the old one. */
	pool->crash_streak = 0;
	pool->next_spawn_ms = 0;
	supervise_ensure_min(pool);
	if (supervise_live_count(pool) == 0) {
		/* No hooked API left: nothing will become ready. */
		pool->gen_ready = true;
		pool_retire_old(pool);
	}
	dispatch_run(pool);
	pool_leave(pool);
}

/* Wait up to MS for every worker to be reaped. */
static void pool_wait_reaped(struct pool *pool, int ms)
{
	int64_t end = now_ms() + ms;
	struct timespec pause = {0, 10 * 1000 * 1000};

	for (;;) {
		supervise_reap_all(pool);
		if (!pool->workers || now_ms() >= end)
			return;
		nanosleep(&pause, NULL);
	}
}

/* The front threads have stopped: what is left completes here, on this
 * thread. */
void pool_stop(struct pool *pool)
{
	if (!pool)
		return;
	pool_enter(pool, NULL, true);
	pool->stopping = true;
	pool_lanes_stop(pool);
	for (struct pool_api *p = pool->apis; p; p = p->next)
		dispatch_fail_queue(p, POOL_SHUTDOWN, NULL);

	/* TERM first: a worker may flush its log lines. */
	for (struct pool_worker *w = pool->workers; w; w = w->next) {
		if (w->state != WORKER_CLOSED)
			supervise_close(w, "stop");
		if (!w->kill_signal) {
			kill(w->pid, SIGTERM);
			w->kill_signal = SIGTERM;
		}
	}
	pool_wait_reaped(pool, STOP_GRACE_MS);
	for (struct pool_worker *w = pool->workers; w; w = w->next) {
		log_warn("worker killed pid=%d reason=stop-timeout", w->pid);
		kill(w->pid, SIGKILL);
		w->kill_signal = SIGKILL;
	}
	pool_wait_reaped(pool, 60000);
	log_info("pool stopped spawned=%llu killed=%llu recycled=%llu",
		 (unsigned long long)pool->spawned,
		 (unsigned long long)pool->killed,
		 (unsigned long long)pool->recycled);
	pool_leave(pool);
	pool_free(pool);
}
