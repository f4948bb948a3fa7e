"""A real upstream for the integration tests: a threaded HTTP/1.1 server on
raw sockets, so tests control framing, timing and failures exactly.

Paths:
  /echo...          JSON: method, path, headers, body length and sha256
  /bytes/N          N bytes (a repeating pattern), Content-Length
  /chunked/N        N bytes, Transfer-Encoding: chunked, 7 KiB chunks
  /eof/N            N bytes delimited by closing the connection
  /sleep/MS         answers after MS milliseconds
  /reset            reads the request, then resets the connection
  /reset-mid/N      sends a head announcing N bytes, half of them, resets
  /close            reads the request, closes without answering
  /status/CODE      empty answer with that status
  /headers?K=V&..   "ok" with each K: V added to the response head
Set `close_after_each` to close every connection after one answer without
saying so (no Connection: close), as a server with a short keep-alive does.
Every request is recorded in `requests` (method, path, headers, body).
"""

import hashlib
import json
import socket
import struct
import threading
import time
import urllib.parse

PATTERN = bytes(range(256)) * 64


def pattern(n):
    """The N bytes that /bytes/N and friends send."""
    out = bytearray()
    while len(out) < n:
        out += PATTERN[: n - len(out)]
    return bytes(out)


class Request:
    def __init__(self, method, path, version, headers, body):
        self.method = method
        self.path = path
        self.version = version
        self.headers = headers
        self.body = body

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


def read_until(sock, buf, marker):
    while marker not in buf:
        data = sock.recv(65536)
        if not data:
            raise EOFError
        buf += data
    i = buf.index(marker) + len(marker)
    return buf[:i], buf[i:]


def read_exact(sock, buf, n):
    while len(buf) < n:
        data = sock.recv(max(65536, n - len(buf)))
        if not data:
            raise EOFError
        buf += data
    return buf[:n], buf[n:]


def read_request(sock, buf):
    head, buf = read_until(sock, buf, b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, version = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        if line:
            k, v = line.split(":", 1)
            headers.append((k.strip(), v.strip()))
    req = Request(method, path, version, headers, b"")
    te = req.header("transfer-encoding")
    if te and "chunked" in te.lower():
        body = bytearray()
        while True:
            size_line, buf = read_until(sock, buf, b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                _, buf = read_until(sock, buf, b"\r\n")
                break
            chunk, buf = read_exact(sock, buf, size + 2)
            body += chunk[:-2]
        req.body = bytes(body)
    elif req.header("content-length"):
        req.body, buf = read_exact(sock, buf, int(req.header("content-length")))
    return req, buf


def reset(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class Upstream:
    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.requests = []
        self.connections = 0
        self.close_after_each = False
        self.lock = threading.Lock()
        self.running = True
        self.thread = threading.Thread(target=self.accept_loop, daemon=True)
        self.thread.start()

    def accept_loop(self):
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        buf = b""
        try:
            while True:
                req, buf = read_request(conn, buf)
                with self.lock:
                    self.requests.append(req)
                if not self.answer(conn, req) or self.close_after_each:
                    return
                if (req.header("connection") or "").lower() == "close":
                    return
        except (EOFError, OSError, ValueError):
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def send(self, conn, status, body=b"", headers=(), head_only=False):
        lines = ["HTTP/1.1 %d X" % status]
        lines += ["%s: %s" % h for h in headers]
        if not any(h[0].lower() == "content-length" for h in headers):
            lines.append("Content-Length: %d" % len(body))
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() +
                     (b"" if head_only else body))

    def answer(self, conn, req):
        """Send the response for REQ; False closes the connection."""
        parts = req.path.split("?")[0].strip("/").split("/")
        head = req.method == "HEAD"
        kind = parts[0]
        if kind == "bytes":
            self.send(conn, 200, pattern(int(parts[1])), head_only=head)
        elif kind == "chunked":
            data = pattern(int(parts[1]))
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(0, len(data), 7168):
                piece = data[i:i + 7168]
                conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            conn.sendall(b"0\r\n\r\n")
        elif kind == "eof":
            conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" +
                         pattern(int(parts[1])))
            return False
        elif kind == "sleep":
            time.sleep(int(parts[1]) / 1000)
            self.send(conn, 200, b"slept")
        elif kind == "reset":
            reset(conn)
            return False
        elif kind == "reset-mid":
            n = int(parts[1])
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n)
            conn.sendall(pattern(n // 2))
            time.sleep(0.05)
            reset(conn)
            return False
        elif kind == "close":
            conn.close()
            return False
        elif kind == "status":
            self.send(conn, int(parts[1]))
        elif kind == "headers":
            query = req.path.split("?", 1)[1] if "?" in req.path else ""
            self.send(conn, 200, b"ok", urllib.parse.parse_qsl(query),
                      head_only=head)
        else:
            body = json.dumps({
                "method": req.method,
                "path": req.path,
                "version": req.version,
                "headers": req.headers,
                "length": len(req.body),
                "sha256": hashlib.sha256(req.body).hexdigest(),
                "port": self.port,
            }).encode()
            self.send(conn, 200, body, [("Content-Type", "application/json")],
                      head_only=head)
        return True

    def close(self):
        self.running = False
        self.sock.close()
