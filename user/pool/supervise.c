/* Supervision: the life of each sluice-worker process.
 *
 *   spawn -> STARTING --"ready"--> READY <--> (calls) --> DRAINING
 *                                                           |
 *       socket closed by us (idle, recycle, reload, deadline, stop)
 *       or by the worker's death --> CLOSED --SIGCHLD, waitpid--> freed
 *
 * A worker struct lives until its process is reaped, so a pid is never
 * signalled after it could have been reused; it is then freed on its lane's
 * thread (lane.c). A worker that dies on its own
 * fails the calls it held with POOL_WORKER_DIED; consecutive deaths delay
 * the next spawn (doubling, capped) so a hook or an interpreter that cannot
 * start does not turn into a fork storm.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/log.h"
#include "common/msg.h"
#include "pool/pool_int.h"

#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS	 10000
#define READ_BATCH	 64

extern char **environ;

/* ---- the process -------------------------------------------------------- */

static int spawn_attrs(posix_spawnattr_t *attr)
{
	static const int reset[] = {SIGPIPE, SIGCHLD, SIGHUP,  SIGINT,
				    SIGTERM, SIGQUIT, SIGUSR1, SIGUSR2};
	sigset_t none, dflt;

	sigemptyset(&none);
	sigemptyset(&dflt);
	for (size_t i = 0; i < sizeof(reset) / sizeof(reset[0]); i++)
		sigaddset(&dflt, reset[i]);
	posix_spawnattr_init(attr);
	posix_spawnattr_setsigmask(attr, &none);
	posix_spawnattr_setsigdefault(attr, &dflt);
	/* A process group of its own: a signal to sluiced's group (a
	 * terminal, timeout(1)) must not kill the workers while sluiced
	 * drains its hooked requests. The worker still dies with sluiced: it
	 * sets PR_SET_PDEATHSIG and exits at end of file on its socket. */
	posix_spawnattr_setpgroup(attr, 0);
	return posix_spawnattr_setflags(attr, POSIX_SPAWN_SETSIGMASK |
						  POSIX_SPAWN_SETSIGDEF |
						  POSIX_SPAWN_SETPGROUP);
}

/* Start WORKER_PATH HOOKS_DIR with its end of a new socketpair as fd 3 and
 * no other descriptor of ours beyond 0-2 (stdin is /dev/null). *FD is our
 * end, close-on-exec and blocking. */
int worker_process_start(const char *worker_path, const char *hooks_dir,
			 pid_t *pid, int *fd)
{
	char *argv[] = {(char *)worker_path, (char *)hooks_dir, NULL};
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	int sv[2], err;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	/* dup2 onto itself would keep close-on-exec set. */
	if (sv[1] == MSG_WORKER_FD) {
		int moved = fcntl(sv[1], F_DUPFD_CLOEXEC, MSG_WORKER_FD + 1);

		if (moved < 0) {
			err = -errno;
			goto close_pair;
		}
		close(sv[1]);
		sv[1] = moved;
	}

	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null",
					 O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, sv[1], MSG_WORKER_FD);
	posix_spawn_file_actions_addclosefrom_np(&fa, MSG_WORKER_FD + 1);
	spawn_attrs(&attr);
	err = -posix_spawn(pid, worker_path, &fa, &attr, argv, environ);
	posix_spawnattr_destroy(&attr);
	posix_spawn_file_actions_destroy(&fa);
	if (err)
		goto close_pair;
	close(sv[1]);
	*fd = sv[0];
	return 0;

close_pair:
	close(sv[0]);
	close(sv[1]);
	return err;
}

/* ---- sending ------------------------------------------------------------ */

/* Send one message; whatever the socket cannot take now waits for EV_WRITE.
 * Returns 0 or -errno (the worker is gone). */
int worker_send(struct pool_worker *w, const struct iovec *iov, int iovcnt)
{
	size_t total = 0;
	int err;

	if (w->fd < 0 || w->state == WORKER_CLOSED)
		return -EPIPE;
	for (int i = 0; i < iovcnt; i++)
		total += iov[i].iov_len;
	if (!w->out_head && total <= MSG_RECORD_MAX) {
		err = wire_send_record(w->fd, iov, iovcnt);
		if (err != -EAGAIN)
			return err;
	}
	err = wire_queue(&w->out_head, &w->out_tail, iov, iovcnt);
	if (err)
		return err;
	err = wire_flush(w->fd, &w->out_head, &w->out_tail);
	if (err == -EAGAIN) {
		event_add(w->write_ev, NULL);
		return 0;
	}
	return err;
}

