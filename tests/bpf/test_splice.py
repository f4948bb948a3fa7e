"""The splice verdict (bpf/splice.bpf.c) as user/bpf/ drives it: two
loopback TCP connections handed to sluice_pairs move their bytes in the
kernel both ways, intact, counted per socket (what the relay waits for
before passing a FIN on) and per API. The relays themselves, FIN/RST
handling and slow readers are tested with sluiced in tests/integration."""

from __future__ import annotations

import json
import re

import pytest

CASES = [
    pytest.param(0, 0, id="0B"),
    pytest.param(1024, 0, id="1KiB"),
    pytest.param(8 << 20, 0, id="8MiB"),
    # Bytes that reached the socket before it entered the map are not run
    # through the verdict until its data_ready fires again: sbpf_pair_add
    # makes it fire.
    pytest.param(1 << 20, 30000, id="1MiB-30000-queued-before"),
]


@pytest.mark.parametrize("size,queued", CASES)
def test_spliced_bytes_arrive_intact_and_are_counted(tools, pin_dir, size,
                                                     queued):
    tool = tools(["-p", pin_dir.path, "-a", "alpha", "pair-test", str(size),
                  str(queued)])
    assert tool.start() == "ok", tool.log()
    line = tool.readline(timeout=60)
    match = re.fullmatch(r"pair ok bytes_a=(\d+) bytes_b=(\d+)", line)
    assert match, f"{line}\n{tool.log()}"
    assert (int(match[1]), int(match[2])) == (size, size)

    status = json.loads(tool.readline())
    assert status["spliced_bytes"] == {"alpha": 2 * size}
    assert tool.proc.wait(timeout=10) == 0
    assert pin_dir.entries() == []
