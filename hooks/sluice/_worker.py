"""The runtime sluice-worker drives: imports hooks, serves calls.

sluice-worker (user/worker/main.c) embeds CPython and calls main(). Messages
(common/msg.h) arrive through the built-in `_sluice` module, which frames
and decodes them in C. One call message runs a whole chain (request: pre,
auth_check, post_key_auth, post; or the response hooks) and is answered with
one result holding only what the hooks changed.

Sync chains run inline, one at a time: a hook that blocks holds this worker,
and sluiced routes other calls around it. A chain with an `async def` hook
runs as an asyncio task; while tasks are pending the socket is watched by the
event loop, so further calls (sync or async) keep being read and served.
With no task pending the loop is left and the worker blocks in recv(), the
cheapest way to wait.
"""

import contextvars
import importlib
import io
import logging
import os
import sys
import threading
import time
import traceback
import types
from collections import deque

import _sluice
import sluice
from sluice.objects import Reply, Request, Response, Session

_api_var: contextvars.ContextVar = contextvars.ContextVar("sluice_api",
                                                         default=None)

_CO_COROUTINE = 0x80  # inspect.CO_COROUTINE, without importing inspect

# Roles in a chain; only auth_check needs handling of its own.
ROLE_PLAIN, ROLE_AUTH = 0, 1

_LEVEL_NAMES = {"debug": "debug", "info": "info", "warn": "warn",
                "warning": "warn", "error": "error", "critical": "error",
                "fatal": "error"}
_LEVEL_RANK = {"error": 0, "warn": 1, "info": 2, "debug": 3}

_CALL_FORMS = {
    3: "(request, session, spec)",
    4: "(request, session, metadata, spec)",
    5: "(request, response, session, metadata, spec)",
}

_AUTH_DENIED = {"error": "Key not authorised"}
_KEY_INACTIVE = {"error": "Key is inactive, please renew"}
_KEY_EXPIRED = {"error": "Key has expired, please renew"}
_RATE_EXCEEDED = {"error": "Rate limit exceeded"}
_QUOTA_EXCEEDED = {"error": "Quota exceeded"}

# Where in sys.path bundle directories go: after the hooks directory and
# python.path (set at init).
_path_end = 1

# Messages handled per wake-up of the event loop, so pending tasks get
# their turn under a flood of calls.
_BATCH = 64


class Hook:
    """One resolved hook: the callable and how to call it."""

    __slots__ = ("fn", "name", "arity", "is_async", "role")

    def __init__(self, fn, name, phase, role=ROLE_PLAIN):
        self.fn = fn
        self.name = name
        self.role = role
        self.arity, self.is_async = _call_form(fn, name)
        allowed = (5,) if phase == "response" else (3, 4)
        if role == ROLE_AUTH:
            allowed = (4,)  # without metadata it could never pass
        if self.arity not in allowed:
            forms = " or ".join(_CALL_FORMS[a] for a in allowed)
            raise TypeError(f"hook {name} takes {self.arity} parameters; a "
                            f"{phase} hook takes {forms}")


def _call_form(fn, name):
    """(parameter count, is async) as Tyk's dispatcher counts them."""
    if not callable(fn):
        raise TypeError(f"hook {name} is not callable")
    target, bound = fn, 0
    if isinstance(fn, types.MethodType):
        target, bound = fn.__func__, 1
    code = getattr(target, "__code__", None)
    if code is None:
        call = getattr(type(fn), "__call__", None)
        code, bound = getattr(call, "__code__", None), 1
    if code is None:
        raise TypeError(f"hook {name}: cannot tell its parameters; "
                        f"define it with def or async def")
    is_async = bool(code.co_flags & _CO_COROUTINE)
    return code.co_argcount - bound, is_async


