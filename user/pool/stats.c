/* The pool's part of /status (front/admin.h's "pool" object) and of
 * /metrics (Prometheus text format). */
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>

#include "pool/pool_int.h"

static const char *worker_state_name(const struct pool_worker *w)
{
	if (w->state == WORKER_STARTING)
		return "starting";
	if (w->state == WORKER_DRAINING)
		return "draining";
	return w->ncalls ? "busy" : "idle";
}

/* A JSON string body: quotes, backslashes and control characters escaped. */
static void json_str(struct evbuffer *out, const char *s)
{
	evbuffer_add(out, "\"", 1);
	for (; *s; s++) {
		unsigned char c = *s;

		if (c == '"' || c == '\\')
			evbuffer_add_printf(out, "\\%c", c);
		else if (c < 0x20)
			evbuffer_add_printf(out, "\\u%04x", c);
		else
			evbuffer_add(out, s, 1);
	}
	evbuffer_add(out, "\"", 1);
}

static void status_workers(struct pool *pool, struct evbuffer *out)
{
	const char *sep = "";

	evbuffer_add_printf(out, "\"workers\":[");
	for (struct pool_worker *w = pool->workers; w; w = w->next) {
		const char *state = worker_state_name(w);

		if (w->state == WORKER_CLOSED)
			continue;
		/* /status knows three states; a draining worker still
		 * holds calls, or is about to go. */
		if (strcmp(state, "draining") == 0)
			state = "busy";
		evbuffer_add_printf(out,
				    "%s{\"pid\":%d,\"state\":\"%s\","
				    "\"calls\":%llu,\"inflight\":%d,"
				    "\"rss_kb\":%ld}",
				    sep, (int)w->pid, state,
				    (unsigned long long)w->served, w->ncalls,
				    w->rss_kb > 0 ? w->rss_kb : 0);
		sep = ",";
	}
	evbuffer_add_printf(out, "]");
}

static void status_apis(struct pool *pool, struct evbuffer *out)
{
	const char *sep = "";

	evbuffer_add_printf(out, "\"apis\":{");
	for (struct pool_api *p = pool->apis; p; p = p->next) {
		if (!p->api)
			continue;
		evbuffer_add_printf(
		    out,
		    "%s\"%s\":{\"inflight\":%d,\"queued\":%d,"
		    "\"rejected\":%llu,\"timeouts\":%llu,\"errors\":%llu,"
		    "\"status\":",
		    sep, p->name, p->inflight, p->queued,
		    (unsigned long long)(p->results[POOL_QUEUE_FULL] +
					 p->results[POOL_QUEUE_TIMEOUT]),
		    (unsigned long long)p->results[POOL_TIMEOUT],
		    (unsigned long long)(p->results[POOL_HOOK_ERROR] +
					 p->results[POOL_WORKER_DIED]));
		json_str(out, p->error	      ? p->error
			      : p->status_gen ? "ok"
					      : "starting");
		evbuffer_add_printf(out, "}");
		sep = ",";
	}
	evbuffer_add_printf(out, "}");
}

/* Where store_data goes, and how that is going. */
static void status_store(struct pool *pool, struct evbuffer *out)
{
	struct redis_counts rc;

	if (!pool->redis) {
		evbuffer_add_printf(
		    out,
		    "\"store\":{\"kind\":\"memory\",\"entries\":%zu,"
		    "\"bytes\":%zu}",
		    kv_count(pool->kv), kv_bytes(pool->kv));
		return;
	}
	redis_counts(pool, &rc);
	/* The address is the rules' host:port, no quote in it. */
	evbuffer_add_printf(out,
			    "\"store\":{\"kind\":\"redis\",\"addr\":\"%s\","
			    "\"links\":%d,\"links_down\":%d,\"missed\":%llu,"
			    "\"lost\":%llu}",
			    redis_addr(pool), rc.links, rc.links_down,
			    (unsigned long long)rc.missed,
			    (unsigned long long)rc.lost);
}

void pool_status_json(struct pool *pool, struct evbuffer *out)
{
	int queued = 0;

	pool_enter(pool, NULL, false);
	for (struct pool_api *p = pool->apis; p; p = p->next)
		queued += p->queued;
	evbuffer_add_printf(out, "{\"min\":%d,\"max\":%d,\"queued\":%d,",
			    pool->rules->python.workers_min,
			    pool->rules->python.workers_max, queued);
	status_workers(pool, out);
	evbuffer_add_printf(out, ",");
	status_apis(pool, out);
	evbuffer_add_printf(out,
			    ",\"spawned\":%llu,\"killed\":%llu,"
			    "\"recycled\":%llu,",
			    (unsigned long long)pool->spawned,
			    (unsigned long long)pool->killed,
			    (unsigned long long)pool->recycled);
	status_store(pool, out);
	evbuffer_add_printf(out, "}");
	pool_leave(pool);
}

