"""Tyk's plugin decorators, for `from tyk.decorators import *`.

Tyk decides how to call a hook by its parameter count, not by decorator:
3 (request, session, spec), 4 (request, session, metadata, spec) for
auth_check, 5 (request, response, session, metadata, spec) for response
hooks. sluice does the same. The decorators only mark a function so a
bundle's manifest can name it; the function is returned unchanged.
"""

from sluice import hook as _hook

__all__ = ["Hook", "Pre", "Post", "PostKeyAuth", "CustomKeyCheck", "Event"]


def Hook(f):
    """Any hook; the call form follows the parameter count."""
    return _hook(f)


# The older, typed spellings: same behaviour.
Pre = Hook
Post = Hook
PostKeyAuth = Hook
CustomKeyCheck = Hook


def Event(f):
    """Tyk event handlers; accepted so such modules import, never called."""
    return f
