/* Dispatch: calls from the front threads, through each API's bulkhead, to a
 * worker; deadlines; completion. Runs on whichever thread holds the pool
 * lock: a front thread submitting a call, a lane reading an answer, the
 * main thread supervising.
 *
 * Bulkhead: an API has at most max_inflight calls on workers; the rest wait
 * in its FIFO queue, at most `queue` of them (the next one is refused with
 * POOL_QUEUE_FULL at once), each for at most queue_timeout_ms.
 *
 * The dispatch rule. Workers are chosen per call, oldest waiting call first
 * across all APIs:
 *   1. an idle worker (no call): one of the running thread's lane first
 *      (its answer then needs no other thread), then the most recently
 *      idle, so that the surplus stays idle long enough to be shrunk away;
 *   2. failing that, when every hook of the call's API is `async def` (the
 *      worker's "ready" says so), a worker whose current calls are all of
 *      such APIs and number fewer than python.concurrency, the least loaded
 *      first: those calls wait on the worker's asyncio loop, not on a CPU;
 *   3. failing that the call waits, and the pool grows (up to workers.max)
 *      while calls wait.
 * A sync hook therefore never shares a worker, and an async call never
 * waits behind a sync one. So that steady async traffic cannot keep every
 * worker busy for good while a sync call waits at workers.max, such a
 * sync call reserves one worker that holds async calls: it takes no new
 * ones, empties, and is then idle for the oldest waiting call.
 *
 * A call past its deadline completes with POOL_TIMEOUT at once. Its worker
 * takes no new call; it is killed as soon as it holds no other live call
 * (at once for a sync call), so the calls sharing an async worker are not
 * taken down by a neighbour's deadline unless their own passes too.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "common/log.h"
#include "common/msg.h"
#include "pool/pool_int.h"

/* How far a freed worker looks into a queue for a call of its own lane,
 * and how often the head may be passed over for one. */
#define LANE_SCAN 16
#define LANE_PASS 4

const double pool_hist_bounds[POOL_HIST_BUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1,    0.25,  0.5,	   1,	  2.5,	5,     10,
};

const char *const pool_result_names[POOL_RESULT_COUNT] = {
    [POOL_OK] = "ok",
    [POOL_HOOK_ERROR] = "hook_error",
    [POOL_TIMEOUT] = "timeout",
    [POOL_WORKER_DIED] = "worker_died",
    [POOL_QUEUE_FULL] = "queue_full",
    [POOL_QUEUE_TIMEOUT] = "queue_timeout",
    [POOL_UNAVAILABLE] = "unavailable",
    [POOL_SHUTDOWN] = "shutdown",
};

static char *textf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *textf(const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	return s;
}

/* ---- completion --------------------------------------------------------- */

static bool call_is_sync(const struct pool_worker *w,
			 const struct pool_call *call)
{
	int idx = pool_worker_api_index(w, call->papi);

	return idx < 0 || !w->async_api || !w->async_api[idx];
}

static void hist_add(struct pool_api *papi, double seconds)
{
	int b = 0;

	while (b < POOL_HIST_BUCKETS && seconds > pool_hist_bounds[b])
		b++;
	papi->hist[b]++;
	papi->dur_sum += seconds;
	papi->dur_count++;
}

/* Take CALL off its worker: the worker's and the API's counts drop. */
void dispatch_unlink(struct pool_call *call)
{
	struct pool_worker *w = call->worker;
	struct pool_call **p;

	if (!w)
		return;
	for (p = &w->calls; *p && *p != call; p = &(*p)->next)
		;
	if (*p)
		*p = call->next;
	w->ncalls--;
	if (call_is_sync(w, call))
		w->sync_calls--;
	call->papi->inflight--;
	hist_add(call->papi, (now_us() - call->sent_at_us) / 1e6);
	call->worker = NULL;
	call->next = NULL;
}

/* Finish CALL: record how; pool_leave() hands it back to its thread. The
 * pool never touches the call after this. ERROR and REPLY become the
 * caller's. */
