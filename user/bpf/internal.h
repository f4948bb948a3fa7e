/* State shared by the files of user/bpf/ (not part of the interface). */
#ifndef SLUICE_BPF_INTERNAL_H
#define SLUICE_BPF_INTERNAL_H

#include <limits.h>
#include <net/if.h>
#include <stdbool.h>
#include <stddef.h>

#include "bpf/bpf.h"
#include "common/rules.h"

struct sluice_splice;
struct sluice_edge;
struct xdp_program;

/* One interface of bpf.xdp.interfaces and how sluice_edge sits on it. */
struct sbpf_iface {
	char name[IF_NAMESIZE];
	int ifindex;
	int mode;      /* enum xdp_attach_mode */
	bool attached; /* by libxdp (dispatcher or netlink) */
	bool legacy;   /* alone on the interface, no libxdp dispatcher */
	int link_fd;   /* when alone: held as a bpf_link, else -1 */
};

struct sbpf {
	char pin_dir[PATH_MAX];
	int lock_fd; /* flock on pin_dir: one sluiced per pin_dir */

	struct sluice_splice *splice;
	int verdict_link_fd; /* -1 when attached with bpf_prog_attach */
	bool verdict_attached;

	struct sluice_edge *edge;
	struct xdp_program *xdp;
	bool xdp_alone; /* libxdp fell back: sluice_edge alone, as a link */
	struct sbpf_iface *ifaces;
	size_t iface_count;

	enum rules_splice splice_mode; /* as configured */
	int ncpus;		       /* possible CPUs: per-CPU value count */
};

/* Log routing for libbpf and libxdp (libbpf_log.c). Between begin and end
 * their warnings go to the debug log: sbpf_open() says what went wrong in
 * one sentence of its own. */
void sbpf_log_init(void);
void sbpf_log_capture_begin(void);
void sbpf_log_capture_end(void);
/* libxdp said it could not use its dispatcher; the reason it gave. */
bool sbpf_log_dispatcher_refused(char *reason, size_t reason_len);

/* bpffs and pins (pin.c). */
int sbpf_bpffs_prepare(const char *pin_dir, char *err, size_t err_len);
int sbpf_pin_lock(struct sbpf *bpf, char *err, size_t err_len);
int sbpf_pins_remove_stale(struct sbpf *bpf);
int sbpf_pins_create(struct sbpf *bpf, char *err, size_t err_len);
void sbpf_pins_remove(struct sbpf *bpf);
int sbpf_pins_give_to(struct sbpf *bpf, const char *user);

/* The XDP edge (xdp.c). */
void sbpf_xdp_detach_stale(struct sbpf *bpf, const struct rules *rules);
int sbpf_xdp_attach(struct sbpf *bpf, const struct rules *rules, char *err,
		    size_t err_len);
void sbpf_xdp_detach(struct sbpf *bpf);

/* bpf.splice of the last sbpf_open() attempt (sbpf.c). */
enum rules_splice sbpf_configured_mode(void);

/* Map contents (maps.c). */
int sbpf_deny_sync(struct sbpf *bpf, const struct rules *rules);
int sbpf_apis_sync(struct sbpf *bpf, const struct rules *rules);

#endif
