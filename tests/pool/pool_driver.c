/* pool_driver: runs the worker pool without the front, for tests.
 *
 *   pool_driver RULES WORKER HOOKS_DIR CMD...
 *
 * The pool runs on the main thread's event base, with no lanes: its workers
 * are served there too (in sluiced each front thread serves its own). A
 * second thread plays a front thread: it submits calls with its own base as
 * their origin and waits for their done() there. Commands run in order:
 *
 *   call:API:N[:PHASE]  submit N calls at once, wait for all, print
 *                       "call api=API n=N ok=.. hook_error=.. ... ms=.."
 *   reply:API[:BYTES]   one call (a body of BYTES); print the X-* request
 *                       headers the result set
 *   burst:A:N,B:M       submit N calls of A then M of B at once; print
 *                       "burst api=A ok=.. failed=.. last_ms=.." per API
 *   sleep:MS            let the pool run for MS
 *   reload:RULES        pool_reload with another rules file
 *   status | metrics    print the pool's /status object or /metrics text
 *   procs               print "procs children=N zombies=N fds=N"
 *
 * With POOL_WATCH set, the pool's worker observer prints "watch ..." lines;
 * with POOL_SUBREAPER set, the driver adopts orphans as PID 1 would.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <msgpack.h>

#include "common/log.h"
#include "common/msg.h"
#include "common/rules.h"
#include "pool/pool.h"

#define CALL_WAIT_S 120

static const char *const result_names[] = {
    "ok",	  "hook_error",	   "timeout",	  "worker_died",
    "queue_full", "queue_timeout", "unavailable", "shutdown",
};

struct driver {
	struct event_base *pool_base, *front_base;
	struct pool *pool;
	struct rules *rules;
	const char *worker, *hooks;

	pthread_mutex_t mu;
	pthread_cond_t cv;

	int pending;
	int counts[8];
	/* burst: per API, calls answered OK and when the last one was */
	struct burst_api {
		char name[64];
		int ok, failed;
		int64_t last_ms;
	} burst[8];
	int burst_count;
	int64_t burst_start;
	char first_error[512];
	char headers[512];
	int argc;
	char **argv;
};

struct job {
	struct driver *d;
	void (*fn)(struct driver *d, const char *arg);
	const char *arg;
	int done;
};

/* ---- running something on the pool's thread ---------------------------- */

static void job_cb(evutil_socket_t fd, short what, void *arg)
{
	struct job *job = arg;

	(void)fd;
	(void)what;
	job->fn(job->d, job->arg);
	pthread_mutex_lock(&job->d->mu);
	job->done = 1;
	pthread_cond_broadcast(&job->d->cv);
	pthread_mutex_unlock(&job->d->mu);
}

static void on_pool(struct driver *d,
		    void (*fn)(struct driver *d, const char *arg),
		    const char *arg)
{
	struct job job = {d, fn, arg, 0};

	event_base_once(d->pool_base, -1, EV_TIMEOUT, job_cb, &job, NULL);
	pthread_mutex_lock(&d->mu);
	while (!job.done)
		pthread_cond_wait(&d->cv, &d->mu);
	pthread_mutex_unlock(&d->mu);
}

static void print_status(struct driver *d, const char *arg)
{
	struct evbuffer *out = evbuffer_new();

	(void)arg;
	pool_status_json(d->pool, out);
	evbuffer_add(out, "\n", 1);
	evbuffer_write(out, STDOUT_FILENO);
	evbuffer_free(out);
}

static void print_metrics(struct driver *d, const char *arg)
{
	struct evbuffer *out = evbuffer_new();

	(void)arg;
	pool_metrics(d->pool, out);
	evbuffer_write(out, STDOUT_FILENO);
	evbuffer_free(out);
}

static void do_reload(struct driver *d, const char *file)
{
	char err[RULES_ERR_MAX];
	struct rules *rules = rules_load(file, err, sizeof(err));

	if (!rules) {
		fprintf(stderr, "pool_driver: %s\n", err);
		return;
	}
	pool_reload(d->pool, rules);
	rules_unref(d->rules);
	d->rules = rules;
}

static void do_stop(struct driver *d, const char *arg)
{
	(void)arg;
	pool_stop(d->pool);
	d->pool = NULL;
	event_base_loopbreak(d->pool_base);
}

