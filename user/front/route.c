/* Routing: listener, then Host, then the longest listen_path prefix.
 *
 * Pure functions over an immutable `struct rules`: no allocation, no locks,
 * safe on every front thread at once. A request walks the API list twice
 * (pick the host group, then the path within it); rules files hold tens of
 * APIs, not thousands, so a scan beats building an index per generation.
 */
#include "front/route.h"

#include <string.h>
#include <strings.h>

/* Host ranks, best first: an exact name, a "*.suffix" ranked by suffix
 * length, then the APIs without hosts. 0 is no match. */
#define RANK_EXACT   (1 << 30)
#define RANK_NO_HOST 1

/* Whether LISTENER is one of the top-level shared listeners. */
static bool route_is_shared(const struct rules *rules, const char *listener)
{
	for (size_t i = 0; i < rules->listen_count; i++)
		if (strcmp(rules->listen[i].text, listener) == 0)
			return true;
	return false;
}

/* Whether API is served on LISTENER (SHARED: LISTENER is a shared one). */
static bool route_serves(const struct rules_api *api, const char *listener,
			 bool shared)
{
	if (shared)
		return api->listen_count == 0;
	for (size_t i = 0; i < api->listen_count; i++)
		if (strcmp(api->listen[i].text, listener) == 0)
			return true;
	return false;
}

/* The Host header without its port and trailing dot: "[::1]:80" gives
 * "[::1]", "Api.Example.com.:8080" gives "Api.Example.com". */
static size_t route_host_len(const char *host, size_t len)
{
	const char *end;

	if (len && host[0] == '[') {
		end = memchr(host, ']', len);
		return end ? (size_t)(end - host) + 1 : len;
	}
	end = memchr(host, ':', len);
	if (end)
		len = (size_t)(end - host);
	if (len && host[len - 1] == '.')
		len--;
	return len;
}

static int route_host_rank(const struct rules_api *api, const char *host,
			   size_t host_len)
{
	int best = 0;

	if (!api->host_count)
		return RANK_NO_HOST;
	for (size_t i = 0; i < api->host_count; i++) {
		const char *pattern = api->hosts[i];
		size_t plen = strlen(pattern);

		if (pattern[0] == '*') {
			/* "*.example.com" matches "a.example.com" and
			 * "a.b.example.com", never "example.com". */
			size_t suffix = plen - 1;

			if (host_len > suffix &&
			    strncasecmp(host + host_len - suffix, pattern + 1,
					suffix) == 0 &&
			    (int)suffix + 1 > best)
				best = (int)suffix + 1;
		} else if (plen == host_len &&
			   strncasecmp(host, pattern, plen) == 0) {
			return RANK_EXACT;
		}
	}
	return best;
}

/* How well listen_path matches PATH, 0 for not at all. A literal prefix
 * scores above the bare form ("/catalog" for "/catalog/") of a one byte
 * longer listen_path, so an API at "/catalog" keeps "/catalog". */
static size_t route_path_score(const char *listen_path, const char *path,
			       size_t path_len)
{
	size_t len = strlen(listen_path);

	if (len <= path_len && memcmp(path, listen_path, len) == 0)
		return 2 * len + 1;
	if (len > 1 && listen_path[len - 1] == '/' && path_len == len - 1 &&
	    memcmp(path, listen_path, path_len) == 0)
		return 2 * path_len;
	return 0;
}

const struct rules_api *route_match(const struct rules *rules,
				    const char *listener, const char *host,
				    size_t host_len, const char *path,
				    size_t path_len)
{
	const struct rules_api *best = NULL;
	size_t best_score = 0;
	bool shared;
	int group = 0;
	const char *query;

	if (!rules || !listener)
		return NULL;
	shared = route_is_shared(rules, listener);
	host_len = host ? route_host_len(host, host_len) : 0;
	query = memchr(path, '?', path_len);
	if (query)
		path_len = (size_t)(query - path);

	for (size_t i = 0; i < rules->api_count; i++) {
		const struct rules_api *api = &rules->apis[i];
		int rank;

		if (!route_serves(api, listener, shared))
			continue;
		rank = route_host_rank(api, host, host_len);
		if (rank > group)
			group = rank;
	}
	if (!group)
		return NULL;

	/* No fallback to a weaker host group: the path is looked up only
	 * among the APIs of the best one. */
	for (size_t i = 0; i < rules->api_count; i++) {
		const struct rules_api *api = &rules->apis[i];
		size_t score;

		if (!route_serves(api, listener, shared) ||
		    route_host_rank(api, host, host_len) != group)
			continue;
		score = route_path_score(api->listen_path, path, path_len);
		if (score > best_score) {
			best_score = score;
			best = api;
		}
	}
	return best;
}

const struct rules_api *route_exclusive(const struct rules *rules,
					const char *listener)
{
	const struct rules_api *only = NULL;

	if (!rules || !listener || route_is_shared(rules, listener))
		return NULL;
	for (size_t i = 0; i < rules->api_count; i++) {
		if (!route_serves(&rules->apis[i], listener, false))
			continue;
		if (only)
			return NULL;
		only = &rules->apis[i];
	}
	return only && !only->middleware ? only : NULL;
}

bool route_is_host_only(const struct rules_api *api)
{
	return api->host_only;
}

/* Append N bytes of S at *pos in OUT; false when they do not fit (with the
 * terminating NUL). */
static bool route_put(char *out, size_t out_len, size_t *pos, const char *s,
		      size_t n)
{
	if (*pos + n + 1 > out_len)
		return false;
	memcpy(out + *pos, s, n);
	*pos += n;
	out[*pos] = '\0';
	return true;
}

/* The part of PATH left after the listen_path. A listen_path ending in '/'
 * leaves that slash in place: "/catalog/items" under "/catalog/" is
 * "/items", and the bare "/catalog" is "". */
static size_t route_strip_len(const struct rules_api *api, const char *path,
			      size_t path_len)
{
	size_t len = strlen(api->listen_path);

	if (len > 0 && api->listen_path[len - 1] == '/') {
		if (path_len >= len - 1 &&
		    memcmp(path, api->listen_path, len - 1) == 0)
			return len - 1;
		return 0;
	}
	if (path_len >= len && memcmp(path, api->listen_path, len) == 0)
		return len;
	return 0;
}

int route_upstream_target(const struct rules_api *api,
			  const struct rules_upstream *upstream,
			  const char *target, size_t target_len, char *out,
			  size_t out_len)
{
	const char *query = memchr(target, '?', target_len);
	size_t path_len = query ? (size_t)(query - target) : target_len;
	const char *rest = target;
	size_t rest_len = path_len, pos = 0;
	const char *base = upstream->base_path ? upstream->base_path : "";

	if (api->strip_listen_path) {
		size_t strip = route_strip_len(api, target, path_len);

		rest += strip;
		rest_len -= strip;
	}
	if (out_len)
		out[0] = '\0';
	if (!route_put(out, out_len, &pos, base, strlen(base)))
		return -1;
	if (rest_len && rest[0] != '/' &&
	    !route_put(out, out_len, &pos, "/", 1))
		return -1;
	if (!route_put(out, out_len, &pos, rest, rest_len))
		return -1;
	if (pos == 0 && !route_put(out, out_len, &pos, "/", 1))
		return -1;
	if (query &&
	    !route_put(out, out_len, &pos, query, target_len - path_len))
		return -1;
	return (int)pos;
}
