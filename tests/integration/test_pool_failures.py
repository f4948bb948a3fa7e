"""How the worker pool answers when hooks misbehave, through sluiced: a hook
past its deadline, a hook that kills its worker, one that raises, modules
that do not import, full and slow queues. Each failure stays with its own
request; the next request is served."""

import json
import os
import subprocess
import time

from conftest import BUILD, SLOW
from pool_helpers import (echoed, hooked_rules, parallel, pool, post,
                          wait_pool)


def test_deadline_answers_504_kills_the_worker_and_replaces_it(
        gateway, upstream, tmp_path):
    gw = gateway(hooked_rules(tmp_path, upstream, {
        "slow": {"pre": ["pt.sleepy"], "timeout_ms": 300,
                 "config": {"sleep": 30}},
        "fast": {"pre": ["pt.tag"]}}))
    before = {w["pid"] for w in wait_pool(gw)["workers"]}

    t0 = time.time()
    status, _, _ = post(gw, "/slow/echo")
    assert status == 504
    assert time.time() - t0 < 3 * SLOW

    assert gw.wait_log("reason=deadline")
    after = wait_pool(gw)
    assert after["killed"] == 1
    assert len(before - {w["pid"] for w in after["workers"]}) == 1
    assert post(gw, "/fast/echo")[0] == 200


def test_deadline_with_on_error_continue_forwards_unchanged(
        gateway, upstream, tmp_path):
    gw = gateway(hooked_rules(tmp_path, upstream, {
        "slow": {"pre": ["pt.sleepy"], "timeout_ms": 300,
                 "on_error": "continue", "config": {"sleep": 30}}}))
    wait_pool(gw)
    status, _, body = post(gw, "/slow/echo")
    assert status == 200
    assert "x-worker-pid" not in echoed(body)


def test_hook_that_kills_its_worker_answers_502_and_is_replaced(
        gateway, upstream, tmp_path):
    gw = gateway(hooked_rules(tmp_path, upstream, {
        "die": {"pre": ["pt.die"]}, "fast": {"pre": ["pt.tag"]}}))
    wait_pool(gw)
    assert post(gw, "/die/echo")[0] == 502
    assert gw.wait_log("worker died pid=")
    assert "exit=7 calls_failed=1" in gw.log()
    p = wait_pool(gw)
    assert p["apis"]["die"]["errors"] == 1
    assert post(gw, "/fast/echo")[0] == 200


def test_exception_answers_500_and_logs_the_traceback(
        gateway, upstream, tmp_path):
    gw = gateway(hooked_rules(tmp_path, upstream, {
        "boom": {"pre": ["pt.boom"]}}))
    wait_pool(gw)
    status, _, _ = post(gw, "/boom/echo")
    assert status == 500
    assert gw.wait_log('raise ValueError(\\"boom from the hook\\")')
    log = gw.log()
    assert "api=boom worker=" in log
    assert 'hook raised api=boom' in log
    # The worker survives an exception.
    assert pool(gw)["killed"] == 0
    assert post(gw, "/boom/echo")[0] == 500


def test_exception_with_on_error_continue_forwards_unchanged(
        gateway, upstream, tmp_path):
    gw = gateway(hooked_rules(tmp_path, upstream, {
        "boom": {"pre": ["pt.boom"], "on_error": "continue"}}))
    wait_pool(gw)
    assert post(gw, "/boom/echo")[0] == 200


def test_import_error_answers_503_saying_why(gateway, upstream, tmp_path):
    rules = hooked_rules(tmp_path, upstream, {
        "broken": {"pre": ["missing_module.fn"]},
        "fine": {"pre": ["pt.tag"]}})
    gw = gateway(rules)
    p = wait_pool(gw)
    assert "No module named 'missing_module'" in p["apis"]["broken"]["status"]
    assert p["apis"]["fine"]["status"] == "ok"

    status, _, body = post(gw, "/broken/echo")
    assert status == 503
    assert b"missing_module" in body
    assert post(gw, "/fine/echo")[0] == 200
    log = gw.log()
    assert "api=broken worker=" in log
    assert "ModuleNotFoundError: No module named 'missing_module'" in log
    assert "hook import failed, API answers 503 api=broken" in log


def test_check_mode_imports_hooks_and_reports_errors(upstream, tmp_path):
    good = hooked_rules(tmp_path, upstream, {"fine": {"pre": ["pt.tag"]}})
    bad = hooked_rules(tmp_path, upstream, {
        "fine": {"pre": ["pt.tag"]}, "broken": {"pre": ["pt.nosuch"]}})
    for name, rules in (("good", good), ("bad", bad)):
        rules.update({"listen": ["127.0.0.1:9"], "bpf": {"splice": "pipe"}})
        (tmp_path / (name + ".yaml")).write_text(json.dumps(rules))

    sluiced = os.path.join(BUILD, "sluiced")
    ok = subprocess.run([sluiced, "-t", "-c", str(tmp_path / "good.yaml")],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    ko = subprocess.run([sluiced, "-t", "-c", str(tmp_path / "bad.yaml")],
                        capture_output=True, text=True, timeout=60)
    assert ko.returncode == 1
    # At the broken API's entry (JSON is YAML: all on line 1), once, with
    # the traceback's last line.
    col = (tmp_path / "bad.yaml").read_text().index('{"name": "broken"') + 1
    assert (f"bad.yaml:1:{col}: API broken: cannot load hook pt.nosuch\n"
            in ko.stderr), ko.stderr
    assert ko.stderr.count("cannot load hook") == 1, ko.stderr
    assert "AttributeError: module pt " in ko.stderr
    assert "API fine" not in ko.stderr


def test_full_queue_and_long_wait_answer_503(gateway, upstream, tmp_path):
    gw = gateway(hooked_rules(tmp_path, upstream, {
        "one": {"pre": ["pt.sleepy"], "config": {"sleep": 0.5},
                "max_inflight": 1, "queue": 2, "queue_timeout_ms": 700}}))
    wait_pool(gw)
    t0 = time.time()
    statuses = sorted(r[0] for r in parallel(
        6, lambda i: post(gw, "/one/echo")))
    # One runs, two wait (the second of them past 700 ms), three are
    # refused at once.
    assert statuses.count(200) == 2
    assert statuses.count(503) == 4
    assert time.time() - t0 < 5 * SLOW
    api = pool(gw)["apis"]["one"]
    assert api["rejected"] == 4
