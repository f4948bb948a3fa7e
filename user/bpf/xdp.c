/* The XDP edge on bpf.xdp.interfaces, through libxdp.
 *
 * libxdp puts sluice_edge behind its multi-program dispatcher where the
 * kernel allows it, so sluice shares an interface with other XDP programs.
 * Kernels that refuse the dispatcher's freplace programs get sluice_edge
 * attached alone ("legacy" in libxdp's words): then no other XDP program can
 * join it on that interface, which is logged.
 *
 * When alone, sluice swaps libxdp's netlink attachment for a bpf_link
 * (pinned as sluice_edge_link_IFACE). Closing a link needs no privilege, so
 * a sluiced that has dropped to its `user:` still detaches on stop; and
 * removing a dead run's pin detaches its program.
 */
#include "bpf/sys_bpf.h"
#include <bpf/libbpf.h>
#include <errno.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xdp/libxdp.h>

#include "bpf/internal.h"
#include "common/log.h"
#include "edge.skel.h"

#define EDGE_PROG_NAME "sluice_edge"
#define EDGE_RUN_PRIO                                                          \
	10 /* before other programs: a denied packet costs
			     nobody else anything */

static const char *mode_name(int mode)
{
	return mode == XDP_MODE_SKB ? "generic" : "native";
}

/* The id of the sluice_edge program a previous run pinned, or 0. */
static __u32 stale_prog_id(const struct sbpf *bpf)
{
	struct bpf_prog_info info = {};
	__u32 len = sizeof(info);
	char path[PATH_MAX];
	int fd;

	if (snprintf(path, sizeof(path), "%s/%s", bpf->pin_dir,
		     EDGE_PROG_NAME) >= (int)sizeof(path))
		return 0;
	fd = bpf_obj_get(path);
	if (fd < 0)
		return 0;
	if (bpf_obj_get_info_by_fd(fd, &info, &len))
		info.id = 0;
	close(fd);
	return info.id;
}

/* The program XDP runs on IFINDEX (a dispatcher or a lone program), 0 when
 * there is none. Asked of the kernel directly: libxdp 1.3's
 * xdp_multiprog__get_from_ifindex() keeps a descriptor of the program it
 * looked at open for good, which would keep a replaced program alive. */
static __u32 attached_prog(int ifindex, int *mode)
{
	LIBBPF_OPTS(bpf_xdp_query_opts, opts);

	if (bpf_xdp_query(ifindex, 0, &opts))
		return 0;
	if (opts.drv_prog_id) {
		*mode = XDP_MODE_NATIVE;
		return opts.drv_prog_id;
	}
	*mode = XDP_MODE_SKB;
	return opts.skb_prog_id;
}

static void prog_name(__u32 id, char *name, size_t len)
{
	struct bpf_prog_info info = {};
	__u32 info_len = sizeof(info);
	int fd = bpf_prog_get_fd_by_id(id);

	name[0] = '\0';
	if (fd < 0)
		return;
	if (bpf_obj_get_info_by_fd(fd, &info, &info_len) == 0)
		snprintf(name, len, "%s", info.name);
	close(fd);
}

static bool is_stale(__u32 id, const char *name, __u32 stale_id,
		     bool configured)
{
	if (stale_id && id == stale_id)
		return true;
	return configured && strcmp(name, EDGE_PROG_NAME) == 0;
}

/* Behind libxdp's dispatcher: ask libxdp to take the stale component
 * out, leaving any other program in place. */
static void detach_stale_component(int ifindex, const char *ifname,
				   __u32 stale_id, bool configured)
{
	struct xdp_program *prog = NULL;
	struct xdp_multiprog *mp;
	int err;

	mp = xdp_multiprog__get_from_ifindex(ifindex);
	if (libxdp_get_error(mp) || !mp)
		return;
	while ((prog = xdp_multiprog__next_prog(prog, mp))) {
		if (!is_stale(xdp_program__id(prog), xdp_program__name(prog),
			      stale_id, configured))
			continue;
		err = xdp_program__detach(prog, ifindex,
					  xdp_multiprog__attach_mode(mp), 0);
		if (!err)
			log_info("bpf: detached stale XDP program iface=%s "
				 "id=%u",
				 ifname, xdp_program__id(prog));
	}
	xdp_multiprog__close(mp);
}

/* Take a killed run's sluice_edge off IFINDEX: the one it pinned wherever it
 * is attached, and any program named sluice_edge on our own interfaces. A
 * lone program held by a link refuses the netlink detach (EBUSY): removing
 * the dead run's link pin detaches it instead. */
