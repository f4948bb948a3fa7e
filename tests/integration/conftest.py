"""Fixtures for the integration tests: real upstreams, the real sluiced.

    def test_x(gateway, upstream):
        gw = gateway({"apis": [{"name": "a", "listen_path": "/",
                                "upstream": upstream.url}]})
        status, headers, body = gw.get("/echo")

`gateway(rules)` fills in a free listen port, an admin port, threads: 2 and
`bpf: {splice: pipe}` (no BPF: integration tests run beside the BPF suite
and other gateways), writes the rules as JSON (valid YAML), starts
build/sluiced (or $SLUICE_BUILD/sluiced), waits until it accepts, and at the
end stops it and fails the test if a sanitizer reported anything.
"""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))  # tests/, for freeport

from freeport import free_port  # noqa: E402,F401 (tests import it here)
from upstream import Upstream  # noqa: E402

BUILD = os.path.join(ROOT, os.environ.get("SLUICE_BUILD", "build"))
SANITIZE = os.environ.get("SLUICE_SANITIZE") == "1"
# Timing margins grow under the sanitizers, which slow sluiced down.
SLOW = 3.0 if SANITIZE else 1.0


def wait_port(port, proc, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


class Gateway:
    def __init__(self, tmp_path, rules, name="rules", wait=True, args=()):
        self.rules = dict(rules)
        self.rules.setdefault("listen", ["127.0.0.1:%d" % free_port()])
        self.rules.setdefault("admin", "127.0.0.1:%d" % free_port())
        self.rules.setdefault("threads", 2)
        self.rules.setdefault("bpf", {"splice": "pipe"})
        self.port = int(self.rules["listen"][0].rsplit(":", 1)[1]) \
            if self.rules["listen"] else None
        self.admin_port = int(self.rules["admin"].rsplit(":", 1)[1])
        self.path = str(tmp_path / ("%s.yaml" % name))
        self.write_rules(self.rules)
        self.log_path = str(tmp_path / ("%s.log" % name))
        self.log_file = open(self.log_path, "wb")
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        self.proc = subprocess.Popen(
            [os.path.join(BUILD, "sluiced"), "-c", self.path, "-l", "info",
             *args],
            stdout=self.log_file, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
        self.pid = self.proc.pid
        if wait and self.port and not wait_port(self.port, self.proc):
            self.stop(check=False)
            pytest.fail("sluiced did not start:\n" + self.log())
        # Signal handlers are installed after the listeners accept: wait
        # for the start-up line, so a test's HUP or TERM is not fatal.
        if wait and self.port and not self.wait_log("started version="):
            self.stop(check=False)
            pytest.fail("sluiced did not finish starting:\n" + self.log())

    def write_rules(self, rules):
        with open(self.path, "w") as f:
            json.dump(rules, f, indent=1)

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_log(self, text, timeout=10.0):
        deadline = time.time() + timeout * SLOW
        while time.time() < deadline:
            if text in self.log():
                return True
            time.sleep(0.05)
        return False

    def fd_count(self):
        return len(os.listdir("/proc/%d/fd" % self.pid))

    def children(self):
        out = subprocess.run(["ps", "-o", "pid=,stat=", "--ppid",
                              str(self.pid)], capture_output=True, text=True)
        return [line.split() for line in out.stdout.splitlines()]

    def send_signal(self, sig):
        os.kill(self.pid, sig)

    def connect(self, timeout=10.0):
        return http.client.HTTPConnection("127.0.0.1", self.port,
                                          timeout=timeout * SLOW)

    def request(self, method, path, body=None, headers=None, conn=None):
        own = conn is None
        conn = conn or self.connect()
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        if own:
            conn.close()
        return resp.status, dict(resp.getheaders()), data

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def admin(self, path, method="GET"):
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port,
                                          timeout=10)
        conn.request(method, path)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, data

    def status(self):
        return json.loads(self.admin("/status")[1])

    def stop(self, check=True, sig=signal.SIGTERM, timeout=20.0):
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, sig)
                self.proc.wait(timeout=timeout * SLOW)
            except subprocess.TimeoutExpired:
                pass
        # Whatever sluiced left behind (workers) goes with its group.
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log_file.close()
        if check:
            log = self.log()
            for marker in ("AddressSanitizer", "LeakSanitizer",
                           "ThreadSanitizer", "runtime error:"):
                assert marker not in log, "sanitizer report:\n" + log[-6000:]
        return self.proc.returncode


