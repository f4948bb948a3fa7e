"""A bound on what the splice verdict redirects (sluice_limits): sockmap
itself has no backpressure, so a sender can push everything into the
kernel however slowly the far reader reads; with a bound, the verdict stops
redirecting past it, the rest waits in the socket under TCP flow control,
and user space forwards it in order. Driven by sbpf_tool's limit-test:
server -> proxy_b ~ proxy_a -> client, the client not reading at first."""

from __future__ import annotations

import re

import pytest

MiB = 1 << 20


def limit_test(tools, pin_dir, limit: int, total: int) -> dict[str, int]:
    tool = tools(["-p", pin_dir.path, "limit-test", str(limit), str(total)])
    assert tool.start() == "ok", tool.log()
    line = tool.readline(timeout=60)
    match = re.fullmatch(r"limit ok written_before_block=(\d+) "
                         r"redirected=(\d+) held=(\d)", line)
    assert match, f"{line}\n{tool.log()}"
    assert tool.proc.wait(timeout=10) == 0
    return {"written": int(match[1]), "redirected": int(match[2]),
            "held": int(match[3])}


def test_without_a_bound_the_sender_never_blocks(tools, pin_dir):
    got = limit_test(tools, pin_dir, 0, 64 * MiB)
    assert got["written"] == 64 * MiB  # all of it queued in the kernel
    assert got["held"] == 0


@pytest.mark.parametrize("limit", [64 << 10, 1 * MiB, 4 * MiB])
def test_a_bound_holds_the_sender_back_and_loses_nothing(tools, pin_dir,
                                                         limit):
    got = limit_test(tools, pin_dir, limit, 64 * MiB)
    assert got["held"] == 1
    assert got["redirected"] <= limit
    # The bound plus what two TCP buffers hold (tcp_wmem/tcp_rmem maxima
    # are 4 and 6 MiB by default).
    assert got["written"] <= limit + 16 * MiB
    # limit-test checked that the client got all 64 MiB, in order.
