#include "front/http.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

void http_head_init(struct http_head *head)
{
	memset(head, 0, sizeof(*head));
	head->last_piece = -1;
}

void http_head_reset(struct http_head *head)
{
	char *arena = head->arena;
	size_t cap = head->arena_cap;

	/* Keep a small arena for the next request on this connection; a big
	 * one (a large head) goes back to the allocator. */
	if (cap > 4096) {
		free(arena);
		arena = NULL;
		cap = 0;
	}
	memset(head, 0, sizeof(*head));
	head->arena = arena;
	head->arena_cap = cap;
	head->last_piece = -1;
}

void http_head_free(struct http_head *head)
{
	free(head->arena);
	http_head_init(head);
}

static int arena_reserve(struct http_head *head, size_t more)
{
	size_t need = head->arena_len + more;
	size_t cap = head->arena_cap ? head->arena_cap : 512;
	char *arena;

	if (need <= head->arena_cap)
		return 0;
	if (need > UINT32_MAX)
		return -E2BIG;
	while (cap < need)
		cap *= 2;
	arena = realloc(head->arena, cap);
	if (!arena)
		return -ENOMEM;
	head->arena = arena;
	head->arena_cap = cap;
	return 0;
}

int http_span_append(struct http_head *head, struct http_span *span,
		     const char *data, size_t len)
{
	int err = arena_reserve(head, len);

	if (err)
		return err;
	if (span->len == 0)
		span->off = head->arena_len;
	memcpy(head->arena + head->arena_len, data, len);
	head->arena_len += len;
	span->len += len;
	return 0;
}

int http_span_set(struct http_head *head, struct http_span *span,
		  const char *data, size_t len)
{
	span->len = 0;
	span->off = head->arena_len;
	return http_span_append(head, span, data, len);
}

int http_head_on_field(struct http_head *head, const char *data, size_t len)
{
	struct http_header *h;

	if (head->last_piece != 0) {
		if (head->header_count == HTTP_MAX_HEADERS) {
			head->too_many_headers = true;
			return 0;
		}
		h = &head->headers[head->header_count++];
		memset(h, 0, sizeof(*h));
		head->last_piece = 0;
	}
	if (head->too_many_headers)
		return 0;
	h = &head->headers[head->header_count - 1];
	return http_span_append(head, &h->name, data, len);
}

int http_head_on_value(struct http_head *head, const char *data, size_t len)
{
	struct http_header *h;

	if (head->too_many_headers || head->header_count == 0)
		return 0;
	h = &head->headers[head->header_count - 1];
	head->last_piece = 1;
	return http_span_append(head, &h->value, data, len);
}

bool http_span_eq(const struct http_head *head, struct http_span span,
		  const char *text)
{
	size_t len = strlen(text);

	return span.len == len &&
	       strncasecmp(http_str(head, span), text, len) == 0;
}

const struct http_header *http_head_find(const struct http_head *head,
					 const char *name)
{
	for (size_t i = 0; i < head->header_count; i++)
		if (http_span_eq(head, head->headers[i].name, name))
			return &head->headers[i];
	return NULL;
}

bool http_value_has_token(const char *value, size_t len, const char *token)
{
	size_t token_len = strlen(token);
	size_t i = 0;

	while (i < len) {
		size_t start, end;

		while (i < len &&
		       (value[i] == ',' || value[i] == ' ' || value[i] == '\t'))
			i++;
		start = i;
		while (i < len && value[i] != ',')
			i++;
		end = i;
		while (end > start &&
		       (value[end - 1] == ' ' || value[end - 1] == '\t'))
			end--;
		if (end - start == token_len &&
		    strncasecmp(value + start, token, token_len) == 0)
			return true;
	}
	return false;
}

void http_head_remove(struct http_head *head, size_t index)
{
	memmove(&head->headers[index], &head->headers[index + 1],
		(head->header_count - index - 1) * sizeof(head->headers[0]));
	head->header_count--;
}

void http_head_delete(struct http_head *head, const char *name)
{
	for (size_t i = head->header_count; i-- > 0;)
		if (http_span_eq(head, head->headers[i].name, name))
			http_head_remove(head, i);
}

