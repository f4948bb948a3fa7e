"""The cheapest hook there is, to measure what a hook visit costs.

    middleware:
      pre: [noop.pre]
"""

from tyk.decorators import Hook


@Hook
def pre(request, session, spec):
    return request, session
