/* The admin endpoint: /status, /metrics, /stats and /reload on the main
 * thread (libevent's evhttp). The JSON schema is in admin.h. */
#include "front/admin.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/http.h>

#include "bpf/bpf.h"
#include "common/json.h"
#include "common/log.h"
#include "front/sluiced.h"
#include "version.h"
#include "pool/pool.h"
#include "stats_html.h"

static const char *const class_names[6] = {"",	  "1xx", "2xx",
					   "3xx", "4xx", "5xx"};

/* Prometheus buckets in seconds, drawn from the fine latency buckets. */
static const double prom_buckets[] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1,    0.25,    0.5,    1,	    2.5,    5,	   10,	 30};

static double uptime_s(const struct sluiced *d)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - d->started.tv_sec) +
	       (now.tv_nsec - d->started.tv_nsec) / 1e9;
}

static void sum_api(struct sluiced *d, const char *name, struct stats_api *sum)
{
	struct stats_thread *tables[256];
	int n = d->thread_count < 256 ? d->thread_count : 256;
	int slot = stats_slot(name);

	for (int i = 0; i < n; i++)
		tables[i] = &d->threads[i].stats;
	if (slot < 0) {
		memset(sum, 0, sizeof(*sum));
		return;
	}
	stats_sum(tables, n, slot, sum);
}

static void status_api(struct evbuffer *out, const struct rules_api *api,
		       const struct stats_api *s)
{
	uint64_t total = 0;

	evbuffer_add_printf(out,
			    "{\"name\":\"%s\",\"kind\":\"%s\",\"requests\":{",
			    api->name, api->middleware ? "hooked" : "plain");
	for (int c = 1; c <= 5; c++) {
		evbuffer_add_printf(out, "%s\"%s\":%llu", c > 1 ? "," : "",
				    class_names[c],
				    (unsigned long long)s->classes[c]);
		total += s->classes[c];
	}
	evbuffer_add_printf(out,
			    "},\"total\":%llu,\"inflight\":%lld,"
			    "\"latency_ms\":{\"p50\":%.3f,\"p99\":%.3f},"
			    "\"bytes_in\":%llu,\"bytes_out\":%llu,"
			    "\"spliced\":%llu}",
			    (unsigned long long)total, (long long)s->inflight,
			    stats_quantile_us(s, 0.50) / 1000.0,
			    stats_quantile_us(s, 0.99) / 1000.0,
			    (unsigned long long)s->bytes_in,
			    (unsigned long long)s->bytes_out,
			    (unsigned long long)s->spliced);
}

static void send_reply(struct evhttp_request *req, int code, const char *type,
		       struct evbuffer *body)
{
	evhttp_add_header(evhttp_request_get_output_headers(req),
			  "Content-Type", type);
	evhttp_add_header(evhttp_request_get_output_headers(req),
			  "Cache-Control", "no-store");
	evhttp_send_reply(req, code, code == 200 ? "OK" : "Error", body);
}

static void handle_status(struct evhttp_request *req, void *arg)
{
	struct sluiced *d = arg;
	struct evbuffer *out = evbuffer_new();
	const struct rules *r = d->rules;

	evbuffer_add_printf(out,
			    "{\"version\":\"%s\",\"pid\":%d,"
			    "\"uptime_s\":%.3f,\"rules\":",
			    SLUICE_VERSION, (int)getpid(), uptime_s(d));
	json_write_string(out, d->rules_path);
	evbuffer_add_printf(out,
			    ",\"reloads\":%llu,\"threads\":%d,"
			    "\"connections\":%d,\"apis\":[",
			    (unsigned long long)d->reloads, d->thread_count,
			    front_connection_count(d));
	for (size_t i = 0; i < r->api_count; i++) {
		struct stats_api s;

		sum_api(d, r->apis[i].name, &s);
		if (i)
			evbuffer_add(out, ",", 1);
		status_api(out, &r->apis[i], &s);
	}
	evbuffer_add(out, "],\"pool\":", 9);
	if (d->pool)
		pool_status_json(d->pool, out);
	else
		evbuffer_add(out, "null", 4);
	evbuffer_add(out, ",\"bpf\":", 7);
	if (d->bpf) {
		sbpf_status_json(d->bpf, out);
	} else {
		evbuffer_add_printf(out,
				    "{\"loaded\":false,\"splice\":\"%s\","
				    "\"reason\":",
				    d->splice == RULES_SPLICE_COPY ? "copy"
								   : "pipe");
		if (d->bpf_reason[0])
			json_write_string(out, d->bpf_reason);
		else
			evbuffer_add(out, "null", 4);
		evbuffer_add_printf(out, ",\"spliced_bytes\":{},\"edge\":[]}");
	}
	evbuffer_add(out, "}\n", 2);
	send_reply(req, 200, "application/json", out);
	evbuffer_free(out);
}