void dispatch_complete(struct pool_call *call, enum pool_result result,
		       char *error, char *reply, size_t reply_len)
{
	struct pool *pool = call->pool;

	dispatch_unlink(call);
	if (call->papi)
		call->papi->results[result]++;
	free(call->msg);
	call->msg = NULL;
	call->msg_len = 0;
	call->result = result;
	call->error = error;
	call->reply = reply;
	call->reply_len = reply_len;
	call->next = NULL;
	call->papi = NULL;
	pool_calls_append(&pool->done_head, &pool->done_tail, call, call);
}

/* ---- queues ------------------------------------------------------------- */

void dispatch_queue_timer_arm(struct pool_api *papi)
{
	if (papi->q_head && papi->queue_timeout_ms > 0)
		pool_timer_at(papi->queue_timer, &papi->queue_timer_ms,
			      papi->q_head->queued_at_ms +
				  papi->queue_timeout_ms);
}

static void queue_push(struct pool_api *papi, struct pool_call *call)
{
	call->next = NULL;
	pool_calls_append(&papi->q_head, &papi->q_tail, call, call);
	papi->queued++;
	if (papi->q_head == call)
		dispatch_queue_timer_arm(papi);
}

static struct pool_call *queue_pop(struct pool_api *papi)
{
	struct pool_call *call = papi->q_head;

	if (!call)
		return NULL;
	papi->q_head = call->next;
	if (!papi->q_head)
		papi->q_tail = NULL;
	papi->queued--;
	call->next = NULL;
	dispatch_queue_timer_arm(papi);
	return call;
}

/* The call a worker of LANE takes from PAPI's queue: the first one
 * submitted on LANE among the first LANE_SCAN, so that its answer is read
 * by the thread that waits for it; the head itself once it has been passed
 * over LANE_PASS times, so that no call waits long for a lane of its own. */
static struct pool_call *queue_take(struct pool_api *papi,
				    const struct pool_lane *lane)
{
	struct pool_call *head = papi->q_head, **p = &papi->q_head, *call;
	int n = 0;

	if (!head || head->lane == lane || head->passed >= LANE_PASS)
		return queue_pop(papi);
	for (; *p && n < LANE_SCAN; p = &(*p)->next, n++)
		if ((*p)->lane == lane)
			break;
	if (!*p || n == LANE_SCAN)
		return queue_pop(papi);
	call = *p;
	*p = call->next;
	if (papi->q_tail == call)
		papi->q_tail = NULL;
	for (struct pool_call *c = papi->q_head; !papi->q_tail && c;
	     c = c->next)
		if (!c->next)
			papi->q_tail = c;
	papi->queued--;
	head->passed++;
	call->next = NULL;
	return call;
}

/* Remove the newest call: the one just submitted, when it finds the queue
 * full. */
static struct pool_call *queue_pop_tail(struct pool_api *papi)
{
	struct pool_call **p = &papi->q_head, *call;

	while (*p && (*p)->next)
		p = &(*p)->next;
	call = *p;
	if (!call)
		return NULL;
	*p = NULL;
	papi->q_tail = NULL;
	for (struct pool_call *c = papi->q_head; c; c = c->next)
		papi->q_tail = c;
	papi->queued--;
	if (!papi->q_head)
		dispatch_queue_timer_arm(papi);
	return call;
}

void dispatch_fail_queue(struct pool_api *papi, enum pool_result result,
			 const char *error)
{
	struct pool_call *call;

	while ((call = queue_pop(papi)))
		dispatch_complete(call, result, error ? strdup(error) : NULL,
				  NULL, 0);
}

