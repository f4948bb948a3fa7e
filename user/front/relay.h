/* Relays: move the bytes of a whole connection, or of one body, between two
 * sockets without the HTTP layer looking at them.
 *
 * A connection relay takes a client socket and an upstream socket that the
 * front has finished routing, plus whatever the front had already read from
 * either side, and moves bytes both ways until both directions are closed;
 * then it closes both sockets and calls done. Modes (rules->bpf.splice):
 *   copy     read/write through a user-space buffer
 *   pipe     splice(2) through a pipe, no copy into user space
 *   sockmap  both sockets in sluice_pairs; the kernel redirects the bytes
 * `auto` is resolved by the caller (relay_mode_for()).
 *
 * Every mode delivers identical bytes, forwards bytes that were queued
 * before the hand-over first, turns a FIN on one side into a shutdown of the
 * other only after every byte before it was delivered, closes both on RST,
 * and bounds the memory a slow reader can hold.
 */
#ifndef SLUICE_RELAY_H
#define SLUICE_RELAY_H

#include <stdint.h>

#include "common/rules.h"

struct event_base;
struct evbuffer;
struct sbpf;
struct relay;

struct relay_counts {
	uint64_t to_upstream; /* bytes client -> upstream */
	uint64_t to_client;   /* bytes upstream -> client */
};

typedef void (*relay_done_fn)(void *arg, const struct relay_counts *counts);

/* The mode a relay runs in: `auto` is pipe (see relay.c for the figures);
 * sockmap without BPF loaded falls back to pipe. */
enum rules_splice relay_mode_for(enum rules_splice configured,
				 const struct sbpf *bpf);

/* Take ownership of both sockets. pending_up / pending_down are drained
 * (sent first) and may be NULL. Returns NULL and closes nothing on failure
 * (errno set); the caller then still owns the sockets. */
struct relay *relay_start(struct event_base *base, enum rules_splice mode,
			  struct sbpf *bpf, int api_index, int client_fd,
			  int upstream_fd, struct evbuffer *pending_up,
			  struct evbuffer *pending_down, relay_done_fn done,
			  void *arg);

/* Close both sockets (and call done) once no byte has moved either way
 * for MS milliseconds, like an idle keep-alive connection in the front.
 * In sockmap mode the bytes are sampled by the relay's poll, so the
 * timeout is good to a few tens of milliseconds. */
int relay_set_idle_timeout(struct relay *relay, int ms);

/* Stop at once (shutdown): close both sockets; done is not called. */
void relay_abort(struct relay *relay);

/* Move exactly LEN bytes from from_fd to to_fd with splice(2) through a
 * pipe, then call done(arg, err) with err 0 or -errno. Used for large
 * Content-Length bodies on per-request routes. The caller must not touch
 * either socket until done. */
typedef void (*relay_body_done_fn)(void *arg, int err);
struct relay_body;
struct relay_body *relay_body_start(struct event_base *base, int from_fd,
				    int to_fd, uint64_t len,
				    relay_body_done_fn done, void *arg);
void relay_body_abort(struct relay_body *body);

#endif
