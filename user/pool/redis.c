/* The Redis backend of store_data/get_data, and of the quotas auth_check
 * hooks set, when python.store.redis is set.
 *
 * Each lane keeps its own connection, run by hiredis on the lane's event
 * base: a worker's get is sent and answered on the thread that reads that
 * worker, as with the embedded store, and a connection is never shared
 * between threads. Its callbacks run on that thread without the pool lock
 * and take it to answer a worker. hiredis runs the callbacks of the
 * commands still pending inside redisAsyncFree(), so it is never called
 * with the lock held.
 *
 * Every command sent is an op on its link's list, oldest first (Redis
 * answers in order), and every question a worker waits on (a get, a quota
 * count) is answered exactly once: by its reply, by the end of its
 * connection, or by the link's timer when no reply came within timeout_ms
 * (a miss; a pass). A command that late means a server stalled or gone,
 * and the rest would queue behind it: the connection is dropped then. With
 * no connection, one is tried at most once a second, on use; meanwhile gets
 * are misses, quotas pass and sets are lost, counted, and reported when the
 * server answers again.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "common/log.h"
#include "pool/pool_int.h"

#define REDIS_RETRY_MS	    1000
#define REDIS_WARN_EVERY_MS 10000

/* Count one request against a key's limits, atomically, for every
 * gateway: KEYS[1] holds the rate's theoretical arrival time (GCRA, the
 * token bucket of front/limit.c: ARGV[1] ms per token, ARGV[2] tokens at
 * most; no rate when ARGV[1] is 0), KEYS[2] the quota's count (ARGV[3] a
 * period, ARGV[4] seconds; none when ARGV[3] is 0), which starts with the
 * period's first request and expires with it. Returns {verdict (0 pass,
 * 1 rate, 2 quota), wait ms, quota left, ms until the quota renews}, -1
 * for none. TIME makes the script non-deterministic: its effects are what
 * replicates. */
#define LIMIT_SCRIPT                                                           \
	"redis.replicate_commands() "                                          \
	"local t = redis.call('TIME') "                                        \
	"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / "     \
	"1000) "                                                               \
	"local T = tonumber(ARGV[1]) "                                         \
	"if T > 0 then "                                                       \
	"local tau = T * (tonumber(ARGV[2]) - 1) "                             \
	"local tat = tonumber(redis.call('GET', KEYS[1])) or now "             \
	"if tat < now then tat = now end "                                     \
	"if tat - now > tau then "                                             \
	"return {1, math.ceil(tat - tau - now), -1, -1} end "                  \
	"redis.call('SET', KEYS[1], tostring(tat + T), 'PX', "                 \
	"math.ceil(tat + T - now)) end "                                       \
	"local max = tonumber(ARGV[3]) "                                       \
	"if max <= 0 then return {0, -1, -1, -1} end "                         \
	"local n = redis.call('INCR', KEYS[2]) "                               \
	"local ttl = redis.call('PTTL', KEYS[2]) "                             \
	"if ttl < 0 and tonumber(ARGV[4]) > 0 then "                           \
	"redis.call('EXPIRE', KEYS[2], ARGV[4]) "                              \
	"ttl = tonumber(ARGV[4]) * 1000 end "                                  \
	"if n > max then return {2, ttl, 0, ttl} end "                         \
	"return {0, -1, max - n, ttl}"

enum op_kind {
	OP_GET,	  /* get_data: answered with "kv" */
	OP_LIMIT, /* a rate and quota count: answered with "lim" */
	OP_SET,	  /* store_data: nobody waits */
	OP_SETUP, /* AUTH, SELECT: their failure drops the connection */
};

/* One command waiting for its reply. */
struct redis_op {
	struct redis_op *next;
	struct redis_link *link;
	enum op_kind kind;
	const char *what;      /* the command, for logs */
	struct pool_worker *w; /* who waits (GET, LIMIT); NULL once gone */
	uint64_t id;	       /* of the worker's question */
	int64_t due_ms;
	bool answered;
};

