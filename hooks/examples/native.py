"""Native sluice hooks: plain functions, sluice.reply to answer at once.

    middleware:
      pre: [native.require_json]
      response: [native.add_timing]
"""

import sluice


@sluice.hook
def require_json(request, session, spec):
    """Refuse bodies that are not JSON before they reach the upstream."""
    if request.object.method in ("POST", "PUT", "PATCH"):
        ctype = request.get_header("Content-Type") or ""
        if not ctype.startswith("application/json"):
            return sluice.reply(415, {"error": "send application/json"})
    # Mutating in place and returning nothing is enough.
    request.add_header("X-Checked", "json")


@sluice.hook
def add_timing(request, response, session, metadata, spec):
    response.headers["X-Served-By"] = "sluice"
    return response
