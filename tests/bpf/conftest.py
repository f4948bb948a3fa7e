"""Fixtures for tests/bpf: every namespace, pin directory and sbpf_tool a
test creates is removed by a finalizer, whether the test passed or not."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # freeport

import netns  # noqa: E402


def pytest_collection_modifyitems(config, items):
    reason = netns.have_tools()
    if reason:
        for item in items:
            if str(item.fspath).startswith(str(Path(__file__).parent)):
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def veth():
    pair = netns.VethPair()
    yield pair
    pair.close()


@pytest.fixture
def pin_dir():
    pins = netns.PinDir()
    yield pins
    pins.close()


@pytest.fixture
def tools(tmp_path):
    """tools(args, ns=None, prefix=None) -> a started-later netns.Tool."""
    made = []

    def make(args, ns=None, prefix=None):
        tool = netns.Tool(args, ns=ns, prefix=prefix, log_dir=tmp_path)
        made.append(tool)
        return tool

    yield make
    for tool in reversed(made):
        tool.close()
