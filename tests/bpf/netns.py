"""Namespaces, veth pairs, traffic and the sbpf_tool driver for tests/bpf.

Everything here creates real kernel objects; each creator returns an object
whose close() removes them, and the fixtures in conftest.py call close() in
finalizers, so a failing test leaves no namespace, pin or attachment behind.

Namespaces are entered with `nsenter --net=/run/netns/NAME`, not
`ip netns exec`: the latter remounts /sys, which would hide the host's bpffs
and put pins in a separate, invisible instance.
"""

from __future__ import annotations

import itertools
import json
import os
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / os.environ.get("SLUICE_BUILD", "build")
TOOL = BUILD / "tests" / "sbpf_tool"
BPFFS = Path("/sys/fs/bpf")

_serial = itertools.count()


def unique_tag() -> str:
    """Short and unique across concurrent test runs (interface names are
    limited to 15 characters)."""
    return f"{os.getpid() % 10000}{next(_serial)}"


def sh(*cmd: str, check: bool = True, timeout: float = 15,
       **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), check=check, timeout=timeout,
                          capture_output=True, text=True, **kw)


class Netns:
    """One network namespace; argv() runs a command inside it."""

    def __init__(self, name: str):
        self.name = name
        self.path = f"/run/netns/{name}"
        sh("ip", "netns", "add", name)
        self.run("ip", "link", "set", "lo", "up")

    def argv(self, *cmd: str) -> list[str]:
        return ["nsenter", f"--net={self.path}", *cmd]

    def run(self, *cmd: str, check: bool = True,
            timeout: float = 15) -> subprocess.CompletedProcess:
        return sh(*self.argv(*cmd), check=check, timeout=timeout)

    def python(self, code: str, timeout: float = 20) -> str:
        """Run a Python snippet in the namespace; its stdout."""
        return self.run("/usr/bin/python3", "-c", code,
                        timeout=timeout).stdout

    def close(self) -> None:
        sh("ip", "netns", "delete", self.name, check=False)


class VethPair:
    """Two namespaces joined by a veth: `edge` (where sluice_edge runs, on
    `edge_if`) and `peer` (the clients). The peer has two source addresses
    per family: the first is denied by the tests, the second is not."""

    def __init__(self):
        tag = unique_tag()
        n = 1 + int(tag) % 250
        self.edge = self.peer = None
        self.edge_if, self.peer_if = f"sbe{tag}", f"sbp{tag}"
        self.edge_v4, self.peer_v4 = f"10.199.{n}.1", f"10.199.{n}.2"
        self.other_v4 = f"10.199.{n}.3"
        self.edge_v6, self.peer_v6 = f"fd00:199:{n}::1", f"fd00:199:{n}::2"
        self.other_v6 = f"fd00:199:{n}::3"
        try:
            self.edge = Netns(f"sbpf_edge_{tag}")
            self.peer = Netns(f"sbpf_peer_{tag}")
            sh("ip", "link", "add", self.edge_if, "netns", self.edge.name,
               "type", "veth", "peer", "name", self.peer_if, "netns",
               self.peer.name)
            self._address(self.edge, self.edge_if,
                          [self.edge_v4 + "/24"], [self.edge_v6 + "/64"])
            self._address(self.peer, self.peer_if,
                          [self.peer_v4 + "/24", self.other_v4 + "/24"],
                          [self.peer_v6 + "/64", self.other_v6 + "/64"])
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _address(ns: Netns, ifname: str, v4: list[str],
                 v6: list[str]) -> None:
        for addr in v4:
            ns.run("ip", "addr", "add", addr, "dev", ifname)
        for addr in v6:
            ns.run("ip", "addr", "add", addr, "dev", ifname, "nodad")
        ns.run("ip", "link", "set", ifname, "up")

    def xdp_prog_id(self) -> int | None:
        """The id of the XDP program on edge_if, None when there is none."""
        out = self.edge.run("ip", "-j", "-d", "link", "show",
                            self.edge_if).stdout
        xdp = json.loads(out)[0].get("xdp")
        return xdp["prog"]["id"] if xdp and "prog" in xdp else None

    def close(self) -> None:
        # Deleting a namespace deletes its end of the veth, the other end
        # with it, and any XDP program attached to either.
        for ns in (self.peer, self.edge):
            if ns:
                ns.close()


