"""Routing: listener, host, longest listen_path prefix, strip, round robin."""

import json

from conftest import raw_exchange, statuses


def test_longest_prefix_wins_and_strip(gateway, upstream_factory):
    a, b = upstream_factory(), upstream_factory()
    gw = gateway({"apis": [
        {"name": "root", "listen_path": "/", "upstream": a.url},
        {"name": "cat", "listen_path": "/catalog/", "strip_listen_path": True,
         "upstream": b.url},
    ]})
    status, _, body = gw.get("/catalog/echo?x=1")
    assert status == 200
    seen = json.loads(body)
    assert seen["port"] == b.port and seen["path"] == "/echo?x=1"
    status, _, body = gw.get("/other/echo")
    assert json.loads(body)["port"] == a.port


def test_no_route_is_404_with_json(gateway, upstream):
    gw = gateway({"apis": [{"name": "a", "listen_path": "/a/",
                            "upstream": upstream.url}]})
    status, headers, body = gw.get("/b/")
    assert status == 404
    assert json.loads(body)["status"] == 404
    assert upstream.requests == []


def test_absolute_form_target_routes_by_its_host(gateway, upstream_factory):
    a, b = upstream_factory(), upstream_factory()
    gw = gateway({"apis": [
        {"name": "a", "listen_path": "/", "hosts": ["a.test"],
         "upstream": a.url},
        {"name": "b", "listen_path": "/", "upstream": b.url},
    ]})
    # RFC 9112 3.2.2: the host comes from the target, not from Host.
    raw = raw_exchange(gw.port, b"GET http://a.test/echo?x=1 HTTP/1.1\r\n"
                       b"Host: elsewhere\r\nConnection: close\r\n\r\n")
    assert statuses(raw) == [200]
    seen = json.loads(raw.split(b"\r\n\r\n", 1)[1])
    assert seen["port"] == a.port and seen["path"] == "/echo?x=1"
    assert ["Host", "a.test"] in seen["headers"]
