"""Hooks for `make bench` (tests/bench/rules/hooks.yaml).

Native spelling (design.md section 4): each takes (request, session, spec)
and hands back (request, session) unchanged, so only the cost of the visit
is measured.
"""

import time

import sluice


@sluice.hook
def noop(request, session, spec):
    return request, session


@sluice.hook
def cpu_2ms(request, session, spec):
    # 2 ms of this thread's CPU, whatever else the machine is doing.
    start = time.thread_time()
    while time.thread_time() - start < 0.002:
        pass
    return request, session


@sluice.hook
def sleep_1s(request, session, spec):
    time.sleep(1)
    return request, session


@sluice.hook
async def async_sleep_1s(request, session, spec):
    # Imported here, not above: a worker serving only the sync hooks of
    # rules/hooks-sync.yaml then never loads asyncio (about 8 MiB).
    import asyncio
    await asyncio.sleep(1)
    return request, session
