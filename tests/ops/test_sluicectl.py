"""sluicectl against the real sluiced: status, apis, workers, reload, top,
and the message when nothing answers."""

import fcntl
import json
import os
import pty
import re
import select
import signal
import subprocess
import termios
import time

from opsutil import BUILD, Gateway, Traffic, free_port, run

SLUICECTL = os.path.join(BUILD, "sluicectl")
CLEAR = "\x1b[H\x1b[2J"


def ctl(gw, *args, timeout=30):
    return run([SLUICECTL, "-a", gw.admin_addr, *args], timeout=timeout)


def send_requests(gw, paths):
    for path in paths:
        gw.get(path)


def table(text):
    """Rows of a whitespace-aligned table, keyed by the first column."""
    lines = [line for line in text.splitlines() if line.strip()]
    return {line.split()[0]: line.split() for line in lines[1:]}


def test_status_summarises_the_gateway(ops_gateway):
    send_requests(ops_gateway, ["/plain/a", "/hooked/b", "/plain/fail"])
    out = ctl(ops_gateway, "status")
    assert out.returncode == 0, out.stderr
    st = ops_gateway.status()
    lines = {line.split()[0]: line for line in out.stdout.splitlines()}
    assert st["version"] in lines["sluiced"]
    assert "pid %d" % st["pid"] in lines["sluiced"]
    assert lines["rules"].split()[1] == st["rules"]
    assert "2 (1 plain, 1 hooked)" in lines["apis"]
    total = sum(a["total"] for a in st["apis"])
    assert re.search(r"requests +%d " % total, lines["requests"])
    assert "workers" in lines["pool"]
    assert lines["bpf"].startswith("bpf")


def test_apis_table_matches_status(ops_gateway):
    send_requests(ops_gateway, ["/plain/a", "/plain/b", "/plain/fail",
                                "/hooked/a"])
    out = ctl(ops_gateway, "apis")
    st = ops_gateway.status()
    assert out.returncode == 0, out.stderr
    header = out.stdout.splitlines()[0].split()
    assert header[:6] == ["NAME", "KIND", "REQUESTS", "2XX", "4XX", "5XX"]
    rows = table(out.stdout)
    assert set(rows) == {"plain", "hooked"}
    for api in st["apis"]:
        row = rows[api["name"]]
        assert row[1] == api["kind"]
        assert int(row[2]) == api["total"]
        assert int(row[3]) == api["requests"]["2xx"]
        assert int(row[5]) == api["requests"]["5xx"]
        assert abs(float(row[6]) - api["latency_ms"]["p50"]) < 0.01
        assert abs(float(row[7]) - api["latency_ms"]["p99"]) < 0.01
        assert int(row[8]) == api["inflight"]
    assert int(rows["plain"][5]) >= 1  # /plain/fail answered 500


def test_workers_table_shows_the_pool(ops_gateway):
    out = ctl(ops_gateway, "workers")
    assert out.returncode == 0, out.stderr
    st = ops_gateway.status()
    pids = {str(w["pid"]) for w in st["pool"]["workers"]}
    head, _, bulkheads = out.stdout.partition("\n\n")
    rows = table(head)
    assert set(rows) == pids
    for row in rows.values():
        assert row[1] in ("starting", "idle", "busy")
    assert "hooked" in table(bulkheads)


def test_reload_reports_success(ops_gateway):
    before = ops_gateway.status()["reloads"]
    out = ctl(ops_gateway, "reload")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("reloaded %s" % ops_gateway.path)
    assert ops_gateway.status()["reloads"] == before + 1


def test_reload_failure_exits_1_with_the_error(ops_gateway):
    broken = dict(ops_gateway.rules, no_such_key=1)
    ops_gateway.write_rules(broken)
    try:
        out = ctl(ops_gateway, "reload")
    finally:
        ops_gateway.write_rules(ops_gateway.rules)
    assert out.returncode == 1
    assert re.search(r"^sluicectl: reload failed: %s:\d+:\d+: "
                     % re.escape(ops_gateway.path), out.stderr, re.M), \
        out.stderr
    # The running configuration stayed.
    assert ops_gateway.get("/plain/still")[0] == 200


def frames(text):
    return [f for f in text.split(CLEAR) if f.strip()]


def test_top_shows_rates_while_traffic_flows(ops_gateway):
    with Traffic(ops_gateway.port, limit=5000, seconds=20):
        time.sleep(0.5)
        out = ctl(ops_gateway, "top", "-n", "2")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(CLEAR) == 2
    last = frames(out.stdout)[-1]
    assert last.startswith("%s  sluiced " % ops_gateway.admin_addr)
    rows = {}
    for line in last.splitlines():
        words = line.split()
        if words and words[0] in ("plain", "hooked"):
            rows[words[0]] = words
    assert set(rows) == {"plain", "hooked"}
    assert float(rows["plain"][2]) > 0, last   # REQ/S
    assert float(rows["hooked"][2]) > 0, last
    assert re.search(r"^POOL +\d+ workers of 1\.\.2: \d+ busy", last, re.M)
    assert re.search(r"^BPF ", last, re.M)


