"""A CPU-bound hook, about 2 ms of pure Python work per request (on a
2020s x86 core), holding its worker's interpreter the whole time.

    middleware:
      pre: [cpu.pre]
"""

from tyk.decorators import Hook

_ROUNDS = 22000


@Hook
def pre(request, session, spec):
    acc = 0
    for i in range(_ROUNDS):
        acc = (acc * 31 + i) & 0xFFFFFFFF
    request.add_header("X-Work", format(acc, "08x"))
    return request, session
