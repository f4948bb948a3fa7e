"""A real sluice-worker on a real socketpair, driven the way sluiced does.

`worker` (a pytest fixture) starts build/sluice-worker with its end of a
SOCK_SEQPACKET pair as fd 3, speaks the record framing and msgpack of
user/common/msg.h, and stops the process at the end of the test whatever
happened. Tests use it as:

    w = worker(apis=[api("a", pre=["mod.fn"])], modules={"mod": SOURCE})
    res = w.call("a", req(headers=[["X", "1"]]))
"""

import os
import select
import signal
import socket
import subprocess
import textwrap
import time
from pathlib import Path

import msgpack
import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / os.environ.get("SLUICE_BUILD", "build")
WORKER = BUILD / "sluice-worker"
HOOKS = ROOT / "hooks"

RECORD_MAX = 65536
FLAG_MORE = 0x01


def api(name, **kw):
    """An init "apis" entry with the defaults sluiced would send."""
    entry = {"name": name, "org_id": "org1", "pre": [], "auth_check": None,
             "post_key_auth": [], "post": [], "response": [],
             "config_data": "{}"}
    entry.update(kw)
    return entry


def req(method="GET", path="/", headers=None, body=b""):
    return {"method": method, "path": path,
            "headers": headers if headers is not None else [["Host", "x"]],
            "body": body, "scheme": "http", "remote_addr": "127.0.0.1",
            "listen_path": "/"}


class Worker:
    """One sluice-worker process and the test's end of its socket."""

    def __init__(self, sock, proc, stderr_path):
        self.sock = sock
        self.proc = proc
        self.stderr_path = stderr_path
        self.logs = []      # every {"t":"log"} received
        self.kv = {}        # what kv_set stored
        self.kv_gets = []   # kv_get requests not answered automatically
        self.auto_kv = True
        self.limit_asks = []  # "limit" messages, each answered with:
        self.limit_answer = {"v": "pass", "wait_ms": -1, "remaining": -1,
                             "renews_ms": -1}
        self.pending = []   # messages received while waiting for another
        self.next_id = 0

    # ---- framing ----------------------------------------------------------

    def send(self, obj):
        data = msgpack.packb(obj, use_bin_type=True)
        while True:
            chunk, data = data[:RECORD_MAX], data[RECORD_MAX:]
            self.sock.send(bytes([FLAG_MORE if data else 0]) + chunk)
            if not data:
                return

    def recv_raw(self, timeout=5.0):
        """Next message from the worker; None at end of file."""
        payload = b""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                raise TimeoutError(f"no message from the worker in "
                                   f"{timeout}s; stderr: {self.stderr()}")
            rec = self.sock.recv(RECORD_MAX + 1)
            if not rec:
                return None
            payload += rec[1:]
            if not rec[0] & FLAG_MORE:
                return msgpack.unpackb(payload, raw=False)

    def recv(self, timeout=5.0):
        """Next message other than log/kv/limit traffic, which is recorded
        (kv_get answered from self.kv when auto_kv, limit with
        self.limit_answer)."""
        if self.pending:
            return self.pending.pop(0)
        while True:
            msg = self.recv_raw(timeout)
            if msg is None or not self._side_message(msg):
                return msg

    def _side_message(self, msg):
        t = msg.get("t")
        if t == "log":
            self.logs.append(msg)
        elif t == "kv_set":
            self.kv[msg["key"]] = msg["value"]
        elif t == "kv_get":
            if self.auto_kv:
                self.send({"t": "kv", "id": msg["id"],
                           "value": self.kv.get(msg["key"])})
            else:
                self.kv_gets.append(msg)
        elif t == "limit":
            self.limit_asks.append(msg)
            self.send(dict(self.limit_answer, t="lim", id=msg["id"]))
        else:
            return False
        return True

    # ---- protocol ---------------------------------------------------------

    def init(self, apis, path=(), concurrency=64, log_level="debug",
             limits_in_result=False):
        self.send({"t": "init", "path": list(path),
                   "concurrency": concurrency, "log_level": log_level,
                   "limits_in_result": limits_in_result, "apis": apis})
        ready = self.recv(timeout=15)
        assert ready and ready["t"] == "ready", ready
        return ready

    def submit(self, api_name, request=None, phase="request", resp=None,
               sess=None):
        """Send a call without waiting; returns its id."""
        self.next_id += 1
        c = {"api": api_name, "phase": phase, "req": request or req()}
        if resp is not None:
            c["resp"] = resp
        if sess is not None:
            c["sess"] = sess
        self.send({"t": "call", "id": self.next_id, "c": c})
        return self.next_id

    def call(self, api_name, request=None, phase="request", resp=None,
             timeout=5.0, sess=None):
        cid = self.submit(api_name, request, phase, resp, sess)
        res = self.recv(timeout)
        assert res is not None and res["t"] == "result", res
        assert res["id"] == cid
        return res

    def drain_logs(self, wait=0.2):
        """Collect log messages that are still on their way."""
        end = time.monotonic() + wait
        while True:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                return self.logs
            msg = self.recv_raw()
            if msg is None:
                return self.logs
            if not self._side_message(msg):
                self.pending.append(msg)

    def log_text(self):
        return "\n".join(f"{m['level']} {m['api']} {m['msg']}"
                         for m in self.logs)

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def cpu_seconds(self):
        """CPU time used so far, from the scheduler's own count (exact,
        unlike the tick-sampled utime/stime of /proc/PID/stat)."""
        with open(f"/proc/{self.proc.pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9

    def stderr(self):
        try:
            return self.stderr_path.read_text()[-4000:]
        except OSError:
            return ""

    def close(self):
        """Close our end (the worker sees end of file) and reap it; kill
        it if it does not go within a few seconds."""
        try:
            self.sock.close()
        except OSError:
            pass
        try:
            return self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


def spawn_worker(stderr_path, hooks_dir=HOOKS):
    """Start sluice-worker with its socket as fd 3, as sluiced does."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    child_fd = theirs.fileno()

    def as_fd3():
        os.dup2(child_fd, 3)

    err = open(stderr_path, "wb")
    try:
        # Python's own descriptors are not inheritable, so close_fds=False
        # passes only fd 3 (and stdio) on.
        proc = subprocess.Popen([str(WORKER), str(hooks_dir)],
                                stdin=subprocess.DEVNULL,
                                stdout=err, stderr=err,
                                close_fds=False, preexec_fn=as_fd3)
    finally:
        err.close()
        theirs.close()
    return Worker(ours, proc, stderr_path)


@pytest.fixture
def worker(tmp_path):
    """worker(apis, modules={name: source}, files={relpath: text}, ...)
    -> an initialised Worker; its hooks live in tmp_path/mods."""
    if not WORKER.exists():
        pytest.fail(f"{WORKER} is missing: run make first")
    started = []
    mods = tmp_path / "mods"
    mods.mkdir()

    def start(apis, modules=None, files=None, **init_kw):
        for name, src in (modules or {}).items():
            (mods / f"{name}.py").write_text(textwrap.dedent(src))
        for rel, text in (files or {}).items():
            p = tmp_path / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(textwrap.dedent(text))
        w = spawn_worker(tmp_path / f"worker{len(started)}.stderr")
        started.append(w)
        init_kw.setdefault("path", [str(mods)])
        w.ready = w.init(apis, **init_kw)
        return w

    yield start

    for w in started:
        w.close()
        if w.proc.poll() is None:
            os.kill(w.proc.pid, signal.SIGKILL)
            w.proc.wait()
