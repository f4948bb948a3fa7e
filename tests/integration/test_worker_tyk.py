"""Tyk plugins in sluice-worker: the decorators, the three call forms, the
auth_check metadata contract, the gateway module and bundles."""

import json
import time

import pytest

from worker_fixtures import HOOKS, api, req
import worker_fixtures

worker = worker_fixtures.worker  # the fixture, for the tests below

TYK = """
from tyk.decorators import *
from gateway import TykGateway as tyk

@Hook
def pre(request, session, spec):
    request.add_header("X-Pre", "1")
    return request, session

@Pre
def old_pre(request, session, spec):
    request.add_header("X-Old-Pre", "1")
    return request, session

@CustomKeyCheck
def auth(request, session, metadata, spec):
    key = request.get_header("Authorization")
    if key == "good":
        metadata["token"] = key
        metadata["plan"] = "gold"
        session.rate = 10.0
        session.per = 1.0
        session.quota_max = 1000
    return request, session, metadata

@PostKeyAuth
def after_auth(request, session, spec):
    request.add_header("X-Plan", session.metadata["plan"])
    request.add_header("X-Token", session.metadata["token"])
    request.add_header("X-Rate", str(session.rate))
    return request, session

@Post
def post(request, session, spec):
    request.add_header("X-Post", "1")
    return request, session

@Hook
def response(request, response, session, metadata, spec):
    response.headers["X-Response"] = str(response.status_code)
    return response
"""


def test_three_and_four_parameter_forms_with_metadata_merge(worker):
    w = worker([api("a", pre=["tykmod.pre", "tykmod.old_pre"],
                    auth_check="tykmod.auth",
                    post_key_auth=["tykmod.after_auth"],
                    post=["tykmod.post"])], modules={"tykmod": TYK})
    res = w.call("a", req(headers=[["Authorization", "good"]]))
    assert res["ok"], res.get("error")
    assert res["req"]["headers"] == [
        ["Authorization", "good"], ["X-Pre", "1"], ["X-Old-Pre", "1"],
        ["X-Plan", "gold"], ["X-Token", "good"], ["X-Rate", "10.0"],
        ["X-Post", "1"]]

    # The limits auth_check set went to sluiced, which counts them, once.
    assert [{k: v for k, v in a.items() if k != "id"}
            for a in w.limit_asks] == [
        {"t": "limit", "api": "a", "key": "good", "rate": 10.0, "per": 1.0,
         "quota_max": 1000, "quota_period": 0}]


KEYS = """
import time

def auth(request, session, metadata, spec):
    metadata["token"] = "k"
    kind = request.get_header("X-Kind")
    if kind == "inactive":
        session.is_inactive = True
    elif kind == "expired":
        session.expires = int(time.time()) - 10
    elif kind == "valid":
        session.expires = int(time.time()) + 3600
    elif kind == "quota":
        session.quota_max = 5
        session.quota_renewal_rate = 60
    return request, session, metadata
"""


@pytest.mark.parametrize("kind,status,error", [
    ("inactive", 403, "Key is inactive, please renew"),
    ("expired", 401, "Key has expired, please renew"),
    ("valid", None, None),
    ("none", None, None),
])
def test_inactive_and_expired_keys_are_refused_as_tyk_does(worker, kind,
                                                          status, error):
    w = worker([api("a", auth_check="keys.auth")], modules={"keys": KEYS})
    res = w.call("a", req(headers=[["X-Kind", kind]]))
    assert res["ok"], res.get("error")
    if status is None:
        assert "reply" not in res
        assert w.limit_asks == []  # no rate or quota set: nothing to count
    else:
        assert res["reply"]["status"] == status
        assert json.loads(res["reply"]["body"]) == {"error": error}


def test_a_quota_alone_is_counted_by_sluiced(worker):
    w = worker([api("a", auth_check="keys.auth")], modules={"keys": KEYS})
    w.call("a", req(headers=[["X-Kind", "quota"]]))
    assert [(a["key"], a["rate"], a["per"], a["quota_max"], a["quota_period"])
            for a in w.limit_asks] == [("k", 0.0, 0.0, 5, 60)]


COUNTED = """
from tyk.decorators import *

@CustomKeyCheck
def auth(request, session, metadata, spec):
    metadata["token"] = "k"
    session.quota_max = 5
    session.quota_renewal_rate = 60
    return request, session, metadata

@PostKeyAuth
def after_auth(request, session, spec):
    request.add_header("X-Left", str(session.quota_remaining))
    return request, session

@Post
def post(request, session, spec):
    request.add_header("X-Renews", str(session.quota_renews))
    return request, session
"""


@pytest.mark.parametrize("verdict,status,error", [
    ("rate", 429, "Rate limit exceeded"), ("quota", 403, "Quota exceeded")])