/* A lane's connection. Its fields are touched only on the lane's thread
 * (or once no lane's loop runs); the counters also under the pool lock,
 * which /metrics reads them with. */
struct redis_link {
	struct pool_lane *lane;
	int index;
	redisAsyncContext *ac; /* NULL: none */
	bool dropping;	       /* drop ac on the next timer run */
	char why[160];	       /* why it is dropped */
	struct event *timer;
	struct redis_op *head, *tail;
	int64_t retry_ms;
	/* Since when it is down; 0: up. Written on the lane's thread with
	 * atomic stores, as /status reads it from the main thread. */
	int64_t down_ms;
	bool answered;	       /* Redis ever answered on this link */
	uint64_t missed, lost; /* since down_ms */
	uint64_t total_missed, total_lost;
	int64_t warned_ms;
};

struct pool_redis {
	char host[INET6_ADDRSTRLEN];
	int port;
	char *addr; /* as written, for logs */
	int db;
	char *password;
	char *prefix;
	int timeout_ms;
	bool shared_rates;
};

static void redis_timer_cb(int fd, short what, void *arg);

/* hiredis takes a host and a port: CONF's address as numbers (no lookup
 * that could block). The port sits at the same place in sockaddr_in and
 * sockaddr_in6. */
static int store_host_port(const struct rules_store *conf,
			   char host[INET6_ADDRSTRLEN], int *port)
{
	*port = ntohs(((const struct sockaddr_in *)&conf->redis.sa)->sin_port);
	if (getnameinfo((const struct sockaddr *)&conf->redis.sa,
			conf->redis.sa_len, host, INET6_ADDRSTRLEN, NULL, 0,
			NI_NUMERICHOST))
		return -EINVAL;
	return 0;
}

int redis_start(struct pool *pool, const struct rules_store *conf)
{
	struct pool_redis *r = calloc(1, sizeof(*r));

	if (!r)
		return -ENOMEM;
	pool->redis = r;
	if (store_host_port(conf, r->host, &r->port))
		return -EINVAL;
	r->addr = strdup(conf->redis.text);
	r->prefix = strdup(conf->prefix);
	r->password = conf->password ? strdup(conf->password) : NULL;
	r->db = conf->db;
	r->timeout_ms = conf->timeout_ms;
	r->shared_rates = conf->shared_rates;
	if (!r->addr || !r->prefix || (conf->password && !r->password))
		return -ENOMEM;
	for (int i = 0; i < pool->nlanes; i++) {
		struct pool_lane *lane = &pool->lanes[i];
		struct redis_link *link = calloc(1, sizeof(*link));

		if (!link)
			return -ENOMEM;
		lane->redis = link;
		link->lane = lane;
		link->index = i;
		link->timer = evtimer_new(lane->base, redis_timer_cb, link);
		if (!link->timer)
			return -ENOMEM;
	}
	log_info(
	    "store: redis=%s db=%d prefix=\"%s\" timeout_ms=%d quotas=redis "
	    "rates=%s",
	    r->addr, r->db, r->prefix, r->timeout_ms,
	    r->shared_rates ? "redis" : "local");
	return 0;
}

/* ---- ops ---------------------------------------------------------------- */

static void link_arm(struct redis_link *link)
{
	struct timeval tv = {0, 0};
	int64_t wait;

	if ((!link->head && !link->dropping) ||
	    evtimer_pending(link->timer, NULL))
		return;
	wait = link->dropping ? 0 : link->head->due_ms - now_ms();
	if (wait > 0) {
		tv.tv_sec = wait / 1000;
		tv.tv_usec = (wait % 1000) * 1000;
	}
	evtimer_add(link->timer, &tv);
}

