/* sluiced: the gateway's front and supervisor.
 *
 * Start-up, in order: parse the command line, load the rules, load BPF
 * (as root), open the listeners, open the access log, drop privileges,
 * start the front threads, the worker pool and the admin endpoint, then run
 * the main loop for signals. Each step logs what it did or one sentence on
 * why it could not.
 */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "bpf/bpf.h"
#include "common/log.h"
#include "common/privs.h"
#include "common/rules.h"
#include "front/admin.h"
#include "front/conn.h"
#include "front/limit.h"
#include "front/relay.h"
#include "front/sluiced.h"
#include "version.h"
#include "pool/pool.h"

static void usage(FILE *out)
{
	fprintf(out,
		"usage: sluiced -c RULES [-l error|warn|info|debug] [-f]\n"
		"       sluiced -t -c RULES    check RULES and exit 0/1\n"
		"       sluiced -V             version and build features\n");
}

static void print_version(void)
{
	printf("sluiced %s\n"
	       "features: http1 llhttp-strict libevent reuseport "
	       "bpf-sockmap xdp-edge pipe-splice python-workers\n"
	       "limits: no TLS, no HTTP/2, no upgrade/websocket tunnels\n",
	       SLUICE_VERSION);
}

static bool file_exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

/* sluice-worker lives beside sluiced (build tree) or in
 * PREFIX/libexec/sluice (installed); hooks/ in the source tree or
 * PREFIX/share/sluice/hooks. */
static void find_companions(struct sluiced *d)
{
	char exe[PATH_MAX], dir[PATH_MAX - 64], probe[PATH_MAX + 64];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	const char *hooks_env = getenv("SLUICE_HOOKS_DIR");
	static const char *const hook_candidates[] = {
	    "%s/../share/sluice/hooks", "%s/../hooks", "%s/../../hooks"};

	exe[n > 0 ? n : 0] = '\0';
	snprintf(dir, sizeof(dir), "%s", dirname(exe));

	snprintf(d->worker_path, sizeof(d->worker_path), "%s/sluice-worker",
		 dir);
	if (!file_exists(d->worker_path))
		snprintf(d->worker_path, sizeof(d->worker_path),
			 "%s/../libexec/sluice/sluice-worker", dir);

	d->hooks_dir[0] = '\0';
	if (hooks_env) {
		snprintf(d->hooks_dir, sizeof(d->hooks_dir), "%s", hooks_env);
		return;
	}
	for (size_t i = 0; i < 3; i++) {
		snprintf(probe, sizeof(probe), hook_candidates[i], dir);
		if (file_exists(strcat(probe, "/gateway.py"))) {
			snprintf(probe, sizeof(probe), hook_candidates[i], dir);
			if (realpath(probe, d->hooks_dir))
				return;
		}
	}
}

static int online_cpus(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n > 0 ? (int)n : 1;
}

/* ---- BPF ---------------------------------------------------------------- */

static bool rules_need_bpf(const struct rules *r)
{
	return r->bpf.splice == RULES_SPLICE_AUTO ||
	       r->bpf.splice == RULES_SPLICE_SOCKMAP ||
	       r->bpf.xdp_interface_count > 0 || r->bpf.deny_count > 0;
}

static int setup_bpf(struct sluiced *d)
{
	char err[512] = "";

	if (rules_need_bpf(d->rules))
		d->bpf = sbpf_open(d->rules, err, sizeof(err));
	if (!d->bpf && err[0]) {
		if (d->rules->bpf.required) {
			log_error("%s", err);
			return -1;
		}
		log_warn("running without BPF: %s", err);
		snprintf(d->bpf_reason, sizeof(d->bpf_reason), "%s", err);
	}
	d->splice = relay_mode_for(d->rules->bpf.splice, d->bpf);
	if (d->rules->bpf.splice == RULES_SPLICE_SOCKMAP && !d->bpf)
		d->splice = RULES_SPLICE_PIPE;
	return 0;
}

/* ---- the worker pool ---------------------------------------------------- */

/* Worker state into the pinned sluice_workers map, for bpftool. */
static void on_worker(void *arg, int pid, int state, const char *api,
		      uint64_t calls)
{
	struct sluiced *d = arg;

	if (!d->bpf)
		return;
	if (state < 0)
		sbpf_worker_delete(d->bpf, (uint32_t)pid);
	else
		sbpf_worker_set(d->bpf, (uint32_t)pid, api, state, calls);
}

/* Each front thread is a lane of the pool: it talks to its own workers. */
static void start_pool(struct sluiced *d, struct rules *rules)
{
	struct event_base **lanes = calloc(d->thread_count, sizeof(*lanes));
	int n = 0;

	for (int i = 0; lanes && i < d->thread_count; i++)
		lanes[n++] = d->threads[i].base;
	struct pool *pool =
	    pool_start(d->base, lanes, n, rules, d->worker_path, d->hooks_dir);

	free(lanes);
	if (pool) {
		pool_set_limiter(pool, hooked_limit, d->limits);
		pool_watch_workers(pool, on_worker, d);
	}
	d->pool = pool;
}