/* One family at a time, every API's samples under its TYPE line, as the
 * text format requires. */
static void metrics_family(struct evbuffer *out, const char *name,
			   const char *type, const char *help)
{
	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help,
			    name, type);
}

static void metrics_histogram(struct evbuffer *out, const char *name,
			      const struct stats_api *s)
{
	uint64_t cumulative = 0;
	int b = 0;

	for (size_t k = 0; k < sizeof(prom_buckets) / sizeof(double); k++) {
		double bound_us = prom_buckets[k] * 1e6;

		while (b < STATS_LAT_BUCKETS &&
		       stats_bucket_upper_us(b) <= bound_us * 1.0001)
			cumulative += s->latency[b++];
		evbuffer_add_printf(out,
				    "sluice_request_duration_seconds_bucket{"
				    "api=\"%s\",le=\"%g\"} %llu\n",
				    name, prom_buckets[k],
				    (unsigned long long)cumulative);
	}
	while (b < STATS_LAT_BUCKETS)
		cumulative += s->latency[b++];
	evbuffer_add_printf(out,
			    "sluice_request_duration_seconds_bucket{api=\"%s\","
			    "le=\"+Inf\"} %llu\n"
			    "sluice_request_duration_seconds_sum{api=\"%s\"} "
			    "%.6f\n"
			    "sluice_request_duration_seconds_count{api=\"%s\"} "
			    "%llu\n",
			    name, (unsigned long long)cumulative, name,
			    s->latency_sum_us / 1e6, name,
			    (unsigned long long)cumulative);
}

static void metrics_apis(struct sluiced *d, struct evbuffer *out)
{
	const struct rules *r = d->rules;
	struct stats_api *sums = calloc(r->api_count + 1, sizeof(*sums));

	if (!sums)
		return;
	for (size_t i = 0; i < r->api_count; i++)
		sum_api(d, r->apis[i].name, &sums[i]);

	metrics_family(out, "sluice_requests_total", "counter",
		       "Requests answered, by API and status class.");
	for (size_t i = 0; i < r->api_count; i++)
		for (int c = 1; c <= 5; c++)
			evbuffer_add_printf(
			    out,
			    "sluice_requests_total{api=\"%s\","
			    "class=\"%s\"} %llu\n",
			    r->apis[i].name, class_names[c],
			    (unsigned long long)sums[i].classes[c]);
	metrics_family(out, "sluice_request_duration_seconds", "histogram",
		       "Time from the request head to the response's end.");
	for (size_t i = 0; i < r->api_count; i++)
		metrics_histogram(out, r->apis[i].name, &sums[i]);
	metrics_family(out, "sluice_inflight_requests", "gauge",
		       "Requests in progress.");
	for (size_t i = 0; i < r->api_count; i++)
		evbuffer_add_printf(out,
				    "sluice_inflight_requests{api=\"%s\"} "
				    "%lld\n",
				    r->apis[i].name,
				    (long long)sums[i].inflight);
	metrics_family(out, "sluice_received_bytes_total", "counter",
		       "Request body bytes received from clients.");
	for (size_t i = 0; i < r->api_count; i++)
		evbuffer_add_printf(out,
				    "sluice_received_bytes_total{api=\"%s\"} "
				    "%llu\n",
				    r->apis[i].name,
				    (unsigned long long)sums[i].bytes_in);
	metrics_family(out, "sluice_sent_bytes_total", "counter",
		       "Response body bytes sent to clients.");
	for (size_t i = 0; i < r->api_count; i++)
		evbuffer_add_printf(
		    out, "sluice_sent_bytes_total{api=\"%s\"} %llu\n",
		    r->apis[i].name, (unsigned long long)sums[i].bytes_out);
	free(sums);
}