static struct redis_op *op_new(struct redis_link *link, enum op_kind kind,
			       const char *what, struct pool_worker *w,
			       uint64_t id)
{
	struct pool_redis *r = link->lane->pool->redis;
	struct redis_op *op = calloc(1, sizeof(*op));

	if (!op)
		return NULL;
	op->link = link;
	op->kind = kind;
	op->what = what;
	op->w = w;
	op->id = id;
	op->due_ms = now_ms() + r->timeout_ms;
	if (link->tail)
		link->tail->next = op;
	else
		link->head = op;
	link->tail = op;
	return op;
}

static void op_unlink(struct redis_link *link, struct redis_op *op)
{
	struct redis_op **p = &link->head, *prev = NULL;

	while (*p && *p != op) {
		prev = *p;
		p = &(*p)->next;
	}
	if (!*p)
		return;
	*p = op->next;
	if (link->tail == op)
		link->tail = prev;
}

/* What a limit count's REPLY means; without one (Redis failed), the
 * request passes uncounted: a Redis outage must not refuse every key. */
static void limit_verdict(const redisReply *reply, struct pool_limit_verdict *v)
{
	static const char *const verdicts[] = {"pass", "rate", "quota"};
	long long n[4];

	*v = (struct pool_limit_verdict){"pass", -1, -1, -1, 0, 0, 0, 0};
	if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 4)
		return;
	for (int i = 0; i < 4; i++) {
		if (reply->element[i]->type != REDIS_REPLY_INTEGER)
			return;
		n[i] = reply->element[i]->integer;
	}
	if (n[0] < 0 || n[0] > 2)
		return;
	v->verdict = verdicts[n[0]];
	v->wait_ms = n[1] >= 0 ? n[1] : -1;
	v->quota_remaining = n[2] >= 0 ? n[2] : -1;
	v->quota_renews_ms = n[3] >= 0 ? n[3] : -1;
}

/* Answer OP's worker from REPLY (NULL: Redis did not answer), once. Lock
 * held. */
static void op_answer(struct redis_op *op, const redisReply *reply)
{
	struct pool_limit_verdict v;
	bool hit, lost;

	if (op->answered)
		return;
	op->answered = true;
	if (!op->w)
		return;
	if (op->kind == OP_LIMIT) {
		limit_verdict(reply, &v);
		lost = supervise_lim_answer(op->w, op->id, &v);
	} else {
		hit = reply && reply->type == REDIS_REPLY_STRING;
		lost =
		    supervise_kv_answer(op->w, op->id, hit ? reply->str : NULL,
					hit ? reply->len : 0);
	}
	if (lost)
		dispatch_run(op->link->lane->pool);
}

/* OP got no usable answer: count what that cost. */
static void op_failed(struct redis_link *link, const struct redis_op *op)
{
	if (op->kind == OP_SET) {
		link->lost++;
		link->total_lost++;
	} else if (op->kind != OP_SETUP) {
		link->missed++;
		link->total_missed++;
	}
}

/* ---- the connection ----------------------------------------------------- */

