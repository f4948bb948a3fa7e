"""Routing through the plain proxy: host groups, longest prefix, strip,
upstream base paths, round robin, and one keep-alive client connection
carrying requests for different APIs."""

import http.client
import json
import socket

import pytest

from conftest import SLOW, free_port, read_response, wait_until
from upstream import pattern


def connectable(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def landed(gw, path, host=None):
    """(upstream port, path the upstream saw) for a GET through GW."""
    headers = {"Host": host} if host else {}
    status, _, body = gw.get(path, headers=headers)
    assert status == 200, body
    seen = json.loads(body)
    return seen["port"], seen["path"]


@pytest.fixture
def host_gateway(gateway, upstream_factory):
    ups = {k: upstream_factory() for k in ("exact", "wild", "nohost")}
    gw = gateway({"apis": [
        {"name": "exact", "listen_path": "/", "hosts": ["api.example.com"],
         "upstream": ups["exact"].url},
        {"name": "wild", "listen_path": "/", "hosts": ["*.example.com"],
         "upstream": ups["wild"].url},
        {"name": "nohost", "listen_path": "/", "upstream": ups["nohost"].url},
    ]})
    return gw, ups


@pytest.mark.parametrize("host,api", [
    ("api.example.com", "exact"),
    ("api.example.com:8080", "exact"),     # the Host port is ignored
    ("API.Example.COM", "exact"),          # and so is case
    ("other.example.com", "wild"),
    ("deep.sub.example.com:1", "wild"),
    ("example.org", "nohost"),
    ("127.0.0.1", "nohost"),
])
def test_host_exact_then_suffix_then_no_host_group(host_gateway, host, api):
    gw, ups = host_gateway
    port, _ = landed(gw, "/echo", host=host)
    assert port == ups[api].port


def test_host_group_has_no_fallback_to_other_paths(gateway, upstream_factory):
    a, b = upstream_factory(), upstream_factory()
    gw = gateway({"apis": [
        {"name": "h", "listen_path": "/only/", "hosts": ["api.example.com"],
         "upstream": a.url},
        {"name": "any", "listen_path": "/", "upstream": b.url},
    ]})
    # The host group matches, its paths do not: 404, not the no-host API.
    status, _, _ = gw.get("/elsewhere", headers={"Host": "api.example.com"})
    assert status == 404
    assert a.requests == [] and b.requests == []


@pytest.mark.parametrize("path,api", [
    ("/a/b/c", "ab"),
    ("/a/b/", "ab"),
    ("/a/b", "ab"),        # "/a/b/" also matches the bare "/a/b"
    ("/a/bc", "a"),        # a prefix is a path segment, not a string
    ("/a/x", "a"),
    ("/a", "a"),
    ("/z", "root"),
    ("/", "root"),
])
def test_longest_listen_path_prefix_wins(gateway, upstream_factory, path, api):
    ups = {k: upstream_factory() for k in ("root", "a", "ab")}
    gw = gateway({"apis": [
        {"name": "root", "listen_path": "/", "upstream": ups["root"].url},
        {"name": "a", "listen_path": "/a/", "upstream": ups["a"].url},
        {"name": "ab", "listen_path": "/a/b/", "upstream": ups["ab"].url},
    ]})
    port, seen = landed(gw, path)
    assert port == ups[api].port
    assert seen == path  # no strip: the path goes through unchanged


@pytest.mark.parametrize("strip,path,expected", [
    (True, "/svc/items/1", "/items/1"),
    (True, "/svc/", "/"),
    (True, "/svc", "/"),
    (False, "/svc/items/1", "/svc/items/1"),
    (False, "/svc", "/svc"),
])
def test_strip_listen_path(gateway, upstream, strip, path, expected):
    gw = gateway({"apis": [{"name": "svc", "listen_path": "/svc/",
                            "strip_listen_path": strip,
                            "upstream": upstream.url}]})
    assert landed(gw, path) == (upstream.port, expected)


@pytest.mark.parametrize("strip,path,expected", [
    (True, "/svc/items?q=1&r=a%20b", "/base/items?q=1&r=a%20b"),
    (True, "/svc?x", "/base?x"),
    (False, "/svc/items?q=1", "/base/svc/items?q=1"),
])
def test_upstream_base_path_prepended_query_kept(gateway, upstream, strip,
                                                 path, expected):
    gw = gateway({"apis": [{"name": "svc", "listen_path": "/svc/",
                            "strip_listen_path": strip,
                            "upstream": upstream.url + "/base"}]})
    assert landed(gw, path) == (upstream.port, expected)


def test_query_string_kept_verbatim(gateway, upstream):
    gw = gateway({"apis": [{"name": "a", "listen_path": "/",
                            "upstream": upstream.url}]})
    path = "/echo?a=1&a=2&empty=&enc=%2F%3F&plus=x+y"
    assert landed(gw, path) == (upstream.port, path)


def test_round_robin_spreads_over_upstreams(gateway, upstream_factory):
    a, b = upstream_factory(), upstream_factory()
    gw = gateway({"apis": [{"name": "rr", "listen_path": "/",
                            "upstreams": [a.url, b.url]}]})
    ports = [landed(gw, "/echo")[0] for _ in range(10)]
    assert set(ports) == {a.port, b.port}
    # Strict alternation is not promised across threads; both get a share.
    assert ports.count(a.port) >= 2 and ports.count(b.port) >= 2


def test_keepalive_connection_alternates_between_apis(gateway,
                                                      upstream_factory):
    a, b = upstream_factory(), upstream_factory()
    gw = gateway({"apis": [
        {"name": "a", "listen_path": "/a/", "strip_listen_path": True,
         "upstream": a.url},
        {"name": "b", "listen_path": "/b/", "strip_listen_path": True,
         "upstream": b.url},
    ]})
    conn = gw.connect()
    try:
        sock = None
        for i in range(8):
            name, up = ("a", a) if i % 2 == 0 else ("b", b)
            status, headers, body = gw.get("/%s/echo?i=%d" % (name, i),
                                           conn=conn)
            assert status == 200
            assert "close" not in headers.get("Connection", "").lower()
            seen = json.loads(body)
            assert seen["port"] == up.port
            assert seen["path"] == "/echo?i=%d" % i
            # http.client reconnects silently: the socket must stay the same.
            if sock is None:
                sock = conn.sock
            assert conn.sock is sock
        assert len(a.requests) == 4 and len(b.requests) == 4
    finally:
        conn.close()


@pytest.mark.parametrize("splice", [False, True])
def test_host_only_route_keepalive_serves_many_requests(gateway, upstream,
                                                        splice):
    # With `splice: true` a host-only route is handed to a relay after its
    # first answer: every later request on the connection must still be
    # answered, in order.
    gw = gateway({"apis": [{"name": "h", "listen_path": "/",
                            "hosts": ["api.example.com"], "splice": splice,
                            "upstream": upstream.url}]})
    conn = gw.connect(timeout=5)
    try:
        sock = None
        for i in range(5):
            status, _, body = gw.request(
                "POST", "/echo?i=%d" % i, body=b"x" * (i * 1000),
                headers={"Host": "api.example.com"}, conn=conn)
            assert status == 200
            seen = json.loads(body)
            assert seen["path"] == "/echo?i=%d" % i
            assert seen["length"] == i * 1000
            sock = sock or conn.sock
            assert conn.sock is sock
        status, _, body = gw.get("/bytes/300000", conn=conn,
                                 headers={"Host": "api.example.com"})
        assert status == 200 and len(body) == 300000
    finally:
        conn.close()


def test_api_with_own_listener_served_only_there(gateway, upstream_factory):
    shared, own = upstream_factory(), upstream_factory()
    own_port = free_port()
    gw = gateway({"apis": [
        {"name": "shared", "listen_path": "/", "upstream": shared.url},
        {"name": "own", "listen": ["127.0.0.1:%d" % own_port],
         "upstream": own.url},
    ]})
    assert wait_until(lambda: connectable(own_port))
    assert landed(gw, "/echo")[0] == shared.port
    conn = http.client.HTTPConnection("127.0.0.1", own_port,
                                      timeout=5 * SLOW)
    try:
        for i in range(4):
            conn.request("GET", "/echo?i=%d" % i)
            resp = conn.getresponse()
            seen = json.loads(resp.read())
            assert resp.status == 200
            assert seen["port"] == own.port
            assert seen["path"] == "/echo?i=%d" % i
    finally:
        conn.close()
    assert len(own.requests) == 4


def test_host_only_keepalive_later_requests_get_forwarded_headers(gateway,
                                                                   upstream):
    # Without `splice:` (the default for a shared listener) every request
    # on the connection reaches the upstream with the gateway's
    # X-Forwarded-For appended, so a client cannot pass its own claim off
    # as the gateway's on its second request.
    gw = gateway({"apis": [{"name": "h", "listen_path": "/",
                            "hosts": ["api.example.com"],
                            "upstream": upstream.url}]})
    conn = gw.connect(timeout=5)
    try:
        for i in range(3):
            status, _, body = gw.get(
                "/echo", conn=conn, headers={"Host": "api.example.com",
                                             "X-Forwarded-For": "6.6.6.6"})
            assert status == 200
            headers = {k.lower(): v for k, v in json.loads(body)["headers"]}
            assert headers["x-forwarded-for"] == "6.6.6.6, 127.0.0.1", i
            assert headers["x-forwarded-proto"] == "http", i
    finally:
        conn.close()


@pytest.mark.parametrize("splice", [False, True])
def test_host_only_pipelined_requests_across_hand_off(gateway, upstream,
                                                      splice):
    # Requests pipelined behind the first one are already in the gateway
    # when the connection is handed off: they go up in order, none lost.
    gw = gateway({"apis": [{"name": "h", "listen_path": "/",
                            "hosts": ["api.example.com"], "splice": splice,
                            "upstream": upstream.url}]})
    sizes = [3, 100000, 0, 7, 2000000, 5]
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=10 * SLOW)
    try:
        s.sendall(b"".join(b"GET /bytes/%d HTTP/1.1\r\nHost: api.example.com"
                           b"\r\n\r\n" % n for n in sizes))
        buf = b""
        for n in sizes:
            resp, buf = read_response(s, buf)
            assert resp.status == 200 and resp.body == pattern(n), n
    finally:
        s.close()
    assert [r.path for r in upstream.requests] == \
        ["/bytes/%d" % n for n in sizes]
