/* Connection relays: start, hang-up watch, finish.
 *
 * This file owns the life of a relay: it takes the two sockets, picks the
 * engine (relay_stream.c for copy and pipe, relay_sockmap.c for the kernel
 * splice), watches both sockets for an RST, and closes everything exactly
 * once. Nothing here moves bytes.
 */
#include "front/relay.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/log.h"
#include "front/relay_int.h"

enum rules_splice relay_mode_for(enum rules_splice configured,
				 const struct sbpf *bpf)
{
	/* Measured on the kernels sluice was built on (6.18): pipe moves
	 * bulk transfers 1.4-3x faster than sockmap, whose bounded credit
	 * turns a long transfer into small copies; sockmap only wins on the
	 * proxy's CPU. `auto` takes the fast, simple path; sockmap is there
	 * when asked for. */
	if (configured == RULES_SPLICE_AUTO)
		return RULES_SPLICE_PIPE;
	if (configured == RULES_SPLICE_SOCKMAP && !bpf)
		return RULES_SPLICE_PIPE;
	return configured;
}

static int socket_error(int fd)
{
	socklen_t len = sizeof(int);
	int err = 0;

	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		return errno;
	return err;
}

/* The watch reports only what epoll always reports (EPOLLERR, EPOLLHUP),
 * plus EPOLLRDHUP while a direction is spliced: a FIN is then the only sign
 * of life the relay gets from that socket. Never EPOLLIN. One-shot,
 * re-armed after each event, so a hang-up that stays true is reported
 * once. */
int relay_watch_arm(struct relay *relay, int side)
{
	struct epoll_event ev = {.events = EPOLLONESHOT, .data.u32 = side};

	if (relay->hup[side])
		return 0;
	if (relay->dir[side].state == RELAY_DIR_SPLICED && !relay->rdhup[side])
		ev.events |= EPOLLRDHUP;
	if (epoll_ctl(relay->watch_fd, EPOLL_CTL_MOD, relay->fd[side], &ev) < 0)
		return -errno;
	return 0;
}

static void relay_watch_cb(evutil_socket_t fd, short what, void *arg)
{
	struct relay *relay = arg;
	struct epoll_event evs[2];
	int n, i, side, err;

	(void)fd;
	(void)what;
	n = epoll_wait(relay->watch_fd, evs, 2, 0);
	for (i = 0; i < n; i++) {
		side = evs[i].data.u32;
		if (evs[i].events & EPOLLERR) {
			err = socket_error(relay->fd[side]);
			relay_finish(relay, -(err ? err : ECONNRESET));
			return;
		}
		if (evs[i].events & EPOLLHUP)
			relay->hup[side] = true;
		if ((evs[i].events & EPOLLRDHUP) && !relay->rdhup[side]) {
			relay->rdhup[side] = true;
			if (relay->dir[side].state == RELAY_DIR_SPLICED)
				relay_sockmap_on_rdhup(relay, side);
		}
		err = relay_watch_arm(relay, side);
		if (err < 0) {
			relay_finish(relay, err);
			return;
		}
	}
}

static int relay_watch_open(struct relay *relay)
{
	struct epoll_event ev = {.events = EPOLLONESHOT};
	int side;

	relay->watch_fd = epoll_create1(EPOLL_CLOEXEC);
	if (relay->watch_fd < 0)
		return -errno;
	for (side = 0; side < 2; side++) {
		ev.data.u32 = side;
		if (epoll_ctl(relay->watch_fd, EPOLL_CTL_ADD, relay->fd[side],
			      &ev) < 0)
			return -errno;
	}
	relay->watch_ev =
	    event_new(relay->base, relay->watch_fd, EV_READ | EV_PERSIST,
		      relay_watch_cb, relay);
	if (!relay->watch_ev || event_add(relay->watch_ev, NULL) < 0)
		return -ENOMEM;
	return 0;
}

/* Pass the FIN of dir->from on to dir->to. Returns 1 when that closed the
 * last open direction and the relay is gone, 0 otherwise, -errno when the
 * shutdown failed (the relay is gone too). */
int relay_dir_shutdown(struct relay_dir *dir)
{
	struct relay *relay = dir->relay;
	struct relay_dir *other = &relay->dir[dir == relay->dir ? 1 : 0];
	int err;

	if (shutdown(dir->to, SHUT_WR) < 0 && errno != ENOTCONN) {
		err = -errno;
		relay_finish(relay, err);
		return err;
	}
	dir->state = RELAY_DIR_DONE;
	if (other->state == RELAY_DIR_DONE) {
		relay_finish(relay, 0);
		return 1;
	}
	return 0;
}

static void relay_free(struct relay *relay)
{
	int i;

	relay_sockmap_free(relay);
	for (i = 0; i < 2; i++) {
		relay_stream_free(&relay->dir[i]);
		if (relay->dir[i].buf)
			evbuffer_free(relay->dir[i].buf);
	}
	if (relay->watch_ev)
		event_free(relay->watch_ev);
	if (relay->idle_ev)
		event_free(relay->idle_ev);
	if (relay->watch_fd >= 0)
		close(relay->watch_fd);
	free(relay);
}

/* An error closes both sockets with an RST, so neither peer mistakes a
 * broken relay for a complete, orderly stream. */
static void relay_close_sockets(struct relay *relay, bool reset)
{
	struct linger lin = {.l_onoff = 1, .l_linger = 0};
	int i;

	for (i = 0; i < 2; i++) {
		if (reset)
			setsockopt(relay->fd[i], SOL_SOCKET, SO_LINGER, &lin,
				   sizeof(lin));
		close(relay->fd[i]);
	}
}

