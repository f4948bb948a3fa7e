"""Fixtures for the relay tests: relay_probe, small upstream servers, and
what the kernel says about the probe's sockets.

Everything a test starts is stopped by a finalizer, even when it fails:
probe processes (SIGTERM, then SIGKILL), their pin directories, server
threads and sockets.
"""
from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("SLUICE_BUILD", ROOT / "build"))
if not BUILD.is_absolute():
    BUILD = ROOT / BUILD
PROBE = BUILD / "tests" / "relay_probe"
MODES = ["copy", "pipe", "sockmap"]
BPFFS = Path("/sys/fs/bpf")


def need_mode(mode: str) -> None:
    """Skip sockmap where BPF cannot load (not root)."""
    if mode == "sockmap" and os.geteuid() != 0:
        pytest.skip("sockmap mode needs root (CAP_BPF, CAP_NET_ADMIN)")


class Probe:
    """One relay_probe process between a client and UPSTREAM_PORT."""

    def __init__(self, mode: str, upstream_port: int, *opts: str):
        if not PROBE.exists():
            pytest.skip(f"{PROBE} is not built (make {PROBE})")
        self.mode = mode
        self.log_file = tempfile.NamedTemporaryFile(
            prefix="relay_probe_", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [str(PROBE), "-v", *opts, mode, "0", str(upstream_port)],
            stdout=subprocess.PIPE, stderr=self.log_file, text=True)
        self.pid = self.proc.pid
        line = self._readline(15)
        if not line.startswith("listening "):
            self.stop()
            raise RuntimeError(f"relay_probe did not start: {line!r}\n"
                               + self.log())
        self.port = int(line.split()[1])

    def _readline(self, timeout: float) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline() if ready else ""

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return sock

    def fd_count(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def counts(self) -> str:
        """relay_probe's own tally (SIGUSR1)."""
        self.proc.send_signal(signal.SIGUSR1)
        return self._readline(5).strip()

    def log(self) -> str:
        return Path(self.log_file.name).read_text(errors="replace")

    def wait_fds(self, baseline: int, timeout: float = 5) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.fd_count() <= baseline:
                break
            time.sleep(0.05)
        return self.fd_count()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc.stdout.close()
        self.log_file.close()
        os.unlink(self.log_file.name)
        pins = BPFFS / f"sluice_probe_{self.pid}"
        if pins.is_dir():
            shutil.rmtree(pins, ignore_errors=True)


Handler = Callable[[socket.socket], None]


class Upstream:
    """A threaded TCP server on 127.0.0.1; HANDLER runs once a connection,
    in its own thread, with a 20 s socket timeout."""

    def __init__(self, handler: Handler):
        self.handler = handler
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1024)
        self.port = self.listener.getsockname()[1]
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()
        self.errors: list[BaseException] = []
        self.socks: list[socket.socket] = []
        self.stopping = False
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self) -> None:
        while not self.stopping:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            sock.settimeout(20)
            self.socks.append(sock)
            thread = threading.Thread(target=self._run, args=(sock,),
                                      daemon=True)
            with self.lock:  # join() sees only started threads
                self.threads.append(thread)
                thread.start()

    def _run(self, sock: socket.socket) -> None:
        try:
            self.handler(sock)
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)
        finally:
            sock.close()

    def join(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        with self.lock:
            threads = list(self.threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def stop(self) -> None:
        self.stopping = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        for sock in self.socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.join(5)
        self.acceptor.join(5)


@pytest.fixture
def start_upstream():
    servers: list[Upstream] = []

    def start(handler: Handler) -> Upstream:
        server = Upstream(handler)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def start_probe():
    probes: list[Probe] = []

    def start(mode: str, upstream_port: int, *opts: str) -> Probe:
        need_mode(mode)
        probe = Probe(mode, upstream_port, *opts)
        probes.append(probe)
        return probe

    yield start
    for probe in probes:
        probe.stop()


def recv_all(sock: socket.socket, hasher=None, limit: int | None = None) -> int:
    """Read until EOF (or LIMIT bytes); feed HASHER; return the count."""
    total = 0
    while limit is None or total < limit:
        want = 1 << 20 if limit is None else min(1 << 20, limit - total)
        data = sock.recv(want)
        if not data:
            break
        if hasher is not None:
            hasher.update(data)
        total += len(data)
    return total


def tcp_states(*ports: int) -> list[tuple[str, str, str]]:
    """(state, local, peer) of every TCP socket on PORTS, from ss."""
    filt = " or ".join(f"sport = :{p} or dport = :{p}" for p in ports)
    out = subprocess.run(["ss", "-tanH", f"( {filt} )"], check=True,
                         capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        cols = line.split()
        if len(cols) >= 5:
            rows.append((cols[0], cols[3], cols[4]))
    return rows


def wait_no_sockets(ports: tuple[int, ...], states: set[str],
                    timeout: float = 5) -> list[tuple[str, str, str]]:
    """Wait until no socket on PORTS is in one of STATES; return the rest."""
    deadline = time.monotonic() + timeout
    while True:
        left = [row for row in tcp_states(*ports) if row[0] in states]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def queued_bytes(port: int) -> int:
    """Recv-Q + Send-Q of every socket on PORT (not listeners)."""
    total = 0
    for line in subprocess.run(
            ["ss", "-tanH", f"( sport = :{port} or dport = :{port} )"],
            check=True, capture_output=True, text=True).stdout.splitlines():
        cols = line.split()
        if len(cols) >= 3 and cols[0] != "LISTEN":
            total += int(cols[1]) + int(cols[2])
    return total