/* Take W's socket out of its lane's loop and close it. On W's lane only
 * (lane.c says why). */
static void worker_detach(struct pool_worker *w)
{
	if (w->read_ev)
		event_del(w->read_ev);
	if (w->write_ev)
		event_del(w->write_ev);
	if (w->fd >= 0)
		close(w->fd);
	w->fd = -1;
}

static void worker_write_cb(int fd, short what, void *arg)
{
	struct pool_worker *w = arg;
	struct pool *pool = w->pool;
	int err;

	(void)fd;
	(void)what;
	pool_enter(pool, w->lane, true);
	if (w->state == WORKER_CLOSED) {
		worker_detach(w);
		goto out;
	}
	err = wire_flush(w->fd, &w->out_head, &w->out_tail);
	if (err == -EAGAIN)
		goto out;
	event_del(w->write_ev);
	if (err) {
		supervise_lost(w, "send-failed");
		dispatch_run(pool);
	}
out:
	pool_leave(pool);
}

/* ---- counting ----------------------------------------------------------- */

static int start_wanted_count(const struct pool *pool)
{
	int n = 0;

	for (int i = 0; i < SPAWN_REASONS; i++)
		n += pool->start_wanted[i];
	return n;
}

static bool worker_live(const struct pool *pool, const struct pool_worker *w)
{
	return w->generation == pool->generation &&
	       (w->state == WORKER_STARTING || w->state == WORKER_READY);
}

int supervise_live_count(const struct pool *pool)
{
	int n = start_wanted_count(pool);

	for (const struct pool_worker *w = pool->workers; w; w = w->next)
		n += worker_live(pool, w);
	return n;
}

static int starting_count(const struct pool *pool)
{
	int n = start_wanted_count(pool);

	for (const struct pool_worker *w = pool->workers; w; w = w->next)
		n += w->generation == pool->generation &&
		     w->state == WORKER_STARTING;
	return n;
}

static int pool_min(const struct pool *pool)
{
	return pool->rules->has_middleware ? pool->rules->python.workers_min
					   : 0;
}

/* Tell the observer (the sluice_workers map) what W is now. */
void supervise_publish(struct pool_worker *w, bool gone)
{
	struct pool *pool = w->pool;
	int state = w->state == WORKER_STARTING ? 0 : w->ncalls ? 2 : 1;

	if (!pool->watch_fn)
		return;
	pool->watch_fn(pool->watch_arg, w->pid, gone ? -1 : state,
		       w->calls ? w->calls->papi->name : NULL, w->served);
}

/* ---- timers ------------------------------------------------------------- */

void supervise_timer_arm(struct pool_worker *w)
{
	int64_t due = 0;

	if (!w->timer_ev)
		return;
	switch (w->state) {
	case WORKER_STARTING:
		due = w->started_ms + POOL_START_TIMEOUT;
		break;
	case WORKER_READY:
	case WORKER_DRAINING:
		due = dispatch_next_deadline(w);
		break;
	case WORKER_CLOSED:
		due = w->kill_signal == SIGKILL
			  ? 0
			  : w->closed_ms + POOL_CLOSE_GRACE_MS;
		break;
	}
	pool_timer_at(w->timer_ev, &w->timer_due_ms, due);
}

static void worker_timer_cb(int fd, short what, void *arg)
{
	struct pool_worker *w = arg;
	struct pool *pool = w->pool;
	int64_t now = now_ms();

	(void)fd;
	(void)what;
	pool_enter(pool, w->lane, true);
	if (w->reaped)
		goto out; /* its pid may be another process's now */
	w->timer_due_ms = 0;
	switch (w->state) {
	case WORKER_STARTING:
		if (now >= w->started_ms + POOL_START_TIMEOUT)
			supervise_lost(w, "start-timeout");
		break;
	case WORKER_READY:
	case WORKER_DRAINING:
		dispatch_expire(w, now);
		supervise_settle(w);
		break;
	case WORKER_CLOSED:
		if (now >= w->closed_ms + POOL_CLOSE_GRACE_MS &&
		    w->kill_signal != SIGKILL) {
			log_warn("worker still running after close, killing "
				 "pid=%d",
				 w->pid);
			kill(w->pid, SIGKILL);
			w->kill_signal = SIGKILL;
		}
		break;
	}
	supervise_timer_arm(w);
	dispatch_run(pool);
out:
	pool_leave(pool);
}

