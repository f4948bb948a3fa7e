/* Upstream connections: the per-thread keep-alive pool, sending a request,
 * and reading the response back to the client.
 *
 * Bodies stream: every piece llhttp hands us is written on at once, with
 * reads paused on one side while the other side's output is over a high
 * water mark. Nothing is buffered whole except for response hooks.
 */
#include "front/conn.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/log.h"
#include "front/stream.h"

#define UPSTREAM_HIGH_WATER (1024 * 1024)
#define UPSTREAM_IDLE_MAX   256

static void up_read_cb(struct stream *io, void *arg);
static void up_write_cb(struct stream *io, void *arg);
static void up_event_cb(struct stream *io, short what, void *arg);
static void up_idle_cb(struct stream *io, short what, void *arg);
static void up_idle_read_cb(struct stream *io, void *arg);
extern const llhttp_settings_t upstream_response_settings;

static void upconn_free(struct upconn *u)
{
	if (u->io)
		stream_free(u->io);
	if (u->fd >= 0)
		close(u->fd);
	free(u);
}

/* The most recently idled connection to the same address, if any. */
static struct upconn *pool_take(struct front_thread *t,
				const struct rules_upstream *target)
{
	struct upconn *u;

	TAILQ_FOREACH(u, &t->idle, idle_link)
	{
		/* cppcheck cannot see through sys/queue.h's loop. */
		// cppcheck-suppress uninitvar
		if (u->sa_len == target->sa_len &&
		    memcmp(&u->sa, &target->sa, u->sa_len) == 0) {
			TAILQ_REMOVE(&t->idle, u, idle_link);
			t->idle_count--;
			u->reused = true;
			return u;
		}
	}
	return NULL;
}

