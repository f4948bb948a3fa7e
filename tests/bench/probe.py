#!/usr/bin/python3
"""Latency probe at a fixed rate: GET PATH on one keep-alive connection
every 1/RATE seconds for DURATION seconds, and print one JSON line with the
latency percentiles in µs.

    probe.py PORT PATH RATE DURATION

Unlike wrk (a closed loop that saturates the machine, so its p99 is mostly
queueing behind itself), a fixed-rate probe sees the latency a light client
gets while something else loads the gateway. It runs as its own process so
that the load generator beside it shares no interpreter lock with it. A
request that takes longer than the interval delays the next one (no
coordinated-omission correction: the bench reads the p99, not the tail past
it)."""

import json
import socket
import sys
import time


def read_response(sock, buf):
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        rest += chunk
    return head.split(b" ", 2)[1], rest[length:]


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1,
                             int(q / 100 * len(sorted_values)))]


def main():
    port, path = int(sys.argv[1]), sys.argv[2]
    rate, duration = float(sys.argv[3]), float(sys.argv[4])
    req = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    lat, errors, sock, buf = [], 0, None, b""
    interval = 1.0 / rate
    start = time.monotonic()
    next_at = start
    while time.monotonic() - start < duration:
        now = time.monotonic()
        if now < next_at:
            time.sleep(next_at - now)
        next_at += interval
        try:
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", port),
                                                timeout=10)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                buf = b""
            t0 = time.perf_counter()
            sock.sendall(req)
            status, buf = read_response(sock, buf)
            lat.append((time.perf_counter() - t0) * 1e6)
            if status != b"200":
                errors += 1
        except (OSError, ConnectionError):
            errors += 1
            if sock:
                sock.close()
            sock = None
    if sock:
        sock.close()
    lat.sort()
    print(json.dumps({"n": len(lat), "errors": errors,
                      "p50_us": percentile(lat, 50),
                      "p99_us": percentile(lat, 99),
                      "max_us": lat[-1] if lat else None}))


if __name__ == "__main__":
    main()
