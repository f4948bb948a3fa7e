"""The servers under test: the origin, the anchors (nginx, HAProxy) and
sluiced, each started from a template in upstream/ or rules/ with free ports,
under the bench's Spawner."""

import os
import shutil
import socket
import string
import time

import procs

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# Response sizes served by the origin: name -> bytes.
SIZES = {"64B": 64, "4KiB": 4096, "1MiB": 1 << 20, "64MiB": 64 << 20}


class Target:
    """A running server: its name, port, the PID whose process tree is
    charged for CPU, and the Popen handle."""

    def __init__(self, name, port, proc, extra=None):
        self.name = name
        self.port = port
        self.proc = proc
        self.pid = proc.pid
        self.extra = extra or {}

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"


class Servers:
    """Starts servers inside one temporary directory; stop() undoes it all."""

    def __init__(self, tmpdir, spawner, threads=2):
        self.tmp = tmpdir
        self.spawner = spawner
        self.threads = threads
        self.pin_dirs = []
        self.docroot = os.path.join(tmpdir, "www")
        self._count = 0

    def _render(self, template, name, **values):
        with open(template) as f:
            text = string.Template(f.read()).substitute(values)
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def _started(self, name, port, proc, timeout=10.0):
        if not procs.wait_port(port, proc, timeout):
            tail = self.spawner.log_tail(proc)
            self.spawner.stop(proc)
            raise RuntimeError(f"{name} did not start:\n{tail}")

    def write_docroot(self, sizes):
        os.makedirs(self.docroot, exist_ok=True)
        os.chmod(self.tmp, 0o755)
        for name in sizes:
            path = os.path.join(self.docroot, name)
            with open(path, "wb") as f:
                left = SIZES[name]
                block = bytes(range(256)) * 4096
                while left:
                    f.write(block[:min(left, len(block))])
                    left -= min(left, len(block))

    def origin(self):
        port = procs.free_port()
        conf = self._render(os.path.join(HERE, "upstream", "origin.conf"),
                            "origin.conf", prefix=self.tmp, port=port,
                            docroot=self.docroot)
        proc = self.spawner.start("origin", ["nginx", "-c", conf, "-p",
                                             self.tmp, "-e", os.path.join(
                                                 self.tmp, "origin-error.log"),
                                             "-g", "daemon off;"])
        self._started("origin nginx", port, proc)
        return Target("direct", port, proc)

    def nginx_proxy(self, origin):
        port = procs.free_port()
        conf = self._render(os.path.join(HERE, "upstream", "nginx-proxy.conf"),
                            "nginx-proxy.conf", prefix=self.tmp, port=port,
                            origin_port=origin.port, workers=self.threads)
        proc = self.spawner.start("nginx-proxy", [
            "nginx", "-c", conf, "-p", self.tmp, "-e",
            os.path.join(self.tmp, "nginx-proxy-error.log"),
            "-g", "daemon off;"])
        self._started("nginx proxy", port, proc)
        return Target("nginx", port, proc)

    def haproxy(self, origin, mode):
        """mode: "http" or "tcp-splice"."""
        port = procs.free_port()
        conf = self._render(os.path.join(HERE, "upstream",
                                         f"haproxy-{mode}.cfg"),
                            f"haproxy-{mode}.cfg", port=port,
                            origin_port=origin.port, threads=self.threads)
        proc = self.spawner.start(f"haproxy-{mode}",
                                  ["haproxy", "-db", "-f", conf])
        self._started(f"haproxy {mode}", port, proc)
        return Target(f"haproxy-{mode}", port, proc)

    def sluiced(self, name, rules, ready_path=None, ready_port=None,
                timeout=20.0, **values):
        """Start build/sluiced -f -c RULES from rules/RULES with free ports
        and a pin directory of its own. values fill the template's other
        names; a value "PORT" is replaced by a fresh free port. Waits until
        ready_path answers (any status but 503) when given."""
        binary = sluiced_binary()
        self._count += 1
        port = procs.free_port()
        values.setdefault("admin_port", "PORT")
        values = {k: (procs.free_port() if v == "PORT" else v)
                  for k, v in values.items()}
        pin_dir = f"/sys/fs/bpf/sluice_bench_{os.getpid()}_{self._count}"
        self.pin_dirs.append(pin_dir)
        conf = self._render(os.path.join(HERE, "rules", rules),
                            f"{name}.yaml", port=port, threads=self.threads,
                            pin_dir=pin_dir, **values)
        proc = self.spawner.start(name, [binary, "-f", "-c", conf])
        self._started(name, port, proc, timeout)
        # The listeners open before sluiced has finished starting (the pool
        # comes up after them): send nothing before its start-up line.
        if not _wait_log(proc, " started ", timeout):
            tail = self.spawner.log_tail(proc)
            self.spawner.stop(proc)
            raise RuntimeError(f"{name} never logged its start-up line:\n"
                               f"{tail}")
        target = Target(name, port, proc, values)
        if ready_path and not _wait_ready(ready_port or port, ready_path,
                                          proc, timeout):
            tail = self.spawner.log_tail(proc)
            self.spawner.stop(proc)
            raise RuntimeError(f"{name} never answered {ready_path}:\n{tail}")
        return target

    def stop(self, target):
        self.spawner.stop(target.proc)

    def remove_pins(self):
        for pin_dir in self.pin_dirs:
            if os.path.isdir(pin_dir):
                shutil.rmtree(pin_dir, ignore_errors=True)


def sluiced_binary():
    build = os.environ.get("SLUICE_BUILD", "build")
    if not os.path.isabs(build):
        build = os.path.join(REPO, build)
    return os.path.join(build, "sluiced")


def http_status(port, path, timeout=5.0):
    """Status of one GET (Connection: close), 0 when nothing answers."""
    try:
        with socket.create_connection(("127.0.0.1", port),
                                      timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n"
                      "Connection: close\r\n\r\n".encode())
            head = s.recv(64).split(b" ", 2)
            return int(head[1]) if len(head) > 1 and head[1].isdigit() else 0
    except OSError:
        return 0


def http_get_length(port, path, timeout=10.0):
    """(status, body bytes received) of one GET read to EOF (Connection:
    close); (0, 0) when nothing answers."""
    data = bytearray()
    try:
        with socket.create_connection(("127.0.0.1", port),
                                      timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n"
                      "Connection: close\r\n\r\n".encode())
            while chunk := s.recv(1 << 20):
                data += chunk
    except OSError:
        if not data:
            return 0, 0
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return status, len(body)


def _wait_log(proc, needle, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(proc.bench_log, errors="replace") as f:
            if needle in f.read():
                return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def _wait_ready(port, path, proc, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        status = http_status(port, path)
        if status and status != 503:
            return True
        time.sleep(0.1)
    return False