static void detach_stale_on(int ifindex, const char *ifname, __u32 stale_id,
			    bool configured)
{
	char name[BPF_OBJ_NAME_LEN];
	int mode = 0, err;
	__u32 id;

	id = attached_prog(ifindex, &mode);
	if (!id)
		return;
	prog_name(id, name, sizeof(name));
	if (strcmp(name, "xdp_dispatcher") == 0) {
		detach_stale_component(ifindex, ifname, stale_id, configured);
		return;
	}
	if (!is_stale(id, name, stale_id, configured))
		return;
	err = bpf_xdp_detach(ifindex,
			     mode == XDP_MODE_SKB ? XDP_FLAGS_SKB_MODE
						  : XDP_FLAGS_DRV_MODE,
			     NULL);
	if (err)
		log_debug("bpf: stale XDP program stays until its link pin "
			  "goes iface=%s id=%u err=%s",
			  ifname, id, strerror(-err));
	else
		log_info("bpf: detached stale XDP program iface=%s id=%u",
			 ifname, id);
}

void sbpf_xdp_detach_stale(struct sbpf *bpf, const struct rules *rules)
{
	__u32 stale_id = stale_prog_id(bpf);
	struct if_nameindex *ifs, *it;
	bool configured;

	ifs = if_nameindex();
	if (!ifs)
		return;
	for (it = ifs; it->if_index; it++) {
		configured = false;
		for (size_t i = 0; i < rules->bpf.xdp_interface_count; i++)
			if (strcmp(rules->bpf.xdp_interfaces[i], it->if_name) ==
			    0)
				configured = true;
		if (configured || stale_id)
			detach_stale_on(it->if_index, it->if_name, stale_id,
					configured);
	}
	if_freenameindex(ifs);
}

/* One sentence for an attach failure, by errno. */
static void attach_error(const struct sbpf_iface *iface, int ret, char *err,
			 size_t err_len)
{
	if (ret == -EBUSY || ret == -EEXIST)
		snprintf(err, err_len,
			 "XDP on %s is held by another program that cannot "
			 "share it (no libxdp dispatcher here); unload it "
			 "(xdp-loader unload %s --all) or drop %s from "
			 "bpf.xdp.interfaces",
			 iface->name, iface->name, iface->name);
	else if (ret == -EOPNOTSUPP && iface->mode == XDP_MODE_NATIVE)
		snprintf(err, err_len,
			 "interface %s does not support native XDP; set "
			 "bpf.xdp.mode: generic",
			 iface->name);
	else
		snprintf(err, err_len,
			 "cannot attach XDP to %s in %s mode (%s)", iface->name,
			 mode_name(iface->mode), strerror(-ret));
}

/* libxdp attached sluice_edge itself rather than a dispatcher. */
static bool attached_alone(struct sbpf *bpf, const struct sbpf_iface *iface)
{
	int mode;

	return attached_prog(iface->ifindex, &mode) ==
	       xdp_program__id(bpf->xdp);
}

static void report_alone(const struct sbpf_iface *iface)
{
	char reason[256];

	if (!sbpf_log_dispatcher_refused(reason, sizeof(reason)) || !reason[0])
		snprintf(reason, sizeof(reason), "libxdp attached it alone");
	log_warn("bpf: libxdp's multi-program dispatcher is unavailable on "
		 "this kernel (it refuses freplace programs), so sluice_edge "
		 "is attached alone and no other XDP program can share "
		 "iface=%s mode=%s reason=\"%s\"",
		 iface->name, mode_name(iface->mode), reason);
}

static int link_attach(struct sbpf *bpf, struct sbpf_iface *iface)
{
	LIBBPF_OPTS(bpf_link_create_opts, opts);

	opts.flags = iface->mode == XDP_MODE_SKB ? XDP_FLAGS_SKB_MODE
						 : XDP_FLAGS_DRV_MODE;
	iface->link_fd = bpf_link_create(xdp_program__fd(bpf->xdp),
					 iface->ifindex, BPF_XDP, &opts);
	return iface->link_fd < 0 ? -errno : 0;
}

/* libxdp attached sluice_edge alone: hold it by a link instead. Kernels
 * without XDP links (before 5.9) keep libxdp's attachment. */
static int swap_for_link(struct sbpf *bpf, struct sbpf_iface *iface)
{
	__u32 flags = iface->mode == XDP_MODE_SKB ? XDP_FLAGS_SKB_MODE
						  : XDP_FLAGS_DRV_MODE;
	int ret;

	if (bpf_xdp_detach(iface->ifindex, flags, NULL))
		return 0;
	iface->attached = false;
	ret = link_attach(bpf, iface);
	if (!ret)
		return 0;
	log_debug("bpf: no XDP link iface=%s err=%s", iface->name,
		  strerror(-ret));
	ret = xdp_program__attach(bpf->xdp, iface->ifindex, iface->mode, 0);
	iface->attached = ret == 0;
	return ret;
}

