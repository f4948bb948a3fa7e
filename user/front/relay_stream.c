/* Copy and pipe relays: user space moves the bytes of one direction.
 *
 * One pump per direction, driven by two level-triggered events: `from`
 * readable and `to` writable. The pump writes what it holds before it reads
 * more, so a direction holds at most one buffer (copy: RELAY_COPY_BUF in
 * an evbuffer) or one pipe (pipe: the pipe's capacity, 64 KiB by default)
 * and a slow reader stops the relay from reading its sender: TCP's window
 * then holds the sender back.
 *
 * splice(2) from a socket into a pipe answers EAGAIN both when the socket
 * has nothing and when the pipe has no free slot (a slot may hold less than
 * a page), so EAGAIN on the read side is final only with an empty pipe.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/log.h"
#include "front/relay_int.h"

#define SPLICE_FLAGS (SPLICE_F_NONBLOCK | SPLICE_F_MOVE)

enum pump_want {
	PUMP_READ,
	PUMP_WRITE,
	PUMP_NONE,
};

ssize_t relay_send(int fd, struct evbuffer *buf)
{
	struct iovec iov[16];
	struct msghdr msg = {.msg_iov = iov};
	ssize_t n;
	int count;

	count = evbuffer_peek(buf, -1, NULL, iov, 16);
	msg.msg_iovlen = count < 16 ? count : 16;
	n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (n < 0)
		return -errno;
	evbuffer_drain(buf, n);
	return n;
}

ssize_t relay_recv(int fd, struct evbuffer *buf, size_t max)
{
	struct evbuffer_iovec vec;
	ssize_t n;

	/* One contiguous chunk and a plain recv(): evbuffer_read() would
	 * first ask the socket how much it holds (one more syscall). */
	if (evbuffer_reserve_space(buf, max, &vec, 1) < 1)
		return -ENOMEM;
	n = recv(fd, vec.iov_base, max, MSG_DONTWAIT);
	if (n < 0)
		return -errno;
	vec.iov_len = n;
	if (evbuffer_commit_space(buf, &vec, 1) < 0)
		return -ENOMEM;
	return n;
}

static size_t dir_held(const struct relay_dir *dir)
{
	return evbuffer_get_length(dir->buf) + dir->in_pipe;
}

/* Read once from `from` into what this direction holds: > 0 bytes,
 * 0 at EOF, -errno. */
static ssize_t dir_fill(struct relay_dir *dir)
{
	ssize_t n;

	if (!dir->use_pipe)
		return relay_recv(dir->from, dir->buf,
				  dir->read_max ? dir->read_max
						: RELAY_COPY_BUF);
	n = splice(dir->from, NULL, dir->pipe_wr, NULL,
		   dir->pipe_cap - dir->in_pipe, SPLICE_FLAGS);
	if (n < 0)
		return -errno;
	dir->in_pipe += n;
	return n;
}

/* Write what this direction holds into `to`: pending bytes first, then the
 * pipe. > 0 bytes written, -errno. */
static ssize_t dir_drain(struct relay_dir *dir)
{
	ssize_t n;

	if (evbuffer_get_length(dir->buf) > 0)
		return relay_send(dir->to, dir->buf);
	n = splice(dir->pipe_rd, NULL, dir->to, NULL, dir->in_pipe,
		   SPLICE_FLAGS);
	if (n < 0)
		return -errno;
	dir->in_pipe -= n;
	return n;
}

static int dir_arm(struct relay_dir *dir, enum pump_want want)
{
	bool rd = want == PUMP_READ, wr = want == PUMP_WRITE;

	if (rd != dir->read_armed) {
		if ((rd ? event_add(dir->ev_read, NULL)
			: event_del(dir->ev_read)) < 0)
			return -ENOMEM;
		dir->read_armed = rd;
	}
	if (wr != dir->write_armed) {
		if ((wr ? event_add(dir->ev_write, NULL)
			: event_del(dir->ev_write)) < 0)
			return -ENOMEM;
		dir->write_armed = wr;
	}
	return 0;
}

/* Move bytes until a side would block, the budget is spent or EOF has been
 * passed on. Returns what to wait for, or -errno. */
static int dir_move(struct relay_dir *dir, int *want)
{
	size_t moved = 0;
	ssize_t n;

	for (;;) {
		if (dir_held(dir) > 0) {
			n = dir_drain(dir);
			if (n == -EAGAIN) {
				*want = PUMP_WRITE;
				return 0;
			}
			if (n < 0)
				return n;
			dir->bytes += n;
			moved += n;
			continue;
		}
		if (dir->eof) {
			*want = PUMP_NONE;
			return 0;
		}
		if (moved >= RELAY_BUDGET) {
			*want = PUMP_READ;
			return 0;
		}
		n = dir_fill(dir);
		if (n == 0)
			dir->eof = true;
		else if (n == -EAGAIN && dir_held(dir) == 0) {
			*want = PUMP_READ;
			return 0;
		} else if (n < 0 && n != -EAGAIN)
			return n;
	}
}

static void dir_pump(struct relay_dir *dir)
{
	struct relay *relay = dir->relay;
	int want = PUMP_NONE, err;

	err = dir_move(dir, &want);
	if (!err)
		err = dir_arm(dir, want);
	if (err < 0) {
		relay_finish(relay, err);
		return;
	}
	if (dir->eof && dir_held(dir) == 0)
		relay_dir_shutdown(dir);
}

static void dir_event_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	dir_pump(arg);
}

static int dir_pipe_open(struct relay_dir *dir)
{
	int fds[2], cap;

	if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
		return -errno;
	dir->pipe_rd = fds[0];
	dir->pipe_wr = fds[1];
	cap = fcntl(fds[1], F_GETPIPE_SZ);
	dir->pipe_cap = cap > 0 ? (size_t)cap : 65536;
	return 0;
}

int relay_stream_start(struct relay_dir *dir, bool use_pipe)
{
	struct event_base *base = dir->relay->base;
	int err;

	dir->use_pipe = use_pipe;
	if (use_pipe && dir->pipe_rd < 0) {
		err = dir_pipe_open(dir);
		if (err < 0)
			return err;
	}
	if (!dir->ev_read)
		dir->ev_read = event_new(base, dir->from, EV_READ | EV_PERSIST,
					 dir_event_cb, dir);
	if (!dir->ev_write)
		dir->ev_write = event_new(base, dir->to, EV_WRITE | EV_PERSIST,
					  dir_event_cb, dir);
	if (!dir->ev_read || !dir->ev_write)
		return -ENOMEM;
	dir->state = RELAY_DIR_STREAM;
	relay_stream_kick(dir);
	return 0;
}

void relay_stream_kick(struct relay_dir *dir)
{
	/* From the loop, never from here: the caller may still be inside
	 * relay_start() and must get its relay before any callback runs. */
	event_active(dir->ev_write, EV_WRITE, 0);
}

void relay_stream_free(struct relay_dir *dir)
{
	if (dir->ev_read)
		event_free(dir->ev_read);
	if (dir->ev_write)
		event_free(dir->ev_write);
	dir->ev_read = dir->ev_write = NULL;
	dir->read_armed = dir->write_armed = false;
	if (dir->pipe_rd >= 0)
		close(dir->pipe_rd);
	if (dir->pipe_wr >= 0)
		close(dir->pipe_wr);
	dir->pipe_rd = dir->pipe_wr = -1;
	dir->in_pipe = 0;
}
