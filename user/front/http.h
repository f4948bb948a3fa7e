/* HTTP/1.1 message heads: collected from llhttp callbacks, edited, and
 * written out again for the other side.
 *
 * A head keeps its strings in one growing arena; headers are spans into it.
 * Edits (hooks, X-Forwarded-*) append to the arena and re-point spans, so a
 * head never needs more than one allocation per growth step.
 */
#ifndef SLUICE_HTTP_H
#define SLUICE_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;

#define HTTP_MAX_HEADERS 128

struct http_span {
	uint32_t off;
	uint32_t len;
};

struct http_header {
	struct http_span name;
	struct http_span value;
};

struct http_head {
	char *arena;
	size_t arena_len;
	size_t arena_cap;

	struct http_span method; /* request */
	struct http_span target; /* request: path and query */
	int status;		 /* response */
	struct http_span reason; /* response */
	uint8_t major, minor;

	struct http_header headers[HTTP_MAX_HEADERS];
	size_t header_count;
	bool too_many_headers;
	/* Whether the last span appended was a header name (0) or value (1),
	 * so llhttp's pieces of one token are joined. -1 before any. */
	int last_piece;
};

void http_head_init(struct http_head *head);
void http_head_reset(struct http_head *head);
void http_head_free(struct http_head *head);

/* Append bytes to a span that must be the arena's last one (or empty). */
int http_span_append(struct http_head *head, struct http_span *span,
		     const char *data, size_t len);
/* Copy a string into the arena and return its span. */
int http_span_set(struct http_head *head, struct http_span *span,
		  const char *data, size_t len);

static inline const char *http_str(const struct http_head *head,
				   struct http_span span)
{
	return head->arena + span.off;
}

/* llhttp callback glue: pieces of header names and values. */
int http_head_on_field(struct http_head *head, const char *data, size_t len);
int http_head_on_value(struct http_head *head, const char *data, size_t len);

/* The first header named NAME (case-insensitive), or NULL. */
const struct http_header *http_head_find(const struct http_head *head,
					 const char *name);
bool http_span_eq(const struct http_head *head, struct http_span span,
		  const char *text);
/* Whether a comma-separated header value list contains TOKEN. */
bool http_value_has_token(const char *value, size_t len, const char *token);

void http_head_remove(struct http_head *head, size_t index);
int http_head_add(struct http_head *head, const char *name, const char *value,
		  size_t value_len);
void http_head_delete(struct http_head *head, const char *name);

/* Hop-by-hop headers (RFC 9110 7.6.1): Connection and every header it
 * names, Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding,
 * Upgrade. Content-Length and Expect are removed too: the front writes its
 * own framing. */
void http_head_strip_hop_by_hop(struct http_head *head);

/* Write "NAME: VALUE\r\n" for every header. */
void http_head_write_headers(const struct http_head *head,
			     struct evbuffer *out);

/* A piece of a body: as is, or as one chunk when CHUNKED. */
void http_write_body(struct evbuffer *out, const char *data, size_t len,
		     bool chunked);

/* A short JSON error response: {"error":"...","status":N}. */
void http_write_error(struct evbuffer *out, int status, const char *message,
		      bool close);
const char *http_reason(int status);

#endif
