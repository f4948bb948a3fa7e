#include "front/stream.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#define STREAM_READ_MAX	 (64 * 1024)
#define STREAM_WRITE_MAX (256 * 1024)

struct stream {
	int fd;
	struct event *ev_read;	/* persistent while reading is on */
	struct event *ev_write; /* armed only while the socket is full */
	struct event *ev_flush; /* made active when output is queued */
	/* Timeouts are timers of their own, not on the I/O events: moving
	 * or clearing a timer is a heap operation, never an epoll change. */
	struct event *read_timer, *write_timer;
	struct evbuffer *input, *output;
	stream_data_fn readcb, writecb;
	stream_event_fn eventcb;
	void *arg;
	size_t write_low;
	struct timeval read_tv, write_tv;
	bool has_read_tv, has_write_tv;
	bool reading;	 /* the owner wants input */
	bool connecting; /* waiting for a connect to finish */
	bool write_armed;
	bool flush_queued;
};

static void stream_event(struct stream *s, short what)
{
	if (s->eventcb)
		s->eventcb(s, what, s->arg);
}

/* Restart the read timer: reading is on and bytes are expected. */
static void read_timer_reset(struct stream *s)
{
	if (s->reading && s->has_read_tv)
		evtimer_add(s->read_timer, &s->read_tv);
	else
		evtimer_del(s->read_timer);
}

static void write_timer_reset(struct stream *s)
{
	if (s->write_armed && s->has_write_tv)
		evtimer_add(s->write_timer, &s->write_tv);
	else
		evtimer_del(s->write_timer);
}

static void arm_write(struct stream *s)
{
	if (!s->write_armed)
		event_add(s->ev_write, NULL);
	s->write_armed = true;
	write_timer_reset(s);
}

static void disarm_write(struct stream *s)
{
	if (s->write_armed)
		event_del(s->ev_write);
	s->write_armed = false;
	evtimer_del(s->write_timer);
}

/* Write what is queued; arm EV_WRITE only if the socket takes no more. */
static void stream_flush(struct stream *s)
{
	int n;

	s->flush_queued = false;
	if (s->connecting)
		return;
	if (evbuffer_get_length(s->output) == 0) {
		disarm_write(s);
		return;
	}
	n = evbuffer_write_atmost(s->output, s->fd, STREAM_WRITE_MAX);
	if (n < 0 && errno != EAGAIN && errno != EINTR) {
		disarm_write(s);
		stream_event(s, BEV_EVENT_WRITING | BEV_EVENT_ERROR);
		return;
	}
	if (evbuffer_get_length(s->output) > 0) {
		/* Re-arming refreshes the write timeout after progress. */
		if (!s->write_armed || n > 0)
			arm_write(s);
	} else {
		disarm_write(s);
	}
	if (n > 0 && evbuffer_get_length(s->output) <= s->write_low &&
	    s->writecb)
		s->writecb(s, s->arg);
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	stream_flush(arg);
}

static void output_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info,
		      void *arg)
{
	struct stream *s = arg;

	(void)buf;
	if (info->n_added == 0 || s->flush_queued || s->write_armed ||
	    s->connecting)
		return;
	s->flush_queued = true;
	event_active(s->ev_flush, EV_WRITE, 0);
}

static void connect_done(struct stream *s)
{
	int err = 0;
	socklen_t len = sizeof(err);

	s->connecting = false;
	disarm_write(s);
	if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err) {
		errno = err;
		stream_event(s, BEV_EVENT_ERROR);
		return;
	}
	stream_event(s, BEV_EVENT_CONNECTED);
	stream_flush(s);
}

static void write_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct stream *s = arg;

	(void)fd;
	(void)what;
	disarm_write(s);
	s->connecting = false;
	stream_event(s, BEV_EVENT_WRITING | BEV_EVENT_TIMEOUT);
}

static void read_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct stream *s = arg;

	(void)fd;
	(void)what;
	stream_read_disable(s);
	stream_event(s, BEV_EVENT_READING | BEV_EVENT_TIMEOUT);
}

static void write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct stream *s = arg;

	(void)fd;
	(void)what;
	if (s->connecting)
		connect_done(s);
	else
		stream_flush(s);
}

