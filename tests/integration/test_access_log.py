"""The access log: off by default; one line per request, JSON or combined,
with API, upstream, status, bytes and duration."""

import json
import re

from conftest import wait_until


def rules(upstream, log=None):
    r = {"apis": [{"name": "a", "listen_path": "/a/",
                   "strip_listen_path": True, "upstream": upstream.url}]}
    if log:
        r["access_log"] = log
    return r


def read_lines(path):
    try:
        with open(path) as f:
            return [line for line in f.read().splitlines() if line]
    except FileNotFoundError:
        return []


def test_json_lines_name_api_upstream_status_bytes_duration(gateway,
                                                            upstream,
                                                            tmp_path):
    path = str(tmp_path / "access.log")
    gw = gateway(rules(upstream, {"path": path, "format": "json"}))
    assert gw.get("/a/bytes/123")[0] == 200
    assert gw.request("POST", "/a/echo", body=b"x" * 10)[0] == 200
    assert gw.get("/nowhere")[0] == 404
    assert wait_until(lambda: len(read_lines(path)) == 3)
    first, second, third = [json.loads(line) for line in read_lines(path)]
    assert first["api"] == "a" and first["status"] == 200
    assert first["method"] == "GET" and first["target"] == "/a/bytes/123"
    assert first["upstream"] == "127.0.0.1:%d" % upstream.port
    assert first["bytes_out"] == 123 and first["duration_ms"] >= 0
    assert second["method"] == "POST" and second["bytes_in"] == 10
    assert third["status"] == 404 and third["api"] == "-"


def test_combined_format(gateway, upstream, tmp_path):
    path = str(tmp_path / "access.log")
    gw = gateway(rules(upstream, {"path": path, "format": "combined"}))
    assert gw.get("/a/bytes/7")[0] == 200
    assert wait_until(lambda: len(read_lines(path)) == 1)
    line = read_lines(path)[0]
    assert re.match(r'^127\.0\.0\.1 - - "GET /a/bytes/7 HTTP/1\.1" 200 7 '
                    r'api=a upstream=127\.0\.0\.1:\d+ duration_ms=[\d.]+$',
                    line), line


def test_off_by_default(gateway, upstream):
    gw = gateway(rules(upstream))
    assert gw.get("/a/bytes/5")[0] == 200
    assert "/a/bytes/5" not in gw.log()