static int attach_one(struct sbpf *bpf, struct sbpf_iface *iface)
{
	int ret;

	/* Once libxdp has fallen back on one interface it will on all. */
	if (bpf->xdp_alone) {
		ret = link_attach(bpf, iface);
		if (ret != -EINVAL && ret != -EOPNOTSUPP)
			return ret;
	}
	ret = xdp_program__attach(bpf->xdp, iface->ifindex, iface->mode, 0);
	if (ret)
		return ret;
	iface->attached = true;
	iface->legacy = attached_alone(bpf, iface);
	if (!iface->legacy) {
		log_info("bpf: XDP attached iface=%s mode=%s dispatcher=libxdp",
			 iface->name, mode_name(iface->mode));
		return 0;
	}
	report_alone(iface);
	bpf->xdp_alone = true;
	return swap_for_link(bpf, iface);
}

static int resolve_ifaces(struct sbpf *bpf, const struct rules *rules,
			  char *err, size_t err_len)
{
	int mode = rules->bpf.xdp_mode == RULES_XDP_GENERIC ? XDP_MODE_SKB
							    : XDP_MODE_NATIVE;

	bpf->iface_count = rules->bpf.xdp_interface_count;
	bpf->ifaces = calloc(bpf->iface_count + 1, sizeof(*bpf->ifaces));
	if (!bpf->ifaces)
		return -ENOMEM;

	for (size_t i = 0; i < bpf->iface_count; i++) {
		struct sbpf_iface *iface = &bpf->ifaces[i];

		snprintf(iface->name, sizeof(iface->name), "%s",
			 rules->bpf.xdp_interfaces[i]);
		iface->mode = mode;
		iface->link_fd = -1;
		iface->ifindex = if_nametoindex(iface->name);
		if (!iface->ifindex) {
			snprintf(err, err_len,
				 "bpf.xdp.interfaces names %s, which does not "
				 "exist here; fix the rules file or create the "
				 "interface",
				 iface->name);
			return -ENODEV;
		}
	}
	return 0;
}

/* Load sluice_edge (libxdp loads the object on the first attach, as an
 * freplace program when it can use the dispatcher) and attach it to every
 * configured interface. Without interfaces the object is still loaded, so
 * sluice_deny and sluice_edge_stats exist for bpftool and reloads. */
int sbpf_xdp_attach(struct sbpf *bpf, const struct rules *rules, char *err,
		    size_t err_len)
{
	int ret;

	ret = resolve_ifaces(bpf, rules, err, err_len);
	if (ret)
		return ret;
	if (bpf->iface_count == 0)
		return sluice_edge__load(bpf->edge);

	bpf->xdp = xdp_program__from_bpf_obj(bpf->edge->obj, "xdp");
	ret = (int)libxdp_get_error(bpf->xdp);
	if (ret) {
		bpf->xdp = NULL;
		snprintf(err, err_len, "libxdp cannot use sluice_edge (%s)",
			 strerror(-ret));
		return ret;
	}
	xdp_program__set_run_prio(bpf->xdp, EDGE_RUN_PRIO);

	for (size_t i = 0; i < bpf->iface_count; i++) {
		struct sbpf_iface *iface = &bpf->ifaces[i];

		ret = attach_one(bpf, iface);
		if (ret) {
			attach_error(iface, ret, err, err_len);
			return ret;
		}
		if (iface->link_fd >= 0)
			log_info("bpf: XDP attached iface=%s mode=%s "
				 "dispatcher=none link=sluice_edge_link_%s",
				 iface->name, mode_name(iface->mode),
				 iface->name);
	}
	return 0;
}

void sbpf_xdp_detach(struct sbpf *bpf)
{
	int ret;

	for (size_t i = 0; i < bpf->iface_count; i++) {
		struct sbpf_iface *iface = &bpf->ifaces[i];

		if (iface->link_fd >= 0) {
			close(iface->link_fd);
			iface->link_fd = -1;
			log_info("bpf: XDP detached iface=%s", iface->name);
		}
		if (!iface->attached)
			continue;
		ret = xdp_program__detach(bpf->xdp, iface->ifindex, iface->mode,
					  0);
		if (ret)
			log_warn("bpf: cannot detach XDP iface=%s err=%s; the "
				 "next start replaces it, or run 'xdp-loader "
				 "unload %s --all'",
				 iface->name, strerror(-ret), iface->name);
		else
			log_info("bpf: XDP detached iface=%s", iface->name);
		iface->attached = false;
	}
}
