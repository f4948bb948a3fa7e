"""What sluiced does with a hook's result, end to end: request edits reach
the upstream as the hook made them (Content-Length fixed), a reply never
reaches the upstream, response edits reach the client (every value of a
repeated header too), the session the request chain left is what the
response hooks see, and the rate limits and quotas auth_check sets are
counted per key, the quota left told in X-RateLimit-* headers.

The worker's side of each result (which changes it reports) is tested in
test_worker_hooks.py and test_worker_tyk.py; here a real sluiced applies
them between a real client and the test upstream."""

import json
import textwrap
import time

import pytest

from pool_helpers import echoed, hooked_rules, wait_pool, write_hooks

FRONT = textwrap.dedent('''
    import sluice


    class Opaque:
        """A value msgpack cannot carry."""


    @sluice.hook
    def edit(request, session, spec):
        request.add_header("X-Added", "yes")
        request.delete_header("X-Remove-Me")
        request.add_param("added", "1")
        request.delete_param("drop")
        request.object.method = "PUT"
        request.object.body = "a new body, longer than the one sent"
        return request, session


    @sluice.hook
    def move(request, session, spec):
        request.object.url = "/echo/moved?x=1"
        return request, session


    @sluice.hook
    def answer(request, session, spec):
        return sluice.reply(201, {"made": "here"}, {"X-From": "hook"})


    def auth(request, session, metadata, spec):
        key = request.get_header("Authorization")
        if key:
            metadata["token"] = key
            session.rate = 5
            session.metadata["user"] = "alice-" + key
        return request, session, metadata


    def limited(request, session, metadata, spec):
        metadata["token"] = request.get_header("Authorization")
        plan = request.get_header("X-Plan")
        if plan == "two-a-minute":
            session.rate, session.per = 2, 60
        elif plan == "one-a-second":
            session.rate, session.per = 1, 1
        elif plan == "quota":
            session.quota_max = 2
        elif plan == "three-an-hour":
            session.quota_max, session.quota_renewal_rate = 3, 3600
        return request, session, metadata


    def left(request, session, spec):
        request.add_header("X-Left", str(session.quota_remaining))
        return request, session


    def post_ran(request, session, spec):
        print("post ran for", request.get_header("Authorization"))
        return request, session


    def opaque(request, session, metadata, spec):
        metadata["token"] = "t"
        session.metadata["thing"] = Opaque()
        return request, session, metadata


    def tag(request, response, session, metadata, spec):
        response.headers["X-User"] = session.metadata.get("user", "-")
        response.headers["X-Rate"] = str(session.rate)
        response.headers["X-Token"] = metadata.get("token", "-")
        return response


    def rewrite(request, response, session, metadata, spec):
        response.status_code = 299
        response.headers["X-Upstream-Status"] = "200"
        response.body = "short"
        return response


    def refuse(request, response, session, metadata, spec):
        raise sluice.reply(451, "not here")


    def cookie(request, response, session, metadata, spec):
        for h in response.multivalue_headers:
            if h.key == "Set-Cookie":
                h.values.append("theme=dark")
        return response
''')


def gateway_with(gateway, upstream, tmp_path, apis):
    rules = hooked_rules(tmp_path, upstream, apis)
    rules["python"]["path"] = [write_hooks(tmp_path, "front", FRONT)]
    gw = gateway(rules)
    wait_pool(gw)
    return gw


def test_request_edits_reach_the_upstream(gateway, upstream, tmp_path):
    gw = gateway_with(gateway, upstream, tmp_path,
                      {"e": {"pre": ["front.edit"]}})
    status, _, body = gw.request("POST", "/e/echo?drop=1&keep=2", body=b"x",
                                 headers={"X-Remove-Me": "1", "X-Keep": "k"})
    assert status == 200, body
    seen = json.loads(body)
    assert seen["method"] == "PUT"
    assert seen["path"] == "/echo?keep=2&added=1"
    new = b"a new body, longer than the one sent"
    assert seen["length"] == len(new)
    headers = echoed(body)
    assert headers["x-added"] == "yes" and headers["x-keep"] == "k"
    assert "x-remove-me" not in headers
    assert headers["content-length"] == str(len(new))
    assert upstream.requests[-1].body == new


