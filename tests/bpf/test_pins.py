"""The life of sluice's pinned BPF objects: named for bpftool while running,
all gone after a normal stop, replaced after a SIGKILL and restart, updated
in place on reload; and the one sentence a start without privileges gets."""

from __future__ import annotations

import os
import pwd
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import netns
from netns import bpftool, deny_prefixes, live_link_ids, pinned_id, ping

NEED_ROOT = ("error: loading BPF needs root (CAP_BPF, CAP_NET_ADMIN); run "
             "sluiced as root or set bpf.splice: pipe")

MAPS = ["sluice_api_stats", "sluice_apis", "sluice_deny", "sluice_edge_stats",
        "sluice_limits",
        "sluice_pairs", "sluice_peers", "sluice_targets", "sluice_workers"]
PROGS = ["sluice_edge", "sluice_splice"]


def v4_key(addr: str, prefix: int) -> tuple[int, tuple[int, ...]]:
    """A sluice_deny key as bpftool shows it: IPv4-mapped, prefix + 96."""
    octets = [int(o) for o in addr.split(".")]
    return 96 + prefix, tuple([0] * 10 + [255, 255] + octets)


def start(tools, veth, pin_dir, deny_file, *extra):
    tool = tools(["-p", pin_dir.path, "-i", veth.edge_if, "-D",
                  str(deny_file), "-a", "alpha", "-a", "beta", *extra],
                 ns=veth.edge)
    assert tool.start() == "ok", tool.log()
    return tool


def ids(pin_dir, veth) -> dict[str, int]:
    """Kernel ids of what one run pinned and attached."""
    p = pin_dir.path
    return {
        "edge": pinned_id(f"{p}/sluice_edge"),
        "splice": pinned_id(f"{p}/sluice_splice"),
        "splice_link": pinned_id(f"{p}/sluice_splice_link", "link"),
        "edge_link": pinned_id(f"{p}/sluice_edge_link_{veth.edge_if}",
                               "link"),
        "attached": veth.xdp_prog_id(),
    }


def prog_exists(prog_id: int) -> bool:
    return bpftool("prog", "show", "id", str(prog_id), check=False) is not None


