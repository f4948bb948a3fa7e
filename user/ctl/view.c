#include "ctl/view.h"

#include "ctl/json.h"

#include <string.h>

#define num(node, key) json_number(json_get((node), (key)), 0)

const char *view_bytes(double n, char *buf, size_t len)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	size_t u = 0;

	while (n >= 1024 && u < sizeof(units) / sizeof(units[0]) - 1) {
		n /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%.0f %s", n, units[u]);
	else
		snprintf(buf, len, "%.1f %s", n, units[u]);
	return buf;
}

const char *view_duration(double seconds, char *buf, size_t len)
{
	long s = (long)seconds;

	if (seconds < 60)
		snprintf(buf, len, "%.1fs", seconds);
	else if (s < 3600)
		snprintf(buf, len, "%ldm %02lds", s / 60, s % 60);
	else if (s < 86400)
		snprintf(buf, len, "%ldh %02ldm %02lds", s / 3600, s / 60 % 60,
			 s % 60);
	else
		snprintf(buf, len, "%ldd %02ldh", s / 86400, s / 3600 % 24);
	return buf;
}

int view_name_width(const struct json *apis, int min)
{
	int width = min;

	for (size_t i = 0; i < json_count(apis); i++) {
		const char *name =
		    json_string(json_get(json_at(apis, i), "name"), "?");
		int n = (int)strlen(name);

		if (n > width)
			width = n;
	}
	return width;
}

void view_worker_states(const struct json *pool, int *busy, int *idle,
			int *starting)
{
	const struct json *workers = json_get(pool, "workers");

	*busy = *idle = *starting = 0;
	for (size_t i = 0; i < json_count(workers); i++) {
		const char *state =
		    json_string(json_get(json_at(workers, i), "state"), "");

		if (strcmp(state, "busy") == 0)
			(*busy)++;
		else if (strcmp(state, "idle") == 0)
			(*idle)++;
		else
			(*starting)++;
	}
}

/* Sum one status class over every API. */
static double sum_class(const struct json *apis, const char *cls)
{
	double total = 0;

	for (size_t i = 0; i < json_count(apis); i++)
		total += num(json_get(json_at(apis, i), "requests"), cls);
	return total;
}

static void status_apis(FILE *out, const struct json *st)
{
	const struct json *apis = json_get(st, "apis");
	size_t plain = 0, hooked = 0;
	double total = 0, inflight = 0;

	for (size_t i = 0; i < json_count(apis); i++) {
		const struct json *api = json_at(apis, i);

		if (strcmp(json_string(json_get(api, "kind"), ""), "hooked"))
			plain++;
		else
			hooked++;
		total += num(api, "total");
		inflight += num(api, "inflight");
	}
	fprintf(out, "apis       %zu (%zu plain, %zu hooked)\n",
		json_count(apis), plain, hooked);
	fprintf(out,
		"requests   %.0f (2xx %.0f, 3xx %.0f, 4xx %.0f, 5xx %.0f), "
		"%.0f in flight\n",
		total, sum_class(apis, "2xx"), sum_class(apis, "3xx"),
		sum_class(apis, "4xx"), sum_class(apis, "5xx"), inflight);
	fprintf(out, "front      %.0f threads, %.0f connections\n",
		num(st, "threads"), num(st, "connections"));
}

static void status_pool(FILE *out, const struct json *pool)
{
	int busy, idle, starting;

	if (json_is_null(pool)) {
		fprintf(out, "pool       none (no API has middleware)\n");
		return;
	}
	view_worker_states(pool, &busy, &idle, &starting);
	fprintf(out,
		"pool       %zu workers (%d busy, %d idle, %d starting) "
		"of %.0f..%.0f, %.0f queued; "
		"%.0f spawned, %.0f killed, %.0f recycled\n",
		json_count(json_get(pool, "workers")), busy, idle, starting,
		num(pool, "min"), num(pool, "max"), num(pool, "queued"),
		num(pool, "spawned"), num(pool, "killed"),
		num(pool, "recycled"));
}

