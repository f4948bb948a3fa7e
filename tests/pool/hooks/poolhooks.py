"""Hooks for the pool driver and the pool's integration tests: each one
exercises one way a hook can behave (return, sleep, raise, die, grow)."""

import asyncio
import json
import os
import time

import sluice

_hoard = []


def _config(spec):
    return json.loads(spec.get("config_data") or "{}")


@sluice.hook
def noop(request, session, spec):
    return request, session


@sluice.hook
def tag_pid(request, session, spec):
    request.add_header("X-Worker-Pid", str(os.getpid()))
    return request, session


@sluice.hook
def sleepy(request, session, spec):
    time.sleep(float(_config(spec).get("sleep", 1)))
    return request, session


@sluice.hook
async def async_sleepy(request, session, spec):
    await asyncio.sleep(float(_config(spec).get("sleep", 1)))
    return request, session


@sluice.hook
def boom(request, session, spec):
    raise ValueError("boom from the hook")


@sluice.hook
def die(request, session, spec):
    os._exit(7)


@sluice.hook
def grow(request, session, spec):
    _hoard.append(bytearray(int(_config(spec).get("grow_mb", 8)) << 20))
    return request, session


@sluice.hook
def store(request, session, spec):
    sluice.store_data("k-" + str(os.getpid()), str(os.getpid()), 60)
    sluice.store_data("shared", "v", 60)
    return request, session


@sluice.hook
def fetch(request, session, spec):
    value = sluice.get_data("shared")
    request.add_header("X-Got", value.decode() if value else "none")
    return request, session


@sluice.hook
def chatty(request, session, spec):
    print("hello from a hook")
    return request, session