def start_top_in_a_terminal(gw):
    """sluicectl top on a pseudo-terminal, as a person would run it."""
    master, slave = pty.openpty()
    # Its own session with the terminal as the controlling one, so that ^C
    # typed there reaches it as SIGINT.
    proc = subprocess.Popen([SLUICECTL, "-a", gw.admin_addr, "top"],
                            stdin=slave, stdout=slave, stderr=slave,
                            close_fds=True, start_new_session=True,
                            preexec_fn=lambda: fcntl.ioctl(
                                0, termios.TIOCSCTTY, 0))
    os.close(slave)
    return proc, master


def read_until(fd, text, timeout=10):
    seen = b""
    deadline = time.time() + timeout
    while text.encode() not in seen and time.time() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:
                break
    return seen.decode("utf-8", "replace")


def test_top_quits_on_q(ops_gateway):
    proc, master = start_top_in_a_terminal(ops_gateway)
    try:
        screen = read_until(master, "BPF")
        assert "plain" in screen and "hooked" in screen, screen
        started = time.time()
        os.write(master, b"q")
        assert proc.wait(timeout=5) == 0
        assert time.time() - started < 2
        # The terminal is given back as it was: echo and line editing on.
        lflag = termios.tcgetattr(master)[3]
        assert lflag & termios.ECHO and lflag & termios.ICANON
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_top_quits_on_ctrl_c(ops_gateway):
    proc, master = start_top_in_a_terminal(ops_gateway)
    try:
        read_until(master, "BPF")
        os.write(master, b"\x03")   # the terminal turns ^C into SIGINT
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        os.close(master)


def test_unreachable_endpoint_is_a_clear_error():
    addr = "127.0.0.1:%d" % free_port()
    for command in (["status"], ["apis"], ["workers"], ["reload"],
                    ["top", "-n", "1"]):
        out = run([SLUICECTL, "-a", addr, *command])
        assert out.returncode == 1, command
        assert out.stderr == (
            "sluicectl: cannot reach the admin endpoint at %s: Connection "
            "refused; is sluiced running with `admin:` set?\n" % addr)


def test_unknown_command_is_a_usage_error():
    out = run([SLUICECTL, "frobnicate"])
    assert out.returncode == 2
    assert "usage: sluicectl" in out.stderr


def test_status_json_is_what_sluicectl_reads(ops_gateway):
    """Every key sluicectl's views read is present in /status (admin.h)."""
    st = ops_gateway.status()
    assert {"version", "pid", "uptime_s", "rules", "reloads", "threads",
            "connections", "apis", "pool", "bpf"} <= set(st)
    for api in st["apis"]:
        assert {"name", "kind", "requests", "total", "inflight",
                "latency_ms", "spliced"} <= set(api)
    assert {"min", "max", "queued", "workers", "apis", "spawned", "killed",
            "recycled"} <= set(st["pool"])
    assert {"loaded", "splice", "reason", "spliced_bytes", "edge"} <= \
        set(st["bpf"])
    json.dumps(st)


def test_sluice_admin_environment_names_the_endpoint(ops_gateway):
    out = run([SLUICECTL, "status"],
              env=dict(os.environ, SLUICE_ADMIN=ops_gateway.admin_addr))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("sluiced ")


def test_views_of_a_gateway_without_pool_or_bpf(upstream, tmp_path):
    """Plain APIs only and BPF off: the views say so instead of failing."""
    gw = Gateway(os.path.join(BUILD, "sluiced"),
                 {"bpf": {"splice": "pipe"},
                  "apis": [{"name": "only", "listen_path": "/",
                            "upstream": upstream.url}]}, tmp_path)
    try:
        gw.get("/x")
        status = ctl(gw, "status")
        assert status.returncode == 0, status.stderr
        assert "pool       none (no API has middleware)" in status.stdout
        assert re.search(r"^bpf +not loaded .*splice pipe$", status.stdout,
                         re.M), status.stdout
        workers = ctl(gw, "workers")
        assert workers.returncode == 0
        assert workers.stdout == "no worker pool: no API has middleware\n"
        top = ctl(gw, "top", "-n", "1")
        assert top.returncode == 0, top.stderr
        assert "POOL  none (no API has middleware)" in top.stdout
        assert re.search(r"^only +plain ", top.stdout, re.M)
    finally:
        gw.stop()