/* ---- spawn -------------------------------------------------------------- */

static void worker_read_cb(int fd, short what, void *arg);
static long worker_rss_kb(pid_t pid);

/* Free W: on its lane's thread once it has events (pool_release). */
void supervise_free(struct pool_worker *w)
{
	if (w->read_ev)
		event_free(w->read_ev);
	if (w->write_ev)
		event_free(w->write_ev);
	if (w->timer_ev)
		event_free(w->timer_ev);
	if (w->fd >= 0)
		close(w->fd);
	wire_out_free(&w->out_head, &w->out_tail);
	wire_in_reset(&w->in);
	redis_forget(w);
	free(w->async_api);
	if (w->rules)
		rules_unref(w->rules);
	free(w);
}

static int worker_send_init(struct pool_worker *w)
{
	msgpack_sbuffer sb;
	struct iovec iov;
	int err;

	/* Limits counted in memory may come with the result when no hook
	 * could see the difference; Redis is only reached from here. */
	err = wire_encode_init(w->rules, false, !w->pool->redis, &sb);
	if (err)
		return err;
	iov.iov_base = sb.data;
	iov.iov_len = sb.size;
	err = worker_send(w, &iov, 1);
	msgpack_sbuffer_destroy(&sb);
	return err;
}

static int worker_events_new(struct pool_worker *w)
{
	struct event_base *base = w->lane->base;

	w->read_ev =
	    event_new(base, w->fd, EV_READ | EV_PERSIST, worker_read_cb, w);
	w->write_ev =
	    event_new(base, w->fd, EV_WRITE | EV_PERSIST, worker_write_cb, w);
	w->timer_ev = evtimer_new(base, worker_timer_cb, w);
	if (!w->read_ev || !w->write_ev || !w->timer_ev)
		return -ENOMEM;
	return event_add(w->read_ev, NULL) ? -EINVAL : 0;
}

static void note_death(struct pool *pool)
{
	int64_t delay = 0;

	pool->crash_streak++;
	if (pool->crash_streak > 1) {
		int shift = pool->crash_streak - 2;

		delay = shift > 10 ? BACKOFF_MAX_MS
				   : (int64_t)BACKOFF_FIRST_MS << shift;
		if (delay > BACKOFF_MAX_MS)
			delay = BACKOFF_MAX_MS;
	}
	pool->next_spawn_ms = now_ms() + delay;
	if (delay)
		log_warn("worker respawn backoff_ms=%lld deaths_in_a_row=%d",
			 (long long)delay, pool->crash_streak);
}

static const char *const spawn_reason_name[SPAWN_REASONS] = {
    [SPAWN_START] = "start",
    [SPAWN_RESPAWN] = "respawn",
    [SPAWN_RELOAD] = "reload",
    [SPAWN_GROW] = "grow",
};

/* Ask the main thread for one more worker of the current generation. */
static void spawn_request(struct pool *pool, enum spawn_reason why)
{
	pool->start_wanted[why]++;
	event_active(pool->start_ev, EV_TIMEOUT, 1);
}

/* W's process runs: make W a worker of the current generation, on a lane,
 * and send it the rules. */
static void spawn_register(struct pool *pool, struct pool_worker *w,
			   enum spawn_reason why)
{
	int err;

	w->lane = pool_lane_next(pool);
	w->generation = pool->generation;
	w->rules = rules_ref(pool->rules);
	w->next = pool->workers;
	pool->workers = w;
	pool->spawned++;
	log_info("worker spawned pid=%d generation=%u reason=%s", w->pid,
		 w->generation, spawn_reason_name[why]);
	supervise_publish(w, false);

	err = worker_events_new(w);
	if (!err)
		err = worker_send_init(w);
	if (err) {
		supervise_lost(w, "init-failed");
		return;
	}
	supervise_timer_arm(w);
}

/* A worker process and its W, not in the pool yet (so no lock is needed).
 * Returns 0 or -errno. */
static int spawn_process(struct pool *pool, struct pool_worker **wp)
{
	struct pool_worker *w = calloc(1, sizeof(*w));
	int err;

	*wp = NULL;
	if (!w)
		return -ENOMEM;
	w->pool = pool;
	w->fd = -1;
	w->started_ms = now_ms();
	err = worker_process_start(pool->worker_path, pool->hooks_dir, &w->pid,
				   &w->fd);
	if (err) {
		supervise_free(w);
		return err;
	}
	fcntl(w->fd, F_SETFL, fcntl(w->fd, F_GETFL) | O_NONBLOCK);
	*wp = w;
	return 0;
}

