"""The worker pool's life through sluiced: isolation of a blocking hook,
async hooks sharing workers, growth and shrink, recycling, the shared store,
reloads, and a long run with kills and crashes that must leave nothing
behind."""

import os
import re
import signal
import threading
import time

import pytest

from conftest import SLOW
from pool_helpers import (echoed, fd_kinds, hooked_rules, parallel, pool,
                          post, wait_pool, write_hooks, zombies)


def timed(fn):
    t0 = time.time()
    out = fn()
    return out, time.time() - t0


def test_sleeping_hook_does_not_delay_plain_or_other_hooked_api(
        gateway, upstream, tmp_path):
    gw = gateway(hooked_rules(tmp_path, upstream, {
        "slow": {"pre": ["pt.sleepy"], "config": {"sleep": 1},
                 "max_inflight": 4, "queue_timeout_ms": 10000},
        "fast": {"pre": ["pt.tag"]},
        "plain": None}, workers={"min": 6, "max": 6, "idle_s": 30}))
    wait_pool(gw)

    slow = []
    t = threading.Thread(target=lambda: slow.extend(parallel(
        8, lambda i: timed(lambda: post(gw, "/slow/echo")[0])))
    )
    t.start()
    time.sleep(0.3)
    # While four workers sleep and four more calls wait behind the
    # bulkhead, the other hooked API and the plain one answer at once.
    others = [timed(lambda: post(gw, "/fast/echo")[0]) for _ in range(5)]
    others += [timed(lambda: gw.get("/plain/echo")[0]) for _ in range(5)]
    t.join(timeout=30)

    assert [s for s, _ in others] == [200] * 10
    assert max(d for _, d in others) < 0.5 * SLOW
    assert [s for s, _ in slow] == [200] * 8
    # Two rounds of four, not eight seconds one after the other.
    assert max(d for _, d in slow) < 3.5 * SLOW


def test_get_without_a_body_runs_the_hook(gateway, upstream, tmp_path):
    gw = gateway(hooked_rules(tmp_path, upstream,
                              {"tag": {"pre": ["pt.tag"]}}))
    wait_pool(gw)
    status, _, body = gw.get("/tag/echo")
    assert status == 200
    assert echoed(body)["x-version"] == "1"


def test_hundreds_of_async_sleeps_run_at_once_on_two_workers(
        gateway, upstream, tmp_path):
    gw = gateway(hooked_rules(tmp_path, upstream, {
        "nap": {"pre": ["pt.async_sleepy"], "config": {"sleep": 1},
                "max_inflight": 300, "queue": 300}},
        workers={"min": 2, "max": 2, "idle_s": 30}, concurrency=200))
    wait_pool(gw)
    t0 = time.time()
    statuses = parallel(200, lambda i: post(gw, "/nap/echo")[0])
    elapsed = time.time() - t0
    assert statuses == [200] * 200
    assert elapsed < 4 * SLOW
    assert pool(gw)["spawned"] == 2


def test_pool_grows_while_calls_wait_and_shrinks_when_idle(
        gateway, upstream, tmp_path):
    gw = gateway(hooked_rules(tmp_path, upstream, {
        "slow": {"pre": ["pt.sleepy"], "config": {"sleep": 0.5}}},
        workers={"min": 1, "max": 4, "idle_s": 1}))
    wait_pool(gw)
    statuses = parallel(6, lambda i: post(gw, "/slow/echo")[0])
    assert statuses == [200] * 6
    assert pool(gw)["spawned"] >= 3
    assert gw.wait_log("reason=idle")
    wait_pool(gw, workers=1, timeout=10)


def _starting_at_once(log):
    """The most workers ever between "worker spawned" and their "ready" (or
    their exit), from the log's millisecond timestamps."""
    events = []
    for line in log.splitlines():
        m = re.match(r"(\S+) \w+ sluiced\[\d+\]: worker "
                     r"(spawned|ready|exited|died) pid=(\d+)", line)
        if m:
            events.append((m.group(1), m.group(2) == "spawned"))
    now = most = 0
    for _, up in sorted(events, key=lambda e: (e[0], e[1])):
        now += 1 if up else -1
        most = max(most, now)
    return most


