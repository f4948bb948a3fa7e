/* The pool lock and the lanes.
 *
 * A lane is the pool's presence on one front thread. Each worker belongs to
 * one lane, round robin at spawn: its socket and timer events are on that
 * thread's event base. A front thread sends a call to a free worker of its
 * own lane when there is one, so the answer is read, applied and sent on
 * to the upstream by the thread that holds the connection, and no other
 * thread wakes up. That is most of what a hooked request costs beyond a
 * plain one (a thread hop is two context switches each way).
 *
 * Every entry point into the pool takes pool->lock with pool_enter() and
 * leaves with pool_leave(), which delivers the calls completed meanwhile:
 * those of the running lane on this stack, after the lock is given back;
 * those of other lanes through their kick event.
 *
 * Only a worker's own lane deletes or frees its events and closes its
 * socket. libevent's event_del() waits for the event's callback when it
 * runs on another thread, and that callback may be waiting for the pool
 * lock held by whoever called event_del(): a deadlock. So a worker closed
 * from another thread only has its socket shut down (the worker reads end
 * of file) and its read event activated; its lane's read callback then
 * detaches it. Reaped workers go to their lane's release list the same
 * way. Other threads only add or activate a worker's events; no timer of
 * the pool is ever deleted, only armed again (pool_timer_at).
 */
#include <errno.h>
#include <stdlib.h>

#include <event2/event.h>

#include "common/log.h"
#include "pool/pool_int.h"

/* The lane whose callback runs on this thread, while it holds the lock. */
static __thread struct pool_lane *lane_here;
static __thread bool lane_inline;

void pool_enter(struct pool *pool, struct pool_lane *lane, bool inline_done)
{
	pthread_mutex_lock(&pool->lock);
	lane_here = lane;
	lane_inline = inline_done;
}

struct pool_lane *pool_here(void)
{
	return lane_here;
}

/* Whether W's events may be deleted from here: on its own lane's thread,
 * or once no lane's loop runs. */
bool pool_on_lane(const struct pool_worker *w)
{
	return w->pool->threads_stopped || w->lane == lane_here;
}

struct pool_lane *pool_lane_of(struct pool *pool, const struct event_base *base)
{
	for (int i = 0; i < pool->nlanes; i++)
		if (pool->lanes[i].base == base)
			return &pool->lanes[i];
	return NULL;
}

/* Arm timer EV for DUE (ms), unless it is armed for then or earlier
 * already (*ARMED, which its callback zeroes). DUE 0 leaves it as it is.
 * A timer that fires early finds nothing to do and arms itself again: that
 * costs less than arming it for every call, which from another thread
 * wakes the timer's loop. */
void pool_timer_at(struct event *ev, int64_t *armed, int64_t due)
{
	int64_t wait;
	struct timeval tv;

	if (!due || (*armed && *armed <= due))
		return;
	*armed = due;
	wait = due - now_ms();
	if (wait < 0)
		wait = 0;
	tv.tv_sec = wait / 1000;
	tv.tv_usec = (wait % 1000) * 1000;
	evtimer_add(ev, &tv);
}

struct pool_lane *pool_lane_next(struct pool *pool)
{
	return &pool->lanes[pool->next_lane++ % pool->nlanes];
}

static void call_deliver_cb(int fd, short what, void *arg)
{
	struct pool_call *call = arg;

	(void)fd;
	(void)what;
	call->done(call);
}

/* Hand CALL to the thread of ORIGIN, which is not a lane (a caller of the
 * pool that runs no workers, as tests/pool/pool_driver does). */
static void deliver_elsewhere(struct pool_call *call)
{
	if (event_base_once(call->origin, -1, EV_TIMEOUT, call_deliver_cb, call,
			    NULL) < 0) {
		/* Only on allocation failure; a lost call would hang its
		 * client for good, running done() here is the lesser harm. */
		log_error("pool: cannot hand a call back to its thread api=%s",
			  call->api_name);
		call->done(call);
	}
}

static void lane_push(struct pool_lane *lane, struct pool_call *call)
{
	call->next = NULL;
	pool_calls_append(&lane->deliver_head, &lane->deliver_tail, call, call);
	event_active(lane->kick, EV_READ, 0);
}

void pool_leave(struct pool *pool)
{
	struct pool_call *call = pool->done_head, *mine = NULL, **tail = &mine;

	pool->done_head = pool->done_tail = NULL;
	while (call) {
		struct pool_call *next = call->next;
		struct pool_lane *to = NULL;
		bool now = !call->origin || pool->threads_stopped;

		if (!now) {
			to = pool_lane_of(pool, call->origin);
			now = lane_inline && to && to == lane_here;
		}
		call->next = NULL;
		if (now) {
			*tail = call;
			tail = &call->next;
		} else if (to) {
			lane_push(to, call);
		} else {
			deliver_elsewhere(call);
		}
		call = next;
	}
	lane_here = NULL;
	lane_inline = false;
	pthread_mutex_unlock(&pool->lock);

	while ((call = mine)) {
		mine = call->next;
		call->done(call);
	}
}

/* W is reaped and off the worker list: free it on its lane's thread. */
void pool_release(struct pool_worker *w)
{
	struct pool_lane *lane = w->lane;

	if (pool_on_lane(w) || !lane) {
		supervise_free(w);
		return;
	}
	w->next = lane->release;
	lane->release = w;
	event_active(lane->kick, EV_READ, 0);
}

/* Free LANE's released workers, and move the calls to deliver on its thread
 * to the completion list (pool_leave delivers them). */
static void lane_empty(struct pool *pool, struct pool_lane *lane)
{
	struct pool_worker *w;

	while ((w = lane->release)) {
		lane->release = w->next;
		supervise_free(w);
	}
	pool_calls_append(&pool->done_head, &pool->done_tail,
			  lane->deliver_head, lane->deliver_tail);
	lane->deliver_head = lane->deliver_tail = NULL;
}

static void lane_kick_cb(int fd, short what, void *arg)
{
	struct pool_lane *lane = arg;

	(void)fd;
	(void)what;
	pool_enter(lane->pool, lane, true);
	lane_empty(lane->pool, lane);
	pool_leave(lane->pool);
}

/* One lane per base in BASES; none given: one lane on the pool's own base
 * (its workers are then served by the main thread). */
int pool_lanes_new(struct pool *pool, struct event_base *const *bases, int n)
{
	pool->nlanes = n > 0 ? n : 1;
	pool->lanes = calloc(pool->nlanes, sizeof(*pool->lanes));
	if (!pool->lanes)
		return -ENOMEM;
	for (int i = 0; i < pool->nlanes; i++) {
		struct pool_lane *lane = &pool->lanes[i];

		lane->pool = pool;
		lane->base = n > 0 ? bases[i] : pool->base;
		lane->kick = event_new(lane->base, -1, 0, lane_kick_cb, lane);
		if (!lane->kick)
			return -ENOMEM;
	}
	return 0;
}

/* pool_stop, with the lock held and no lane's loop running any more: what
 * the lanes still hold is done here. */
void pool_lanes_stop(struct pool *pool)
{
	pool->threads_stopped = true;
	for (int i = 0; i < pool->nlanes; i++)
		lane_empty(pool, &pool->lanes[i]);
}

void pool_lanes_free(struct pool *pool)
{
	for (int i = 0; i < pool->nlanes && pool->lanes; i++)
		if (pool->lanes[i].kick)
			event_free(pool->lanes[i].kick);
	free(pool->lanes);
	pool->lanes = NULL;
}