/* Start the requested workers (spawn_request), one at a time, on the main
 * thread. Each process is created without the lock: posix_spawn() holds
 * this thread until the child has run exec, which takes milliseconds when
 * the CPUs are busy. A request stays counted until its worker is
 * registered, so no thread asks for it twice. A failed start drops the
 * rest: the backoff decides when supervise_ensure_min() asks again. */
void supervise_start_wanted(struct pool *pool)
{
	pool_enter(pool, NULL, false);
	while (!pool->stopping && start_wanted_count(pool)) {
		enum spawn_reason why = SPAWN_START;
		struct pool_worker *w;
		int err;

		while (!pool->start_wanted[why])
			why++;
		pool_leave(pool);
		err = spawn_process(pool, &w);
		pool_enter(pool, NULL, false);
		pool->start_wanted[why]--;
		if (!err) {
			spawn_register(pool, w, why);
			continue;
		}
		log_error("worker spawn failed path=%s: %s", pool->worker_path,
			  strerror(-err));
		memset(pool->start_wanted, 0, sizeof(pool->start_wanted));
		note_death(pool);
	}
	dispatch_run(pool);
	pool_leave(pool);
}

void supervise_start_cb(int fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	supervise_start_wanted(arg);
}

/* Spawning is allowed now, or the spawn timer is armed for when it is. */
static bool spawn_allowed(struct pool *pool)
{
	int64_t wait = pool->next_spawn_ms - now_ms();
	struct timeval tv;

	if (pool->stopping)
		return false;
	if (wait <= 0)
		return true;
	if (!evtimer_pending(pool->spawn_ev, NULL)) {
		tv.tv_sec = wait / 1000;
		tv.tv_usec = (wait % 1000) * 1000;
		evtimer_add(pool->spawn_ev, &tv);
	}
	return false;
}

void supervise_ensure_min(struct pool *pool)
{
	int live = supervise_live_count(pool);

	while (live < pool_min(pool) && spawn_allowed(pool)) {
		spawn_request(pool, pool->gen_ready	   ? SPAWN_RESPAWN
				    : pool->generation > 1 ? SPAWN_RELOAD
							   : SPAWN_START);
		live++;
	}
}

/* WAITING more workers would take calls that wait now: start as many as
 * are not already starting, up to workers.max. Past one worker, growth
 * waits until this generation has said which modules import (and which
 * APIs are async).
 *
 * Starting an interpreter costs about 100 ms of CPU. Growth has at most
 * one worker fewer than there are CPUs starting at a time (one on a 2-CPU
 * machine), so that a burst of blocked calls leaves a CPU to the front
 * threads and the plain APIs they serve; the next starts when one is
 * ready. */
void supervise_grow(struct pool *pool, int waiting)
{
	int live, starting;

	if (!waiting)
		return;
	live = supervise_live_count(pool);
	starting = starting_count(pool);
	if (!pool->gen_status) {
		/* workers.min 0: the first call starts the first worker. */
		if (live == 0 && pool->rules->python.workers_max > 0 &&
		    spawn_allowed(pool))
			spawn_request(pool, SPAWN_GROW);
		return;
	}
	while (waiting > starting && starting < pool->grow_at_once &&
	       live < pool->rules->python.workers_max && spawn_allowed(pool)) {
		spawn_request(pool, SPAWN_GROW);
		starting++;
		live++;
	}
}

/* Look again at AT_MS (when a waiting call becomes old enough to count
 * for growth); 0: no such call. */
void supervise_grow_timer(struct pool *pool, int64_t at_ms)
{
	pool_timer_at(pool->grow_ev, &pool->grow_ms, at_ms);
}

void supervise_spawn_cb(int fd, short what, void *arg)
{
	struct pool *pool = arg;

	(void)fd;
	(void)what;
	pool_enter(pool, NULL, false);
	pool->grow_ms = 0;
	supervise_ensure_min(pool);
	dispatch_run(pool);
	pool_leave(pool);
}

/* ---- closing and killing ------------------------------------------------ */

/* Close W's socket: the worker reads end-of-file and exits; SIGCHLD tells
 * us when. Calls it still holds fail. Off W's lane, the socket is only shut
 * down here, and W's read callback detaches it on its own thread. */
