/* Handing a connection to the kernel (or a relay) after its first answer.
 *
 * Two routes cannot change for the rest of a connection: an API alone on
 * its own listener, and a host-only route (hosts set, listen_path "/") on a
 * keep-alive connection. Their first request goes through the front like
 * any other — parsed, forwarded, counted — and once its response is
 * complete the client socket and the upstream socket are given to a relay
 * in the configured mode (sockmap, pipe or copy) until either side closes.
 */
#ifndef SLUICE_HANDOFF_H
#define SLUICE_HANDOFF_H

#include <stdbool.h>

struct conn;
struct front_thread;

/* Called when an exchange finished cleanly and the connection would be
 * kept. True when the connection was handed off (the conn is freed). */
bool handoff_try(struct conn *c);

/* Thread stopping: abort every relay it started. */
void handoff_thread_stop(struct front_thread *t);

#endif