class Resolver:
    """Finds the function behind a hook name for one API: "module.function"
    by import, or a bare name in a Tyk bundle's modules."""

    def __init__(self, entry):
        self.api = entry["name"]
        self.bundle = []
        if entry.get("bundle_dir"):
            names = entry.get("bundle_modules") or entry.get("modules") or []
            self.bundle = _load_bundle(self.api, entry["bundle_dir"], names)

    def resolve(self, name):
        if "." not in name and self.bundle:
            return self._from_bundle(name)
        modname, _, attr = name.rpartition(".")
        if not modname or not attr:
            raise ValueError(f"hook {name!r}: expected module.function")
        mod = importlib.import_module(modname)
        try:
            return getattr(mod, attr)
        except AttributeError:
            raise AttributeError(f"module {modname} ({mod.__file__}) has no "
                                 f"function {attr}") from None

    def _from_bundle(self, name):
        for mod in self.bundle:
            fn = getattr(mod, name, None)
            if callable(fn):
                return fn
        for mod in self.bundle:
            for value in vars(mod).values():
                if getattr(value, "_sluice_hook", None) == name:
                    return value
        files = ", ".join(m.__file__ for m in self.bundle)
        raise AttributeError(f"no hook {name} in the bundle ({files})")


def _load_bundle(api, bundle_dir, names):
    """Import a Tyk bundle's Python modules (names as "middleware" or
    "pkg.mod", or file names as "middleware.py"). Each gets a name of its
    own, since two bundles often both ship middleware.py; the bundle
    directory goes on sys.path so its files can import one another."""
    import importlib.util
    bundle_dir = os.path.abspath(bundle_dir)
    if bundle_dir not in sys.path:
        # After python.path, before the standard library.
        global _path_end
        sys.path.insert(_path_end, bundle_dir)
        _path_end += 1
    mods = []
    for name in names:
        rel = name[:-3] if name.endswith(".py") else name.replace(".", "/")
        path = os.path.join(bundle_dir, rel + ".py")
        if not name.endswith(".py") and not os.path.exists(path) \
                and os.path.exists(os.path.join(bundle_dir, name)):
            continue  # a data file from file_list: manifest.json, ...
        uniq = "_sluice_bundle_" + "_".join(
            "".join(c if c.isalnum() else "_" for c in part)
            for part in (api, rel))
        spec = importlib.util.spec_from_file_location(uniq, path)
        if spec is None:
            raise ImportError(f"cannot load {path}")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[uniq] = mod
        try:
            spec.loader.exec_module(mod)
        except BaseException:
            del sys.modules[uniq]
            raise
        mods.append(mod)
    if not mods:
        raise ImportError(f"bundle {bundle_dir} lists no Python file")
    return mods


class Api:
    """One API's hooks, resolved once at start."""

    def __init__(self, entry):
        self.name = entry["name"]
        self.spec = {"APIID": self.name, "OrgID": entry.get("org_id") or "",
                     "config_data": entry.get("config_data") or "{}"}
        r = Resolver(entry)
        req = [_load_hook(r, n, "request") for n in entry.get("pre") or ()]
        self.has_auth = bool(entry.get("auth_check"))
        if self.has_auth:
            req.append(_load_hook(r, entry["auth_check"], "request",
                                  ROLE_AUTH))
        for key in ("post_key_auth", "post"):
            req += [_load_hook(r, n, "request") for n in entry.get(key) or ()]
        self.request_chain = req
        self.response_chain = [_load_hook(r, n, "response")
                               for n in entry.get("response") or ()]
        # No hook runs after auth_check, in this visit or the response's:
        # none can see when the request was counted against its limits.
        self.auth_is_last = self.has_auth and req[-1].role == ROLE_AUTH \
            and not self.response_chain
        self.request_async = any(h.is_async for h in req)
        self.response_async = any(h.is_async for h in self.response_chain)
        hooks = req + self.response_chain
        # sluiced may send this API's calls to a worker several at a time.
        self.all_async = bool(hooks) and all(h.is_async for h in hooks)


