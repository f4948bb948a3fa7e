"""An async hook: many of these wait at once in one worker.

    middleware:
      pre: [asyncsleep.wait]
"""

import asyncio

import sluice


@sluice.hook
async def wait(request, session, spec):
    """Stands for an awaited call to another service."""
    await asyncio.sleep(float(request.get_header("X-Sleep") or 1))
    request.add_header("X-Waited", "yes")
    return request, session