static void link_warn(struct redis_link *link, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void link_warn(struct redis_link *link, const char *fmt, ...)
{
	int64_t now = now_ms();
	char msg[256];
	va_list ap;

	if (link->warned_ms && now - link->warned_ms < REDIS_WARN_EVERY_MS)
		return;
	link->warned_ms = now;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_warn("store: redis=%s lane=%d %s", link->lane->pool->redis->addr,
		 link->index, msg);
}

/* The connection is gone or going: no new one before a second from now. */
static void link_down(struct redis_link *link, const char *why)
{
	struct pool_redis *r = link->lane->pool->redis;

	link->ac = NULL;
	link->dropping = false;
	link->retry_ms = now_ms() + REDIS_RETRY_MS;
	if (link->down_ms)
		return;
	__atomic_store_n(&link->down_ms, now_ms(), __ATOMIC_RELAXED);
	link->missed = link->lost = 0;
	log_warn("store: redis=%s lane=%d down (%s): get_data misses and "
		 "store_data is lost until it answers",
		 r->addr, link->index, why);
}

/* Redis answered a command: up (after AUTH and SELECT, which come first). */
static void link_up(struct redis_link *link)
{
	struct pool_redis *r = link->lane->pool->redis;

	if (!link->answered && !link->down_ms)
		log_info("store: redis=%s lane=%d answers", r->addr,
			 link->index);
	link->answered = true;
	if (!link->down_ms)
		return;
	log_info("store: redis=%s lane=%d answers again after %.1f s; "
		 "gets missed=%llu sets lost=%llu meanwhile",
		 r->addr, link->index, (now_ms() - link->down_ms) / 1000.0,
		 (unsigned long long)link->missed,
		 (unsigned long long)link->lost);
	__atomic_store_n(&link->down_ms, 0, __ATOMIC_RELAXED);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
	struct redis_link *link = ac->data;

	if (link->ac == ac && status != REDIS_OK)
		link_down(link, ac->errstr);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
	struct redis_link *link = ac->data;

	if (link->ac == ac)
		link_down(link, status == REDIS_OK ? "connection closed"
						   : ac->errstr);
}

/* Stop using the connection after a reply that makes it unfit. Called from
 * a hiredis callback, which must not free it: the timer does. */
static void link_drop(struct redis_link *link, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void link_drop(struct redis_link *link, const char *fmt, ...)
{
	va_list ap;

	if (link->dropping)
		return;
	link->dropping = true;
	va_start(ap, fmt);
	vsnprintf(link->why, sizeof(link->why), fmt, ap);
	va_end(ap);
	evtimer_del(link->timer);
	link_arm(link);
}

static void on_reply(redisAsyncContext *ac, void *data, void *privdata);

/* Queue a command of OP on the link's connection; on failure OP is gone.
 * Lock held. */
static int op_send(struct redis_op *op, const char *fmt, ...)
{
	struct redis_link *link = op->link;
	va_list ap;
	int err;

	va_start(ap, fmt);
	err = redisvAsyncCommand(link->ac, on_reply, op, fmt, ap);
	va_end(ap);
	if (err == REDIS_OK) {
		link_arm(link);
		return 0;
	}
	op_unlink(link, op);
	free(op);
	return -EIO;
}

/* A connection to use now, or false. Lock held. */
static bool link_ready(struct redis_link *link)
{
	struct pool_redis *r = link->lane->pool->redis;
	redisAsyncContext *ac;
	struct redis_op *op;

	if (link->ac)
		return !link->dropping;
	if (now_ms() < link->retry_ms)
		return false;
	ac = redisAsyncConnect(r->host, r->port);
	if (!ac)
		return false;
	if (ac->err) {
		link_down(link, ac->errstr);
		redisAsyncFree(ac); /* no callback of ours yet */
		return false;
	}
	ac->data = link;
	if (redisLibeventAttach(ac, link->lane->base) != REDIS_OK) {
		redisAsyncFree(ac);
		return false;
	}
	redisAsyncSetConnectCallback(ac, on_connect);
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	link->ac = ac;
	/* Sent ahead of everything; their failure drops the connection
	 * before any reply that follows them is used. */
	if (r->password &&
	    ((op = op_new(link, OP_SETUP, "AUTH", NULL, 0)) == NULL ||
	     op_send(op, "AUTH %s", r->password)))
		link_drop(link, "AUTH not sent");
	if (r->db &&
	    ((op = op_new(link, OP_SETUP, "SELECT", NULL, 0)) == NULL ||
	     op_send(op, "SELECT %d", r->db)))
		link_drop(link, "SELECT not sent");
	return !link->dropping;
}

static void on_reply(redisAsyncContext *ac, void *data, void *privdata)
{
	struct redis_op *op = privdata;
	struct redis_link *link = op->link;
	struct pool *pool = link->lane->pool;
	redisReply *reply = data;

	pool_enter(pool, link->lane, true);
	op_unlink(link, op);
	if (link->dropping && ac == link->ac) {
		reply = NULL; /* behind a failed AUTH or SELECT */
	} else if (reply && reply->type == REDIS_REPLY_ERROR) {
		if (op->kind == OP_SETUP)
			link_drop(link, "%s refused: %s", op->what, reply->str);
		else
			link_warn(link, "refused %s: %s", op->what, reply->str);
		reply = NULL;
	} else if (reply) {
		link_up(link);
	}
	if (!reply && !op->answered)
		op_failed(link, op);
	op_answer(op, reply);
	pool_leave(pool);
	free(op);
}

/* Ops past their due time are answered as misses and the connection goes;
 * so does one marked by link_drop(). */
static void redis_timer_cb(int fd, short what, void *arg)
{
	struct redis_link *link = arg;
	struct pool *pool = link->lane->pool;
	int64_t now = now_ms();
	redisAsyncContext *ac;
	int late = 0;

	(void)fd;
	(void)what;
	pool_enter(pool, link->lane, true);
	for (struct redis_op *op = link->head; op && op->due_ms <= now;
	     op = op->next) {
		if (op->answered)
			continue;
		late++;
		op_failed(link, op);
		op_answer(op, NULL);
	}
	if (late && !link->dropping)
		snprintf(link->why, sizeof(link->why),
			 "%d command(s) with no answer within %d ms", late,
			 pool->redis->timeout_ms);
	pool_leave(pool);

	if (!late && !link->dropping) {
		link_arm(link);
		return;
	}
	ac = link->ac;
	link_down(link, link->why);
	/* Runs on_reply for each op left (a miss, a lost set). */
	if (ac)
		redisAsyncFree(ac);
}

/* ---- what the workers ask ----------------------------------------------- */

/* W's question ID could not go to Redis: answer it now (a miss, a pass). */
static void ask_unsent(struct redis_link *link, enum op_kind kind,
		       struct pool_worker *w, uint64_t id)
{
	struct redis_op op = {.link = link, .kind = kind, .w = w, .id = id};

	op_failed(link, &op);
	op_answer(&op, NULL);
}

void redis_get(struct pool_worker *w, uint64_t id, const char *key, size_t klen)
{
	struct redis_link *link = w->lane->redis;
	struct redis_op *op;

	if (link_ready(link) && (op = op_new(link, OP_GET, "GET", w, id)) &&
	    !op_send(op, "GET %s%b", w->pool->redis->prefix, key, klen))
		return;
	ask_unsent(link, OP_GET, w, id);
}

bool redis_counts_rates(const struct pool *pool)
{
	return pool->redis && pool->redis->shared_rates;
}

void redis_limit(struct pool_worker *w, uint64_t id, const char *api,
		 const char *key, size_t klen,
		 const struct pool_limit_verdict *limits)
{
	struct redis_link *link = w->lane->redis;
	bool rated = limits->rate > 0 && limits->per > 0;
	double ms_per_token = rated ? limits->per * 1000.0 / limits->rate : 0;
	double tokens = limits->rate < 1 ? 1 : limits->rate;
	struct redis_op *op;

	if (link_ready(link) &&
	    (op = op_new(link, OP_LIMIT, "limit count", w, id)) &&
	    !op_send(op,
		     "EVAL %s 2 sluice-rate:%s:%b sluice-quota:%s:%b %.17g "
		     "%.17g %lld %lld",
		     LIMIT_SCRIPT, api, key, klen, api, key, klen, ms_per_token,
		     tokens,
		     (long long)(limits->quota_max > 0 ? limits->quota_max : 0),
		     (long long)(limits->quota_period_s > 0
				     ? limits->quota_period_s
				     : 0)))
		return;
	ask_unsent(link, OP_LIMIT, w, id);
}

void redis_set(struct pool_worker *w, const char *key, size_t klen,
	       const void *value, size_t vlen, int64_t ttl_s)
{
	struct redis_link *link = w->lane->redis;
	const char *prefix = w->pool->redis->prefix;
	struct redis_op *op;
	int err = -EIO;

	if (link_ready(link) && (op = op_new(link, OP_SET, "SET", NULL, 0))) {
		if (ttl_s > 0)
			err = op_send(op, "SET %s%b %b EX %lld", prefix, key,
				      klen, value, vlen, (long long)ttl_s);
		else
			err = op_send(op, "SET %s%b %b", prefix, key, klen,
				      value, vlen);
	}
	if (err) {
		link->lost++;
		link->total_lost++;
	}
}

/* W is being freed: its pending gets go unanswered. Lock held. */
void redis_forget(struct pool_worker *w)
{
	struct redis_link *link = w->lane ? w->lane->redis : NULL;

	for (struct redis_op *op = link ? link->head : NULL; op; op = op->next)
		if (op->w == w)
			op->w = NULL;
}

void redis_counts(struct pool *pool, struct redis_counts *out)
{
	*out = (struct redis_counts){0};
	for (int i = 0; pool->redis && i < pool->nlanes; i++) {
		struct redis_link *link = pool->lanes[i].redis;

		if (!link)
			continue;
		out->links++;
		out->links_down +=
		    __atomic_load_n(&link->down_ms, __ATOMIC_RELAXED) != 0;
		out->missed += link->total_missed;
		out->lost += link->total_lost;
	}
}

const char *redis_addr(const struct pool *pool)
{
	return pool->redis->addr;
}

/* pool_free: no lane's loop runs, the lock is not held. */
void redis_stop(struct pool *pool)
{
	struct pool_redis *r = pool->redis;

	for (int i = 0; i < pool->nlanes && pool->lanes; i++) {
		struct redis_link *link = pool->lanes[i].redis;
		redisAsyncContext *ac;

		if (!link)
			continue;
		ac = link->ac;
		link->ac = NULL;
		if (ac)
			redisAsyncFree(ac);
		if (link->timer)
			event_free(link->timer);
		free(link);
		pool->lanes[i].redis = NULL;
	}
	if (r) {
		free(r->addr);
		free(r->password);
		free(r->prefix);
		free(r);
		pool->redis = NULL;
	}
}

/* ---- sluiced -t ------------------------------------------------------- */

/* One command of the probe: false, with why in WHY, when it fails. */
static bool probe_step(redisContext *c, const char *step, char *why, size_t len,
		       const char *fmt, ...)
{
	redisReply *reply;
	va_list ap;
	bool ok;

	va_start(ap, fmt);
	reply = redisvCommand(c, fmt, ap);
	va_end(ap);
	ok = reply && reply->type != REDIS_REPLY_ERROR;
	if (!ok) {
		size_t n = snprintf(why, len, "%s %s: %s", step,
				    reply ? "refused" : "failed",
				    reply ? reply->str : c->errstr);

		if (n > 0 && n < len && why[n - 1] == '.')
			why[n - 1] = '\0'; /* the caller's sentence goes on */
	}
	freeReplyObject(reply);
	return ok;
}

/* Whether CONF's Redis answers now, as a connection starts (AUTH, SELECT,
 * then PING), waiting at most timeout_ms for each step; if not, why in
 * WHY. */
int pool_check_store(const struct rules_store *conf, char *why, size_t len)
{
	struct timeval tv = {conf->timeout_ms / 1000,
			     (conf->timeout_ms % 1000) * 1000};
	char host[INET6_ADDRSTRLEN];
	redisContext *c;
	int port;
	bool ok;

	if (store_host_port(conf, host, &port))
		return -EINVAL;
	c = redisConnectWithTimeout(host, port, tv);
	if (!c || c->err) {
		snprintf(why, len, "cannot connect: %s",
			 c ? c->errstr : "out of memory");
		redisFree(c);
		return -ECONNREFUSED;
	}
	redisSetTimeout(c, tv);
	ok = (!conf->password ||
	      probe_step(c, "AUTH", why, len, "AUTH %s", conf->password)) &&
	     (!conf->db ||
	      probe_step(c, "SELECT", why, len, "SELECT %d", conf->db)) &&
	     probe_step(c, "PING", why, len, "PING");
	redisFree(c);
	return ok ? 0 : -EIO;
}
