/* A non-blocking socket with an input and an output evbuffer: what the
 * front uses for client and upstream connections.
 *
 * Like a libevent bufferevent, with fewer system calls per request, which is
 * most of a small request's cost:
 *   - output is written in the same loop iteration it was queued in (an
 *     event made active, no epoll change); EV_WRITE is armed only when the
 *     socket is full;
 *   - reads go straight into the input buffer (no FIONREAD first);
 *   - the read event stays registered while reading is on; timeouts ride on
 *     it, so re-arming one costs no system call.
 * Callbacks and event flags follow bufferevent's (BEV_EVENT_*). The stream
 * never closes its socket: the owner does.
 */
#ifndef SLUICE_STREAM_H
#define SLUICE_STREAM_H

#include <stddef.h>
#include <sys/socket.h>

#include <event2/bufferevent.h> /* BEV_EVENT_* */

struct event_base;
struct evbuffer;
struct stream;

typedef void (*stream_data_fn)(struct stream *s, void *arg);
typedef void (*stream_event_fn)(struct stream *s, short what, void *arg);

struct stream *stream_new(struct event_base *base, int fd);
void stream_free(struct stream *s);

/* readcb: new bytes in the input. writecb: a write left the output at or
 * below the low mark (stream_set_write_low; default 0). eventcb:
 * BEV_EVENT_CONNECTED, EOF, ERROR or TIMEOUT (with READING/WRITING). */
void stream_setcb(struct stream *s, stream_data_fn readcb,
		  stream_data_fn writecb, stream_event_fn eventcb, void *arg);
void stream_set_write_low(struct stream *s, size_t low);
/* Milliseconds without progress before TIMEOUT; 0 = none. The write
 * timeout also bounds a connect. */
void stream_set_timeouts(struct stream *s, int read_ms, int write_ms);

void stream_read_enable(struct stream *s);
void stream_read_disable(struct stream *s);

/* Start a non-blocking connect; CONNECTED or ERROR follows. Output queued
 * meanwhile goes once connected. Returns 0 or -errno. */
int stream_connect(struct stream *s, const struct sockaddr *sa, socklen_t len);

struct evbuffer *stream_input(struct stream *s);
struct evbuffer *stream_output(struct stream *s);
int stream_fd(const struct stream *s);

#endif
