/* A client connection and the exchange in progress on it.
 *
 * Steps of one exchange, each in its own function (conn.c unless noted):
 *   read head      llhttp callbacks fill conn.req; paused at the head's end
 *   route          conn_route(): 404, 4xx for bad framing, else an API
 *   hooks          hooked APIs: buffer the body, one pool visit (hooked.c)
 *   forward        upstream_forward(): head + streaming body (upstream.c)
 *   response       upstream parser writes the head and body to the client
 *   finish         conn_finish(): stats, access log, keep-alive or close
 *
 * Ownership: the conn owns its client stream and socket, its rules
 * reference for the exchange, and the upstream connection while it is
 * attached. It is freed by conn_free() only when no pool call is pending.
 */
#ifndef SLUICE_CONN_H
#define SLUICE_CONN_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include <llhttp.h>

#include "front/http.h"
#include "front/sluiced.h"

struct stream;
struct evbuffer;
struct pool_call;
struct relay_body;

enum conn_phase {
	CONN_READ_HEAD = 0, /* waiting for, or reading, a request head */
	CONN_READ_BODY,	    /* buffering a body for the request hooks */
	CONN_HOOK_REQUEST,  /* waiting for the pool */
	CONN_FORWARD,	    /* upstream exchange in progress */
	CONN_HOOK_RESPONSE, /* waiting for the pool, response side */
	CONN_CLOSING,	    /* flushing the last bytes, then close */
	CONN_HANDED_OFF,    /* the sockets belong to a relay now */
};

/* A connection to an upstream, attached to one conn or idle in its thread's
 * keep-alive pool. */
struct upconn {
	TAILQ_ENTRY(upconn) idle_link;
	struct front_thread *t;
	struct stream *io;
	int fd;
	struct sockaddr_storage sa;
	socklen_t sa_len;
	struct conn *owner; /* NULL while idle */
	llhttp_t parser;
	bool reused; /* taken from the idle pool */
	bool connected;
	int64_t idle_since_ms;
};

struct conn {
	LIST_ENTRY(conn) link;
	struct front_thread *t;
	struct stream *io;
	int fd;
	const char *listener;
	char peer[48];
	enum conn_phase phase;
	struct event *timer;

	/* Request side. */
	llhttp_t parser;
	struct http_head req;
	bool in_head;
	bool head_complete; /* paused at the end of a head */
	bool parsing;	    /* inside conn_read: defer frees */
	bool free_pending;
	bool client_eof;
	bool read_blocked; /* upstream output full: client reads off */
	size_t head_bytes;
	char head_prev;	  /* last head byte seen, for the CRLF checks */
	int parse_status; /* status a callback asked for (431, 413) */
	bool req_chunked;
	bool req_has_body;
	uint64_t req_length; /* Content-Length when !req_chunked */
	bool req_done;	     /* request message complete */
	bool keep_alive;
	bool is_head_method;
	bool expect_continue;
	uint64_t requests; /* on this connection */

	/* The exchange. */
	struct rules *rules; /* reference held for the exchange */
	const struct rules_api *api;
	const struct rules_upstream *upstream;
	int slot; /* stats slot, -1 before routing */
	int64_t started_us;
	struct upconn *up;
	bool retried;
	struct http_span target; /* what the upstream sees, in req's arena */

	/* Response side. */
	struct http_head resp;
	int status;
	bool resp_started; /* head written to the client */
	bool resp_chunked; /* chunked towards the client */
	bool resp_done;
	uint64_t bytes_in, bytes_out;
	bool close_after;

	/* Hooks (hooked.c). */
	struct evbuffer *body;	/* buffered request or response body */
	struct pool_call *call; /* pending; conn_free waits for it */
	bool dead;		/* client gone while a call is pending */
	bool response_hooks;	/* buffer the response for a 2nd visit */
	/* The session the request chain left, msgpack-encoded, for the
	 * response visit; NULL when there is none. */
	char *hook_session;
	size_t hook_session_len;
	/* The key's quota after this request, for the X-RateLimit-* headers
	 * of the upstream's answer (as Tyk sends them); max 0: none. */
	struct {
		int64_t max, remaining;
		int64_t reset; /* unix seconds; 0: it never renews */
	} quota;

	/* Large bodies by splice(2) (bodysplice.c). */
	uint64_t splice_left; /* body bytes not yet moved */
	uint64_t splice_len;  /* bytes given to the pipe; 0: not started */
	bool splice_up;	      /* request body (else response body) */
	struct relay_body *body_relay;
};

extern const llhttp_settings_t conn_request_settings;

/* thread.c accepts; conn.c takes it from there. */
void conn_accept(struct front_thread *t, int fd, const struct sockaddr *sa,
		 const char *listener);
void conn_free(struct conn *c);
void conn_set_client_timeouts(struct conn *c, bool expect_input);
/* TERM: close the connection now if it is between requests. */
void conn_drain(struct conn *c);

/* Answer STATUS with a JSON error for this request only. */
void conn_fail(struct conn *c, int status, const char *message);
/* The response is complete (or was an error): count it, then keep the
 * connection for the next request or close it. */
void conn_finish(struct conn *c);
/* Parse what the client sent, if the phase allows. */
void conn_read(struct conn *c);
/* Something broke after the response head went out: close both sides. */
void conn_abort(struct conn *c, const char *why);

/* upstream.c */
void upstream_forward(struct conn *c, struct evbuffer *body);
void upstream_send_body(struct conn *c, const char *data, size_t len);
void upstream_end_body(struct conn *c);
void upstream_release(struct upconn *u, bool reusable);
void upstream_detach(struct conn *c);
/* Response head to the client; BODY given: framed by its length. */
void upstream_write_response_head(struct conn *c, struct evbuffer *body);
void upstream_pool_sweep(struct front_thread *t);
void upstream_pool_clear(struct front_thread *t);

/* hooked.c */
void hooked_start(struct conn *c);
void hooked_body(struct conn *c, const char *data, size_t len);
void hooked_body_done(struct conn *c);
/* Response side: called by upstream.c with the complete response. */
void hooked_response(struct conn *c);
/* The X-RateLimit-* header lines for c->quota, replacing the upstream's. */
void hooked_write_quota(struct conn *c, struct evbuffer *out);
/* The pool's limiter (pool_set_limiter); ARG is sluiced's limits. */
struct msgpack_object;
struct pool_limit_verdict;
void hooked_limit(void *arg, const char *api, const struct msgpack_object *lim,
		  bool count_rate, bool count_quota,
		  struct pool_limit_verdict *out);

/* bodysplice.c */
bool body_splice_wanted(const struct conn *c, uint64_t length);
bool body_splice_request(struct conn *c);
void body_splice_response(struct conn *c);
void body_splice_resume(struct conn *c);
void body_splice_stop(struct conn *c);

/* access log (conn.c) */
void conn_log_access(struct conn *c, int64_t latency_us);

#endif
