"""Processes the bench starts, and what they cost.

Every server the bench starts goes through a Spawner: each runs in its own
session (so its process group holds its workers), its output goes to a log
file in the bench's temporary directory, and Spawner.stop_all() kills every
group and every descendant that left its group, on any exit path.

CPU is read from /proc/PID/stat: utime + stime of a process and of every live
descendant, plus cutime + cstime (children already reaped), so workers that
exit or are recycled mid-round still count.
"""

import errno
import os
import signal
import socket
import subprocess
import sys
import time

# tests/, for freeport (shared with the test suites)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from freeport import free_port  # noqa: E402,F401 (procs.free_port)

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def _read_stat(pid):
    """(ppid, starttime, cpu ticks incl. reaped children) or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last.
    fields = data[data.rindex(b")") + 2:].split()
    ppid = int(fields[1])
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    return ppid, int(fields[19]), ticks


def _all_stats():
    stats = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _read_stat(int(name))
            if st:
                stats[int(name)] = st
    return stats


def descendants(root, stats=None):
    """PIDs of root and all its live descendants."""
    stats = stats or _all_stats()
    children = {}
    for pid, (ppid, _, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            out.append(pid)
            todo.extend(children.get(pid, ()))
    return out


def tree_cpu_seconds(root):
    """CPU seconds used so far by root and its descendants, live or reaped."""
    stats = _all_stats()
    ticks = sum(stats[p][2] for p in descendants(root, stats))
    return ticks / CLK_TCK


def own_cpu_seconds(pid):
    """CPU seconds of one process alone (all its threads, no children)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return 0.0
    fields = data[data.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid):
    """Resident set size of one process, KiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE_KIB
    except OSError:
        return 0


def pss_kib(pid):
    """Proportional set size (shared pages divided among their users)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def child_pids(pid, exe_name=None):
    """Live direct children of pid, optionally only those running exe_name."""
    stats = _all_stats()
    out = []
    for child, (ppid, _, _) in stats.items():
        if ppid != pid:
            continue
        if exe_name:
            try:
                exe = os.readlink(f"/proc/{child}/exe")
            except OSError:
                continue
            if os.path.basename(exe) != exe_name:
                continue
        out.append(child)
    return sorted(out)


def machine_busy_seconds():
    """CPU seconds spent busy by the whole machine (all cores) since boot."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


def wait_port(port, proc=None, timeout=10.0):
    """Wait until something accepts on 127.0.0.1:port; False on timeout or
    when proc exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class Spawner:
    """Starts servers in their own sessions and kills them all at the end."""

    def __init__(self, logdir):
        self.logdir = logdir
        self.procs = []  # (Popen, log path)

    def start(self, name, argv, env=None):
        log = os.path.join(self.logdir, f"{name}.log")
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, env=env)
        proc.bench_name = name
        proc.bench_log = log
        self.procs.append(proc)
        return proc

    def log_tail(self, proc, lines=15):
        try:
            with open(proc.bench_log, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def stop(self, proc, grace=3.0):
        """TERM the group, wait, then KILL the group and any descendant that
        left it. Only processes this bench started are touched: the set is
        the tree under proc, snapshotted with start times before signalling."""
        if proc not in self.procs:
            return
        self.procs.remove(proc)
        stats = _all_stats()
        tree = {p: stats[p][1] for p in descendants(proc.pid, stats)}
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        _signal_group(proc.pid, signal.SIGKILL)
        for pid, start in tree.items():
            st = _read_stat(pid)
            if st and st[1] == start and pid != proc.pid:
                _signal_pid(pid, signal.SIGKILL)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass

    def stop_all(self):
        for proc in list(reversed(self.procs)):
            self.stop(proc)


def _signal_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except OSError as e:
        if e.errno != errno.ESRCH:
            raise


def _signal_pid(pid, sig):
    try:
        os.kill(pid, sig)
    except OSError as e:
        if e.errno != errno.ESRCH:
            raise
