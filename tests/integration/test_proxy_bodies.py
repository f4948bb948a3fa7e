"""Bodies and message semantics through the plain proxy: sizes both ways
with sha256, chunked both ways, close-delimited responses, HEAD, HTTP/1.0,
Connection: close, Expect: 100-continue, hop-by-hop and X-Forwarded-*."""

import hashlib
import json
import socket
import time

import pytest

from conftest import SLOW, read_response
from upstream import pattern

SIZES = [0, 1024, 8 * 1024 * 1024]


def sha(data):
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def gw(gateway, upstream):
    return gateway({"apis": [{"name": "a", "listen_path": "/",
                              "upstream": upstream.url}]})


def raw_conn(gw):
    return socket.create_connection(("127.0.0.1", gw.port), timeout=10 * SLOW)


@pytest.mark.parametrize("size", SIZES, ids=["0B", "1KiB", "8MiB"])
def test_upload_content_length_reaches_upstream_intact(gw, upstream, size):
    body = pattern(size)[::-1]  # not the download pattern
    status, _, data = gw.request("POST", "/echo", body=body)
    assert status == 200
    seen = json.loads(data)
    assert seen["length"] == size and seen["sha256"] == sha(body)
    assert upstream.requests[-1].header("content-length") == str(size)


@pytest.mark.parametrize("size", SIZES, ids=["0B", "1KiB", "8MiB"])
def test_download_content_length_reaches_client_intact(gw, size):
    status, headers, data = gw.get("/bytes/%d" % size)
    assert status == 200
    assert headers["Content-Length"] == str(size)
    assert len(data) == size and sha(data) == sha(pattern(size))


@pytest.mark.parametrize("size", [0, 1024, 3 * 1024 * 1024],
                         ids=["0B", "1KiB", "3MiB"])
def test_chunked_upload_streams_to_upstream(gw, upstream, size):
    data = pattern(size)
    pieces = [data[i:i + 100000] for i in range(0, size, 100000)]
    conn = gw.connect()
    try:
        conn.request("POST", "/echo", body=iter(pieces),
                     headers={"Transfer-Encoding": "chunked"},
                     encode_chunked=True)
        resp = conn.getresponse()
        seen = json.loads(resp.read())
    finally:
        conn.close()
    assert resp.status == 200
    assert seen["length"] == size and seen["sha256"] == sha(data)
    req = upstream.requests[-1]
    assert "chunked" in req.header("transfer-encoding").lower()
    assert req.header("content-length") is None


@pytest.mark.parametrize("size", [0, 1024, 8 * 1024 * 1024],
                         ids=["0B", "1KiB", "8MiB"])
def test_chunked_download_reaches_client_chunked(gw, size):
    status, headers, data = gw.get("/chunked/%d" % size)
    assert status == 200
    assert headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in headers
    assert sha(data) == sha(pattern(size))


def test_close_delimited_response_rechunked_for_http11(gw):
    size = 300000
    s = raw_conn(gw)
    try:
        s.sendall(b"GET /eof/%d HTTP/1.1\r\nHost: x\r\n\r\n" % size)
        resp, rest = read_response(s)
        assert resp.status == 200 and resp.complete
        assert resp.header("transfer-encoding") == "chunked"
        assert resp.body == pattern(size)
        # Re-chunked, the client connection survives the upstream's close.
        s.sendall(b"GET /bytes/10 HTTP/1.1\r\nHost: x\r\n\r\n")
        resp, _ = read_response(s, rest)
        assert resp.status == 200 and resp.body == pattern(10)
    finally:
        s.close()


