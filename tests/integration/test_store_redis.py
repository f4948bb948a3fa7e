"""store_data/get_data, and quotas, against a real Redis
(python.store.redis).

Each test starts its own redis-server on a free loopback port (no disk,
no persistence) and stops it at the end; a tiny RESP client looks at what
sluiced wrote. The hooks are pool_helpers' `put` (store_data("shared",
"from-PID", ttl)) and `get` (get_data("shared") into X-Got, "none" for a
miss).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import BUILD, SLOW, free_port
from pool_helpers import (echoed, fd_kinds, hooked_rules, post, wait_pool,
                          write_hooks)

REDIS = shutil.which("redis-server")


class Redis:
    def __init__(self, tmp_path, port=None, args=()):
        if not REDIS:
            pytest.fail("redis-server is not installed: run `make deps`")
        self.port = port or free_port()
        self.args = list(args)
        self.dir = tmp_path
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            [REDIS, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.dir),
             *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                if self.cmd("PING") == "PONG":
                    return
            except RuntimeError as e:
                if "NOAUTH" in str(e):  # up, with --requirepass
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        pytest.fail("redis-server did not start on port %d" % self.port)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()

    def cmd(self, *args, auth=None, db=None):
        """Run one command (after AUTH and SELECT if given); its reply:
        str, int, None or a list."""
        with socket.create_connection(("127.0.0.1", self.port),
                                      timeout=5) as s:
            f = s.makefile("rb")
            for pre in ([("AUTH", auth)] if auth else []) + \
                    ([("SELECT", str(db))] if db is not None else []):
                s.sendall(_pack(pre))
                _read(f)
            s.sendall(_pack(args))
            return _read(f)


def _pack(args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def _read(f):
    line = f.readline()
    if not line:
        raise OSError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:-2]
        return data.decode()
    if kind == b"*":
        return [_read(f) for _ in range(int(rest))]
    raise RuntimeError("bad reply %r" % line)


@pytest.fixture
def redis(tmp_path):
    made = []

    def start(**kw):
        r = Redis(tmp_path, **kw)
        made.append(r)
        return r
    yield start
    for r in made:
        r.stop()


def store_rules(tmp_path, upstream, redis, ttl=0, **store):
    store.setdefault("redis", "127.0.0.1:%d" % redis.port)
    return hooked_rules(tmp_path, upstream, {
        "put": {"pre": ["pt.put"], "config": {"ttl": ttl}},
        "get": {"pre": ["pt.get"]}}, store=store)


def got(gw):
    status, _, body = post(gw, "/get/echo")
    assert status == 200
    return echoed(body)["x-got"]


def wait_back(gw):
    """Until four reads in a row find the value: every lane (each front
    thread has its own connection) reaches Redis again."""
    deadline = time.time() + 10 * SLOW
    row = 0
    while row < 4:
        if time.time() > deadline:
            raise AssertionError("the store did not come back:\n" + gw.log())
        post(gw, "/put/echo")
        row = row + 1 if got(gw).startswith("from-") else 0
        time.sleep(0.05 if row else 0.2)


def test_data_lands_in_redis_under_tyks_prefix_with_its_ttl(
        gateway, upstream, redis, tmp_path):
    r = redis()
    gw = gateway(store_rules(tmp_path, upstream, r, ttl=30))
    wait_pool(gw)
    _, _, body = post(gw, "/put/echo")
    writer = echoed(body)["x-worker-pid"]

    assert got(gw) == "from-%s" % writer
    assert r.cmd("GET", "coprocess-data:shared") == "from-%s" % writer
    assert 0 < r.cmd("TTL", "coprocess-data:shared") <= 30

    # What another gateway (or Tyk) writes there is what get_data reads.
    r.cmd("SET", "coprocess-data:shared", "from-outside")
    assert got(gw) == "from-outside"
    r.cmd("DEL", "coprocess-data:shared")
    assert got(gw) == "none"
    assert "store: redis=127.0.0.1:%d db=0" % r.port in gw.log()


def test_a_reload_keeps_the_store_and_says_so(gateway, upstream, redis,
                                              tmp_path):
    r = redis()
    gw = gateway(store_rules(tmp_path, upstream, r))
    wait_pool(gw)
    post(gw, "/put/echo")
    gw.rules["python"]["store"]["db"] = 3
    gw.write_rules(gw.rules)
    gw.send_signal(signal.SIGHUP)
    assert gw.wait_log("reloaded rules=")
    assert "reload: python.store changes only on restart" in gw.log()
    assert got(gw).startswith("from-")  # still db 0
    assert r.cmd("DBSIZE", db=3) == 0


def test_two_gateways_share_it_and_it_outlives_them(
        gateway, upstream, redis, tmp_path):
    r = redis()
    first = gateway(store_rules(tmp_path, upstream, r), name="first")
    second = gateway(store_rules(tmp_path, upstream, r), name="second")
    wait_pool(first)
    wait_pool(second)
    _, _, body = post(first, "/put/echo")
    writer = echoed(body)["x-worker-pid"]
    assert got(second) == "from-%s" % writer
    # No TTL given: none set.
    assert r.cmd("TTL", "coprocess-data:shared") == -1

    first.stop()
    second.stop()
    third = gateway(store_rules(tmp_path, upstream, r), name="third")
    wait_pool(third)
    assert got(third) == "from-%s" % writer


def test_db_prefix_and_password_are_used(gateway, upstream, redis, tmp_path):
    r = redis(args=["--requirepass", "s3cret"])
    gw = gateway(store_rules(tmp_path, upstream, r, db=2, prefix="t:",
                             password="s3cret"))
    wait_pool(gw)
    post(gw, "/put/echo")
    assert r.cmd("GET", "t:shared", auth="s3cret", db=2).startswith("from-")
    assert r.cmd("DBSIZE", auth="s3cret", db=0) == 0
    assert got(gw).startswith("from-")
    assert "s3cret" not in gw.log()


def test_a_refused_password_is_a_miss_and_says_why(
        gateway, upstream, redis, tmp_path):
    r = redis(args=["--requirepass", "s3cret"])
    gw = gateway(store_rules(tmp_path, upstream, r, password="wrong"))
    wait_pool(gw)
    assert post(gw, "/put/echo")[0] == 200
    assert got(gw) == "none"
    assert gw.wait_log("AUTH refused")
    assert r.cmd("DBSIZE", auth="s3cret") == 0


def test_redis_down_means_misses_at_once_then_it_recovers(
        gateway, upstream, redis, tmp_path):
    r = redis()
    gw = gateway(store_rules(tmp_path, upstream, r))
    wait_pool(gw)
    post(gw, "/put/echo")
    assert got(gw).startswith("from-")

    r.stop()
    for _ in range(4):
        start = time.monotonic()
        assert got(gw) == "none"
        assert time.monotonic() - start < 1.0 * SLOW
    assert gw.wait_log(" down (")
    store = gw.status()["pool"]["store"]
    assert (store["kind"], store["addr"], store["links"]) == (
        "redis", "127.0.0.1:%d" % r.port, 2)
    assert store["links_down"] >= 1 and store["missed"] >= 4

    r.start()
    wait_back(gw)  # a connection is tried at most once a second
    assert gw.wait_log("answers again")
    assert gw.status()["pool"]["store"]["links_down"] == 0
    _, body = gw.admin("/metrics")
    missed = [line for line in body.decode().splitlines()
              if line.startswith("sluice_store_redis_missed_total ")]
    assert missed and int(missed[0].split()[1]) >= 4


def test_a_stalled_redis_is_a_miss_after_timeout_ms(
        gateway, upstream, redis, tmp_path):
    r = redis()
    gw = gateway(store_rules(tmp_path, upstream, r, timeout_ms=300))
    wait_pool(gw)
    post(gw, "/put/echo")
    assert got(gw).startswith("from-")

    r.proc.send_signal(signal.SIGSTOP)
    try:
        start = time.monotonic()
        assert got(gw) == "none"
        took = time.monotonic() - start
        assert 0.25 <= took < 3.0 * SLOW, took
        assert gw.wait_log("no answer within 300 ms")
    finally:
        r.proc.send_signal(signal.SIGCONT)

    wait_back(gw)
    # The dropped connections are closed: one per lane (threads: 2) at
    # most is connected to Redis's port.
    assert fd_kinds(gw.pid, gw.port, r.port)["upstream"] <= 2


LIMITED = """
from tyk.decorators import *

