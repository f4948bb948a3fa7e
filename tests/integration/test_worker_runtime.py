"""sluice-worker as a process: logs, the key-value round trip, async
concurrency, shutdown, signals, memory and the cost of a visit."""

import os
import signal
import time

import msgpack

from worker_fixtures import api, req
import worker_fixtures

worker = worker_fixtures.worker  # the fixture, for the tests below

LOGS = """
import logging
import sys
import sluice

log = logging.getLogger("mylib")

def hook(request, session, spec):
    print("printed", 42)
    print("to stderr", file=sys.stderr)
    logging.info("root info")
    log.warning("named warning")
    logging.debug("debug line")
    sluice.log("native line", "error")
    return request, session
"""


def test_print_and_logging_arrive_as_logs_with_the_api_name(worker):
    w = worker([api("billing", pre=["lg.hook"])], modules={"lg": LOGS})
    assert w.call("billing")["ok"]
    w.drain_logs()
    got = [(m["level"], m["api"], m["msg"]) for m in w.logs]
    assert got == [("info", "billing", "printed 42"),
                   ("error", "billing", "to stderr"),
                   ("info", "billing", "root info"),
                   ("warn", "billing", "mylib: named warning"),
                   ("debug", "billing", "debug line"),
                   ("error", "billing", "native line")]


def test_log_level_from_init_filters_in_the_worker(worker):
    w = worker([api("a", pre=["lg.hook"])], modules={"lg": LOGS},
               log_level="warn")
    assert w.call("a")["ok"]
    w.drain_logs()
    assert [m["level"] for m in w.logs] == ["error", "warn", "error"]


def test_import_time_output_is_tagged_with_the_api(worker):
    src = """
    print("importing")
    def hook(request, session, spec):
        return request, session
    """
    w = worker([api("a", pre=["imp.hook"])], modules={"imp": src})
    w.drain_logs()
    assert {"t": "log", "level": "info", "api": "a", "msg": "importing"} \
        in w.logs


KV = """
import sluice
from gateway import TykGateway as tyk

def hook(request, session, spec):
    tyk.store_data("seen", request.get_header("X-N"), 30)
    value = sluice.get_data("counter")
    request.add_header("X-Counter", value.decode())
    return request, session

def plain(request, session, spec):
    request.add_header("X-Plain", "1")
    return request, session
"""


def test_kv_get_waits_for_its_answer_and_keeps_other_messages(worker):
    w = worker([api("kv", pre=["kvmod.hook"]), api("p", pre=["kvmod.plain"])],
               modules={"kvmod": KV})
    w.auto_kv = False
    first = w.submit("kv", req(headers=[["X-N", "7"]]))
    # The worker is now blocked in get_data. Send an unrelated call before
    # answering: it must be served after, not lost.
    deadline = time.monotonic() + 5
    while not w.kv_gets and time.monotonic() < deadline:
        w.drain_logs(0.05)
    assert w.kv_gets and w.kv_gets[0]["key"] == "counter"
    assert w.kv == {"seen": b"7"}
    second = w.submit("p", req(headers=[]))
    w.send({"t": "kv", "id": w.kv_gets[0]["id"] + 1000, "value": b"stale"})
    w.send({"t": "kv", "id": w.kv_gets[0]["id"], "value": b"99"})
    res1, res2 = w.recv(), w.recv()
    assert res1["id"] == first and res2["id"] == second
    assert res1["req"]["headers"][-1] == ["X-Counter", "99"]
    assert res2["req"]["headers"] == [["X-Plain", "1"]]


ASYNC = """
import asyncio
import sluice

@sluice.hook
async def nap(request, session, spec):
    await asyncio.sleep(float(request.get_header("X-Sleep")))
    request.add_header("X-Woke", request.get_header("X-N"))
    return request, session

def sync(request, session, spec):
    request.add_header("X-Sync", "1")
    return request, session

async def fails(request, session, spec):
    await asyncio.sleep(0)
    raise RuntimeError("async failure")

async def replies(request, session, spec):
    return sluice.reply(204)

async def tail(request, session, spec):
    await asyncio.sleep(0.1)
    import time
    time.sleep(0.3)  # blocks the loop: the next call arrives meanwhile

async def with_kv(request, session, spec):
    await asyncio.sleep(0.05)
    v = sluice.get_data("k")
    request.add_header("X-K", v.decode())
"""


def test_200_async_sleeps_run_at_once_in_one_worker(worker):
    w = worker([api("a", pre=["am.nap"])], modules={"am": ASYNC},
               concurrency=256)
    start = time.monotonic()
    ids = [w.submit("a", req(headers=[["X-Sleep", "0.5"],
                                      ["X-N", str(i)]]))
           for i in range(200)]
    results = {}
    for _ in ids:
        res = w.recv(timeout=10)
        results[res["id"]] = res
    elapsed = time.monotonic() - start
    assert sorted(results) == ids
    for i, cid in enumerate(ids):
        assert results[cid]["req"]["headers"][-1] == ["X-Woke", str(i)]
    print(f"\n200 concurrent asyncio.sleep(0.5) hooks: {elapsed:.2f}s")
    assert elapsed < 1.5


