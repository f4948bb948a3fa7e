"""Tyk's `gateway` module: `from gateway import TykGateway as tyk`."""

from __future__ import annotations

import sluice

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class TykGateway:
    """The gateway calls Tyk offers plugins, backed by sluiced."""

    @staticmethod
    def store_data(key: str, value: Any, ttl: int = 0) -> None:
        """Store VALUE under KEY for TTL seconds (0: no expiry), shared by
        every worker."""
        sluice.store_data(str(key), value, int(ttl))

    @staticmethod
    def get_data(key: str) -> bytes:
        """The stored bytes, or b"" when KEY is absent or expired (as in
        Tyk, which returns an empty value)."""
        value = sluice.get_data(str(key))
        return b"" if value is None else value

    @staticmethod
    def log(msg: Any, level: str = "info") -> None:
        """Log MSG at LEVEL ("debug", "info", "warning", "error")."""
        sluice.log(msg, level)

    @staticmethod
    def log_error(*args: Any) -> None:
        """Log the arguments, joined by spaces, as an error."""
        sluice.log(" ".join(str(a) for a in args), "error")

    @staticmethod
    def trigger_event(name: str, payload: Any) -> None:
        """Tyk hands the event to its event handlers; sluice has none, so
        the event is logged, for a plugin that fires events to run as it
        is."""
        if isinstance(payload, (bytes, bytearray)):
            payload = bytes(payload).decode("utf-8", "replace")
        sluice.log(f"event {name}: {payload}", "info")
