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
 * Backpressure: redirects have none; the verdict drains X at full speed
 * into Y's backlog however slowly Y's reader reads (and on a 2-CPU VM even
 * a fast reader's backlog grows: the sender's softirq outruns the worker
 * that writes into Y). So the verdict gets a credit per socket
 * (sbpf_pair_limit): it may redirect out of X only up to what Y has taken
 * in plus RELAY_CREDIT. A poll (every RELAY_POLL_MS while bytes move,
 * RELAY_POLL_IDLE_MS on a quiet pair) raises the credit as Y's reader
 * catches up. When X runs out of credit the verdict leaves X's bytes in X
 * for good (the order must hold), where TCP's window holds the sender
 * back; the direction then waits until Y has taken in everything
 * redirected and continues in user space, by copy (splice(2) does not see
 * bytes the verdict left in a socket). Taking a socket out of the map while
 * bytes flow can drop a segment, so both stay in until both directions are
 * done.
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

/* What the verdict may redirect ahead of the destination's progress, per
 * direction: the bound on a spliced direction's backlog. */
#define RELAY_CREDIT (16 * 1024 * 1024)
/* Raise the credit once the destination took in this much more. */
#define RELAY_CREDIT_STEP (1024 * 1024)
#define RELAY_POLL_MS	  5
/* After this many polls without a moved byte, poll every
 * RELAY_POLL_IDLE_MS instead. */
#define RELAY_IDLE_POLLS   10
#define RELAY_POLL_IDLE_MS 20
/* Reads from a socket the verdict stopped on go through the sockmap's
 * recvmsg: with 64 KiB reads one segment in two 1 GiB transfers arrived
 * twice on kernel 6.18; 4 KiB reads (what libevent uses on a socket that
 * reports nothing readable) delivered every byte once in every run. */
#define RELAY_HELD_READ 4096
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

/* Raise the verdict's credit for dir->from as dir->to takes bytes in. */
static int dir_credit(struct relay_dir *dir, uint64_t written)
{
	uint64_t limit = written + RELAY_CREDIT;
	int err;

	if (limit < dir->limit + RELAY_CREDIT_STEP)
		return 0;
	err = sbpf_pair_limit(dir->relay->bpf, dir->from, limit);
	if (err < 0)
		return err;
	dir->limit = limit;
	return 0;
}

/* Has the verdict stopped for good on dir->from (its credit spent)? */
static int dir_check_held(struct relay_dir *dir)
{
	bool held = false;
	int err;

	err = sbpf_pair_held(dir->relay->bpf, dir->from, &held);
	if (err < 0 || !held)
		return err;
	if (dir->relay->held++ == 0)
		log_debug("relay held mode=sockmap client=%d upstream=%d "
			  "from=%d backlog=%" PRIu64 " credit=%d",
			  dir->relay->fd[0], dir->relay->fd[1], dir->from,
			  dir->backlog, RELAY_CREDIT);
	dir->state = RELAY_DIR_DRAIN;
	dir->quiet_polls =
	    -1; /* two more samples, see relay_sockmap_on_rdhup */
	return relay_watch_arm(dir->relay, dir == dir->relay->dir ? 0 : 1);
}

/* Update one direction's counts and credit. *moved tells whether the
 * verdict moved bytes since the last poll. */
static int dir_sample(struct relay_dir *dir, bool *moved)
{
	struct relay *relay = dir->relay;
	uint64_t spliced, written, received = 0;
	int err;

	/* The cheap check first: one getsockopt on a quiet direction. A
	 * direction counts as settled after one full sample with nothing
	 * received since the one before: no verdict can have been running
	 * then, so its counts and held flag were final. */
	err = sock_received(dir->from, &received);
	if (err < 0)
		return err;
	if (received != dir->received)
		dir->settled = false;
	else if (dir->state == RELAY_DIR_SPLICED && dir->settled &&
		 dir->backlog == 0) {
		dir->quiet_polls++;
		return 0;
	} else {
		dir->settled = true;
	}
	dir->received = received;

	err = sbpf_pair_bytes(relay->bpf, dir->from, &spliced);
	if (!err)
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
	dir->backlog = spliced > written ? spliced - written : 0;
	if (dir->backlog > relay->backlog_max)
		relay->backlog_max = dir->backlog;
	if (dir->state == RELAY_DIR_DRAIN)
		return 0;
	err = dir_credit(dir, written);
	if (!err)
		err = dir_check_held(dir);
	return err;
}

/* FIN_WAIT and DRAIN end when the count is final (quiet for a poll: no
 * verdict still running) and the destination holds all of it. Returns
 * nonzero when the relay is gone. */
static int dir_settle(struct relay_dir *dir)
{
	int err;

	if (dir->quiet_polls < 1 || dir->backlog > 0)
		return 0;
	if (dir->state == RELAY_DIR_FIN_WAIT)
		return relay_dir_shutdown(dir);
	dir->read_max = RELAY_HELD_READ;
	err = relay_stream_start(dir, false);
	if (err < 0)
		relay_finish(dir->relay, err);
	return err;
}

static void sockmap_poll_cb(evutil_socket_t fd, short what, void *arg)
{
	struct relay *relay = arg;
	bool moved = false, waiting = false;
	int err = 0, i;

	(void)fd;
	(void)what;
	for (i = 0; i < 2 && !err; i++)
		if (dir_in_kernel(&relay->dir[i]))
			err = dir_sample(&relay->dir[i], &moved);
	if (err < 0) {
		relay_finish(relay, err);
		return;
	}
	for (i = 0; i < 2; i++) {
		struct relay_dir *dir = &relay->dir[i];

		if (dir->state == RELAY_DIR_FIN_WAIT ||
		    dir->state == RELAY_DIR_DRAIN) {
			if (dir_settle(dir) != 0)
				return; /* the relay is gone */
			waiting |= dir_in_kernel(dir);
		}
	}
	/* Both in user space now: the sockets stay in the maps (no segment
	 * may meet a removal) until the relay finishes. */
	if (!dir_in_kernel(&relay->dir[0]) && !dir_in_kernel(&relay->dir[1]))
		return;

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
	/* The hang-up can be seen before the verdict has run on the last
	 * segment (data and FIN in one): the count is final only once two
	 * samples taken after it agree. */
	dir->quiet_polls = -1;
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
	/* The credit first, so that no byte is redirected without one. */
	for (i = 0; i < 2; i++) {
		err = sbpf_pair_limit(relay->bpf, relay->fd[i], RELAY_CREDIT);
		if (err < 0)
			return sockmap_give_up(relay, err);
		relay->dir[i].limit = RELAY_CREDIT;
	}
	err = sbpf_pair_add(relay->bpf, relay->fd[0], relay->fd[1],
			    relay->api_index);
	if (err < 0)
		return sockmap_give_up(relay, err);
	relay->in_targets = true;
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
		n = relay_recv(dir->from, dir->buf, RELAY_SWEEP_MAX);
		if (n == 0 || n == -EAGAIN)
			return 0;
		if (n < 0)
			return n;
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
	relay->in_targets = false;
	if (relay->poll_ev) {
		event_free(relay->poll_ev);
		relay->poll_ev = NULL;
	}
}
