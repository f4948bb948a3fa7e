"""/metrics through a real Prometheus parser (Debian's
python3-prometheus-client): the families an operator alerts on exist, have
the right types and labels, and count what the gateway did."""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from opsutil import Traffic

CLASSES = {"1xx", "2xx", "3xx", "4xx", "5xx"}


def families(gw):
    status, body = gw.admin("/metrics")
    assert status == 200
    # The parser drops "_total" from counter family names.
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


@pytest.fixture(scope="module")
def metrics(ops_gateway):
    Traffic(ops_gateway.port, limit=400, seconds=20, pause=0).run_to_end()
    return families(ops_gateway)


def samples(family, suffix=""):
    return [s for s in family.samples if s.name == family.name + suffix]


def test_request_counters_by_api_and_status_class(metrics, ops_gateway):
    fam = metrics["sluice_requests"]
    assert fam.type == "counter"
    seen = {(s.labels["api"], s.labels["class"]): s.value
            for s in samples(fam, "_total")}
    for api in ("plain", "hooked"):
        assert {c for a, c in seen if a == api} == CLASSES
    assert seen[("plain", "2xx")] > 0
    assert seen[("plain", "5xx")] > 0       # the upstream's /fail
    assert seen[("hooked", "2xx")] > 0
    st = {a["name"]: a for a in ops_gateway.status()["apis"]}
    assert seen[("plain", "2xx")] == st["plain"]["requests"]["2xx"]


def test_latency_histograms_per_api(metrics):
    fam = metrics["sluice_request_duration_seconds"]
    assert fam.type == "histogram"
    for api in ("plain", "hooked"):
        buckets = [s for s in samples(fam, "_bucket")
                   if s.labels["api"] == api]
        assert buckets[-1].labels["le"] == "+Inf"
        values = [s.value for s in buckets]
        assert values == sorted(values)     # cumulative
        count = [s.value for s in samples(fam, "_count")
                 if s.labels["api"] == api]
        assert count == [values[-1]] and values[-1] > 0


def test_pool_gauges(metrics, ops_gateway):
    fam = metrics["sluice_pool_workers"]
    assert fam.type == "gauge"
    total = sum(s.value for s in fam.samples)
    assert total >= 1
    assert metrics["sluice_pool_queue_depth"].type == "gauge"


def test_hook_durations(metrics):
    fam = metrics["sluice_hook_duration_seconds"]
    assert fam.type == "histogram"
    count = sum(s.value for s in samples(fam, "_count"))
    assert count > 0


def bpf_or_xfail(gw):
    bpf = gw.status()["bpf"]
    if not bpf["loaded"]:
        pytest.xfail("BPF is not loaded here: %s" % bpf["reason"])


def test_spliced_bytes(metrics, ops_gateway):
    bpf_or_xfail(ops_gateway)
    assert metrics["sluice_spliced_bytes"].type == "counter"


def test_xdp_drops(metrics, ops_gateway):
    """The family is there whenever BPF is; its samples appear per port
    once an XDP program is attached (bpf.xdp.interfaces)."""
    bpf_or_xfail(ops_gateway)
    fam = metrics["sluice_xdp_packets"]
    assert fam.type == "counter"
    for s in fam.samples:
        assert s.labels["action"] in ("pass", "drop")


def test_every_family_has_help_and_type(ops_gateway):
    status, body = ops_gateway.admin("/metrics")
    text = body.decode()
    for fam in text_string_to_metric_families(text):
        assert fam.documentation, fam.name
        assert fam.type in ("counter", "gauge", "histogram"), fam.name