/* ---- calls -------------------------------------------------------------- */

static void pack_str(msgpack_packer *pk, const char *s)
{
	msgpack_pack_str(pk, strlen(s));
	msgpack_pack_str_body(pk, s, strlen(s));
}

static void encode_call(struct pool_call *call, const char *api,
			const char *phase, size_t body_len)
{
	char *body = calloc(1, body_len + 1);

	msgpack_sbuffer sb;
	msgpack_packer pk;
	bool resp = strcmp(phase, "response") == 0;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, resp ? 4 : 3);
	pack_str(&pk, "api");
	pack_str(&pk, api);
	pack_str(&pk, "phase");
	pack_str(&pk, phase);
	pack_str(&pk, "req");
	msgpack_pack_map(&pk, 7);
	pack_str(&pk, "method");
	pack_str(&pk, "GET");
	pack_str(&pk, "path");
	pack_str(&pk, "/x?a=1");
	pack_str(&pk, "headers");
	msgpack_pack_array(&pk, 1);
	msgpack_pack_array(&pk, 2);
	pack_str(&pk, "Host");
	pack_str(&pk, "driver");
	pack_str(&pk, "body");
	msgpack_pack_bin(&pk, body_len);
	msgpack_pack_bin_body(&pk, body, body_len);
	free(body);
	pack_str(&pk, "scheme");
	pack_str(&pk, "http");
	pack_str(&pk, "remote_addr");
	pack_str(&pk, "127.0.0.1");
	pack_str(&pk, "listen_path");
	pack_str(&pk, "/");
	if (resp) {
		pack_str(&pk, "resp");
		msgpack_pack_map(&pk, 3);
		pack_str(&pk, "status");
		msgpack_pack_int(&pk, 200);
		pack_str(&pk, "headers");
		msgpack_pack_array(&pk, 0);
		pack_str(&pk, "body");
		msgpack_pack_bin(&pk, 0);
	}
	snprintf(call->api_name, sizeof(call->api_name), "%s", api);
	call->phase = resp ? POOL_PHASE_RESPONSE : POOL_PHASE_REQUEST;
	call->msg = sb.data;
	call->msg_len = sb.size;
}

/* The X-* headers of the result's "req", as "Name=value ...". */
static void reply_headers(const char *raw, size_t len, char *out, size_t cap)
{
	msgpack_unpacked up;
	size_t off = 0, o = 0;
	const msgpack_object *h;

	out[0] = '\0';
	msgpack_unpacked_init(&up);
	if (msgpack_unpack_next(&up, raw, len, &off) != MSGPACK_UNPACK_SUCCESS)
		goto done;
	h = msg_get(msg_get(&up.data, "req"), "headers");
	if (!h || h->type != MSGPACK_OBJECT_ARRAY)
		goto done;
	for (uint32_t i = 0; i < h->via.array.size; i++) {
		const msgpack_object *pair = &h->via.array.ptr[i];
		const msgpack_object *n, *v;

		if (pair->type != MSGPACK_OBJECT_ARRAY ||
		    pair->via.array.size != 2)
			continue;
		n = &pair->via.array.ptr[0];
		v = &pair->via.array.ptr[1];
		if (n->type != MSGPACK_OBJECT_STR ||
		    v->type != MSGPACK_OBJECT_STR || n->via.str.size < 2 ||
		    strncasecmp(n->via.str.ptr, "x-", 2))
			continue;
		o +=
		    snprintf(out + o, o < cap ? cap - o : 0, "%s%.*s=%.*s",
			     o ? " " : "", (int)n->via.str.size, n->via.str.ptr,
			     (int)v->via.str.size, v->via.str.ptr);
	}
done:
	msgpack_unpacked_destroy(&up);
}

static int64_t now_ms(void);

static void burst_note(struct driver *d, const struct pool_call *call)
{
	for (int i = 0; i < d->burst_count; i++) {
		struct burst_api *b = &d->burst[i];

		if (strcmp(b->name, call->api_name))
			continue;
		if (call->result == POOL_OK)
			b->ok++;
		else
			b->failed++;
		b->last_ms = now_ms() - d->burst_start;
	}
}