static void handle_metrics(struct evhttp_request *req, void *arg)
{
	struct sluiced *d = arg;
	struct evbuffer *out = evbuffer_new();

	metrics_family(out, "sluice_up", "gauge",
		       "Whether sluiced is running.");
	evbuffer_add_printf(out, "sluice_up 1\n");
	metrics_family(out, "sluice_uptime_seconds", "gauge",
		       "Seconds since start.");
	evbuffer_add_printf(out, "sluice_uptime_seconds %.3f\n", uptime_s(d));
	metrics_family(out, "sluice_connections", "gauge",
		       "Open client connections.");
	evbuffer_add_printf(out, "sluice_connections %d\n",
			    front_connection_count(d));
	metrics_family(out, "sluice_reloads_total", "counter",
		       "Successful rules reloads.");
	evbuffer_add_printf(out, "sluice_reloads_total %llu\n",
			    (unsigned long long)d->reloads);
	metrics_apis(d, out);
	if (d->pool)
		pool_metrics(d->pool, out);
	if (d->bpf)
		sbpf_metrics(d->bpf, out);
	send_reply(req, 200, "text/plain; version=0.0.4", out);
	evbuffer_free(out);
}

static void handle_stats(struct evhttp_request *req, void *arg)
{
	struct evbuffer *out = evbuffer_new();

	(void)arg;
	evbuffer_add_reference(out, stats_html, stats_html_len, NULL, NULL);
	send_reply(req, 200, "text/html; charset=utf-8", out);
	evbuffer_free(out);
}

static void handle_reload(struct evhttp_request *req, void *arg)
{
	struct sluiced *d = arg;
	struct evbuffer *out = evbuffer_new();
	char err[RULES_ERR_MAX];

	if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
		evbuffer_add_printf(out, "{\"error\":\"use POST\"}\n");
		send_reply(req, 405, "application/json", out);
	} else if (sluiced_reload(d, err, sizeof(err))) {
		evbuffer_add_printf(out, "{\"error\":");
		json_write_string(out, err);
		evbuffer_add_printf(out, "}\n");
		send_reply(req, 400, "application/json", out);
	} else {
		evbuffer_add_printf(out, "{\"reloaded\":true}\n");
		send_reply(req, 200, "application/json", out);
	}
	evbuffer_free(out);
}

static void handle_other(struct evhttp_request *req, void *arg)
{
	struct evbuffer *out = evbuffer_new();

	(void)arg;
	evbuffer_add_printf(out, "{\"error\":\"not found; try /status, "
				 "/metrics, /stats or POST /reload\"}\n");
	send_reply(req, 404, "application/json", out);
	evbuffer_free(out);
}

int admin_start(struct sluiced *d, struct event_base *base)
{
	const struct rules_addr *addr = &d->rules->admin;
	char host[64];
	const char *colon = strrchr(addr->text, ':');
	size_t len = colon ? (size_t)(colon - addr->text) : 0;

	d->admin = evhttp_new(base);
	if (!d->admin || !colon || len >= sizeof(host))
		return -1;
	/* "[::1]:9901" binds "::1". */
	if (addr->text[0] == '[') {
		memcpy(host, addr->text + 1, len - 2);
		host[len - 2] = '\0';
	} else {
		memcpy(host, addr->text, len);
		host[len] = '\0';
	}
	if (evhttp_bind_socket(d->admin, host, (uint16_t)atoi(colon + 1))) {
		log_error("cannot listen on the admin address addr=%s",
			  addr->text);
		return -1;
	}
	evhttp_set_allowed_methods(d->admin, EVHTTP_REQ_GET | EVHTTP_REQ_POST |
						 EVHTTP_REQ_HEAD);
	evhttp_set_cb(d->admin, "/status", handle_status, d);
	evhttp_set_cb(d->admin, "/metrics", handle_metrics, d);
	evhttp_set_cb(d->admin, "/stats", handle_stats, d);
	evhttp_set_cb(d->admin, "/reload", handle_reload, d);
	evhttp_set_gencb(d->admin, handle_other, d);
	log_info("admin listening addr=%s", addr->text);
	return 0;
}

void admin_stop(struct sluiced *d)
{
	evhttp_free(d->admin);
	d->admin = NULL;
}
