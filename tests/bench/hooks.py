"""Python middleware (issue 3): what a hook visit costs and the floor under
it (a bare round trip to another process), how CPU-bound hooks scale over
workers, what a blocking hook does to everything else, how many
async hooks a worker holds, and how big an idle worker is.

The sluiced instances share rules/hooks.yaml and differ in pool size:
  default  workers 2..16 (the rules' defaults); the blocking scenario
           starts a fresh one per round
  one      workers 1..1 (how a single-interpreter gateway behaves)
  two      workers 2..2
The hooks are tests/bench/hooks/benchhooks.py."""

import json
import os
import subprocess
import threading
import time
from collections import Counter

import load
import procs
import report
from report import fmt, median

HOOKS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hooks")
WORKER_EXE = "sluice-worker"


def start(ctx, name, wmin, wmax, rules="hooks.yaml"):
    return ctx.servers.sluiced(f"sluiced-hooks-{name}", rules,
                               ready_path="/noop/64B", timeout=30.0,
                               origin_port=ctx.origin.port,
                               hooks_dir=HOOKS_DIR, workers_min=wmin,
                               workers_max=wmax)


def workers_of(target):
    return procs.child_pids(target.pid, WORKER_EXE)


def worker_rss(target, when):
    pids = workers_of(target)
    if not pids:
        return [when, "0", "-", "-"]
    rss = [procs.rss_kib(p) / 1024 for p in pids]
    pss = [procs.pss_kib(p) / 1024 for p in pids]
    return [when, str(len(pids)), fmt(median(rss), 1), fmt(median(pss), 1)]


def _wrk(target, path, duration, threads, conns):
    own0 = procs.own_cpu_seconds(target.pid)
    res = load.wrk(target.url(path), duration, threads=threads, conns=conns,
                   watch={"all": target.pid})
    own = procs.own_cpu_seconds(target.pid) - own0
    res["sluiced_us_per_req"] = own * 1e6 / max(res["requests"], 1)
    workers = workers_of(target)
    res["workers"] = len(workers)
    return res


def noop_cost(ctx, target):
    """No-op pre hook vs the same upstream without hooks: throughput and
    CPU at load (wrk -c32), latency on one connection (wrk -c1)."""
    paths = ["/plain/64B", "/noop/64B"]
    load_runs = {p: [] for p in paths}
    lat_runs = {p: [] for p in paths}
    # Always warm up here, even with --quick: the pool may grow on the
    # first load, and spawning interpreters is not the cost of a visit.
    for p in paths:
        _wrk(target, p, 1, 2, 32)
    for rnd in range(ctx.rounds):
        order = paths if rnd % 2 == 0 else paths[::-1]
        for p in order:
            load_runs[p].append(_wrk(target, p, ctx.duration, 2, 32))
        _latency_round(ctx, target, order, lat_runs)

    plain, noop = load_runs["/plain/64B"], load_runs["/noop/64B"]
    ratio = median(n["rps"] / p["rps"] for n, p in zip(noop, plain))
    cpu = {p: median(r["cpu_us_per_req"]["all"] for r in load_runs[p])
           for p in paths}
    p50 = {p: median(r["p50_us"] for r in lat_runs[p]) for p in paths}
    rows = []
    for p in paths:
        rows.append([p.split("/")[1], fmt(median(r["rps"] for r in
                                                 load_runs[p])),
                     fmt(median(r["p99_us"] for r in load_runs[p]) / 1000, 2),
                     fmt(cpu[p], 1),
                     fmt(median(r["sluiced_us_per_req"] for r in
                                load_runs[p]), 1),
                     fmt(median(r["rps"] for r in lat_runs[p])),
                     fmt(p50[p]),
                     fmt(median(r["p99_us"] for r in lat_runs[p])),
                     str(max(r["workers"] for r in load_runs[p])),
                     str(sum(r["errors"] for r in load_runs[p] +
                             lat_runs[p]))])
    report.note("No-op pre hook vs the same API without hooks (one sluiced, "
                "pool 2..16). Load: wrk -t2 -c32; latency: wrk -t1 -c1. CPU "
                "counts sluiced and its sluice-worker children; \"of which "
                "sluiced\" is sluiced's own part.\n")
    report.table(["API", "req/s -c32", "p99 ms -c32", "CPU µs/req",
                  "of which sluiced",
                  "req/s -c1", "p50 µs -c1", "p99 µs -c1", "workers",
                  "errors"], rows)
    added_cpu = cpu["/noop/64B"] - cpu["/plain/64B"]
    added_p50 = p50["/noop/64B"] - p50["/plain/64B"]
    v_ratio = report.verdict(ratio, 0.7, label="no-op hook req/s ratio")
    v_cpu = report.verdict(added_cpu, 12, False, "no-op hook added CPU",
                           " µs/req")
    v_p50 = report.verdict(added_p50, 40, False, "no-op hook added p50",
                           " µs")
    report.note(f"targets: no-op ratio {ratio:.2f} (>= 0.7: {v_ratio}), "
                f"added CPU {added_cpu:.1f} µs/req (<= 12: {v_cpu}), "
                f"added p50 {added_p50:.0f} µs (<= 40: {v_p50})\n")


