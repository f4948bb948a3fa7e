/* The front's side of Python middleware: buffer the body, one pool visit
 * per direction, apply what the hooks returned.
 *
 * A hooked request: head routed (conn.c) → body buffered up to
 * limits.body_bytes (413 beyond) → CALL encoded with msgpack and handed to
 * the pool → on completion, a reply is sent at once or the edited request
 * goes upstream with its buffered body. With response hooks, the upstream's
 * response is buffered the same way and visits the pool once more.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <msgpack.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/msg.h"
#include "front/conn.h"
#include "front/limit.h"
#include "front/stream.h"
#include "pool/pool.h"

void hooked_start(struct conn *c)
{
	const struct rules_middleware *mw = c->api->middleware;
	size_t limit = c->t->rules->limits.body_bytes;

	if (!c->t->d->pool) {
		conn_fail(c, 503, "the hook worker pool is not running");
		return;
	}
	if (!c->req_chunked && c->req_length > limit) {
		conn_fail(c, 413, "request body too large for a hooked API");
		return;
	}
	if (!c->body)
		c->body = evbuffer_new();
	c->response_hooks = mw->response.count > 0;
	c->phase = CONN_READ_BODY;
	/* The parser goes on: on_body lands in hooked_body(), the message's
	 * end in hooked_body_done(). */
}

void hooked_body(struct conn *c, const char *data, size_t len)
{
	if (evbuffer_get_length(c->body) + len >
	    c->t->rules->limits.body_bytes) {
		c->parse_status = 413;
		return;
	}
	evbuffer_add(c->body, data, len);
}

/* ---- encoding a CALL ------------------------------------------------- */

static void pack_str(msgpack_packer *pk, const char *s, size_t len)
{
	msgpack_pack_str(pk, len);
	msgpack_pack_str_body(pk, s, len);
}

static void pack_cstr(msgpack_packer *pk, const char *s)
{
	pack_str(pk, s, strlen(s));
}

static void pack_headers(msgpack_packer *pk, const struct http_head *head)
{
	msgpack_pack_array(pk, head->header_count);
	for (size_t i = 0; i < head->header_count; i++) {
		const struct http_header *h = &head->headers[i];

		msgpack_pack_array(pk, 2);
		pack_str(pk, http_str(head, h->name), h->name.len);
		pack_str(pk, http_str(head, h->value), h->value.len);
	}
}

static void pack_body(msgpack_packer *pk, struct evbuffer *body)
{
	size_t len = body ? evbuffer_get_length(body) : 0;

	msgpack_pack_bin(pk, len);
	if (len)
		msgpack_pack_bin_body(pk, evbuffer_pullup(body, -1), len);
}

static void pack_request(msgpack_packer *pk, struct conn *c,
			 struct evbuffer *body)
{
	const char *method =
	    c->req.method.len ? NULL : llhttp_method_name(c->parser.method);

	msgpack_pack_map(pk, 7);
	pack_cstr(pk, "method");
	if (method)
		pack_cstr(pk, method);
	else
		pack_str(pk, http_str(&c->req, c->req.method),
			 c->req.method.len);
	pack_cstr(pk, "path");
	pack_str(pk, http_str(&c->req, c->target), c->target.len);
	pack_cstr(pk, "headers");
	pack_headers(pk, &c->req);
	pack_cstr(pk, "body");
	pack_body(pk, body);
	pack_cstr(pk, "scheme");
	pack_cstr(pk, "http");
	pack_cstr(pk, "remote_addr");
	pack_cstr(pk, c->peer);
	pack_cstr(pk, "listen_path");
	pack_cstr(pk, c->api->listen_path);
}

static void hooked_done(struct pool_call *call);

static void hooked_submit(struct conn *c, enum pool_phase phase)
{
	struct pool_call *call = calloc(1, sizeof(*call));
	bool resp = phase == POOL_PHASE_RESPONSE;
	bool sess = resp && c->hook_session;
	msgpack_sbuffer sb;
	msgpack_packer pk;

	if (!call) {
		conn_fail(c, 503, "out of memory");
		return;
	}
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 3 + resp + sess);
	pack_cstr(&pk, "api");
	pack_cstr(&pk, c->api->name);
	pack_cstr(&pk, "phase");
	pack_cstr(&pk, resp ? "response" : "request");
	pack_cstr(&pk, "req");
	pack_request(&pk, c, resp ? NULL : c->body);
	if (resp) {
		pack_cstr(&pk, "resp");
		msgpack_pack_map(&pk, 3);
		pack_cstr(&pk, "status");
		msgpack_pack_int(&pk, c->status);
		pack_cstr(&pk, "headers");
		pack_headers(&pk, &c->resp);
		pack_cstr(&pk, "body");
		pack_body(&pk, c->body);
	}
	if (sess) {
		/* Already msgpack: appended as it came. */
		pack_cstr(&pk, "sess");
		msgpack_sbuffer_write(&sb, c->hook_session,
				      c->hook_session_len);
	}

	snprintf(call->api_name, sizeof(call->api_name), "%s", c->api->name);
	call->phase = phase;
	call->msg = sb.data; /* the pool frees it */
	call->msg_len = sb.size;
	call->origin = c->t->base;
	call->done = hooked_done;
	call->arg = c;
	c->call = call;
	c->phase = phase == POOL_PHASE_RESPONSE ? CONN_HOOK_RESPONSE
						: CONN_HOOK_REQUEST;
	pool_submit(c->t->d->pool, call);
}

