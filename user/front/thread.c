/* Front threads: one event loop each, with its own SO_REUSEPORT listening
 * sockets (the kernel spreads connections over them), client connections
 * and upstream keep-alive pool.
 *
 * The main thread talks to a front thread only through `control`, an event
 * it activates from outside: new rules to swap in, or drain and stop.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "common/log.h"
#include "front/conn.h"
#include "front/handoff.h"
#include "front/sluiced.h"
#include "front/stream.h"

/* Connections the kernel completes for a listening socket before sluiced
 * accepts them (capped by net.core.somaxconn). A burst of new clients past
 * it has SYNs dropped, and each of those clients waits a 1 s retransmit. */
#define LISTEN_BACKLOG 4096

/* A listening socket for ADDR, shared with the other threads' sockets for
 * the same address through SO_REUSEPORT. */
static int listen_socket(const struct rules_addr *addr)
{
	int one = 1;
	int fd = socket(addr->sa.ss_family,
			SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int err;

	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (addr->sa.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&addr->sa, addr->sa_len) < 0 ||
	    listen(fd, LISTEN_BACKLOG) < 0) {
		err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

/* SO_REUSEPORT would let a second gateway on the same port silently take
 * half the connections: first make sure nobody else holds the address. */
static int listen_probe(const struct rules_addr *addr)
{
	int one = 1;
	int fd = socket(addr->sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int err = 0;

	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (addr->sa.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&addr->sa, addr->sa_len) < 0)
		err = -errno;
	close(fd);
	return err;
}

static void accept_cb(struct evconnlistener *ev, evutil_socket_t fd,
		      struct sockaddr *sa, int sa_len, void *arg)
{
	struct front_listener *l = arg;
	struct front_thread *t = l->thread;
	int one = 1;

	(void)ev;
	(void)sa_len;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	conn_accept(t, fd, sa, l->addr);
}

static void accept_error_cb(struct evconnlistener *ev, void *arg)
{
	struct front_listener *l = arg;
	int err = EVUTIL_SOCKET_ERROR();

	(void)ev;
	/* EMFILE and friends: say so, and keep the listener; libevent
	 * retries on the next readiness. */
	log_warn("accept failed listener=%s thread=%d: %s", l->addr,
		 l->thread->id, strerror(err));
}

/* Every address this gateway listens on: shared ones, then APIs' own. */
static size_t collect_addrs(const struct rules *rules,
			    const struct rules_addr **out, size_t max)
{
	size_t n = 0;

	for (size_t i = 0; i < rules->listen_count && n < max; i++)
		out[n++] = &rules->listen[i];
	for (size_t a = 0; a < rules->api_count; a++) {
		const struct rules_api *api = &rules->apis[a];

		for (size_t i = 0; i < api->listen_count && n < max; i++) {
			bool seen = false;

			for (size_t k = 0; k < n; k++)
				seen |= strcmp(out[k]->text,
					       api->listen[i].text) == 0;
			if (!seen)
				out[n++] = &api->listen[i];
		}
	}
	return n;
}

static int thread_open_listeners(struct front_thread *t)
{
	const struct rules_addr *addrs[256];
	size_t n = collect_addrs(t->rules, addrs, 256);

	t->listeners = calloc(n, sizeof(*t->listeners));
	if (!t->listeners)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		struct front_listener *l = &t->listeners[i];
		int fd = t->id == 0 ? listen_probe(addrs[i]) : 0;

		if (fd == 0)
			fd = listen_socket(addrs[i]);

		if (fd < 0) {
			log_error("cannot listen addr=%s: %s", addrs[i]->text,
				  strerror(-fd));
			return fd;
		}
		l->fd = fd;
		l->thread = t;
		snprintf(l->addr, sizeof(l->addr), "%s", addrs[i]->text);
		t->listener_count++;
	}
	return 0;
}

static void thread_close_listeners(struct front_thread *t)
{
	for (size_t i = 0; i < t->listener_count; i++) {
		struct front_listener *l = &t->listeners[i];

		if (l->ev)
			evconnlistener_free(l->ev); /* closes the socket */
		else if (l->fd >= 0)
			close(l->fd);
		l->ev = NULL;
		l->fd = -1;
		l->closed = true;
	}
}

void front_thread_check_drained(struct front_thread *t)
{
	if (sluiced_draining(t->d) && t->conn_count == 0)
		event_base_loopexit(t->base, NULL);
}

/* Connections handed to relays carry requests the front cannot see: give
 * them a second to finish what is in flight, then close them. */
static void drain_handoffs_cb(evutil_socket_t fd, short what, void *arg)
{
	struct front_thread *t = arg;

	(void)fd;
	(void)what;
	handoff_thread_stop(t);
	front_thread_check_drained(t);
}

static void control_cb(evutil_socket_t fd, short what, void *arg)
{
	struct front_thread *t = arg;
	struct rules *next;
	struct conn *c, *c_next;

	(void)fd;
	(void)what;
	pthread_mutex_lock(&t->d->lock);
	next = t->next_rules;
	t->next_rules = NULL;
	pthread_mutex_unlock(&t->d->lock);
	if (next) {
		rules_unref(t->rules);
		t->rules = next;
	}
	if (sluiced_stopping(t->d)) {
		event_base_loopbreak(t->base);
		return;
	}
	if (sluiced_draining(t->d) && t->listener_count &&
	    !t->listeners[0].closed) {
		struct timeval grace = {1, 0};

		event_base_once(t->base, -1, EV_TIMEOUT, drain_handoffs_cb, t,
				&grace);
	}
	if (sluiced_draining(t->d)) {
		thread_close_listeners(t);
		upstream_pool_clear(t);
		for (c = LIST_FIRST(&t->conns); c; c = c_next) {
			c_next = LIST_NEXT(c, link);
			conn_drain(c);
		}
		front_thread_check_drained(t);
	}
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct front_thread *t = arg;

	(void)fd;
	(void)what;
	upstream_pool_sweep(t);
	front_thread_check_drained(t);
}

static void *thread_main(void *arg)
{
	struct front_thread *t = arg;
	struct timeval second = {1, 0};
	struct event *tick;
	struct conn *c, *next;

	tick = event_new(t->base, -1, EV_PERSIST, tick_cb, t);
	event_add(tick, &second);
	event_base_dispatch(t->base);

	/* Stopped: whatever is left goes now. A connection waiting for a
	 * pool call only closes its socket; front_threads_free() runs the
	 * call's completion, which frees the rest. */
	for (c = LIST_FIRST(&t->conns); c; c = next) {
		next = LIST_NEXT(c, link);
		c->parsing = false;
		conn_free(c);
	}
	handoff_thread_stop(t);
	upstream_pool_clear(t);
	thread_close_listeners(t);
	event_free(tick);
	return NULL;
}

int front_threads_start(struct sluiced *d)
{
	int err;

	d->threads = calloc(d->thread_count, sizeof(*d->threads));
	if (!d->threads)
		return -ENOMEM;
	for (int i = 0; i < d->thread_count; i++) {
		struct front_thread *t = &d->threads[i];

		t->id = i;
		t->d = d;
		t->rules = rules_ref(d->rules);
		LIST_INIT(&t->conns);
		LIST_INIT(&t->handoffs);
		TAILQ_INIT(&t->idle);
		t->base = event_base_new();
		if (!t->base)
			return -ENOMEM;
		t->control = event_new(t->base, -1, 0, control_cb, t);
		err = thread_open_listeners(t);
		if (err)
			return err;
	}
	return 0;
}

/* Listeners are attached only once every socket is bound (and privileges
 * are dropped), so a failure before leaves nothing accepting. */
int front_threads_run(struct sluiced *d)
{
	int err;

	for (int i = 0; i < d->thread_count; i++) {
		struct front_thread *t = &d->threads[i];

		for (size_t k = 0; k < t->listener_count; k++) {
			struct front_listener *l = &t->listeners[k];

			/* Backlog 0: the socket listens already. -1 would
			 * make libevent listen() again with 128. */
			l->ev =
			    evconnlistener_new(t->base, accept_cb, l,
					       LEV_OPT_CLOSE_ON_FREE, 0, l->fd);
			if (!l->ev)
				return -ENOMEM;
			evconnlistener_set_error_cb(l->ev, accept_error_cb);
		}
		err = pthread_create(&t->tid, NULL, thread_main, t);
		if (err)
			return -err;
		t->started = true;
	}
	return 0;
}

static void thread_poke(struct front_thread *t)
{
	event_active(t->control, EV_READ, 0);
}

void front_threads_publish(struct sluiced *d, struct rules *rules)
{
	for (int i = 0; i < d->thread_count; i++) {
		struct front_thread *t = &d->threads[i];
		struct rules *old;

		pthread_mutex_lock(&d->lock);
		old = t->next_rules;
		t->next_rules = rules_ref(rules);
		pthread_mutex_unlock(&d->lock);
		if (old)
			rules_unref(old);
		thread_poke(t);
	}
}

void front_threads_drain(struct sluiced *d)
{
	for (int i = 0; i < d->thread_count; i++)
		thread_poke(&d->threads[i]);
}

void front_threads_join(struct sluiced *d)
{
	for (int i = 0; i < d->thread_count; i++) {
		struct front_thread *t = &d->threads[i];

		if (t->started) {
			thread_poke(t);
			pthread_join(t->tid, NULL);
		}
		if (t->next_rules)
			rules_unref(t->next_rules);
		rules_unref(t->rules);
		if (t->control)
			event_free(t->control);
		free(t->listeners);
		t->listeners = NULL;
	}
}

void front_threads_free(struct sluiced *d)
{
	for (int i = 0; i < d->thread_count && d->threads; i++) {
		struct front_thread *t = &d->threads[i];

		if (!t->base)
			continue;
		/* Completions the pool delivered after the loop stopped. */
		event_base_loop(t->base, EVLOOP_NONBLOCK);
		event_base_free(t->base);
	}
	free(d->threads);
	d->threads = NULL;
}

int front_connection_count(struct sluiced *d)
{
	int n = 0;

	for (int i = 0; i < d->thread_count; i++)
		n += __atomic_load_n(&d->threads[i].conn_count,
				     __ATOMIC_RELAXED);
	return n;
}