int http_head_add(struct http_head *head, const char *name, const char *value,
		  size_t value_len)
{
	struct http_header *h;
	int err;

	if (head->header_count == HTTP_MAX_HEADERS)
		return -E2BIG;
	h = &head->headers[head->header_count];
	memset(h, 0, sizeof(*h));
	err = http_span_set(head, &h->name, name, strlen(name));
	if (!err)
		err = http_span_set(head, &h->value, value, value_len);
	if (err)
		return err;
	head->header_count++;
	return 0;
}

static const char *const hop_by_hop[] = {
    "connection",	 "keep-alive", "proxy-connection", "te",     "trailer",
    "transfer-encoding", "upgrade",    "content-length",   "expect",
};

static bool named_in_connection(const struct http_head *head,
				const struct http_header *h)
{
	for (size_t i = 0; i < head->header_count; i++) {
		const struct http_header *c = &head->headers[i];
		char name[128];

		if (!http_span_eq(head, c->name, "connection"))
			continue;
		if (h->name.len >= sizeof(name))
			return false;
		memcpy(name, http_str(head, h->name), h->name.len);
		name[h->name.len] = '\0';
		if (http_value_has_token(http_str(head, c->value), c->value.len,
					 name))
			return true;
	}
	return false;
}

void http_head_strip_hop_by_hop(struct http_head *head)
{
	for (size_t i = head->header_count; i-- > 0;) {
		const struct http_header *h = &head->headers[i];
		bool drop = named_in_connection(head, h);

		for (size_t k = 0;
		     !drop && k < sizeof(hop_by_hop) / sizeof(hop_by_hop[0]);
		     k++)
			drop = http_span_eq(head, h->name, hop_by_hop[k]);
		if (drop)
			http_head_remove(head, i);
	}
}

void http_head_write_headers(const struct http_head *head, struct evbuffer *out)
{
	for (size_t i = 0; i < head->header_count; i++) {
		const struct http_header *h = &head->headers[i];

		evbuffer_add(out, http_str(head, h->name), h->name.len);
		evbuffer_add(out, ": ", 2);
		evbuffer_add(out, http_str(head, h->value), h->value.len);
		evbuffer_add(out, "\r\n", 2);
	}
}

void http_write_body(struct evbuffer *out, const char *data, size_t len,
		     bool chunked)
{
	if (chunked)
		evbuffer_add_printf(out, "%zx\r\n", len);
	evbuffer_add(out, data, len);
	if (chunked)
		evbuffer_add(out, "\r\n", 2);
}

const char *http_reason(int status)
{
	switch (status) {
	case 100:
		return "Continue";
	case 200:
		return "OK";
	case 204:
		return "No Content";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 413:
		return "Content Too Large";
	case 414:
		return "URI Too Long";
	case 429:
		return "Too Many Requests";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	case 501:
		return "Not Implemented";
	case 502:
		return "Bad Gateway";
	case 503:
		return "Service Unavailable";
	case 504:
		return "Gateway Timeout";
	case 505:
		return "HTTP Version Not Supported";
	default:
		return "Unknown";
	}
}

void http_write_error(struct evbuffer *out, int status, const char *message,
		      bool close)
{
	char body[512];
	int n = 0;

	/* Messages are ours, never the client's bytes: no escaping needed
	 * beyond refusing quotes and backslashes. */
	n = snprintf(body, sizeof(body), "{\"error\":\"");
	for (const char *p = message; *p && n < (int)sizeof(body) - 32; p++)
		body[n++] = (*p == '"' || *p == '\\' || *p < 0x20) ? '\'' : *p;
	n +=
	    snprintf(body + n, sizeof(body) - n, "\",\"status\":%d}\n", status);
	evbuffer_add_printf(out,
			    "HTTP/1.1 %d %s\r\n"
			    "Content-Type: application/json\r\n"
			    "Content-Length: %d\r\n"
			    "%s\r\n",
			    status, http_reason(status), n,
			    close ? "Connection: close\r\n" : "");
	evbuffer_add(out, body, n);
}
