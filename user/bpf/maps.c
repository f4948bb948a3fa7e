/* What user space writes into the maps: the deny list and the API table
 * (at start and on reload), the socket pairs (per spliced connection) and
 * the worker table (for the pool).
 *
 * All of it goes through the descriptors opened at start, so it keeps
 * working after sluiced has dropped its privileges.
 */
#include "bpf/sys_bpf.h"
#include <bpf/libbpf.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "bpf/internal.h"
#include "common/log.h"
#include "edge.skel.h"
#include "../../bpf/sluice_maps.h"
#include "splice.skel.h"

static void deny_key_from_cidr(const struct rules_cidr *cidr,
			       struct sluice_deny_key *key)
{
	unsigned int bits;

	memset(key, 0, sizeof(*key));
	if (cidr->family == AF_INET) {
		key->addr[10] = 0xff;
		key->addr[11] = 0xff;
		memcpy(&key->addr[12], cidr->addr, 4);
		key->prefixlen = 96 + cidr->prefix_len;
	} else {
		memcpy(key->addr, cidr->addr, 16);
		key->prefixlen = cidr->prefix_len;
	}

	/* Clear the host bits: the trie treats 10.0.0.1/8 and 10.0.0.0/8 as
	 * one prefix, and the reload diff compares whole keys. */
	bits = key->prefixlen;
	for (int i = 0; i<16; i++, bits = bits> 8 ? bits - 8 : 0)
		if (bits < 8)
			key->addr[i] &= (__u8)(0xff00 >> bits);
}

static bool deny_wanted(const struct rules *rules,
			const struct sluice_deny_key *key)
{
	struct sluice_deny_key want;

	for (size_t i = 0; i < rules->bpf.deny_count; i++) {
		deny_key_from_cidr(&rules->bpf.deny[i], &want);
		if (memcmp(&want, key, sizeof(want)) == 0)
			return true;
	}
	return false;
}

/* Make sluice_deny hold exactly rules->bpf.deny: delete what went, add what
 * came, leave the rest (and its hit counter) alone. The XDP program keeps
 * running throughout; a packet sees either the old or the new entry. */
int sbpf_deny_sync(struct sbpf *bpf, const struct rules *rules)
{
	int fd = bpf_map__fd(bpf->edge->maps.sluice_deny);
	struct sluice_deny_key key, next, *prev = NULL;
	struct sluice_deny_rule zero = {};
	int added = 0, removed = 0;
	struct sluice_deny_key *gone;
	size_t gone_count = 0;

	gone = calloc(SLUICE_MAX_DENY, sizeof(*gone));
	if (!gone)
		return -ENOMEM;
	while (gone_count < SLUICE_MAX_DENY &&
	       bpf_map_get_next_key(fd, prev, &next) == 0) {
		if (!deny_wanted(rules, &next))
			gone[gone_count++] = next;
		key = next;
		prev = &key;
	}
	for (size_t i = 0; i < gone_count; i++)
		if (bpf_map_delete_elem(fd, &gone[i]) == 0)
			removed++;
	free(gone);

	for (size_t i = 0; i < rules->bpf.deny_count; i++) {
		deny_key_from_cidr(&rules->bpf.deny[i], &key);
		if (bpf_map_update_elem(fd, &key, &zero, BPF_NOEXIST) == 0) {
			added++;
		} else if (errno != EEXIST) {
			int ret = -errno;

			log_warn("bpf: cannot add deny prefix=%s err=%s",
				 rules->bpf.deny[i].text, strerror(-ret));
			return ret;
		}
	}
	log_info("bpf: deny list synced prefixes=%zu added=%d removed=%d",
		 rules->bpf.deny_count, added, removed);
	return 0;
}

static int api_stats_zero(struct sbpf *bpf, __u32 index)
{
	int fd = bpf_map__fd(bpf->splice->maps.sluice_api_stats);
	struct sluice_api_stat *zero;
	int ret = 0;

	zero = calloc(bpf->ncpus, sizeof(*zero));
	if (!zero)
		return -ENOMEM;
	if (bpf_map_update_elem(fd, &index, zero, BPF_ANY))
		ret = -errno;
	free(zero);
	return ret;
}

