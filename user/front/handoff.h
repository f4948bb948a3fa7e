/* Whole-connection hand-off: a plain API alone on its own listener is an L4
 * pass-through. Each accepted connection is paired with a fresh upstream
 * connection and given to a relay (copy, pipe or sockmap); the front never
 * parses its bytes. The connection counts as one request of that API.
 */
#ifndef SLUICE_HANDOFF_H
#define SLUICE_HANDOFF_H

#include <stdbool.h>
#include <sys/socket.h>

struct front_thread;

/* True when the socket was taken (it belongs to the hand-off now). */
bool handoff_accept(struct front_thread *t, int fd, const struct sockaddr *sa,
		    const char *listener);

/* Thread stopping: close every hand-off and relay it owns. */
void handoff_thread_stop(struct front_thread *t);

#endif
