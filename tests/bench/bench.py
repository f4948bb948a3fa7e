#!/usr/bin/python3
"""make bench: sluice against the direct origin, nginx and HAProxy.

Sections (each skips itself, with the reason, when its part of sluiced is
not there yet):
  plain   issue 2: req/s, p99, CPU per request, ratio to direct; RSS per
          idle keep-alive connection
  hooks   issue 3: no-op hook cost, CPU-bound hooks on 1 vs 2 workers, the
          blocking scenario, 1,000 async hooks, idle worker RSS
  splice  issue 4: 1 MiB and 64 MiB responses through whole-connection
          splicing in copy, pipe and sockmap modes: MB/s and CPU s per GiB

Every process started here runs in its own process group and is killed on
any exit (including ^C); the temporary directory and BPF pins are removed.
The bench never fails on a figure: it prints them, with the targets beside.

Run as root from the repository root: SLUICE_BUILD=build tests/bench/bench.py
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

import hooks
import load
import plain
import procs
import report
import splice
import targets

# "noop" is a part of "hooks", for iterating on the hooked path; a full
# run leaves it out.
SECTIONS = {"plain": plain.run, "hooks": hooks.run, "splice": splice.run,
            "noop": hooks.run_noop}
FULL_RUN = ["plain", "hooks", "splice"]


class Context:
    """What every section needs: options, the Servers factory, the origin."""

    def __init__(self, args, servers, origin):
        self.args = args
        self.servers = servers
        self.origin = origin
        self.quick = args.quick
        self.rounds = args.rounds or (1 if args.quick else 3)
        self.duration = args.duration or (2 if args.quick else 3)
        # An unrecorded 1 s run per target and size first (connections,
        # caches, upstream pools); --quick skips it to stay under 2 minutes.
        self.warmup = not args.quick
        self.idle_conns = plain.IDLE_CONNS
        self.blocking_n = 16 if args.quick else 64
        self.sluiced = targets.sluiced_binary()


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="one short round per figure (under 2 minutes)")
    p.add_argument("--only", action="append", choices=sorted(SECTIONS),
                   help="run only this section (repeatable)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (3)")
    p.add_argument("--duration", type=int, help="seconds per wrk run (3)")
    p.add_argument("--json", metavar="PATH",
                   help="also write every table as JSON to PATH")
    p.add_argument("--markdown", metavar="PATH",
                   help="also write the results as Markdown to PATH")
    return p.parse_args()


def check_tools():
    missing = [t for t in ("wrk", "nginx", "haproxy") if not shutil.which(t)]
    if missing:
        print(f"bench: missing {', '.join(missing)}: run 'sudo make deps'",
              file=sys.stderr)
        sys.exit(2)


def header(args):
    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty"],
                                capture_output=True, text=True,
                                cwd=targets.REPO).stdout.strip()
    except OSError:
        commit = "?"
    try:
        version = subprocess.run([targets.sluiced_binary(), "-V"],
                                 capture_output=True, text=True,
                                 timeout=10).stdout.split("\n")[0]
    except (OSError, subprocess.TimeoutExpired):
        version = "not built"
    busy0 = procs.machine_busy_seconds()
    time.sleep(2.0)
    busy = (procs.machine_busy_seconds() - busy0) / 2.0
    now = datetime.datetime.now(datetime.timezone.utc)
    print(f"# sluice bench, {now:%Y-%m-%d %H:%M} UTC")
    text = (f"commit {commit}, {targets.sluiced_binary()} ({version}), "
            f"kernel {platform.release()}, {os.cpu_count()} CPUs, load "
            f"average {os.getloadavg()[0]:.2f} at start, {busy * 100:.0f}% "
            "of one core busy before start, "
            f"{'--quick' if args.quick else 'full run'}")
    print(f"\n{text}", flush=True)
    report.REPORT.update(date=f"{now:%Y-%m-%d %H:%M} UTC", commit=commit,
                         header=text, busy_before=busy)


def run_section(name, ctx):
    """Run one section; a crash is reported and the next section runs."""
    try:
        SECTIONS[name](ctx)
        return 0
    except (RuntimeError, OSError, ValueError) as e:
        traceback.print_exc()
        report.note(f"section {name} failed: {e}")
        return 1


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main():
    args = parse_args()
    check_tools()
    # SIGINT too: a shell starting the bench in the background leaves it
    # ignored, and the cleanup must run however the bench is stopped.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    load.raise_nofile(20000)
    header(args)
    started = time.monotonic()

    failed = 0
    tmp = tempfile.mkdtemp(prefix="sluice-bench-")
    spawner = procs.Spawner(tmp)
    servers = targets.Servers(tmp, spawner)
    try:
        servers.write_docroot(targets.SIZES)
        ctx = Context(args, servers, servers.origin())
        for name in args.only or FULL_RUN:
            failed += run_section(name, ctx)
        report.targets()
    except KeyboardInterrupt:
        print("\nbench: interrupted, stopping everything", file=sys.stderr)
        return 130
    finally:
        spawner.stop_all()
        servers.remove_pins()
        shutil.rmtree(tmp, ignore_errors=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report.REPORT, f, indent=1)
        if args.markdown:
            with open(args.markdown, "w") as f:
                f.write(report.markdown())
    print(f"\nbench: done in {time.monotonic() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