# ---- traffic, sent from the peer namespace ---------------------------------

def udp_send(ns: Netns, src: str, dst: str, port: int, count: int) -> None:
    """COUNT datagrams from SRC to DST:PORT (nothing is expected back)."""
    family = "AF_INET6" if ":" in dst else "AF_INET"
    ns.python(f"""
import socket, time
s = socket.socket(socket.{family}, socket.SOCK_DGRAM)
s.bind(({src!r}, 0))
for _ in range({count}):
    s.sendto(b"sluice", ({dst!r}, {port}))
    time.sleep(0.002)
""")


def ping(ns: Netns, src: str, dst: str, count: int,
         wait: float = 0.5) -> int:
    """ICMP echo requests from SRC (IPv4); the number of replies."""
    out = ns.python(f"""
import os, select, socket, struct, time

def checksum(data):
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xffff)
    return ~(total + (total >> 16)) & 0xffff

s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.bind(({src!r}, 0))
ident, replies = os.getpid() & 0xffff, set()
for seq in range({count}):
    head = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    body = b"sluice-edge-test"
    s.sendto(struct.pack("!BBHHH", 8, 0, checksum(head + body), ident, seq)
             + body, ({dst!r}, 0))
    deadline = time.time() + {wait}
    while time.time() < deadline:
        if not select.select([s], [], [], deadline - time.time())[0]:
            break
        packet = s.recv(2048)
        icmp = packet[(packet[0] & 0x0f) * 4:]
        kind, _, _, rid, rseq = struct.unpack("!BBHHH", icmp[:8])
        if kind == 0 and rid == ident:
            replies.add(rseq)
            if rseq == seq:
                break
print(len(replies))
""", timeout=20 + count * wait)
    return int(out.strip())


def tcp_connects(ns: Netns, src: str, dst: str, port: int,
                 timeout: float = 1.0) -> bool:
    """Whether a TCP connection from SRC to DST:PORT is established."""
    family = "AF_INET6" if ":" in dst else "AF_INET"
    out = ns.python(f"""
import socket
s = socket.socket(socket.{family}, socket.SOCK_STREAM)
s.bind(({src!r}, 0))
s.settimeout({timeout})
try:
    s.connect(({dst!r}, {port}))
    print("connected")
except OSError as e:
    print("failed", e)
""")
    return out.startswith("connected")


class Listener:
    """A TCP listener in a namespace that accepts and closes."""

    def __init__(self, ns: Netns, port: int):
        self.proc = subprocess.Popen(ns.argv("/usr/bin/python3", "-c", f"""
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", {port}))
s.listen(64)
print("listening", flush=True)
while True:
    s.accept()[0].close()
"""), stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "listening":
            self.close()
            raise RuntimeError("listener did not start")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=5)


# ---- bpftool ----------------------------------------------------------------

def bpftool(*args: str, check: bool = True):
    out = sh("bpftool", "-j", *args, check=check)
    return json.loads(out.stdout) if out.returncode == 0 else None


def edge_counts(pin_dir: str) -> dict[int, tuple[int, int]]:
    """sluice_edge_stats summed over CPUs: {port: (passed, dropped)}."""
    counts = {}
    for entry in bpftool("map", "dump", "pinned",
                         f"{pin_dir}/sluice_edge_stats"):
        values = entry["formatted"]["values"]
        counts[entry["formatted"]["key"]] = (
            sum(v["value"]["passed"] for v in values),
            sum(v["value"]["dropped"] for v in values))
    return counts