def wait_gone(prog_ids, timeout=3.0) -> list[int]:
    """Programs are freed after an RCU grace period: poll briefly."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [i for i in prog_ids if prog_exists(i)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


@pytest.fixture
def deny_file(veth):
    # Outside pytest's tmp_path (mode 0700): a run that dropped to nobody
    # reads it again on reload.
    fd, name = tempfile.mkstemp(prefix="sluice_deny_", dir="/tmp")
    os.close(fd)
    os.chmod(name, 0o644)
    path = Path(name)
    path.write_text(f"{veth.peer_v4}/32\n198.51.100.0/24\n")
    yield path
    path.unlink(missing_ok=True)


def test_every_object_is_pinned_with_a_sluice_name(tools, veth, pin_dir,
                                                   deny_file):
    start(tools, veth, pin_dir, deny_file)
    expected = sorted(MAPS + PROGS + ["sluice_splice_link",
                                      f"sluice_edge_link_{veth.edge_if}"])
    assert pin_dir.entries() == expected
    assert bpftool("prog", "show", "pinned",
                   f"{pin_dir.path}/sluice_edge")["name"] == "sluice_edge"
    apis = bpftool("map", "dump", "pinned", f"{pin_dir.path}/sluice_apis")
    names = {e["formatted"]["key"]: e["formatted"]["value"]["name"]
             for e in apis if e["formatted"]["value"]["name"]}
    assert names == {0: "alpha", 1: "beta"}
    ids_now = ids(pin_dir, veth)
    assert ids_now["attached"] == ids_now["edge"]


def test_a_stop_leaves_no_pin_link_or_attachment(tools, veth, pin_dir,
                                                 deny_file):
    tool = start(tools, veth, pin_dir, deny_file)
    before = ids(pin_dir, veth)
    assert all(before.values()), before

    assert tool.stop() == "closed"
    assert pin_dir.entries() == []
    assert veth.xdp_prog_id() is None
    assert not {before["splice_link"], before["edge_link"]} & live_link_ids()
    assert wait_gone([before["edge"], before["splice"]]) == []


def test_a_restart_after_sigkill_replaces_the_stale_objects(tools, veth,
                                                            pin_dir,
                                                            deny_file):
    first = start(tools, veth, pin_dir, deny_file)
    old = ids(pin_dir, veth)
    first.kill()
    # What a crash leaves: pins, links and the XDP attachment.
    assert ids(pin_dir, veth) == old

    second = start(tools, veth, pin_dir, deny_file)
    new = ids(pin_dir, veth)
    assert all(new.values()), new
    assert not set(new.values()) & set(old.values())
    assert new["attached"] == new["edge"]
    assert "replaced pins left by an earlier run" in second.log()
    assert not {old["splice_link"], old["edge_link"]} & live_link_ids()
    assert wait_gone([old["edge"], old["splice"]]) == []
    # The restarted edge works: the deny list is enforced.
    assert ping(veth.peer, veth.peer_v4, veth.edge_v4, 2) == 0

    assert second.stop() == "closed"
    assert pin_dir.entries() == []
    assert veth.xdp_prog_id() is None


def test_a_reload_rewrites_the_deny_list_in_place(tools, veth, pin_dir,
                                                  deny_file):
    tool = start(tools, veth, pin_dir, deny_file)
    before = ids(pin_dir, veth)
    assert deny_prefixes(pin_dir.path) == {v4_key(veth.peer_v4, 32),
                                           v4_key("198.51.100.0", 24)}
    assert ping(veth.peer, veth.peer_v4, veth.edge_v4, 2) == 0

    deny_file.write_text("198.51.100.0/24\n2001:db8::/32\n")
    assert tool.hup() == "updated"

    v6 = (32, tuple([0x20, 0x01, 0x0d, 0xb8] + [0] * 12))
    assert deny_prefixes(pin_dir.path) == {v4_key("198.51.100.0", 24), v6}
    assert ids(pin_dir, veth) == before  # nothing reloaded or reattached
    assert "added=1 removed=1" in tool.log()
    assert ping(veth.peer, veth.peer_v4, veth.edge_v4, 2) == 2


def test_a_second_sluiced_on_the_same_pin_dir_is_refused(tools, veth,
                                                         pin_dir, deny_file):
    start(tools, veth, pin_dir, deny_file)
    before = pin_dir.entries()
    other = tools(["-p", pin_dir.path], ns=veth.edge)
    assert other.start() == (
        f"error: bpf.pin_dir {pin_dir.path} is in use by another running "
        "sluiced; stop it or give this one its own bpf.pin_dir")
    assert pin_dir.entries() == before


def test_without_cap_bpf_the_start_says_why(tools, pin_dir):
    tool = tools(["-p", pin_dir.path, "-a", "alpha"],
                 prefix=["setpriv", "--inh-caps=-all", "--bounding-set",
                         "-bpf,-sys_admin,-perfmon,-net_admin", "--"])
    assert tool.start() == NEED_ROOT
    assert tool.proc.wait(timeout=10) == 1
    assert pin_dir.entries() == []
    # One sentence: libbpf's own complaints stay in the debug log.
    assert " warn " not in tool.log()


def test_an_unprivileged_user_gets_the_same_sentence(tools, pin_dir):
    tool = tools(["-p", pin_dir.path],
                 prefix=["setpriv", "--reuid=nobody", "--regid=nogroup",
                         "--clear-groups", "--"])
    assert tool.start() == NEED_ROOT
    assert tool.proc.wait(timeout=10) == 1


def proc_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f
                    if ":\t" in line)


def test_after_dropping_privileges_reload_and_stop_still_work(tools, veth,
                                                              pin_dir,
                                                              deny_file):
    nobody = pwd.getpwnam("nobody")
    tool = start(tools, veth, pin_dir, deny_file, "-u", "nobody")
    status = proc_status(tool.proc.pid)
    assert status["Uid"].split()[:3] == [str(nobody.pw_uid)] * 3
    for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[caps], 16) == 0, caps
    assert status["NoNewPrivs"] == "1"

    deny_file.write_text("198.51.100.0/24\n")
    assert tool.hup() == "updated"
    assert deny_prefixes(pin_dir.path) == {v4_key("198.51.100.0", 24)}
    bpf_status, _ = tool.status()
    assert bpf_status["loaded"] is True

    assert tool.stop() == "closed"
    assert pin_dir.entries() == []
    assert veth.xdp_prog_id() is None


def test_a_missing_user_is_one_clear_sentence(tools, pin_dir):
    tool = tools(["-p", pin_dir.path, "-u", "no-such-user-sluice"])
    assert tool.start() == ""  # exits without "ok"
    assert tool.proc.wait(timeout=10) == 1
    assert ("user no-such-user-sluice does not exist; create it (useradd "
            "--system no-such-user-sluice) or remove user: from the rules "
            "file") in tool.log()
    assert pin_dir.entries() == []


def test_bpffs_is_mounted_when_missing(tmp_path):
    """bpffs is not mounted at boot on these machines. In a private mount
    namespace with /sys/fs/bpf unmounted, the start mounts it (there, so
    nothing outside sees it) and works."""
    script = tmp_path / "run.sh"
    script.write_text(f"""
