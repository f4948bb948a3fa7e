/* The pool's private types, shared by its modules:
 *
 *   pool.c       start, reload, stop; the per-API bulkhead table
 *   lane.c       the pool lock, and each front thread's lane: completion
 *                delivery and the freeing of its workers
 *   dispatch.c   intake, queues, the dispatch rule, deadlines, completion
 *   supervise.c  spawn, messages from workers, kill, reap, respawn, recycle,
 *                idle shrink
 *   wire.c       record framing and msgpack encoding/decoding
 *   kv.c         the store behind TykGateway.store_data/get_data
 *   redis.c      the same calls against Redis (python.store.redis)
 *   stats.c      /status and /metrics
 *   check.c      `sluiced -t`: import the hooks once and report
 *
 * Threads. The pool's state is shared by sluiced's main thread (supervision:
 * spawn, reap, timers of the bulkheads) and the front threads (which submit
 * calls and read the answers of their own workers). All of it is under
 * pool->lock, taken by every entry point with pool_enter() and given back
 * with pool_leave() (lane.c), which also delivers the calls completed
 * meanwhile. A worker's socket and timer events belong to its lane; only
 * that lane's thread deletes or frees them (see lane.c for why).
 */
#ifndef SLUICE_POOL_INT_H
#define SLUICE_POOL_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <msgpack.h>

#include "common/clock.h"
#include "common/rules.h"
#include "pool/pool.h"

struct event;
struct kv_store;
struct pool_redis;
struct redis_link;

#define POOL_RESULT_COUNT   (POOL_SHUTDOWN + 1)
#define POOL_HIST_BUCKETS   14
#define POOL_START_TIMEOUT  30000 /* ms for a worker to answer "ready" */
#define POOL_CLOSE_GRACE_MS 5000  /* closed worker still alive: SIGKILL */
#define POOL_TICK_MS	    1000  /* idle shrink, RSS, kv sweep */
#define POOL_GROW_AFTER_MS  20	  /* a call waits this long: grow */

extern const double pool_hist_bounds[POOL_HIST_BUCKETS];
extern const char *const pool_result_names[POOL_RESULT_COUNT];

/* One hooked API's bulkhead. Entries live as long as the pool: a reload
 * updates them in place (by name), so calls and counters keep a valid
 * pointer whatever the rules become. */
struct pool_api {
	struct pool_api *next;
	char name[RULES_NAME_MAX];
	struct pool *pool;
	const struct rules_api *api; /* in pool->rules; NULL: not hooked now */
	int max_inflight;
	int queue_max;
	int queue_timeout_ms;
	int timeout_ms;

	int inflight;
	struct pool_call *q_head, *q_tail;
	int queued;
	bool blocked; /* dispatch pass: no worker can take its head */
	struct event *queue_timer;
	int64_t queue_timer_ms; /* when it fires; 0: not armed */

	/* Import status from the newest generation that reported one.
	 * error: last line of the traceback, NULL when the modules import. */
	unsigned status_gen;
	char *error;
	bool is_async; /* every hook async (same report): calls share */

	uint64_t results[POOL_RESULT_COUNT];
	uint64_t hist[POOL_HIST_BUCKETS + 1]; /* last: +Inf */
	double dur_sum;
	uint64_t dur_count;
};

enum worker_state {
	WORKER_STARTING, /* spawned, "init" sent, waiting for "ready" */
	WORKER_READY,	 /* takes calls */
	WORKER_DRAINING, /* takes no new calls; closed when they end */
	WORKER_CLOSED,	 /* socket closed; waiting to be reaped */
};

/* A front thread's side of the pool. Its kick event runs on that thread:
 * it delivers the calls completed for it elsewhere and frees the workers
 * reaped elsewhere. */
struct pool_lane {
	struct pool *pool;
	struct event_base *base;
	struct event *kick;
	struct pool_call *deliver_head, *deliver_tail;
	struct pool_worker *release;
	struct redis_link *redis; /* python.store.redis only */
};

/* One queued outgoing record (flag byte + payload). */
struct wire_out {
	struct wire_out *next;
	size_t len;
	char data[];
};

/* Reassembly of a message that spans several records. */
struct wire_in {
	char *buf;
	size_t len, cap;
};

struct pool_worker {
	struct pool_worker *next;
	struct pool *pool;
	struct pool_lane *lane; /* whose thread runs its events */
	pid_t pid;
	int fd; /* -1 once detached from its lane's loop */
	unsigned generation;
	struct rules *rules; /* the rules it was started with (a ref) */
	enum worker_state state;
	const char *close_reason; /* why we closed it; NULL: it died */
	int kill_signal;	  /* what we sent it, 0 if nothing */