void supervise_close(struct pool_worker *w, const char *reason)
{
	struct pool_call *calls = w->calls;
	enum pool_result result =
	    w->pool->stopping ? POOL_SHUTDOWN : POOL_WORKER_DIED;

	if (w->state == WORKER_CLOSED)
		return;
	w->state = WORKER_CLOSED;
	w->close_reason = reason;
	w->closed_ms = now_ms();
	if (pool_on_lane(w) || !w->read_ev) {
		worker_detach(w);
	} else {
		shutdown(w->fd, SHUT_RDWR);
		event_active(w->read_ev, EV_READ, 0);
	}
	wire_out_free(&w->out_head, &w->out_tail);
	wire_in_reset(&w->in);

	while ((calls = w->calls)) {
		char *error = NULL;

		w->failed_calls++;
		if (result == POOL_WORKER_DIED &&
		    asprintf(&error, "worker %d exited during the call",
			     w->pid) < 0)
			error = NULL;
		dispatch_complete(calls, result, error, NULL, 0);
	}
	supervise_timer_arm(w);
}

void supervise_kill(struct pool_worker *w, const char *reason)
{
	if (w->state == WORKER_CLOSED && w->kill_signal == SIGKILL)
		return;
	kill(w->pid, SIGKILL);
	w->kill_signal = SIGKILL;
	w->pool->killed++;
	log_warn("worker killed pid=%d reason=%s", w->pid, reason);
	supervise_close(w, reason);
}

/* W died, broke the protocol or could not be started: fail its calls, make
 * sure the process is gone, and count it towards the backoff. */
void supervise_lost(struct pool_worker *w, const char *why)
{
	struct pool *pool = w->pool;

	if (w->lost || w->state == WORKER_CLOSED)
		return;
	w->lost = true;
	log_debug("worker lost pid=%d why=%s calls=%d", w->pid, why, w->ncalls);
	if (!w->kill_signal) {
		kill(w->pid, SIGKILL);
		w->kill_signal = SIGKILL;
	}
	supervise_close(w, why);
	if (!pool->stopping)
		note_death(pool);
}

/* Stop giving W calls; close it once those it holds have ended. */
void supervise_drain(struct pool_worker *w, const char *reason)
{
	if (w->state == WORKER_STARTING && reason) {
		supervise_close(w, reason);
		return;
	}
	if (w->state != WORKER_READY)
		return;
	w->state = WORKER_DRAINING;
	w->drain_reason = reason;
	supervise_settle(w);
	supervise_ensure_min(w->pool);
}

/* After a call left W: act on what W has become. */
void supervise_settle(struct pool_worker *w)
{
	if (w->ncalls || w->state == WORKER_CLOSED)
		return;
	w->idle_since_ms = now_ms();
	if (w->timed_out) {
		supervise_kill(w, "deadline");
		supervise_ensure_min(w->pool);
	} else if (w->state == WORKER_DRAINING) {
		supervise_close(w, w->drain_reason);
	}
}

/* ---- reaping ------------------------------------------------------------ */

static void describe_status(int status, char *buf, size_t len)
{
	if (WIFEXITED(status))
		snprintf(buf, len, "exit=%d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "signal=%d", WTERMSIG(status));
	else
		snprintf(buf, len, "status=0x%x", status);
}

static void worker_reaped(struct pool_worker *w, int status)
{
	char how[32];

	describe_status(status, how, sizeof(how));
	if (w->state != WORKER_CLOSED)
		supervise_lost(w, "exited");
	if (w->lost)
		log_warn("worker died pid=%d reason=%s %s calls_failed=%d "
			 "served=%llu",
			 w->pid, w->close_reason, how, w->failed_calls,
			 (unsigned long long)w->served);
	else
		log_info("worker exited pid=%d reason=%s %s served=%llu",
			 w->pid, w->close_reason, how,
			 (unsigned long long)w->served);
}

/* Reap every child that has exited. The workers are sluiced's only
 * children; anything else is an orphan sluiced adopted (it runs as PID 1
 * in a container, say: a process a hook started outlived its worker) and
 * is reaped too, so that no zombie stays. */
void supervise_reap_all(struct pool *pool)
{
	int status, err;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0 ||
	       (pid < 0 && errno == EINTR)) {
		struct pool_worker **p = &pool->workers, *w;

		if (pid < 0)
			continue;
		while (*p && (*p)->pid != pid)
			p = &(*p)->next;
		w = *p;
		if (!w) {
			log_info("reaped a process that was no worker pid=%d "
				 "(an orphan sluiced adopted)",
				 (int)pid);
			continue;
		}
		*p = w->next;
		worker_reaped(w, status);
		supervise_publish(w, true);
		w->reaped = true;
		pool_release(w);
	}
	/* No child at all: whatever is still listed was reaped elsewhere. */
	err = pid < 0 ? errno : 0;
	while (err == ECHILD && pool->workers) {
		struct pool_worker *w = pool->workers;

		pool->workers = w->next;
		worker_reaped(w, 0);
		supervise_publish(w, true);
		w->reaped = true;
		pool_release(w);
	}
}

