#include "front/handoff.h"

#include <stdlib.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "common/log.h"
#include "front/conn.h"
#include "front/relay.h"
#include "front/route.h"
#include "front/stream.h"

/* One handed-off connection pair, kept so a stopping thread can end it. */
struct handoff {
	LIST_ENTRY(handoff) link;
	struct front_thread *t;
	struct relay *relay;
	int slot;
};

static bool handoff_eligible(const struct conn *c)
{
	const struct upconn *u = c->up;

	if (!c->api || c->api->middleware || !u || sluiced_draining(c->t->d) ||
	    !c->keep_alive || c->close_after || !c->req_done || !c->resp_done)
		return false;
	if (!llhttp_should_keep_alive((llhttp_t *)&u->parser) ||
	    evbuffer_get_length(stream_input(u->io)) > 0)
		return false;
	return c->api->splice &&
	       (route_exclusive(c->rules, c->listener) == c->api ||
		route_is_host_only(c->api));
}

static void handoff_done(void *arg, const struct relay_counts *counts)
{
	struct handoff *h = arg;
	struct front_thread *t = h->t;

	if (h->slot >= 0)
		t->stats.apis[h->slot].spliced +=
		    counts->to_upstream + counts->to_client;
	LIST_REMOVE(h, link);
	__atomic_sub_fetch(&t->conn_count, 1, __ATOMIC_RELAXED);
	free(h);
	front_thread_check_drained(t);
}

bool handoff_try(struct conn *c)
{
	struct front_thread *t = c->t;
	struct upconn *u = c->up;
	struct evbuffer *up_pending, *down_pending;
	struct handoff *h;

	if (!handoff_eligible(c))
		return false;
	h = calloc(1, sizeof(*h));
	up_pending = evbuffer_new();
	down_pending = evbuffer_new();
	if (!h || !up_pending || !down_pending)
		goto fail;

	/* What the upstream has not been sent yet and what the client
	 * pipelined go up first; what the client has not been sent yet goes
	 * down first. */
	evbuffer_add_buffer(up_pending, stream_output(u->io));
	evbuffer_add_buffer(up_pending, stream_input(c->io));
	evbuffer_add_buffer(down_pending, stream_output(c->io));
	h->t = t;
	h->slot = c->slot;
	h->relay =
	    relay_start(t->base, t->d->splice, t->d->bpf, c->api->index, c->fd,
			u->fd, up_pending, down_pending, handoff_done, h);
	if (!h->relay) {
		/* Nothing moved yet: put the bytes back and carry on in the
		 * front. */
		evbuffer_add_buffer(stream_input(c->io), up_pending);
		evbuffer_prepend_buffer(stream_output(c->io), down_pending);
		log_warn("hand-off failed api=%s mode=%d: %m; staying in the "
			 "front",
			 c->api->name, (int)t->d->splice);
		goto fail;
	}
	/* An idle handed-off connection ends like an idle one in the front
	 * (between idle_timeout_ms and twice that, checked per period). */
	relay_set_idle_timeout(h->relay, t->rules->limits.idle_timeout_ms);
	log_debug("handed off api=%s peer=%s", c->api->name, c->peer);
	LIST_INSERT_HEAD(&t->handoffs, h, link);
	/* The relay owns both sockets now: the conn and upconn go without
	 * closing them, and the pair stays counted as one connection. */
	__atomic_add_fetch(&t->conn_count, 1, __ATOMIC_RELAXED);
	u->fd = -1;
	c->up = NULL;
	upstream_release(u, false);
	c->phase = CONN_HANDED_OFF;
	evbuffer_free(up_pending);
	evbuffer_free(down_pending);
	return true;
fail:
	if (up_pending)
		evbuffer_free(up_pending);
	if (down_pending)
		evbuffer_free(down_pending);
	free(h);
	return false;
}

void handoff_thread_stop(struct front_thread *t)
{
	struct handoff *h;

	while ((h = LIST_FIRST(&t->handoffs))) {
		LIST_REMOVE(h, link);
		relay_abort(h->relay);
		__atomic_sub_fetch(&t->conn_count, 1, __ATOMIC_RELAXED);
		free(h);
	}
}