void dispatch_queue_timer_cb(int fd, short what, void *arg)
{
	struct pool_api *papi = arg;
	struct pool *pool = papi->pool;
	int64_t now = now_ms();

	(void)fd;
	(void)what;
	pool_enter(pool, NULL, false);
	papi->queue_timer_ms = 0;
	while (papi->q_head &&
	       papi->q_head->queued_at_ms + papi->queue_timeout_ms <= now) {
		struct pool_call *call = queue_pop(papi);

		dispatch_complete(call, POOL_QUEUE_TIMEOUT,
				  textf("waited %d ms in the queue of API %s",
					papi->queue_timeout_ms, papi->name),
				  NULL, 0);
	}
	dispatch_queue_timer_arm(papi);
	pool_leave(pool);
}

/* ---- choosing a worker -------------------------------------------------- */

/* Whether W takes new calls at all: ready, and of the current generation
 * unless that one has no ready worker yet (during a reload). */
static bool worker_open(const struct pool *pool, const struct pool_worker *w)
{
	return w->state == WORKER_READY &&
	       (w->generation == pool->generation || !pool->gen_ready);
}

static bool idle_better(const struct pool *pool, const struct pool_worker *a,
			const struct pool_worker *b)
{
	bool a_cur = a->generation == pool->generation;
	bool b_cur = b->generation == pool->generation;
	bool a_here = a->lane == pool_here(), b_here = b->lane == pool_here();

	if (a_cur != b_cur)
		return a_cur;
	if (a_here != b_here)
		return a_here;
	return a->idle_since_ms > b->idle_since_ms;
}

static struct pool_worker *dispatch_pick(struct pool *pool,
					 const struct pool_api *papi)
{
	struct pool_worker *idle = NULL, *shared = NULL;

	for (struct pool_worker *w = pool->workers; w; w = w->next) {
		int idx;

		if (!worker_open(pool, w))
			continue;
		idx = pool_worker_api_index(w, papi);
		if (idx < 0)
			continue;
		if (w->ncalls == 0) {
			if (!idle || idle_better(pool, w, idle))
				idle = w;
		} else if (!w->reserved && w->sync_calls == 0 && w->async_api &&
			   w->async_api[idx] &&
			   w->ncalls < w->rules->python.concurrency &&
			   (!shared || w->ncalls < shared->ncalls)) {
			shared = w;
		}
	}
	return idle ? idle : shared;
}

static void dispatch_send(struct pool_worker *w, struct pool_call *call)
{
	struct pool_api *papi = call->papi;
	char head[64];
	size_t hlen = wire_encode_call_head(head, sizeof(head), call->id);
	struct iovec iov[2] = {{head, hlen}, {call->msg, call->msg_len}};
	int err;

	if (w->ncalls == 0)
		w->reserved = false;
	call->worker = w;
	call->next = w->calls;
	w->calls = call;
	w->ncalls++;
	if (call_is_sync(w, call))
		w->sync_calls++;
	papi->inflight++;
	call->sent_at_us = now_us();
	call->deadline_ms = call->sent_at_us / 1000 + papi->timeout_ms;

	err = worker_send(w, iov, 2);
	free(call->msg);
	call->msg = NULL;
	if (err) {
		supervise_lost(w, "send-failed");
		return;
	}
	supervise_timer_arm(w);
}

/* The API whose head call is the oldest among those that may run now. */
static struct pool_api *dispatch_next_api(struct pool *pool)
{
	struct pool_api *best = NULL;

	for (struct pool_api *p = pool->apis; p; p = p->next) {
		if (p->blocked || !p->q_head || p->error ||
		    p->inflight >= p->max_inflight)
			continue;
		if (!best || p->q_head->id < best->q_head->id)
			best = p;
	}
	return best;
}

/* Workers it would take to run the calls that wait only for a worker:
 * what growth is for. A new worker takes one sync call, or up to
 * python.concurrency calls of an async API. Only calls that have waited
 * POOL_GROW_AFTER_MS count: with cheap hooks a queue drains in less, and a
 * new interpreter would cost more than it saves. *RECHECK is when a call
 * waiting now reaches that age (0: none). */