	struct event *read_ev, *write_ev, *timer_ev;
	struct wire_out *out_head, *out_tail;
	struct wire_in in;

	struct pool_call *calls; /* in flight on this worker */
	int ncalls;
	int sync_calls;	  /* calls of APIs that have a sync hook */
	bool timed_out;	  /* a call passed its deadline: kill it */
	bool reserved;	  /* draining its async calls for a sync one */
	bool lost;	  /* it died or broke the protocol */
	bool reaped;	  /* waitpid said it is gone: never signal it */
	int failed_calls; /* calls it took down with it */
	const char *drain_reason;
	int64_t timer_due_ms;
	bool *async_api; /* by rules_api index: all hooks async */
	uint64_t served;
	int64_t started_ms, idle_since_ms, closed_ms;
	long rss_kb;
};

/* Why a worker is started (the "reason" of its spawned line). */
enum spawn_reason {
	SPAWN_START,
	SPAWN_RESPAWN,
	SPAWN_RELOAD,
	SPAWN_GROW,
	SPAWN_REASONS
};

struct pool {
	struct event_base *base;
	struct rules *rules; /* the current generation (a ref) */
	unsigned generation;
	bool gen_ready;	 /* a worker of this generation said "ready" */
	bool gen_status; /* import statuses of this generation are known */
	char *worker_path, *hooks_dir;

	pthread_mutex_t lock;
	struct pool_lane *lanes;
	int nlanes;
	unsigned next_lane;
	struct pool_call *done_head, *done_tail; /* completed, to deliver */
	bool threads_stopped; /* pool_stop: no lane's loop runs any more */

	struct event *sigchld_ev, *tick_ev, *spawn_ev, *grow_ev;
	/* Workers asked for and not started yet, by reason. The main thread
	 * starts them (start_ev, supervise_start_cb) without the lock: a
	 * front thread never waits for a process to be created. They count
	 * as live and as starting. */
	struct event *start_ev;
	int start_wanted[SPAWN_REASONS];
	int64_t grow_ms;  /* when grow_ev fires; 0: not armed */
	int grow_at_once; /* workers growth may start at the same time */
	struct pool_worker *workers;
	struct pool_api *apis;
	struct kv_store *kv;
	struct pool_redis *redis; /* NULL: the store is kv */
	char *rxbuf;		  /* one record */
	size_t msg_max;

	pool_worker_fn watch_fn;
	void *watch_arg;
	pool_limit_fn limit_fn;
	void *limit_arg;

	uint64_t next_id;
	int crash_streak;
	int64_t next_spawn_ms;
	uint64_t spawned, killed, recycled;
	bool stopping;
};

/* Append the calls FIRST..LAST (linked by next, LAST's next NULL) to the
 * list *HEAD..*TAIL. */
static inline void pool_calls_append(struct pool_call **head,
				     struct pool_call **tail,
				     struct pool_call *first,
				     struct pool_call *last)
{
	if (!first)
		return;
	if (*tail)
		(*tail)->next = first;
	else
		*head = first;
	*tail = last;
}

/* lane.c */
/* Take the pool lock on a thread; LANE is the thread's lane (NULL on the
 * main thread). INLINE: calls completed for LANE may run their done() in
 * pool_leave(), on this stack (not in pool_submit, whose caller is in the
 * middle of its own work). */
void pool_enter(struct pool *pool, struct pool_lane *lane, bool inline_done);
void pool_leave(struct pool *pool);
struct pool_lane *pool_here(void);
struct pool_lane *pool_lane_of(struct pool *pool,
			       const struct event_base *base);
struct pool_lane *pool_lane_next(struct pool *pool);
void pool_timer_at(struct event *ev, int64_t *armed, int64_t due);
bool pool_on_lane(const struct pool_worker *w);
void pool_release(struct pool_worker *w);
int pool_lanes_new(struct pool *pool, struct event_base *const *bases, int n);
void pool_lanes_stop(struct pool *pool);
void pool_lanes_free(struct pool *pool);

/* pool.c */
struct pool_api *pool_api_find(struct pool *pool, const char *name);
int pool_worker_api_index(const struct pool_worker *w,
			  const struct pool_api *papi);
void pool_retire_old(struct pool *pool);

/* dispatch.c */
void dispatch_run(struct pool *pool);
void dispatch_complete(struct pool_call *call, enum pool_result result,
		       char *error, char *reply, size_t reply_len);
void dispatch_fail_queue(struct pool_api *papi, enum pool_result result,
			 const char *error);
