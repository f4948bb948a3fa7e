/* bpffs, the pin directory and the pins in it.
 *
 * Every object sluice pins lives directly in bpf.pin_dir and is named
 * sluice_*; nothing else there is touched. One sluiced owns a pin_dir at a
 * time (an flock on the directory), so a start may treat every sluice_* pin
 * it finds as left over by a run that died without cleaning up.
 */
#include "bpf/sys_bpf.h"
#include <bpf/libbpf.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <linux/magic.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "bpf/internal.h"
#include "common/log.h"
#include "edge.skel.h"
#include "splice.skel.h"

#define BPFFS_ROOT "/sys/fs/bpf"

static bool is_bpffs(const char *path)
{
	struct statfs st;

	return statfs(path, &st) == 0 &&
	       st.f_type == (typeof(st.f_type))BPF_FS_MAGIC;
}

/* mkdir -p, mode 0700: pins are for root's bpftool. */
static int make_dirs(const char *path)
{
	char buf[PATH_MAX];
	size_t len = strlen(path);

	if (len == 0 || len >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, len + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0700) && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, 0700) && errno != EEXIST)
		return -errno;
	return 0;
}

/* bpffs is not mounted at boot on the machines sluice targets: mount it at
 * /sys/fs/bpf when the pin directory lives there, then create pin_dir. */
int sbpf_bpffs_prepare(const char *pin_dir, char *err, size_t err_len)
{
	size_t root_len = strlen(BPFFS_ROOT);
	int ret;

	if (strncmp(pin_dir, BPFFS_ROOT "/", root_len + 1) == 0 &&
	    !is_bpffs(BPFFS_ROOT)) {
		if (mount("bpf", BPFFS_ROOT, "bpf", 0, "mode=0700")) {
			ret = -errno;
			snprintf(err, err_len,
				 "cannot mount bpffs at %s (%s); mount it with "
				 "'mount -t bpf bpf %s' or run sluiced as root",
				 BPFFS_ROOT, strerror(-ret), BPFFS_ROOT);
			return ret;
		}
		log_info("bpf: mounted bpffs path=%s", BPFFS_ROOT);
	}

	ret = make_dirs(pin_dir);
	if (ret) {
		snprintf(err, err_len, "cannot create bpf.pin_dir %s (%s)",
			 pin_dir, strerror(-ret));
		return ret;
	}
	if (!is_bpffs(pin_dir)) {
		snprintf(err, err_len,
			 "bpf.pin_dir %s is not on a bpffs; use a directory "
			 "under %s",
			 pin_dir, BPFFS_ROOT);
		return -ENOTSUP;
	}
	return 0;
}