void hooked_body_done(struct conn *c)
{
	if (c->parse_status)
		return; /* 413: conn_read answers it */
	hooked_submit(c, POOL_PHASE_REQUEST);
}

void hooked_response(struct conn *c)
{
	/* The whole response is here: the upstream connection is free. */
	upstream_detach(c);
	hooked_submit(c, POOL_PHASE_RESPONSE);
}

/* ---- applying a result ----------------------------------------------- */

/* Replace HEAD's header list with [[name, value], ...]. */
static int apply_headers(struct http_head *head, const msgpack_object *list)
{
	if (!list || list->type != MSGPACK_OBJECT_ARRAY)
		return -1;
	head->header_count = 0;
	for (uint32_t i = 0; i < list->via.array.size; i++) {
		const msgpack_object *pair = &list->via.array.ptr[i];
		const char *name, *value;
		size_t name_len, value_len;
		char name_z[256];

		if (pair->type != MSGPACK_OBJECT_ARRAY ||
		    pair->via.array.size != 2 ||
		    !msg_bytes(&pair->via.array.ptr[0], &name, &name_len) ||
		    !msg_bytes(&pair->via.array.ptr[1], &value, &value_len) ||
		    name_len == 0 || name_len >= sizeof(name_z))
			return -1;
		memcpy(name_z, name, name_len);
		name_z[name_len] = '\0';
		/* A hook must not smuggle line breaks into a head. */
		if (memchr(value, '\r', value_len) ||
		    memchr(value, '\n', value_len) ||
		    strcspn(name_z, ":\r\n \t") < name_len)
			return -1;
		if (http_head_add(head, name_z, value, value_len))
			return -1;
	}
	return 0;
}

static void set_body(struct conn *c, const msgpack_object *o)
{
	const char *p;
	size_t len;

	if (!msg_bytes(o, &p, &len))
		return;
	evbuffer_drain(c->body, evbuffer_get_length(c->body));
	evbuffer_add(c->body, p, len);
}

/* Answer the client with a complete response built from a "reply" map or
 * the edited response. */
static void send_buffered_response(struct conn *c)
{
	struct evbuffer *out = stream_output(c->io);

	http_head_strip_hop_by_hop(&c->resp);
	if (c->resp.reason.len == 0)
		http_span_set(&c->resp, &c->resp.reason, http_reason(c->status),
			      strlen(http_reason(c->status)));
	c->bytes_out = evbuffer_get_length(c->body);
	upstream_write_response_head(c, c->body);
	if (!c->is_head_method)
		evbuffer_add_buffer(out, c->body);
	else
		evbuffer_drain(c->body, evbuffer_get_length(c->body));
	c->resp_done = true;
	conn_finish(c);
}

static int apply_reply(struct conn *c, const msgpack_object *reply)
{
	const msgpack_object *status = msg_get(reply, "status");
	const msgpack_object *headers = msg_get(reply, "headers");

	if (!status || status->type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
	    status->via.u64 < 100 || status->via.u64 > 599)
		return -1;
	upstream_detach(c);
	http_head_reset(&c->resp);
	c->status = (int)status->via.u64;
	if (headers && apply_headers(&c->resp, headers))
		return -1;
	evbuffer_drain(c->body, evbuffer_get_length(c->body));
	set_body(c, msg_get(reply, "body"));
	send_buffered_response(c);
	return 0;
}

/* Whether any of SET occurs in the LEN bytes at P (not NUL-terminated). */
static bool bytes_have_any(const char *p, size_t len, const char *set)
{
	for (; *set; set++)
		if (memchr(p, *set, len))
			return true;
	return false;
}

static int apply_request(struct conn *c, const msgpack_object *req)
{
	const msgpack_object *o;
	const char *p;
	size_t len;

	if ((o = msg_get(req, "method")) && msg_bytes(o, &p, &len)) {
		if (len == 0 || len > 32 || bytes_have_any(p, len, " \r\n"))
			return -1;
		http_span_set(&c->req, &c->req.method, p, len);
	}
	if ((o = msg_get(req, "path")) && msg_bytes(o, &p, &len)) {
		if (len == 0 || p[0] != '/' || bytes_have_any(p, len, " \r\n"))
			return -1;
		http_span_set(&c->req, &c->target, p, len);
	}
	if ((o = msg_get(req, "headers")) && apply_headers(&c->req, o))
		return -1;
	if ((o = msg_get(req, "body"))) {
		set_body(c, o);
		c->req_has_body = true;
	}
	/* What a hook adds is framed by us, like the client's headers. */
	http_head_strip_hop_by_hop(&c->req);
	return 0;
}