void supervise_sigchld_cb(int fd, short what, void *arg)
{
	struct pool *pool = arg;

	(void)fd;
	(void)what;
	pool_enter(pool, NULL, false);
	supervise_reap_all(pool);
	if (!pool->stopping) {
		supervise_ensure_min(pool);
		dispatch_run(pool);
	}
	pool_leave(pool);
}

/* ---- messages from a worker --------------------------------------------- */

static void on_ready_status(struct pool_worker *w, const msgpack_object *errs)
{
	struct pool *pool = w->pool;

	pool->gen_status = true;
	for (struct pool_api *p = pool->apis; p; p = p->next) {
		if (!p->api)
			continue;
		p->status_gen = pool->generation;
		p->is_async = w->async_api && w->async_api[p->api->index];
		free(p->error);
		p->error = NULL;
	}
	if (!errs || errs->type != MSGPACK_OBJECT_MAP)
		return;
	for (uint32_t i = 0; i < errs->via.map.size; i++) {
		char *name = wire_strdup(&errs->via.map.ptr[i].key);
		char *tb = wire_strdup(&errs->via.map.ptr[i].val);
		struct pool_api *papi = name ? pool_api_find(pool, name) : NULL;
		char esc[512];

		/* The worker logs the whole traceback itself (a "log"
		 * message); this line says what sluiced does about it. */
		if (papi && tb) {
			papi->error = wire_last_line(tb);
			wire_escape(papi->error, strlen(papi->error), esc,
				    sizeof(esc));
			log_error("hook import failed, API answers 503 api=%s "
				  "worker=%d error=\"%s\"",
				  papi->name, w->pid, esc);
			dispatch_fail_queue(papi, POOL_UNAVAILABLE,
					    papi->error);
		}
		free(name);
		free(tb);
	}
}

static void on_ready(struct pool_worker *w, const msgpack_object *msg)
{
	struct pool *pool = w->pool;
	const msgpack_object *async = msg_get(msg, "async_apis");
	const msgpack_object *errs = msg_get(msg, "errors");
	int nasync = 0;

	if (w->state != WORKER_STARTING)
		return;
	w->async_api = calloc(w->rules->api_count + 1, sizeof(bool));
	if (w->async_api && async && async->type == MSGPACK_OBJECT_ARRAY) {
		for (uint32_t i = 0; i < async->via.array.size; i++) {
			char *name = wire_strdup(&async->via.array.ptr[i]);
			const struct rules_api *api =
			    name ? rules_find_api(w->rules, name) : NULL;

			if (api) {
				w->async_api[api->index] = true;
				nasync++;
			}
			free(name);
		}
	}
	w->state = WORKER_READY;
	w->idle_since_ms = now_ms();
	w->rss_kb = worker_rss_kb(w->pid);
	log_info("worker ready pid=%d generation=%u startup_ms=%lld "
		 "async_apis=%d import_errors=%u",
		 w->pid, w->generation,
		 (long long)(w->idle_since_ms - w->started_ms), nasync,
		 errs && errs->type == MSGPACK_OBJECT_MAP ? errs->via.map.size
							  : 0);

	if (w->generation == pool->generation && !pool->gen_status)
		on_ready_status(w, errs);
	if (w->generation == pool->generation && !pool->gen_ready) {
		pool->gen_ready = true;
		pool_retire_old(pool);
	} else if (w->generation != pool->generation && pool->gen_ready) {
		supervise_drain(w, "reload");
	}
	supervise_timer_arm(w);
	supervise_publish(w, false);
}