def _latency_round(ctx, target, paths, runs):
    """One wrk -t1 -c1 run per path, appended to runs[path]."""
    for p in paths:
        runs[p].append(_wrk(target, p, ctx.duration, 1, 1))


HALT_POLL = "/sys/module/haltpoll/parameters/guest_halt_poll_ns"
HALT_POLL_DEFAULT_NS = 200000  # the haltpoll driver's own default


def with_halt_polling(ctx, target):
    """The -c1 rows and the floor again with the guest's idle vCPU polling
    before it halts. A VM booted with haltpoll.guest_halt_poll_ns=0 (this
    one) halts at once, and waking a halted vCPU costs an exit to the
    hypervisor on both sides: most of a cross-CPU round trip here. The
    setting is the machine's, not sluice's; it is put back afterwards."""
    try:
        with open(HALT_POLL) as f:
            before = int(f.read())
    except (OSError, ValueError):
        report.note("Halt polling: this kernel has no haltpoll cpuidle "
                    "driver; skipped.\n")
        return
    if before:
        report.note(f"Halt polling: already on ({before} ns), so the rows "
                    "above include it.\n")
        return
    paths = ["/plain/64B", "/noop/64B"]
    runs = {p: [] for p in paths}
    try:
        with open(HALT_POLL, "w") as f:
            f.write(str(HALT_POLL_DEFAULT_NS))
        for rnd in range(ctx.rounds):
            _latency_round(ctx, target, paths if rnd % 2 == 0 else
                           paths[::-1], runs)
        floor = _round_trip(ctx, [])
    finally:
        with open(HALT_POLL, "w") as f:
            f.write(str(before))
    p50 = {p: median(r["p50_us"] for r in runs[p]) for p in paths}
    rows = [[p.split("/")[1], fmt(median(r["rps"] for r in runs[p])),
             fmt(p50[p]), fmt(median(r["p99_us"] for r in runs[p]))]
            for p in paths]
    if floor:
        rows.append(["bare round trip (wall)", "-", fmt(floor["wall_us"], 1),
                     "-"])
    report.note(f"The same on one connection with the guest's halt polling "
                f"on ({HALT_POLL_DEFAULT_NS // 1000} µs, the driver's "
                f"default; this machine boots with 0). An idle vCPU then "
                f"spins before it halts, which no process is charged for: "
                f"latency drops, the host's CPU time does not.\n")
    report.table(["API", "req/s -c1", "p50 µs -c1", "p99 µs -c1"], rows)
    report.verdict(p50["/noop/64B"] - p50["/plain/64B"], 40, False,
                   "no-op hook added p50, halt polling on", " µs")


def _round_trip(ctx, pin):
    """tests/bench/round_trip.c's figures, None when it is not built."""
    exe = os.path.join(os.path.dirname(ctx.sluiced), "tests", "round_trip")
    if not os.access(exe, os.X_OK):
        return None
    count = "20000" if ctx.quick else "100000"
    return json.loads(subprocess.run([exe, count] + pin, check=True,
                                     capture_output=True, text=True,
                                     timeout=120).stdout)


def process_round_trip(ctx):
    """The floor under a hook visit: a bare message to another process and
    back (tests/bench/round_trip.c), placed by the scheduler and with both
    processes on one CPU."""
    rows = []
    for label, pin in (("scheduler's choice", []), ("both on CPU 0", ["0"])):
        r = _round_trip(ctx, pin)
        if r is None:
            report.skipped("build/tests/round_trip is not built (make bench "
                           "builds it)")
            return
        rows.append([label, fmt(r["wall_us"], 1), fmt(r["caller_cpu_us"], 1),
                     fmt(r["echo_cpu_us"], 1),
                     fmt(r["caller_cpu_us"] + r["echo_cpu_us"], 1)])
    report.note("The floor: one message to another process and one back "
                "over a unix SOCK_SEQPACKET pair, nothing done on either "
                "side (tests/bench/round_trip.c, one at a time). A hook "
                "visit is this round trip plus the work on both sides.\n")
    report.table(["processes", "wall µs", "caller CPU µs", "echo CPU µs",
                  "CPU µs per round trip"], rows)


