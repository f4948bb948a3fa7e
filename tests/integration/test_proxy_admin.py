"""The admin endpoint with plain APIs: /status, /metrics, POST /reload."""

import json
import os
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import BUILD, wait_until

SLUICED_VERSION_CMD = [os.path.join(BUILD, "sluiced"), "-V"]


@pytest.fixture
def gw(gateway, upstream_factory):
    a, b = upstream_factory(), upstream_factory()
    gw = gateway({"apis": [
        {"name": "alpha", "listen_path": "/a/", "strip_listen_path": True,
         "upstream": a.url},
        {"name": "beta", "listen_path": "/b/", "strip_listen_path": True,
         "upstream": b.url},
    ]})
    gw.ups = (a, b)
    return gw


def traffic(gw):
    """3x 2xx, 1x 4xx, 1x 5xx on alpha, one slow 2xx among them."""
    for path, want in [("/a/echo", 200), ("/a/bytes/10", 200),
                       ("/a/sleep/250", 200), ("/a/status/404", 404),
                       ("/a/status/503", 503)]:
        assert gw.get(path)[0] == want


def api_status(gw, name):
    for api in gw.status()["apis"]:
        if api["name"] == name:
            return api
    raise KeyError(name)


def test_status_reports_version_uptime_and_apis(gw):
    st = gw.status()
    version = subprocess.run(SLUICED_VERSION_CMD, capture_output=True,
                             text=True).stdout.split()[1]
    assert st["version"] == version
    assert st["pid"] == gw.pid
    assert st["uptime_s"] > 0
    assert st["threads"] == 2
    assert st["rules"] == gw.path
    assert sorted(a["name"] for a in st["apis"]) == ["alpha", "beta"]
    for api in st["apis"]:
        assert api["kind"] == "plain"
        assert set(api["requests"]) == {"1xx", "2xx", "3xx", "4xx", "5xx"}
        assert api["total"] == 0 and api["inflight"] == 0


def test_status_counts_requests_by_class(gw):
    traffic(gw)
    assert wait_until(lambda: api_status(gw, "alpha")["total"] == 5), \
        api_status(gw, "alpha")
    alpha = api_status(gw, "alpha")
    assert alpha["requests"] == {"1xx": 0, "2xx": 3, "3xx": 0, "4xx": 1,
                                 "5xx": 1}
    assert alpha["inflight"] == 0
    assert alpha["bytes_out"] >= 10
    assert api_status(gw, "beta")["total"] == 0


def test_status_latency_quantiles(gw):
    traffic(gw)
    assert wait_until(lambda: api_status(gw, "alpha")["total"] == 5)
    lat = api_status(gw, "alpha")["latency_ms"]
    # Four fast answers and one of 250 ms: the median is fast, p99 is the
    # slow one (buckets are ~19% wide).
    assert 0 < lat["p50"] < 150
    assert 200 <= lat["p99"] < 2000
    assert lat["p99"] >= lat["p50"]


def test_no_route_not_counted_for_an_api(gw):
    assert gw.get("/nowhere")[0] == 404
    assert all(a["total"] == 0 for a in gw.status()["apis"])


def metrics(gw):
    status, body = gw.admin("/metrics")
    assert status == 200
    return {f.name: f for f in
            text_string_to_metric_families(body.decode())}


def test_metrics_parse_and_count_by_api_and_class(gw):
    traffic(gw)
    assert wait_until(lambda: api_status(gw, "alpha")["total"] == 5)
    fams = metrics(gw)
    # The client library strips _total from counter family names.
    reqs = fams.get("sluice_requests") or fams["sluice_requests_total"]
    assert reqs.type == "counter"
    by = {(s.labels["api"], s.labels["class"]): s.value
          for s in reqs.samples if s.name == "sluice_requests_total"}
    assert by[("alpha", "2xx")] == 3
    assert by[("alpha", "4xx")] == 1
    assert by[("alpha", "5xx")] == 1
    assert by[("beta", "2xx")] == 0


def test_metrics_duration_histogram(gw):
    traffic(gw)
    assert wait_until(lambda: api_status(gw, "alpha")["total"] == 5)
    hist = metrics(gw)["sluice_request_duration_seconds"]
    assert hist.type == "histogram"
    alpha = [s for s in hist.samples if s.labels.get("api") == "alpha"]
    buckets = [s for s in alpha if s.name.endswith("_bucket")]
    count = [s.value for s in alpha if s.name.endswith("_count")]
    total = [s.value for s in alpha if s.name.endswith("_sum")]
    assert count == [5]
    assert total and total[0] >= 0.2
    inf = [s.value for s in buckets if s.labels["le"] == "+Inf"]
    assert inf == [5]
    # Cumulative buckets never go down.
    values = [s.value for s in sorted(
        buckets, key=lambda s: float(s.labels["le"]))]
    assert values == sorted(values)
    under_100ms = [s.value for s in buckets
                   if s.labels["le"] != "+Inf" and
                   float(s.labels["le"]) <= 0.1]
    assert under_100ms and max(under_100ms) <= 4


def test_post_reload_applies_new_rules(gw):
    a, b = gw.ups
    rules = dict(gw.rules)
    rules["apis"] = [dict(rules["apis"][0], upstream=b.url)] + \
        rules["apis"][1:]
    gw.write_rules(rules)
    status, body = gw.admin("/reload", method="POST")
    assert status == 200, body
    assert json.loads(body) == {"reloaded": True}
    assert json.loads(gw.get("/a/echo")[2])["port"] == b.port
    assert gw.status()["reloads"] == 1


def test_post_reload_bad_file_is_400_with_position(gw):
    a, _ = gw.ups
    with open(gw.path, "w") as f:
        f.write('{"apis": [{"name": "alpha", "listen_path": "/a/",\n'
                '  "upstream": "http://127.0.0.1:1", "oops": true}]}\n')
    status, body = gw.admin("/reload", method="POST")
    assert status == 400
    err = json.loads(body)["error"]
    assert err.startswith(gw.path + ":2:"), err
    # The running rules stay.
    assert json.loads(gw.get("/a/echo")[2])["port"] == a.port
    assert gw.status()["reloads"] == 0


def test_get_reload_is_not_a_reload(gw):
    status, _ = gw.admin("/reload")
    assert status in (404, 405)
    assert gw.status()["reloads"] == 0


def test_status_inflight_and_bytes(gw):
    import threading
    done = {}
    t = threading.Thread(target=lambda: done.update(r=gw.get("/a/sleep/800")))
    t.start()
    try:
        assert wait_until(lambda: api_status(gw, "alpha")["inflight"] == 1)
        assert gw.status()["connections"] >= 1
        fams = metrics(gw)
        inflight = {s.labels["api"]: s.value
                    for s in fams["sluice_inflight_requests"].samples}
        assert inflight["alpha"] == 1 and inflight["beta"] == 0
    finally:
        t.join(timeout=10)
    assert done["r"][0] == 200
    assert wait_until(lambda: api_status(gw, "alpha")["inflight"] == 0)
    gw.request("POST", "/b/echo", body=b"u" * 100000)
    beta = api_status(gw, "beta")
    assert beta["bytes_in"] >= 100000
    assert beta["bytes_out"] > 0
