/* Body relays: exactly LEN bytes from one socket to another by splice(2)
 * through a pipe, for large Content-Length bodies on per-request routes.
 *
 * The same pump as a pipe relay, bounded by what is left to move: it never
 * reads a byte past the body (the next request or response on a keep-alive
 * connection stays in the socket for the front). The sockets stay the
 * caller's: done or abort closes neither.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/log.h"
#include "front/relay.h"
#include "front/relay_int.h"

#define SPLICE_FLAGS (SPLICE_F_NONBLOCK | SPLICE_F_MOVE)

struct relay_body {
	int from, to;
	int pipe_rd, pipe_wr;
	size_t pipe_cap, in_pipe;
	uint64_t left;	/* still to read from `from` */
	uint64_t moved; /* written to `to` */
	uint64_t len;
	struct event *ev_read, *ev_write;
	relay_body_done_fn done;
	void *arg;
};

static void body_free(struct relay_body *body)
{
	if (body->ev_read)
		event_free(body->ev_read);
	if (body->ev_write)
		event_free(body->ev_write);
	if (body->pipe_rd >= 0)
		close(body->pipe_rd);
	if (body->pipe_wr >= 0)
		close(body->pipe_wr);
	free(body);
}

static void body_end(struct relay_body *body, int err)
{
	relay_body_done_fn done = body->done;
	void *arg = body->arg;

	if (err && err != -EPIPE && err != -ECONNRESET)
		log_warn("relay body failed from=%d to=%d moved=%" PRIu64
			 " len=%" PRIu64 " error=\"%s\"",
			 body->from, body->to, body->moved, body->len,
			 strerror(-err));
	log_debug("relay body stop from=%d to=%d moved=%" PRIu64 " len=%" PRIu64
		  " error=\"%s\"",
		  body->from, body->to, body->moved, body->len,
		  err ? strerror(-err) : "none");
	body_free(body);
	done(arg, err);
}

/* Returns 1 when the body is complete, 0 when it waits (events armed),
 * -errno on failure. */
static int body_move(struct relay_body *body)
{
	size_t moved = 0, want;
	ssize_t n;

	for (;;) {
		if (body->in_pipe > 0) {
			n = splice(body->pipe_rd, NULL, body->to, NULL,
				   body->in_pipe, SPLICE_FLAGS);
			if (n < 0 && errno == EAGAIN) {
				event_del(body->ev_read);
				return event_add(body->ev_write, NULL) ? -ENOMEM
								       : 0;
			}
			if (n < 0)
				return -errno;
			body->in_pipe -= n;
			body->moved += n;
			moved += n;
			continue;
		}
		if (body->left == 0)
			return 1;
		if (moved >= RELAY_BUDGET)
			break;
		want = body->pipe_cap;
		if (want > body->left)
			want = body->left;
		n = splice(body->from, NULL, body->pipe_wr, NULL, want,
			   SPLICE_FLAGS);
		if (n == 0)
			return -EPIPE; /* the sender closed inside the body */
		if (n < 0 && errno == EAGAIN && body->in_pipe == 0)
			break;
		if (n < 0 && errno != EAGAIN)
			return -errno;
		if (n > 0) {
			body->in_pipe += n;
			body->left -= n;
		}
	}
	event_del(body->ev_write);
	return event_add(body->ev_read, NULL) ? -ENOMEM : 0;
}

static void body_event_cb(evutil_socket_t fd, short what, void *arg)
{
	struct relay_body *body = arg;
	int ret;

	(void)fd;
	(void)what;
	ret = body_move(body);
	if (ret != 0)
		body_end(body, ret > 0 ? 0 : ret);
}

struct relay_body *relay_body_start(struct event_base *base, int from_fd,
				    int to_fd, uint64_t len,
				    relay_body_done_fn done, void *arg)
{
	struct relay_body *body = calloc(1, sizeof(*body));
	int fds[2], cap;

	if (!body)
		return NULL;
	body->from = from_fd;
	body->to = to_fd;
	body->left = body->len = len;
	body->done = done;
	body->arg = arg;
	body->pipe_rd = body->pipe_wr = -1;
	/* splice(2) honours only the socket's own O_NONBLOCK. */
	if (fcntl(from_fd, F_SETFL, fcntl(from_fd, F_GETFL) | O_NONBLOCK) < 0 ||
	    fcntl(to_fd, F_SETFL, fcntl(to_fd, F_GETFL) | O_NONBLOCK) < 0)
		goto fail;
	if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
		goto fail;
	body->pipe_rd = fds[0];
	body->pipe_wr = fds[1];
	cap = fcntl(fds[1], F_GETPIPE_SZ);
	body->pipe_cap = cap > 0 ? (size_t)cap : 65536;

	body->ev_read =
	    event_new(base, from_fd, EV_READ | EV_PERSIST, body_event_cb, body);
	body->ev_write =
	    event_new(base, to_fd, EV_WRITE | EV_PERSIST, body_event_cb, body);
	if (!body->ev_read || !body->ev_write) {
		errno = ENOMEM;
		goto fail;
	}
	log_debug("relay body start from=%d to=%d len=%" PRIu64, from_fd, to_fd,
		  len);
	/* First move from the loop: done never runs inside this call. */
	event_active(body->ev_read, EV_READ, 0);
	return body;

fail:
	cap = errno;
	body_free(body);
	errno = cap;
	return NULL;
}

void relay_body_abort(struct relay_body *body)
{
	if (body)
		body_free(body);
}