static void metrics_workers(struct pool *pool, struct evbuffer *out)
{
	static const char *const states[] = {"starting", "idle", "busy",
					     "draining"};

	evbuffer_add_printf(out,
			    "# HELP sluice_pool_workers Worker processes by "
			    "state.\n# TYPE sluice_pool_workers gauge\n");
	for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++) {
		int n = 0;

		for (struct pool_worker *w = pool->workers; w; w = w->next)
			n += w->state != WORKER_CLOSED &&
			     strcmp(worker_state_name(w), states[i]) == 0;
		evbuffer_add_printf(out,
				    "sluice_pool_workers{state=\"%s\"} %d\n",
				    states[i], n);
	}
}

static void metrics_hist(struct pool_api *p, struct evbuffer *out)
{
	uint64_t cum = 0;

	for (int b = 0; b < POOL_HIST_BUCKETS; b++) {
		cum += p->hist[b];
		evbuffer_add_printf(out,
				    "sluice_hook_duration_seconds_bucket{api="
				    "\"%s\",le=\"%g\"} %llu\n",
				    p->name, pool_hist_bounds[b],
				    (unsigned long long)cum);
	}
	cum += p->hist[POOL_HIST_BUCKETS];
	evbuffer_add_printf(
	    out,
	    "sluice_hook_duration_seconds_bucket{api=\"%s\","
	    "le=\"+Inf\"} %llu\n"
	    "sluice_hook_duration_seconds_sum{api=\"%s\"} %.6f\n"
	    "sluice_hook_duration_seconds_count{api=\"%s\"} "
	    "%llu\n",
	    p->name, (unsigned long long)cum, p->name, p->dur_sum, p->name,
	    (unsigned long long)p->dur_count);
}

static void metrics_apis(struct pool *pool, struct evbuffer *out)
{
	struct pool_api *p;

	evbuffer_add_printf(out, "# HELP sluice_pool_queue_depth Calls waiting "
				 "in an API's queue.\n"
				 "# TYPE sluice_pool_queue_depth gauge\n");
	for (p = pool->apis; p; p = p->next)
		evbuffer_add_printf(out,
				    "sluice_pool_queue_depth{api=\"%s\"} %d\n",
				    p->name, p->queued);

	evbuffer_add_printf(out, "# HELP sluice_hook_calls_total Hook calls by "
				 "API and outcome.\n"
				 "# TYPE sluice_hook_calls_total counter\n");
	for (p = pool->apis; p; p = p->next)
		for (int r = 0; r < POOL_RESULT_COUNT; r++)
			evbuffer_add_printf(
			    out,
			    "sluice_hook_calls_total{api=\"%s\","
			    "result=\"%s\"} %llu\n",
			    p->name, pool_result_names[r],
			    (unsigned long long)p->results[r]);

	evbuffer_add_printf(out, "# HELP sluice_hook_duration_seconds Time a "
				 "call spent on a worker.\n"
				 "# TYPE sluice_hook_duration_seconds "
				 "histogram\n");
	for (p = pool->apis; p; p = p->next)
		metrics_hist(p, out);
}

static void metrics_counter(struct evbuffer *out, const char *name,
			    const char *help, unsigned long long value)
{
	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n",
			    name, help, name, name, value);
}

void pool_metrics(struct pool *pool, struct evbuffer *out)
{
	pool_enter(pool, NULL, false);
	metrics_workers(pool, out);
	metrics_apis(pool, out);
	metrics_counter(out, "sluice_pool_spawned_total",
			"Worker processes started.", pool->spawned);
	metrics_counter(out, "sluice_pool_killed_total",
			"Workers killed (deadline passed).", pool->killed);
	metrics_counter(out, "sluice_pool_recycled_total",
			"Workers recycled (max_requests, max_rss_mb).",
			pool->recycled);
	evbuffer_add_printf(
	    out,
	    "# HELP sluice_kv_entries Entries in the "
	    "store_data store.\n# TYPE sluice_kv_entries gauge\n"
	    "sluice_kv_entries %zu\n"
	    "# HELP sluice_kv_bytes Bytes held by the "
	    "store_data store.\n# TYPE sluice_kv_bytes gauge\n"
	    "sluice_kv_bytes %zu\n",
	    kv_count(pool->kv), kv_bytes(pool->kv));
	if (pool->redis) {
		struct redis_counts rc;

		redis_counts(pool, &rc);
		metrics_counter(out, "sluice_store_redis_missed_total",
				"get_data answered as a miss, or a quota "
				"passed uncounted, because Redis was "
				"unreachable, refused or late.",
				rc.missed);
		metrics_counter(out, "sluice_store_redis_lost_total",
				"store_data calls lost because Redis was "
				"unreachable, refused or late.",
				rc.lost);
	}
	pool_leave(pool);
}