static void call_done(struct pool_call *call)
{
	struct driver *d = call->arg;

	burst_note(d, call);
	d->counts[call->result]++;
	if (call->error && !d->first_error[0])
		snprintf(d->first_error, sizeof(d->first_error), "%s",
			 call->error);
	if (call->result == POOL_OK && !d->headers[0])
		reply_headers(call->reply, call->reply_len, d->headers,
			      sizeof(d->headers));
	free(call->error);
	free(call->reply);
	free(call->msg);
	free(call);
	if (--d->pending == 0)
		event_base_loopbreak(d->front_base);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void run_calls(struct driver *d, const char *api, int n,
		      const char *phase, size_t body_len, bool show_headers)
{
	struct timeval limit = {CALL_WAIT_S, 0};
	int64_t start = now_ms();

	memset(d->counts, 0, sizeof(d->counts));
	d->first_error[0] = d->headers[0] = '\0';
	d->pending = n;
	for (int i = 0; i < n; i++) {
		struct pool_call *call = calloc(1, sizeof(*call));

		encode_call(call, api, phase, body_len);
		call->origin = d->front_base;
		call->done = call_done;
		call->arg = d;
		pool_submit(d->pool, call);
	}
	event_base_loopexit(d->front_base, &limit);
	event_base_loop(d->front_base, EVLOOP_NO_EXIT_ON_EMPTY);

	printf("call api=%s n=%d", api, n);
	for (int r = 0; r < 8; r++)
		if (d->counts[r])
			printf(" %s=%d", result_names[r], d->counts[r]);
	printf(" pending=%d ms=%lld", d->pending,
	       (long long)(now_ms() - start));
	if (d->first_error[0]) {
		for (char *p = d->first_error; *p; p++)
			if (*p == '\n')
				*p = '|';
		printf(" error=\"%s\"", d->first_error);
	}
	if (show_headers)
		printf(" headers=\"%s\"", d->headers);
	printf("\n");
	fflush(stdout);
}

/* "burst:A:N,B:M": submit every call at once, in that order; print one
 * line per API with when its last call ended. */
static void run_burst(struct driver *d, char *spec)
{
	struct timeval limit = {CALL_WAIT_S, 0};
	char *save = NULL;

	d->burst_count = 0;
	d->pending = 0;
	d->burst_start = now_ms();
	for (char *item = strtok_r(spec, ",", &save);
	     item && d->burst_count < 8; item = strtok_r(NULL, ",", &save)) {
		struct burst_api *b = &d->burst[d->burst_count++];
		char *colon = strchr(item, ':');
		int n = colon ? atoi(colon + 1) : 1;

		if (colon)
			*colon = '\0';
		memset(b, 0, sizeof(*b));
		snprintf(b->name, sizeof(b->name), "%s", item);
		d->pending += n;
		for (int i = 0; i < n; i++) {
			struct pool_call *call = calloc(1, sizeof(*call));

			encode_call(call, item, "request", 0);
			call->origin = d->front_base;
			call->done = call_done;
			call->arg = d;
			pool_submit(d->pool, call);
		}
	}
	event_base_loopexit(d->front_base, &limit);
	event_base_loop(d->front_base, EVLOOP_NO_EXIT_ON_EMPTY);
	for (int i = 0; i < d->burst_count; i++)
		printf("burst api=%s ok=%d failed=%d last_ms=%lld\n",
		       d->burst[i].name, d->burst[i].ok, d->burst[i].failed,
		       (long long)d->burst[i].last_ms);
	d->burst_count = 0;
	fflush(stdout);
}

/* ---- processes ---------------------------------------------------------- */

static void print_procs(void)
{
	int children = 0, zombies = 0, fds = -2; /* "." and ".." */
	DIR *dir = opendir("/proc");
	struct dirent *de;

	while (dir && (de = readdir(dir))) {
		char path[300], buf[512], *p;
		int ppid = 0;
		char state = 0;
		FILE *f;

		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/stat", de->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(buf, sizeof(buf), f) && (p = strrchr(buf, ')')) &&
		    sscanf(p + 2, "%c %d", &state, &ppid) == 2 &&
		    ppid == getpid()) {
			children++;
			zombies += state == 'Z';
		}
		fclose(f);
	}
	if (dir)
		closedir(dir);
	dir = opendir("/proc/self/fd");
	while (dir && readdir(dir))
		fds++;
	if (dir)
		closedir(dir);
	printf("procs children=%d zombies=%d fds=%d\n", children, zombies,
	       fds - 1); /* the opendir's own descriptor */
	fflush(stdout);
}

