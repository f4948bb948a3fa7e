"""sluiced itself with BPF: it loads and pins as root, drops to `user:`
with no capabilities, and still removes every pin, link and XDP attachment
when it stops; a reload after the drop still rewrites the deny list."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from netns import BUILD, deny_prefixes, ping, pinned_id


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def sluiced_in_edge(veth, pin_dir):
    procs = []
    # Outside pytest's tmp_path (mode 0700): after the drop, sluiced reads
    # the rules again as nobody.
    home = Path(tempfile.mkdtemp(prefix="sluice_bpf_", dir="/tmp"))
    home.chmod(0o755)
    rules = home / "rules.yaml"
    log = home / "sluiced.log"

    def start(deny):
        rules.write_text(json.dumps({
            "listen": ["127.0.0.1:18080"],
            "user": "nobody",
            "threads": 1,
            "bpf": {"pin_dir": pin_dir.path, "splice": "auto",
                    "required": True,
                    "xdp": {"interfaces": [veth.edge_if], "mode": "native"},
                    "deny": deny},
            "apis": [{"name": "hello", "listen_path": "/",
                      "upstream": "http://127.0.0.1:9000"}],
        }))
        rules.chmod(0o644)
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                veth.edge.argv(str(BUILD / "sluiced"), "-c", str(rules),
                               "-l", "info"), stdout=out, stderr=out)
        procs.append(proc)
        assert wait_for(lambda: "started version" in log.read_text()), \
            log.read_text()
        return proc

    start.rules, start.log = rules, log
    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    shutil.rmtree(home, ignore_errors=True)


def test_after_the_drop_sluiced_still_reloads_and_cleans_up(
        sluiced_in_edge, veth, pin_dir):
    proc = sluiced_in_edge([f"{veth.peer_v4}/32"])
    status = open(f"/proc/{proc.pid}/status").read()
    assert "CapEff:\t0000000000000000" in status
    assert "NoNewPrivs:\t1" in status
    edge_id = veth.xdp_prog_id()
    assert edge_id == pinned_id(f"{pin_dir.path}/sluice_edge")
    assert ping(veth.peer, veth.peer_v4, veth.edge_v4, 2) == 0

    rules = json.loads(sluiced_in_edge.rules.read_text())
    rules["bpf"]["deny"] = ["198.51.100.0/24"]
    sluiced_in_edge.rules.write_text(json.dumps(rules))
    proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "removed=1" in sluiced_in_edge.log.read_text()), \
        sluiced_in_edge.log.read_text()
    assert len(deny_prefixes(pin_dir.path)) == 1
    assert ping(veth.peer, veth.peer_v4, veth.edge_v4, 2) == 2
    assert veth.xdp_prog_id() == edge_id

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=40) == 0
    assert pin_dir.entries() == []
    assert veth.xdp_prog_id() is None
    assert "bpf: unloaded, pins removed" in sluiced_in_edge.log.read_text()