int sbpf_pin_lock(struct sbpf *bpf, char *err, size_t err_len)
{
	int ret;

	bpf->lock_fd = open(bpf->pin_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (bpf->lock_fd < 0) {
		ret = -errno;
		snprintf(err, err_len, "cannot open bpf.pin_dir %s (%s)",
			 bpf->pin_dir, strerror(-ret));
		return ret;
	}
	if (flock(bpf->lock_fd, LOCK_EX | LOCK_NB)) {
		ret = -errno;
		snprintf(err, err_len,
			 "bpf.pin_dir %s is in use by another running sluiced; "
			 "stop it or give this one its own bpf.pin_dir",
			 bpf->pin_dir);
		close(bpf->lock_fd);
		bpf->lock_fd = -1;
		return ret;
	}
	return 0;
}

/* Unlink every sluice_* entry of pin_dir. Removing a pinned link or program
 * releases it once no process holds it, which detaches the splice verdict
 * and the XDP link of a killed run; XDP attached by libxdp is handled by
 * sbpf_xdp_detach_stale(), which must run first because it finds the old
 * program through its pin.
 *
 * Works relative to the descriptor taken at start: after sluiced drops to
 * its `user:` it cannot walk /sys/fs/bpf (mode 0700) any more, but it owns
 * pin_dir itself (see sbpf_pins_give_to). */
static int remove_sluice_pins(struct sbpf *bpf, bool stale)
{
	struct dirent *de;
	int removed = 0;
	DIR *dir;
	int fd;

	fd = openat(bpf->lock_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	dir = fdopendir(fd);
	if (!dir) {
		close(fd);
		return -errno;
	}
	while ((de = readdir(dir))) {
		if (strncmp(de->d_name, "sluice_", 7) != 0)
			continue;
		if (unlinkat(bpf->lock_fd, de->d_name, 0)) {
			log_warn("bpf: cannot remove pin dir=%s name=%s err=%s",
				 bpf->pin_dir, de->d_name, strerror(errno));
			continue;
		}
		if (stale)
			log_debug("bpf: removed stale pin dir=%s name=%s",
				  bpf->pin_dir, de->d_name);
		removed++;
	}
	closedir(dir);
	return removed;
}

int sbpf_pins_remove_stale(struct sbpf *bpf)
{
	int removed = remove_sluice_pins(bpf, true);

	if (removed > 0)
		log_info("bpf: replaced pins left by an earlier run dir=%s "
			 "count=%d",
			 bpf->pin_dir, removed);
	return removed < 0 ? removed : 0;
}

void sbpf_pins_remove(struct sbpf *bpf)
{
	remove_sluice_pins(bpf, false);
}

static int pin_fd(struct sbpf *bpf, int fd, const char *name, char *err,
		  size_t err_len)
{
	char path[PATH_MAX];
	int ret = 0, n;

	n = snprintf(path, sizeof(path), "%s/%s", bpf->pin_dir, name);
	if (n < 0 || (size_t)n >= sizeof(path))
		ret = -ENAMETOOLONG;
	else if (bpf_obj_pin(fd, path))
		ret = -errno;
	if (ret)
		snprintf(err, err_len, "cannot pin %s in %s (%s)", name,
			 bpf->pin_dir, strerror(-ret));
	return ret;
}

/* Pin names are the map and program names in full: the kernel keeps only
 * 15 characters of a name, so `bpftool map show` says sluice_api_stat where
 * the pin says sluice_api_stats. */
int sbpf_pins_create(struct sbpf *bpf, char *err, size_t err_len)
{
	struct bpf_object *objs[2] = {bpf->splice->obj, bpf->edge->obj};
	struct bpf_program *prog;
	struct bpf_map *map;
	int ret;

	for (int i = 0; i < 2; i++) {
		bpf_object__for_each_map(map, objs[i])
		{
			ret = pin_fd(bpf, bpf_map__fd(map), bpf_map__name(map),
				     err, err_len);
			if (ret)
				return ret;
		}
		bpf_object__for_each_program(prog, objs[i])
		{
			ret = pin_fd(bpf, bpf_program__fd(prog),
				     bpf_program__name(prog), err, err_len);
			if (ret)
				return ret;
		}
	}
	for (size_t i = 0; i < bpf->iface_count; i++) {
		char name[64];

		if (bpf->ifaces[i].link_fd < 0)
			continue;
		snprintf(name, sizeof(name), "sluice_edge_link_%s",
			 bpf->ifaces[i].name);
		ret = pin_fd(bpf, bpf->ifaces[i].link_fd, name, err, err_len);
		if (ret)
			return ret;
	}
	if (bpf->verdict_link_fd >= 0)
		return pin_fd(bpf, bpf->verdict_link_fd, "sluice_splice_link",
			      err, err_len);
	return 0;
}

/* sluiced will drop to USER: let it remove its pins on stop. The pins stay
 * root's; only the directory (its entries) changes hands. */
int sbpf_pins_give_to(struct sbpf *bpf, const char *user)
{
	struct passwd *pw = getpwnam(user);

	if (!pw)
		return 0; /* privs_drop() reports a missing user */
	if (fchown(bpf->lock_fd, pw->pw_uid, pw->pw_gid))
		return -errno;
	return 0;
}