while mountpoint -q /sys/fs/bpf; do umount /sys/fs/bpf || exit 9; done
{netns.TOOL} -p /sys/fs/bpf/sluice pair-test 1000
mount | grep ' /sys/fs/bpf type bpf'
""")
    out = subprocess.run(["unshare", "--mount", "--propagation", "private",
                          "sh", str(script)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert "bpf: mounted bpffs path=/sys/fs/bpf" in out.stderr
    assert out.stdout.startswith("ok\npair ok bytes_a=1000 bytes_b=1000")
    assert "bpf on /sys/fs/bpf type bpf" in out.stdout


RULES = """
listen: ["127.0.0.1:18080"]
bpf:
  pin_dir: {pin_dir}
  deny: [{deny}]
apis:
  - {{ name: alpha, listen_path: /a/, upstream: "http://127.0.0.1:9000" }}
  - {{ name: {second}, listen_path: /b/, upstream: "http://127.0.0.1:9001" }}
"""


def api_names(pin_dir) -> list[str]:
    return [e["formatted"]["value"]["name"]
            for e in bpftool("map", "dump", "pinned",
                             f"{pin_dir.path}/sluice_apis")
            if e["formatted"]["value"]["name"]]


def test_a_rules_file_reload_updates_apis_and_deny_in_place(tools, pin_dir,
                                                            tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(pin_dir=pin_dir.path, second="beta",
                                  deny='"198.51.100.0/24", "2001:db8::/32"'))
    tool = tools(["-c", str(rules)])
    assert tool.start() == "ok", tool.log()
    splice_id = pinned_id(f"{pin_dir.path}/sluice_splice")
    assert api_names(pin_dir) == ["alpha", "beta"]

    rules.write_text(RULES.format(pin_dir=pin_dir.path, second="gamma",
                                  deny='"198.51.100.0/24", "192.0.2.0/24"'))
    assert tool.hup() == "updated"
    assert api_names(pin_dir) == ["alpha", "gamma"]
    assert deny_prefixes(pin_dir.path) == {v4_key("198.51.100.0", 24),
                                           v4_key("192.0.2.0", 24)}
    assert pinned_id(f"{pin_dir.path}/sluice_splice") == splice_id

    rules.write_text("apis: [oops")
    assert tool.hup().startswith(f"update failed: {rules}:")
    assert api_names(pin_dir) == ["alpha", "gamma"]
    assert tool.stop() == "closed"