def test_growth_starts_workers_one_cpu_short_of_all_at_a_time(
        gateway, upstream, tmp_path):
    # Starting an interpreter takes a CPU for ~100 ms: a burst of blocked
    # calls must leave a CPU to the front (the plain APIs).
    gw = gateway(hooked_rules(tmp_path, upstream, {
        "slow": {"pre": ["pt.sleepy"], "config": {"sleep": 1},
                 "max_inflight": 8, "queue": 64}},
        workers={"min": 1, "max": 6, "idle_s": 30}))
    wait_pool(gw)
    statuses = parallel(12, lambda i: post(gw, "/slow/echo")[0])
    assert statuses == [200] * 12
    assert pool(gw)["spawned"] >= 4
    assert _starting_at_once(gw.log()) <= max(1, (os.cpu_count() or 1) - 1)


def test_worker_is_recycled_after_max_requests(gateway, upstream, tmp_path):
    gw = gateway(hooked_rules(tmp_path, upstream, {
        "tag": {"pre": ["pt.tag"]}},
        workers={"min": 1, "max": 1, "idle_s": 30}, max_requests=5))
    wait_pool(gw)
    conn = gw.connect()
    pids = []
    for _ in range(16):
        status, _, body = post(gw, "/tag/echo", conn=conn)
        assert status == 200
        pids.append(echoed(body)["x-worker-pid"])
    conn.close()
    # Five calls per worker, and no call lost at the switch.
    assert [pids.count(p) for p in dict.fromkeys(pids)] == [5, 5, 5, 1]
    assert pool(gw)["recycled"] == 3
    assert gw.wait_log("reason=max_requests exit=0")


def test_worker_is_recycled_above_max_rss(gateway, upstream, tmp_path):
    gw = gateway(hooked_rules(tmp_path, upstream, {
        "grow": {"pre": ["pt.grow"], "config": {"grow_mb": 40}}},
        workers={"min": 1, "max": 1, "idle_s": 30}, max_rss_mb=60))
    first = wait_pool(gw)["workers"][0]["pid"]
    for _ in range(2):
        assert post(gw, "/grow/echo")[0] == 200
    assert gw.wait_log("reason=max_rss")
    assert gw.wait_log("worker exited pid=%d reason=max_rss" % first)
    p = wait_pool(gw)
    assert p["recycled"] == 1 and p["workers"][0]["pid"] != first
    assert post(gw, "/grow/echo")[0] == 200


def test_store_data_is_shared_by_workers_and_outlives_them(
        gateway, upstream, tmp_path):
    gw = gateway(hooked_rules(tmp_path, upstream, {
        "put": {"pre": ["pt.put"]}, "get": {"pre": ["pt.get"]},
        "die": {"pre": ["pt.die"]}},
        workers={"min": 2, "max": 2, "idle_s": 30}))
    wait_pool(gw)
    _, _, body = post(gw, "/put/echo")
    writer = echoed(body)["x-worker-pid"]
    store = pool(gw)["store"]
    assert (store["kind"], store["entries"]) == ("memory", 1)

    # Read from the other worker: hold the writer with a parallel call
    # until a read lands elsewhere.
    seen = {}
    for _ in range(20):
        for status, _, body in parallel(2, lambda i: post(gw, "/get/echo")):
            h = echoed(body)
            seen[h["x-worker-pid"]] = h["x-got"]
        if len(seen) == 2:
            break
    assert set(seen.values()) == {"from-%s" % writer}
    assert len(seen) == 2

    # Kill every worker; the value stays in sluiced.
    for _ in range(2):
        assert post(gw, "/die/echo")[0] == 502
    wait_pool(gw)
    assert echoed(post(gw, "/get/echo")[2])["x-got"] == "from-%s" % writer


def test_store_data_honours_the_ttl(gateway, upstream, tmp_path):
    gw = gateway(hooked_rules(tmp_path, upstream, {
        "put": {"pre": ["pt.put"], "config": {"ttl": 1}},
        "get": {"pre": ["pt.get"]}}))
    wait_pool(gw)
    post(gw, "/put/echo")
    assert echoed(post(gw, "/get/echo")[2])["x-got"].startswith("from-")
    time.sleep(1.3)
    assert echoed(post(gw, "/get/echo")[2])["x-got"] == "none"


