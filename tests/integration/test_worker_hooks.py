"""sluice-worker: hook chains, mutations and replies, through a real worker
process on a real socketpair (see worker_fixtures.py)."""

import json

import pytest

from worker_fixtures import api, req
import worker_fixtures

worker = worker_fixtures.worker  # the fixture, for the tests below

MUTATE = """
import sluice

def set_header(request, session, spec):
    request.add_header("X-New", "1")
    return request, session

def delete_header(request, session, spec):
    request.delete_header("x-secret")
    return request, session

def edit_headers_dict(request, session, spec):
    h = request.object.headers
    h["User-Agent"] = "hooked"
    h["X-Added"] = "yes"
    del h["Accept"]
    return request, session

def set_and_delete_lists(request, session, spec):
    request.object.set_headers["X-Set"] = "s"
    request.object.delete_headers.append("X-Secret")
    return request, session

def add_param(request, session, spec):
    request.add_param("b", "2")
    return request, session

def delete_param(request, session, spec):
    request.delete_param("a")
    return request, session

def edit_params_dict(request, session, spec):
    request.object.params["a"] = "changed"
    request.object.params["c"] = "3"
    return request, session

def new_path(request, session, spec):
    request.object.url = "/v2/items?x=1"
    return request, session

def new_method(request, session, spec):
    request.object.method = "POST"
    return request, session

def new_body(request, session, spec):
    request.object.body = request.object.body.upper()
    return request, session

def new_raw_body(request, session, spec):
    request.object.raw_body = b"\\x00\\xffbinary"
    return request, session

def in_place(request, session, spec):
    request.add_header("X-In-Place", "1")

def noop(request, session, spec):
    return request, session

def read_everything(request, session, spec):
    o = request.object
    _ = (o.headers, o.params, o.body, o.raw_body, o.url, o.method, o.scheme,
         o.request_uri, request.get_header("host"))
    return request, session
"""

HEADERS = [["Host", "x"], ["User-Agent", "curl"], ["Accept", "*/*"],
           ["X-Secret", "s3"], ["Cookie", "a=1"], ["Cookie", "b=2"]]


@pytest.mark.parametrize("hook,request_in,changes", [
    ("noop", req(headers=HEADERS), None),
    ("read_everything", req(path="/p?a=1", headers=HEADERS, body=b"x"),
     None),
    ("set_header", req(headers=HEADERS),
     {"headers": HEADERS + [["X-New", "1"]]}),
    ("delete_header", req(headers=HEADERS),
     {"headers": [h for h in HEADERS if h[0] != "X-Secret"]}),
    ("edit_headers_dict", req(headers=HEADERS),
     {"headers": [["Host", "x"], ["User-Agent", "hooked"], ["X-Secret", "s3"],
                  ["Cookie", "a=1"], ["Cookie", "b=2"], ["X-Added", "yes"]]}),
    ("set_and_delete_lists", req(headers=HEADERS),
     {"headers": [h for h in HEADERS if h[0] != "X-Secret"]
      + [["X-Set", "s"]]}),
    ("add_param", req(path="/p?a=1"), {"path": "/p?a=1&b=2"}),
    ("delete_param", req(path="/p?a=1&b=2&a=3"), {"path": "/p?b=2"}),
    ("edit_params_dict", req(path="/p?a=1&b=2"),
     {"path": "/p?a=changed&b=2&c=3"}),
    ("new_path", req(path="/v1/items"), {"path": "/v2/items?x=1"}),
    ("new_method", req(method="GET"), {"method": "POST"}),
    ("new_body", req(method="POST", body=b"hello"), {"body": b"HELLO"}),
    ("new_raw_body", req(method="POST", body=b"x"),
     {"body": b"\x00\xffbinary"}),
    ("in_place", req(headers=[["Host", "x"]]),
     {"headers": [["Host", "x"], ["X-In-Place", "1"]]}),
])
def test_request_mutation_is_reported_as_only_what_changed(
        worker, hook, request_in, changes):
    w = worker([api("a", pre=[f"mut.{hook}"])], modules={"mut": MUTATE})
    res = w.call("a", request_in)
    assert res["ok"], res.get("error")
    assert "reply" not in res
    assert res.get("req") == changes


