/* State shared by the files of the relay module (not part of the interface).
 *
 * A connection relay is two directions, client -> upstream (dir[0]) and
 * upstream -> client (dir[1]). Each direction moves through its own states,
 * so one can still be spliced in the kernel while the other already drains
 * a FIN, or runs through a pipe after a slow reader took it out of the
 * sockmap:
 *
 *   PENDING   bytes the front read before the hand-over go out first
 *   STREAM    user space moves the bytes: copy (buffer) or pipe (splice(2))
 *   SPLICED   the kernel redirects them (sockmap)
 *   FIN_WAIT  the source sent FIN; waiting until the destination socket
 *             holds every redirected byte before passing the FIN on
 *   DRAIN     the verdict stopped on `from` (its credit ran out): waiting
 *             for the bytes already redirected to reach the destination,
 *             then STREAM by copy
 *   DONE      the FIN was passed on (shutdown of the destination)
 *
 * Both sockets also sit in a private epoll set (the hang-up watch) that
 * reports an RST or a hang-up without ever waking for readable data.
 */
#ifndef SLUICE_RELAY_INT_H
#define SLUICE_RELAY_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "front/relay.h"

/* Copy mode: at most this much in user space per direction. */
#define RELAY_COPY_BUF (64 * 1024)
/* Bytes one direction moves per wake-up before yielding to the loop. */
#define RELAY_BUDGET (1024 * 1024)

enum relay_dir_state {
	RELAY_DIR_PENDING = 0,
	RELAY_DIR_STREAM,
	RELAY_DIR_SPLICED,
	RELAY_DIR_FIN_WAIT,
	RELAY_DIR_DRAIN,
	RELAY_DIR_DONE,
};

struct relay;

struct relay_dir {
	struct relay *relay;
	int from, to;
	enum relay_dir_state state;
	bool use_pipe;	 /* STREAM moves bytes by splice(2), else by copy */
	size_t read_max; /* copy: bytes per read, 0 for RELAY_COPY_BUF */

	struct evbuffer *buf; /* pending bytes; in copy mode also the buffer */
	int pipe_rd, pipe_wr; /* -1 until STREAM through a pipe */
	size_t pipe_cap;
	size_t in_pipe;
	struct event *ev_read;	/* readable `from` */
	struct event *ev_write; /* writable `to` */
	bool read_armed, write_armed;
	bool eof; /* read 0 from `from` */

	uint64_t bytes; /* delivered to `to`, whatever the path */

	/* sockmap accounting, relative to insertion */
	uint64_t to_base;  /* acked + queued on `to` before insertion */
	uint64_t spliced;  /* last count of bytes redirected out of `from` */
	uint64_t limit;	   /* the verdict's credit for `from` */
	int quiet_polls;   /* polls with an unchanged count (FIN/DRAIN) */
	uint64_t received; /* tcpi_bytes_received of `from` at last poll */
	uint64_t backlog;  /* redirected, not yet in `to`, at last poll */
	bool settled;	   /* sampled after a quiet interval: counts final */
};

struct relay {
	struct event_base *base;
	enum rules_splice mode; /* as started: COPY, PIPE or SOCKMAP */
	struct sbpf *bpf;
	int api_index;
	int fd[2]; /* client, upstream */
	struct relay_dir dir[2];

	/* hang-up watch: private epoll set, readable when it has events */
	int watch_fd;
	struct event *watch_ev;
	bool rdhup[2], hup[2];

	/* sockmap: accounting and backpressure poll */
	struct event *poll_ev;
	int poll_ms;
	int idle_polls;
	bool in_targets;
	uint64_t backlog_max; /* largest backlog seen (for the log) */
	unsigned held; /* directions the verdict stopped on (credit spent) */

	/* idle timeout: no byte either way for one whole period */
	struct event *idle_ev;
	uint64_t idle_seen; /* bytes moved at the last tick */

	relay_done_fn done;
	void *arg;
	bool finished;
};

/* relay.c */
void relay_finish(struct relay *relay, int err);
int relay_dir_shutdown(struct relay_dir *dir);
int relay_watch_arm(struct relay *relay, int side);

/* relay_stream.c: copy and pipe */
int relay_stream_start(struct relay_dir *dir, bool use_pipe);
void relay_stream_free(struct relay_dir *dir);
/* Kick a direction's pump from the event loop (never synchronously). */
void relay_stream_kick(struct relay_dir *dir);
/* Socket write that never raises SIGPIPE; -errno on failure. */
ssize_t relay_send(int fd, struct evbuffer *buf);
/* Read at most MAX bytes into BUF: > 0, 0 at EOF, -errno. */
ssize_t relay_recv(int fd, struct evbuffer *buf, size_t max);

/* relay_sockmap.c */
int relay_sockmap_start(struct relay *relay);
void relay_sockmap_on_rdhup(struct relay *relay, int side);
void relay_sockmap_free(struct relay *relay);
/* A PENDING direction finished its pending bytes. */
void relay_sockmap_pending_done(struct relay *relay);

#endif