static void on_log(struct pool_worker *w, const msgpack_object *msg)
{
	char *level = wire_strdup(msg_get(msg, "level"));
	char *api = wire_strdup(msg_get(msg, "api"));
	const msgpack_object *text = msg_get(msg, "msg");
	int lvl = level ? log_level_parse(level) : -1;
	char esc[1800];

	if (lvl < 0)
		lvl = LOG_INFO;
	if (text && text->type == MSGPACK_OBJECT_STR)
		wire_escape(text->via.str.ptr, text->via.str.size, esc,
			    sizeof(esc));
	else
		esc[0] = '\0';
	if ((enum log_level)lvl <= log_threshold)
		log_write(lvl, "api=%s worker=%d msg=\"%s\"", api ? api : "-",
			  w->pid, esc);
	free(level);
	free(api);
}

static void on_kv_set(struct pool_worker *w, const msgpack_object *msg)
{
	const char *key, *value;
	size_t klen, vlen;

	if (!msg_bytes(msg_get(msg, "key"), &key, &klen))
		return;
	if (!msg_bytes(msg_get(msg, "value"), &value, &vlen)) {
		value = "";
		vlen = 0;
	}
	if (w->pool->redis)
		redis_set(w, key, klen, value, vlen,
			  wire_int(msg_get(msg, "ttl"), 0));
	else
		kv_set(w->pool->kv, key, klen, value, vlen,
		       wire_int(msg_get(msg, "ttl"), 0));
}

/* Send W the answer encoded in SB, and destroy SB. True when W broke on
 * it and was given up (its calls fail: run the dispatch again). */
static bool worker_answer(struct pool_worker *w, msgpack_sbuffer *sb)
{
	struct iovec iov = {sb->data, sb->size};
	bool lost = false;

	if (w->state != WORKER_CLOSED && worker_send(w, &iov, 1)) {
		supervise_lost(w, "send-failed");
		lost = true;
	}
	msgpack_sbuffer_destroy(sb);
	return lost;
}

/* Answer W's get number ID with VALUE (NULL: none); see worker_answer. */
bool supervise_kv_answer(struct pool_worker *w, uint64_t id, const void *value,
			 size_t len)
{
	msgpack_sbuffer sb;

	return !wire_encode_kv(&sb, id, value, len) && worker_answer(w, &sb);
}

/* Answer W's limit question ID with V; see worker_answer. */
bool supervise_lim_answer(struct pool_worker *w, uint64_t id,
			  const struct pool_limit_verdict *v)
{
	msgpack_sbuffer sb;

	return !wire_encode_lim(&sb, id, v) && worker_answer(w, &sb);
}

static void on_kv_get(struct pool_worker *w, const msgpack_object *msg)
{
	uint64_t id = (uint64_t)wire_int(msg_get(msg, "id"), 0);
	const void *value = NULL;
	const char *key;
	size_t klen, vlen = 0;

	if (!msg_bytes(msg_get(msg, "key"), &key, &klen)) {
		supervise_kv_answer(w, id, NULL, 0);
	} else if (w->pool->redis) {
		redis_get(w, id, key, klen);
	} else {
		value = kv_get(w->pool->kv, key, klen, &vlen);
		supervise_kv_answer(w, id, value, vlen);
	}
}

/* The worker asks whether its request may go on after auth_check. The
 * front's limiter counts the rate and the quota; with the store in Redis,
 * the quota is counted there (it must outlive sluiced and be shared by
 * every gateway), and with shared_rates the rate too. */
static void on_limit(struct pool_worker *w, const msgpack_object *msg)
{
	struct pool *pool = w->pool;
	struct pool_limit_verdict v = {"pass", -1, -1, -1, 0, 0, 0, 0};
	uint64_t id = (uint64_t)wire_int(msg_get(msg, "id"), 0);
	char *api = wire_strdup(msg_get(msg, "api"));
	bool rate_in_redis = redis_counts_rates(pool);
	const char *key;
	size_t klen;

	if (pool->limit_fn && api)
		pool->limit_fn(pool->limit_arg, api, msg, !rate_in_redis,
			       !pool->redis, &v);
	if (!rate_in_redis)
		v.rate = v.per = 0; /* counted already */
	if (pool->redis && api && !strcmp(v.verdict, "pass") &&
	    (v.quota_max > 0 || (v.rate > 0 && v.per > 0)) &&
	    msg_bytes(msg_get(msg, "key"), &key, &klen))
		redis_limit(w, id, api, key, klen, &v);
	else
		supervise_lim_answer(w, id, &v);
	free(api);
}

