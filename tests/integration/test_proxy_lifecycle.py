"""Lifecycle of sluiced with plain APIs: HUP under load, a bad file on
HUP, TERM draining an in-flight request, -t and -V."""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import BUILD, SLOW, wait_until

SLUICED = os.path.join(BUILD, "sluiced")
ERROR_AT = re.compile(r"\S+\.yaml:\d+:\d+: \S")


def rules_for(up):
    return {"apis": [{"name": "a", "listen_path": "/",
                      "upstream": up.url}]}


def port_of(body):
    return json.loads(body)["port"]


class Load:
    """Requests in a loop on two clients (one keep-alive connection, one
    connection per request) until stopped; records every outcome."""

    def __init__(self, gw):
        self.gw = gw
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.results = []  # (time, port or None, error or None)
        self.threads = [threading.Thread(target=self.run, args=(ka,))
                        for ka in (True, False)]

    def record(self, port, error):
        with self.lock:
            self.results.append((time.time(), port, error))

    def run(self, keepalive):
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None or not keepalive:
                    conn = self.gw.connect(timeout=5)
                conn.request("GET", "/echo")
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    self.record(None, "status %d" % resp.status)
                else:
                    self.record(port_of(body), None)
                if not keepalive or resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                self.record(None, repr(e))
                conn = None
            time.sleep(0.01)
        if conn:
            conn.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=20)


def test_hup_under_load_no_failures_and_new_route(gateway, upstream_factory):
    a, b = upstream_factory(), upstream_factory()
    gw = gateway(rules_for(a))
    with Load(gw) as load:
        time.sleep(1.0)
        gw.write_rules(dict(gw.rules, **rules_for(b)))
        gw.send_signal(signal.SIGHUP)
        assert gw.wait_log("reloaded"), gw.log()
        switched = time.time()
        time.sleep(1.5)
    errors = [r for r in load.results if r[2]]
    assert errors == [], errors[:5]
    assert len(load.results) >= 20
    # Requests started well after the reload all land on the new upstream,
    # on the kept-alive connection too.
    late = [r for r in load.results if r[0] > switched + 0.3 * SLOW]
    assert late and all(r[1] == b.port for r in late), late[:5]
    assert any(r[1] == a.port for r in load.results)
    assert port_of(gw.get("/echo")[2]) == b.port


def test_hup_keeps_an_idle_keepalive_connection(gateway, upstream_factory):
    a, b = upstream_factory(), upstream_factory()
    gw = gateway(rules_for(a))
    conn = gw.connect()
    try:
        assert port_of(gw.get("/echo", conn=conn)[2]) == a.port
        sock = conn.sock
        gw.write_rules(dict(gw.rules, **rules_for(b)))
        gw.send_signal(signal.SIGHUP)
        assert gw.wait_log("reloaded")
        assert port_of(gw.get("/echo", conn=conn)[2]) == b.port
        assert conn.sock is sock
    finally:
        conn.close()


@pytest.mark.parametrize("bad", [
    '{"apis": [{"name": "a", "listen_path": "/", "upstream": "%s",\n'
    '  "bogus_key": 1}]}',
    '{"apis": [{"name": "a", "listen_path": "/", "upstream": "%s"}],\n'
    ' "limits": {"header_bytes": "lots"}}',
    'apis: [\n  {name: a, upstream: %s\n',  # YAML syntax
])
def test_hup_with_invalid_file_keeps_running_config(gateway, upstream_factory,
                                                    bad):
    a, b = upstream_factory(), upstream_factory()
    rules = rules_for(a)
    gw = gateway(rules)
    with open(gw.path, "w") as f:
        f.write(bad % b.url)
    gw.send_signal(signal.SIGHUP)
    assert gw.wait_log("reload failed"), gw.log()
    time.sleep(0.2)
    lines = [ln for ln in gw.log().splitlines() if ERROR_AT.search(ln)]
    assert len(lines) == 1, gw.log()
    assert gw.path + ":" in lines[0]
    assert gw.proc.poll() is None
    assert port_of(gw.get("/echo")[2]) == a.port
    # A good file on the next HUP is taken.
    gw.write_rules(dict(gw.rules, **rules_for(b)))
    gw.send_signal(signal.SIGHUP)
    assert gw.wait_log("reloaded")
    assert port_of(gw.get("/echo")[2]) == b.port


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def test_term_drains_in_flight_request(gateway, upstream):
    gw = gateway(rules_for(upstream))
    result = {}

    def slow():
        try:
            result["r"] = gw.get("/sleep/1500")
        except Exception as e:  # noqa: BLE001 - reported below
            result["e"] = e

    t = threading.Thread(target=slow)
    t.start()
    try:
        assert wait_until(lambda: any(r.path == "/sleep/1500"
                                      for r in upstream.requests))
        t0 = time.time()
        gw.send_signal(signal.SIGTERM)
        # Listeners close at once; the in-flight request goes on.
        assert wait_until(lambda: refused(gw.port), timeout=2.0), \
            "new connections still accepted while draining"
        assert gw.proc.poll() is None
    finally:
        t.join(timeout=10 * SLOW)
    assert "e" not in result, result
    status, headers, body = result["r"]
    assert status == 200 and body == b"slept"
    rc = gw.proc.wait(timeout=10 * SLOW)
    assert rc == 0, gw.log()
    assert time.time() - t0 < 6 * SLOW