def test_concurrency_bounds_async_calls_per_worker(worker):
    w = worker([api("a", pre=["am.nap"])], modules={"am": ASYNC},
               concurrency=2)
    start = time.monotonic()
    for i in range(4):
        w.submit("a", req(headers=[["X-Sleep", "0.3"], ["X-N", str(i)]]))
    for _ in range(4):
        assert w.recv()["ok"]
    # 4 calls, 2 at a time: two rounds of 0.3 s.
    assert time.monotonic() - start >= 0.55


def test_sync_calls_are_served_while_async_calls_wait(worker):
    w = worker([api("a", pre=["am.nap"]), api("s", pre=["am.sync"]),
                api("f", pre=["am.fails"]), api("r", pre=["am.replies"])],
               modules={"am": ASYNC})
    slow = w.submit("a", req(headers=[["X-Sleep", "1"], ["X-N", "1"]]))
    start = time.monotonic()
    quick = [w.call("s", req(headers=[])) for _ in range(3)]
    assert all(r["req"]["headers"] == [["X-Sync", "1"]] for r in quick)
    failed = w.call("f")
    assert failed["ok"] is False and "async failure" in failed["error"]
    assert w.call("r")["reply"]["status"] == 204
    assert time.monotonic() - start < 0.5
    res = w.recv(timeout=3)
    assert res["id"] == slow and res["ok"]
    # Back in blocking mode, sync calls still work.
    assert w.call("s", req(headers=[]))["ok"]


def test_ready_names_the_apis_whose_hooks_are_all_async(worker):
    w = worker([api("a", pre=["am.nap", "am.fails"]),
                api("mixed", pre=["am.nap", "am.sync"]),
                api("s", pre=["am.sync"]), api("none")],
               modules={"am": ASYNC})
    assert w.ready["async_apis"] == ["a"]


def test_call_read_as_the_last_task_ends_still_runs(worker):
    """The event loop stops when its last task ends; a call read in that
    same round must not be left behind."""
    w = worker([api("t", pre=["am.tail"]), api("a", pre=["am.nap"])],
               modules={"am": ASYNC})
    first = w.submit("t")
    time.sleep(0.2)  # tail() is now blocking its last step
    second = w.submit("a", req(headers=[["X-Sleep", "0"], ["X-N", "2"]]))
    got = sorted(w.recv(timeout=3)["id"] for _ in range(2))
    assert got == [first, second]


def test_async_hook_can_use_the_store(worker):
    w = worker([api("a", pre=["am.with_kv"]), api("s", pre=["am.sync"])],
               modules={"am": ASYNC})
    w.kv["k"] = b"v"
    ids = [w.submit("a", req(headers=[])) for _ in range(5)]
    ids.append(w.submit("s", req(headers=[])))
    got = {}
    for _ in ids:
        res = w.recv()
        got[res["id"]] = res
    assert sorted(got) == sorted(ids)
    assert all(got[i]["req"]["headers"] == [["X-K", "v"]] for i in ids[:5])


AWAITS = """
import asyncio
import sluice

async def awaits(request, session, spec):
    value = await sluice.get_data_async(request.get_header("X-Key"))
    request.add_header("X-Value", value.decode() if value else "none")
    return request, session

def runs_its_own_loop(request, session, spec):
    value = asyncio.run(sluice.get_data_async("k"))
    request.add_header("X-Value", value.decode())
    return request, session
"""


def test_get_data_async_lets_other_calls_run_while_it_waits(worker):
    w = worker([api("a", pre=["aw.awaits"])], modules={"aw": AWAITS})
    w.auto_kv = False
    first = w.submit("a", req(headers=[["X-Key", "one"]]))
    second = w.submit("a", req(headers=[["X-Key", "two"]]))
    # Both calls wait at once: the first did not block the worker.
    deadline = time.monotonic() + 5
    while len(w.kv_gets) < 2 and time.monotonic() < deadline:
        w.drain_logs(0.05)
    asks = {g["key"]: g["id"] for g in w.kv_gets}
    assert sorted(asks) == ["one", "two"]
    # Answered in the other order, each reaches its own call.
    w.send({"t": "kv", "id": asks["two"], "value": b"2"})
    w.send({"t": "kv", "id": asks["one"], "value": None})
    got = {}
    for _ in range(2):
        res = w.recv()
        got[res["id"]] = res["req"]["headers"][-1]
    assert got == {first: ["X-Value", "none"], second: ["X-Value", "2"]}


