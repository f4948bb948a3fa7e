/* sbpf_open / sbpf_update / sbpf_close: the life of sluice's BPF objects.
 *
 * Open, in order: bpffs and pin_dir, the pin_dir lock, clean-up after a run
 * that died (XDP first: it is found through the old pins), the splice
 * object and its verdict link, the edge object on its interfaces, the map
 * contents, and last the pins. Any failure undoes every earlier step and
 * leaves one sentence for the operator.
 */
#include "bpf/sys_bpf.h"
#include <bpf/libbpf.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xdp/libxdp.h>

#include "bpf/internal.h"
#include "common/log.h"
#include "edge.skel.h"
#include "splice.skel.h"

#define NEED_ROOT                                                              \
	"loading BPF needs root (CAP_BPF, CAP_NET_ADMIN); run sluiced as "     \
	"root or set bpf.splice: pipe"

/* The last open attempt, for /status when there is no struct sbpf. */
static char last_error[512];
static enum rules_splice last_mode = RULES_SPLICE_AUTO;

const char *sbpf_last_error(void)
{
	return last_error[0] ? last_error : NULL;
}

enum rules_splice sbpf_configured_mode(void)
{
	return last_mode;
}

/* The sentence for a failed load: privilege problems all read the same,
 * whatever step met them first. */
static void load_error(int ret, const char *what, char *err, size_t err_len)
{
	if (ret == -EPERM)
		snprintf(err, err_len, NEED_ROOT);
	else if (ret == -EACCES)
		snprintf(err, err_len,
			 "this kernel's verifier rejects %s (run with -l debug "
			 "for its log); set bpf.splice: pipe to run without "
			 "BPF",
			 what);
	else if (ret == -EINVAL || ret == -ENOTSUP || ret == -E2BIG ||
		 ret == -ENOENT)
		snprintf(err, err_len,
			 "this kernel cannot load %s (%s): it needs BTF, "
			 "sockhash stream verdicts and XDP (Linux 5.10 or "
			 "newer); upgrade the kernel or set bpf.splice: pipe",
			 what, strerror(-ret));
	else
		snprintf(err, err_len,
			 "loading %s failed (%s); set bpf.splice: pipe to run "
			 "without BPF",
			 what, strerror(-ret));
}

/* A bpf_link makes the verdict visible to `bpftool link` and pinnable;
 * kernels before 6.10 only have bpf_prog_attach on the map. */
static int attach_verdict(struct sbpf *bpf)
{
	int prog = bpf_program__fd(bpf->splice->progs.sluice_splice);
	int map = bpf_map__fd(bpf->splice->maps.sluice_pairs);

	bpf->verdict_link_fd =
	    bpf_link_create(prog, map, BPF_SK_SKB_STREAM_VERDICT, NULL);
	if (bpf->verdict_link_fd >= 0) {
		bpf->verdict_attached = true;
		return 0;
	}
	log_debug("bpf: no sockmap link (err=%s), attaching the verdict to "
		  "the map",
		  strerror(errno));
	if (bpf_prog_attach(prog, map, BPF_SK_SKB_STREAM_VERDICT, 0))
		return -errno;
	bpf->verdict_attached = true;
	return 0;
}

static void detach_verdict(struct sbpf *bpf)
{
	if (bpf->verdict_link_fd >= 0) {
		close(bpf->verdict_link_fd);
		bpf->verdict_link_fd = -1;
	} else if (bpf->verdict_attached) {
		bpf_prog_detach2(
		    bpf_program__fd(bpf->splice->progs.sluice_splice),
		    bpf_map__fd(bpf->splice->maps.sluice_pairs),
		    BPF_SK_SKB_STREAM_VERDICT);
	}
	bpf->verdict_attached = false;
}

static int load_splice(struct sbpf *bpf, char *err, size_t err_len)
{
	int ret;

	bpf->splice = sluice_splice__open_and_load();
	if (!bpf->splice) {
		ret = -errno;
		load_error(ret, "the splice program", err, err_len);
		return ret;
	}
	ret = attach_verdict(bpf);
	if (ret)
		load_error(ret, "the splice verdict", err, err_len);
	return ret;
}

static int load_edge(struct sbpf *bpf, const struct rules *rules, char *err,
		     size_t err_len)
{
	int ret;

	bpf->edge = sluice_edge__open();
	if (!bpf->edge) {
		ret = -errno;
		load_error(ret, "the XDP edge program", err, err_len);
		return ret;
	}
	ret = sbpf_xdp_attach(bpf, rules, err, err_len);
	if (ret && !err[0])
		load_error(ret, "the XDP edge program", err, err_len);
	if (ret == -EPERM)
		snprintf(err, err_len, NEED_ROOT);
	return ret;
}

