/* Types shared by the BPF programs in bpf/ and by user/bpf/.
 *
 * Every map value is a named struct so that `bpftool map dump pinned
 * PIN_DIR/NAME` prints field names. Included after vmlinux.h on the BPF side
 * and on its own in user space, so it uses only the __uNN types both have.
 */
#ifndef SLUICE_MAPS_H
#define SLUICE_MAPS_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* Map sizes. A spliced connection takes two entries in each socket map. */
#define SLUICE_MAX_APIS	   256
#define SLUICE_MAX_SOCKETS 65536
#define SLUICE_MAX_PORTS   4096
#define SLUICE_MAX_DENY	   16384
#define SLUICE_MAX_WORKERS 1024
#define SLUICE_NAME_LEN	   64

/* sluice_peers: socket cookie -> where its bytes go. `bytes` counts what the
 * verdict redirected out of this socket into its peer since the pair was
 * added; the relay waits for the peer to have sent that much before it
 * passes a FIN on. `held` turns 1 when the socket's limit in sluice_limits
 * was reached: from then on the verdict redirects nothing more and the
 * bytes stay in the socket, for user space to read. */
struct sluice_peer {
	__u64 peer_cookie;
	__u64 bytes;
	__u32 api_index;
	__u32 held;
};

/* sluice_limits: socket cookie -> how many bytes the verdict may redirect
 * out of it in all (the same count as sluice_peer.bytes). Written by user
 * space only; a socket without an entry has no limit. */
struct sluice_limit {
	__u64 max_bytes;
};

/* sluice_api_stats: per-CPU, indexed by API position in the rules file. */
struct sluice_api_stat {
	__u64 bytes;	/* redirected by the splice verdict */
	__u64 segments; /* skbs redirected */
};

/* sluice_apis: the API table, index -> name, rewritten on reload. */
struct sluice_api {
	char name[SLUICE_NAME_LEN];
};

/* sluice_deny: LPM trie key. IPv4 addresses are stored IPv4-mapped
 * (::ffff:a.b.c.d, prefix + 96) so one trie serves both families. */
struct sluice_deny_key {
	__u32 prefixlen;
	__u8 addr[16];
};

struct sluice_deny_rule {
	__u64 hits; /* packets dropped by this prefix */
};

/* sluice_edge_stats: per-CPU, keyed by destination port in host order
 * (TCP and UDP; 0 for every other packet). */
struct sluice_edge_stat {
	__u64 passed;
	__u64 dropped;
};

/* sluice_workers: pool state, keyed by worker pid. */
enum sluice_worker_state {
	SLUICE_WORKER_STARTING = 0,
	SLUICE_WORKER_IDLE = 1,
	SLUICE_WORKER_BUSY = 2,
};

struct sluice_worker {
	__u32 pid;
	__u32 state; /* enum sluice_worker_state */
	__u64 calls;
	char api[SLUICE_NAME_LEN]; /* API of the current call, "" when idle */
};

#endif