static int apply_response(struct conn *c, const msgpack_object *resp)
{
	const msgpack_object *o;

	if ((o = msg_get(resp, "status"))) {
		if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
		    o->via.u64 < 100 || o->via.u64 > 599)
			return -1;
		c->status = (int)o->via.u64;
		c->resp.reason.len = 0;
	}
	if ((o = msg_get(resp, "headers")) && apply_headers(&c->resp, o))
		return -1;
	set_body(c, msg_get(resp, "body"));
	return 0;
}

static void forward_unchanged(struct conn *c, enum pool_phase phase)
{
	if (phase == POOL_PHASE_RESPONSE) {
		send_buffered_response(c);
		return;
	}
	c->phase = CONN_FORWARD;
	upstream_forward(c, c->req_has_body ? c->body : NULL);
}

/* Keep the session the request chain passes on ("sess") for the response
 * visit, as msgpack. Only APIs with response hooks are sent one. */
static int keep_session(struct conn *c, const msgpack_object *sess)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;

	if (!c->response_hooks)
		return 0;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	if (msgpack_pack_object(&pk, *sess) || !sb.data) {
		msgpack_sbuffer_destroy(&sb);
		return -1;
	}
	free(c->hook_session);
	c->hook_session = sb.data; /* ours now: freed with the exchange */
	c->hook_session_len = sb.size;
	return 0;
}

/* A count or a number of seconds a hook set, as an integer: never
 * negative, NaN or past what a quota or a period could mean. */
static int64_t hook_count(double n)
{
	return n > 0 ? (int64_t)(n < 1e12 ? n : 1e12) : 0;
}

void hooked_limit(void *arg, const char *api, const msgpack_object *lim,
		  bool count_rate, bool count_quota,
		  struct pool_limit_verdict *out)
{
	struct limits *limits = arg;
	struct limit_spec spec = {0};
	struct limit_state st;
	const char *key;
	size_t key_len;
	double n;

	if (!msg_bytes(msg_get(lim, "key"), &key, &key_len))
		return;
	if (msg_number(msg_get(lim, "rate"), &n))
		spec.rate = n;
	if (msg_number(msg_get(lim, "per"), &n))
		spec.per = n;
	if (msg_number(msg_get(lim, "quota_max"), &n))
		spec.quota_max = hook_count(n);
	if (msg_number(msg_get(lim, "quota_period"), &n))
		spec.quota_period_s = hook_count(n);
	out->rate = spec.rate;
	out->per = spec.per;
	out->quota_max = spec.quota_max;
	out->quota_period_s = spec.quota_period_s;
	if (!count_rate)
		spec.rate = spec.per = 0;
	if (!count_quota)
		spec.quota_max = 0;
	switch (limit_take(limits, api, key, key_len, &spec, now_ms(), &st)) {
	case LIMIT_RATE:
		out->verdict = "rate";
		break;
	case LIMIT_QUOTA:
		out->verdict = "quota";
		break;
	default:
		out->verdict = "pass";
		break;
	}
	out->wait_ms = st.wait_ms;
	out->quota_remaining = st.quota_remaining;
	out->quota_renews_ms = st.quota_renews_ms;
}

/* What the client is told is left of its quota ("quota" of a result). */
static void keep_quota(struct conn *c, const msgpack_object *quota)
{
	double n;

	if (msg_number(msg_get(quota, "max"), &n))
		c->quota.max = hook_count(n);
	if (msg_number(msg_get(quota, "remaining"), &n))
		c->quota.remaining = hook_count(n);
	if (msg_number(msg_get(quota, "reset"), &n))
		c->quota.reset = hook_count(n);
}

void hooked_write_quota(struct conn *c, struct evbuffer *out)
{
	static const char *const names[] = {
	    "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"};

	if (c->quota.max <= 0)
		return;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		http_head_delete(&c->resp, names[i]);
	evbuffer_add_printf(out, "%s: %lld\r\n%s: %lld\r\n", names[0],
			    (long long)c->quota.max, names[1],
			    (long long)c->quota.remaining);
	if (c->quota.reset)
		evbuffer_add_printf(out, "%s: %lld\r\n", names[2],
				    (long long)c->quota.reset);
}

/* Answer a key refused for its limits as the worker would (Tyk's body),
 * with Retry-After when waiting will do. */