@pytest.fixture
def upstream():
    up = Upstream()
    yield up
    up.close()


@pytest.fixture
def upstream_factory():
    made = []

    def make():
        up = Upstream()
        made.append(up)
        return up
    yield make
    for up in made:
        up.close()


@pytest.fixture
def gateway(tmp_path):
    made = []

    def start(rules, **kw):
        kw.setdefault("name", "rules%d" % len(made))
        gw = Gateway(tmp_path, rules, **kw)
        made.append(gw)
        return gw
    yield start
    for gw in made:
        gw.stop()


def raw_exchange(port, data, timeout=5.0, shut=False):
    """Send DATA on a fresh connection and read until the gateway closes
    or TIMEOUT passes; returns the bytes received."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    if shut:
        s.shutdown(socket.SHUT_WR)
    out = b""
    deadline = time.time() + timeout * SLOW
    s.settimeout(0.2)
    while time.time() < deadline:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        out += chunk
    s.close()
    return out


def statuses(raw):
    """Status codes of every response in RAW, in order. Responses are
    split by their framing: a body need not end with a line break."""
    codes = []
    rest = raw
    while rest.startswith(b"HTTP/1."):
        try:
            resp, rest = read_response(_Drained(), rest)
        except (EOFError, ValueError, IndexError):
            break
        codes.append(resp.status)
        if not resp.complete:
            break
    return codes


class _Drained:
    """A socket whose peer has closed: for parsing bytes already read."""

    def settimeout(self, t):
        pass

    def recv(self, n):
        return b""


def wait_until(predicate, timeout=5.0, step=0.05):
    """Poll PREDICATE until it is true or TIMEOUT (times SLOW) passes;
    returns its last value."""
    deadline = time.time() + timeout * SLOW
    while True:
        value = predicate()
        if value or time.time() >= deadline:
            return value
        time.sleep(step)


class RawResponse:
    def __init__(self, status, headers, body, complete):
        self.status = status
        self.headers = headers  # [(name, value)], as sent
        self.body = body
        self.complete = complete  # False: the connection ended early

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


def read_response(sock, buf=b"", head_only=False, timeout=10.0):
    """Read one response from SOCK (after BUF, bytes already received),
    framed by Content-Length, chunked or the close. Returns
    (RawResponse, leftover bytes)."""
    sock.settimeout(timeout * SLOW)
    buf = bytearray(buf)  # appends stay linear for large bodies

    def more():
        try:
            return sock.recv(65536)
        except ConnectionResetError:
            return b""

    while b"\r\n\r\n" not in buf:
        data = more()
        if not data:
            raise EOFError("connection closed before a response head: %r"
                           % buf[:200])
        buf += data
    head, buf = buf.split(b"\r\n\r\n", 1)
    lines = bytes(head).decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = [tuple(x.strip() for x in line.split(":", 1))
               for line in lines[1:] if line]
    resp = RawResponse(status, headers, b"", True)
    te = (resp.header("transfer-encoding") or "").lower()
    if head_only or status < 200 or status in (204, 304):
        return resp, bytes(buf)
    if "chunked" in te:
        body = bytearray()
        while True:
            while b"\r\n" not in buf:
                data = more()
                if not data:
                    resp.body, resp.complete = bytes(body), False
                    return resp, b""
                buf += data
            line, buf = buf.split(b"\r\n", 1)
            size = int(line.split(b";")[0], 16)
            while len(buf) < size + 2:
                data = more()
                if not data:
                    body += buf[:size]
                    resp.body, resp.complete = bytes(body), False
                    return resp, b""
                buf += data
            if size == 0:
                # No trailers from our upstreams: the CRLF ends it.
                resp.body = bytes(body)
                return resp, bytes(buf[2:])
            body += buf[:size]
            buf = buf[size + 2:]
    if resp.header("content-length") is not None:
        n = int(resp.header("content-length"))
        while len(buf) < n:
            data = more()
            if not data:
                resp.body, resp.complete = bytes(buf), False
                return resp, b""
            buf += data
        resp.body = bytes(buf[:n])
        return resp, bytes(buf[n:])
    while True:
        data = more()
        if not data:
            break
        buf += data
    resp.body = bytes(buf)
    return resp, b""