def test_get_data_async_on_a_loop_of_its_own_still_gets_its_answer(worker):
    # A sync hook's asyncio.run: the worker's loop is not running to read
    # the answer, so the call waits for it as get_data does.
    w = worker([api("s", pre=["aw.runs_its_own_loop"])],
               modules={"aw": AWAITS})
    w.kv["k"] = b"v"
    res = w.call("s", req(headers=[]))
    assert res["ok"], res.get("error")
    assert res["req"]["headers"] == [["X-Value", "v"]]


def test_worker_exits_when_the_socket_closes(worker):
    w = worker([api("a")])
    w.sock.close()
    assert w.proc.wait(timeout=5) == 0


def test_worker_exits_on_close_with_async_calls_pending(worker):
    w = worker([api("a", pre=["am.nap"])], modules={"am": ASYNC})
    for i in range(10):
        w.submit("a", req(headers=[["X-Sleep", "30"], ["X-N", str(i)]]))
    time.sleep(0.2)
    w.sock.close()
    assert w.proc.wait(timeout=5) == 0


def test_worker_ignores_sigint(worker):
    w = worker([api("a")])
    os.kill(w.proc.pid, signal.SIGINT)
    time.sleep(0.1)
    assert w.proc.poll() is None
    assert w.call("a")["ok"]


def test_worker_refuses_to_run_without_its_socket(tmp_path):
    import subprocess
    from worker_fixtures import HOOKS, WORKER
    p = subprocess.run([str(WORKER), str(HOOKS)], capture_output=True,
                       timeout=10, stdin=subprocess.DEVNULL)
    assert p.returncode == 1
    assert b"not a seqpacket socket" in p.stderr


def test_idle_worker_rss(worker):
    from worker_fixtures import HOOKS
    w = worker([api("a", pre=["noop.pre"])], path=[str(HOOKS / "examples")])
    assert w.call("a")["ok"]
    time.sleep(0.1)
    rss = w.rss_kib()
    print(f"\nidle worker RSS: {rss / 1024:.1f} MiB")
    if os.environ.get("SLUICE_SANITIZE") != "1":  # ASan's shadow memory
        assert rss < 15 * 1024


def test_noop_hook_visit_cost(worker):
    """Prints the worker's CPU per call for a no-op Tyk-style hook, calls
    sent one at a time and in batches of 32. Bounded in count; asserts
    only that every call is answered."""
    from worker_fixtures import HOOKS
    w = worker([api("a", pre=["noop.pre"])], path=[str(HOOKS / "examples")])
    call = {"t": "call", "id": 1, "c": {
        "api": "a", "phase": "request",
        "req": req(path="/a/b?c=d", headers=[
            ["Host", "api.example.com"], ["User-Agent", "curl/7.88"],
            ["Accept", "*/*"], ["X-Request-Id", "0123456789abcdef"]])}}
    record = b"\0" + msgpack.packb(call, use_bin_type=True)
    for label, n, batch in (("one at a time", 3000, 1), ("batched", 6000, 32)):
        c0 = w.cpu_seconds()
        for _ in range(n // batch):
            for _ in range(batch):
                w.sock.send(record)
            for _ in range(batch):
                assert w.sock.recv(70000)
        per_call = (w.cpu_seconds() - c0) / n * 1e6
        print(f"\nno-op hook, {label}: worker CPU {per_call:.1f} us/call")


def test_sys_path_order(worker, tmp_path):
    src = """
    import sys
    def hook(request, session, spec):
        for i, p in enumerate(sys.path[:4]):
            request.add_header(f"X-P{i}", p)
        return request, session
    """
    extra = tmp_path / "extra"
    extra.mkdir()
    w = worker([api("b", pre=["hook"], bundle_dir=str(tmp_path / "bundle"),
                    bundle_modules=["m"])],
               files={"bundle/m.py": src},
               path=[str(tmp_path / "mods"), str(extra)])
    got = dict(w.call("b", req(headers=[]))["req"]["headers"])
    from worker_fixtures import HOOKS
    assert [got[f"X-P{i}"] for i in range(4)] == [
        str(HOOKS), str(tmp_path / "mods"), str(extra),
        str(tmp_path / "bundle")]


def test_worker_exits_on_close_despite_threads_a_hook_left(worker):
    src = """
    import threading, time
    def hook(request, session, spec):
        threading.Thread(target=time.sleep, args=(3600,)).start()
        return request, session
    """
    w = worker([api("a", pre=["th.hook"])], modules={"th": src})
    assert w.call("a")["ok"]
    w.sock.close()
    assert w.proc.wait(timeout=5) == 0


def test_atexit_handlers_of_hook_modules_run(worker, tmp_path):
    mark = tmp_path / "atexit-ran"
    src = f"""
    import atexit
    atexit.register(lambda: open({str(mark)!r}, "w").close())
    def hook(request, session, spec):
        return request, session
    """
    w = worker([api("a", pre=["ae.hook"])], modules={"ae": src})
    w.sock.close()
    assert w.proc.wait(timeout=5) == 0
    assert mark.exists()