static struct upconn *upconn_connect(struct front_thread *t,
				     const struct rules_upstream *target)
{
	const struct rules_limits *limits = &t->rules->limits;
	struct upconn *u = calloc(1, sizeof(*u));
	int one = 1;

	if (!u)
		return NULL;
	u->t = t;
	u->fd = socket(target->sa.ss_family,
		       SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (u->fd < 0)
		goto fail;
	setsockopt(u->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	memcpy(&u->sa, &target->sa, target->sa_len);
	u->sa_len = target->sa_len;
	u->io = stream_new(t->base, u->fd);
	if (!u->io)
		goto fail;
	/* While connecting, the write timeout is the connect timeout. */
	stream_set_timeouts(u->io, 0, limits->upstream_connect_ms);
	if (stream_connect(u->io, (struct sockaddr *)&target->sa,
			   target->sa_len) < 0)
		goto fail;
	return u;
fail:
	upconn_free(u);
	return NULL;
}

void upstream_release(struct upconn *u, bool reusable)
{
	struct front_thread *t = u->t;

	u->owner = NULL;
	if (!reusable || sluiced_draining(t->d) ||
	    t->idle_count >= UPSTREAM_IDLE_MAX) {
		upconn_free(u);
		return;
	}
	/* Idle: any byte or close from the upstream now means it is done
	 * with us; the sweep closes it after idle_timeout_ms. */
	stream_set_timeouts(u->io, 0, 0);
	stream_setcb(u->io, up_idle_read_cb, NULL, up_idle_cb, u);
	stream_read_enable(u->io);
	u->idle_since_ms = now_ms();
	TAILQ_INSERT_HEAD(&t->idle, u, idle_link);
	t->idle_count++;
}

static void up_idle_drop(struct upconn *u)
{
	TAILQ_REMOVE(&u->t->idle, u, idle_link);
	u->t->idle_count--;
	upconn_free(u);
}

static void up_idle_read_cb(struct stream *io, void *arg)
{
	(void)io;
	up_idle_drop(arg);
}

static void up_idle_cb(struct stream *io, short what, void *arg)
{
	(void)io;
	(void)what;
	up_idle_drop(arg);
}

void upstream_pool_sweep(struct front_thread *t)
{
	int64_t cutoff = now_ms() - t->rules->limits.idle_timeout_ms;
	struct upconn *u, *prev;

	/* Oldest at the tail. */
	for (u = TAILQ_LAST(&t->idle, upconn_list); u; u = prev) {
		prev = TAILQ_PREV(u, upconn_list, idle_link);
		if (u->idle_since_ms > cutoff)
			break;
		up_idle_drop(u);
	}
}

void upstream_pool_clear(struct front_thread *t)
{
	struct upconn *u;

	while ((u = TAILQ_FIRST(&t->idle)))
		up_idle_drop(u);
}

/* Give the upstream connection back: to the idle pool when the exchange
 * ended cleanly on both sides and nothing extra arrived. */
void upstream_detach(struct conn *c)
{
	struct upconn *u = c->up;
	bool reusable;

	if (!u)
		return;
	reusable = c->resp_done && c->req_done &&
		   llhttp_should_keep_alive(&u->parser) &&
		   evbuffer_get_length(stream_input(u->io)) == 0;
	c->up = NULL;
	upstream_release(u, reusable);
}

/* ---- sending the request ---------------------------------------------- */

static void write_request_head(struct conn *c, struct evbuffer *out,
			       struct evbuffer *body)
{
	const char *method = llhttp_method_name(c->parser.method);

	if (c->req.method.len)
		evbuffer_add_printf(out, "%.*s ", (int)c->req.method.len,
				    http_str(&c->req, c->req.method));
	else
		evbuffer_add_printf(out, "%s ", method);
	evbuffer_add(out, http_str(&c->req, c->target), c->target.len);
	evbuffer_add(out, " HTTP/1.1\r\n", 11);
	http_head_write_headers(&c->req, out);
	if (body)
		evbuffer_add_printf(out, "Content-Length: %zu\r\n",
				    evbuffer_get_length(body));
	else if (c->req_chunked)
		evbuffer_add(out, "Transfer-Encoding: chunked\r\n", 28);
	else if (c->parser.flags & F_CONTENT_LENGTH)
		evbuffer_add_printf(out, "Content-Length: %llu\r\n",
				    (unsigned long long)c->req_length);
	evbuffer_add(out, "\r\n", 2);
}

static void up_attach(struct conn *c, struct upconn *u)
{
	const struct rules_limits *limits = &c->t->rules->limits;

	u->owner = c;
	c->up = u;
	llhttp_init(&u->parser, HTTP_RESPONSE, &upstream_response_settings);
	u->parser.data = c;
	stream_setcb(u->io, up_read_cb, up_write_cb, up_event_cb, u);
	stream_set_write_low(u->io, 64 * 1024);
	if (u->reused)
		stream_set_timeouts(u->io, limits->upstream_timeout_ms,
				    limits->upstream_timeout_ms);
	stream_read_enable(u->io);
}

/* Send the request head, and BODY when the body was buffered (hooks);
 * otherwise the body follows through upstream_send_body(). */
void upstream_forward(struct conn *c, struct evbuffer *body)
{
	struct upconn *u = pool_take(c->t, c->upstream);

	if (!u)
		u = upconn_connect(c->t, c->upstream);
	if (!u) {
		log_warn("upstream connect failed api=%s upstream=%s: %s",
			 c->api->name, c->upstream->host_port, strerror(errno));
		conn_fail(c, 502, "cannot connect to the upstream");
		return;
	}
	up_attach(c, u);
	write_request_head(c, stream_output(u->io), body);
	if (body)
		evbuffer_add_buffer(stream_output(u->io), body);
}

void upstream_send_body(struct conn *c, const char *data, size_t len)
{
	struct evbuffer *out;

	if (!c->up)
		return;
	out = stream_output(c->up->io);
	http_write_body(out, data, len, c->req_chunked);
	if (evbuffer_get_length(out) > UPSTREAM_HIGH_WATER &&
	    !c->read_blocked) {
		c->read_blocked = true;
		stream_read_disable(c->io);
	}
}

void upstream_end_body(struct conn *c)
{
	if (c->up && c->req_chunked)
		evbuffer_add(stream_output(c->up->io), "0\r\n\r\n", 5);
}

static void up_write_cb(struct stream *io, void *arg)
{
	struct upconn *u = arg;
	struct conn *c = u->owner;

	(void)io;
	if (c && c->splice_up) {
		body_splice_resume(c);
		return;
	}
	if (c && c->read_blocked) {
		c->read_blocked = false;
		stream_read_enable(c->io);
		conn_read(c);
	}
}

/* ---- the response ----------------------------------------------------- */

static int on_resp_begin(llhttp_t *p)
{
	struct conn *c = p->data;

	http_head_reset(&c->resp);
	return 0;
}

static int on_status(llhttp_t *p, const char *at, size_t len)
{
	struct conn *c = p->data;

	return http_span_append(&c->resp, &c->resp.reason, at, len) ? -1 : 0;
}

static int on_resp_field(llhttp_t *p, const char *at, size_t len)
{
	struct conn *c = p->data;

	return http_head_on_field(&c->resp, at, len) ? -1 : 0;
}

static int on_resp_value(llhttp_t *p, const char *at, size_t len)
{
	struct conn *c = p->data;

	return http_head_on_value(&c->resp, at, len) ? -1 : 0;
}

/* Write the response head to the client, choosing its framing. */
void upstream_write_response_head(struct conn *c, struct evbuffer *body)
{
	struct evbuffer *out = stream_output(c->io);
	bool no_body =
	    c->is_head_method || c->status == 204 || c->status == 304;

	http_head_strip_hop_by_hop(&c->resp);
	evbuffer_add_printf(out, "HTTP/1.1 %d %.*s\r\n", c->status,
			    (int)c->resp.reason.len,
			    http_str(&c->resp, c->resp.reason));
	hooked_write_quota(c, out);
	http_head_write_headers(&c->resp, out);
	if (body) {
		evbuffer_add_printf(out, "Content-Length: %zu\r\n",
				    evbuffer_get_length(body));
	} else if (c->up->parser.flags & F_CONTENT_LENGTH) {
		if (c->status != 204 && c->status != 304)
			evbuffer_add_printf(
			    out, "Content-Length: %llu\r\n",
			    (unsigned long long)c->up->parser.content_length);
	} else if (!no_body) {
		/* Close-delimited or chunked upstream: chunk it for a 1.1
		 * client, close after it for a 1.0 one. */
		if (c->req.minor >= 1)
			c->resp_chunked = true;
		else
			c->close_after = true;
		if (c->resp_chunked)
			evbuffer_add(out, "Transfer-Encoding: chunked\r\n", 28);
	}
	if (c->close_after || !c->keep_alive)
		evbuffer_add(out, "Connection: close\r\n", 19);
	else if (c->req.minor == 0)
		evbuffer_add(out, "Connection: keep-alive\r\n", 24);
	evbuffer_add(out, "\r\n", 2);
	c->resp_started = true;
}

static int on_resp_headers_complete(llhttp_t *p)
{
	struct conn *c = p->data;

	c->status = p->status_code;
	if (c->status < 200) {
		/* Interim (103 and the like): not forwarded. 101 would need
		 * an upgraded tunnel, which we never ask for. */
		return c->status == 101 ? -1 : 0;
	}
	if (c->response_hooks)
		return c->is_head_method ? 1 : 0;
	upstream_write_response_head(c, NULL);
	if (c->is_head_method)
		return 1;
	if ((p->flags & F_CONTENT_LENGTH) && c->req_done && c->status != 204 &&
	    c->status != 304 && body_splice_wanted(c, p->content_length)) {
		/* The body goes by splice(2): stop right after the head. */
		c->splice_left = p->content_length;
		return HPE_PAUSED;
	}
	return 0;
}

static int on_resp_body(llhttp_t *p, const char *at, size_t len)
{
	struct conn *c = p->data;

	c->bytes_out += len;
	if (c->response_hooks) {
		if (evbuffer_get_length(c->body) + len >
		    c->t->rules->limits.body_bytes)
			return -1;
		evbuffer_add(c->body, at, len);
		return 0;
	}
	http_write_body(stream_output(c->io), at, len, c->resp_chunked);
	return 0;
}

static int on_resp_complete(llhttp_t *p)
{
	struct conn *c = p->data;

	if (c->status < 200)
		return 0;
	c->resp_done = true;
	return HPE_PAUSED;
}

const llhttp_settings_t upstream_response_settings = {
    .on_message_begin = on_resp_begin,
    .on_status = on_status,
    .on_header_field = on_resp_field,
    .on_header_value = on_resp_value,
    .on_headers_complete = on_resp_headers_complete,
    .on_body = on_resp_body,
    .on_message_complete = on_resp_complete,
};

/* The response is complete: terminate its framing and finish. */
static void up_response_done(struct conn *c)
{
	if (c->response_hooks) {
		hooked_response(c);
		return;
	}
	if (c->resp_chunked)
		evbuffer_add(stream_output(c->io), "0\r\n\r\n", 5);
	conn_finish(c);
}

/* The upstream failed before any response byte. A reused keep-alive
 * connection may have been closed by the upstream just as we sent: retry
 * once on a fresh connection when nothing of the body is lost. */
static void up_failed(struct conn *c, int status, const char *why)
{
	struct upconn *u = c->up;
	bool replayable = !c->req_has_body;

	if (u->reused && !c->retried && replayable && !c->resp_started &&
	    llhttp_get_errno(&u->parser) == HPE_OK &&
	    u->parser.status_code == 0) {
		c->retried = true;
		c->up = NULL;
		upconn_free(u);
		upstream_forward(c, NULL);
		if (c->up && c->req_done)
			upstream_end_body(c);
		return;
	}
	log_info("upstream failed api=%s upstream=%s status=%d reason=\"%s\"",
		 c->api->name, c->upstream->host_port, status, why);
	c->up = NULL;
	upconn_free(u);
	conn_fail(c, status, why);
}

static void up_read_cb(struct stream *io, void *arg)
{
	struct upconn *u = arg;
	struct conn *c = u->owner;
	struct evbuffer *in = stream_input(io);
	struct evbuffer *client_out = stream_output(c->io);

	while (!c->resp_done && evbuffer_get_length(in) > 0) {
		struct evbuffer_iovec v;
		llhttp_errno_t err;
		size_t used;

		evbuffer_peek(in, -1, NULL, &v, 1);
		err = llhttp_execute(&u->parser, v.iov_base, v.iov_len);
		used = err == HPE_OK
			   ? v.iov_len
			   : (size_t)(llhttp_get_error_pos(&u->parser) -
				      (const char *)v.iov_base);
		evbuffer_drain(in, used);
		if (err == HPE_PAUSED)
			break;
		if (err != HPE_OK) {
			if (c->resp_started)
				conn_abort(
				    c, "upstream sent a malformed response");
			else
				up_failed(c, 502,
					  "upstream sent a malformed response");
			return;
		}
		if (evbuffer_get_length(client_out) > UPSTREAM_HIGH_WATER) {
			/* The client reads slower than the upstream sends. */
			stream_read_disable(io);
			return;
		}
	}
	if (c->resp_done)
		up_response_done(c);
	else if (c->splice_left && !c->splice_up && c->splice_len == 0)
		body_splice_response(c);
}

static void up_event_cb(struct stream *io, short what, void *arg)
{
	struct upconn *u = arg;
	struct conn *c = u->owner;
	const struct rules_limits *limits = &c->t->rules->limits;

	if (what & BEV_EVENT_CONNECTED) {
		u->connected = true;
		stream_set_timeouts(io, limits->upstream_timeout_ms,
				    limits->upstream_timeout_ms);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		if (!u->connected && !u->reused) {
			up_failed(c, 504, "upstream connect timed out");
		} else if (!c->resp_started) {
			c->up = NULL;
			upconn_free(u);
			conn_fail(c, 504, "upstream timed out");
		} else {
			conn_abort(c, "upstream timed out mid-response");
		}
		return;
	}
	if ((what & BEV_EVENT_EOF) && c->status >= 200) {
		/* Close-delimited bodies end here. */
		llhttp_finish(&u->parser);
		if (c->resp_done) {
			up_response_done(c);
			return;
		}
	}
	if (c->resp_started || c->status >= 200)
		conn_abort(c, "upstream closed mid-response");
	else if (!u->connected && !u->reused)
		up_failed(c, 502, "upstream refused the connection");
	else
		up_failed(c, 502,
			  (what & BEV_EVENT_EOF)
			      ? "upstream closed the connection"
			      : "upstream reset the connection");
}
