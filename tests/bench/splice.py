"""Splicing (issue 4): large responses through sluiced on an API with its own
listener (each connection is handed to a relay after its first answer) in
each bpf.splice mode, beside HAProxy's forced kernel splice and the origin
directly: throughput and the CPU each proxy spends per GiB moved."""

import json
import os
import socket

import load
import procs
import report
from report import fmt, median
from targets import SIZES as BYTES, http_get_length

SIZES = ["1MiB", "64MiB"]
CONNS = 4
MODES = ["copy", "pipe", "sockmap"]
GIB = 1 << 30


def start_sluiced(ctx, mode):
    t = ctx.servers.sluiced(f"sluiced-{mode}", "splice.yaml",
                            origin_port=ctx.origin.port, splice=mode,
                            api_port="PORT", admin_port="PORT")
    t.port = t.extra["api_port"]
    if not procs.wait_port(t.port, t.proc, 10):
        ctx.servers.stop(t)
        raise RuntimeError(f"sluiced ({mode}) never listened on the API's "
                           "own listener")
    status, got = http_get_length(t.port, "/1MiB")
    if status != 200 or got != BYTES["1MiB"]:
        ctx.servers.stop(t)
        raise RuntimeError(f"sluiced ({mode}): GET /1MiB -> status "
                           f"{status or 'none'}, {got} of {BYTES['1MiB']} "
                           "body bytes")
    t.name = f"sluiced-{mode}"
    return t


def admin_status(target):
    """sluiced's /status as a dict, or None."""
    try:
        with socket.create_connection(("127.0.0.1",
                                       target.extra["admin_port"]),
                                      timeout=3) as s:
            s.sendall(b"GET /status HTTP/1.1\r\nHost: bench\r\n"
                      b"Connection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return json.loads(data.split(b"\r\n\r\n", 1)[1])
    except (OSError, ValueError, IndexError):
        return None


def mode_note(target):
    st = admin_status(target)
    if not st or not isinstance(st.get("bpf"), dict):
        return f"{target.name}: /status has no bpf section"
    b = st["bpf"]
    spliced = next((a.get("spliced") for a in st.get("apis", [])
                    if a.get("name") == "bulk"), None)
    return (f"{target.name}: bpf loaded={b.get('loaded')} "
            f"splice={b.get('splice')} reason={b.get('reason')} "
            f"api spliced={spliced} "
            f"spliced bytes={(b.get('spliced_bytes') or {}).get('bulk')}")


def measure(ctx, target, size):
    watch = {"own": target.pid}
    if target is not ctx.origin:
        watch["origin"] = ctx.origin.pid
    res = load.bulk(target.port, f"/{size}", ctx.duration, conns=CONNS,
                    watch=watch)
    gib = max(res["bytes"], 1) / GIB
    res["cpu_s_per_gib"] = {k: v / gib for k, v in res["cpu_s"].items()}
    return res


def run(ctx):
    report.section("Splicing (issue 4)")
    if not os.access(ctx.sluiced, os.X_OK):
        report.skipped(f"{ctx.sluiced} is not built")
        return
    targets = [ctx.origin]
    try:
        try:
            targets.append(ctx.servers.haproxy(ctx.origin, "tcp-splice"))
        except RuntimeError as e:
            report.skipped(f"haproxy-tcp-splice: {str(e).splitlines()[0]}")
        for mode in MODES:
            try:
                targets.append(start_sluiced(ctx, mode))
            except RuntimeError as e:
                report.skipped(" ".join(str(e).split()[:40]))
        if not any(t.name.startswith("sluiced") for t in targets):
            return
        results = rounds(ctx, targets)
        summarize(ctx, targets, results)
        for t in targets:
            if t.name.startswith("sluiced"):
                report.note(mode_note(t))
    finally:
        for t in targets:
            if t is not ctx.origin:
                ctx.servers.stop(t)


def rounds(ctx, targets):
    results = {(t.name, s): [] for t in targets for s in SIZES}
    for size in SIZES if ctx.warmup else ():
        for t in targets:
            load.bulk(t.port, f"/{size}", 1, conns=CONNS)
    for rnd in range(ctx.rounds):
        for size in SIZES:
            k = rnd % len(targets)
            for t in targets[k:] + targets[:k]:
                results[(t.name, size)].append(measure(ctx, t, size))
        print(f"  round {rnd + 1}/{ctx.rounds} done", flush=True)
    return results


def summarize(ctx, targets, results):
    report.note(f"{CONNS} keep-alive connections fetching back to back "
                "(load.bulk: one small request first on each, untimed), "
                f"{ctx.duration} s per round, {ctx.rounds} "
                "interleaved rounds, medians. The sluiced API has its own "
                "listener: after its first answer, each connection is "
                "relayed in the mode named. CPU s/GiB = the process's "
                "utime+stime per GiB of response bytes.\n")
    rows = []
    for size in SIZES:
        direct = results[("direct", size)]
        for t in targets:
            runs = results[(t.name, size)]
            rows.append([size, t.name, fmt(median(r["mbps"] for r in runs)),
                         fmt(median(r["mbps"] / d["mbps"] for r, d in
                                    zip(runs, direct)), 2),
                         fmt(median(r["cpu_s_per_gib"]["own"]
                                    for r in runs), 3),
                         fmt(median(r["cpu_s_per_gib"].get("origin")
                                    for r in runs), 3),
                         fmt(median(r["responses"] for r in runs)),
                         str(sum(r["errors"] for r in runs))])
    report.table(["size", "target", "MB/s", "ratio", "own CPU s/GiB",
                  "origin CPU s/GiB", "responses", "errors"], rows)
    for t in targets:
        if any(r["bytes"] == 0 for s in SIZES
               for r in results[(t.name, s)]):
            report.note(f"{t.name}: some rounds completed no response at all "
                        "(the connections stalled): its figures are not "
                        "throughput")
    for size in SIZES:
        sock = results.get(("sluiced-sockmap", size))
        copy = results.get(("sluiced-copy", size))
        if not sock:
            continue
        ratio = median(r["mbps"] / d["mbps"] for r, d in
                       zip(sock, results[("direct", size)]))
        v = report.verdict(ratio, 0.9, label=f"sockmap {size} vs direct",
                           unit="x")
        line = f"targets {size}: sockmap {ratio:.2f}x direct (>= 0.9: {v})"
        if copy:
            cpu = (median(r["cpu_s_per_gib"]["own"] for r in sock) /
                   max(median(r["cpu_s_per_gib"]["own"] for r in copy),
                       1e-9))
            v = report.verdict(cpu, 0.1, False,
                               f"sockmap {size} CPU/GiB vs copy", "x")
            line += f", CPU/GiB {cpu:.2f}x copy's (<= 0.1: {v})"
        report.note(line)
