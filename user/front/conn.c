/* Client connections: read a request head, route it, hand it on, and keep
 * the connection for the next request or close it. See conn.h for the steps
 * of an exchange. */
#include "front/conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/log.h"
#include "front/handoff.h"
#include "front/route.h"
#include "front/stream.h"

static void conn_read_cb(struct stream *io, void *arg);
static void conn_write_cb(struct stream *io, void *arg);
static void conn_event_cb(struct stream *io, short what, void *arg);
static void conn_header_timeout(evutil_socket_t fd, short what, void *arg);

static const struct rules_limits *conn_limits(struct conn *c)
{
	return &c->t->rules->limits;
}

static void timer_arm(struct conn *c, int ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	evtimer_add(c->timer, &tv);
}

/* Reading from the client is bounded by idle_timeout_ms while we expect
 * bytes from it (between requests, during a body), and not at all while it
 * waits for its answer: upstream_timeout_ms bounds that. A client that
 * reads its answer slowly is held back by TCP, at a bounded cost (the high
 * water marks), not timed out. */
void conn_set_client_timeouts(struct conn *c, bool expect_input)
{
	stream_set_timeouts(
	    c->io, expect_input ? conn_limits(c)->idle_timeout_ms : 0, 0);
}

void conn_accept(struct front_thread *t, int fd, const struct sockaddr *sa,
		 const char *listener)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (!c) {
		log_warn("accept dropped listener=%s: out of memory", listener);
		close(fd);
		return;
	}
	c->t = t;
	c->fd = fd;
	c->listener = listener;
	c->slot = -1;
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr,
			  c->peer, sizeof(c->peer));
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr,
			  c->peer, sizeof(c->peer));
	else
		snprintf(c->peer, sizeof(c->peer), "unix");

	c->io = stream_new(t->base, fd);
	c->timer = evtimer_new(t->base, conn_header_timeout, c);
	if (!c->io || !c->timer) {
		log_warn("accept dropped listener=%s: out of memory", listener);
		if (c->io)
			stream_free(c->io);
		free(c);
		close(fd);
		return;
	}
	llhttp_init(&c->parser, HTTP_REQUEST, &conn_request_settings);
	c->parser.data = c;
	http_head_init(&c->req);
	http_head_init(&c->resp);

	conn_set_client_timeouts(c, true);
	stream_setcb(c->io, conn_read_cb, conn_write_cb, conn_event_cb, c);
	stream_set_write_low(c->io, 64 * 1024);
	stream_read_enable(c->io);

	/* The first head must arrive within header_timeout_ms of the
	 * connect, as with nginx's client_header_timeout. */
	timer_arm(c, conn_limits(c)->header_timeout_ms);

	LIST_INSERT_HEAD(&t->conns, c, link);
	__atomic_add_fetch(&t->conn_count, 1, __ATOMIC_RELAXED);
}

static void conn_release_exchange(struct conn *c)
{
	body_splice_stop(c);
	if (c->up) {
		upstream_release(c->up, false);
		c->up = NULL;
	}
	if (c->slot >= 0 && c->api) {
		c->t->stats.apis[c->slot].inflight--;
		c->slot = -1;
	}
	if (c->rules) {
		rules_unref(c->rules);
		c->rules = NULL;
	}
	c->api = NULL;
}

void conn_free(struct conn *c)
{
	if (c->parsing) {
		c->free_pending = true;
		return;
	}
	conn_release_exchange(c);
	if (c->io) {
		stream_free(c->io);
		c->io = NULL;
	}
	if (c->fd >= 0 && c->phase != CONN_HANDED_OFF)
		close(c->fd);
	c->fd = -1;
	if (c->call) {
		/* A pool call still holds us: hooked.c frees on done(). */
		c->dead = true;
		return;
	}
	if (c->timer)
		event_free(c->timer);
	if (c->body)
		evbuffer_free(c->body);
	free(c->hook_session);
	http_head_free(&c->req);
	http_head_free(&c->resp);
	LIST_REMOVE(c, link);
	__atomic_sub_fetch(&c->t->conn_count, 1, __ATOMIC_RELAXED);
	front_thread_check_drained(c->t);
	free(c);
}

