// SPDX-License-Identifier: GPL-2.0
/* The XDP edge: drop sources on the deny list before the stack sees them,
 * and count passed and dropped packets per destination port.
 *
 * Parses Ethernet with up to two VLAN tags, IPv4 and IPv6 (no extension
 * headers: such packets count under port 0 but are still checked against
 * the deny list). Anything that is not IP passes untouched and uncounted.
 */
#include "vmlinux.h"

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "sluice_maps.h"

#define ETH_P_IP     0x0800
#define ETH_P_IPV6   0x86DD
#define ETH_P_8021Q  0x8100
#define ETH_P_8021AD 0x88A8
#define IP_MF	     0x2000
#define IP_OFFSET    0x1FFF

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, SLUICE_MAX_DENY);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sluice_deny_key);
	__type(value, struct sluice_deny_rule);
} sluice_deny SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, SLUICE_MAX_PORTS);
	__type(key, __u32);
	__type(value, struct sluice_edge_stat);
} sluice_edge_stats SEC(".maps");

struct packet {
	struct sluice_deny_key src;
	__u32 port;
};

static __always_inline int parse_ports(void *l4, void *end, __u8 proto,
				       struct packet *pkt)
{
	struct udphdr *udp = l4; /* TCP's ports sit at the same offsets */

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 0;
	if ((void *)(udp + 1) > end)
		return -1;
	/* Keep clang from recomputing udp after the check from a register
	 * the verifier has no bound for. */
	barrier_var(udp);
	pkt->port = bpf_ntohs(udp->dest);
	return 0;
}

static __always_inline int parse_ipv4(void *l3, void *end, struct packet *pkt)
{
	struct iphdr *ip = l3;
	__u32 hdr_len;

	if ((void *)(ip + 1) > end)
		return -1;
	hdr_len = ip->ihl * 4;
	if (hdr_len < sizeof(*ip))
		return -1;

	pkt->src.prefixlen = 128;
	pkt->src.addr[10] = 0xff;
	pkt->src.addr[11] = 0xff;
	__builtin_memcpy(&pkt->src.addr[12], &ip->saddr, 4);

	/* Only the first fragment carries the ports. */
	if (ip->frag_off & bpf_htons(IP_OFFSET))
		return 0;
	return parse_ports(l3 + hdr_len, end, ip->protocol, pkt);
}

static __always_inline int parse_ipv6(void *l3, void *end, struct packet *pkt)
{
	struct ipv6hdr *ip6 = l3;

	if ((void *)(ip6 + 1) > end)
		return -1;
	pkt->src.prefixlen = 128;
	__builtin_memcpy(pkt->src.addr, &ip6->saddr, 16);
	return parse_ports(ip6 + 1, end, ip6->nexthdr, pkt);
}

/* Returns the L3 protocol (host order) and sets *l3, or 0 when the frame is
 * too short. */
static __always_inline __u16 parse_ethernet(void *data, void *end, void **l3)
{
	struct ethhdr *eth = data;
	struct vlan_hdr *vlan;
	__u16 proto;
	int i;

	if ((void *)(eth + 1) > end)
		return 0;
	proto = bpf_ntohs(eth->h_proto);
	*l3 = eth + 1;

#pragma unroll
	for (i = 0; i < 2; i++) {
		if (proto != ETH_P_8021Q && proto != ETH_P_8021AD)
			break;
		vlan = *l3;
		if ((void *)(vlan + 1) > end)
			return 0;
		proto = bpf_ntohs(vlan->h_vlan_encapsulated_proto);
		*l3 = vlan + 1;
	}
	return proto;
}

static __always_inline void count(__u32 port, bool dropped)
{
	struct sluice_edge_stat zero = {}, *stat;

	stat = bpf_map_lookup_elem(&sluice_edge_stats, &port);
	if (!stat) {
		/* First packet for this port on any CPU. When the map is
		 * full the packet is counted under port 0. */
		if (bpf_map_update_elem(&sluice_edge_stats, &port, &zero,
					BPF_NOEXIST) &&
		    port != 0) {
			port = 0;
			bpf_map_update_elem(&sluice_edge_stats, &port, &zero,
					    BPF_NOEXIST);
		}
		stat = bpf_map_lookup_elem(&sluice_edge_stats, &port);
		if (!stat)
			return;
	}
	if (dropped)
		stat->dropped++;
	else
		stat->passed++;
}

/* cppcheck-suppress unknownMacro */
SEC("xdp")
int sluice_edge(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct sluice_deny_rule *rule;
	struct packet pkt = {};
	void *l3 = NULL;
	__u16 proto;
	int err;

	proto = parse_ethernet(data, end, &l3);
	if (proto == ETH_P_IP)
		err = parse_ipv4(l3, end, &pkt);
	else if (proto == ETH_P_IPV6)
		err = parse_ipv6(l3, end, &pkt);
	else
		return XDP_PASS;
	if (err)
		return XDP_PASS; /* truncated: the stack will drop it */

	rule = bpf_map_lookup_elem(&sluice_deny, &pkt.src);
	if (rule) {
		__sync_fetch_and_add(&rule->hits, 1);
		count(pkt.port, true);
		return XDP_DROP;
	}
	count(pkt.port, false);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