def test_close_delimited_response_close_delimited_for_http10(gw):
    size = 300000
    s = raw_conn(gw)
    try:
        s.sendall(b"GET /eof/%d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                  % size)
        resp, _ = read_response(s)
    finally:
        s.close()
    assert resp.status == 200
    assert resp.header("transfer-encoding") is None
    assert resp.header("content-length") is None
    assert "close" in (resp.header("connection") or "").lower()
    assert resp.body == pattern(size)


def test_head_has_no_body_and_keeps_content_length(gw, upstream):
    conn = gw.connect()
    try:
        conn.request("HEAD", "/bytes/4321")
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.read() == b""
        assert resp.getheader("Content-Length") == "4321"
        # The connection is still framed: the next response parses.
        status, _, data = gw.get("/bytes/5", conn=conn)
        assert status == 200 and data == pattern(5)
    finally:
        conn.close()
    assert upstream.requests[-2].method == "HEAD"


def test_head_raw_no_body_bytes_follow(gw):
    s = raw_conn(gw)
    try:
        s.sendall(b"HEAD /bytes/1000 HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /bytes/3 HTTP/1.1\r\nHost: x\r\n\r\n")
        head, rest = read_response(s, head_only=True)
        assert head.status == 200 and head.header("content-length") == "1000"
        resp, _ = read_response(s, rest)
        # Had the HEAD carried a body, this would read pattern bytes.
        assert resp.status == 200 and resp.body == pattern(3)
    finally:
        s.close()


def test_http10_request_closes_after_response(gw, upstream):
    s = raw_conn(gw)
    try:
        s.sendall(b"GET /echo HTTP/1.0\r\n\r\n")
        t0 = time.time()
        resp, rest = read_response(s)
        assert resp.status == 200
        s.settimeout(5 * SLOW)
        assert rest == b"" and s.recv(100) == b""  # closed by the gateway
        assert time.time() - t0 < 4 * SLOW
    finally:
        s.close()
    # HTTP/1.0 without Host is allowed; the upstream still speaks 1.1.
    assert upstream.requests[-1].version == "HTTP/1.1"


def test_http10_keepalive_keeps_connection(gw):
    s = raw_conn(gw)
    try:
        buf = b""
        for i in range(3):
            s.sendall(b"GET /bytes/%d HTTP/1.0\r\nConnection: keep-alive"
                      b"\r\n\r\n" % (i + 1))
            resp, buf = read_response(s, buf)
            assert resp.status == 200 and resp.body == pattern(i + 1)
            assert resp.header("connection").lower() == "keep-alive"
    finally:
        s.close()


def test_connection_close_from_client_closes_after_response(gw):
    s = raw_conn(gw)
    try:
        s.sendall(b"GET /bytes/100 HTTP/1.1\r\nHost: x\r\n"
                  b"Connection: close\r\n\r\n")
        resp, rest = read_response(s)
        assert resp.status == 200 and resp.body == pattern(100)
        assert "close" in resp.header("connection").lower()
        s.settimeout(5 * SLOW)
        assert rest == b"" and s.recv(100) == b""
    finally:
        s.close()


def test_expect_100_continue_then_final_response(gw, upstream):
    body = b"hello world"
    s = raw_conn(gw)
    try:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue"
                  b"\r\nContent-Length: %d\r\n\r\n" % len(body))
        interim, rest = read_response(s)
        assert interim.status == 100
        s.sendall(body)
        final, _ = read_response(s, rest)
    finally:
        s.close()
    assert final.status == 200
    seen = json.loads(final.body)
    assert seen["length"] == len(body) and seen["sha256"] == sha(body)
    assert upstream.requests[-1].header("expect") is None


def test_expect_100_continue_with_http_client(gw):
    # What a real client does: waits for the 100, then sends the body.
    conn = gw.connect()
    try:
        conn.putrequest("PUT", "/echo")
        conn.putheader("Expect", "100-continue")
        conn.putheader("Content-Length", "4")
        conn.endheaders()
        conn.sock.settimeout(5 * SLOW)
        first = conn.sock.recv(100)
        assert first.startswith(b"HTTP/1.1 100 ")
        conn.send(b"abcd")
        # http.client skips the interim response it already consumed.
        resp = conn.getresponse()
        assert resp.status == 200
        assert json.loads(resp.read())["length"] == 4
    finally:
        conn.close()


HOP_BY_HOP = ["connection", "keep-alive", "te", "upgrade",
              "proxy-connection", "x-named-by-connection", "trailer"]


def test_hop_by_hop_headers_never_reach_upstream(gw, upstream):
    s = raw_conn(gw)
    try:
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n"
                  b"Connection: keep-alive, X-Named-By-Connection\r\n"
                  b"X-Named-By-Connection: secret\r\n"
                  b"Keep-Alive: timeout=5\r\n"
                  b"TE: trailers\r\n"
                  b"Upgrade: h2c\r\n"
                  b"Proxy-Connection: keep-alive\r\n"
                  b"Trailer: X-T\r\n"
                  b"X-End-To-End: kept\r\n\r\n")
        resp, _ = read_response(s)
    finally:
        s.close()
    assert resp.status == 200
    req = upstream.requests[-1]
    names = {k.lower() for k, _ in req.headers}
    assert names.isdisjoint(HOP_BY_HOP), names
    assert req.header("x-end-to-end") == "kept"


def test_x_forwarded_headers_added(gw, upstream):
    status, _, _ = gw.get("/echo", headers={"Host": "api.example.com:8080"})
    assert status == 200
    req = upstream.requests[-1]
    assert req.header("x-forwarded-for") == "127.0.0.1"
    assert req.header("x-forwarded-proto") == "http"
    assert req.header("x-forwarded-host") == "api.example.com:8080"
    assert req.header("host") == "api.example.com:8080"


def test_x_forwarded_for_appended_to_existing(gw, upstream):
    status, _, _ = gw.get("/echo", headers={
        "X-Forwarded-For": "198.51.100.7, 203.0.113.9",
        "X-Forwarded-Proto": "https-spoofed"})
    assert status == 200
    req = upstream.requests[-1]
    assert req.header("x-forwarded-for") == \
        "198.51.100.7, 203.0.113.9, 127.0.0.1"
    # Proto is what the gateway saw, never the client's claim.
    assert req.header("x-forwarded-proto") == "http"
    assert [k.lower() for k, _ in req.headers].count("x-forwarded-for") == 1


