/* libbpf's <bpf/bpf.h> (the syscall wrappers: bpf_obj_pin, bpf_link_create,
 * ...). sluice builds with -Iuser, where "bpf/bpf.h" is sluice's own
 * interface header, so libbpf's is reached by include_next from here.
 * Include this first in the files of user/bpf/: libxdp.h asks for <bpf/bpf.h> too and
 * relies on libbpf's being in already. */
#ifndef SLUICE_SYS_BPF_H
#define SLUICE_SYS_BPF_H

#include_next <bpf/bpf.h>

#endif