def test_term_closes_idle_keepalive_connections(gateway, upstream):
    gw = gateway(rules_for(upstream))
    conn = gw.connect()
    try:
        assert gw.get("/echo", conn=conn)[0] == 200
        t0 = time.time()
        gw.send_signal(signal.SIGTERM)
        rc = gw.proc.wait(timeout=10 * SLOW)
        assert rc == 0
        # An idle client does not hold the drain up.
        assert time.time() - t0 < 3 * SLOW
        conn.sock.settimeout(2)
        assert conn.sock.recv(10) == b""
    finally:
        conn.close()


def check(path):
    return subprocess.run([SLUICED, "-t", "-c", path], capture_output=True,
                          text=True, timeout=30)


def test_check_mode_good_file_exits_0(tmp_path, upstream):
    path = tmp_path / "good.yaml"
    path.write_text(json.dumps(dict(rules_for(upstream),
                                    listen=["127.0.0.1:1"])))
    r = check(str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok" in r.stdout


@pytest.mark.parametrize("text,line", [
    ('listen: ["127.0.0.1:1"]\napis:\n  - name: a\n    listen_path: /\n'
     '    upstream: http://127.0.0.1:9\n    colour: blue\n', 6),
    ('listen: ["127.0.0.1:1"]\napis:\n  - name: a\n    listen_path: /\n'
     '    upstream: not-a-url\n', 5),
    ('listen: ["127.0.0.1:1"]\napis:\n  - name: a\n    listen_path: /\n'
     '    upstream: http://127.0.0.1:9\n  - name: a\n    listen_path: /b/\n'
     '    upstream: http://127.0.0.1:9\n', 6),
])
def test_check_mode_bad_file_exits_1_with_position(tmp_path, text, line):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    r = check(str(path))
    assert r.returncode == 1
    m = re.search(re.escape(str(path)) + r":(\d+):(\d+): \S", r.stderr)
    assert m, r.stderr
    assert int(m.group(1)) == line, r.stderr


def test_version_flag():
    r = subprocess.run([SLUICED, "-V"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 0
    assert re.match(r"sluiced \S+", r.stdout)


def test_hup_removing_an_api_gives_404_and_keeps_in_flight(gateway,
                                                           upstream_factory):
    a, b = upstream_factory(), upstream_factory()
    gw = gateway({"apis": [
        {"name": "a", "listen_path": "/a/", "strip_listen_path": True,
         "upstream": a.url},
        {"name": "b", "listen_path": "/b/", "strip_listen_path": True,
         "upstream": b.url},
    ]})
    result = {}
    t = threading.Thread(target=lambda: result.update(
        r=gw.get("/b/sleep/800")))
    t.start()
    try:
        assert wait_until(lambda: any(r.path == "/sleep/800"
                                      for r in b.requests))
        gw.write_rules(dict(gw.rules, apis=gw.rules["apis"][:1]))
        gw.send_signal(signal.SIGHUP)
        assert gw.wait_log("reloaded")
        assert gw.get("/b/echo")[0] == 404
        assert gw.get("/a/echo")[0] == 200
    finally:
        t.join(timeout=10 * SLOW)
    # The request that started under the old rules finished under them.
    assert result["r"][0] == 200 and result["r"][2] == b"slept"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT])
def test_int_and_quit_stop_now(gateway, upstream, sig):
    gw = gateway(rules_for(upstream))
    t = threading.Thread(target=lambda: _swallow(gw.get, "/sleep/3000"))
    t.start()
    try:
        assert wait_until(lambda: any(r.path == "/sleep/3000"
                                      for r in upstream.requests))
        t0 = time.time()
        gw.send_signal(sig)
        gw.proc.wait(timeout=10 * SLOW)
        # Not waiting for the in-flight request.
        assert time.time() - t0 < 2 * SLOW
    finally:
        t.join(timeout=10)


def _swallow(fn, *args):
    try:
        fn(*args)
    except (OSError, http.client.HTTPException):
        pass


def test_listen_address_in_use_fails_start(gateway, upstream):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        gw = gateway(dict(rules_for(upstream),
                          listen=["127.0.0.1:%d" % port]), wait=False)
        rc = gw.proc.wait(timeout=10 * SLOW)
        assert rc != 0
        assert "127.0.0.1:%d" % port in gw.log()
    finally:
        holder.close()


def test_missing_rules_file_fails_start(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    r = subprocess.run([SLUICED, "-c", missing], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1
    assert missing in r.stderr


def test_term_closes_idle_handed_off_connections(gateway, upstream):
    # A host-only route with `splice: true` is handed to a relay after its
    # first answer; an idle such connection must not hold the drain up.
    # A shorter drain deadline (upstream_timeout_ms + 1 s) keeps a failure
    # cheap; the bound below does not scale with SLOW, so it stays under it.
    gw = gateway({"limits": {"upstream_timeout_ms": 8000},
                  "apis": [{"name": "h", "listen_path": "/",
                            "hosts": ["api.example.com"], "splice": True,
                            "upstream": upstream.url}]})
    conn = gw.connect()
    try:
        for _ in range(2):
            assert gw.get("/echo", conn=conn,
                          headers={"Host": "api.example.com"})[0] == 200
        t0 = time.time()
        gw.send_signal(signal.SIGTERM)
        rc = gw.proc.wait(timeout=40 * SLOW)
        assert rc == 0
        assert time.time() - t0 < 4, "drain waited %.1fs" % (
            time.time() - t0)
    finally:
        conn.close()
