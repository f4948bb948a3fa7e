"""A hook that blocks for one second, as a slow HTTP call would. In a
single-interpreter gateway it stalls every hooked API; in sluice it holds
one worker.

    middleware:
      pre: [slow.sleep]
"""

import time

from tyk.decorators import Hook


@Hook
def sleep(request, session, spec):
    time.sleep(1)
    request.add_header("X-Slept", "1s")
    return request, session