def _load_hook(resolver, name, phase, role=ROLE_PLAIN):
    try:
        return Hook(resolver.resolve(name), name, phase, role)
    except Exception as e:
        e.sluice_hook = name
        raise


# Frames of the runtime itself and of the import machinery say nothing to
# a hook's author; tracebacks leave them out.
_INTERNAL_FILES = frozenset((__file__, importlib.__file__,
                             "<frozen importlib._bootstrap>",
                             "<frozen importlib._bootstrap_external>"))


def format_error(exc):
    te = traceback.TracebackException.from_exception(exc)
    te.stack = traceback.StackSummary.from_list(
        [f for f in te.stack if f.filename not in _INTERNAL_FILES])
    return "".join(te.format())


class Visit:
    """The objects of one call, passed from hook to hook."""

    __slots__ = ("api", "request", "session", "metadata", "spec",
                 "response", "reply", "quota", "limits")

    def __init__(self, api, call):
        self.api = api
        self.request = Request(call.get("req") or {})
        self.session = Session()
        self.metadata = {}
        self.spec = dict(api.spec)
        resp = call.get("resp") if call.get("phase") == "response" else None
        self.response = None if resp is None else Response(resp)
        self.reply = None
        self.quota = None  # what the client is told is left
        self.limits = None  # left for sluiced to count with the result
        carried = call.get("sess") if resp is not None else None
        if carried:
            # What the request chain left in the session and metadata.
            for name, value in (carried.get("s") or {}).items():
                setattr(self.session, name, value)
            self.metadata = carried.get("m") or {}

    def args(self, arity):
        if arity == 3:
            return (self.request, self.session, self.spec)
        if arity == 4:
            return (self.request, self.session, self.metadata, self.spec)
        return (self.request, self.response, self.session, self.metadata,
                self.spec)

    def take(self, hook, r):
        """Adopt what HOOK returned; True when the chain must stop."""
        if r is not None:
            if type(r) is tuple and hook.arity != 5:
                self._adopt_tuple(r)
            else:
                self._adopt(hook, r)
            if self.reply is not None:
                return True
        if self.response is None:
            self.reply = self.request._override()
            if self.reply is not None:
                return True
        if hook.role == ROLE_AUTH:
            self.session.metadata.update(self.metadata)
            # Tyk's checks of the key that auth_check found.
            if not self.metadata.get("token"):
                self.reply = Reply(403, _AUTH_DENIED)
            elif self.session.is_inactive:
                self.reply = Reply(403, _KEY_INACTIVE)
            elif 0 < self.session.expires < time.time():
                self.reply = Reply(401, _KEY_EXPIRED)
            else:
                self._count_limits()
            return self.reply is not None
        return False

    def _count_limits(self):
        """Tyk's rate limit and quota check, right after auth_check (before
        post_key_auth and post hooks): sluiced counts, the session learns
        what is left. When no hook comes after, and sluiced allows it, the
        limits go with the result instead: the same order for every
        observer, and one round trip to sluiced fewer."""
        limits = self._limits()
        if not limits:
            return
        channel = sluice._channel
        if channel.limits_in_result and self.api.auth_is_last:
            self.limits = limits
            return
        ans = channel.limit_take(limits)
        verdict, wait_ms = ans.get("v"), ans.get("wait_ms", -1)
        retry = {"Retry-After": str(max(1, -(-wait_ms // 1000)))} \
            if wait_ms >= 0 else None
        if verdict == "rate":
            self.reply = Reply(429, _RATE_EXCEEDED, retry)
        elif verdict == "quota":
            self.reply = Reply(403, _QUOTA_EXCEEDED, retry)
        elif ans.get("remaining", -1) >= 0:
            renews_ms = ans.get("renews_ms", -1)
            self.session.quota_remaining = ans["remaining"]
            self.session.quota_renews = 0 if renews_ms < 0 else \
                int(time.time()) + -(-renews_ms // 1000)
            self.quota = {"max": limits["quota_max"],
                          "remaining": ans["remaining"],
                          "reset": self.session.quota_renews}

    def _adopt(self, hook, r):
        if isinstance(r, tuple):
            if hook.arity != 5:
                self._adopt_tuple(r)
                return
            r = r[0] if r else None
        if r is None:
            return
        if isinstance(r, Reply):
            self.reply = r
        elif isinstance(r, Response):
            self.response = r
        elif isinstance(r, Request):
            self.request = r
        elif hasattr(r, "__await__"):
            if hasattr(r, "close"):
                r.close()
            raise TypeError(f"hook {hook.name} returned an awaitable but is "
                            f"not defined with async def")
        else:
            raise TypeError(f"hook {hook.name} returned a "
                            f"{type(r).__name__}; expected the call form's "
                            f"objects, None or sluice.reply()")

    def _adopt_tuple(self, r):
        """(request, session) or (request, session, metadata); most hooks
        hand back the very objects they got."""
        n = len(r)
        if n and r[0] is not self.request:
            if isinstance(r[0], Request):
                self.request = r[0]
            elif isinstance(r[0], Reply):
                self.reply = r[0]
        if n > 1 and r[1] is not self.session and isinstance(r[1], Session):
            self.session = r[1]
        if n > 2 and r[2] is not self.metadata and isinstance(r[2], dict):
            self.metadata = r[2]

    def result(self, mid):
        res = {"t": "result", "id": mid, "ok": True}
        if self.response is not None:
            # A reply in the response phase replaces the upstream's answer.
            if self.reply is not None:
                res["resp"] = self.reply._encode()
            else:
                changes = self.response._changes()
                if changes:
                    res["resp"] = changes
        elif self.reply is not None:
            res["reply"] = self.reply._encode()
        else:
            changes = self.request._changes()
            if changes:
                res["req"] = changes
            if self.api.response_chain:
                carried = self._carried()
                if carried:
                    res["sess"] = carried
            if self.quota:
                res["quota"] = self.quota
            if self.limits:
                res["lim"] = self.limits
        return res

    def _limits(self):
        """The rate limit and quota auth_check set on the session for the
        key in metadata["token"]; None when neither is set."""
        s = self.session
        rate, per, quota = float(s.rate), float(s.per), int(s.quota_max)
        token = self.metadata.get("token")
        if not token or (not (rate > 0 and per > 0) and quota <= 0):
            return None
        return {"key": str(token), "rate": rate, "per": per,
                "quota_max": quota,
                "quota_period": int(s.quota_renewal_rate)}

    def _carried(self):
        """The session and metadata as the request chain left them, for
        sluiced to hand to the response hooks; None when both are empty."""
        fields = {k: v for k, v in vars(self.session).items()
                  if k != "metadata" or v}
        if not fields and not self.metadata:
            return None
        return {"s": fields, "m": self.metadata}


class LogStream(io.TextIOBase):
    """sys.stdout/sys.stderr inside the worker: each line becomes a log
    message tagged with the running API."""

    def __init__(self, worker, level):
        super().__init__()
        self._worker = worker
        self._level = level
        self._buf = ""

    @property
    def encoding(self):
        return "utf-8"

    def writable(self):
        return True

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not "
                            f"{type(s).__name__}")
        buf = self._buf + s
        while "\n" in buf:
            line, buf = buf.split("\n", 1)
            self._worker.log(self._level, line)
        self._buf = buf
        return len(s)

    def flush(self):
        if self._buf:
            line, self._buf = self._buf, ""
            self._worker.log(self._level, line)


class LogHandler(logging.Handler):
    """The root logging handler: records go to sluiced's log."""

    def __init__(self, worker):
        super().__init__()
        self._worker = worker
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record):
        try:
            msg = self.format(record)
            if record.name != "root":
                msg = f"{record.name}: {msg}"
            level = _LEVEL_NAMES.get(record.levelname.lower(), "info")
            self._worker.log(level, msg)
        except Exception:
            self.handleError(record)


class Worker:
    """The message loop, and the channel sluice's API calls into."""

    def __init__(self):
        self.apis = {}
        self.errors = {}
        self.ready = False
        self.backlog = deque()
        self.send = _sluice.send
        self.loop = None
        self.sem = None
        self.pending = 0
        self.idle = None
        self.eof = False
        self.check = False
        self.ask_next = 0
        self.limits_in_result = False  # from init
        self.waiting = {}  # ask id -> future of an awaited answer
        self.sync_api = None
        self.max_rank = _LEVEL_RANK["info"]
        self.main_thread = threading.get_ident()
        self.out = LogStream(self, "info")
        self.err = LogStream(self, "error")

    # ---- the channel API used by sluice and gateway ----------------------

    def current_api(self):
        # Async tasks carry their API in a context variable; a sync call,
        # and threads it starts, see sync_api.
        return _api_var.get() or self.sync_api

    def log(self, level, msg):
        level = _LEVEL_NAMES.get(level.lower(), "info")
        if _LEVEL_RANK[level] > self.max_rank or self.eof:
            return
        try:
            self.send({"t": "log", "level": level,
                       "api": self.current_api(), "msg": msg})
        except OSError:
            pass  # sluiced is gone; the loop sees end of file next

    def kv_set(self, key, value, ttl):
        if not isinstance(value, (bytes, bytearray)):
            value = str(value).encode("utf-8")
        self.send({"t": "kv_set", "key": str(key), "value": bytes(value),
                   "ttl": int(ttl)})

    def kv_get(self, key):
        return self.ask({"t": "kv_get", "key": str(key)}, "kv",
                        "get_data").get("value")

    async def kv_get_async(self, key):
        """kv_get for coroutines: the event loop, and the worker's other
        async calls, run while sluiced answers."""
        import asyncio
        if asyncio.get_running_loop() is not self.loop:
            # Not the worker's loop (asyncio.run in a sync hook): nothing
            # would read the answer while this one waits.
            return self.kv_get(key)
        fut = self.loop.create_future()
        kid = self.send_ask({"t": "kv_get", "key": str(key)},
                            "get_data_async")
        self.waiting[kid] = fut
        try:
            return (await fut).get("value")
        finally:
            self.waiting.pop(kid, None)

    def limit_take(self, limits):
        """Count this request against LIMITS ({"key", "rate", "per",
        "quota_max", "quota_period"}) in sluiced, which keeps every key's
        counters: {"v": "pass"|"rate"|"quota", "wait_ms", "remaining",
        "renews_ms"}."""
        return self.ask(dict(limits, t="limit", api=self.current_api()),
                        "lim", "rate limits")

    def send_ask(self, msg, what):
        """Send MSG, a question to sluiced, with a fresh id; the id. WHAT
        names the call for errors."""
        if threading.get_ident() != self.main_thread:
            raise RuntimeError(f"{what}: only available in the hook's own "
                               f"thread")
        if self.eof:
            raise ConnectionError("sluiced has closed the channel")
        self.ask_next += 1
        msg["id"] = self.ask_next
        self.send(msg)
        return msg["id"]

    def ask(self, msg, answer, what):
        """Send MSG and wait for sluiced's ANSWER message with its id.
        Messages that arrive meanwhile are kept, in order, for the loop."""
        self.send_ask(msg, what)
        while True:
            got = _sluice.recv()
            if got is None:
                self.eof = True
                raise ConnectionError("sluiced closed the channel")
            if isinstance(got, dict) and got.get("t") == answer and \
                    got.get("id") == msg["id"]:
                break
            # Anything else, an awaited answer among it, is the loop's.
            self.backlog.append(got)
        if self.backlog and self.loop is not None and self.loop.is_running():
            self.loop.call_soon(self.on_readable)
        return got

    # ---- messages --------------------------------------------------------

    def dispatch(self, msg):
        t = msg.get("t") if type(msg) is dict else None
        try:
            if t == "call":
                self.on_call(msg)
            elif t == "init":
                self.on_init(msg)
            elif t in ("kv", "lim"):
                fut = self.waiting.get(msg.get("id"))
                if fut is not None and not fut.done():
                    fut.set_result(msg)
                # else: an answer whose asker is gone
            else:
                self.log("warn", f"worker: unknown message {t!r} ignored")
        except Exception:
            # A malformed message from sluiced: answer the call if it can
            # be answered, never let it stop the worker.
            if t == "call":
                self.send(self.failure(msg.get("id")))
            else:
                self.log("error", "worker: bad message\n"
                         + traceback.format_exc())

    def on_init(self, msg):
        if self.ready:
            self.log("warn", "worker: second init ignored")
            return
        global _path_end
        for p in msg.get("path") or ():
            if p not in sys.path:
                sys.path.insert(_path_end, p)
                _path_end += 1
        level = _LEVEL_NAMES.get(str(msg.get("log_level") or "info"), "info")
        self.max_rank = _LEVEL_RANK[level]
        self.check = bool(msg.get("check"))
        self.limits_in_result = bool(msg.get("limits_in_result"))
        logging.getLogger().setLevel(level.upper().replace("WARN",
                                                           "WARNING"))
        for entry in msg.get("apis") or ():
            self.load_api(entry)
        if any(a.request_async or a.response_async
               for a in self.apis.values()):
            self.start_loop(int(msg.get("concurrency") or 64))
        self.ready = True
        self.send({"t": "ready", "pid": os.getpid(), "errors": self.errors,
                   "async_apis": [a.name for a in self.apis.values()
                                  if a.all_async]})

    def load_api(self, entry):
        name = entry.get("name") or "?"
        self.sync_api = name
        try:
            self.apis[name] = Api(entry)
        except BaseException as e:
            # SystemExit at import must not stop the worker either.
            what = getattr(e, "sluice_hook", None)
            what = f"hook {what}" if what else "its hooks"
            self.errors[name] = (f"API {name}: cannot load {what}\n"
                                 f"{format_error(e)}")
            if not self.check:  # `sluiced -t` reports it in its own words
                self.log("error", self.errors[name].rstrip())
        finally:
            self.out.flush()
            self.err.flush()
            self.sync_api = None

    def start_loop(self, concurrency):
        import asyncio
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.sem = asyncio.Semaphore(max(1, concurrency))

    def on_call(self, msg):
        mid = msg.get("id")
        call = msg.get("c") or {}
        api = self.apis.get(call.get("api"))
        if api is None:
            self.send(self.missing_api(mid, call.get("api")))
            return
        if call.get("phase") == "response":
            chain, is_async = api.response_chain, api.response_async
        else:
            chain, is_async = api.request_chain, api.request_async
        if not chain:
            self.send({"t": "result", "id": mid, "ok": True})
            return
        try:
            visit = Visit(api, call)
        except Exception:
            self.send(self.failure(mid))  # a malformed call
            return
        if is_async:
            self.pending += 1
            self.loop.create_task(self.run_async(visit, chain, mid))
            return
        self.sync_api = api.name
        res = self.run_sync(visit, chain, mid)
        if self.out._buf or self.err._buf:
            self.out.flush()
            self.err.flush()
        self.send_result(res)
        self.sync_api = None

    def missing_api(self, mid, name):
        if not self.ready:
            why = "the worker has not been initialised"
        elif name in self.errors:
            why = f"hooks do not load\n{self.errors[name]}"
        else:
            why = "the worker has no such API"
        return {"t": "result", "id": mid, "ok": False,
                "error": f"API {name}: {why}"}

    def run_sync(self, visit, chain, mid):
        try:
            try:
                for h in chain:
                    if visit.take(h, h.fn(*visit.args(h.arity))):
                        break
            except Reply as r:
                visit.reply = r
            return visit.result(mid)
        except Exception:
            return self.failure(mid)

    async def run_async(self, visit, chain, mid):
        try:
            async with self.sem:
                _api_var.set(visit.api.name)
                try:
                    try:
                        for h in chain:
                            r = h.fn(*visit.args(h.arity))
                            if h.is_async:
                                r = await r
                            if visit.take(h, r):
                                break
                    except Reply as r:
                        visit.reply = r
                    res = visit.result(mid)
                except Exception:
                    res = self.failure(mid)
                self.send_result(res)
        finally:
            self.pending -= 1
            if self.pending == 0 and self.idle is not None \
                    and not self.idle.done():
                self.idle.set_result(None)

    def failure(self, mid):
        tb = format_error(sys.exc_info()[1])
        self.log("error", f"hook failed\n{tb.rstrip()}")
        return {"t": "result", "id": mid, "ok": False, "error": tb}

    def send_result(self, res):
        try:
            try:
                self.send(res)
            except (TypeError, ValueError, OverflowError) as e:
                if res.pop("sess", None) is None:
                    raise
                # Perhaps only a session value cannot travel. If the rest
                # can, the response hooks get an empty session and the
                # request goes on.
                self.send(res)
                self.log("warn", f"session not passed to the response "
                         f"hooks: {e}")
        except (TypeError, ValueError, OverflowError):
            # A value a hook set that cannot travel: report it as the
            # hook's failure rather than leave the call unanswered.
            self.send(self.failure(res["id"]))
        except OSError:
            self.eof = True

    # ---- the loops -------------------------------------------------------

    def serve(self):
        """Block in recv() while no async call is pending; run the event
        loop while some are."""
        while not self.eof:
            msg = self.backlog.popleft() if self.backlog else _sluice.recv()
            if msg is None:
                self.eof = True
                break
            self.dispatch(msg)
            # The loop may end just as it read a new async call (the last
            # task finished in the same round): run until none is left.
            while self.pending and not self.eof:
                self.run_loop()
        self.stop_tasks()

    def run_loop(self):
        loop = self.loop
        self.idle = loop.create_future()
        loop.add_reader(_sluice.fd, self.on_readable)
        if self.backlog:
            loop.call_soon(self.on_readable)
        try:
            loop.run_until_complete(self.idle)
        finally:
            loop.remove_reader(_sluice.fd)
            self.idle = None

    def on_readable(self):
        for _ in range(_BATCH):
            if self.backlog:
                msg = self.backlog.popleft()
            else:
                msg = _sluice.recv_nowait()
                if msg is False:
                    return
            if msg is None:
                self.eof = True
                if not self.idle.done():
                    self.idle.set_result(None)
                return
            self.dispatch(msg)
            if self.eof:
                return
        if self.backlog:
            self.loop.call_soon(self.on_readable)

    def stop_tasks(self):
        """At end of file: cancel what is still running, briefly let it
        unwind, and close the loop."""
        if self.loop is None:
            return
        import asyncio
        tasks = asyncio.all_tasks(self.loop)
        for t in tasks:
            t.cancel()
        if tasks:
            self.loop.run_until_complete(asyncio.wait(tasks, timeout=1))
        self.loop.close()


def main():
    worker = Worker()
    sluice._channel = worker
    root = logging.getLogger()
    root.handlers[:] = [LogHandler(worker)]
    sys.stdout, sys.stderr = worker.out, worker.err
    try:
        worker.serve()
    finally:
        # The C side leaves without finalizing the interpreter (threads a
        # hook left running must not keep the process): atexit handlers
        # of hook modules run here, their output still logged if sluiced
        # is there to read it.
        import atexit
        atexit._run_exitfuncs()
        worker.out.flush()
        worker.err.flush()
        worker.eof = True
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        sluice._channel = None
    return 0