/* Index -> name, so sluice_api_stats (indexed the same way) reads in
 * bpftool. An index whose API changed starts counting from zero again. */
int sbpf_apis_sync(struct sbpf *bpf, const struct rules *rules)
{
	int fd = bpf_map__fd(bpf->splice->maps.sluice_apis);
	struct sluice_api old, now;
	int ret;

	if (rules->api_count > SLUICE_MAX_APIS)
		log_warn("bpf: only the first %d APIs are counted in "
			 "sluice_api_stats apis=%zu",
			 SLUICE_MAX_APIS, rules->api_count);

	for (__u32 i = 0; i < SLUICE_MAX_APIS; i++) {
		memset(&now, 0, sizeof(now));
		if (i < rules->api_count)
			snprintf(now.name, sizeof(now.name), "%s",
				 rules->apis[i].name);
		if (bpf_map_lookup_elem(fd, &i, &old))
			return -errno;
		if (memcmp(&old, &now, sizeof(now)) == 0)
			continue;
		if (bpf_map_update_elem(fd, &i, &now, BPF_ANY))
			return -errno;
		ret = api_stats_zero(bpf, i);
		if (ret)
			return ret;
	}
	return 0;
}

static int socket_cookie(int fd, __u64 *cookie)
{
	socklen_t len = sizeof(*cookie);

	if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, cookie, &len))
		return -errno;
	return 0;
}

/* Order matters: both sockets become redirect targets (sluice_targets, no
 * program) and get their peers entry before either enters sluice_pairs,
 * where the verdict starts running on what they receive. */
int sbpf_pair_add(struct sbpf *bpf, int fd_a, int fd_b, int api_index)
{
	struct sluice_peer peer_a = {}, peer_b = {};
	__u64 sock_a = fd_a, sock_b = fd_b;
	int targets, pairs, peers;
	__u64 cookie_a, cookie_b;
	int one = 1, ret;

	if (!bpf)
		return -ENOTCONN;
	targets = bpf_map__fd(bpf->splice->maps.sluice_targets);
	pairs = bpf_map__fd(bpf->splice->maps.sluice_pairs);
	peers = bpf_map__fd(bpf->splice->maps.sluice_peers);
	ret = socket_cookie(fd_a, &cookie_a);
	if (!ret)
		ret = socket_cookie(fd_b, &cookie_b);
	if (ret)
		return ret;

	peer_a.peer_cookie = cookie_b;
	peer_b.peer_cookie = cookie_a;
	peer_a.api_index = peer_b.api_index =
	    api_index >= 0 && api_index < SLUICE_MAX_APIS ? api_index : 0;

	if (bpf_map_update_elem(targets, &cookie_a, &sock_a, BPF_NOEXIST) ||
	    bpf_map_update_elem(targets, &cookie_b, &sock_b, BPF_NOEXIST) ||
	    bpf_map_update_elem(peers, &cookie_a, &peer_a, BPF_ANY) ||
	    bpf_map_update_elem(peers, &cookie_b, &peer_b, BPF_ANY) ||
	    bpf_map_update_elem(pairs, &cookie_a, &sock_a, BPF_NOEXIST) ||
	    bpf_map_update_elem(pairs, &cookie_b, &sock_b, BPF_NOEXIST)) {
		ret = -errno;
		sbpf_pair_remove(bpf, fd_a, fd_b);
		return ret;
	}

	/* Bytes that arrived before the insertion are not run through the
	 * verdict until the socket's data_ready fires again; setting the
	 * receive low-water mark fires it. */
	setsockopt(fd_a, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one));
	setsockopt(fd_b, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one));
	return 0;
}