static int fill_maps(struct sbpf *bpf, const struct rules *rules, char *err,
		     size_t err_len)
{
	int ret = sbpf_apis_sync(bpf, rules);

	if (!ret)
		ret = sbpf_deny_sync(bpf, rules);
	if (ret)
		snprintf(err, err_len, "cannot fill the BPF maps (%s)",
			 strerror(-ret));
	return ret;
}

static void sbpf_free(struct sbpf *bpf, bool unpin)
{
	if (bpf->xdp)
		sbpf_xdp_detach(bpf);
	if (unpin && bpf->lock_fd >= 0)
		sbpf_pins_remove(bpf);
	if (bpf->splice)
		detach_verdict(bpf);
	xdp_program__close(bpf->xdp);
	sluice_edge__destroy(bpf->edge);
	sluice_splice__destroy(bpf->splice);
	if (bpf->lock_fd >= 0)
		close(bpf->lock_fd);
	/* The directory goes too when nothing else was left in it. */
	if (unpin && bpf->lock_fd >= 0)
		rmdir(bpf->pin_dir);
	free(bpf->ifaces);
	free(bpf);
}

static int sbpf_setup(struct sbpf *bpf, const struct rules *rules, char *err,
		      size_t err_len)
{
	int ret;

	ret = sbpf_bpffs_prepare(bpf->pin_dir, err, err_len);
	if (ret == -EPERM || ret == -EACCES)
		snprintf(err, err_len, NEED_ROOT);
	if (ret)
		return ret;
	ret = sbpf_pin_lock(bpf, err, err_len);
	if (ret)
		return ret;

	sbpf_xdp_detach_stale(bpf, rules);
	ret = sbpf_pins_remove_stale(bpf);
	if (ret) {
		snprintf(err, err_len, "cannot clear bpf.pin_dir %s (%s)",
			 bpf->pin_dir, strerror(-ret));
		return ret;
	}

	ret = load_splice(bpf, err, err_len);
	if (!ret)
		ret = load_edge(bpf, rules, err, err_len);
	if (!ret)
		ret = fill_maps(bpf, rules, err, err_len);
	if (!ret)
		ret = sbpf_pins_create(bpf, err, err_len);
	if (!ret && rules->user && sbpf_pins_give_to(bpf, rules->user))
		log_warn("bpf: cannot hand pin_dir=%s to user=%s; its pins "
			 "will be replaced at the next start instead of "
			 "removed at stop",
			 bpf->pin_dir, rules->user);
	return ret;
}

struct sbpf *sbpf_open(const struct rules *rules, char *err, size_t err_len)
{
	struct sbpf *bpf;
	int ret;

	err[0] = '\0';
	last_mode = rules->bpf.splice;
	sbpf_log_init();
	bpf = calloc(1, sizeof(*bpf));
	if (!bpf) {
		snprintf(err, err_len, "out of memory loading BPF");
		return NULL;
	}
	bpf->lock_fd = -1;
	bpf->verdict_link_fd = -1;
	bpf->splice_mode = rules->bpf.splice;
	snprintf(bpf->pin_dir, sizeof(bpf->pin_dir), "%s",
		 rules->bpf.pin_dir ? rules->bpf.pin_dir
				    : "/sys/fs/bpf/sluice");
	bpf->ncpus = libbpf_num_possible_cpus();

	sbpf_log_capture_begin();
	ret = bpf->ncpus > 0 ? sbpf_setup(bpf, rules, err, err_len) : -EINVAL;
	sbpf_log_capture_end();
	if (ret) {
		if (!err[0])
			load_error(ret, "the BPF programs", err, err_len);
		snprintf(last_error, sizeof(last_error), "%s", err);
		sbpf_free(bpf, true);
		errno = -ret;
		return NULL;
	}

	last_error[0] = '\0';
	log_info("bpf: loaded pin_dir=%s verdict=%s xdp_interfaces=%zu "
		 "deny=%zu",
		 bpf->pin_dir, bpf->verdict_link_fd >= 0 ? "link" : "attach",
		 bpf->iface_count, rules->bpf.deny_count);
	return bpf;
}

int sbpf_update(struct sbpf *bpf, const struct rules *rules)
{
	int ret;

	if (!bpf)
		return 0;
	if (strcmp(bpf->pin_dir, rules->bpf.pin_dir ? rules->bpf.pin_dir
						    : "/sys/fs/bpf/sluice"))
		log_warn("bpf: bpf.pin_dir changes take effect at the next "
			 "start pin_dir=%s",
			 bpf->pin_dir);
	if (rules->bpf.xdp_interface_count != bpf->iface_count)
		log_warn("bpf: bpf.xdp.interfaces changes take effect at the "
			 "next start");
	ret = sbpf_apis_sync(bpf, rules);
	if (!ret)
		ret = sbpf_deny_sync(bpf, rules);
	return ret;
}

void sbpf_close(struct sbpf *bpf)
{
	if (!bpf)
		return;
	sbpf_free(bpf, true);
	log_info("bpf: unloaded, pins removed");
}
