/* Sockmap relays: the kernel redirects the bytes, this file keeps the
 * accounting that makes it correct.
 *
 * Hand-over: the bytes the front already read go out first, by plain
 * writes, then whatever is still queued on the sockets (see
 * sockmap_try_insert()); only then do both sockets enter sluice_pairs
 * (what arrives after the last sweep is flushed through the verdict by
 * sbpf_pair_add()).
 *
 * FIN: redirects to egress are asynchronous, so a FIN passed on at once
 * would overtake data. On a hang-up of X the direction X -> Y waits until Y
 * has taken in (acked + still queued, relative to insertion) every byte the
 * verdict redirected out of X, with that count unchanged over two polls,
 * and only then shuts Y down for writing.
 *
 * Backpressure: the verdict drains X at full speed into Y's backlog, however
 * slowly Y's reader reads. A poll (every RELAY_POLL_MS while bytes move,
 * RELAY_POLL_IDLE_MS on a quiet pair) compares what was redirected with
 * what Y took in. Above RELAY_SOCKMAP_BACKLOG the
 * pair leaves the verdict (sbpf_pair_pause); each direction waits until
 * its backlog has drained into the destination and then continues through
 * a pipe, where TCP's window holds the sender back again.
 */
#include <errno.h>
#include <inttypes.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "bpf/bpf.h"
#include "common/log.h"
#include "front/relay_int.h"

/* Redirected bytes not yet in the destination socket, per direction. */
#define RELAY_SOCKMAP_BACKLOG (4 * 1024 * 1024)
#define RELAY_POLL_MS	      5
/* After this many polls without a moved byte, poll every
 * RELAY_POLL_IDLE_MS instead. */
#define RELAY_IDLE_POLLS   10
#define RELAY_POLL_IDLE_MS 20
/* Socket receive buffer once a pair has fallen back to a pipe: the sender
 * then fills at most this much while the slow reader catches up. */
#define RELAY_FALLBACK_RCVBUF (256 * 1024)
/* Pending bytes read per sweep before the insertion. */
#define RELAY_SWEEP_MAX (256 * 1024)

/* Bytes written into FD's send side so far: acked plus still queued.
 * Reading the queue first over-estimates (used for the baseline), reading
 * it last under-estimates (used for the progress): both err on the side of
 * waiting longer. */
static int sock_written(int fd, bool queue_first, uint64_t *out)
{
	struct tcp_info info;
	socklen_t len = sizeof(info);
	int queued = 0;

	if (queue_first && ioctl(fd, SIOCOUTQ, &queued) < 0)
		return -errno;
	memset(&info, 0, sizeof(info));
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) < 0)
		return -errno;
	if (len < offsetof(struct tcp_info, tcpi_bytes_acked) +
		      sizeof(info.tcpi_bytes_acked))
		return -EOPNOTSUPP;
	if (!queue_first && ioctl(fd, SIOCOUTQ, &queued) < 0)
		return -errno;
	*out = info.tcpi_bytes_acked + (uint64_t)(queued > 0 ? queued : 0);
	return 0;
}

static int sock_received(int fd, uint64_t *out)
{
	struct tcp_info info;
	socklen_t len = sizeof(info);

	memset(&info, 0, sizeof(info));
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) < 0)
		return -errno;
	*out = info.tcpi_bytes_received;
	return 0;
}

static bool dir_in_kernel(const struct relay_dir *dir)
{
	return dir->state == RELAY_DIR_SPLICED ||
	       dir->state == RELAY_DIR_FIN_WAIT ||
	       dir->state == RELAY_DIR_DRAIN;
}

static void poll_schedule(struct relay *relay, int ms)
{
	struct timeval tv = {.tv_sec = 0, .tv_usec = ms * 1000};

	evtimer_add(relay->poll_ev, &tv);
}

/* Both sockets leave the maps once no direction needs the kernel any more;
 * before that, removing one would drop what was redirected into it. */
static void sockmap_leave(struct relay *relay)
{
	if (!relay->in_targets)
		return;
	sbpf_pair_remove(relay->bpf, relay->fd[0], relay->fd[1]);
	relay->in_pairs = relay->in_targets = false;
	evtimer_del(relay->poll_ev);
}

/* Continue a direction in user space through a pipe. */
static int dir_to_stream(struct relay_dir *dir)
{
	int size = RELAY_FALLBACK_RCVBUF;

	if (dir->relay->fell_back)
		setsockopt(dir->from, SOL_SOCKET, SO_RCVBUF, &size,
			   sizeof(size));
	return relay_stream_start(dir, true);
}

