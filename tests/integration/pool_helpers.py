"""Helpers for the worker pool's tests through sluiced: hook modules written
into the test's directory, rules with hooked APIs, and waiting for the pool.

Requests to hooked APIs are POSTs with a small body, so that the call
carries one; /echo on the test upstream answers with what it received.
"""

import json
import os
import textwrap
import threading
import time

from conftest import SLOW

# One module of hooks, each behaving one way; config_data tunes them.
HOOKS = textwrap.dedent('''
    import asyncio
    import json
    import os
    import time

    import sluice

    _hoard = []


    def _config(spec):
        return json.loads(spec.get("config_data") or "{}")


    @sluice.hook
    def tag(request, session, spec):
        request.add_header("X-Worker-Pid", str(os.getpid()))
        request.add_header("X-Version", str(_config(spec).get("v", 1)))
        return request, session


    @sluice.hook
    def sleepy(request, session, spec):
        time.sleep(float(_config(spec).get("sleep", 1)))
        request.add_header("X-Worker-Pid", str(os.getpid()))
        return request, session


    @sluice.hook
    async def async_sleepy(request, session, spec):
        await asyncio.sleep(float(_config(spec).get("sleep", 1)))
        return request, session


    @sluice.hook
    def boom(request, session, spec):
        raise ValueError("boom from the hook")


    @sluice.hook
    def die(request, session, spec):
        os._exit(7)


    @sluice.hook
    def grow(request, session, spec):
        _hoard.append(bytearray(int(_config(spec).get("grow_mb", 8)) << 20))
        request.add_header("X-Worker-Pid", str(os.getpid()))
        return request, session


    @sluice.hook
    def put(request, session, spec):
        ttl = int(_config(spec).get("ttl", 0))
        sluice.store_data("shared", "from-%d" % os.getpid(), ttl)
        request.add_header("X-Worker-Pid", str(os.getpid()))
        return request, session


    @sluice.hook
    def get(request, session, spec):
        value = sluice.get_data("shared")
        request.add_header("X-Got", value.decode() if value else "none")
        request.add_header("X-Worker-Pid", str(os.getpid()))
        return request, session
''')


def write_hooks(tmp_path, name="pt", source=HOOKS):
    d = tmp_path / "hooks"
    d.mkdir(exist_ok=True)
    (d / (name + ".py")).write_text(source)
    return str(d)


def hooked_rules(tmp_path, upstream, apis, **python):
    """Rules with APIS {name: middleware or None (plain)}; each API at
    /NAME/ with the prefix stripped."""
    py = {"path": [write_hooks(tmp_path)],
          "workers": {"min": 2, "max": 4, "idle_s": 30}}
    py.update(python)
    out = []
    for name, mw in apis.items():
        api = {"name": name, "listen_path": "/%s/" % name,
               "strip_listen_path": True, "upstream": upstream.url}
        if mw is not None:
            api["middleware"] = mw
        out.append(api)
    return {"python": py, "apis": out}


def pool(gw):
    return gw.status()["pool"]


def wait_pool(gw, workers=None, timeout=20.0):
    """Until every API knows its import status and the pool has WORKERS
    (default: its min) idle workers."""
    deadline = time.time() + timeout * SLOW
    p = None
    while time.time() < deadline:
        p = pool(gw)
        want = p["min"] if workers is None else workers
        idle = [w for w in p["workers"] if w["state"] == "idle"]
        if len(idle) == want and len(p["workers"]) == want and all(
                a["status"] != "starting" for a in p["apis"].values()):
            return p
        time.sleep(0.05)
    raise AssertionError("pool not ready: %s" % json.dumps(p))


def post(gw, path, body=b"x", conn=None, headers=None):
    """POST; returns (status, headers, body)."""
    return gw.request("POST", path, body=body, headers=headers, conn=conn)


def echoed(body):
    """The headers the upstream's /echo saw, as a dict (last wins)."""
    return {k.lower(): v for k, v in json.loads(body)["headers"]}


def parallel(n, fn):
    """Run fn(i) in N threads at once; returns the results in order."""
    results = [None] * n
    barrier = threading.Barrier(n)

    def run(i):
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as e:  # reported by the test's asserts
            results[i] = e
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


def zombies(gw):
    return [c for c in gw.children() if c[1].startswith("Z")]


def _tcp_ports():
    """inode -> (local port, remote port) for every TCP socket."""
    ports = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                lines = list(f)[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            local = int(cols[1].rsplit(":", 1)[1], 16)
            remote = int(cols[2].rsplit(":", 1)[1], 16)
            ports[cols[9]] = (local, remote)
    return ports


def fd_kinds(pid, gw_port, upstream_port):
    """PID's descriptors by kind: "unix" sockets (the workers' channels
    among them), "client" (accepted on GW_PORT), "upstream" (to
    UPSTREAM_PORT), "listen" (listeners), "peer" (other connections: the
    test's admin requests, which sluiced closes when it sees their end),
    "other" (pipes, eventfds, epoll, files)."""
    with open("/proc/net/unix") as f:
        unix = {line.split()[6] for line in list(f)[1:]
                if len(line.split()) >= 7}
    tcp = _tcp_ports()
    kinds = {"unix": 0, "client": 0, "upstream": 0, "listen": 0, "peer": 0,
             "other": 0}
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        inode = link[8:-1] if link.startswith("socket:[") else None
        if inode in unix:
            kinds["unix"] += 1
        elif inode in tcp:
            local, remote = tcp[inode]
            kinds["listen" if not remote else
                  "client" if local == gw_port else
                  "upstream" if remote == upstream_port else "peer"] += 1
        else:
            kinds["other"] += 1
    return kinds
