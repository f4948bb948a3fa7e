/* Dropping root for good.
 *
 * sluiced calls privs_drop() once, after loading BPF and binding its
 * listeners, when the rules name a `user:`. Everything it needs afterwards
 * goes through descriptors it already holds.
 */
#ifndef SLUICE_PRIVS_H
#define SLUICE_PRIVS_H

/* Become USER (its uid, primary gid, and no other groups), with no
 * capability in any set (effective, permitted, inheritable, ambient,
 * bounding) and no_new_privs set, so nothing executed later can gain any.
 * Returns 0, or -errno after logging one sentence ("user sluice does not
 * exist; create it ... or remove user: from the rules file").
 *
 * Call it before starting threads: the bounding set and no_new_privs belong
 * to the calling thread and are inherited only by threads and processes
 * created after it. */
int privs_drop(const char *user);

#endif