static void relay_log_stop(const struct relay *relay, int err)
{
	const char *mode = rules_splice_name(relay->mode);

	if (err && err != -ECONNRESET && err != -EPIPE)
		log_warn("relay failed mode=%s client=%d upstream=%d "
			 "error=\"%s\"",
			 mode, relay->fd[0], relay->fd[1], strerror(-err));
	log_debug(
	    "relay stop mode=%s client=%d upstream=%d to_upstream=%" PRIu64
	    " to_client=%" PRIu64 " held=%u backlog_max=%" PRIu64
	    " error=\"%s\"",
	    mode, relay->fd[0], relay->fd[1], relay->dir[0].bytes,
	    relay->dir[1].bytes, relay->held, relay->backlog_max,
	    err ? strerror(-err) : "none");
}

void relay_finish(struct relay *relay, int err)
{
	struct relay_counts counts;
	relay_done_fn done = relay->done;
	void *arg = relay->arg;

	if (relay->finished)
		return;
	relay->finished = true;
	counts.to_upstream = relay->dir[0].bytes;
	counts.to_client = relay->dir[1].bytes;
	relay_log_stop(relay, err);
	relay_sockmap_free(relay);
	relay_close_sockets(relay, err != 0);
	relay_free(relay);
	if (done)
		done(arg, &counts);
}

static uint64_t relay_moved(const struct relay *relay)
{
	return relay->dir[0].bytes + relay->dir[1].bytes;
}

static void relay_idle_cb(evutil_socket_t fd, short what, void *arg)
{
	struct relay *relay = arg;
	uint64_t moved = relay_moved(relay);

	(void)fd;
	(void)what;
	if (moved != relay->idle_seen) {
		relay->idle_seen = moved;
		return;
	}
	log_debug("relay idle mode=%s client=%d upstream=%d: closing",
		  rules_splice_name(relay->mode), relay->fd[0], relay->fd[1]);
	relay_finish(relay, 0);
}

int relay_set_idle_timeout(struct relay *relay, int ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	if (ms <= 0)
		return 0;
	relay->idle_seen = relay_moved(relay);
	relay->idle_ev =
	    event_new(relay->base, -1, EV_PERSIST, relay_idle_cb, relay);
	if (!relay->idle_ev || event_add(relay->idle_ev, &tv) < 0)
		return -ENOMEM;
	return 0;
}

void relay_abort(struct relay *relay)
{
	if (!relay)
		return;
	relay->done = NULL;
	relay_finish(relay, 0);
}

static int set_nonblock(int fd)
{
	int flags = fcntl(fd, F_GETFL);

	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

static struct relay *relay_new(struct event_base *base, int client_fd,
			       int upstream_fd)
{
	struct relay *relay = calloc(1, sizeof(*relay));
	int i;

	if (!relay)
		return NULL;
	relay->base = base;
	relay->fd[0] = client_fd;
	relay->fd[1] = upstream_fd;
	relay->watch_fd = -1;
	for (i = 0; i < 2; i++) {
		relay->dir[i].relay = relay;
		relay->dir[i].from = relay->fd[i];
		relay->dir[i].to = relay->fd[1 - i];
		relay->dir[i].pipe_rd = relay->dir[i].pipe_wr = -1;
		relay->dir[i].buf = evbuffer_new();
		if (!relay->dir[i].buf) {
			relay_free(relay);
			return NULL;
		}
	}
	return relay;
}

static int relay_engine_start(struct relay *relay)
{
	int err, i;

	if (relay->mode == RULES_SPLICE_SOCKMAP)
		return relay_sockmap_start(relay);
	for (i = 0; i < 2; i++) {
		err = relay_stream_start(&relay->dir[i],
					 relay->mode == RULES_SPLICE_PIPE);
		if (err < 0)
			return err;
	}
	return 0;
}

struct relay *relay_start(struct event_base *base, enum rules_splice mode,
			  struct sbpf *bpf, int api_index, int client_fd,
			  int upstream_fd, struct evbuffer *pending_up,
			  struct evbuffer *pending_down, relay_done_fn done,
			  void *arg)
{
	struct relay *relay;
	int err;

	relay = relay_new(base, client_fd, upstream_fd);
	if (!relay)
		return NULL;
	relay->mode = relay_mode_for(mode, bpf);
	relay->bpf = bpf;
	relay->api_index = api_index;
	relay->done = done;
	relay->arg = arg;

	err = set_nonblock(client_fd);
	if (!err)
		err = set_nonblock(upstream_fd);
	if (!err)
		err = relay_watch_open(relay);
	if (err < 0)
		goto fail;

	/* Last, so that a failure above leaves the caller's buffers alone. */
	if (pending_up)
		evbuffer_add_buffer(relay->dir[0].buf, pending_up);
	if (pending_down)
		evbuffer_add_buffer(relay->dir[1].buf, pending_down);
	log_debug("relay start mode=%s client=%d upstream=%d api=%d "
		  "pending_up=%zu pending_down=%zu",
		  rules_splice_name(relay->mode), client_fd, upstream_fd,
		  api_index, evbuffer_get_length(relay->dir[0].buf),
		  evbuffer_get_length(relay->dir[1].buf));

	err = relay_engine_start(relay);
	if (err < 0)
		goto fail_pending;
	return relay;

fail_pending:
	if (pending_up)
		evbuffer_prepend_buffer(pending_up, relay->dir[0].buf);
	if (pending_down)
		evbuffer_prepend_buffer(pending_down, relay->dir[1].buf);
fail:
	log_warn("relay start failed mode=%s client=%d upstream=%d "
		 "error=\"%s\"",
		 rules_splice_name(relay->mode), client_fd, upstream_fd,
		 strerror(-err));
	relay_sockmap_free(relay);
	relay_free(relay);
	errno = -err;
	return NULL;
}