/* SIGCHLD reaches this thread too: sleep the whole time regardless. */
static void sleep_ms(long ms)
{
	struct timespec left = {ms / 1000, (ms % 1000) * 1000000};

	while (nanosleep(&left, &left) < 0 && errno == EINTR)
		;
}

static void run_command(struct driver *d, char *cmd)
{
	char *api, *n, *phase;

	if (strncmp(cmd, "call:", 5) == 0) {
		api = strtok(cmd + 5, ":");
		n = strtok(NULL, ":");
		phase = strtok(NULL, ":");
		run_calls(d, api, n ? atoi(n) : 1, phase ? phase : "request", 0,
			  false);
	} else if (strncmp(cmd, "reply:", 6) == 0) {
		api = strtok(cmd + 6, ":");
		n = strtok(NULL, ":");
		run_calls(d, api, 1, "request", n ? strtoul(n, NULL, 10) : 0,
			  true);
	} else if (strncmp(cmd, "burst:", 6) == 0) {
		run_burst(d, cmd + 6);
	} else if (strncmp(cmd, "sleep:", 6) == 0) {
		sleep_ms(atoi(cmd + 6));
	} else if (strncmp(cmd, "reload:", 7) == 0) {
		on_pool(d, do_reload, cmd + 7);
	} else if (strcmp(cmd, "status") == 0) {
		on_pool(d, print_status, NULL);
	} else if (strcmp(cmd, "metrics") == 0) {
		on_pool(d, print_metrics, NULL);
	} else if (strcmp(cmd, "procs") == 0) {
		print_procs();
	} else {
		fprintf(stderr, "pool_driver: unknown command %s\n", cmd);
	}
}

static void print_watch(void *arg, int pid, int state, const char *api,
			uint64_t calls)
{
	(void)arg;
	printf("watch pid=%d state=%d api=%s calls=%llu\n", pid, state,
	       api ? api : "-", (unsigned long long)calls);
	fflush(stdout);
}

static void *front_main(void *arg)
{
	struct driver *d = arg;

	for (int i = 0; i < d->argc; i++)
		run_command(d, d->argv[i]);
	on_pool(d, do_stop, NULL);
	return NULL;
}

int main(int argc, char **argv)
{
	struct driver d = {0};
	char err[RULES_ERR_MAX];
	pthread_t front;

	if (argc < 4) {
		fprintf(stderr,
			"usage: pool_driver RULES WORKER HOOKS_DIR CMD...\n");
		return 2;
	}
	log_threshold = getenv("POOL_DEBUG") ? LOG_DEBUG : LOG_INFO;
	/* As PID 1 in a container would: adopt the workers' orphans. */
	if (getenv("POOL_SUBREAPER"))
		prctl(PR_SET_CHILD_SUBREAPER, 1);
	evthread_use_pthreads();
	pthread_mutex_init(&d.mu, NULL);
	pthread_cond_init(&d.cv, NULL);
	d.rules = rules_load(argv[1], err, sizeof(err));
	if (!d.rules) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	d.pool_base = event_base_new();
	d.front_base = event_base_new();
	/* No lanes: the workers are served on the pool's thread, and the
	 * "front" thread's calls hop to it and back. */
	d.pool = pool_start(d.pool_base, NULL, 0, d.rules, argv[2], argv[3]);
	if (!d.pool)
		return 1;
	if (getenv("POOL_WATCH"))
		pool_watch_workers(d.pool, print_watch, NULL);
	d.argc = argc - 4;
	d.argv = argv + 4;
	pthread_create(&front, NULL, front_main, &d);
	event_base_loop(d.pool_base, EVLOOP_NO_EXIT_ON_EMPTY);
	pthread_join(front, NULL);
	print_procs();
	rules_unref(d.rules);
	event_base_free(d.front_base);
	event_base_free(d.pool_base);
	return 0;
}
