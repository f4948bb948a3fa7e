"""Helpers for the deploy-and-operate tests: the real sluiced (built, or
installed into a temporary DESTDIR), a real upstream, bounded traffic.

    def test_x(ops_gateway):
        st = ops_gateway.status()

`ops_gateway` is one sluiced for the whole module with a plain API
(`plain`, /plain/) and a hooked API (`hooked`, /hooked/, the noop example
hook), an admin endpoint, and BPF on (splice: auto) with its own pin
directory, removed at the end. `Traffic` sends requests from a thread,
bounded in count and time, while a test looks at the admin surfaces.
"""

import http.client
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid

import pytest

from freeport import free_port  # noqa: F401 (the ops tests import it here)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BUILD = os.path.join(ROOT, os.environ.get("SLUICE_BUILD", "build"))
PIN_BASE = "/sys/fs/bpf"


class _UpstreamHandler(http.server.BaseHTTPRequestHandler):
    """GET /.../fail answers 500, /.../slow waits 20 ms, anything else 200
    with a small JSON body naming the path."""

    protocol_version = "HTTP/1.1"
    # The head and the body are two writes: without this, Nagle and delayed
    # ACKs add 40 ms to every keep-alive response.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.endswith("/slow"):
            time.sleep(0.02)
        status = 500 if self.path.endswith("/fail") else 200
        body = json.dumps({"path": self.path}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Upstream:
    """Python's http.server on a free loopback port, in a thread."""

    def __init__(self):
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                      _UpstreamHandler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def http_get(port, path, method="GET", timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class Gateway:
    """One sluiced process: BINARY -f -c RULES, RULES written as JSON (which
    is YAML). Stopped with TERM, then its whole process group is killed so
    no worker outlives the test; its BPF pin directory is removed."""

    def __init__(self, binary, rules, workdir, env=None):
        self.binary = binary
        self.workdir = str(workdir)
        self.rules = dict(rules)
        self.port = free_port()
        self.admin_port = free_port()
        self.admin_addr = "127.0.0.1:%d" % self.admin_port
        self.rules.setdefault("listen", ["127.0.0.1:%d" % self.port])
        self.rules["admin"] = self.admin_addr
        self.rules.setdefault("threads", 2)
        self.pin_dir = os.path.join(PIN_BASE, "sluice-ops-" +
                                    uuid.uuid4().hex[:12])
        self.rules.setdefault("bpf", {"splice": "auto",
                                      "pin_dir": self.pin_dir})
        self.path = os.path.join(self.workdir, "rules.yaml")
        self.write_rules(self.rules)
        self.log_path = os.path.join(self.workdir, "sluiced.log")
        self.log_file = open(self.log_path, "wb")
        full_env = dict(os.environ)
        full_env.pop("SLUICE_HOOKS_DIR", None)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [binary, "-f", "-c", self.path, "-l", "info"],
            stdout=self.log_file, stderr=subprocess.STDOUT, env=full_env,
            start_new_session=True)
        if not self._wait_ready(15.0):
            log = self.log()
            self.stop()
            pytest.fail("sluiced did not start:\n" + log)

    def _wait_ready(self, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if http_get(self.admin_port, "/status", timeout=1)[0] == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def write_rules(self, rules):
        with open(self.path, "w") as f:
            json.dump(rules, f, indent=1)

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def get(self, path):
        return http_get(self.port, path)

    def admin(self, path, method="GET"):
        return http_get(self.admin_port, path, method=method)

    def status(self):
        status, body = self.admin("/status")
        assert status == 200, body
        return json.loads(body)

    def wait_workers(self, count=1, timeout=15.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            pool = self.status().get("pool") or {}
            idle = [w for w in pool.get("workers", [])
                    if w.get("state") in ("idle", "busy")]
            if len(idle) >= count:
                return idle
            time.sleep(0.1)
        pytest.fail("no worker became ready:\n" + self.log())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.log_file.close()
        shutil.rmtree(self.pin_dir, ignore_errors=True)


def ops_rules(upstream, hooks_examples):
    """A plain API and a hooked API in front of one upstream."""
    return {
        "python": {"path": [hooks_examples],
                   "workers": {"min": 1, "max": 2, "idle_s": 30}},
        "apis": [
            {"name": "plain", "listen_path": "/plain/",
             "upstream": upstream.url},
            {"name": "hooked", "listen_path": "/hooked/",
             "upstream": upstream.url,
             "middleware": {"pre": ["noop.pre"]}},
        ],
    }


class Traffic:
    """Requests to the gateway from one thread, on keep-alive connections,
    until stop() or LIMIT requests or SECONDS, whichever comes first. Mostly
    200s on both APIs, some 500s from the upstream, some 404s."""

    PATHS = ["/plain/a", "/plain/slow", "/hooked/b", "/plain/c",
             "/hooked/slow", "/plain/fail", "/plain/d", "/hooked/e"]

    def __init__(self, port, limit=20000, seconds=60.0, pause=0.002):
        self.port = port
        self.limit = limit
        self.seconds = seconds
        self.pause = pause
        self.sent = 0
        self.errors = 0
        self.statuses = {}
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self._stop.set()
        self.thread.join(timeout=15)

    def run_to_end(self):
        """Send all LIMIT requests (or until SECONDS) and return."""
        self.thread.start()
        self.thread.join()
        return self

    def _run(self):
        deadline = time.time() + self.seconds
        conn = None
        while (not self._stop.is_set() and self.sent < self.limit
               and time.time() < deadline):
            path = self.PATHS[self.sent % len(self.PATHS)]
            try:
                conn = conn or http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=5)
                conn.request("GET", path)
                resp = conn.getresponse()
                resp.read()
                self.statuses[resp.status] = \
                    self.statuses.get(resp.status, 0) + 1
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                self.errors += 1
                if conn:
                    conn.close()
                conn = None
            self.sent += 1
            time.sleep(self.pause)
        if conn:
            conn.close()


def run(cmd, timeout=60, **kw):
    """Run a command to completion, text output captured."""
    return subprocess.run(cmd, capture_output=True, text=True,
                          timeout=timeout, **kw)