def cpu_scaling(ctx, one, two):
    """A hook burning 2 ms of CPU: 2 workers vs 1."""
    pools = [("1 worker", one), ("2 workers", two)]
    runs = {name: [] for name, _ in pools}
    for _, t in pools if ctx.warmup else ():
        _wrk(t, "/cpu/64B", 1, 1, 8)
    for rnd in range(ctx.rounds):
        order = pools if rnd % 2 == 0 else pools[::-1]
        for name, t in order:
            runs[name].append(_wrk(t, "/cpu/64B", ctx.duration, 1, 8))
    ratio = median(b["rps"] / a["rps"] for a, b in
                   zip(runs["1 worker"], runs["2 workers"]))
    rows = [[name, fmt(median(r["rps"] for r in runs[name])),
             fmt(median(r["p99_us"] for r in runs[name]) / 1000, 1),
             fmt(median(r["cpu_us_per_req"]["all"] for r in runs[name])),
             str(sum(r["errors"] for r in runs[name]))]
            for name, _ in pools]
    report.note("CPU-bound hook (2 ms of CPU per call), wrk -t1 -c8:\n")
    report.table(["pool", "req/s", "p99 ms", "CPU µs/req", "errors"], rows)
    v = report.verdict(ratio, 1.8, label="CPU hook, 2 workers vs 1",
                       unit="x")
    report.note(f"target: 2 workers vs 1 = {ratio:.2f}x (>= 1.8: {v})\n")


def _burst_in_thread(port, path, n):
    out = {}

    def go():
        out["result"] = load.burst(port, path, n, timeout=300.0)

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread, out


PROBE_RATE = 500  # requests per second of the latency probe


def _blocking_burst(ctx, target, probe_s):
    """n sleeping-hook requests at once, and the plain API probed
    meanwhile: (seconds, statuses, probe result)."""
    thread, out = _burst_in_thread(target.port, "/sleep/64B", ctx.blocking_n)
    time.sleep(0.05)
    during = load.probe(target.port, "/plain/64B", PROBE_RATE, probe_s)
    thread.join(timeout=ctx.blocking_n * 2 + 60)
    secs, statuses = out.get("result", (None, {}))
    return secs, statuses, during


def blocking(ctx, one):
    """n concurrent requests to a hook that sleeps 1 s, while a fixed-rate
    probe measures the plain API of the same sluiced.

    The tail of one probe moves by half between runs on this VM, so the
    default pool is measured over rounds, each on a fresh sluiced: idle,
    then a burst while the pool grows from 2 workers (spawning costs CPU),
    then a burst with the workers it grew to. The ratio is each round's
    burst p99 over the same round's idle p99; the table shows medians."""
    n = ctx.blocking_n
    # The probe stays inside the burst: n/16 s once 16 workers sleep side
    # by side.
    inside = max(0.9, n / 16 - 0.5)
    phases = ["idle (no hook load)", "default 2..16, growing",
              "default 2..16, grown"]
    runs = {name: [] for name in phases}
    for rnd in range(ctx.rounds):
        target = start(ctx, f"blocking{rnd}", 2, 16)
        try:
            time.sleep(1.0)
            idle = load.probe(target.port, "/plain/64B", PROBE_RATE,
                              ctx.duration)
            runs[phases[0]].append((None, {}, idle))
            for name in phases[1:]:
                runs[name].append(_blocking_burst(ctx, target, inside))
        finally:
            ctx.servers.stop(target)
    runs["one worker"] = [_blocking_burst(ctx, one, ctx.duration)]

    idle_p99 = [r[2]["p99_us"] for r in runs[phases[0]]]
    rows, ratios = [], {}
    for name, rs in runs.items():
        if name == "one worker":  # one round: against the median idle
            per_round = [rs[0][2]["p99_us"] / max(median(idle_p99), 1)]
        else:
            per_round = [r[2]["p99_us"] / max(i, 1)
                         for r, i in zip(rs, idle_p99)]
        ratios[name] = median(per_round)
        statuses = sum((Counter(st) for _, st, _ in rs), Counter())
        secs = [r[0] for r in rs if r[0] is not None]
        rows.append([name, str(len(rs)),
                     fmt(median(secs), 1) if secs else "-",
                     " ".join(f"{k}x{v}" for k, v in sorted(statuses.items()))
                     or "-",
                     fmt(median(r[2]["p50_us"] for r in rs)),
                     fmt(median(r[2]["p99_us"] for r in rs)),
                     fmt(ratios[name], 2),
                     " ".join(f"{x:.2f}" for x in per_round)])
    report.note(f"Blocking hook (time.sleep(1)): {n} concurrent requests, "
                "seconds until all answered; meanwhile a probe sends "
                f"{PROBE_RATE} requests/s on one keep-alive connection to the "
                "plain API of the same sluiced (probe.py; latency in µs). "
                "The default pool: rounds on a fresh sluiced each, medians; "
                "p99 vs idle is the median of each round's ratio to its own "
                "idle p99.\n")
    report.table(["pool", "rounds", "seconds", "statuses", "plain p50 µs",
                  "plain p99 µs", "p99 vs idle", "each round"], rows)
    for name in phases[1:]:
        r = ratios[name]
        v = report.verdict(r, 1.2, False,
                           f"plain p99 during blocking ({name})", "x idle")
        report.note(f"target: plain p99 during the blocking burst ({name}) "
                    f"{r:.2f}x idle (<= 1.2: {v})")
    report.note("")