def test_new_path_replaces_the_stripped_one(gateway, upstream, tmp_path):
    gw = gateway_with(gateway, upstream, tmp_path,
                      {"m": {"pre": ["front.move"]}})
    status, _, body = gw.get("/m/echo/original?y=2")
    assert status == 200, body
    assert json.loads(body)["path"] == "/echo/moved?x=1"


def test_reply_answers_without_the_upstream(gateway, upstream, tmp_path):
    gw = gateway_with(gateway, upstream, tmp_path,
                      {"r": {"pre": ["front.answer"]}})
    before = len(upstream.requests)
    status, headers, body = gw.request("POST", "/r/echo", body=b"x")
    assert status == 201
    assert json.loads(body) == {"made": "here"}
    assert headers["X-From"] == "hook"
    assert headers["Content-Type"] == "application/json"
    assert len(upstream.requests) == before


def limited_calls(gw, key, plan, n):
    """(status, error, Retry-After) of N calls with KEY on PLAN."""
    out = []
    for _ in range(n):
        status, headers, body = gw.get("/l/echo", headers={
            "Authorization": key, "X-Plan": plan})
        out.append((status, json.loads(body).get("error"),
                    headers.get("Retry-After")))
    return out


def test_rate_set_by_auth_check_is_counted_per_key(gateway, upstream,
                                                   tmp_path):
    gw = gateway_with(gateway, upstream, tmp_path,
                      {"l": {"auth_check": "front.limited"}})
    before = len(upstream.requests)
    calls = limited_calls(gw, "a", "two-a-minute", 4)
    assert [c[:2] for c in calls] == [
        (200, None), (200, None), (429, "Rate limit exceeded"),
        (429, "Rate limit exceeded")]
    # The next token comes 30 s after the burst.
    assert [c[2] for c in calls[:2]] == [None, None]
    assert 25 <= int(calls[3][2]) <= 30
    assert limited_calls(gw, "b", "two-a-minute", 1) == [(200, None, None)]
    assert len(upstream.requests) == before + 3


def test_a_limited_key_passes_again_once_its_rate_allows(gateway, upstream,
                                                        tmp_path):
    gw = gateway_with(gateway, upstream, tmp_path,
                      {"l": {"auth_check": "front.limited"}})
    assert [c[:2] for c in limited_calls(gw, "a", "one-a-second", 2)] == [
        (200, None), (429, "Rate limit exceeded")]
    time.sleep(1.5)
    assert limited_calls(gw, "a", "one-a-second", 1) == [(200, None, None)]


def test_a_spent_quota_answers_403(gateway, upstream, tmp_path):
    gw = gateway_with(gateway, upstream, tmp_path,
                      {"l": {"auth_check": "front.limited"}})
    # It never renews: no Retry-After.
    assert limited_calls(gw, "a", "quota", 3) == [
        (200, None, None), (200, None, None), (403, "Quota exceeded", None)]


def quota_headers(gw, key, plan):
    """Status and every X-RateLimit-* value of one call with KEY on PLAN;
    the upstream sends its own X-RateLimit-Limit."""
    conn = gw.connect()
    try:
        conn.request("GET", "/l/headers?X-RateLimit-Limit=999",
                     headers={"Authorization": key, "X-Plan": plan})
        resp = conn.getresponse()
        resp.read()
        return resp.status, {name: resp.msg.get_all(f"X-RateLimit-{name}")
                             for name in ("Limit", "Remaining", "Reset")}
    finally:
        conn.close()


