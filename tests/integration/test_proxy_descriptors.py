"""Nothing leaks when a side vanishes mid-exchange: the descriptor count
of sluiced (/proc/PID/fd) returns to its baseline."""

import socket
import time

import pytest

from conftest import SLOW, read_response, wait_until


@pytest.fixture
def gw(gateway, upstream):
    # Short idle timeouts, so pooled upstream connections and idle clients
    # cannot hide a leak or fake one.
    return gateway({"limits": {"idle_timeout_ms": 1000},
                    "apis": [{"name": "a", "listen_path": "/",
                              "upstream": upstream.url}]})


def settled_count(gw):
    """The fd count once it has stopped moving for a little while."""
    last, since = gw.fd_count(), time.time()
    deadline = time.time() + 5 * SLOW
    while time.time() < deadline:
        time.sleep(0.1)
        now = gw.fd_count()
        if now != last:
            last, since = now, time.time()
        elif time.time() - since > 0.5:
            break
    return last


def assert_back_to(gw, baseline):
    """The count settles at the baseline. One low sample is not enough: a
    connection the test has closed may still wait in the listen backlog,
    and sluiced opens it when it accepts it."""
    count = wait_until(lambda: settled_count(gw) <= baseline, timeout=6.0,
                       step=0.1)
    assert count, "fd count %d, baseline %d: %s" % (
        gw.fd_count(), baseline, sorted(fd_targets(gw)))


def fd_targets(gw):
    import os
    out = []
    base = "/proc/%d/fd" % gw.pid
    for fd in os.listdir(base):
        try:
            out.append(os.readlink(os.path.join(base, fd)))
        except OSError:
            pass
    return out


def test_client_abort_mid_body_leaks_nothing(gw, upstream):
    baseline = settled_count(gw)
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", gw.port),
                                     timeout=10 * SLOW)
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: 10000000\r\n\r\n")
        s.sendall(b"x" * (1024 * 1024))
        s.close()
    # The heads went on to the upstream while the bodies streamed: an
    # upstream connection was opened for them and must be gone too.
    assert wait_until(lambda: upstream.connections >= 1)
    assert_back_to(gw, baseline)
    # And it still serves.
    status, _, _ = gw.get("/echo")
    assert status == 200


def test_client_reset_mid_body_leaks_nothing(gw, upstream):
    import struct
    baseline = settled_count(gw)
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", gw.port),
                                     timeout=10 * SLOW)
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n100000\r\n")
        s.sendall(b"y" * 300000)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                     struct.pack("ii", 1, 0))
        s.close()
    assert_back_to(gw, baseline)


def test_client_abort_mid_response_leaks_nothing(gw, upstream):
    baseline = settled_count(gw)
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", gw.port),
                                     timeout=10 * SLOW)
        s.sendall(b"GET /bytes/20000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        s.recv(65536)
        s.close()
    assert_back_to(gw, baseline)


def test_upstream_reset_mid_response_leaks_nothing(gw, upstream):
    baseline = settled_count(gw)
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", gw.port),
                                     timeout=10 * SLOW)
        try:
            s.sendall(b"GET /reset-mid/200000 HTTP/1.1\r\nHost: x\r\n\r\n")
            resp, _ = read_response(s)
            assert resp.status == 200 and not resp.complete
        finally:
            s.close()
    assert_back_to(gw, baseline)


def test_upstream_errors_leak_nothing(gw, upstream):
    baseline = settled_count(gw)
    for path in ("/reset", "/close", "/reset", "/close"):
        status, _, _ = gw.get(path)
        assert status == 502
    assert_back_to(gw, baseline)


def test_client_errors_leak_nothing(gw, upstream):
    baseline = settled_count(gw)
    for data in (b"GET /echo HTTP/1.1\r\nHost: x\r\nX: a\x00\r\n\r\n",
                 b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n",
                 b"NOT HTTP AT ALL\r\n\r\n",
                 b"GET /echo HTTP/1.1\r\nHost: x\r\n"):  # left half-sent
        s = socket.create_connection(("127.0.0.1", gw.port),
                                     timeout=10 * SLOW)
        s.sendall(data)
        s.close()
    assert_back_to(gw, baseline)