static void status_bpf(FILE *out, const struct json *bpf)
{
	const struct json *spliced = json_get(bpf, "spliced_bytes");
	const struct json *edge = json_get(bpf, "edge");
	double bytes = 0;
	char buf[32];

	if (json_is_null(bpf)) {
		fprintf(out, "bpf        not reported\n");
		return;
	}
	for (size_t i = 0; i < json_count(spliced); i++)
		bytes += json_number(json_at(spliced, i), 0);
	if (json_bool(json_get(bpf, "loaded"), false))
		fprintf(out, "bpf        loaded, splice %s, %s spliced\n",
			json_string(json_get(bpf, "splice"), "-"),
			view_bytes(bytes, buf, sizeof(buf)));
	else
		fprintf(out, "bpf        not loaded (%s), splice %s\n",
			json_string(json_get(bpf, "reason"), "no reason given"),
			json_string(json_get(bpf, "splice"), "-"));
	for (size_t i = 0; i < json_count(edge); i++) {
		const struct json *port = json_at(edge, i);

		fprintf(out,
			"edge       port %.0f: %.0f passed, %.0f dropped\n",
			num(port, "port"), num(port, "passed"),
			num(port, "dropped"));
	}
}

void view_status(FILE *out, const struct json *st)
{
	char up[32];

	fprintf(out, "sluiced    %s, pid %.0f, up %s, %.0f reloads\n",
		json_string(json_get(st, "version"), "?"), num(st, "pid"),
		view_duration(num(st, "uptime_s"), up, sizeof(up)),
		num(st, "reloads"));
	fprintf(out, "rules      %s\n",
		json_string(json_get(st, "rules"), "-"));
	status_apis(out, st);
	status_pool(out, json_get(st, "pool"));
	status_bpf(out, json_get(st, "bpf"));
}

void view_apis(FILE *out, const struct json *st)
{
	const struct json *apis = json_get(st, "apis");
	int w = view_name_width(apis, 4);

	if (json_count(apis) == 0) {
		fprintf(out, "no APIs in the rules\n");
		return;
	}
	fprintf(out, "%-*s  %-6s  %8s  %8s  %6s  %6s  %6s  %6s  %8s\n", w,
		"NAME", "KIND", "REQUESTS", "2XX", "4XX", "5XX", "P50 MS",
		"P99 MS", "INFLIGHT");
	for (size_t i = 0; i < json_count(apis); i++) {
		const struct json *api = json_at(apis, i);
		const struct json *req = json_get(api, "requests");
		const struct json *lat = json_get(api, "latency_ms");

		fprintf(out,
			"%-*s  %-6s  %8.0f  %8.0f  %6.0f  %6.0f  %6.2f  "
			"%6.2f  %8.0f\n",
			w, json_string(json_get(api, "name"), "?"),
			json_string(json_get(api, "kind"), "-"),
			num(api, "total"), num(req, "2xx"), num(req, "4xx"),
			num(req, "5xx"), num(lat, "p50"), num(lat, "p99"),
			num(api, "inflight"));
	}
}

static void workers_bulkheads(FILE *out, const struct json *apis)
{
	int w = 3;

	/* pool.apis is an object keyed by API name. */
	for (size_t i = 0; i < json_count(apis); i++) {
		int n = (int)strlen(json_at(apis, i)->key);

		if (n > w)
			w = n;
	}
	fprintf(out, "\n%-*s  %8s  %6s  %8s  %8s  %6s  %s\n", w, "API",
		"INFLIGHT", "QUEUED", "REJECTED", "TIMEOUTS", "ERRORS",
		"STATUS");
	for (size_t i = 0; i < json_count(apis); i++) {
		const struct json *api = json_at(apis, i);

		fprintf(out, "%-*s  %8.0f  %6.0f  %8.0f  %8.0f  %6.0f  %s\n", w,
			api->key, num(api, "inflight"), num(api, "queued"),
			num(api, "rejected"), num(api, "timeouts"),
			num(api, "errors"),
			json_string(json_get(api, "status"), "-"));
	}
}

void view_workers(FILE *out, const struct json *st)
{
	const struct json *pool = json_get(st, "pool");
	const struct json *workers = json_get(pool, "workers");
	char rss[32];

	if (json_is_null(pool)) {
		fprintf(out, "no worker pool: no API has middleware\n");
		return;
	}
	fprintf(out, "%-8s  %-8s  %10s  %8s  %10s\n", "PID", "STATE", "CALLS",
		"INFLIGHT", "RSS");
	for (size_t i = 0; i < json_count(workers); i++) {
		const struct json *wk = json_at(workers, i);

		fprintf(out, "%-8.0f  %-8s  %10.0f  %8.0f  %10s\n",
			num(wk, "pid"), json_string(json_get(wk, "state"), "-"),
			num(wk, "calls"), num(wk, "inflight"),
			view_bytes(num(wk, "rss_kb") * 1024, rss, sizeof(rss)));
	}
	if (json_count(json_get(pool, "apis")))
		workers_bulkheads(out, json_get(pool, "apis"));
}
