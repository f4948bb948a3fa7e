"""Connection relays in every mode (copy, pipe, sockmap) and the body splice,
through tests/bpf/relay_probe: a TCP proxy built on user/front/relay*.c.

Covers: identical bytes (sha256) for 0 B, 1 KiB and 64 MiB each way; bytes
read before the hand-over delivered first; half-close both ways; RST from
either side (nothing left in CLOSE-WAIT, descriptors back to baseline); a
slow reader (nothing lost, bounded bytes in flight, the sockmap verdict
stops at its credit); 1,000 concurrent relayed connections; exact-length bodies.

The last section drives the verdict alone through sbpf_tool's pair-test
(no relay): bytes intact and counted per socket and per API.

Runs on loopback; sockmap mode needs root and skips without it.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import socket
import struct
import threading
import time

import pytest

from splice_fixtures import (MODES, queued_bytes, recv_all, start_probe,
                             start_upstream, tcp_states, wait_no_sockets)

__all__ = ["start_probe", "start_upstream"]  # fixtures used by name

SIZES = [0, 1024, 64 << 20]
_blob: dict[int, bytes] = {}


def blob(size: int) -> bytes:
    if size not in _blob:
        _blob[size] = os.urandom(size)
    return _blob[size]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_clean(probe, baseline: int, *ports: int) -> None:
    """Every relayed socket of PROBE closed: descriptors back to BASELINE,
    nothing in CLOSE-WAIT or ESTABLISHED on PORTS."""
    assert probe.wait_fds(baseline) == baseline, probe.log()[-3000:]
    left = wait_no_sockets(ports, {"CLOSE-WAIT", "ESTAB"})
    assert not left, left


def reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                    struct.pack("ii", 1, 0))
    sock.close()


# ---- identical bytes ---------------------------------------------------


def upload_digest(sock: socket.socket) -> None:
    hasher = hashlib.sha256()
    count = recv_all(sock, hasher)
    sock.sendall(f"{count} {hasher.hexdigest()}".encode())
    sock.shutdown(socket.SHUT_WR)
    recv_all(sock)


@pytest.mark.parametrize("size", SIZES, ids=["0B", "1KiB", "64MiB"])
@pytest.mark.parametrize("mode", MODES)
def test_upload_bytes_identical(start_upstream, start_probe, mode, size):
    data = blob(size)
    upstream = start_upstream(upload_digest)
    probe = start_probe(mode, upstream.port)
    baseline = probe.fd_count()

    with probe.connect() as client:
        client.sendall(data)
        client.shutdown(socket.SHUT_WR)  # half-close: the reply still comes
        reply = client.recv(256).decode()
    upstream.join()

    assert not upstream.errors
    assert reply == f"{size} {sha(data)}"
    assert_clean(probe, baseline, probe.port, upstream.port)


@pytest.mark.parametrize("size", SIZES, ids=["0B", "1KiB", "64MiB"])
@pytest.mark.parametrize("mode", MODES)
def test_download_bytes_identical(start_upstream, start_probe, mode, size):
    data = blob(size)

    def serve(sock):
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        recv_all(sock)

    upstream = start_upstream(serve)
    probe = start_probe(mode, upstream.port)
    baseline = probe.fd_count()

    with probe.connect() as client:
        hasher = hashlib.sha256()
        count = recv_all(client, hasher)
    upstream.join()

    assert not upstream.errors
    assert (count, hasher.hexdigest()) == (size, sha(data))
    assert_clean(probe, baseline, probe.port, upstream.port)
    if mode == "sockmap" and size <= 1024:
        # the kernel moved them: no fallback, the credit never ran out
        log = probe.log()
        assert "insertion failed" not in log
        assert f"to_client={size} held=0" in log, log[-2000:]


# ---- hand-over -----------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_bytes_read_before_handover_go_first(start_upstream, start_probe,
                                             mode):
    """The probe reads "HELLO" from the client and "BANNER!" from the
    upstream before relay_start() (pending bytes); what stayed queued in
    the sockets ("MORE", the first MiB) must follow them, in order."""
    body = blob(1 << 20)
    seen = {}

    def serve(sock):
        sock.sendall(b"BANNER!MORE")
        hasher = hashlib.sha256()
        seen["count"] = recv_all(sock, hasher)
        seen["sha"] = hasher.hexdigest()
        sock.sendall(b"BYE")
        sock.shutdown(socket.SHUT_WR)
        recv_all(sock)

    upstream = start_upstream(serve)
    probe = start_probe(mode, upstream.port, "-c", "5", "-u", "7")

    with probe.connect() as client:
        client.sendall(b"HELLO" + body)
        client.shutdown(socket.SHUT_WR)
        got = b""
        while True:
            data = client.recv(65536)
            if not data:
                break
            got += data
    upstream.join()

    assert got == b"BANNER!MOREBYE"
    assert seen == {"count": 5 + len(body), "sha": sha(b"HELLO" + body)}


# ---- half-close ----------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_client_half_close_still_receives(start_upstream, start_probe, mode):
    reply = blob(8 << 20)

    def serve(sock):
        recv_all(sock)
        sock.sendall(reply)
        sock.shutdown(socket.SHUT_WR)
        recv_all(sock)

    upstream = start_upstream(serve)
    probe = start_probe(mode, upstream.port)
    baseline = probe.fd_count()

    with probe.connect() as client:
        client.sendall(b"request")
        client.shutdown(socket.SHUT_WR)
        hasher = hashlib.sha256()
        count = recv_all(client, hasher)
    upstream.join()

    assert (count, hasher.hexdigest()) == (len(reply), sha(reply))
    assert_clean(probe, baseline, probe.port, upstream.port)


@pytest.mark.parametrize("mode", MODES)
def test_upstream_half_close_still_receives(start_upstream, start_probe,
                                            mode):
    upload = blob(8 << 20)
    seen = {}

    def serve(sock):
        sock.sendall(b"early response")
        sock.shutdown(socket.SHUT_WR)
        hasher = hashlib.sha256()
        seen["count"] = recv_all(sock, hasher)
        seen["sha"] = hasher.hexdigest()

    upstream = start_upstream(serve)
    probe = start_probe(mode, upstream.port)
    baseline = probe.fd_count()

    with probe.connect() as client:
        assert recv_all(client) == len(b"early response")  # EOF came through
        client.sendall(upload)
        client.shutdown(socket.SHUT_WR)
        upstream.join()
        assert recv_all(client) == 0

    assert seen == {"count": len(upload), "sha": sha(upload)}
    assert_clean(probe, baseline, probe.port, upstream.port)


# ---- RST -----------------------------------------------------------------


@pytest.mark.parametrize("half_closed", [False, True],
                         ids=["open", "after-half-close"])
@pytest.mark.parametrize("side", ["client", "upstream"])
@pytest.mark.parametrize("mode", MODES)
def test_reset_closes_both(start_upstream, start_probe, mode, side,
                           half_closed):
    """An RST from one side closes both of the probe's sockets. With
    after-half-close the resetting side has sent its FIN first and the
    other direction is idle: only the hang-up watch can notice."""
    got_hello = threading.Event()
    go = threading.Event()
    outcome = {}

    def serve(sock):
        assert sock.recv(5) == b"hello"
        got_hello.set()
        if side == "upstream":
            if half_closed:
                sock.shutdown(socket.SHUT_WR)
            go.wait(10)
            reset(sock)
            return
        try:
            while sock.recv(65536):
                pass
            outcome["upstream"] = "eof"
            go.wait(10)
            sock.sendall(b"x" * 65536)  # the RST must have reached here
            time.sleep(0.5)
            sock.sendall(b"x" * 65536)
            outcome["upstream"] = "eof, sends accepted"
        except OSError as e:  # reset, broken pipe, or a timeout
            outcome["upstream"] = type(e).__name__

    upstream = start_upstream(serve)
    probe = start_probe(mode, upstream.port)
    baseline = probe.fd_count()

    client = probe.connect()
    client.sendall(b"hello")
    assert got_hello.wait(10)
    if side == "client":
        if half_closed:
            client.shutdown(socket.SHUT_WR)
            time.sleep(0.2)
        reset(client)
        go.set()
    else:
        if half_closed:
            assert recv_all(client) == 0
        time.sleep(0.2)
        go.set()
        client.settimeout(10)
        try:
            outcome["client"] = "eof" if not client.recv(1) else "data"
        except ConnectionResetError:
            outcome["client"] = "reset"
        client.close()
    upstream.join()

    assert not upstream.errors, upstream.errors
    if side == "client":
        assert outcome.get("upstream") in ("ConnectionResetError",
                                           "BrokenPipeError"), outcome
    else:
        assert outcome["client"] in ("reset", "eof"), outcome
    assert_clean(probe, baseline, probe.port, upstream.port)


# ---- slow reader ---------------------------------------------------------

SLOW_TOTAL = 192 << 20
SLOW_RATE = 8 << 20  # bytes per second
SLOW_SECONDS = 2.5
# Bytes in flight between the upstream's sendall and the slow client's
# recv: the sockets' buffers on the way (a few MiB each) plus, in sockmap
# mode, the verdict's credit (16 MiB redirected ahead of what the client's
# socket took in). Unbounded, it would be the whole transfer.
SLOW_IN_FLIGHT_MAX = 64 << 20
PROBE_RSS_MAX_KIB = 64 << 10


@pytest.mark.parametrize("mode", MODES)
def test_slow_reader_loses_nothing_and_stays_bounded(start_upstream,
                                                     start_probe, mode):
    block = blob(1 << 20)
    sent = [0]

    def serve(sock):
        for _ in range(SLOW_TOTAL // len(block)):
            sock.sendall(block)
            sent[0] += len(block)
        sock.shutdown(socket.SHUT_WR)
        recv_all(sock)

    upstream = start_upstream(serve)
    probe = start_probe(mode, upstream.port)
    hasher = hashlib.sha256()
    got = 0
    in_flight = []
    queued = []
    rss = []

    with probe.connect() as client:
        start = time.monotonic()
        while time.monotonic() - start < SLOW_SECONDS:
            data = client.recv(64 << 10)
            assert data
            hasher.update(data)
            got += len(data)
            time.sleep(len(data) / SLOW_RATE)
            if time.monotonic() - start > 0.5:
                in_flight.append(sent[0] - got)
                if len(in_flight) % 20 == 0:
                    queued.append(queued_bytes(probe.port) +
                                  queued_bytes(upstream.port))
                    rss.append(probe.rss_kib())
        got += recv_all(client, hasher)
    upstream.join()

    expect = hashlib.sha256(block * (SLOW_TOTAL // len(block))).hexdigest()
    assert (got, hasher.hexdigest()) == (SLOW_TOTAL, expect)
    print(f"{mode}: in flight max {max(in_flight) >> 20} MiB, "
          f"socket queues max {max(queued) >> 20} MiB, "
          f"probe RSS max {max(rss) >> 10} MiB")
    assert max(in_flight) <= SLOW_IN_FLIGHT_MAX
    assert max(rss) <= PROBE_RSS_MAX_KIB
    if mode == "sockmap":
        assert "relay held" in probe.log()  # the credit ran out: bounded


# ---- many connections ----------------------------------------------------

CONCURRENT = 1000


async def echo(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def many_echoes(probe_port: int) -> list[bool]:
    streams = await asyncio.gather(*[
        asyncio.open_connection("127.0.0.1", probe_port)
        for _ in range(CONCURRENT)])
    payloads = [f"connection {i:04d} ".encode() * 5 for i in range(CONCURRENT)]
    for (_, writer), payload in zip(streams, payloads):
        writer.write(payload)

    async def check(reader, payload):
        return await reader.readexactly(len(payload)) == payload

    ok = await asyncio.wait_for(asyncio.gather(*[
        check(reader, payload)
        for (reader, _), payload in zip(streams, payloads)]), 30)
    for _, writer in streams:
        writer.close()
    return ok


@pytest.mark.parametrize("mode", MODES)
def test_thousand_concurrent_connections(start_probe, mode):
    async def run():
        server = await asyncio.start_server(echo, "127.0.0.1", 0,
                                            backlog=CONCURRENT)
        port = server.sockets[0].getsockname()[1]
        probe = start_probe(mode, port)
        baseline = probe.fd_count()
        try:
            ok = await many_echoes(probe.port)
            deadline = time.monotonic() + 10
            while (probe.fd_count() > baseline and
                   time.monotonic() < deadline):
                await asyncio.sleep(0.05)
            return ok, probe, baseline, port
        finally:
            server.close()
            await server.wait_closed()

    ok, probe, baseline, port = asyncio.run(run())
    assert sum(ok) == CONCURRENT
    assert probe.fd_count() == baseline, probe.counts()
    assert probe.counts().startswith("relays active=0 ")
    assert not [r for r in tcp_states(probe.port, port)
                if r[0] == "CLOSE-WAIT"]


# ---- body splice ---------------------------------------------------------


def test_body_moves_exactly_len(start_upstream, start_probe):
    """relay_body_start() moves LEN bytes and not one more: the bytes after
    the body stay in the socket for the copy relay that follows."""
    body, tail = blob(8 << 20), b"NEXT REQUEST"
    upstream = start_upstream(upload_digest)
    probe = start_probe("copy", upstream.port, "-L", str(len(body)))

    with probe.connect() as client:
        client.sendall(body + tail)
        client.shutdown(socket.SHUT_WR)
        reply = client.recv(256).decode()
    upstream.join()

    assert reply == f"{len(body) + len(tail)} {sha(body + tail)}"
    assert probe.counts() == "relays active=0 done=1 failed_body=0"


def test_body_short_sender_fails(start_upstream, start_probe):
    upstream = start_upstream(lambda sock: recv_all(sock))
    probe = start_probe("copy", upstream.port, "-L", str(1 << 20))
    baseline = probe.fd_count()

    with probe.connect() as client:
        client.sendall(b"x" * 1000)
        client.shutdown(socket.SHUT_WR)
        assert recv_all(client) == 0
    upstream.join()

    assert probe.counts() == "relays active=0 done=0 failed_body=1"
    assert probe.wait_fds(baseline) == baseline


# ---- the verdict alone (sbpf_tool pair-test) -----------------------------

PAIR_CASES = [
    pytest.param(0, 0, id="0B"),
    pytest.param(1024, 0, id="1KiB"),
    pytest.param(8 << 20, 0, id="8MiB"),
    # Bytes that reached the socket before it entered the map are not run
    # through the verdict until its data_ready fires again: sbpf_pair_add
    # makes it fire.
    pytest.param(1 << 20, 30000, id="1MiB-30000-queued-before"),
]


@pytest.mark.parametrize("size,queued", PAIR_CASES)
def test_spliced_bytes_arrive_intact_and_are_counted(tools, pin_dir, size,
                                                     queued):
    tool = tools(["-p", pin_dir.path, "-a", "alpha", "pair-test", str(size),
                  str(queued)])
    assert tool.start() == "ok", tool.log()
    line = tool.readline(timeout=60)
    match = re.fullmatch(r"pair ok bytes_a=(\d+) bytes_b=(\d+)", line)
    assert match, f"{line}\n{tool.log()}"
    assert (int(match[1]), int(match[2])) == (size, size)

    status = json.loads(tool.readline())
    assert status["spliced_bytes"] == {"alpha": 2 * size}
    assert tool.proc.wait(timeout=10) == 0
    assert pin_dir.entries() == []
