#!/usr/bin/python3
"""A stand-in for sluice-worker that speaks common/msg.h, for the pool's
own tests: it behaves by API name, so a test can make the pool meet what a
real interpreter does only by accident.

    async    answered after 0.3 s, many at once ("async_apis" in ready);
             logs "inflight=N" for each call it receives
    sync     answered after 0.1 s, one at a time
    big      answered at once with a 300 kB body (several records)
    mute     never answered
    amute    never answered, and async like "async"
    echo     answered at once with the call's size in a header
    orphan   starts `sleep 0.3` and exits: the sleep outlives its parent

Started by pool_driver in place of sluice-worker: fd 3 is the socket.
"""

import heapq
import os
import select
import socket
import subprocess
import sys
import time

import msgpack

RECORD_MAX = 65536
sock = socket.socket(fileno=3)
pending = []  # (due, seq, message)
inflight = 0
seq = 0


def send(obj):
    data = msgpack.packb(obj, use_bin_type=True)
    while True:
        chunk, data = data[:RECORD_MAX], data[RECORD_MAX:]
        sock.send(bytes([1 if data else 0]) + chunk)
        if not data:
            return


def recv():
    payload = b""
    while True:
        rec = sock.recv(RECORD_MAX + 1)
        if not rec:
            return None
        payload += rec[1:]
        if not rec[0] & 1:
            return msgpack.unpackb(payload, raw=False)


def later(delay, msg):
    global seq
    seq += 1
    heapq.heappush(pending, (time.monotonic() + delay, seq, msg))


def on_call(msg):
    global inflight
    api = msg["c"]["api"]
    result = {"t": "result", "id": msg["id"], "ok": True}
    if api == "async":
        inflight += 1
        send({"t": "log", "level": "info", "api": api,
              "msg": "inflight=%d" % inflight})
        later(0.3, result)
    elif api == "sync":
        time.sleep(0.1)
        send(result)
    elif api == "big":
        result["reply"] = {"status": 200, "headers": [],
                           "body": b"b" * 300000}
        send(result)
    elif api == "echo":
        result["req"] = {"headers": [["X-Size", str(len(msgpack.packb(
            msg["c"], use_bin_type=True)))]]}
        send(result)
    elif api == "orphan":
        subprocess.Popen(["sleep", "0.3"])
        os._exit(3)
    # "mute": nothing


def main():
    global inflight
    init = recv()
    names = [a["name"] for a in init["apis"]]
    send({"t": "ready", "pid": os.getpid(), "errors": {},
          "async_apis": [n for n in names if n in ("async", "amute")]})
    while True:
        timeout = None
        if pending:
            timeout = max(0.0, pending[0][0] - time.monotonic())
        ready, _, _ = select.select([sock], [], [], timeout)
        if ready:
            msg = recv()
            if msg is None:
                return 0
            if msg.get("t") == "call":
                on_call(msg)
        while pending and pending[0][0] <= time.monotonic():
            send(heapq.heappop(pending)[2])
            inflight -= 1


if __name__ == "__main__":
    sys.exit(main())
