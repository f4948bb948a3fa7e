"""The worker pool without the front: build/tests/pool_driver runs the pool
on an event base and submits calls from a second thread, as front threads
do. The worker is tests/pool/fake_worker.py, which answers by API name, so
the dispatch rule, deadlines and framing are met exactly.
"""

import json
import os
import re
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BUILD = os.path.join(ROOT, os.environ.get("SLUICE_BUILD", "build"))
DRIVER = os.path.join(BUILD, "tests", "pool_driver")
FAKE = os.path.join(ROOT, "tests", "pool", "fake_worker.py")
HOOKS = os.path.join(ROOT, "hooks")


def rules(tmp_path, apis, workers=(2, 2), concurrency=50, idle_s=30):
    doc = {"listen": ["127.0.0.1:9"],
           "python": {"workers": {"min": workers[0], "max": workers[1],
                                  "idle_s": idle_s},
                      "concurrency": concurrency, "timeout_ms": 2000},
           "apis": []}
    for i, (name, mw) in enumerate(apis.items()):
        mw = dict({"pre": ["x.y"]}, **mw)
        doc["apis"].append({"name": name, "listen_path": "/%d/" % i,
                            "upstream": "http://127.0.0.1:9",
                            "middleware": mw})
    path = tmp_path / "rules.yaml"
    path.write_text(json.dumps(doc))
    return str(path)


def drive(rules_path, *cmds, worker=FAKE, timeout=60):
    """Run the driver; returns ({api: {result: n, "ms": ms}}, stdout,
    stderr). Each call command prints one line."""
    out = subprocess.run([DRIVER, rules_path, worker, HOOKS, *cmds],
                         capture_output=True, text=True, timeout=timeout)
    calls = []
    for line in out.stdout.splitlines():
        if line.startswith("call "):
            fields = dict(re.findall(r'(\w+)=("[^"]*"|\S+)', line))
            calls.append(fields)
    return calls, out.stdout, out.stderr


def test_async_calls_share_a_worker_up_to_concurrency(tmp_path):
    path = rules(tmp_path, {"async": {"max_inflight": 500, "queue": 500}},
                 concurrency=25)
    calls, _, err = drive(path, "call:async:100")
    # 100 calls of 0.3 s on 2 workers x 25 slots: two rounds, not fifty.
    assert calls[0]["ok"] == "100"
    assert int(calls[0]["ms"]) < 2000
    peaks = [int(n) for n in re.findall(r"inflight=(\d+)", err)]
    assert max(peaks) == 25


def test_sync_calls_take_one_worker_each(tmp_path):
    path = rules(tmp_path, {"sync": {"max_inflight": 50, "queue": 50}})
    calls, _, _ = drive(path, "call:sync:6")
    # 0.1 s each, two workers, one call per worker at a time: three rounds.
    assert calls[0]["ok"] == "6"
    assert 280 <= int(calls[0]["ms"]) < 2000


def test_messages_larger_than_a_record_cross_both_ways(tmp_path):
    path = rules(tmp_path, {"echo": {}, "big": {}})
    calls, out, _ = drive(path, "reply:echo:3000000", "call:big:3")
    assert calls[0]["ok"] == "1"
    size = int(re.search(r"X-Size=(\d+)", calls[0]["headers"]).group(1))
    assert size > 3000000
    assert calls[1]["ok"] == "3"


def test_unanswered_call_times_out_and_its_worker_is_replaced(tmp_path):
    path = rules(tmp_path, {"mute": {"timeout_ms": 300}, "echo": {}})
    calls, out, err = drive(path, "call:mute:1", "sleep:500", "status",
                            "call:echo:1")
    assert calls[0]["timeout"] == "1"
    assert 250 <= int(calls[0]["ms"]) < 1500
    assert "worker killed pid=" in err and "reason=deadline" in err
    status = json.loads(out.splitlines()[1])
    assert status["killed"] == 1 and status["spawned"] == 3
    assert calls[1]["ok"] == "1"


def test_bulkhead_queue_full_answers_at_once(tmp_path):
    path = rules(tmp_path, {"sync": {"max_inflight": 1, "queue": 3,
                                  "queue_timeout_ms": 5000}})
    calls, _, _ = drive(path, "call:sync:1", "call:sync:10")
    # With the pool ready: one on a worker, three queued, six refused
    # without waiting.
    assert calls[1]["ok"] == "4"
    assert calls[1]["queue_full"] == "6"
    assert int(calls[1]["ms"]) < 1000


def test_queue_timeout_answers_when_waited_too_long(tmp_path):
    path = rules(tmp_path, {"sync": {"max_inflight": 1, "queue": 10,
                                  "queue_timeout_ms": 250}})
    calls, _, _ = drive(path, "call:sync:1", "call:sync:6")
    # 0.1 s each, one at a time: about three start within 250 ms of
    # waiting, the others time out in the queue.
    assert int(calls[1]["ok"]) >= 2
    assert int(calls[1]["queue_timeout"]) >= 2
    assert int(calls[1]["ok"]) + int(calls[1]["queue_timeout"]) == 6


