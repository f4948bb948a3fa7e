"""Load generators: wrk for throughput and latency, a small asyncio client
for bursts of slow requests, and a plain socket client that opens idle
keep-alive connections."""

import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time

import procs

HERE = os.path.dirname(os.path.abspath(__file__))
WRK_SCRIPT = os.path.join(HERE, "wrk_report.lua")


def wrk(url, duration, threads=2, conns=64, watch=None, timeout_s=5):
    """Run wrk once against url. watch maps a label to a PID whose process
    tree's CPU is measured over the run. Returns a dict: wrk's summary
    (requests, bytes, p50_us, p99_us, errors...) plus rps, cpu_s[label],
    cpu_us_per_req[label], wrk_cpu_s and machine_busy_s."""
    watch = watch or {}
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s",
            f"--timeout={timeout_s}s", "--latency", "-s", WRK_SCRIPT, url]
    cpu0 = {k: procs.tree_cpu_seconds(p) for k, p in watch.items()}
    busy0 = procs.machine_busy_seconds()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        out = proc.stdout.read().decode(errors="replace")
        proc.stdout.close()
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    busy1 = procs.machine_busy_seconds()
    cpu1 = {k: procs.tree_cpu_seconds(p) for k, p in watch.items()}

    line = next((ln for ln in out.splitlines() if ln.startswith("WRK_JSON ")),
                None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk {url} failed ({proc.returncode}): "
                           f"{out.strip()[-400:]}")
    res = json.loads(line[len("WRK_JSON "):])
    secs = res["duration_us"] / 1e6
    n = max(res["requests"], 1)
    res["rps"] = res["requests"] / secs
    res["mbps"] = res["bytes"] / secs / 1e6
    res["errors"] = sum(res[k] for k in ("connect_errors", "read_errors",
                                         "write_errors", "status_errors",
                                         "timeouts"))
    res["cpu_s"] = {k: cpu1[k] - cpu0[k] for k in watch}
    res["cpu_us_per_req"] = {k: v * 1e6 / n for k, v in res["cpu_s"].items()}
    res["wrk_cpu_s"] = usage.ru_utime + usage.ru_stime
    res["machine_busy_s"] = busy1 - busy0
    res["wall_s"] = secs
    return res


def probe(port, path, rate, duration):
    """Fixed-rate latency probe (probe.py) in its own process: returns
    {n, errors, p50_us, p99_us, max_us}."""
    out = subprocess.run([sys.executable, os.path.join(HERE, "probe.py"),
                          str(port), path, str(rate), str(duration)],
                         capture_output=True, text=True,
                         timeout=duration + 30)
    if out.returncode != 0:
        raise RuntimeError(f"probe failed: {out.stderr.strip()[-300:]}")
    return json.loads(out.stdout)


def raise_nofile(want):
    """Raise RLIMIT_NOFILE to want (the hard limit too when privileged);
    servers started afterwards inherit it. Returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
    except (ValueError, OSError):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ---- bursts of slow requests ------------------------------------------------

async def _one_request(port, path, host, timeout):
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n"
                     f"Connection: close\r\n\r\n".encode())
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    head = data.split(b"\r\n", 1)[0].split()
    return int(head[1]) if len(head) >= 2 and head[1].isdigit() else 0


async def _burst(port, path, n, host, timeout):
    async def timed():
        try:
            status = await _one_request(port, path, host, timeout)
        except (OSError, asyncio.TimeoutError):
            status = 0
        return status, time.monotonic()

    start = time.monotonic()
    results = await asyncio.gather(*(timed() for _ in range(n)))
    statuses = {}
    for status, _ in results:
        statuses[status] = statuses.get(status, 0) + 1
    last = max(t for _, t in results)
    return last - start, statuses


def burst(port, path, n, host="bench", timeout=120.0):
    """Send n concurrent requests (one connection each), wait for all.
    Returns (seconds until the last answer, {status: count}); status 0 means
    no answer (refused, reset or timed out)."""
    raise_nofile(n + 256)
    return asyncio.run(_burst(port, path, n, host, timeout))


# ---- bulk transfers --------------------------------------------------------

def _bulk_conn(sock, path, deadline, buf, out):
    """GET path repeatedly on sock until deadline; add body bytes and
    complete responses to out (a dict shared under the GIL)."""
    req = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    view = memoryview(buf)
    while time.monotonic() < deadline:
        sock.sendall(req)
        head = b""
        while b"\r\n\r\n" not in head:
            n = sock.recv_into(view)
            if not n:
                raise ConnectionError("closed before the head")
            head += bytes(view[:n])
        head, body = head.split(b"\r\n\r\n", 1)
        length = next(int(v) for k, _, v in (ln.partition(b":") for ln in
                                             head.split(b"\r\n")[1:])
                      if k.strip().lower() == b"content-length")
        got = len(body)
        while got < length:
            n = sock.recv_into(view, min(len(buf), length - got))
            if not n:
                raise ConnectionError("closed mid-body")
            got += n
            out["bytes"] += n
            if time.monotonic() >= deadline:
                return
        out["bytes"] += len(body)
        out["responses"] += 1


def bulk(port, path, duration, conns=4, watch=None, warm_path="/64B"):
    """conns threads, each on its own keep-alive connection, fetch path
    back to back for duration seconds and read every body into one buffer.
    Each connection first gets warm_path (untimed), so that a proxy which
    hands a connection to a relay after its first answer is measured in the
    relay only. Returns bytes, responses, wall_s, mbps, errors and cpu_s
    for each watched PID tree, like wrk()."""
    watch = watch or {}
    socks = []
    try:
        for _ in range(conns):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            socks.append(s)
            s.sendall(f"GET {warm_path} HTTP/1.1\r\nHost: bench\r\n\r\n"
                      .encode())
            _read_response(s)
        out = {"bytes": 0, "responses": 0, "errors": 0}
        cpu0 = {k: procs.tree_cpu_seconds(p) for k, p in watch.items()}
        start = time.monotonic()
        deadline = start + duration

        def run(sock):
            try:
                _bulk_conn(sock, path, deadline, bytearray(1 << 20), out)
            except (OSError, ConnectionError, StopIteration):
                out["errors"] += 1

        threads = [threading.Thread(target=run, args=(s,)) for s in socks]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - start
        cpu1 = {k: procs.tree_cpu_seconds(p) for k, p in watch.items()}
    finally:
        close_all(socks)
    out["wall_s"] = wall
    out["mbps"] = out["bytes"] / wall / 1e6
    out["cpu_s"] = {k: cpu1[k] - cpu0[k] for k in watch}
    return out


# ---- idle keep-alive connections -------------------------------------------

def _read_response(sock):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        body += chunk
    return head.split(b" ", 2)[1]


def open_idle(port, n, path, host="bench"):
    """Open n keep-alive connections, make one request on each, leave them
    open. Returns the sockets (the caller closes them)."""
    raise_nofile(n + 256)
    socks = []
    req = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").encode()
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            socks.append(s)
            s.sendall(req)
            _read_response(s)
    except BaseException:
        close_all(socks)
        raise
    return socks


def close_all(socks):
    for s in socks:
        try:
            s.close()
        except OSError:
            pass
