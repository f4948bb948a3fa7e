"""Without BPF, sluiced says why in one warning and serves in pipe mode;
with bpf.required it refuses to start with the same sentence. The missing
privilege is real: sluiced runs under setpriv with CAP_BPF, CAP_SYS_ADMIN,
CAP_PERFMON and CAP_NET_ADMIN taken out of its bounding set."""

from __future__ import annotations

import http.client
import http.server
import json
import socket
import subprocess
import threading
import time

import pytest

from freeport import free_port
from netns import BUILD, PinDir

SENTENCE = ("loading BPF needs root (CAP_BPF, CAP_NET_ADMIN); run sluiced as "
            "root or set bpf.splice: pipe")
NO_BPF_CAPS = ["setpriv", "--inh-caps=-all", "--bounding-set",
               "-bpf,-sys_admin,-perfmon,-net_admin", "--"]




class Hello(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b"hello through pipe mode\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def upstream():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def sluiced(tmp_path, upstream):
    """start(required) -> (process, listen port, admin port, log path)."""
    procs, pins = [], PinDir()

    def start(required: bool):
        port, admin = free_port(), free_port()
        rules = tmp_path / "rules.yaml"
        rules.write_text(json.dumps({
            "listen": [f"127.0.0.1:{port}"],
            "admin": f"127.0.0.1:{admin}",
            "threads": 1,
            "bpf": {"pin_dir": pins.path, "splice": "auto",
                    "required": required},
            "apis": [{"name": "hello", "listen_path": "/",
                      "upstream": f"http://127.0.0.1:{upstream}"}],
        }))
        log = tmp_path / "sluiced.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                NO_BPF_CAPS + [str(BUILD / "sluiced"), "-c", str(rules),
                               "-l", "info"], stdout=out, stderr=out)
        procs.append(proc)
        return proc, port, admin, log

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    pins.close()


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_for_port(port: int, proc, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "sluiced exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def test_without_bpf_privileges_sluiced_warns_once_and_uses_pipes(sluiced):
    proc, port, admin, log = sluiced(required=False)
    wait_for_port(admin, proc)

    assert get(port, "/x") == (200, b"hello through pipe mode\n")
    text = log.read_text()
    warnings = [line for line in text.splitlines() if " warn " in line]
    assert [line for line in warnings if "BPF" in line] == [
        next(line for line in warnings if SENTENCE in line)]
    assert "libbpf" not in "\n".join(warnings)

    status = json.loads(get(admin, "/status")[1])["bpf"]
    assert status["loaded"] is False
    assert status["splice"] == "pipe"
    assert status["reason"] == SENTENCE


def test_with_bpf_required_sluiced_refuses_to_start(sluiced):
    proc, port, _, log = sluiced(required=True)
    assert proc.wait(timeout=15) == 1
    assert SENTENCE in log.read_text()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
