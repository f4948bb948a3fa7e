#include "ctl/top.h"

#include "ctl/client.h"
#include "ctl/json.h"
#include "ctl/view.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define TOP_PERIOD_MS 1000

/* Home the cursor and clear the screen. */
static const char top_clear[] = "\033[H\033[2J";

struct top_sample {
	struct json *doc;
	double mono_s; /* when it was taken, CLOCK_MONOTONIC */
};

static volatile sig_atomic_t top_stop;

static void on_signal(int sig)
{
	(void)sig;
	top_stop = 1;
}

static double mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

#define num(node, key) json_number(json_get((node), (key)), 0)

/* A counter's rate between two samples; a counter that went back (sluiced
 * restarted under the same address) counts as 0, not as a negative rate. */
static double rate(double now, double before, double dt)
{
	return now >= before && dt > 0 ? (now - before) / dt : 0;
}

static const struct json *find_api(const struct json *apis, const char *name)
{
	for (size_t i = 0; i < json_count(apis); i++) {
		const struct json *api = json_at(apis, i);

		if (strcmp(json_string(json_get(api, "name"), ""), name) == 0)
			return api;
	}
	return NULL;
}

/* The interval comes from the server's own clock when both samples carry
 * it, so the time a slow request spent in flight does not skew the rate. */
static double sample_interval(const struct top_sample *prev,
			      const struct top_sample *cur)
{
	double a = json_number(json_get(prev->doc, "uptime_s"), -1);
	double b = json_number(json_get(cur->doc, "uptime_s"), -1);

	if (a >= 0 && b > a)
		return b - a;
	return cur->mono_s - prev->mono_s;
}

static void draw_header(FILE *out, const char *addr, const struct json *st)
{
	char up[32];

	fprintf(out,
		"%s  sluiced %s  pid %.0f  up %s  %.0f conns   q: quit\n\n",
		addr, json_string(json_get(st, "version"), "?"), num(st, "pid"),
		view_duration(num(st, "uptime_s"), up, sizeof(up)),
		num(st, "connections"));
}

static void draw_api_row(FILE *out, int w, const struct json *api,
			 const struct json *old, const struct json *spliced,
			 const struct json *old_spliced, double dt)
{
	const char *name = json_string(json_get(api, "name"), "?");
	const struct json *req = json_get(api, "requests");
	const struct json *old_req = json_get(old, "requests");
	const struct json *lat = json_get(api, "latency_ms");
	double sb = num(spliced, name), old_sb = num(old_spliced, name);
	char bytes[32];

	fprintf(
	    out,
	    "%-*s  %-6s  %8.1f  %6.1f  %6.1f  %7.2f  %7.2f  %5.0f  "
	    "%9s/s\n",
	    w, name, json_string(json_get(api, "kind"), "-"),
	    old ? rate(num(api, "total"), num(old, "total"), dt) : 0,
	    old ? rate(num(req, "4xx"), num(old_req, "4xx"), dt) : 0,
	    old ? rate(num(req, "5xx"), num(old_req, "5xx"), dt) : 0,
	    num(lat, "p50"), num(lat, "p99"), num(api, "inflight"),
	    view_bytes(old ? rate(sb, old_sb, dt) : 0, bytes, sizeof(bytes)));
}

static void draw_apis(FILE *out, const struct json *st, const struct json *ps,
		      double dt)
{
	const struct json *apis = json_get(st, "apis");
	const struct json *spliced =
	    json_get(json_get(st, "bpf"), "spliced_bytes");
	const struct json *old_spliced =
	    json_get(json_get(ps, "bpf"), "spliced_bytes");
	int w = view_name_width(apis, 4);

	fprintf(out, "%-*s  %-6s  %8s  %6s  %6s  %7s  %7s  %5s  %11s\n", w,
		"API", "KIND", "REQ/S", "4XX/S", "5XX/S", "P50 MS", "P99 MS",
		"INFL", "SPLICED");
	for (size_t i = 0; i < json_count(apis); i++) {
		const struct json *api = json_at(apis, i);
		const char *name = json_string(json_get(api, "name"), "");

		draw_api_row(out, w, api, find_api(json_get(ps, "apis"), name),
			     spliced, old_spliced, dt);
	}
	if (json_count(apis) == 0)
		fprintf(out, "(no APIs)\n");
}

static void draw_pool(FILE *out, const struct json *pool)
{
	const struct json *apis = json_get(pool, "apis");
	size_t total = json_count(json_get(pool, "workers"));
	int busy, idle, starting;

	if (json_is_null(pool)) {
		fprintf(out, "\nPOOL  none (no API has middleware)\n");
		return;
	}
	view_worker_states(pool, &busy, &idle, &starting);
	fprintf(out,
		"\nPOOL  %zu workers of %.0f..%.0f: %d busy (%.0f%%), %d idle, "
		"%d starting; %.0f queued\n"
		"      spawned %.0f, killed %.0f, recycled %.0f\n",
		total, num(pool, "min"), num(pool, "max"), busy,
		total ? 100.0 * busy / total : 0.0, idle, starting,
		num(pool, "queued"), num(pool, "spawned"), num(pool, "killed"),
		num(pool, "recycled"));
	for (size_t i = 0; i < json_count(apis); i++) {
		const struct json *api = json_at(apis, i);

		fprintf(out,
			"      %s: %.0f in flight, %.0f queued, %.0f rejected, "
			"%.0f timeouts, %.0f errors (%s)\n",
			api->key, num(api, "inflight"), num(api, "queued"),
			num(api, "rejected"), num(api, "timeouts"),
			num(api, "errors"),
			json_string(json_get(api, "status"), "-"));
	}
}