void sbpf_pair_remove(struct sbpf *bpf, int fd_a, int fd_b)
{
	int targets, pairs, peers, limits;
	int fds[2] = {fd_a, fd_b};
	__u64 cookies[2];
	bool have[2];

	if (!bpf)
		return;
	targets = bpf_map__fd(bpf->splice->maps.sluice_targets);
	pairs = bpf_map__fd(bpf->splice->maps.sluice_pairs);
	peers = bpf_map__fd(bpf->splice->maps.sluice_peers);
	limits = bpf_map__fd(bpf->splice->maps.sluice_limits);

	for (int i = 0; i < 2; i++)
		have[i] = socket_cookie(fds[i], &cookies[i]) == 0;
	for (int i = 0; i < 2; i++)
		if (have[i])
			bpf_map_delete_elem(pairs, &cookies[i]);
	for (int i = 0; i < 2; i++) {
		if (!have[i])
			continue;
		bpf_map_delete_elem(targets, &cookies[i]);
		bpf_map_delete_elem(peers, &cookies[i]);
		bpf_map_delete_elem(limits, &cookies[i]);
	}
}

int sbpf_pair_pause(struct sbpf *bpf, int fd_a, int fd_b)
{
	int pairs, fds[2] = {fd_a, fd_b};
	__u64 cookie;
	int ret;

	if (!bpf)
		return -ENOTCONN;
	pairs = bpf_map__fd(bpf->splice->maps.sluice_pairs);
	for (int i = 0; i < 2; i++) {
		ret = socket_cookie(fds[i], &cookie);
		if (ret)
			return ret;
		if (bpf_map_delete_elem(pairs, &cookie) && errno != ENOENT)
			return -errno;
	}
	return 0;
}

static int peer_lookup(struct sbpf *bpf, int fd, struct sluice_peer *peer)
{
	__u64 cookie;
	int ret;

	if (!bpf)
		return -ENOTCONN;
	ret = socket_cookie(fd, &cookie);
	if (ret)
		return ret;
	if (bpf_map_lookup_elem(bpf_map__fd(bpf->splice->maps.sluice_peers),
				&cookie, peer))
		return -errno;
	return 0;
}

int sbpf_pair_bytes(struct sbpf *bpf, int fd, uint64_t *bytes)
{
	struct sluice_peer peer;
	int ret = peer_lookup(bpf, fd, &peer);

	if (!ret)
		*bytes = peer.bytes;
	return ret;
}

int sbpf_pair_held(struct sbpf *bpf, int fd, bool *held)
{
	struct sluice_peer peer;
	int ret = peer_lookup(bpf, fd, &peer);

	if (!ret)
		*held = peer.held != 0;
	return ret;
}

int sbpf_pair_limit(struct sbpf *bpf, int fd, uint64_t max_bytes)
{
	struct sluice_limit limit = {.max_bytes = max_bytes};
	__u64 cookie;
	int map, ret;

	if (!bpf)
		return -ENOTCONN;
	ret = socket_cookie(fd, &cookie);
	if (ret)
		return ret;
	map = bpf_map__fd(bpf->splice->maps.sluice_limits);
	if (max_bytes == 0)
		ret = bpf_map_delete_elem(map, &cookie);
	else
		ret = bpf_map_update_elem(map, &cookie, &limit, BPF_ANY);
	return ret && errno != ENOENT ? -errno : 0;
}

int sbpf_worker_set(struct sbpf *bpf, uint32_t pid, const char *api, int state,
		    uint64_t calls)
{
	struct sluice_worker worker = {
	    .pid = pid,
	    .state = (__u32)state,
	    .calls = calls,
	};

	if (!bpf)
		return -ENOTCONN;
	if (api)
		snprintf(worker.api, sizeof(worker.api), "%s", api);
	if (bpf_map_update_elem(bpf_map__fd(bpf->splice->maps.sluice_workers),
				&pid, &worker, BPF_ANY))
		return -errno;
	return 0;
}

int sbpf_worker_delete(struct sbpf *bpf, uint32_t pid)
{
	if (!bpf)
		return -ENOTCONN;
	if (bpf_map_delete_elem(bpf_map__fd(bpf->splice->maps.sluice_workers),
				&pid))
		return -errno;
	return 0;
}
