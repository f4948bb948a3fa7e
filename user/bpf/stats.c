/* The BPF counters for /status (JSON) and /metrics (Prometheus text).
 *
 * Per-CPU values are summed here; nothing per packet or per segment ever
 * reaches user space.
 */
#include "bpf/sys_bpf.h"
#include <bpf/libbpf.h>
#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

#include "bpf/internal.h"
#include "common/json.h"
#include "edge.skel.h"
#include "../../bpf/sluice_maps.h"
#include "splice.skel.h"

struct edge_row {
	__u32 port;
	__u64 passed;
	__u64 dropped;
};

/* What relays run as: `auto` is pipe (relay_mode_for()). */
static const char *splice_mode_name(enum rules_splice mode, bool loaded)
{
	if (mode == RULES_SPLICE_AUTO ||
	    (mode == RULES_SPLICE_SOCKMAP && !loaded))
		return "pipe";
	return rules_splice_name(mode);
}

/* Sum one API's per-CPU counters; false for an unused index. */
static bool api_bytes(struct sbpf *bpf, __u32 index, char *name, __u64 *bytes)
{
	struct sluice_api_stat *percpu;
	struct sluice_api api;
	bool ok = false;

	if (bpf_map_lookup_elem(bpf_map__fd(bpf->splice->maps.sluice_apis),
				&index, &api) ||
	    !api.name[0])
		return false;
	percpu = calloc(bpf->ncpus, sizeof(*percpu));
	if (!percpu)
		return false;
	if (bpf_map_lookup_elem(bpf_map__fd(bpf->splice->maps.sluice_api_stats),
				&index, percpu) == 0) {
		*bytes = 0;
		for (int c = 0; c < bpf->ncpus; c++)
			*bytes += percpu[c].bytes;
		memcpy(name, api.name, SLUICE_NAME_LEN);
		name[SLUICE_NAME_LEN - 1] = '\0';
		ok = true;
	}
	free(percpu);
	return ok;
}

static int cmp_port(const void *a, const void *b)
{
	const struct edge_row *x = a, *y = b;

	return (x->port > y->port) - (x->port < y->port);
}

/* Every port in sluice_edge_stats, summed over CPUs, sorted by port. */
static size_t edge_rows(struct sbpf *bpf, struct edge_row *rows, size_t max)
{
	int fd = bpf_map__fd(bpf->edge->maps.sluice_edge_stats);
	struct sluice_edge_stat *percpu;
	__u32 key, next, *prev = NULL;
	size_t n = 0;

	percpu = calloc(bpf->ncpus, sizeof(*percpu));
	if (!percpu)
		return 0;
	while (n < max && bpf_map_get_next_key(fd, prev, &next) == 0) {
		key = next;
		prev = &key;
		if (bpf_map_lookup_elem(fd, &key, percpu))
			continue;
		rows[n] = (struct edge_row){.port = key};
		for (int c = 0; c < bpf->ncpus; c++) {
			rows[n].passed += percpu[c].passed;
			rows[n].dropped += percpu[c].dropped;
		}
		n++;
	}
	free(percpu);
	qsort(rows, n, sizeof(*rows), cmp_port);
	return n;
}

void sbpf_status_json(struct sbpf *bpf, struct evbuffer *out)
{
	char name[SLUICE_NAME_LEN];
	struct edge_row *rows;
	const char *reason;
	size_t n, shown = 0;
	__u64 bytes;

	reason = bpf ? NULL : sbpf_last_error();
	evbuffer_add_printf(
	    out, "{\"loaded\":%s,\"splice\":\"%s\",\"reason\":",
	    bpf ? "true" : "false",
	    splice_mode_name(bpf ? bpf->splice_mode : sbpf_configured_mode(),
			     bpf != NULL));
	if (reason)
		json_write_string(out, reason);
	else
		evbuffer_add_printf(out, "null");

	evbuffer_add_printf(out, ",\"spliced_bytes\":{");
	for (__u32 i = 0; bpf && i < SLUICE_MAX_APIS; i++) {
		if (!api_bytes(bpf, i, name, &bytes))
			continue;
		evbuffer_add_printf(out, "%s", shown++ ? "," : "");
		json_write_string(out, name);
		evbuffer_add_printf(out, ":%llu", (unsigned long long)bytes);
	}

	evbuffer_add_printf(out, "},\"edge\":[");
	rows = bpf ? calloc(SLUICE_MAX_PORTS, sizeof(*rows)) : NULL;
	n = rows ? edge_rows(bpf, rows, SLUICE_MAX_PORTS) : 0;
	for (size_t i = 0; i < n; i++)
		evbuffer_add_printf(
		    out, "%s{\"port\":%u,\"passed\":%llu,\"dropped\":%llu}",
		    i ? "," : "", rows[i].port,
		    (unsigned long long)rows[i].passed,
		    (unsigned long long)rows[i].dropped);
	free(rows);
	evbuffer_add_printf(out, "]}");
}

void sbpf_metrics(struct sbpf *bpf, struct evbuffer *out)
{
	char name[SLUICE_NAME_LEN];
	struct edge_row *rows;
	size_t n;
	__u64 bytes;

	evbuffer_add_printf(out,
			    "# HELP sluice_bpf_loaded Whether the BPF programs "
			    "are loaded (0: running without BPF).\n"
			    "# TYPE sluice_bpf_loaded gauge\n"
			    "sluice_bpf_loaded %d\n",
			    bpf ? 1 : 0);
	if (!bpf)
		return;

	evbuffer_add_printf(
	    out, "# HELP sluice_spliced_bytes_total Bytes the kernel "
		 "redirected between spliced sockets, per API.\n"
		 "# TYPE sluice_spliced_bytes_total counter\n");
	for (__u32 i = 0; i < SLUICE_MAX_APIS; i++)
		if (api_bytes(bpf, i, name, &bytes))
			evbuffer_add_printf(
			    out,
			    "sluice_spliced_bytes_total{api=\"%s\"} %llu\n",
			    name, (unsigned long long)bytes);

	evbuffer_add_printf(out,
			    "# HELP sluice_xdp_packets_total Packets seen by "
			    "the XDP edge, per destination port (0: not TCP "
			    "or UDP) and action.\n"
			    "# TYPE sluice_xdp_packets_total counter\n");
	rows = calloc(SLUICE_MAX_PORTS, sizeof(*rows));
	n = rows ? edge_rows(bpf, rows, SLUICE_MAX_PORTS) : 0;
	for (size_t i = 0; i < n; i++)
		evbuffer_add_printf(
		    out,
		    "sluice_xdp_packets_total{port=\"%u\",action=\"pass\"} "
		    "%llu\n"
		    "sluice_xdp_packets_total{port=\"%u\",action=\"drop\"} "
		    "%llu\n",
		    rows[i].port, (unsigned long long)rows[i].passed,
		    rows[i].port, (unsigned long long)rows[i].dropped);
	free(rows);
}
