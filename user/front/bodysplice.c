/* Large bodies on per-request routes move by splice(2) through a pipe,
 * never through user-space buffers.
 *
 * When a plain API's request or response carries a Content-Length of at
 * least BODY_SPLICE_MIN and the splice mode is not `copy`, the front stops
 * parsing after the head: the body bytes it has already read are queued to
 * the other side, and once that queue has drained the rest of the body goes
 * socket → pipe → socket (relay_body_start). The parser is then past the
 * message, and the exchange finishes as usual.
 */
#include <event2/buffer.h>
#include <event2/event.h>

#include "common/log.h"
#include "front/conn.h"
#include "front/relay.h"
#include "front/stream.h"

#define BODY_SPLICE_MIN (128 * 1024)

bool body_splice_wanted(const struct conn *c, uint64_t length)
{
	return c->t->d->splice != RULES_SPLICE_COPY && !c->api->middleware &&
	       length >= BODY_SPLICE_MIN;
}

/* Move up to *left bytes already read from SRC's input into DST's output. */
static void move_read_bytes(struct stream *src, struct stream *dst,
			    uint64_t *left)
{
	struct evbuffer *in = stream_input(src);
	size_t have = evbuffer_get_length(in);
	size_t take = have < *left ? have : (size_t)*left;

	evbuffer_remove_buffer(in, stream_output(dst), take);
	*left -= take;
}

/* ---- response bodies: upstream → client ------------------------------ */

static void response_spliced(void *arg, int err)
{
	struct conn *c = arg;

	c->body_relay = NULL;
	if (err) {
		conn_abort(c, "response body splice failed");
		return;
	}
	c->bytes_out += c->splice_len;
	c->splice_left = 0;
	c->resp_done = true;
	stream_read_enable(c->up->io);
	conn_finish(c);
}

/* The response head went out; the body has splice_left bytes. */
void body_splice_response(struct conn *c)
{
	struct upconn *u = c->up;

	c->splice_len = c->splice_left;
	move_read_bytes(u->io, c->io, &c->splice_left);
	c->bytes_out += c->splice_len - c->splice_left;
	c->splice_len = c->splice_left;
	if (c->splice_left == 0) {
		c->resp_done = true;
		conn_finish(c);
		return;
	}
	stream_read_disable(u->io);
	body_splice_resume(c);
}

/* ---- request bodies: client → upstream ------------------------------- */

static void request_spliced(void *arg, int err)
{
	struct conn *c = arg;

	c->body_relay = NULL;
	if (err) {
		conn_fail(c, 502, "request body could not be sent upstream");
		return;
	}
	c->bytes_in += c->splice_len;
	c->splice_left = 0;
	c->splice_up = false;
	c->req_done = true;
	conn_set_client_timeouts(c, false);
	/* The parser never saw the body: start it afresh at the next
	 * message. What it knew of this one is saved in the conn. */
	llhttp_init(&c->parser, HTTP_REQUEST, &conn_request_settings);
	c->parser.data = c;
	stream_read_enable(c->io);
}

/* The request head went upstream; the body has req_length bytes. Returns
 * true when the body will be spliced (the parser must stay paused). */
bool body_splice_request(struct conn *c)
{
	uint64_t left = c->req_length;
	struct evbuffer *in = stream_input(c->io);

	/* All of it already read: nothing to gain. */
	if (evbuffer_get_length(in) >= left)
		return false;
	move_read_bytes(c->io, c->up->io, &left);
	c->bytes_in += c->req_length - left;
	c->splice_up = true;
	c->splice_left = left;
	c->splice_len = left;
	stream_read_disable(c->io);
	body_splice_resume(c);
	return true;
}

/* Start the pipe once what was queued in user space has gone out, so the
 * bytes keep their order. Called again from the write callbacks. */
void body_splice_resume(struct conn *c)
{
	struct stream *to = c->splice_up ? c->up->io : c->io;
	int from_fd = c->splice_up ? c->fd : c->up->fd;
	int to_fd = c->splice_up ? c->up->fd : c->fd;

	if (c->body_relay || c->splice_left == 0 ||
	    evbuffer_get_length(stream_output(to)) > 0)
		return;
	c->body_relay = relay_body_start(
	    c->t->base, from_fd, to_fd, c->splice_left,
	    c->splice_up ? request_spliced : response_spliced, c);
	if (!c->body_relay) {
		log_warn("body splice failed to start api=%s: %m",
			 c->api->name);
		if (c->splice_up)
			conn_fail(c, 502, "request body could not be sent");
		else
			conn_abort(c, "response body splice failed to start");
	}
}

void body_splice_stop(struct conn *c)
{
	if (c->body_relay) {
		relay_body_abort(c->body_relay);
		c->body_relay = NULL;
	}
	c->splice_left = 0;
}
