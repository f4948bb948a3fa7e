"""Plain proxying (issue 2): wrk against the origin directly, nginx, HAProxy
(http, and tcp with forced splice) and sluiced, interleaved rounds, medians;
then the memory each proxy holds per idle keep-alive client connection."""

import os
import time

import load
import procs
import report
from report import fmt, median
from targets import http_status

SIZES = ["64B", "4KiB", "1MiB"]
IDLE_CONNS = 5000


def conns_for(size):
    return 32 if size == "1MiB" else 64


def start_targets(ctx):
    """The anchors and sluiced; a missing one is skipped with a note."""
    s, origin = ctx.servers, ctx.origin
    targets = [origin]
    starters = [("nginx", lambda: s.nginx_proxy(origin)),
                ("haproxy-http", lambda: s.haproxy(origin, "http")),
                ("haproxy-tcp-splice", lambda: s.haproxy(origin,
                                                         "tcp-splice")),
                ("sluiced", lambda: start_sluiced(ctx))]
    for name, start in starters:
        try:
            targets.append(start())
        except (RuntimeError, OSError) as e:
            report.skipped(f"{name}: {str(e).splitlines()[0]}")
    return targets


def start_sluiced(ctx):
    binary = ctx.sluiced
    if not os.access(binary, os.X_OK):
        raise RuntimeError(f"{binary} is not built")
    t = ctx.servers.sluiced("sluiced-plain", "plain.yaml",
                            origin_port=ctx.origin.port)
    status = http_status(t.port, "/64B")
    if status != 200:
        ctx.servers.stop(t)
        raise RuntimeError(f"sluiced does not proxy yet (GET /64B -> "
                           f"{status or 'no answer'})")
    t.name = "sluiced"
    return t


def measure(ctx, target, size, duration):
    watch = {"own": target.pid}
    if target is not ctx.origin:
        watch["origin"] = ctx.origin.pid
    res = load.wrk(target.url(f"/{size}"), duration, threads=2,
                   conns=conns_for(size), watch=watch)
    res["other_cpu"] = max(0.0, res["machine_busy_s"] - res["wrk_cpu_s"]
                           - sum(res["cpu_s"].values())) / res["wall_s"]
    return res


def run_rounds(ctx, targets):
    results = {(t.name, size): [] for t in targets for size in SIZES}
    # Warm-up: connections, caches and upstream pools, not recorded.
    for size in SIZES if ctx.warmup else ():
        for t in targets:
            measure(ctx, t, size, 1)
    for rnd in range(ctx.rounds):
        for size in SIZES:
            order = targets[rnd % len(targets):] + targets[:rnd % len(targets)]
            for t in order:
                results[(t.name, size)].append(measure(ctx, t, size,
                                                       ctx.duration))
        print(f"  round {rnd + 1}/{ctx.rounds} done", flush=True)
    return results


def summarize(targets, results):
    rows = []
    for size in SIZES:
        direct = results[("direct", size)]
        for t in targets:
            runs = results[(t.name, size)]
            ratios = [r["rps"] / d["rps"] for r, d in zip(runs, direct)]
            errors = sum(r["errors"] for r in runs)
            rows.append([
                size, t.name,
                fmt(median(r["rps"] for r in runs)),
                fmt(median(ratios), 2),
                fmt(median(r["p99_us"] for r in runs) / 1000, 2),
                fmt(median(r["cpu_us_per_req"]["own"] for r in runs), 1),
                fmt(median(r["cpu_us_per_req"].get("origin") for r in runs),
                    1),
                fmt(median(r["mbps"] for r in runs)),
                fmt(median(r["other_cpu"] for r in runs) * 100),
                str(errors)])
    report.table(["size", "target", "req/s", "ratio", "p99 ms",
                  "own CPU µs/req", "origin CPU µs/req", "MB/s",
                  "other CPU %", "errors"], rows)
    return rows


def _ratio(results, name, size):
    runs, direct = results[(name, size)], results[("direct", size)]
    return median(r["rps"] / d["rps"] for r, d in zip(runs, direct))


def targets_line(results):
    if not results.get(("sluiced", "64B")):
        return
    ratio = _ratio(results, "sluiced", "64B")
    cpu = median(r["cpu_us_per_req"]["own"]
                 for r in results[("sluiced", "64B")])
    v_ratio = report.verdict(ratio, 0.6, label="plain 64B ratio to direct")
    v_cpu = report.verdict(cpu, 18, False, "plain 64B sluiced CPU",
                           " µs/req")
    report.note(f"targets: sluiced 64B ratio {ratio:.2f} (>= 0.6: "
                f"{v_ratio}), sluiced CPU {cpu:.1f} µs/req (< 18: {v_cpu})")
    anchors = {n for n, _ in results} - {"sluiced", "direct"}
    for size in SIZES:
        if not anchors:
            break
        best = max(anchors, key=lambda n: _ratio(results, n, size))
        p99 = {n: median(r["p99_us"] for r in results[(n, size)])
               for n in anchors | {"sluiced"}}
        lowest = min(anchors, key=lambda n: p99[n])
        report.note(f"  {size}: ratio {_ratio(results, 'sluiced', size):.2f}"
                    f" vs best anchor {_ratio(results, best, size):.2f} "
                    f"({best}); p99 {p99['sluiced'] / 1000:.2f} ms vs lowest "
                    f"{p99[lowest] / 1000:.2f} ms ({lowest})")


def idle_rss(ctx, targets):
    """KiB per idle keep-alive connection over each proxy's idle baseline."""
    n = ctx.idle_conns
    rows = []
    for t in targets:
        if t is ctx.origin:
            continue
        base = sum(procs.rss_kib(p) for p in procs.descendants(t.pid))
        try:
            socks = load.open_idle(t.port, n, "/64B")
        except (OSError, ConnectionError) as e:
            rows.append([t.name, fmt(base), "-", "-", f"failed: {e}"])
            continue
        try:
            time.sleep(1.0)
            loaded = sum(procs.rss_kib(p) for p in procs.descendants(t.pid))
        finally:
            load.close_all(socks)
        rows.append([t.name, fmt(base), fmt(loaded),
                     fmt((loaded - base) / n, 2), ""])
        time.sleep(0.5)
    report.note(f"RSS of each proxy (all its processes) idle, then with {n} "
                "idle keep-alive client connections, each after one "
                "request:\n")
    report.table(["target", "idle RSS KiB", f"RSS KiB with {n}",
                  "KiB per connection", "note"], rows)
    for row in rows:
        if row[0] == "sluiced" and row[3] != "-":
            per = float(row[3].replace(",", ""))
            v = report.verdict(per, 10, False, "idle connection memory",
                               " KiB")
            report.note(f"target: sluiced {per:.2f} KiB per idle connection "
                        f"(target < 10: {v})")


def run(ctx):
    report.section("Plain proxy (issue 2)")
    report.note(f"wrk -t2 -c64 (-c32 for 1MiB), {ctx.duration} s per "
                f"round, {ctx.rounds} interleaved rounds, medians. ratio = "
                "req/s over direct in the same round; own CPU = the "
                "target's processes' utime+stime per request; other CPU = "
                "machine CPU not spent by wrk, the origin or the target "
                "(loopback softirq, other tenants), in % of one core.\n")
    targets = start_targets(ctx)
    try:
        results = run_rounds(ctx, targets)
        summarize(targets, results)
        targets_line(results)
        idle_rss(ctx, targets)
    finally:
        for t in targets:
            if t is not ctx.origin:
                ctx.servers.stop(t)
