/* Loading, pinning and updating sluice's BPF objects.
 *
 * This is the only room that talks to libbpf and libxdp. sluiced calls
 * sbpf_open() once at start-up, as root, before dropping privileges; after
 * that everything goes through the map descriptors held here, so it keeps
 * working as the unprivileged `user:`.
 *
 * Pins: every map, program and link under rules->bpf.pin_dir, named
 * sluice_*. A start replaces stale pins and attachments left by a crashed
 * run; sbpf_close() removes them.
 */
#ifndef SLUICE_BPF_H
#define SLUICE_BPF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct rules;
struct evbuffer;
struct sbpf;

/* Load the splice and edge programs for RULES, pin them, attach XDP on
 * bpf.xdp.interfaces. On failure returns NULL and writes one sentence into
 * err naming the cause and what to do ("loading BPF needs CAP_BPF and
 * CAP_NET_ADMIN: run sluiced as root, or set bpf.splice: pipe"). */
struct sbpf *sbpf_open(const struct rules *rules, char *err, size_t err_len);

/* HUP: rewrite the deny list and the API table in place. Detaches nothing.
 * Returns 0 or -errno. */
int sbpf_update(struct sbpf *bpf, const struct rules *rules);

/* Detach XDP, remove every pin, close everything. */
void sbpf_close(struct sbpf *bpf);

/* Sockmap splicing: put both sockets in sluice_pairs so the stream verdict
 * redirects each one's data to the other, counting bytes for API_INDEX.
 * Bytes already queued in either socket are run through the verdict too
 * (SO_RCVLOWAT is set to 1 to make the kernel look at them). Returns 0 or
 * -errno; on failure neither socket is left in any map. */
int sbpf_pair_add(struct sbpf *bpf, int fd_a, int fd_b, int api_index);

/* Remove both sockets from every map (either may already be gone). Bytes
 * redirected into a socket but not yet sent are dropped with it: remove a
 * pair only once each side has sent what sbpf_pair_bytes() says the other
 * redirected into it. */
void sbpf_pair_remove(struct sbpf *bpf, int fd_a, int fd_b);

/* Backpressure for a spliced pair: take both sockets out of sluice_pairs
 * only. The verdict stops seeing what they receive (it stays in their own
 * receive queues, under TCP flow control again), while both stay redirect
 * targets with their peers entries: bytes already redirected still reach
 * them and sbpf_pair_bytes() keeps its final count. sbpf_pair_remove()
 * later takes them out of everything. Returns 0 or -errno.
 * Only while no bytes arrive (the senders are held back or done): a
 * segment that reaches a socket while it leaves sluice_pairs can be dropped
 * (the relay lost 848 bytes in one of eight 1 GiB transfers paused
 * mid-flow on kernel 6.18). */
int sbpf_pair_pause(struct sbpf *bpf, int fd_a, int fd_b);

/* Bytes the verdict has redirected out of FD since it was added (the
 * per-socket count the relay compares with the peer's acked bytes). */
int sbpf_pair_bytes(struct sbpf *bpf, int fd, uint64_t *bytes);

/* Bound what the verdict may redirect out of FD: MAX_BYTES in all since
 * the pair was added (the count sbpf_pair_bytes() reports), 0 for no bound.
 * Past it the verdict stops redirecting FD's bytes for good ("held") and
 * they wait in FD, where TCP's window holds the sender back, readable with
 * read()/recv() (not splice(2)). A relay raises the bound as the peer's
 * reader catches up (peer's sent bytes + allowance) and, once FD is held,
 * forwards what waits there itself, after the peer has sent everything
 * redirected before. Keep the pair in the maps while doing so: taking a
 * held socket out of sluice_pairs (sbpf_pair_pause) stranded the bytes
 * still queued for it on kernel 6.18 (recv() said EAGAIN for good).
 * Measured here: with a 1 MiB bound a sender could write 5.5 MiB before
 * blocking (the bound plus both TCP buffers); without one, all 256 MiB.
 * sbpf_pair_held() tells whether FD reached its bound. */
int sbpf_pair_limit(struct sbpf *bpf, int fd, uint64_t max_bytes);
int sbpf_pair_held(struct sbpf *bpf, int fd, bool *held);

/* The pool's view in sluice_workers (for bpftool): STATE is 0 starting,
 * 1 idle, 2 busy; API is the API of the current call or NULL. Returns 0 or
 * -errno (-ENOTCONN when BPF is not loaded). */
int sbpf_worker_set(struct sbpf *bpf, uint32_t pid, const char *api, int state,
		    uint64_t calls);
int sbpf_worker_delete(struct sbpf *bpf, uint32_t pid);

/* The sentence of the last failed sbpf_open(), NULL after a success. */
const char *sbpf_last_error(void);

/* Counters for /status and /metrics: spliced bytes per API, XDP passed and
 * dropped packets per port. JSON object / Prometheus text appended to out.
 * Both accept bpf == NULL: {"loaded":false, "reason": the open failure}. */
void sbpf_status_json(struct sbpf *bpf, struct evbuffer *out);
void sbpf_metrics(struct sbpf *bpf, struct evbuffer *out);

#endif
