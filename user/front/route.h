/* Routing: which API answers a request.
 *
 * Order: the listener the connection arrived on, then the Host, then the
 * longest listen_path prefix.
 *   - A shared listener (top-level `listen:`) serves the APIs that have no
 *     `listen:` of their own; an API's own address serves only the APIs that
 *     name it.
 *   - Among those, the APIs with an exact host match win; failing that, the
 *     longest matching "*.suffix"; failing that, the APIs without `hosts:`.
 *     The Host header's port is ignored and case does not matter.
 *   - In the chosen group, the longest listen_path that prefixes the path
 *     wins. "/catalog/" also matches the bare "/catalog". There is no
 *     fallback to another group: no match is a 404.
 */
#ifndef SLUICE_ROUTE_H
#define SLUICE_ROUTE_H

#include <stdbool.h>
#include <stddef.h>

#include "common/rules.h"

/* LISTENER is the address text the connection was accepted on (a
 * rules_addr.text). Returns NULL when nothing matches. */
const struct rules_api *route_match(const struct rules *rules,
				    const char *listener, const char *host,
				    size_t host_len, const char *path,
				    size_t path_len);

/* The API when it is the only one served on LISTENER (an own listener with
 * one API): such connections can be handed to the kernel whole. A hooked
 * API is never returned: its requests must reach the hooks. */
const struct rules_api *route_exclusive(const struct rules *rules,
					const char *listener);

/* Whether the API's route is fixed by Host alone (hosts set and
 * listen_path "/"), so a keep-alive connection can be spliced after its
 * first response. False for hooked APIs, and when another API on the same
 * listeners lists one of its hosts (a path could then pick that one);
 * computed at load time into rules_api.host_only. */
bool route_is_host_only(const struct rules_api *api);

/* Write the request target the upstream sees into out: listen_path removed
 * when strip_listen_path, the upstream's base path prepended, the query
 * kept; never empty ("/" at least). Returns the length, or -1 when out is
 * too small. */
int route_upstream_target(const struct rules_api *api,
			  const struct rules_upstream *upstream,
			  const char *target, size_t target_len, char *out,
			  size_t out_len);

#endif