@CustomKeyCheck
def auth(request, session, metadata, spec):
    metadata["token"] = request.get_header("Authorization")
    if request.get_header("X-Plan") == "rate":
        session.rate, session.per = 2, 60
    else:
        session.quota_max = 3
        session.quota_renewal_rate = 3600
    return request, session, metadata
"""


def limit_gateway(gateway, upstream, redis, tmp_path, name, **store):
    write_hooks(tmp_path, "lt", LIMITED)
    store["redis"] = "127.0.0.1:%d" % redis.port
    gw = gateway(hooked_rules(tmp_path, upstream, {
        "q": {"auth_check": "lt.auth"}}, store=store), name=name)
    wait_pool(gw)
    return gw


def limit_call(gw, key, plan="quota"):
    """Status, X-RateLimit-Remaining and Retry-After of one call."""
    status, headers, _ = gw.get("/q/echo", headers={"Authorization": key,
                                                    "X-Plan": plan})
    return (status, headers.get("X-RateLimit-Remaining"),
            headers.get("Retry-After"))


def test_quotas_are_counted_in_redis_for_every_gateway_and_restart(
        gateway, upstream, redis, tmp_path):
    r = redis()
    first = limit_gateway(gateway, upstream, r, tmp_path, "first")
    second = limit_gateway(gateway, upstream, r, tmp_path, "second")
    calls = [limit_call(gw, "k1") for gw in (first, second, first, second)]
    assert [c[:2] for c in calls] == [(200, "2"), (200, "1"), (200, "0"),
                                      (403, None)]
    assert 3590 <= int(calls[3][2]) <= 3600
    assert r.cmd("GET", "sluice-quota:q:k1") == "4"
    assert 3590 <= r.cmd("TTL", "sluice-quota:q:k1") <= 3600

    # A restarted gateway does not hand the key a fresh quota.
    first.stop()
    second.stop()
    third = limit_gateway(gateway, upstream, r, tmp_path, "third")
    assert limit_call(third, "k1")[0] == 403
    assert limit_call(third, "k2")[:2] == (200, "2")


def test_a_quota_passes_uncounted_while_redis_is_down(
        gateway, upstream, redis, tmp_path):
    r = redis()
    gw = limit_gateway(gateway, upstream, r, tmp_path, "q")
    assert limit_call(gw, "k1")[:2] == (200, "2")
    r.stop()
    # A quota that cannot be counted does not refuse (fails open).
    for _ in range(4):
        assert limit_call(gw, "k1") == (200, None, None)
    assert gw.wait_log(" down (")


def test_shared_rates_are_counted_in_redis_for_every_gateway(
        gateway, upstream, redis, tmp_path):
    r = redis()
    first = limit_gateway(gateway, upstream, r, tmp_path, "first",
                          shared_rates=True)
    second = limit_gateway(gateway, upstream, r, tmp_path, "second",
                           shared_rates=True)
    calls = [limit_call(gw, "k1", "rate")
             for gw in (first, second, first, second)]
    # Two a minute for both together; the next token in 30 s.
    assert [c[0] for c in calls] == [200, 200, 429, 429]
    assert 25 <= int(calls[2][2]) <= 30
    assert 0 < r.cmd("PTTL", "sluice-rate:q:k1") <= 60000
    assert limit_call(second, "k2", "rate")[0] == 200


def test_without_shared_rates_each_gateway_counts_its_own(
        gateway, upstream, redis, tmp_path):
    r = redis()
    first = limit_gateway(gateway, upstream, r, tmp_path, "first")
    second = limit_gateway(gateway, upstream, r, tmp_path, "second")
    assert [limit_call(first, "k1", "rate")[0] for _ in range(3)] == [
        200, 200, 429]
    assert [limit_call(second, "k1", "rate")[0] for _ in range(3)] == [
        200, 200, 429]
    assert r.cmd("EXISTS", "sluice-rate:q:k1") == 0


def test_check_mode_warns_when_redis_does_not_answer(upstream, redis,
                                                     tmp_path):
    r = redis(args=["--requirepass", "s3cret"])

    def check(**store):
        rules = store_rules(tmp_path, upstream, r, **store)
        rules.update({"listen": ["127.0.0.1:9"], "bpf": {"splice": "pipe"}})
        path = tmp_path / "check.yaml"
        path.write_text(json.dumps(rules))
        return subprocess.run(
            [os.path.join(BUILD, "sluiced"), "-t", "-c", str(path)],
            capture_output=True, text=True, timeout=60)

    ok = check(password="s3cret")
    assert ok.returncode == 0 and "warning" not in ok.stderr, ok.stderr
    # Another server's state: a warning that says what will happen, and
    # the rules are still good.
    wrong = check(password="wrong")
    assert wrong.returncode == 0
    assert ("check.yaml: warning: python.store.redis 127.0.0.1:%d: AUTH "
            "refused: WRONGPASS" % r.port) in wrong.stderr, wrong.stderr
    assert "get_data misses, store_data is lost and quotas pass" \
        in wrong.stderr
    r.stop()
    down = check(password="s3cret")
    assert down.returncode == 0
    assert "cannot connect: Connection refused" in down.stderr, down.stderr