def test_quota_headers_say_what_is_left_as_tyk_sends_them(gateway, upstream,
                                                          tmp_path):
    gw = gateway_with(gateway, upstream, tmp_path,
                      {"l": {"auth_check": "front.limited"}})
    t0 = time.time()
    got = [quota_headers(gw, "a", "three-an-hour") for _ in range(3)]
    assert [(status, h["Limit"], h["Remaining"]) for status, h in got] == [
        (200, ["3"], ["2"]), (200, ["3"], ["1"]), (200, ["3"], ["0"])]
    # When the quota renews, in unix seconds: an hour after the first call.
    resets = {int(h["Reset"][0]) for _, h in got}
    assert len(resets) == 1
    assert t0 + 3590 <= resets.pop() <= time.time() + 3601
    assert quota_headers(gw, "a", "three-an-hour")[0] == 403
    # A quota that never renews has no Reset; a rate alone, no quota
    # headers: the upstream's own pass through.
    assert quota_headers(gw, "b", "quota") == (
        200, {"Limit": ["2"], "Remaining": ["1"], "Reset": None})
    assert quota_headers(gw, "c", "two-a-minute") == (
        200, {"Limit": ["999"], "Remaining": None, "Reset": None})


def test_limits_are_counted_before_post_key_auth_and_post_as_tyk_does(
        gateway, upstream, tmp_path):
    gw = gateway_with(gateway, upstream, tmp_path, {"l": {
        "auth_check": "front.limited", "post_key_auth": ["front.left"],
        "post": ["front.post_ran"]}})
    seen = []
    for _ in range(4):
        status, _, body = gw.get("/l/echo", headers={
            "Authorization": "k1", "X-Plan": "three-an-hour"})
        seen.append((status, echoed(body).get("x-left")
                     if status == 200 else json.loads(body)["error"]))
    # The hooks after auth_check see what is left of the quota; a refused
    # request never reaches them.
    assert seen == [(200, "2"), (200, "1"), (200, "0"),
                    (403, "Quota exceeded")]
    assert gw.log().count("post ran for k1") == 3


@pytest.mark.parametrize("hook,status,body,header", [
    ("rewrite", 299, b"short", ("X-Upstream-Status", "200")),
    ("refuse", 451, b"not here", ("Content-Length", "8")),
])
def test_response_edits_reach_the_client(gateway, upstream, tmp_path, hook,
                                         status, body, header):
    gw = gateway_with(gateway, upstream, tmp_path,
                      {"s": {"response": [f"front.{hook}"]}})
    got_status, headers, got = gw.get("/s/echo")
    assert (got_status, got) == (status, body)
    assert headers["Content-Length"] == str(len(body))
    assert headers[header[0]] == header[1]


def test_every_value_of_a_repeated_response_header_reaches_the_client(
        gateway, upstream, tmp_path):
    gw = gateway_with(gateway, upstream, tmp_path,
                      {"c": {"response": ["front.cookie"]}})
    conn = gw.connect()
    try:
        conn.request("GET", "/c/headers?Set-Cookie=a%3D1&Set-Cookie=b%3D2")
        resp = conn.getresponse()
        assert resp.read() == b"ok"
        assert resp.msg.get_all("Set-Cookie") == ["a=1", "b=2",
                                                  "theme=dark"]
    finally:
        conn.close()


def test_response_hooks_see_the_session_the_request_chain_left(
        gateway, upstream, tmp_path):
    gw = gateway_with(gateway, upstream, tmp_path,
                      {"a": {"auth_check": "front.auth",
                             "response": ["front.tag"]}})
    conn = gw.connect()
    try:
        status, headers, _ = gw.get("/a/echo", conn=conn,
                                    headers={"Authorization": "k1"})
        assert status == 200
        assert headers["X-User"] == "alice-k1"
        assert headers["X-Rate"] == "5"
        assert headers["X-Token"] == "k1"
        # The next request on the same connection starts from nothing.
        status, headers, _ = gw.get("/a/echo", conn=conn,
                                    headers={"Authorization": "k2"})
        assert headers["X-User"] == "alice-k2"
    finally:
        conn.close()


def test_a_session_that_cannot_travel_leaves_the_response_hooks_without(
        gateway, upstream, tmp_path):
    gw = gateway_with(gateway, upstream, tmp_path,
                      {"o": {"auth_check": "front.opaque",
                             "response": ["front.tag"]}})
    status, headers, _ = gw.get("/o/echo")
    assert status == 200
    assert headers["X-Token"] == "-"
    assert "session not passed to the response hooks" in gw.log()