/* Flush what is queued for the client, then close. */
static void conn_close_after_flush(struct conn *c)
{
	c->phase = CONN_CLOSING;
	evtimer_del(c->timer);
	stream_read_disable(c->io);
	if (evbuffer_get_length(stream_output(c->io)) == 0)
		conn_free(c);
}

void conn_drain(struct conn *c)
{
	if (c->phase == CONN_READ_HEAD && !c->in_head)
		conn_free(c);
}

void conn_abort(struct conn *c, const char *why)
{
	log_debug("connection aborted peer=%s api=%s reason=\"%s\"", c->peer,
		  c->api ? c->api->name : "-", why);
	c->close_after = true;
	conn_free(c);
}

static void conn_reset_exchange(struct conn *c)
{
	http_head_reset(&c->req);
	http_head_reset(&c->resp);
	c->in_head = false;
	c->head_complete = false;
	c->head_bytes = 0;
	c->head_prev = 0;
	c->parse_status = 0;
	c->req_chunked = false;
	c->req_has_body = false;
	c->req_length = 0;
	c->req_done = false;
	c->is_head_method = false;
	c->expect_continue = false;
	c->upstream = NULL;
	c->retried = false;
	c->target.off = c->target.len = 0;
	c->status = 0;
	c->resp_started = false;
	c->resp_chunked = false;
	c->resp_done = false;
	c->bytes_in = c->bytes_out = 0;
	c->response_hooks = false;
	free(c->hook_session);
	c->hook_session = NULL;
	c->hook_session_len = 0;
	c->quota.max = 0;
	c->splice_left = c->splice_len = 0;
	c->splice_up = false;
	if (c->body)
		evbuffer_drain(c->body, evbuffer_get_length(c->body));
}

void conn_finish(struct conn *c)
{
	int64_t latency = now_us() - c->started_us;
	bool handed_off;

	body_splice_stop(c);
	if (c->slot >= 0) {
		stats_record(&c->t->stats, c->slot, c->status, latency,
			     c->bytes_in, c->bytes_out);
		c->t->stats.apis[c->slot].inflight--;
	}
	if (c->t->d->access_log)
		conn_log_access(c, latency);
	handed_off = handoff_try(c);
	upstream_detach(c);
	c->slot = -1;
	if (c->rules) {
		rules_unref(c->rules);
		c->rules = NULL;
	}
	c->api = NULL;
	c->requests++;
	if (handed_off) {
		conn_free(c);
		return;
	}

	/* A request whose body we did not read to the end leaves the stream
	 * unframed: the connection cannot carry another request. */
	if (!c->keep_alive || c->close_after || sluiced_draining(c->t->d) ||
	    (!c->req_done && c->req_has_body)) {
		conn_close_after_flush(c);
		return;
	}
	conn_reset_exchange(c);
	c->phase = CONN_READ_HEAD;
	conn_set_client_timeouts(c, true);
	if (c->read_blocked) {
		c->read_blocked = false;
		stream_read_enable(c->io);
	}
	if (!c->parsing)
		conn_read(c);
}

void conn_fail(struct conn *c, int status, const char *message)
{
	struct evbuffer *out = stream_output(c->io);

	if (c->resp_started) {
		conn_abort(c, message);
		return;
	}
	/* Framing errors and bodies we will not read end the connection. */
	if (status == 400 || status == 408 || status == 413 || status == 431 ||
	    (!c->req_done && c->req_has_body))
		c->close_after = true;
	http_write_error(out, status, message,
			 c->close_after || !c->keep_alive);
	c->status = status;
	c->resp_started = true;
	c->resp_done = true;
	c->bytes_out = 0;
	if (c->slot < 0 && c->started_us == 0)
		c->started_us = now_us();
	log_debug("request failed peer=%s status=%d reason=\"%s\"", c->peer,
		  status, message);
	conn_finish(c);
}

/* ---- the request head ------------------------------------------------- */

static int head_limit_check(struct conn *c)
{
	if (c->req.arena_len > conn_limits(c)->header_bytes) {
		c->parse_status = 431;
		return -1;
	}
	return 0;
}