def test_hup_loads_changed_hook_code_without_failing_a_request(
        gateway, upstream, tmp_path):
    rules = hooked_rules(tmp_path, upstream, {"tag": {"pre": ["pt.tag"]}})
    gw = gateway(rules)
    wait_pool(gw)
    stop = threading.Event()
    results = []

    def client():
        conn = gw.connect()
        while not stop.is_set() and len(results) < 3000:
            status, _, body = post(gw, "/tag/echo", conn=conn)
            results.append((status, echoed(body).get("x-version")
                            if status == 200 else None))
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    module = tmp_path / "hooks" / "pt.py"
    write_hooks(tmp_path, source=module.read_text()
                .replace('get("v", 1)', 'get("v", 2)'))
    # Same size and, within a second, the same mtime as the cached
    # bytecode: an editor's save a while later differs in the mtime.
    later = time.time() + 5
    os.utime(module, (later, later))
    gw.send_signal(signal.SIGHUP)
    deadline = time.time() + 10 * SLOW
    while time.time() < deadline and not any(v == "2" for _, v in results):
        time.sleep(0.05)
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join(timeout=30)

    assert results and all(s == 200 for s, _ in results), \
        [r for r in results if r[0] != 200][:5]
    assert results[-1][1] == "2"
    assert gw.wait_log("reason=reload exit=0")


# Each front thread serves its own workers (a lane of the pool) and hands
# calls to other lanes' workers when its own are busy; kills, crashes and
# recycling close workers from any thread. threads=4 with a reload in the
# middle runs the most of those crossings.
@pytest.mark.parametrize("threads,hup", [(2, False), (4, True)])
def test_thousand_calls_with_kills_and_crashes_leave_no_zombie_or_fd(
        gateway, upstream, tmp_path, threads, hup):
    rules = hooked_rules(tmp_path, upstream, {
        "ok": {"pre": ["pt.tag"], "queue": 1000},
        "die": {"pre": ["pt.die"], "queue_timeout_ms": 10000},
        "slow": {"pre": ["pt.sleepy"], "timeout_ms": 100,
                 "config": {"sleep": 5}, "queue_timeout_ms": 10000},
        "boom": {"pre": ["pt.boom"]}},
        workers={"min": 2, "max": 4, "idle_s": 1}, max_requests=100)
    rules["threads"] = threads
    gw = gateway(rules)
    wait_pool(gw)
    # The same clients before and after: what sluiced holds for them
    # (upstream keep-alive, client sockets) is in both counts.
    parallel(4, lambda i: [post(gw, "/ok/echo") for _ in range(10)])
    wait_pool(gw)
    before = fd_kinds(gw.pid, gw.port, upstream.port)

    expect = {"ok": 200, "die": 502, "slow": 504, "boom": 500}

    def client(i):
        conn = gw.connect()
        wrong = []
        for n in range(250):
            if hup and i == 0 and n == 125:
                gw.send_signal(signal.SIGHUP)
            api = ("die" if n % 50 == 7 else "slow" if n % 50 == 31
                   else "boom" if n % 10 == 3 else "ok")
            status = post(gw, "/%s/echo" % api, conn=conn)[0]
            if status != expect[api]:
                wrong.append((api, status))
        conn.close()
        return wrong

    assert parallel(4, client) == [[]] * 4
    if hup:
        assert gw.wait_log("reloaded rules=")
    p = pool(gw)
    assert p["killed"] == 20
    assert p["apis"]["die"]["errors"] == 20

    wait_pool(gw, timeout=20)
    assert zombies(gw) == []
    assert len(gw.children()) == 2
    # Every worker channel closed but the two live ones, nothing else
    # left open but upstream keep-alive connections (pooled, bounded).
    deadline = time.time() + 5 * SLOW
    while time.time() < deadline:
        after = fd_kinds(gw.pid, gw.port, upstream.port)
        if not after["client"] and not after["peer"]:
            break
        time.sleep(0.05)
    assert after["unix"] == before["unix"]
    assert after["other"] == before["other"]
    assert after["listen"] == before["listen"]
    assert after["peer"] == 0
    assert after["client"] == 0
    # Each thread pools at most one upstream connection per client.
    assert after["upstream"] <= max(before["upstream"], 4 * threads)
