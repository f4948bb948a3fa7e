#include "common/privs.h"

#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/log.h"

/* The highest capability number this kernel knows. */
static int cap_last(void)
{
	int last = CAP_LAST_CAP;

	/* PR_CAPBSET_READ fails with EINVAL past the kernel's last one; the
	 * kernel may know more than the headers this was built with. */
	while (prctl(PR_CAPBSET_READ, last + 1, 0, 0, 0) >= 0)
		last++;
	return last;
}

/* Empty the bounding set while we still hold CAP_SETPCAP, so not even a
 * set-uid-root program executed later could get a capability back. */
static int drop_bounding_set(void)
{
	int last = cap_last();

	for (int cap = 0; cap <= last; cap++)
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) && errno != EINVAL)
			return -errno;
	return 0;
}

/* Effective, permitted and inheritable to zero, ambient cleared. After
 * setuid() to a non-root user the kernel already cleared the first two;
 * this makes it explicit and covers a `user:` that is uid 0. */
static int drop_capabilities(void)
{
	struct __user_cap_header_struct header = {
	    .version = _LINUX_CAPABILITY_VERSION_3,
	    .pid = 0,
	};
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};

	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) &&
	    errno != EINVAL)
		return -errno;
	if (syscall(SYS_capset, &header, data))
		return -errno;
	return 0;
}

static int fail(int ret, const char *user, const char *step)
{
	log_error("cannot drop privileges to user %s: %s failed (%s); run "
		  "sluiced as root or remove user: from the rules file",
		  user, step, strerror(-ret));
	return ret;
}

int privs_drop(const char *user)
{
	struct passwd *pw;
	gid_t gid;
	int ret;

	errno = 0;
	pw = getpwnam(user);
	if (!pw) {
		ret = errno ? -errno : -ENOENT;
		log_error("user %s does not exist; create it (useradd --system "
			  "%s) or remove user: from the rules file",
			  user, user);
		return ret;
	}
	gid = pw->pw_gid;

	ret = drop_bounding_set();
	if (ret)
		return fail(ret, user, "emptying the capability bounding set");
	if (setgroups(1, &gid))
		return fail(-errno, user, "setgroups");
	if (setresgid(gid, gid, gid))
		return fail(-errno, user, "setgid");
	if (setresuid(pw->pw_uid, pw->pw_uid, pw->pw_uid))
		return fail(-errno, user, "setuid");
	ret = drop_capabilities();
	if (ret)
		return fail(ret, user, "clearing capabilities");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		return fail(-errno, user, "PR_SET_NO_NEW_PRIVS");

	/* Make sure there is no way back. */
	if (pw->pw_uid != 0 && setuid(0) == 0)
		return fail(-EPERM, user, "checking that root is gone");

	log_info("dropped privileges user=%s uid=%u gid=%u capabilities=none",
		 user, (unsigned)pw->pw_uid, (unsigned)gid);
	return 0;
}