static int on_message_begin(llhttp_t *p)
{
	struct conn *c = p->data;

	if (c->phase != CONN_READ_HEAD) {
		/* Pipelined before we finished the previous answer: cannot
		 * happen, we pause at every message end. */
		return -1;
	}
	c->in_head = true;
	c->started_us = now_us();
	timer_arm(c, conn_limits(c)->header_timeout_ms);
	return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
	struct conn *c = p->data;

	if (http_span_append(&c->req, &c->req.target, at, len))
		return -1;
	return head_limit_check(c);
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
	struct conn *c = p->data;

	if (http_head_on_field(&c->req, at, len))
		return -1;
	return head_limit_check(c);
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
	struct conn *c = p->data;

	if (http_head_on_value(&c->req, at, len))
		return -1;
	return head_limit_check(c);
}

static int on_headers_complete(llhttp_t *p)
{
	struct conn *c = p->data;

	c->in_head = false;
	c->head_complete = true;
	evtimer_del(c->timer);
	c->req.major = p->http_major;
	c->req.minor = p->http_minor;
	c->keep_alive = llhttp_should_keep_alive(p);
	c->req_chunked = (p->flags & F_CHUNKED) != 0;
	c->req_has_body = c->req_chunked || ((p->flags & F_CONTENT_LENGTH) &&
					     p->content_length > 0);
	c->req_length = c->req_chunked ? 0 : p->content_length;
	c->is_head_method = p->method == HTTP_HEAD;
	/* Route outside the callback, where the connection may change
	 * phase freely. */
	return HPE_PAUSED;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
	struct conn *c = p->data;

	c->bytes_in += len;
	if (c->phase == CONN_FORWARD)
		upstream_send_body(c, at, len);
	else if (c->phase == CONN_READ_BODY)
		hooked_body(c, at, len);
	return c->parse_status ? -1 : 0;
}

static int on_message_complete(llhttp_t *p)
{
	struct conn *c = p->data;

	c->req_done = true;
	if (c->phase != CONN_READ_HEAD)
		conn_set_client_timeouts(c, false);
	switch (c->phase) {
	case CONN_FORWARD:
		upstream_end_body(c);
		break;
	case CONN_READ_BODY:
		hooked_body_done(c);
		break;
	case CONN_READ_HEAD:
		/* Already answered (an error before the body): go on with
		 * the next request on this connection. */
		return 0;
	default:
		break;
	}
	/* One request at a time: pipelined requests wait in the input
	 * buffer until this answer is complete. */
	return HPE_PAUSED;
}

const llhttp_settings_t conn_request_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- routing -------------------------------------------------------- */

static int add_forwarded(struct conn *c, const struct http_header *host)
{
	const struct http_header *xff =
	    http_head_find(&c->req, "x-forwarded-for");
	char value[1024];
	int n;

	if (xff && xff->value.len + strlen(c->peer) + 3 < sizeof(value)) {
		n = snprintf(value, sizeof(value), "%.*s, %s",
			     (int)xff->value.len, http_str(&c->req, xff->value),
			     c->peer);
		http_head_delete(&c->req, "x-forwarded-for");
	} else {
		http_head_delete(&c->req, "x-forwarded-for");
		n = snprintf(value, sizeof(value), "%s", c->peer);
	}
	if (http_head_add(&c->req, "X-Forwarded-For", value, n))
		return -1;
	http_head_delete(&c->req, "x-forwarded-proto");
	if (http_head_add(&c->req, "X-Forwarded-Proto", "http", 4))
		return -1;
	if (host && !http_head_find(&c->req, "x-forwarded-host")) {
		n = snprintf(value, sizeof(value), "%.*s", (int)host->value.len,
			     http_str(&c->req, host->value));
		if (http_head_add(&c->req, "X-Forwarded-Host", value, n))
			return -1;
	}
	return 0;
}

static int count_headers(const struct http_head *head, const char *name)
{
	int n = 0;

	for (size_t i = 0; i < head->header_count; i++)
		n += http_span_eq(head, head->headers[i].name, name);
	return n;
}

/* "GET http://host/path HTTP/1.1": RFC 9112 3.2.2 has a server accept the
 * absolute form and take the host from it, not from Host. Rewrite it to
 * origin form with a Host header, so everything after sees one shape.
 * Returns 0 (also when the target is not absolute), -1 when malformed. */