def test_request_chain_runs_in_order_in_one_visit(worker):
    src = """
    def step(name):
        def hook(request, session, spec):
            seen = request.get_header("X-Order")
            request.object.headers["X-Order"] = (seen + "," if seen else "") + name
            return request, session
        return hook
    pre1, pre2, post_key_auth, post = (step(n) for n in
                                       ("pre1", "pre2", "pka", "post"))

    def auth(request, session, metadata, spec):
        metadata["token"] = "t"
        request.object.headers["X-Order"] += ",auth"
        return request, session, metadata
    """
    w = worker([api("a", pre=["order.pre1", "order.pre2"],
                    auth_check="order.auth",
                    post_key_auth=["order.post_key_auth"],
                    post=["order.post"])], modules={"order": src})
    res = w.call("a", req(headers=[["Host", "x"]]))
    assert res["ok"], res.get("error")
    assert res["req"]["headers"] == [
        ["Host", "x"], ["X-Order", "pre1,pre2,auth,pka,post"]]


def test_untouched_duplicate_headers_keep_order_and_spelling(worker):
    src = """
    def hook(request, session, spec):
        request.add_header("x-extra", "1")
        return request, session
    """
    w = worker([api("a", pre=["dup.hook"])], modules={"dup": src})
    headers = [["host", "x"], ["set-cookie", "a"], ["X-Y", "1"],
               ["set-cookie", "b"]]
    res = w.call("a", req(headers=headers))
    assert res["req"]["headers"] == headers + [["x-extra", "1"]]


RESPONSE = """
import sluice

def rewrite(request, response, session, metadata, spec):
    response.status_code = 299
    response.headers["X-Resp"] = "1"
    del response.headers["Server"]
    response.body = "new body"
    return response

def as_tuple(request, response, session, metadata, spec):
    response.headers["X-Tuple"] = "1"
    return (response,)

def untouched(request, response, session, metadata, spec):
    return response

def replace(request, response, session, metadata, spec):
    return sluice.reply(502, "hidden", {"X-Replaced": "1"})

def sees_request(request, response, session, metadata, spec):
    response.headers["X-Path"] = request.object.url
    return response

def sees_session(request, response, session, metadata, spec):
    response.headers["X-Session"] = f"{session.metadata} {session.rate}"
    response.headers["X-Metadata"] = str(metadata)
    return response

def auth(request, session, metadata, spec):
    metadata["token"] = "k"
    session.rate = 5
    return request, session, metadata
"""

UPSTREAM = {"status": 200, "headers": [["Server", "up"], ["Content-Type",
                                                          "text/plain"]],
            "body": b"old"}


@pytest.mark.parametrize("hook,changes", [
    ("untouched", None),
    ("rewrite", {"status": 299, "headers": [["Content-Type", "text/plain"],
                                           ["X-Resp", "1"]],
                 "body": b"new body"}),
    ("as_tuple", {"headers": UPSTREAM["headers"] + [["X-Tuple", "1"]]}),
    ("replace", {"status": 502, "headers": [["X-Replaced", "1"]],
                 "body": b"hidden"}),
    ("sees_request", {"headers": UPSTREAM["headers"] + [["X-Path", "/r"]]}),
])
def test_response_hooks_report_what_changed(worker, hook, changes):
    w = worker([api("a", response=[f"resp.{hook}"])],
               modules={"resp": RESPONSE})
    res = w.call("a", req(path="/r"), phase="response", resp=UPSTREAM)
    assert res["ok"], res.get("error")
    assert res.get("resp") == changes
    assert "req" not in res and "reply" not in res


def test_session_is_passed_on_only_for_response_hooks(worker):
    w = worker([api("with", auth_check="resp.auth",
                    response=["resp.sees_session"]),
                api("without", auth_check="resp.auth")],
               modules={"resp": RESPONSE})
    assert "sess" not in w.call("without")
    sess = w.call("with")["sess"]
    assert sess == {"s": {"metadata": {"token": "k"}, "rate": 5},
                    "m": {"token": "k"}}
    res = w.call("with", phase="response", resp=UPSTREAM, sess=sess)
    assert dict(res["resp"]["headers"])["X-Session"] == "{'token': 'k'} 5"
    assert dict(res["resp"]["headers"])["X-Metadata"] == "{'token': 'k'}"
    # Without one, the response hooks start from an empty session.
    res = w.call("with", phase="response", resp=UPSTREAM)
    assert dict(res["resp"]["headers"])["X-Session"] == "{} 0.0"