static void read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct stream *s = arg;
	struct evbuffer_iovec vec[2];
	int nvec;
	ssize_t n;

	(void)fd;
	(void)what;
	nvec = evbuffer_reserve_space(s->input, STREAM_READ_MAX, vec, 2);
	if (nvec < 1)
		return;
	n = readv(s->fd, (struct iovec *)vec, nvec);
	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return;
		stream_read_disable(s);
		stream_event(s, BEV_EVENT_READING | BEV_EVENT_ERROR);
		return;
	}
	if (n == 0) {
		stream_read_disable(s);
		stream_event(s, BEV_EVENT_READING | BEV_EVENT_EOF);
		return;
	}
	/* readv filled the vectors in order: give each its share. */
	for (int i = 0; i < nvec; i++) {
		size_t used =
		    (size_t)n < vec[i].iov_len ? (size_t)n : vec[i].iov_len;

		vec[i].iov_len = used;
		n -= used;
	}
	evbuffer_commit_space(s->input, vec, nvec);
	if (s->has_read_tv)
		read_timer_reset(s);
	if (s->readcb)
		s->readcb(s, s->arg);
}

struct stream *stream_new(struct event_base *base, int fd)
{
	struct stream *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->fd = fd;
	s->input = evbuffer_new();
	s->output = evbuffer_new();
	s->ev_read = event_new(base, fd, EV_READ | EV_PERSIST, read_cb, s);
	s->ev_write = event_new(base, fd, EV_WRITE | EV_PERSIST, write_cb, s);
	s->ev_flush = event_new(base, -1, 0, flush_cb, s);
	s->read_timer = evtimer_new(base, read_timeout_cb, s);
	s->write_timer = evtimer_new(base, write_timeout_cb, s);
	if (!s->input || !s->output || !s->ev_read || !s->ev_write ||
	    !s->ev_flush || !s->read_timer || !s->write_timer ||
	    !evbuffer_add_cb(s->output, output_cb, s)) {
		stream_free(s);
		return NULL;
	}
	return s;
}

void stream_free(struct stream *s)
{
	if (!s)
		return;
	if (s->ev_read)
		event_free(s->ev_read);
	if (s->ev_write)
		event_free(s->ev_write);
	if (s->ev_flush)
		event_free(s->ev_flush);
	if (s->read_timer)
		event_free(s->read_timer);
	if (s->write_timer)
		event_free(s->write_timer);
	if (s->input)
		evbuffer_free(s->input);
	if (s->output)
		evbuffer_free(s->output);
	free(s);
}

void stream_setcb(struct stream *s, stream_data_fn readcb,
		  stream_data_fn writecb, stream_event_fn eventcb, void *arg)
{
	s->readcb = readcb;
	s->writecb = writecb;
	s->eventcb = eventcb;
	s->arg = arg;
}

void stream_set_write_low(struct stream *s, size_t low)
{
	s->write_low = low;
}

static void ms_to_tv(struct timeval *tv, bool *set, int ms)
{
	*set = ms > 0;
	tv->tv_sec = ms / 1000;
	tv->tv_usec = (ms % 1000) * 1000;
}

void stream_set_timeouts(struct stream *s, int read_ms, int write_ms)
{
	ms_to_tv(&s->read_tv, &s->has_read_tv, read_ms);
	ms_to_tv(&s->write_tv, &s->has_write_tv, write_ms);
	read_timer_reset(s);
	write_timer_reset(s);
}

void stream_read_enable(struct stream *s)
{
	if (s->reading)
		return;
	s->reading = true;
	event_add(s->ev_read, NULL);
	read_timer_reset(s);
}

void stream_read_disable(struct stream *s)
{
	if (!s->reading)
		return;
	s->reading = false;
	event_del(s->ev_read);
	evtimer_del(s->read_timer);
}

int stream_connect(struct stream *s, const struct sockaddr *sa, socklen_t len)
{
	if (connect(s->fd, sa, len) == 0) {
		/* Loopback can connect at once: report it from the loop,
		 * like any other connect. */
		s->connecting = true;
		event_active(s->ev_write, EV_WRITE, 0);
		return 0;
	}
	if (errno != EINPROGRESS)
		return -errno;
	s->connecting = true;
	arm_write(s);
	return 0;
}

struct evbuffer *stream_input(struct stream *s)
{
	return s->input;
}

struct evbuffer *stream_output(struct stream *s)
{
	return s->output;
}

int stream_fd(const struct stream *s)
{
	return s->fd;
}
