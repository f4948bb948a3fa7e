// SPDX-License-Identifier: GPL-2.0
/* Sockmap splicing: the kernel moves the bytes of a spliced connection.
 *
 * User space puts both sockets of a pair in two sockhashes keyed by socket
 * cookie: first sluice_targets (no program: only a redirect target), then
 * sluice_pairs (the stream verdict runs on what they receive). Because each
 * socket is a target before either one's bytes reach the verdict, no byte is
 * ever redirected to a socket that is not there yet (a missing target drops
 * the skb). sluice_peers says where each socket's bytes go.
 */
#include "vmlinux.h"

#include <bpf/bpf_helpers.h>

#include "sluice_maps.h"

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, SLUICE_MAX_SOCKETS);
	__type(key, __u64);
	__type(value, __u64);
} sluice_pairs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, SLUICE_MAX_SOCKETS);
	__type(key, __u64);
	__type(value, __u64);
} sluice_targets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SLUICE_MAX_SOCKETS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct sluice_peer);
} sluice_peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SLUICE_MAX_SOCKETS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct sluice_limit);
} sluice_limits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SLUICE_MAX_APIS);
	__type(key, __u32);
	__type(value, struct sluice_api_stat);
} sluice_api_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SLUICE_MAX_APIS);
	__type(key, __u32);
	__type(value, struct sluice_api);
} sluice_apis SEC(".maps");

/* Written by the worker pool, read by bpftool; no program touches it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SLUICE_MAX_WORKERS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct sluice_worker);
} sluice_workers SEC(".maps");

/* cppcheck-suppress unknownMacro */
SEC("sk_skb/stream_verdict")
int sluice_splice(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	struct sluice_api_stat *stat;
	struct sluice_limit *limit;
	struct sluice_peer *peer;
	__u32 len = skb->len;
	__u32 api;
	long verdict;

	/* A FIN arrives as an empty skb. Redirecting it would put EPIPE on
	 * the peer and stop every later redirect into it: leave it to the
	 * front, which watches for the hang-up. */
	if (len == 0)
		return SK_PASS;

	peer = bpf_map_lookup_elem(&sluice_peers, &cookie);
	if (!peer || peer->held)
		return SK_PASS;

	/* Redirects have no backpressure: past its limit the peer's reader
	 * is too far behind, so stop for good and let these bytes wait in
	 * this socket, where TCP's window holds the sender back. Stopping
	 * for good keeps the order: user space forwards what waits here only
	 * after the peer has sent everything redirected before. */
	limit = bpf_map_lookup_elem(&sluice_limits, &cookie);
	if (limit && peer->bytes + len > limit->max_bytes) {
		peer->held = 1;
		return SK_PASS;
	}

	verdict =
	    bpf_sk_redirect_hash(skb, &sluice_targets, &peer->peer_cookie, 0);
	if (verdict != SK_PASS)
		return verdict;

	__sync_fetch_and_add(&peer->bytes, len);
	api = peer->api_index;
	stat = bpf_map_lookup_elem(&sluice_api_stats, &api);
	if (stat) {
		stat->bytes += len;
		stat->segments++;
	}
	return SK_PASS;
}

char LICENSE[] SEC("license") = "GPL";