def test_a_refused_key_stops_before_post_key_auth_and_post(
        worker, verdict, status, error):
    w = worker([api("a", auth_check="c.auth", post_key_auth=["c.after_auth"],
                    post=["c.post"])], modules={"c": COUNTED})
    w.limit_answer = {"v": verdict, "wait_ms": 2500, "remaining": -1,
                      "renews_ms": -1}
    res = w.call("a", req())
    assert res["reply"]["status"] == status
    assert json.loads(res["reply"]["body"]) == {"error": error}
    assert ["Retry-After", "3"] in res["reply"]["headers"]


def test_limits_go_with_the_result_when_no_hook_could_tell(worker):
    # Allowed by sluiced and auth_check is the last hook: no round trip.
    w = worker([api("a", auth_check="keys.auth"),
                api("b", auth_check="keys.auth", post=["tykmod.post"]),
                api("c", auth_check="keys.auth",
                    response=["tykmod.response"])],
               modules={"keys": KEYS, "tykmod": TYK}, limits_in_result=True)
    res = w.call("a", req(headers=[["X-Kind", "quota"]]))
    assert res["lim"] == {"key": "k", "rate": 0.0, "per": 0.0,
                          "quota_max": 5, "quota_period": 60}
    assert w.limit_asks == []
    # A post hook, or a response hook, could see the count: asked first.
    for name in ("b", "c"):
        res = w.call(name, req(headers=[["X-Kind", "quota"]]))
        assert "lim" not in res
    assert [a["api"] for a in w.limit_asks] == ["b", "c"]


def test_later_hooks_see_the_quota_left_and_so_does_sluiced(worker):
    w = worker([api("a", auth_check="c.auth", post_key_auth=["c.after_auth"],
                    post=["c.post"])], modules={"c": COUNTED})
    w.limit_answer = {"v": "pass", "wait_ms": -1, "remaining": 3,
                      "renews_ms": 59500}
    res = w.call("a", req())
    headers = dict(res["req"]["headers"])
    assert headers["X-Left"] == "3"
    reset = int(headers["X-Renews"])
    assert abs(reset - (time.time() + 60)) < 5
    assert res["quota"] == {"max": 5, "remaining": 3, "reset": reset}


def test_auth_check_without_token_answers_403(worker):
    w = worker([api("a", auth_check="tykmod.auth",
                    post=["tykmod.post"])], modules={"tykmod": TYK})
    res = w.call("a", req(headers=[["Authorization", "bad"]]))
    assert res["ok"]
    reply = res["reply"]
    assert reply["status"] == 403
    assert json.loads(reply["body"]) == {"error": "Key not authorised"}
    assert ["Content-Type", "application/json"] in reply["headers"]


def test_five_parameter_response_form(worker):
    w = worker([api("a", response=["tykmod.response"])],
               modules={"tykmod": TYK})
    res = w.call("a", phase="response",
                 resp={"status": 201, "headers": [], "body": b""})
    assert res["resp"] == {"headers": [["X-Response", "201"]]}


def test_gateway_store_get_log(worker):
    src = """
    from gateway import TykGateway as tyk
    from tyk.decorators import Hook

    @Hook
    def hook(request, session, spec):
        tyk.store_data("k", "v1", 60)
        got = tyk.get_data("k")
        missing = tyk.get_data("absent")
        tyk.log("got " + got.decode(), "warning")
        tyk.log_error("missing is", repr(missing))
        tyk.trigger_event("KeyUsed", '{"key": "k"}')
        request.add_header("X-Got", got.decode())
        return request, session
    """
    w = worker([api("a", pre=["gw.hook"])], modules={"gw": src})
    res = w.call("a", req(headers=[]))
    assert res["ok"], res.get("error")
    assert res["req"]["headers"] == [["X-Got", "v1"]]
    assert w.kv == {"k": b"v1"}
    w.drain_logs()
    assert {"t": "log", "level": "warn", "api": "a", "msg": "got v1"} \
        in w.logs
    assert {"t": "log", "level": "error", "api": "a",
            "msg": "missing is b''"} in w.logs
    assert {"t": "log", "level": "info", "api": "a",
            "msg": 'event KeyUsed: {"key": "k"}'} in w.logs


MANIFEST = {
    "file_list": ["middleware.py", "helpers.py"],
    "custom_middleware": {
        "pre": [{"name": "MyPre"}],
        "auth_check": {"name": "MyAuth"},
        "response": [{"name": "MyResponse"}],
        "driver": "python",
    },
    "checksum": "",
    "signature": "",
}