def test_response_hop_by_hop_headers_never_reach_client(gw):
    query = ("Connection=X-Up-Secret&X-Up-Secret=1&Keep-Alive=timeout%3D1"
             "&Proxy-Connection=keep-alive&Upgrade=h2c&Trailer=X-T"
             "&X-Up-Kept=yes")
    s = raw_conn(gw)
    try:
        s.sendall(b"GET /headers?%s HTTP/1.1\r\nHost: x\r\n\r\n"
                  % query.encode())
        resp, rest = read_response(s)
        assert resp.status == 200 and resp.body == b"ok"
        names = {k.lower() for k, _ in resp.headers}
        assert names.isdisjoint({"x-up-secret", "keep-alive", "upgrade",
                                 "proxy-connection", "trailer"}), names
        assert resp.header("x-up-kept") == "yes"
        # The upstream's "Connection: X-Up-Secret" is not the client's
        # connection: it stays open.
        assert resp.header("connection") is None
        s.sendall(b"GET /bytes/2 HTTP/1.1\r\nHost: x\r\n\r\n")
        resp, _ = read_response(s, rest)
        assert resp.body == pattern(2)
    finally:
        s.close()


def test_upstream_connection_close_does_not_close_client(gw, upstream):
    conn = gw.connect()
    try:
        status, headers, body = gw.get("/headers?Connection=close",
                                       conn=conn)
        assert status == 200 and body == b"ok"
        sock = conn.sock
        assert gw.get("/bytes/7", conn=conn)[2] == pattern(7)
        assert conn.sock is sock
    finally:
        conn.close()


@pytest.mark.parametrize("code", [204, 304, 404, 500, 503])
def test_upstream_status_passed_through(gw, code):
    s = raw_conn(gw)
    try:
        s.sendall(b"GET /status/%d HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /bytes/4 HTTP/1.1\r\nHost: x\r\n\r\n" % code)
        resp, rest = read_response(s)
        assert resp.status == code and resp.body == b""
        if code in (204, 304):
            assert resp.header("transfer-encoding") is None
        # The next response on the connection is framed right after it.
        resp, _ = read_response(s, rest)
        assert resp.status == 200 and resp.body == pattern(4)
    finally:
        s.close()


def test_chunked_upload_with_trailers(gw, upstream):
    s = raw_conn(gw)
    try:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n"
                  b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
                  b"GET /bytes/3 HTTP/1.1\r\nHost: x\r\n\r\n")
        resp, rest = read_response(s)
        assert resp.status == 200
        seen = json.loads(resp.body)
        assert seen["length"] == 11 and seen["sha256"] == sha(b"hello world")
        resp, _ = read_response(s, rest)
        assert resp.status == 200 and resp.body == pattern(3)
    finally:
        s.close()


def test_get_with_content_length_body_forwarded(gw, upstream):
    status, _, body = gw.request("GET", "/echo", body=b"abc")
    assert status == 200 and json.loads(body)["length"] == 3


def test_expect_100_continue_on_no_route_gets_final_status(gateway,
                                                          upstream):
    gw = gateway({"apis": [{"name": "a", "listen_path": "/a/",
                            "upstream": upstream.url}]})
    s = raw_conn(gw)
    try:
        s.sendall(b"POST /nowhere HTTP/1.1\r\nHost: x\r\n"
                  b"Expect: 100-continue\r\nContent-Length: 100000\r\n\r\n")
        resp, rest = read_response(s)
        # No 100 for a request that will not be served: the final status
        # at once, and the unread body means the connection ends.
        assert resp.status == 404
        s.settimeout(5 * SLOW)
        try:
            assert rest == b"" and s.recv(10) == b""
        except ConnectionResetError:
            pass
    finally:
        s.close()
    assert upstream.requests == []


def test_expect_unknown_is_417(gw, upstream):
    s = raw_conn(gw)
    try:
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n\r\n")
        resp, _ = read_response(s)
    finally:
        s.close()
    assert resp.status == 417
    assert upstream.requests == []


def test_expect_100_continue_from_http10_client_gets_no_100(gw, upstream):
    s = raw_conn(gw)
    try:
        s.sendall(b"POST /echo HTTP/1.0\r\nExpect: 100-continue\r\n"
                  b"Content-Length: 2\r\n\r\nhi")
        resp, _ = read_response(s)
    finally:
        s.close()
    assert resp.status == 200 and json.loads(resp.body)["length"] == 2


@pytest.mark.parametrize("size", [1, 65535, 65536, 1048577, 4 * 1048576 + 7])
def test_odd_sizes_keepalive_framing(gw, size):
    # Around the buffer and splice thresholds, twice on one connection:
    # the second answer parses only if the first was framed exactly.
    conn = gw.connect()
    try:
        for _ in range(2):
            status, _, data = gw.get("/bytes/%d" % size, conn=conn)
            assert status == 200 and data == pattern(size)
            body = pattern(size)[::-1]
            status, _, data = gw.request("PUT", "/echo", body=body,
                                         conn=conn)
            assert json.loads(data)["sha256"] == sha(body)
    finally:
        conn.close()