static void refuse_key(struct conn *c, const struct pool_limit_verdict *v)
{
	bool rate = !strcmp(v->verdict, "rate");
	char retry[24];
	int n;

	upstream_detach(c);
	http_head_reset(&c->resp);
	c->status = rate ? 429 : 403;
	http_head_add(&c->resp, "Content-Type", "application/json",
		      strlen("application/json"));
	if (v->wait_ms >= 0) {
		long long s = (long long)(v->wait_ms + 999) / 1000;

		n = snprintf(retry, sizeof(retry), "%lld", s > 0 ? s : 1);
		http_head_add(&c->resp, "Retry-After", retry, (size_t)n);
	}
	evbuffer_drain(c->body, evbuffer_get_length(c->body));
	evbuffer_add_printf(c->body, "{\"error\": \"%s\"}",
			    rate ? "Rate limit exceeded" : "Quota exceeded");
	send_buffered_response(c);
}

/* "lim" of a result: limits the worker left for the front to count (see
 * common/msg.h). True when the key is refused and answered. */
static bool count_limits(struct conn *c, const msgpack_object *lim)
{
	struct pool_limit_verdict v = {.verdict = "pass"};

	hooked_limit(c->t->d->limits, c->api->name, lim, true, true, &v);
	if (strcmp(v.verdict, "pass")) {
		refuse_key(c, &v);
		return true;
	}
	if (v.quota_remaining >= 0) {
		c->quota.max = v.quota_max;
		c->quota.remaining = v.quota_remaining;
		c->quota.reset =
		    v.quota_renews_ms < 0
			? 0
			: time(NULL) + (v.quota_renews_ms + 999) / 1000;
	}
	return false;
}

/* A result the hooks returned normally. Returns -1 when it is malformed. */
static int apply_result(struct conn *c, enum pool_phase phase,
			const char *reply, size_t len)
{
	msgpack_unpacked msg;
	const msgpack_object *root, *o;
	int err = -1;

	msgpack_unpacked_init(&msg);
	if (msgpack_unpack_next(&msg, reply, len, NULL) !=
	    MSGPACK_UNPACK_SUCCESS)
		goto out;
	root = &msg.data;
	if ((o = msg_get(root, "reply"))) {
		err = apply_reply(c, o);
		goto out;
	}
	if (phase == POOL_PHASE_REQUEST) {
		if ((o = msg_get(root, "lim")) && count_limits(c, o)) {
			err = 0;
			goto out;
		}
		if ((o = msg_get(root, "quota")))
			keep_quota(c, o);
		if ((o = msg_get(root, "req")) && apply_request(c, o))
			goto out;
		if ((o = msg_get(root, "sess")) && keep_session(c, o))
			goto out;
	} else if ((o = msg_get(root, "resp")) && apply_response(c, o)) {
		goto out;
	}
	err = 0;
	forward_unchanged(c, phase);
out:
	msgpack_unpacked_destroy(&msg);
	return err;
}

/* How a failed call answers the client: on_error reject gives the status
 * below; continue sends the request (or response) on unchanged. Queue and
 * import problems are never "continued": the hooks did not run at all. */
static void apply_failure(struct conn *c, struct pool_call *call)
{
	const struct rules_middleware *mw = c->api->middleware;
	int status = 502;
	const char *why = "hook failed";

	switch (call->result) {
	case POOL_TIMEOUT:
		status = 504;
		why = "hook deadline passed";
		break;
	case POOL_WORKER_DIED:
		status = 502;
		why = "hook worker died";
		break;
	case POOL_HOOK_ERROR:
		status = 500;
		why = "hook raised an exception";
		break;
	case POOL_QUEUE_FULL:
		conn_fail(c, 503, "hook queue full");
		return;
	case POOL_QUEUE_TIMEOUT:
		conn_fail(c, 503, "waited too long for a hook worker");
		return;
	case POOL_UNAVAILABLE:
		conn_fail(c, 503,
			  call->error ? call->error
				      : "hook modules do not import");
		return;
	default:
		conn_fail(c, 503, "gateway is stopping");
		return;
	}
	if (mw->on_error == RULES_ON_ERROR_CONTINUE) {
		log_debug("hook failed, continuing api=%s reason=\"%s\"",
			  c->api->name, why);
		forward_unchanged(c, call->phase);
		return;
	}
	conn_fail(c, status, why);
}

static void hooked_done(struct pool_call *call)
{
	struct conn *c = call->arg;

	c->call = NULL;
	if (c->dead) {
		conn_free(c);
	} else if (call->result != POOL_OK) {
		apply_failure(c, call);
	} else if (apply_result(c, call->phase, call->reply, call->reply_len)) {
		log_warn("hook result malformed api=%s", c->api->name);
		conn_fail(c, 502, "hook returned a malformed result");
	}
	free(call->reply);
	free(call->error);
	free(call);
}
