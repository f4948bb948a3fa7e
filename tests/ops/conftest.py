"""Fixtures for the deploy-and-operate tests; the helpers are in opsutil."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# tests/, for freeport
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from opsutil import BUILD, ROOT, Gateway, Upstream, ops_rules  # noqa: E402


@pytest.fixture(scope="module")
def upstream():
    up = Upstream()
    yield up
    up.close()


@pytest.fixture(scope="module")
def ops_gateway(tmp_path_factory, upstream):
    """The built sluiced with the two-API rules; one per test module."""
    workdir = tmp_path_factory.mktemp("gateway")
    gw = Gateway(os.path.join(BUILD, "sluiced"),
                 ops_rules(upstream, os.path.join(ROOT, "hooks", "examples")),
                 workdir)
    try:
        gw.wait_workers()
        yield gw
    finally:
        gw.stop()