static void on_message(struct pool_worker *w, const char *raw, size_t len)
{
	msgpack_unpacked up;
	size_t off = 0;
	const msgpack_object *t;

	msgpack_unpacked_init(&up);
	if (msgpack_unpack_next(&up, raw, len, &off) !=
		MSGPACK_UNPACK_SUCCESS ||
	    up.data.type != MSGPACK_OBJECT_MAP) {
		log_error("worker sent a malformed message pid=%d bytes=%zu",
			  w->pid, len);
		supervise_lost(w, "protocol-error");
		goto done;
	}
	t = msg_get(&up.data, "t");
	if (msg_is(t, "result"))
		dispatch_on_result(w, &up.data, raw, len);
	else if (msg_is(t, "log"))
		on_log(w, &up.data);
	else if (msg_is(t, "kv_get"))
		on_kv_get(w, &up.data);
	else if (msg_is(t, "kv_set"))
		on_kv_set(w, &up.data);
	else if (msg_is(t, "limit"))
		on_limit(w, &up.data);
	else if (msg_is(t, "ready"))
		on_ready(w, &up.data);
	else
		log_warn("worker sent an unknown message pid=%d", w->pid);
done:
	msgpack_unpacked_destroy(&up);
}

static void worker_read_cb(int fd, short what, void *arg)
{
	struct pool_worker *w = arg;
	struct pool *pool = w->pool;

	(void)what;
	pool_enter(pool, w->lane, true);
	if (w->state == WORKER_CLOSED) {
		worker_detach(w); /* closed from another thread */
		goto out;
	}
	for (int i = 0; i < READ_BATCH && w->state != WORKER_CLOSED; i++) {
		const char *msg;
		size_t len;
		int r = wire_recv(fd, &w->in, pool->rxbuf, pool->msg_max, &msg,
				  &len);

		if (r == -EAGAIN)
			break;
		if (r < 0) {
			if (r != -EPIPE && r != -ECONNRESET)
				log_error("worker socket pid=%d: %s", w->pid,
					  strerror(-r));
			supervise_lost(w, r == -EPIPE ? "end-of-stream"
						      : "receive-failed");
			break;
		}
		if (r == 0)
			continue;
		on_message(w, msg, len);
		if (w->in.len)
			wire_in_reset(&w->in);
		/* With no call left on it, a worker has nothing more to say
		 * but logs, which wake this callback again: reading on to
		 * EAGAIN would cost every sync call one more syscall. */
		if (w->ncalls == 0)
			break;
	}
	dispatch_run(pool);
out:
	pool_leave(pool);
}

/* ---- the tick: idle shrink, RSS, kv sweep ------------------------------- */

static long worker_rss_kb(pid_t pid)
{
	char path[64];
	long size, resident;
	FILE *f;
	int n;

	snprintf(path, sizeof(path), "/proc/%d/statm", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	n = fscanf(f, "%ld %ld", &size, &resident);
	fclose(f);
	if (n != 2)
		return -1;
	return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static void tick_worker(struct pool_worker *w, int64_t now, int *live)
{
	struct pool *pool = w->pool;
	const struct rules_python *py = &w->rules->python;

	if (w->state != WORKER_READY && w->state != WORKER_DRAINING)
		return;
	w->rss_kb = worker_rss_kb(w->pid);
	if (w->state != WORKER_READY)
		return;
	if (py->max_rss_mb > 0 && w->rss_kb > (long)py->max_rss_mb * 1024) {
		pool->recycled++;
		log_info("worker recycling pid=%d reason=max_rss rss_mb=%ld "
			 "limit_mb=%d",
			 w->pid, w->rss_kb / 1024, py->max_rss_mb);
		supervise_drain(w, "max_rss");
		return;
	}
	if (w->ncalls == 0 && w->generation == pool->generation &&
	    *live > pool_min(pool) &&
	    now - w->idle_since_ms >= (int64_t)py->workers_idle_s * 1000) {
		(*live)--;
		supervise_close(w, "idle");
	}
}

void supervise_tick_cb(int fd, short what, void *arg)
{
	struct pool *pool = arg;
	int64_t now = now_ms();
	int live;

	(void)fd;
	(void)what;
	pool_enter(pool, NULL, false);
	live = supervise_live_count(pool);
	supervise_reap_all(pool);
	for (struct pool_worker *w = pool->workers; w; w = w->next) {
		tick_worker(w, now, &live);
		if (w->state != WORKER_CLOSED)
			supervise_publish(w, false);
	}
	kv_sweep(pool->kv);
	supervise_ensure_min(pool);
	dispatch_run(pool);
	pool_leave(pool);
}