MULTIVALUE = """
def read(request, response, session, metadata, spec):
    response.headers["X-Seen"] = ";".join(
        f"{h.key}={'|'.join(h.values)}" for h in response.multivalue_headers)
    return response

def append(request, response, session, metadata, spec):
    for h in response.multivalue_headers:
        if h.key == "Set-Cookie":
            h.values.append("c=3")
    return response

def add(request, response, session, metadata, spec):
    response.multivalue_headers.add(key="X-New", values=["1", "2"])
    return response

def first_by_dict(request, response, session, metadata, spec):
    response.headers["Set-Cookie"] = "z=9"
    return response

def delete_by_dict(request, response, session, metadata, spec):
    del response.headers["Set-Cookie"]
    return response

def drop_from_list(request, response, session, metadata, spec):
    response.multivalue_headers[:] = [
        h for h in response.multivalue_headers if h.key != "Set-Cookie"]
    return response

def injected(request, response, session, metadata, spec):
    response.multivalue_headers.add("X-Bad", ["1\\r\\nX-Injected: 1"])
    return response
"""

COOKIES = {"status": 200, "headers": [["Server", "up"], ["set-cookie", "a=1"],
                                      ["X-Y", "1"], ["Set-Cookie", "b=2"]],
           "body": b""}


@pytest.mark.parametrize("hook,headers", [
    ("read", COOKIES["headers"] + [["X-Seen",
                                    "Server=up;Set-Cookie=a=1|b=2;X-Y=1"]]),
    ("append", [["Server", "up"], ["Set-Cookie", "a=1"],
                ["Set-Cookie", "b=2"], ["Set-Cookie", "c=3"], ["X-Y", "1"]]),
    ("add", COOKIES["headers"] + [["X-New", "1"], ["X-New", "2"]]),
    # As in Tyk: the dict holds the first value; the others stay.
    ("first_by_dict", [["Server", "up"], ["Set-Cookie", "z=9"],
                       ["Set-Cookie", "b=2"], ["X-Y", "1"]]),
    ("delete_by_dict", [["Server", "up"], ["X-Y", "1"]]),
    ("drop_from_list", [["Server", "up"], ["X-Y", "1"]]),
])
def test_multivalue_headers_hold_every_value(worker, hook, headers):
    w = worker([api("a", response=[f"mv.{hook}"])],
               modules={"mv": MULTIVALUE})
    res = w.call("a", phase="response", resp=COOKIES)
    assert res["ok"], res.get("error")
    assert res["resp"]["headers"] == headers


def test_a_multivalue_header_that_would_split_the_response_fails(worker):
    w = worker([api("a", response=["mv.injected"])],
               modules={"mv": MULTIVALUE})
    res = w.call("a", phase="response", resp=COOKIES)
    assert res["ok"] is False
    assert "contains CR" in res["error"]


REPLY = """
import sluice

def returned(request, session, spec):
    return sluice.reply(418, {"error": "teapot"})

def raised(request, session, spec):
    raise sluice.reply(401, "no", {"WWW-Authenticate": "Basic"})

def never(request, session, spec):
    raise AssertionError("the chain must stop at the reply")

def overrides(request, session, spec):
    ro = request.object.return_overrides
    ro.response_code = 429
    ro.response_error = "slow down"
    ro.headers = {"Retry-After": "1"}
    return request, session

def overrides_body(request, session, spec):
    ro = request.object.return_overrides
    ro.response_code = 200
    ro.response_body = "cached answer"
    return request, session
"""


@pytest.mark.parametrize("hook,status,headers,body", [
    ("returned", 418, [["Content-Type", "application/json"]],
     json.dumps({"error": "teapot"}).encode()),
    ("raised", 401, [["WWW-Authenticate", "Basic"]], b"no"),
    ("overrides", 429, [["Retry-After", "1"]], b"slow down"),
    ("overrides_body", 200, [], b"cached answer"),
])
def test_reply_stops_the_chain_and_answers(worker, hook, status, headers,
                                            body):
    w = worker([api("a", pre=[f"rep.{hook}", "rep.never"])],
               modules={"rep": REPLY})
    res = w.call("a")
    assert res["ok"], res.get("error")
    assert res["reply"] == {"status": status, "headers": headers,
                            "body": body}
    assert "req" not in res


def test_exception_gives_traceback_in_result_and_log(worker):
    src = """
    def broken(request, session, spec):
        return helper()

    def helper():
        raise ValueError("bad things")
    """
    w = worker([api("a", pre=["boom.broken"])], modules={"boom": src})
    res = w.call("a")
    assert res["ok"] is False
    err = res["error"]
    assert "Traceback" in err and "ValueError: bad things" in err
    assert "in helper" in err and "boom.py" in err
    assert "_worker.py" not in err, "runtime frames are left out"
    w.drain_logs()
    logged = [m for m in w.logs if m["level"] == "error"]
    assert logged and logged[-1]["api"] == "a"
    assert "ValueError: bad things" in logged[-1]["msg"]
    # The worker goes on serving.
    assert w.call("a")["ok"] is False


