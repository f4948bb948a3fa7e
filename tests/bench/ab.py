"""Compare builds of sluiced on the hooked path: the no-op hook and the
plain API, on one connection and at -c32, interleaved rounds, medians.

    /usr/bin/python3 tests/bench/ab.py BUILD_DIR BUILD_DIR... [--rounds N]

Figures on this kind of VM move by a third between runs; between builds
measured side by side in one run (every server up, rounds alternating)
they can be compared. Build the other side with `git worktree add`."""

import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile

import hooks
import procs
import targets


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("builds", nargs="+", help="directories holding sluiced "
                   "and sluice-worker")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--duration", type=int, default=2, help="seconds per run")
    return p.parse_args()


def measure(args, servers):
    """{(build, conns, path): [wrk result, ...]}"""
    results = {}
    for conns in (1, 32):
        threads = min(2, conns)
        for build, t in servers.items():  # warm-up, not recorded
            for path in ("/plain/64B", "/noop/64B"):
                hooks._wrk(t, path, 1, threads, conns)
        for rnd in range(args.rounds):
            order = list(servers.items())
            for build, t in order if rnd % 2 == 0 else order[::-1]:
                for path in ("/plain/64B", "/noop/64B"):
                    r = hooks._wrk(t, path, args.duration, threads, conns)
                    results.setdefault((build, conns, path), []).append(r)
    return results


def report(results):
    print(f"{'build':30} {'conns':>5} {'path':11} {'req/s':>8} "
          f"{'CPU µs':>8} {'sluiced':>8} {'p50 µs':>7}")
    for (build, conns, path), runs in sorted(results.items()):
        def med(fn):
            return statistics.median(fn(r) for r in runs)
        print(f"{build[-30:]:30} {conns:5} {path:11} "
              f"{med(lambda r: r['rps']):8.0f} "
              f"{med(lambda r: r['cpu_us_per_req']['all']):8.1f} "
              f"{med(lambda r: r['sluiced_us_per_req']):8.1f} "
              f"{med(lambda r: r['p50_us']):7.0f}")


def main():
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    tmp = tempfile.mkdtemp(prefix="sluice-ab-")
    spawner = procs.Spawner(tmp)
    servers = targets.Servers(tmp, spawner)
    try:
        servers.write_docroot(["64B"])

        class Ctx:
            pass
        ctx = Ctx()
        ctx.servers, ctx.origin = servers, servers.origin()
        started = {}
        for build in args.builds:
            os.environ["SLUICE_BUILD"] = os.path.abspath(build)
            started[build] = hooks.start(ctx, f"ab{len(started)}", 2, 2)
        report(measure(args, started))
    finally:
        spawner.stop_all()
        servers.remove_pins()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