def deny_prefixes(pin_dir: str) -> set[tuple[int, tuple[int, ...]]]:
    """sluice_deny's keys as (prefixlen, address bytes)."""
    return {(e["formatted"]["key"]["prefixlen"],
             tuple(e["formatted"]["key"]["addr"]))
            for e in bpftool("map", "dump", "pinned",
                             f"{pin_dir}/sluice_deny")}


def pinned_id(path: str, kind: str = "prog") -> int | None:
    info = bpftool(kind, "show", "pinned", path, check=False)
    return info["id"] if info else None


def live_link_ids() -> set[int]:
    return {link["id"] for link in bpftool("link", "show")}


# ---- the pin directory and sbpf_tool ----------------------------------------

class PinDir:
    """A pin directory of the test's own under /sys/fs/bpf."""

    def __init__(self):
        self.path = str(BPFFS / f"sluice_test_{unique_tag()}")

    def entries(self) -> list[str]:
        try:
            return sorted(os.listdir(self.path))
        except FileNotFoundError:
            return []

    def close(self) -> None:
        for name in self.entries():
            os.unlink(os.path.join(self.path, name))
        if os.path.isdir(self.path):
            os.rmdir(self.path)


class Tool:
    """build/tests/sbpf_tool, possibly inside a namespace.

    start() returns its first line: "ok" or "error: SENTENCE". The log
    (stderr) goes to a file, readable with log()."""

    def __init__(self, args: list[str], ns: Netns | None = None,
                 prefix: list[str] | None = None, log_dir: Path = Path("/tmp")):
        self.argv = [*(prefix or []), str(TOOL), *args]
        if ns:
            self.argv = ns.argv(*self.argv)
        self.log_path = log_dir / f"sbpf_tool_{unique_tag()}.log"
        self.proc = None
        self._buf = b""

    def start(self, timeout: float = 20) -> str:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE,
                                         stderr=log)
        return self.readline(timeout)

    def readline(self, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"sbpf_tool said nothing; log:\n{self.log()}")
            chunk = os.read(fd, 4096)
            if not chunk:
                return self._buf.decode() if self._buf else ""
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def status(self) -> tuple[dict, str]:
        """The /status "bpf" object and the metrics text."""
        self.proc.send_signal(signal.SIGUSR1)
        status = json.loads(self.readline())
        lines = []
        while (line := self.readline()) != "end":
            lines.append(line)
        return status, "\n".join(lines)

    def hup(self) -> str:
        self.proc.send_signal(signal.SIGHUP)
        return self.readline()

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        line = self.readline()
        self.proc.wait(timeout=10)
        return line

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)

    def log(self) -> str:
        try:
            return self.log_path.read_text()
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.kill()
        if self.proc:
            self.proc.stdout.close()
        self.log_path.unlink(missing_ok=True)


def compile_xdp_pass(out_dir: Path) -> Path:
    """A trivial XDP_PASS program, for sharing an interface with."""
    src = out_dir / "xdp_pass.c"
    obj = out_dir / "xdp_pass.o"
    src.write_text("""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("xdp") int xdp_pass_test(struct xdp_md *ctx) { return XDP_PASS; }
char _license[] SEC("license") = "GPL";
""")
    multiarch = sh("gcc", "-print-multiarch").stdout.strip()
    sh("clang", "-target", "bpf", "-O2", "-g", f"-I/usr/include/{multiarch}",
       "-c", str(src), "-o", str(obj))
    return obj


def have_tools() -> str | None:
    """Why these tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "tests/bpf need root (they load BPF and create namespaces)"
    for tool in ("bpftool", "nsenter", "ip", "xdp-loader"):
        if not shutil.which(tool):
            return f"{tool} is not installed"
    if not TOOL.exists():
        return f"{TOOL} is not built (make {TOOL.relative_to(REPO)})"
    return None