static int conn_absolute_form(struct conn *c)
{
	const char *t = http_str(&c->req, c->req.target);
	size_t len = c->req.target.len;
	const char *authority, *path;
	size_t auth_len;

	if (len < 7 || strncasecmp(t, "http://", 7) != 0)
		return 0;
	authority = t + 7;
	path = memchr(authority, '/', len - 7);
	auth_len = path ? (size_t)(path - authority) : len - 7;
	if (auth_len == 0 || memchr(authority, '@', auth_len))
		return -1;
	http_head_delete(&c->req, "host");
	if (http_head_add(&c->req, "Host", authority, auth_len))
		return -1;
	/* The path stays where it is in the arena: only the span moves. */
	if (path) {
		c->req.target.off += (uint32_t)(path - t);
		c->req.target.len = (uint32_t)(len - (size_t)(path - t));
	} else {
		return http_span_set(&c->req, &c->req.target, "/", 1) ? -1 : 0;
	}
	return 0;
}

/* Checks llhttp leaves to us; returns a status or 0. */
static int conn_check_head(struct conn *c, const char **why)
{
	const struct http_header *expect;

	if (c->req.too_many_headers) {
		*why = "too many header fields";
		return 431;
	}
	if (c->parser.method == HTTP_CONNECT) {
		*why = "CONNECT is not supported";
		return 405;
	}
	if (conn_absolute_form(c) < 0) {
		*why = "bad absolute-form request target";
		return 400;
	}
	if (c->req.target.len == 0 ||
	    http_str(&c->req, c->req.target)[0] != '/') {
		*why = "the request target must be a path";
		return 400;
	}
	if (count_headers(&c->req, "host") > 1 ||
	    (c->req.minor >= 1 && count_headers(&c->req, "host") == 0)) {
		*why = "exactly one Host header is required";
		return 400;
	}
	expect = http_head_find(&c->req, "expect");
	if (expect) {
		if (!http_value_has_token(http_str(&c->req, expect->value),
					  expect->value.len, "100-continue")) {
			*why = "unsupported expectation";
			return 417;
		}
		c->expect_continue = c->req.minor >= 1;
	}
	return 0;
}

static void conn_route(struct conn *c)
{
	const struct http_header *host;
	const char *why = NULL;
	const char *method, *target, *query;
	size_t path_len;
	char buf[8192];
	int status, n;

	c->rules = rules_ref(c->t->rules);
	/* Kept as text: a spliced body restarts the parser, which forgets. */
	method = llhttp_method_name(c->parser.method);
	http_span_set(&c->req, &c->req.method, method, strlen(method));
	status = conn_check_head(c, &why);
	if (status) {
		conn_fail(c, status, why);
		return;
	}

	host = http_head_find(&c->req, "host");
	target = http_str(&c->req, c->req.target);
	query = memchr(target, '?', c->req.target.len);
	path_len = query ? (size_t)(query - target) : c->req.target.len;
	c->api = route_match(c->rules, c->listener,
			     host ? http_str(&c->req, host->value) : "",
			     host ? host->value.len : 0, target, path_len);
	if (!c->api) {
		conn_fail(c, 404, "no API matches this request");
		return;
	}
	c->slot = stats_slot(c->api->name);
	if (c->slot >= 0)
		c->t->stats.apis[c->slot].inflight++;

	/* Round robin over the API's upstreams, shared by the threads. */
	c->upstream = &c->api->upstreams[__atomic_fetch_add(
					     &((struct rules_api *)c->api)->rr,
					     1, __ATOMIC_RELAXED) %
					 c->api->upstream_count];
	n = route_upstream_target(c->api, c->upstream, target,
				  c->req.target.len, buf, sizeof(buf));
	if (n < 0 || http_span_set(&c->req, &c->target, buf, n)) {
		conn_fail(c, 414, "request target too long");
		return;
	}
	if (add_forwarded(c, host)) {
		conn_fail(c, 431, "too many header fields");
		return;
	}

	if (c->expect_continue)
		evbuffer_add_printf(stream_output(c->io),
				    "HTTP/1.1 100 Continue\r\n\r\n");

	http_head_strip_hop_by_hop(&c->req);
	if (c->api->middleware) {
		hooked_start(c);
		return;
	}
	c->phase = CONN_FORWARD;
	upstream_forward(c, NULL);
	if (c->up && c->req_has_body && !c->req_chunked &&
	    body_splice_wanted(c, c->req_length))
		body_splice_request(c);
}