void dispatch_queue_timer_arm(struct pool_api *papi);
void dispatch_queue_timer_cb(int fd, short what, void *arg);
void dispatch_expire(struct pool_worker *w, int64_t now);
int64_t dispatch_next_deadline(const struct pool_worker *w);
void dispatch_unlink(struct pool_call *call);
void dispatch_on_result(struct pool_worker *w, const msgpack_object *msg,
			const char *raw, size_t raw_len);

/* supervise.c */
void supervise_ensure_min(struct pool *pool);
void supervise_grow(struct pool *pool, int waiting);
void supervise_grow_timer(struct pool *pool, int64_t at_ms);
void supervise_drain(struct pool_worker *w, const char *reason);
void supervise_close(struct pool_worker *w, const char *reason);
void supervise_kill(struct pool_worker *w, const char *reason);
void supervise_lost(struct pool_worker *w, const char *why);
void supervise_settle(struct pool_worker *w);
void supervise_timer_arm(struct pool_worker *w);
void supervise_sigchld_cb(int fd, short what, void *arg);
void supervise_tick_cb(int fd, short what, void *arg);
void supervise_spawn_cb(int fd, short what, void *arg);
void supervise_start_wanted(struct pool *pool);
void supervise_start_cb(int fd, short what, void *arg);
void supervise_reap_all(struct pool *pool);
int supervise_live_count(const struct pool *pool);
void supervise_publish(struct pool_worker *w, bool gone);
void supervise_free(struct pool_worker *w);
int worker_process_start(const char *worker_path, const char *hooks_dir,
			 pid_t *pid, int *fd);
int worker_send(struct pool_worker *w, const struct iovec *iov, int iovcnt);
bool supervise_kv_answer(struct pool_worker *w, uint64_t id, const void *value,
			 size_t len);
bool supervise_lim_answer(struct pool_worker *w, uint64_t id,
			  const struct pool_limit_verdict *v);

/* wire.c */
int wire_encode_init(const struct rules *rules, bool check,
		     bool limits_in_result, msgpack_sbuffer *sb);
size_t wire_encode_call_head(char *buf, size_t cap, uint64_t id);
int wire_encode_kv(msgpack_sbuffer *sb, uint64_t id, const void *value,
		   size_t len);
int wire_encode_lim(msgpack_sbuffer *sb, uint64_t id,
		    const struct pool_limit_verdict *v);
int wire_queue(struct wire_out **head, struct wire_out **tail,
	       const struct iovec *iov, int iovcnt);
int wire_flush(int fd, struct wire_out **head, struct wire_out **tail);
int wire_send_record(int fd, const struct iovec *iov, int iovcnt);
void wire_out_free(struct wire_out **head, struct wire_out **tail);
int wire_recv(int fd, struct wire_in *in, char *rxbuf, size_t max,
	      const char **msg, size_t *len);
void wire_in_reset(struct wire_in *in);
char *wire_strdup(const msgpack_object *o);
int64_t wire_int(const msgpack_object *o, int64_t dflt);
void wire_escape(const char *in, size_t len, char *out, size_t cap);
char *wire_last_line(const char *text);

/* kv.c */
struct kv_store *kv_new(size_t max_bytes);
void kv_free(struct kv_store *kv);
void kv_set(struct kv_store *kv, const char *key, size_t klen,
	    const void *value, size_t vlen, int64_t ttl_s);
/* Points into the store; valid until the next kv_* call. */
const void *kv_get(struct kv_store *kv, const char *key, size_t klen,
		   size_t *vlen);
void kv_sweep(struct kv_store *kv);
size_t kv_count(const struct kv_store *kv);
size_t kv_bytes(const struct kv_store *kv);

/* redis.c: on W's lane's thread, the lock held, but redis_stop (neither). */
int redis_start(struct pool *pool, const struct rules_store *conf);
void redis_stop(struct pool *pool);
void redis_get(struct pool_worker *w, uint64_t id, const char *key,
	       size_t klen);
void redis_set(struct pool_worker *w, const char *key, size_t klen,
	       const void *value, size_t vlen, int64_t ttl_s);
/* Count W's request ID of KEY on API against LIMITS' rate (if any is
 * set) and quota in Redis, and answer W. */
void redis_limit(struct pool_worker *w, uint64_t id, const char *api,
		 const char *key, size_t klen,
		 const struct pool_limit_verdict *limits);
bool redis_counts_rates(const struct pool *pool);
void redis_forget(struct pool_worker *w);
/* For /status and /metrics; the lock held. A link is down from a failure
 * until Redis answers again; one never used counts as up. */
struct redis_counts {
	int links, links_down;
	uint64_t missed, lost;
};
void redis_counts(struct pool *pool, struct redis_counts *out);
const char *redis_addr(const struct pool *pool);

#endif