static int sockmap_pause(struct relay *relay, uint64_t backlog)
{
	int err, i;

	err = sbpf_pair_pause(relay->bpf, relay->fd[0], relay->fd[1]);
	if (err < 0)
		return err;
	relay->in_pairs = false;
	relay->fell_back = true;
	log_debug("relay fallback mode=sockmap client=%d upstream=%d "
		  "backlog=%" PRIu64 " limit=%d",
		  relay->fd[0], relay->fd[1], backlog, RELAY_SOCKMAP_BACKLOG);
	for (i = 0; i < 2; i++) {
		if (relay->dir[i].state == RELAY_DIR_SPLICED) {
			relay->dir[i].state = RELAY_DIR_DRAIN;
			relay->dir[i].quiet_polls = 0;
		}
		relay_watch_arm(relay, i);
	}
	return 0;
}

/* Update one direction's counts. *moved tells whether the verdict moved
 * bytes since the last poll, *backlog what is redirected but not yet in
 * the destination socket. */
static int dir_sample(struct relay_dir *dir, bool *moved, uint64_t *backlog)
{
	struct relay *relay = dir->relay;
	uint64_t spliced, written, received = 0;
	int err;

	/* The cheap check first: one getsockopt on a quiet direction. */
	err = sock_received(dir->from, &received);
	if (err < 0)
		return err;
	if (dir->state == RELAY_DIR_SPLICED && received == dir->received &&
	    dir->backlog == 0) {
		dir->quiet_polls++;
		*backlog = 0;
		return 0;
	}
	dir->received = received;

	err = sbpf_pair_bytes(relay->bpf, dir->from, &spliced);
	if (err < 0)
		return err;
	err = sock_written(dir->to, false, &written);
	if (err < 0)
		return err;
	written -= dir->to_base;

	if (spliced != dir->spliced) {
		*moved = true;
		dir->bytes += spliced - dir->spliced;
		dir->spliced = spliced;
		dir->quiet_polls = 0;
	} else {
		dir->quiet_polls++;
	}
	*backlog = spliced > written ? spliced - written : 0;
	dir->backlog = *backlog;
	if (*backlog > relay->held_max)
		relay->held_max = *backlog;
	return 0;
}

/* FIN_WAIT and DRAIN end when the count is final (quiet for a poll: no
 * verdict still running) and the destination holds all of it. */
static int dir_settle(struct relay_dir *dir, uint64_t backlog)
{
	int err;

	if (dir->quiet_polls < 1 || backlog > 0)
		return 0;
	if (dir->state == RELAY_DIR_FIN_WAIT)
		return relay_dir_shutdown(dir);
	err = dir_to_stream(dir);
	if (err < 0)
		relay_finish(dir->relay, err);
	return err;
}

static void sockmap_poll_cb(evutil_socket_t fd, short what, void *arg)
{
	struct relay *relay = arg;
	uint64_t backlog[2] = {0, 0};
	bool moved = false, waiting = false;
	int err = 0, i;

	(void)fd;
	(void)what;
	for (i = 0; i < 2 && !err; i++)
		if (dir_in_kernel(&relay->dir[i]))
			err = dir_sample(&relay->dir[i], &moved, &backlog[i]);
	for (i = 0; i < 2 && !err; i++) {
		if (relay->in_pairs && backlog[i] > RELAY_SOCKMAP_BACKLOG)
			err = sockmap_pause(relay, backlog[i]);
	}
	if (err < 0) {
		relay_finish(relay, err);
		return;
	}
	for (i = 0; i < 2; i++) {
		struct relay_dir *dir = &relay->dir[i];

		if (dir->state == RELAY_DIR_FIN_WAIT ||
		    dir->state == RELAY_DIR_DRAIN) {
			err = dir_settle(dir, backlog[i]);
			if (err != 0)
				return; /* the relay is gone */
			waiting |= dir_in_kernel(dir);
		}
	}
	if (!dir_in_kernel(&relay->dir[0]) && !dir_in_kernel(&relay->dir[1])) {
		sockmap_leave(relay);
		return;
	}

	/* A spliced socket never reports readable (the verdict takes every
	 * segment first), so nothing but this poll sees a burst start: it
	 * slows down on a quiet pair, never stops. */
	relay->idle_polls = moved || waiting ? 0 : relay->idle_polls + 1;
	poll_schedule(relay, relay->idle_polls < RELAY_IDLE_POLLS
				 ? RELAY_POLL_MS
				 : RELAY_POLL_IDLE_MS);
}

void relay_sockmap_on_rdhup(struct relay *relay, int side)
{
	struct relay_dir *dir = &relay->dir[side];

	dir->state = RELAY_DIR_FIN_WAIT;
	dir->quiet_polls = 0;
	relay->idle_polls = 0;
	poll_schedule(relay, 0);
}

/* Something went wrong before or at the insertion: the relay still works,
 * through pipes. */