/* ---- reading ---------------------------------------------------------- */

/* llhttp 8 still takes a bare LF after the request line or as the head's
 * end, and folded header lines (obs-fold). Both let two parsers disagree on
 * where a message ends, so a head with either is refused. */
static bool head_bytes_strict(struct conn *c, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char ch = p[i];

		if (ch == '\n' && c->head_prev != '\r')
			return false;
		if ((ch == ' ' || ch == '\t') && c->head_prev == '\n')
			return false;
		c->head_prev = ch;
	}
	return true;
}

static bool conn_wants_input(const struct conn *c)
{
	if (c->phase == CONN_READ_HEAD)
		return true;
	return (c->phase == CONN_FORWARD || c->phase == CONN_READ_BODY) &&
	       !c->req_done && !c->read_blocked && !c->splice_up;
}

static void conn_parse_error(struct conn *c, llhttp_errno_t err)
{
	int status = c->parse_status ? c->parse_status : 400;
	const char *why = status == 431	  ? "request head too large"
			  : status == 413 ? "request body too large"
					  : llhttp_errno_name(err);

	if (!c->in_head && c->phase == CONN_READ_HEAD && !c->head_complete &&
	    c->req.arena_len == 0 && err == HPE_INVALID_METHOD)
		why = "not an HTTP request";
	conn_fail(c, status, why);
}

void conn_read(struct conn *c)
{
	struct evbuffer *in = stream_input(c->io);

	c->parsing = true;
	while (!c->free_pending && conn_wants_input(c)) {
		struct evbuffer_iovec v;
		llhttp_errno_t err;
		size_t used;

		if (llhttp_get_errno(&c->parser) == HPE_PAUSED)
			llhttp_resume(&c->parser);
		else if (llhttp_get_errno(&c->parser) == HPE_PAUSED_UPGRADE)
			llhttp_resume_after_upgrade(&c->parser);
		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1) {
			/* A request without a body ends with its head: let
			 * llhttp reach the message's end without input. */
			if (c->phase == CONN_READ_HEAD || c->req_has_body ||
			    c->req_done)
				break;
			v.iov_base = (void *)"";
			v.iov_len = 0;
		}

		err = llhttp_execute(&c->parser, v.iov_base, v.iov_len);
		used = err == HPE_OK
			   ? v.iov_len
			   : (size_t)(llhttp_get_error_pos(&c->parser) -
				      (const char *)v.iov_base);
		if (c->in_head || c->head_complete) {
			c->head_bytes += used;
			if (!head_bytes_strict(c, v.iov_base, used))
				err = HPE_STRICT;
		}
		evbuffer_drain(in, used);

		if (c->head_complete &&
		    c->head_bytes > conn_limits(c)->header_bytes) {
			c->parse_status = 431;
			err = HPE_USER;
		}
		if (err == HPE_OK && v.iov_len == 0)
			break;
		if (err == HPE_OK)
			continue;
		if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
			if (c->head_complete) {
				c->head_complete = false;
				conn_route(c);
			}
			continue;
		}
		conn_parse_error(c, err);
		break;
	}
	/* Keep a bound on what a pipelining client can queue meanwhile. */
	if (!c->free_pending && !conn_wants_input(c) &&
	    c->phase != CONN_CLOSING &&
	    evbuffer_get_length(in) > conn_limits(c)->header_bytes)
		stream_read_disable(c->io);
	c->parsing = false;
	if (c->free_pending) {
		c->free_pending = false;
		conn_free(c);
	}
}

static void conn_read_cb(struct stream *io, void *arg)
{
	struct conn *c = arg;

	(void)io;
	conn_read(c);
}