BUNDLE_MW = """
from tyk.decorators import *
from helpers import tag

@Hook
def MyPre(request, session, spec):
    request.add_header("X-Bundle", tag())
    return request, session

@Hook
def MyAuth(request, session, metadata, spec):
    metadata["token"] = "bundle"
    return request, session, metadata

@Hook
def MyResponse(request, response, session, metadata, spec):
    response.headers["X-Bundle"] = tag()
    return response
"""


def test_tyk_bundle_loads_as_is(worker, tmp_path):
    files = {"bundle/manifest.json": json.dumps(MANIFEST),
             "bundle/middleware.py": BUNDLE_MW,
             "bundle/helpers.py": "def tag():\n    return 'from-bundle'\n",
             # A second bundle with the same file name must not collide.
             "other/middleware.py": BUNDLE_MW.replace("tag()", "'other'")}
    w = worker([api("b", pre=["MyPre"], auth_check="MyAuth",
                    response=["MyResponse"],
                    bundle_dir=str(tmp_path / "bundle"),
                    bundle_modules=["middleware", "helpers"]),
                api("o", pre=["MyPre"], bundle_dir=str(tmp_path / "other"),
                    bundle_modules=["middleware"])],
               files=files)
    assert w.ready["errors"] == {}
    res = w.call("b", req(headers=[]))
    assert res["req"]["headers"] == [["X-Bundle", "from-bundle"]]
    res = w.call("o", req(headers=[]))
    assert res["req"]["headers"] == [["X-Bundle", "other"]]
    res = w.call("b", phase="response",
                 resp={"status": 200, "headers": [], "body": b""})
    assert res["resp"] == {"headers": [["X-Bundle", "from-bundle"]]}


def test_bundle_modules_as_file_names_and_subpackages(worker, tmp_path):
    mw = """
    from lib.extra import VALUE

    def Tag(request, session, spec):
        request.add_header("X-Extra", VALUE)
        return request, session
    """
    files = {"b/manifest.json": "{}", "b/middleware.py": mw,
             "b/lib/__init__.py": "", "b/lib/extra.py": "VALUE = 'sub'\n"}
    w = worker([api("x", pre=["Tag"], bundle_dir=str(tmp_path / "b"),
                    bundle_modules=["middleware.py", "manifest.json"]),
                api("y", pre=["Tag"], bundle_dir=str(tmp_path / "b"),
                    bundle_modules=["lib.extra", "middleware"])],
               files=files)
    assert w.ready["errors"] == {}
    for name in ("x", "y"):
        res = w.call(name, req(headers=[]))
        assert res["req"]["headers"] == [["X-Extra", "sub"]]


def test_bundle_with_unknown_hook_is_an_import_error(worker, tmp_path):
    w = worker([api("b", pre=["Nope"], bundle_dir=str(tmp_path / "bundle"),
                    bundle_modules=["middleware"])],
               files={"bundle/middleware.py": BUNDLE_MW,
                      "bundle/helpers.py": "def tag():\n    return 't'\n"})
    assert "no hook Nope in the bundle" in w.ready["errors"]["b"]


@pytest.mark.parametrize("headers,expect", [
    ([["Authorization", "secret-1"]], "reply-none"),
    ([], "reply-401"),
    ([["Authorization", "wrong"]], "reply-403"),
])
def test_example_tyk_plugin(worker, headers, expect):
    """hooks/examples/tykstyle.py, as the README shows it."""
    w = worker([api("ex", pre=["tykstyle.add_headers"],
                    auth_check="tykstyle.check_key",
                    post_key_auth=["tykstyle.count"],
                    post=["tykstyle.tag_user"],
                    response=["tykstyle.scrub"],
                    config_data=json.dumps({"keys": {"secret-1": "alice"}}))],
               path=[str(HOOKS / "examples")])
    assert w.ready["errors"] == {}
    res = w.call("ex", req(path="/x?shout=1", method="POST",
                           headers=headers + [["X-Internal-Debug", "1"]],
                           body=b"hi"))
    assert res["ok"], res.get("error")
    if expect == "reply-401":
        assert res["reply"]["status"] == 401
        assert res["reply"]["body"] == b"missing key"
        return
    if expect == "reply-403":
        assert res["reply"]["status"] == 403
        return
    assert "reply" not in res
    out = dict(res["req"]["headers"])
    assert out["X-Gateway"] == "sluice" and out["X-User"] == "alice"
    assert out["X-Call-Count"] == "1" and "X-Internal-Debug" not in out
    assert res["req"]["path"] == "/x?shout=1&from_gateway=1"
    assert res["req"]["body"] == b"HI"
    res = w.call("ex", phase="response",
                 resp={"status": 503, "headers": [["Server", "u"]],
                       "body": b"stack trace"})
    assert res["resp"]["body"] == b'{"error": "upstream failed"}'
    assert res["resp"]["headers"] == [["Content-Type", "application/json"]]