static int sockmap_give_up(struct relay *relay, int err)
{
	int i;

	log_warn("relay sockmap insertion failed, using pipe client=%d "
		 "upstream=%d error=\"%s\"",
		 relay->fd[0], relay->fd[1], strerror(-err));
	for (i = 0; i < 2; i++) {
		err = relay_stream_start(&relay->dir[i], true);
		if (err < 0)
			return err;
	}
	return 0;
}

static int sockmap_insert(struct relay *relay)
{
	int err, i;

	for (i = 0; i < 2; i++) {
		err = sock_written(relay->dir[i].to, true,
				   &relay->dir[i].to_base);
		if (err < 0)
			return sockmap_give_up(relay, err);
	}
	err = sbpf_pair_add(relay->bpf, relay->fd[0], relay->fd[1],
			    relay->api_index);
	if (err < 0)
		return sockmap_give_up(relay, err);
	relay->in_pairs = relay->in_targets = true;
	for (i = 0; i < 2; i++) {
		relay->dir[i].state = RELAY_DIR_SPLICED;
		err = relay_watch_arm(relay, i);
		if (err < 0)
			return err;
	}
	poll_schedule(relay, RELAY_POLL_MS);
	return 0;
}

/* Read what is queued on FROM into the direction's pending bytes, until
 * the queue is empty (EAGAIN or EOF) or RELAY_SWEEP_MAX is held. */
static int dir_sweep(struct relay_dir *dir)
{
	ssize_t n;

	while (evbuffer_get_length(dir->buf) < RELAY_SWEEP_MAX) {
		n = evbuffer_read(dir->buf, dir->from, RELAY_SWEEP_MAX);
		if (n == 0 || (n < 0 && errno == EAGAIN))
			return 0;
		if (n < 0)
			return -errno;
	}
	return 0;
}

/* The verdict reads a socket's queue a whole skb at a time, without
 * regard to what recv() already took from the first one: bytes the front
 * read from an skb whose rest is still queued would be redirected twice.
 * So the receive queues are emptied into the pending bytes right before
 * the insertion (anything arriving after that is a fresh skb), and the
 * insertion waits until a sweep finds both queues empty. */
static int sockmap_try_insert(struct relay *relay)
{
	int err, i;

	for (i = 0; i < 2; i++)
		if (evbuffer_get_length(relay->dir[i].buf) > 0)
			return 0; /* still writing: comes back here */
	for (i = 0; i < 2; i++) {
		err = dir_sweep(&relay->dir[i]);
		if (err < 0)
			return err;
	}
	if (evbuffer_get_length(relay->dir[0].buf) > 0 ||
	    evbuffer_get_length(relay->dir[1].buf) > 0) {
		for (i = 0; i < 2; i++)
			event_active(relay->dir[i].ev_write, EV_WRITE, 0);
		return 0;
	}
	for (i = 0; i < 2; i++) {
		event_free(relay->dir[i].ev_write);
		relay->dir[i].ev_write = NULL;
	}
	return sockmap_insert(relay);
}

static void pending_cb(evutil_socket_t fd, short what, void *arg)
{
	struct relay_dir *dir = arg;
	struct relay *relay = dir->relay;
	ssize_t n;
	int err;

	(void)fd;
	(void)what;
	while (evbuffer_get_length(dir->buf) > 0) {
		n = relay_send(dir->to, dir->buf);
		if (n == -EAGAIN) {
			event_add(dir->ev_write, NULL);
			return;
		}
		if (n < 0) {
			relay_finish(relay, (int)n);
			return;
		}
		dir->bytes += n;
	}
	err = sockmap_try_insert(relay);
	if (err < 0)
		relay_finish(relay, err);
}

int relay_sockmap_start(struct relay *relay)
{
	int i;

	relay->poll_ev = evtimer_new(relay->base, sockmap_poll_cb, relay);
	if (!relay->poll_ev)
		return -ENOMEM;
	for (i = 0; i < 2; i++) {
		struct relay_dir *dir = &relay->dir[i];

		dir->state = RELAY_DIR_PENDING;
		dir->ev_write =
		    event_new(relay->base, dir->to, EV_WRITE, pending_cb, dir);
		if (!dir->ev_write)
			return -ENOMEM;
	}
	/* From the loop: done must never run inside relay_start(). */
	for (i = 0; i < 2; i++)
		event_active(relay->dir[i].ev_write, EV_WRITE, 0);
	return 0;
}

void relay_sockmap_free(struct relay *relay)
{
	if (relay->in_targets && relay->bpf)
		sbpf_pair_remove(relay->bpf, relay->fd[0], relay->fd[1]);
	relay->in_pairs = relay->in_targets = false;
	if (relay->poll_ev) {
		event_free(relay->poll_ev);
		relay->poll_ev = NULL;
	}
}