static void conn_write_cb(struct stream *io, void *arg)
{
	struct conn *c = arg;
	size_t queued = evbuffer_get_length(stream_output(io));

	if (c->phase == CONN_CLOSING) {
		if (queued == 0)
			conn_free(c);
		return;
	}
	if (c->splice_left && !c->splice_up) {
		body_splice_resume(c);
		return;
	}
	/* The client took the response bytes: let the upstream go on. */
	if (c->up && c->phase == CONN_FORWARD)
		stream_read_enable(c->up->io);
}

static void conn_event_cb(struct stream *io, short what, void *arg)
{
	struct conn *c = arg;

	(void)io;
	if (what & BEV_EVENT_TIMEOUT) {
		if (what & BEV_EVENT_WRITING) {
			conn_abort(c, "client read nothing of its answer");
		} else if (c->phase == CONN_READ_HEAD && !c->in_head) {
			conn_free(c); /* idle keep-alive connection */
		} else if (!c->resp_started) {
			conn_fail(c, 408, "client too slow");
		} else {
			conn_abort(c, "client timed out");
		}
		return;
	}
	if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR)) {
		/* A half-closed client may still wait for its answer. */
		c->client_eof = true;
		c->close_after = true;
		if (c->phase == CONN_CLOSING ||
		    (c->phase == CONN_READ_HEAD && !c->in_head))
			conn_free(c);
		else if (!c->req_done && c->phase != CONN_HOOK_REQUEST)
			conn_abort(c, "client closed mid-request");
		return;
	}
	conn_abort(c, "client connection error");
}

static void conn_header_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	(void)fd;
	(void)what;
	if (c->phase != CONN_READ_HEAD)
		return;
	if (!c->in_head && c->requests > 0) {
		conn_free(c);
		return;
	}
	conn_fail(c, 408, "request head not received in time");
}

/* ---- access log ------------------------------------------------------- */

void conn_log_access(struct conn *c, int64_t latency_us)
{
	struct sluiced *d = c->t->d;
	const char *method = c->req.method.len
				 ? http_str(&c->req, c->req.method)
				 : llhttp_method_name(c->parser.method);
	int method_len =
	    c->req.method.len ? (int)c->req.method.len : (int)strlen(method);
	const char *api = c->api ? c->api->name : "-";
	const char *up = c->upstream ? c->upstream->host_port : "-";
	int tlen = (int)c->req.target.len;
	const char *target =
	    c->req.arena ? http_str(&c->req, c->req.target) : "";
	char line[1024];
	int n;

	/* The target is the client's: cut quotes and control bytes so a
	 * line stays one parseable line. */
	char safe[512];
	int s = 0;

	for (int i = 0; i < tlen && s < (int)sizeof(safe) - 1; i++)
		safe[s++] = (target[i] == '"' || target[i] == '\\' ||
			     (unsigned char)target[i] < 0x20)
				? '_'
				: target[i];
	safe[s] = '\0';

	if (c->t->rules->access_log.format == RULES_LOG_COMBINED)
		n = snprintf(line, sizeof(line),
			     "%s - - \"%.*s %s HTTP/%d.%d\" %d %llu api=%s "
			     "upstream=%s duration_ms=%.3f\n",
			     c->peer, method_len, method, safe, c->req.major,
			     c->req.minor, c->status,
			     (unsigned long long)c->bytes_out, api, up,
			     latency_us / 1000.0);
	else
		n = snprintf(line, sizeof(line),
			     "{\"client\":\"%s\",\"method\":\"%.*s\","
			     "\"target\":\"%s\",\"api\":\"%s\","
			     "\"upstream\":\"%s\",\"status\":%d,"
			     "\"bytes_in\":%llu,\"bytes_out\":%llu,"
			     "\"duration_ms\":%.3f}\n",
			     c->peer, method_len, method, safe, api, up,
			     c->status, (unsigned long long)c->bytes_in,
			     (unsigned long long)c->bytes_out,
			     latency_us / 1000.0);
	if (n > (int)sizeof(line))
		n = sizeof(line);
	pthread_mutex_lock(&d->access_lock);
	fwrite(line, 1, n, d->access_log);
	fflush(d->access_log);
	pthread_mutex_unlock(&d->access_lock);
}
