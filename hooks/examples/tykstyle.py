"""A Tyk-style plugin, unchanged from how it would run under Tyk: every call
form, the request helpers, return_overrides and the gateway calls.

    middleware:
      pre: [tykstyle.add_headers]
      auth_check: tykstyle.check_key
      post_key_auth: [tykstyle.count]
      post: [tykstyle.tag_user]
      response: [tykstyle.scrub]
      config: { keys: { "secret-1": "alice" } }
"""

import json

from gateway import TykGateway as tyk
from tyk.decorators import *  # noqa: F401,F403 (Hook, Pre, Post, ...)


@Hook  # noqa: F405
def add_headers(request, session, spec):
    """3 parameters: a pre or post hook. Returns (request, session)."""
    request.add_header("X-Gateway", "sluice")
    request.delete_header("X-Internal-Debug")
    request.add_param("from_gateway", "1")
    if request.object.params.get("shout"):
        request.object.body = request.object.body.upper()
    return request, session


@CustomKeyCheck  # noqa: F405
def check_key(request, session, metadata, spec):
    """4 parameters: auth_check. Putting "token" in metadata accepts the
    request; leaving it out answers 403. return_overrides answers anything
    else at once. The session's rate limit applies to that token."""
    keys = json.loads(spec["config_data"]).get("keys", {})
    key = request.get_header("Authorization")
    if key is None:
        request.object.return_overrides.response_code = 401
        request.object.return_overrides.response_error = "missing key"
        request.object.return_overrides.headers = {"WWW-Authenticate": "Key"}
        return request, session, metadata
    if key in keys:
        metadata["token"] = key
        metadata["user"] = keys[key]
        # This key may send 5 requests per 10 seconds; past that the
        # gateway answers 429 (the limit is per token, for all workers).
        session.rate = 5
        session.per = 10
    return request, session, metadata


@PostKeyAuth  # noqa: F405
def count(request, session, spec):
    """Counts calls per user in the gateway's shared store."""
    user = session.metadata.get("user", "anonymous")
    seen = int(tyk.get_data("calls:" + user) or b"0") + 1
    tyk.store_data("calls:" + user, str(seen), 3600)
    request.add_header("X-Call-Count", str(seen))
    return request, session


@Post  # noqa: F405
def tag_user(request, session, spec):
    request.object.headers["X-User"] = session.metadata.get("user", "")
    tyk.log("request from " + session.metadata.get("user", "?"), "info")
    return request, session


@Hook  # noqa: F405
def scrub(request, response, session, metadata, spec):
    """5 parameters: a response hook. Returns the response."""
    response.headers.pop("Server", None)
    if response.status_code >= 500:
        response.raw_body = b'{"error": "upstream failed"}'
        response.headers["Content-Type"] = "application/json"
    return response