static int dispatch_waiting(const struct pool *pool, int64_t *recheck)
{
	int64_t old = now_ms() - POOL_GROW_AFTER_MS;
	int slots = pool->rules->python.concurrency;
	int need = 0;

	*recheck = 0;
	if (slots < 1)
		slots = 1;
	for (const struct pool_api *p = pool->apis; p; p = p->next) {
		int room = p->max_inflight - p->inflight, n = 0;
		const struct pool_call *c = p->q_head;

		if (!p->blocked || p->error)
			continue;
		for (; c && n < room && c->queued_at_ms <= old; c = c->next)
			n++;
		if (c && n < room && (!*recheck || c->queued_at_ms < *recheck))
			*recheck = c->queued_at_ms;
		if (n)
			need += p->is_async ? (n + slots - 1) / slots : n;
	}
	if (*recheck)
		*recheck += POOL_GROW_AFTER_MS;
	return need;
}

/* Refuse the calls submitted since MARK (an id) that did not go to a
 * worker and do not fit in their API's queue. */
static void dispatch_trim(struct pool *pool, uint64_t mark)
{
	for (struct pool_api *p = pool->apis; p; p = p->next) {
		while (p->queued > p->queue_max && p->q_tail &&
		       p->q_tail->id > mark) {
			struct pool_call *call = queue_pop_tail(p);

			dispatch_complete(call, POOL_QUEUE_FULL,
					  textf("queue of API %s is full "
						"(%d calls)",
						p->name, p->queue_max),
					  NULL, 0);
		}
	}
}

/* PAPI's head waits and no worker can take it. When it is a sync call
 * and the pool cannot grow, reserve the async worker with the fewest
 * calls (unless one already is). */
static void dispatch_reserve(struct pool *pool, const struct pool_api *papi)
{
	struct pool_worker *best = NULL;

	if (papi->is_async ||
	    supervise_live_count(pool) < pool->rules->python.workers_max)
		return;
	for (struct pool_worker *w = pool->workers; w; w = w->next) {
		if (!worker_open(pool, w) || pool_worker_api_index(w, papi) < 0)
			continue;
		if (w->reserved)
			return;
		if (w->ncalls && w->sync_calls == 0 &&
		    (!best || w->ncalls < best->ncalls))
			best = w;
	}
	if (best)
		best->reserved = true;
}

static void dispatch_run_mark(struct pool *pool, uint64_t mark)
{
	struct pool_api *papi;
	int64_t recheck;

	if (pool->stopping)
		return;
	for (papi = pool->apis; papi; papi = papi->next)
		papi->blocked = false;

	while ((papi = dispatch_next_api(pool))) {
		struct pool_worker *w = dispatch_pick(pool, papi);

		if (!w) {
			papi->blocked = true;
			dispatch_reserve(pool, papi);
			continue;
		}
		dispatch_send(w, queue_take(papi, w->lane));
	}
	dispatch_trim(pool, mark);
	supervise_grow(pool, dispatch_waiting(pool, &recheck));
	supervise_grow_timer(pool, recheck);
}

void dispatch_run(struct pool *pool)
{
	dispatch_run_mark(pool, UINT64_MAX);
}

/* ---- intake ------------------------------------------------------------- */

static void dispatch_accept(struct pool *pool, struct pool_call *call)
{
	struct pool_api *papi = pool_api_find(pool, call->api_name);

	if (!papi || (!papi->api && pool->gen_ready)) {
		dispatch_complete(call, POOL_UNAVAILABLE,
				  textf("API %s has no hooks", call->api_name),
				  NULL, 0);
		return;
	}
	call->papi = papi;
	if (papi->error) {
		dispatch_complete(call, POOL_UNAVAILABLE, strdup(papi->error),
				  NULL, 0);
		return;
	}
	call->id = ++pool->next_id;
	queue_push(papi, call);
}

/* On the caller's thread: the call goes to a worker at once when one is
 * free (one of this thread's lane first), or waits in its API's queue. Its
 * done() never runs inside this function. */