static void draw_bpf(FILE *out, const struct json *bpf, const struct json *ob,
		     double dt)
{
	const struct json *spliced = json_get(bpf, "spliced_bytes");
	const struct json *edge = json_get(bpf, "edge");
	double now = 0, before = 0;
	char total[32], per_s[32];

	for (size_t i = 0; i < json_count(spliced); i++) {
		const struct json *api = json_at(spliced, i);

		now += json_number(api, 0);
		before += num(json_get(ob, "spliced_bytes"), api->key);
	}
	if (!json_bool(json_get(bpf, "loaded"), false))
		fprintf(out, "BPF   not loaded (%s), splice %s\n",
			json_string(json_get(bpf, "reason"), "-"),
			json_string(json_get(bpf, "splice"), "-"));
	else
		fprintf(
		    out, "BPF   loaded, splice %s; spliced %s, %s/s\n",
		    json_string(json_get(bpf, "splice"), "-"),
		    view_bytes(now, total, sizeof(total)),
		    view_bytes(rate(now, before, dt), per_s, sizeof(per_s)));
	for (size_t i = 0; i < json_count(edge); i++) {
		const struct json *port = json_at(edge, i);
		const struct json *old = json_at(json_get(ob, "edge"), i);

		fprintf(out,
			"EDGE  port %.0f: %.0f passed (%.0f/s), %.0f dropped "
			"(%.0f/s)\n",
			num(port, "port"), num(port, "passed"),
			rate(num(port, "passed"), num(old, "passed"), dt),
			num(port, "dropped"),
			rate(num(port, "dropped"), num(old, "dropped"), dt));
	}
}

/* Build the frame in memory and write it at once: no flicker. */
static void draw_frame(const char *addr, const struct top_sample *prev,
		       const struct top_sample *cur)
{
	double dt = sample_interval(prev, cur);
	const struct json *st = cur->doc, *ps = prev->doc;
	char *frame = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&frame, &len);

	if (!out)
		return;
	fputs(top_clear, out);
	draw_header(out, addr, st);
	draw_apis(out, st, ps, dt);
	draw_pool(out, json_get(st, "pool"));
	fputc('\n', out);
	draw_bpf(out, json_get(st, "bpf"), json_get(ps, "bpf"), dt);
	fclose(out);
	fwrite(frame, 1, len, stdout);
	fflush(stdout);
	free(frame);
}

/* Sleep one period, or less when `q` is typed or a signal asks to stop.
 * Keys are read only from a terminal: a closed or redirected stdin would
 * read as ready forever. */
static void wait_period(bool tty)
{
	double deadline = mono_now() + TOP_PERIOD_MS / 1000.0;
	struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
	char key;

	while (!top_stop) {
		int left = (int)((deadline - mono_now()) * 1000);

		if (left <= 0)
			return;
		if (poll(&pfd, tty ? 1 : 0, left) <= 0)
			continue;
		if (read(STDIN_FILENO, &key, 1) == 1 &&
		    (key == 'q' || key == 'Q'))
			top_stop = 1;
	}
}

/* Keys without Enter and without echo; ^C still raises SIGINT. */
static bool terminal_raw(struct termios *saved)
{
	struct termios raw;

	if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, saved) < 0)
		return false;
	raw = *saved;
	raw.c_lflag &= ~(ICANON | ECHO);
	raw.c_cc[VMIN] = 1;
	raw.c_cc[VTIME] = 0;
	return tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
}

static int sample_take(const char *addr, struct top_sample *s)
{
	char err[512];
	int rc;

	rc = client_get_status(addr, &s->doc, err, sizeof(err));
	if (rc < 0) {
		fprintf(stderr, "sluicectl: %s\n", err);
		return rc;
	}
	s->mono_s = mono_now();
	return 0;
}

int top_run(const char *addr, int iterations)
{
	struct sigaction sa = {.sa_handler = on_signal};
	struct top_sample prev = {0}, cur = {0};
	struct termios saved;
	bool tty;
	int frames = 0, code = 0;

	if (sample_take(addr, &prev) < 0)
		return 1;
	/* No SA_RESTART: poll() must return on ^C. */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	tty = terminal_raw(&saved);
	while (!top_stop && (iterations == 0 || frames < iterations)) {
		wait_period(tty);
		if (top_stop)
			break;
		if (sample_take(addr, &cur) < 0) {
			code = 1;
			break;
		}
		draw_frame(addr, &prev, &cur);
		json_free(prev.doc);
		prev = cur;
		cur.doc = NULL;
		frames++;
	}
	if (tty)
		tcsetattr(STDIN_FILENO, TCSANOW, &saved);
	json_free(prev.doc);
	return code;
}
