"""sluice's native hook API.

    import sluice

    @sluice.hook
    def sign(request, session, spec):
        request.add_header("X-Signed", "yes")
        return request, session

    @sluice.hook
    async def check(request, session, spec):
        if request.get_header("Authorization") is None:
            return sluice.reply(401, {"error": "no credentials"})

Hooks take the same arguments as Tyk's (see tyk.decorators): 3 parameters
(request, session, spec) for request hooks, 4 (request, session, metadata,
spec) for auth_check, 5 (request, response, session, metadata, spec) for
response hooks. They may mutate the objects in place and return None, or
return them as Tyk plugins do.
"""

from __future__ import annotations

import logging as _logging

from sluice.objects import (Header, Reply, Request, RequestObject,
                            Response, ReturnOverrides, Session)

__all__ = ["hook", "reply", "Header", "Reply", "Request", "RequestObject",
           "Response", "ReturnOverrides", "Session", "store_data", "get_data",
           "get_data_async", "log", "current_api"]

# Annotations stay unevaluated: typing is for type checkers only.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Optional, TypeVar
    F = TypeVar("F", bound=Callable[..., Any])

# Set by sluice._worker when running inside sluice-worker.
_channel: Any = None


def hook(fn: Optional[F] = None, *, name: Optional[str] = None) -> Any:
    """Mark a function (plain or `async def`) as a hook.

    Usable as `@sluice.hook` or `@sluice.hook(name="other")`; the name is how
    a Tyk bundle's manifest refers to it. The function itself is returned
    unchanged, so calling it directly in a test works."""
    def mark(f: F) -> F:
        f._sluice_hook = name or f.__name__  # type: ignore[attr-defined]
        return f
    return mark(fn) if fn is not None else mark


def reply(status: int, body: Any = b"", headers: Any = None) -> Reply:
    """Answer the client now; the upstream is never contacted.

    Either `return sluice.reply(...)` or `raise sluice.reply(...)`. BODY may
    be str, bytes, or a dict/list (sent as JSON with a JSON content type);
    HEADERS a dict or a list of (name, value) pairs. In a response hook it
    replaces the upstream's response."""
    return Reply(status, body, headers)


def _require_channel() -> Any:
    if _channel is None:
        raise RuntimeError("the key-value store is only available inside "
                           "sluice-worker")
    return _channel


def store_data(key: str, value: Any, ttl: int = 0) -> None:
    """Store VALUE (str or bytes) under KEY in sluiced's store, shared by
    all workers; TTL in seconds, 0 for no expiry. Does not wait."""
    _require_channel().kv_set(key, value, ttl)


def get_data(key: str) -> Optional[bytes]:
    """The bytes stored under KEY, or None (also when the Redis behind
    python.store cannot answer). Waits for sluiced's answer (a local round
    trip, or one to Redis), blocking this worker meanwhile."""
    return _require_channel().kv_get(key)


async def get_data_async(key: str) -> Optional[bytes]:
    """get_data for `async def` hooks: awaits sluiced's answer, so the
    worker's other async calls go on meanwhile."""
    return await _require_channel().kv_get_async(key)


def current_api() -> Optional[str]:
    """Name of the API whose hook is running, or None."""
    return None if _channel is None else _channel.current_api()


_LEVELS = {"debug": _logging.DEBUG, "info": _logging.INFO,
           "warn": _logging.WARNING, "warning": _logging.WARNING,
           "error": _logging.ERROR, "critical": _logging.CRITICAL}


def log(msg: Any, level: str = "info") -> None:
    """Send one line to sluiced's log, tagged with the API's name."""
    if _channel is None:
        _logging.getLogger("sluice").log(
            _LEVELS.get(str(level).lower(), _logging.INFO), "%s", msg)
    else:
        _channel.log(str(level), str(msg))