/* ---- reload and signals ------------------------------------------------- */

static bool same_listeners(const struct rules *a, const struct rules *b)
{
	for (size_t i = 0; i < a->listen_count && i < b->listen_count; i++)
		if (strcmp(a->listen[i].text, b->listen[i].text))
			return false;
	return a->listen_count == b->listen_count;
}

static bool same_store(const struct rules_store *a, const struct rules_store *b)
{
	return a->has_redis == b->has_redis && a->db == b->db &&
	       a->timeout_ms == b->timeout_ms &&
	       a->shared_rates == b->shared_rates &&
	       !strcmp(a->redis.text, b->redis.text) &&
	       !strcmp(a->prefix, b->prefix) &&
	       !strcmp(a->password ? a->password : "",
		       b->password ? b->password : "");
}

int sluiced_reload(struct sluiced *d, char *err, size_t err_len)
{
	struct rules *next = rules_load(d->rules_path, err, err_len);

	if (!next) {
		log_error("reload failed, keeping the running rules: %s", err);
		return -1;
	}
	if (!same_listeners(d->rules, next) ||
	    (next->has_admin != d->rules->has_admin) ||
	    strcmp(next->admin.text, d->rules->admin.text) ||
	    next->threads != d->rules->threads)
		log_warn("reload: listen addresses, admin and threads change "
			 "only on restart; other changes apply now");
	if (d->pool &&
	    !same_store(&d->rules->python.store, &next->python.store))
		log_warn("reload: python.store changes only on restart");
	for (size_t i = 0; i < next->api_count; i++)
		stats_slot(next->apis[i].name);

	front_threads_publish(d, next);
	if (d->pool)
		pool_reload(d->pool, next);
	else if (next->has_middleware)
		start_pool(d, next);
	if (d->bpf && sbpf_update(d->bpf, next))
		log_warn("reload: BPF maps not updated");
	rules_unref(d->rules);
	d->rules = next;
	d->reloads++;
	log_info("reloaded rules=%s apis=%zu", d->rules_path, next->api_count);
	return 0;
}

static void on_hup(evutil_socket_t sig, short what, void *arg)
{
	char err[RULES_ERR_MAX];

	(void)sig;
	(void)what;
	sluiced_reload(arg, err, sizeof(err));
}

static void stop_now(struct sluiced *d)
{
	sluiced_set(&d->stopping);
	sluiced_set(&d->draining);
	front_threads_drain(d);
	event_base_loopexit(d->base, NULL);
}

static void drain_deadline(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	log_warn("drain deadline passed connections=%d: stopping now",
		 front_connection_count(arg));
	stop_now(arg);
}

static void drain_check(evutil_socket_t fd, short what, void *arg)
{
	struct sluiced *d = arg;

	(void)fd;
	(void)what;
	if (front_connection_count(d) == 0)
		event_base_loopexit(d->base, NULL);
}

static void on_term(evutil_socket_t sig, short what, void *arg)
{
	struct sluiced *d = arg;
	int ms = d->rules->limits.upstream_timeout_ms + 1000;
	struct timeval deadline = {ms / 1000, (ms % 1000) * 1000};
	struct timeval tick = {0, 100000};

	(void)sig;
	(void)what;
	if (sluiced_draining(d))
		return;
	log_info("draining connections=%d deadline_ms=%d",
		 front_connection_count(d), ms);
	sluiced_set(&d->draining);
	front_threads_drain(d);
	d->drain_deadline = event_new(d->base, -1, 0, drain_deadline, d);
	d->drain_tick = event_new(d->base, -1, EV_PERSIST, drain_check, d);
	event_add(d->drain_deadline, &deadline);
	event_add(d->drain_tick, &tick);
}

static void on_stop(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	log_info("stopping on signal %d", (int)sig);
	stop_now(arg);
}

/* ---- start-up ----------------------------------------------------------- */

static void log_startup(const struct sluiced *d)
{
	const struct rules *r = d->rules;

	for (size_t i = 0; i < r->listen_count; i++)
		log_info("listening addr=%s threads=%d", r->listen[i].text,
			 d->thread_count);
	for (size_t i = 0; i < r->api_count; i++) {
		const struct rules_api *a = &r->apis[i];

		log_info("api name=%s kind=%s listen_path=%s hosts=%zu "
			 "upstreams=%zu first_upstream=%s own_listener=%s",
			 a->name, a->middleware ? "hooked" : "plain",
			 a->listen_path, a->host_count, a->upstream_count,
			 a->upstreams[0].url,
			 a->listen_count ? a->listen[0].text : "-");
	}
	log_info("splice mode=%s bpf=%s", rules_splice_name(d->splice),
		 d->bpf ? "loaded" : "off");
}

static int open_access_log(struct sluiced *d)
{
	const char *path = d->rules->access_log.path;

	pthread_mutex_init(&d->access_lock, NULL);
	if (!path)
		return 0;
	d->access_log = strcmp(path, "-") == 0 ? stderr : fopen(path, "a");
	if (!d->access_log) {
		log_error("cannot open access log path=%s: %s", path,
			  strerror(errno));
		return -1;
	}
	return 0;
}