def test_unknown_api_is_unavailable(tmp_path):
    path = rules(tmp_path, {"echo": {}})
    calls, _, _ = drive(path, "call:nosuch:2")
    assert calls[0]["unavailable"] == "2"


def test_stop_leaves_no_child_and_no_descriptor(tmp_path):
    path = rules(tmp_path, {"mute": {"timeout_ms": 200}, "echo": {}},
                 workers=(2, 4))
    _, out, _ = drive(path, "procs", "call:echo:50", "call:mute:3",
                      "sleep:300", "procs")
    procs = re.findall(r"procs children=(\d+) zombies=(\d+) fds=(\d+)",
                       out)
    first, during, after = procs
    assert during[1] == "0"
    assert after[:2] == ("0", "0")
    # What is left after pool_stop is what there was before the pool's
    # workers existed: every socketpair end was closed.
    assert int(after[2]) == int(first[2]) - int(first[0])


def test_worker_that_cannot_start_backs_off(tmp_path):
    path = rules(tmp_path, {"echo": {"queue_timeout_ms": 500}})
    calls, _, err = drive(path, "call:echo:1", "sleep:1500",
                          worker="/bin/false")
    assert calls[0]["queue_timeout"] == "1"
    spawns = err.count("worker spawned")
    # Without a backoff this would be hundreds in two seconds.
    assert 2 <= spawns <= 20
    assert "worker respawn backoff_ms=" in err


def test_sync_call_is_not_starved_by_a_stream_of_async_calls(tmp_path):
    path = rules(tmp_path, {
        "async": {"max_inflight": 1000, "queue": 1000,
                  "queue_timeout_ms": 20000},
        "sync": {"queue_timeout_ms": 20000}},
        workers=(1, 1), concurrency=10)
    _, out, _ = drive(path, "call:sync:1", "burst:async:5,sync:1,async:100")
    lines = dict(re.findall(r"burst api=(\w+) ok=\d+ failed=0 last_ms=(\d+)",
                            out))
    # The one worker stops taking async calls, empties (0.3 s) and runs
    # the sync call (0.1 s); the 100 later async calls wait for it.
    assert int(lines["sync"]) < 1500
    assert int(lines["async"]) > 3000


def test_min_zero_starts_a_worker_on_demand_and_shrinks_to_none(tmp_path):
    path = rules(tmp_path, {"sync": {}}, workers=(0, 2), idle_s=1)
    calls, out, err = drive(path, "procs", "call:sync:1", "sleep:2500",
                            "procs", "call:sync:1")
    procs = re.findall(r"procs children=(\d+)", out)
    assert procs[:2] == ["0", "0"]
    assert [c["ok"] for c in calls] == ["1", "1"]
    assert "reason=idle" in err


def test_async_deadline_spares_the_calls_sharing_its_worker(tmp_path):
    path = rules(tmp_path, {
        "async": {"max_inflight": 100, "queue": 100},
        "amute": {"timeout_ms": 100}}, workers=(1, 1), concurrency=10)
    _, out, err = drive(path, "call:async:1",
                        "burst:async:5,amute:1", "sleep:300", "status")
    lines = {m[0]: m[1:] for m in re.findall(
        r"burst api=(\w+) ok=(\d+) failed=(\d+) last_ms=(\d+)", out)}
    # amute passes its deadline at 100 ms; the five async calls on the
    # same worker still finish (0.3 s); then the worker is killed.
    assert lines["amute"][:2] == ("0", "1")
    assert lines["async"][:2] == ("5", "0")
    status = json.loads([ln for ln in out.splitlines()
                         if ln.startswith("{")][0])
    assert status["killed"] == 1
    assert err.index("hook deadline passed api=amute") < \
        err.index("worker killed pid=")


def test_orphans_adopted_by_sluiced_are_reaped_too(tmp_path):
    # As PID 1 in a container: a process a hook started outlives its
    # worker and becomes sluiced's child.
    path = rules(tmp_path, {"orphan": {}, "echo": {}})
    env = dict(os.environ, POOL_SUBREAPER="1")
    out = subprocess.run([DRIVER, path, FAKE, HOOKS, "call:echo:1",
                          "call:orphan:1", "sleep:1000", "procs"],
                         capture_output=True, text=True, timeout=60,
                         env=env)
    assert "worker_died=1" in out.stdout
    assert "reaped a process that was no worker pid=" in out.stderr
    children, zombies = re.findall(r"procs children=(\d+) zombies=(\d+)",
                                   out.stdout)[0]
    assert (children, zombies) == ("2", "0")
