"""Request smuggling vectors against the plain proxy.

Each vector is one request with ambiguous or malformed framing, followed
by a second, "smuggled" request the client never meant as its own. The
gateway must answer 400 and close, and the upstream must never see the
smuggled request nor more requests than the client sent.
"""

import json

import pytest

from conftest import raw_exchange, statuses

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


def post(headers, body=b""):
    return (b"POST /echo HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n" + body)


# name -> bytes up to where the smuggled request is appended.
VECTORS = {
    "cl_te": post(b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
                  b"0\r\n\r\n"),
    "te_cl": post(b"Transfer-Encoding: chunked\r\nContent-Length: 6\r\n",
                  b"0\r\n\r\n"),
    "te_obs_fold": post(b"Transfer-Encoding:\r\n chunked\r\n"
                        b"Content-Length: 6\r\n", b"0\r\n\r\n"),
    "te_obs_fold_only": post(b"X-Pad: a\r\n Transfer-Encoding: chunked\r\n",
                             b"0\r\n\r\n"),
    "te_chunked_identity": post(b"Transfer-Encoding: chunked, identity\r\n",
                                b"0\r\n\r\n"),
    "te_xchunked": post(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"),
    "te_chunked_x": post(b"Transfer-Encoding: chunkedx\r\n", b"0\r\n\r\n"),
    "te_duplicate": post(b"Transfer-Encoding: chunked\r\n"
                         b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
    "te_identity_then_chunked_cl": post(
        b"Transfer-Encoding: identity\r\nContent-Length: 6\r\n",
        b"0\r\n\r\n"),
    "te_space_before_colon": post(b"Transfer-Encoding : chunked\r\n"
                                  b"Content-Length: 6\r\n", b"0\r\n\r\n"),
    "te_tab_value": post(b"Transfer-Encoding:\tchunked\r\nContent-Length: 6"
                         b"\r\n", b"0\r\n\r\n"),
    "te_http10": (b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n"
                  b"Content-Length: 6\r\n\r\n0\r\n\r\n"),
    "cl_space_before_colon": post(b"Content-Length : 5\r\n", b"hello"),
    "cl_plus": post(b"Content-Length: +5\r\n", b"hello"),
    "cl_negative": post(b"Content-Length: -1\r\n", b""),
    "cl_leading_zeros_mix": post(b"Content-Length: 05\r\n"
                                 b"Content-Length: 5\r\n", b"hello"),
    "cl_duplicate_same": post(b"Content-Length: 5\r\nContent-Length: 5\r\n",
                              b"hello"),
    "cl_differing": post(b"Content-Length: 5\r\nContent-Length: 0\r\n",
                         b"hello"),
    "cl_list": post(b"Content-Length: 5, 0\r\n", b"hello"),
    "cl_hex": post(b"Content-Length: 0x5\r\n", b"hello"),
    "cl_huge": post(b"Content-Length: 99999999999999999999999\r\n", b""),
    "chunk_size_huge": post(b"Transfer-Encoding: chunked\r\n",
                            b"ffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
    "chunk_size_negative": post(b"Transfer-Encoding: chunked\r\n",
                                b"-5\r\nhello\r\n0\r\n\r\n"),
    "chunk_size_space": post(b"Transfer-Encoding: chunked\r\n",
                             b"5 \r\nhello\r\n0\r\n\r\n"),
    "chunk_ext_bare_lf": post(b"Transfer-Encoding: chunked\r\n",
                              b"5;ext\nhello\r\n0\r\n\r\n"),
    "chunk_bare_lf": post(b"Transfer-Encoding: chunked\r\n",
                          b"5\nhello\n0\n\n"),
    "chunk_data_overrun": post(b"Transfer-Encoding: chunked\r\n",
                               b"3\r\nhello\r\n0\r\n\r\n"),
    "request_line_lf_only": b"GET /echo HTTP/1.1\nHost: x\r\n\r\n",
    "header_lf_only": b"GET /echo HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n",
    "head_end_lf_only": b"GET /echo HTTP/1.1\r\nHost: x\r\n\n",
    "nul_in_header_value": b"GET /echo HTTP/1.1\r\nHost: x\r\nX-A: a\x00b"
                           b"\r\n\r\n",
    "nul_in_header_name": b"GET /echo HTTP/1.1\r\nHost: x\r\nX-\x00A: b"
                          b"\r\n\r\n",
    "cr_in_header_value": b"GET /echo HTTP/1.1\r\nHost: x\r\nX-A: a\rb"
                          b"\r\n\r\n",
    "space_in_header_name": b"GET /echo HTTP/1.1\r\nHost: x\r\nX A: b"
                            b"\r\n\r\n",
    "two_hosts": b"GET /echo HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
    "two_hosts_case": b"GET /echo HTTP/1.1\r\nHost: x\r\nHOST: x\r\n\r\n",
    "missing_host_http11": b"GET /echo HTTP/1.1\r\n\r\n",
    "absolute_form_bad_target": b"GET echo HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad_version": b"GET /echo HTTP/1.7\r\nHost: x\r\n\r\n",
    "space_in_target": b"GET /echo /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    # One gateway for the whole table: each vector uses a fresh
    # connection, and the upstream's record is cleared between them.
    from conftest import Gateway
    from upstream import Upstream
    up = Upstream()
    gw = Gateway(tmp_path_factory.mktemp("smuggling"),
                 {"apis": [{"name": "a", "listen_path": "/",
                            "upstream": up.url}]})
    yield gw, up
    gw.stop()
    up.close()


@pytest.mark.parametrize("name", list(VECTORS))
def test_smuggling_vector_rejected(shared, name):
    gw, up = shared
    with up.lock:
        up.requests.clear()
    raw = raw_exchange(gw.port, VECTORS[name] + SMUGGLED, timeout=3.0)
    seen = [r.path for r in up.requests]
    assert "/smuggled" not in seen, (raw, seen)
    assert len(seen) == 0, (raw, seen)
    assert statuses(raw) == [400], raw
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert json.loads(body)["status"] == 400


# Unusual but unambiguous framings: one request, forwarded once, with
# exactly the body the gateway framed; the bytes after it are the client's
# second request and are answered as such.
ACCEPTED = {
    "cl_leading_zeros": (post(b"Content-Length: 005\r\n", b"hello"), 5),
    "chunked_with_ext": (post(b"Transfer-Encoding: chunked\r\n",
                              b"5;a=b\r\nhello\r\n0\r\n\r\n"), 5),
    "chunked_upper_case_te": (post(b"Transfer-Encoding: CHUNKED\r\n",
                                   b"5\r\nhello\r\n0\r\n\r\n"), 5),
    "chunk_size_leading_zeros": (post(b"Transfer-Encoding: chunked\r\n",
                                      b"0005\r\nhello\r\n0\r\n\r\n"), 5),
}


@pytest.mark.parametrize("name", list(ACCEPTED))
def test_unusual_but_valid_framing_is_one_request(shared, name):
    gw, up = shared
    with up.lock:
        up.requests.clear()
    data, length = ACCEPTED[name]
    last = SMUGGLED.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    raw = raw_exchange(gw.port, data + last, timeout=3.0)
    assert statuses(raw) == [200, 200], raw
    seen = [(r.path, len(r.body)) for r in up.requests]
    # The second one is a separate request the client really sent.
    assert seen == [("/echo", length), ("/smuggled", 0)], seen


# The strict head checks (no obs-fold, no bare LF) must look at the head
# only: bodies may hold any bytes, including ones that would be a fold or
# a bare LF in a head, arriving in the same packet as the head.
BODIES = [b" leading space", b"\tleading tab", b"\nleading LF",
          b"\r\n\r\n", b"a\nb\n \n\tc", b" GET /smuggled HTTP/1.1\n\n"]


@pytest.mark.parametrize("body", BODIES, ids=[repr(b)[2:10] for b in BODIES])
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_body_bytes_are_not_head_checked(shared, body, framing):
    gw, up = shared
    with up.lock:
        up.requests.clear()
    if framing == "length":
        data = post(b"Content-Length: %d\r\n" % len(body), body)
    else:
        data = post(b"Transfer-Encoding: chunked\r\n",
                    b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    last = SMUGGLED.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    raw = raw_exchange(gw.port, data + last, timeout=3.0)
    assert statuses(raw) == [200, 200], raw
    assert [(r.path, r.body) for r in up.requests] == \
        [("/echo", body), ("/smuggled", b"")]


# A request refused before its body is read: the unread body must not be
# parsed as the client's next request.
UNREAD = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize("head,status", [
    (b"POST /nowhere HTTP/1.1\r\nHost: x\r\n", 404),
    (b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: nothing-known\r\n", 417),
])
def test_unread_body_of_refused_request_is_not_a_request(gateway, upstream,
                                                         head, status):
    gw = gateway({"apis": [{"name": "a", "listen_path": "/echo",
                            "upstream": upstream.url}]})
    data = head + b"Content-Length: %d\r\n\r\n" % len(UNREAD) + UNREAD
    raw = raw_exchange(gw.port, data, timeout=3.0)
    assert statuses(raw) == [status], raw
    assert upstream.requests == []


@pytest.mark.parametrize("first", [
    b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /echo HTTP/1.0\r\n\r\n",
])
def test_nothing_after_a_closing_request_is_served(shared, first):
    gw, up = shared
    with up.lock:
        up.requests.clear()
    raw = raw_exchange(gw.port, first + SMUGGLED, timeout=3.0)
    assert statuses(raw) == [200], raw
    assert [r.path for r in up.requests] == ["/echo"]


def test_chunked_http10_request_is_framed_then_closed(shared):
    # RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 request is suspect;
    # decode it, answer, and close rather than trust what follows.
    gw, up = shared
    with up.lock:
        up.requests.clear()
    raw = raw_exchange(gw.port, b"POST /echo HTTP/1.0\r\nTransfer-Encoding: "
                       b"chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
                       timeout=3.0)
    assert statuses(raw) == [200], raw
    assert [(r.path, r.body) for r in up.requests] == [("/echo", b"hello")]