void pool_submit(struct pool *pool, struct pool_call *call)
{
	uint64_t mark;

	call->next = NULL;
	call->pool = pool;
	call->papi = NULL;
	call->worker = NULL;
	call->reply = NULL;
	call->reply_len = 0;
	call->error = NULL;
	call->queued_at_ms = now_ms();

	call->lane = pool_lane_of(pool, call->origin);
	call->passed = 0;
	pool_enter(pool, call->lane, false);
	mark = pool->next_id;
	if (pool->stopping) {
		dispatch_complete(call, POOL_SHUTDOWN, NULL, NULL, 0);
	} else {
		dispatch_accept(pool, call);
		dispatch_run_mark(pool, mark);
	}
	pool_leave(pool);
}

/* ---- on the worker ------------------------------------------------------ */

int64_t dispatch_next_deadline(const struct pool_worker *w)
{
	int64_t due = 0;

	for (const struct pool_call *c = w->calls; c; c = c->next)
		if (!due || c->deadline_ms < due)
			due = c->deadline_ms;
	return due;
}

/* Complete W's calls whose deadline has passed. */
void dispatch_expire(struct pool_worker *w, int64_t now)
{
	struct pool_call *call = w->calls, *next;

	for (; call; call = next) {
		next = call->next;
		if (call->deadline_ms > now)
			continue;
		log_warn("hook deadline passed api=%s worker=%d timeout_ms=%d",
			 call->papi->name, w->pid, call->papi->timeout_ms);
		w->timed_out = true;
		if (w->state == WORKER_READY) {
			w->state = WORKER_DRAINING;
			w->drain_reason = "deadline";
		}
		dispatch_complete(call, POOL_TIMEOUT,
				  textf("hook deadline of %d ms passed",
					call->papi->timeout_ms),
				  NULL, 0);
	}
}

/* The worker has logged the whole traceback (a "log" message); one line
 * here ties the failure to the call's outcome. */
static void log_hook_error(const struct pool_worker *w, const char *api,
			   const char *tb)
{
	char *last = wire_last_line(tb);
	char esc[512];

	wire_escape(last ? last : tb, strlen(last ? last : tb), esc,
		    sizeof(esc));
	log_warn("hook raised api=%s worker=%d error=\"%s\"", api, w->pid, esc);
	free(last);
}

/* A "result" from W. Results for calls already completed (past their
 * deadline) are dropped. */
void dispatch_on_result(struct pool_worker *w, const msgpack_object *msg,
			const char *raw, size_t raw_len)
{
	uint64_t id = (uint64_t)wire_int(msg_get(msg, "id"), 0);
	const msgpack_object *ok = msg_get(msg, "ok");
	struct pool_call *call;
	struct pool *pool = w->pool;

	for (call = w->calls; call && call->id != id; call = call->next)
		;
	if (!call) {
		log_debug("late result dropped worker=%d id=%llu", w->pid,
			  (unsigned long long)id);
		return;
	}

	w->served++;
	pool->crash_streak = 0;
	if (ok && ok->type == MSGPACK_OBJECT_BOOLEAN && ok->via.boolean) {
		char *reply = malloc(raw_len + 1);

		if (reply) {
			memcpy(reply, raw, raw_len);
			reply[raw_len] = '\0';
		}
		dispatch_complete(call, reply ? POOL_OK : POOL_HOOK_ERROR,
				  reply ? NULL : strdup("out of memory"), reply,
				  reply ? raw_len : 0);
	} else {
		char *tb = wire_strdup(msg_get(msg, "error"));

		if (!tb)
			tb = strdup("hook failed without a traceback");
		if (tb)
			log_hook_error(w, call->papi->name, tb);
		dispatch_complete(call, POOL_HOOK_ERROR, tb, NULL, 0);
	}

	if (w->state == WORKER_READY && w->rules->python.max_requests > 0 &&
	    w->served >= (uint64_t)w->rules->python.max_requests) {
		pool->recycled++;
		log_info(
		    "worker recycling pid=%d reason=max_requests calls=%llu",
		    w->pid, (unsigned long long)w->served);
		supervise_drain(w, "max_requests");
	}
	supervise_settle(w);
}
