"""Routing: listener, host, longest listen_path prefix, strip, round robin."""

import json


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