def test_import_errors_are_reported_per_api_in_ready(worker):
    src = """
    def ok(request, session, spec):
        return request, session

    def two_args(request, session):
        return request, session
    """
    w = worker([api("good", pre=["fine.ok"]),
                api("missing", pre=["nosuchmodule.hook"]),
                api("syntax", pre=["badsyntax.hook"]),
                api("noattr", pre=["fine.nothing"]),
                api("arity", pre=["fine.two_args"]),
                api("respform", response=["fine.ok"])],
               modules={"fine": src, "badsyntax": "def hook(:\n"})
    errors = w.ready["errors"]
    assert set(errors) == {"missing", "syntax", "noattr", "arity",
                           "respform"}
    assert "No module named 'nosuchmodule'" in errors["missing"]
    assert "SyntaxError" in errors["syntax"]
    assert "badsyntax.py" in errors["syntax"]
    assert "has no function nothing" in errors["noattr"]
    assert "takes 2 parameters" in errors["arity"]
    assert "(request, response, session, metadata, spec)" in \
        errors["respform"]
    assert w.ready["pid"] == w.proc.pid
    assert w.call("good")["ok"]
    res = w.call("missing")
    assert res["ok"] is False and "nosuchmodule" in res["error"]


def test_unknown_api_fails_the_call_not_the_worker(worker):
    w = worker([api("a")])
    res = w.call("nope")
    assert res["ok"] is False and "no such API" in res["error"]
    assert w.call("a") == {"t": "result", "id": 2, "ok": True}


def test_large_bodies_cross_in_several_records(worker):
    src = """
    def double(request, session, spec):
        request.object.raw_body = request.object.raw_body * 2
        return request, session
    """
    w = worker([api("a", pre=["big.double"])], modules={"big": src})
    body = bytes(range(256)) * 1024  # 256 KiB: four records
    res = w.call("a", req(method="POST", body=body))
    assert res["ok"], res.get("error")
    assert res["req"]["body"] == body * 2


def test_spec_carries_api_id_org_and_config(worker):
    src = """
    import json
    def hook(request, session, spec):
        cfg = json.loads(spec["config_data"])
        request.add_header("X-Spec", spec["APIID"] + "/" + spec["OrgID"]
                           + "/" + cfg["k"])
        return request, session
    """
    w = worker([api("billing", pre=["sp.hook"], org_id="acme",
                    config_data='{"k": "v"}')], modules={"sp": src})
    res = w.call("billing", req(headers=[]))
    assert res["req"]["headers"] == [["X-Spec", "billing/acme/v"]]


def test_hook_sees_debian_python_and_packages(worker):
    src = """
    import sys
    import msgpack  # Debian's python3-msgpack, from dist-packages
    def hook(request, session, spec):
        request.add_header("X-Exe", sys.executable)
        return request, session
    """
    w = worker([api("a", pre=["env.hook"])], modules={"env": src})
    res = w.call("a", req(headers=[]))
    assert res["ok"], res.get("error")
    assert res["req"]["headers"] == [["X-Exe", "/usr/bin/python3"]]


@pytest.mark.parametrize("body,complaint", [
    ('request.add_header("X-A", "1\\r\\nX-Injected: 1")', "contains CR"),
    ('request.add_header("Bad Name", "1")', "invalid header name"),
    ('request.object.url = "/a b"', "invalid path"),
    ('request.object.url = "http://elsewhere/"', "invalid path"),
    ('request.object.method = "GET /x"', "invalid method"),
])
def test_values_that_would_split_the_request_fail_the_hook(worker, body,
                                                          complaint):
    src = f"""
    def hook(request, session, spec):
        {body}
        return request, session
    """
    w = worker([api("a", pre=["inj.hook"])], modules={"inj": src})
    res = w.call("a")
    assert res["ok"] is False
    assert complaint in res["error"]


def test_malformed_calls_are_answered_and_the_worker_goes_on(worker):
    w = worker([api("a", pre=["mut.noop"])], modules={"mut": MUTATE})
    for c in ({"api": ["a"], "phase": "request"}, "not a map"):
        w.send({"t": "call", "id": 77, "c": c})
        res = w.recv()
        assert res["id"] == 77 and res["ok"] is False
    w.send({"t": "bogus"})
    assert w.call("a")["ok"]