/* `sluiced -t`. A Redis that does not answer is a warning, not an error:
 * it is the state of another server, and sluiced runs without it. */
static int check_only(struct rules *rules, struct sluiced *d)
{
	const struct rules_store *store = &rules->python.store;
	char why[256];
	int rc = 0;

	if (rules->has_middleware)
		rc = pool_check_imports(rules, d->worker_path, d->hooks_dir);
	if (rules->has_middleware && store->has_redis &&
	    pool_check_store(store, why, sizeof(why)))
		fprintf(stderr,
			"%s: warning: python.store.redis %s: %s; until it "
			"answers, get_data misses, store_data is lost and "
			"quotas pass\n",
			rules->file, store->redis.text, why);
	if (rc == 0)
		printf("%s: ok (%zu APIs)\n", rules->file, rules->api_count);
	rules_unref(rules);
	return rc ? 1 : 0;
}

static struct event *add_signal(struct sluiced *d, int sig,
				event_callback_fn fn)
{
	struct event *ev = evsignal_new(d->base, sig, fn, d);

	event_add(ev, NULL);
	return ev;
}

int main(int argc, char **argv)
{
	static struct sluiced daemon;
	struct sluiced *d = &daemon;
	char err[RULES_ERR_MAX];
	struct event *signals[5] = {NULL};
	bool check = false;
	int opt, level, rc = 1;

	log_set_ident("sluiced");
	while ((opt = getopt(argc, argv, "c:l:ftVh")) != -1) {
		switch (opt) {
		case 'c':
			d->rules_path = optarg;
			break;
		case 'l':
			level = log_level_parse(optarg);
			if (level < 0) {
				fprintf(stderr,
					"sluiced: unknown log level "
					"'%s'\n",
					optarg);
				return 1;
			}
			log_threshold = level;
			break;
		case 'f':
			break; /* sluiced always stays in the foreground */
		case 't':
			check = true;
			break;
		case 'V':
			print_version();
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 1;
		}
	}
	if (!d->rules_path) {
		usage(stderr);
		return 1;
	}

	find_companions(d);
	d->rules = rules_load(d->rules_path, err, sizeof(err));
	if (!d->rules) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	if (check)
		return check_only(d->rules, d);

	signal(SIGPIPE, SIG_IGN);
	evthread_use_pthreads();
	pthread_mutex_init(&d->lock, NULL);
	clock_gettime(CLOCK_MONOTONIC, &d->started);
	d->thread_count = d->rules->threads ? d->rules->threads : online_cpus();
	for (size_t i = 0; i < d->rules->api_count; i++)
		stats_slot(d->rules->apis[i].name);
	d->base = event_base_new();
	if (!d->base) {
		log_error("cannot create the event loop");
		goto out;
	}
	/* Handlers first: a HUP or TERM that arrives while the listeners
	 * open must not meet the default action, which kills. */
	signals[0] = add_signal(d, SIGHUP, on_hup);
	signals[1] = add_signal(d, SIGTERM, on_term);
	signals[2] = add_signal(d, SIGINT, on_stop);
	signals[3] = add_signal(d, SIGQUIT, on_stop);

	if (setup_bpf(d) || open_access_log(d))
		goto out;
	d->limits = limits_new(LIMIT_MAX_KEYS, LIMIT_MAX_BYTES);
	if (!d->limits) {
		log_error("out of memory for the rate limiter");
		goto out;
	}
	if (front_threads_start(d)) {
		log_error("cannot start the front; see the lines above");
		goto out;
	}
	if (d->rules->has_admin && admin_start(d, d->base))
		goto out;
	if (d->rules->user && privs_drop(d->rules->user))
		goto out;
	/* The pool exists before the first request can reach it; its
	 * workers are spawned unprivileged. */
	if (d->rules->has_middleware)
		start_pool(d, d->rules);
	if (front_threads_run(d)) {
		log_error("cannot start the front threads");
		goto out;
	}

	log_startup(d);
	log_info("started version=%s pid=%d rules=%s", SLUICE_VERSION,
		 (int)getpid(), d->rules_path);

	event_base_dispatch(d->base);
	log_info("stopping connections=%d", front_connection_count(d));
	rc = 0;
out:
	for (int i = 0; signals[i]; i++)
		event_free(signals[i]);
	sluiced_set(&d->stopping);
	sluiced_set(&d->draining);
	/* Threads first (no new calls), then the pool (which completes what
	 * is left on the threads' loops), then those loops go. */
	if (d->threads)
		front_threads_join(d);
	if (d->pool)
		pool_stop(d->pool);
	front_threads_free(d);
	limits_free(d->limits);
	if (d->admin)
		admin_stop(d);
	if (d->bpf)
		sbpf_close(d->bpf);
	if (d->drain_deadline)
		event_free(d->drain_deadline);
	if (d->drain_tick)
		event_free(d->drain_tick);
	if (d->access_log && d->access_log != stderr)
		fclose(d->access_log);
	if (d->base)
		event_base_free(d->base);
	rules_unref(d->rules);
	log_info("stopped");
	return rc;
}