def async_burst(ctx, target):
    """1,000 async hooks at once, on a pool grown to its 16 workers first
    (by a burst on the sleeping hook, not recorded): 1,000 calls need 16
    workers of 64 slots, and what is measured is a worker's concurrency,
    not growth (which the blocking scenario measures)."""
    load.burst(target.port, "/sleep/64B", 64, timeout=120.0)
    n = 1000
    secs, statuses = load.burst(target.port, "/async/64B", n, timeout=60.0)
    v = report.verdict(secs, 2.0, False, "1,000 async hooks", " s")
    report.note(f"Async hook (await asyncio.sleep(1)): {n} concurrent "
                f"requests answered in {secs:.2f} s, statuses "
                f"{' '.join(f'{k}x{v}' for k, v in sorted(statuses.items()))}"
                f"; {len(workers_of(target))} workers after. target <= 2 s: "
                f"{v}\n")


def _reason(text):
    """The first line of a failed start, and the log lines that say why."""
    lines = text.splitlines()
    why = [ln for ln in lines[1:] if " warn " in ln or " error " in ln]
    return "\n  ".join(lines[:1] + (why or lines[-3:]))


def unavailable(ctx):
    if not os.access(ctx.sluiced, os.X_OK):
        return f"{ctx.sluiced} is not built"
    worker = os.path.join(os.path.dirname(ctx.sluiced), WORKER_EXE)
    if not os.access(worker, os.X_OK):
        return f"{worker} is not built"
    return None


def run_noop(ctx):
    """Only the cost of a no-op hook visit: the quick loop for work on the
    hooked path (`make bench BENCH_ARGS="--only noop"`)."""
    report.section("Python middleware: the no-op hook visit")
    why = unavailable(ctx)
    if why:
        report.skipped(why)
        return
    target = start(ctx, "default", 2, 16)
    try:
        time.sleep(1.0)
        noop_cost(ctx, target)
        process_round_trip(ctx)
        with_halt_polling(ctx, target)
    finally:
        ctx.servers.stop(target)


def run(ctx):
    report.section("Python middleware (issue 3)")
    why = unavailable(ctx)
    if why:
        report.skipped(why)
        return
    started = []
    try:
        try:
            default = start(ctx, "default", 2, 16)
            started.append(default)
        except RuntimeError as e:
            report.skipped("sluiced does not run hooks yet: "
                           + _reason(str(e)))
            return
        time.sleep(1.0)
        rss_rows = [worker_rss(default, "fresh, after start")]
        noop_cost(ctx, default)
        process_round_trip(ctx)
        with_halt_polling(ctx, default)
        one = start(ctx, "one", 1, 1)
        started.append(one)
        two = start(ctx, "two", 2, 2)
        started.append(two)
        cpu_scaling(ctx, one, two)
        ctx.servers.stop(two)
        started.remove(two)
        blocking(ctx, one)
        async_burst(ctx, default)
        time.sleep(1.0)
        rss_rows.append(worker_rss(default, "idle, after the runs above"))
        rss_rows.append(worker_rss(one, "one-worker pool, idle"))
        ctx.servers.stop(one)
        started.remove(one)
        sync = start(ctx, "sync", 1, 1, rules="hooks-sync.yaml")
        started.append(sync)
        time.sleep(1.0)
        rss_rows.append(worker_rss(sync, "sync hooks only (no asyncio)"))
        report.note("RSS of idle sluice-worker processes (median over the "
                    "pool; PSS shares common pages among workers). All "
                    "rows but the last serve an async hook too, so their "
                    "workers have loaded asyncio:\n")
        report.table(["when", "workers", "RSS MiB", "PSS MiB"], rss_rows)
        for row, label in ((rss_rows[0], "idle worker RSS, async hooks"),
                           (rss_rows[-1], "idle worker RSS, sync hooks")):
            if row[2] != "-":
                v = report.verdict(float(row[2]), 15, False, label, " MiB")
                report.note(f"target: {label} {row[2]} MiB (<= 15: {v})")
    finally:
        for t in started:
            ctx.servers.stop(t)
