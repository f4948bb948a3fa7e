"""The XDP edge (bpf/edge.bpf.c) on a veth between two fresh namespaces:
sources on the deny list are dropped before the stack sees them, every
other packet passes, and sluice_edge_stats counts both per destination
port, in native and in generic mode. Also: sharing the interface with a
second XDP program through libxdp, where the kernel allows it."""

from __future__ import annotations

import re

import pytest

from netns import (Listener, compile_xdp_pass, edge_counts, ping,
                   tcp_connects, udp_send)

# ip link's "mode" of an XDP attachment: XDP_ATTACHED_DRV, XDP_ATTACHED_SKB
ATTACHED = {"native": 1, "generic": 2}


def start_edge(tools, veth, pin_dir, tmp_path, mode):
    deny = tmp_path / "deny"
    deny.write_text(f"{veth.peer_v4}/32\n{veth.peer_v6}/128\n")
    args = ["-p", pin_dir.path, "-i", veth.edge_if, "-D", str(deny),
            "-a", "alpha"] + (["-g"] if mode == "generic" else [])
    tool = tools(args, ns=veth.edge)
    assert tool.start() == "ok", tool.log()
    return tool


@pytest.fixture(params=["native", "generic"])
def edge(request, tools, veth, pin_dir, tmp_path):
    tool = start_edge(tools, veth, pin_dir, tmp_path, request.param)
    tool.mode = request.param
    return tool


def test_attached_in_the_requested_mode(edge, veth):
    out = veth.edge.run("ip", "-j", "-d", "link", "show", veth.edge_if)
    xdp = __import__("json").loads(out.stdout)[0]["xdp"]
    assert xdp["mode"] == ATTACHED[edge.mode]
    assert xdp["prog"]["name"] == "sluice_edge"


def test_pings_from_a_denied_source_are_dropped_and_counted(edge, veth,
                                                             pin_dir):
    assert ping(veth.peer, veth.peer_v4, veth.edge_v4, 5) == 0
    passed, dropped = edge_counts(pin_dir.path)[0]
    assert dropped == 5


def test_pings_from_other_sources_pass(edge, veth, pin_dir):
    assert ping(veth.peer, veth.other_v4, veth.edge_v4, 5) == 5
    passed, dropped = edge_counts(pin_dir.path)[0]
    assert passed >= 5
    assert dropped == 0


def test_udp_counters_per_port_match_what_was_sent(edge, veth, pin_dir):
    udp_send(veth.peer, veth.other_v4, veth.edge_v4, 9002, 4)
    udp_send(veth.peer, veth.peer_v4, veth.edge_v4, 9001, 7)
    counts = edge_counts(pin_dir.path)
    assert counts[9001] == (0, 7)
    assert counts[9002] == (4, 0)


def test_ipv6_denied_source_is_dropped(edge, veth, pin_dir):
    # The allowed source first: the denied one could not resolve the
    # neighbour (its solicitations are dropped too).
    udp_send(veth.peer, veth.other_v6, veth.edge_v6, 9004, 3)
    udp_send(veth.peer, veth.peer_v6, veth.edge_v6, 9003, 6)
    counts = edge_counts(pin_dir.path)
    assert counts[9003] == (0, 6)
    assert counts[9004] == (3, 0)


def test_tcp_from_a_denied_source_never_connects(edge, veth, pin_dir):
    listener = Listener(veth.edge, 8080)
    try:
        assert tcp_connects(veth.peer, veth.other_v4, veth.edge_v4, 8080)
        assert not tcp_connects(veth.peer, veth.peer_v4, veth.edge_v4, 8080)
    finally:
        listener.close()
    passed, dropped = edge_counts(pin_dir.path)[8080]
    assert passed >= 3  # SYN, ACK, FIN at least
    assert dropped >= 1  # the denied SYN (and its retransmissions)


def test_status_and_metrics_report_the_counters(edge, veth):
    udp_send(veth.peer, veth.peer_v4, veth.edge_v4, 9005, 3)
    status, metrics = edge.status()
    assert status["loaded"] is True
    assert {"port": 9005, "passed": 0, "dropped": 3} in status["edge"]
    assert status["spliced_bytes"] == {"alpha": 0}
    assert 'sluice_xdp_packets_total{port="9005",action="drop"} 3' in metrics
    assert 'sluice_spliced_bytes_total{api="alpha"} 0' in metrics


def dispatcher_refusal(tool) -> str | None:
    """The reason sluice logged for running without libxdp's dispatcher."""
    match = re.search(r'dispatcher is unavailable.*reason="([^"]*)"',
                      tool.log())
    return match.group(1) if match else None


def loaded_programs(veth) -> str:
    return veth.edge.run("xdp-loader", "status", veth.edge_if).stdout


def test_shares_the_interface_with_another_xdp_program(tools, veth, pin_dir,
                                                       tmp_path):
    tool = start_edge(tools, veth, pin_dir, tmp_path, "native")
    other = compile_xdp_pass(tmp_path)
    load = veth.edge.run("xdp-loader", "load", "-m", "native", veth.edge_if,
                         str(other), check=False)
    if load.returncode != 0:
        reason = dispatcher_refusal(tool)
        assert reason, f"xdp-loader failed for another reason:\n{load.stderr}"
        assert "Operation not permitted" in reason
        pytest.skip("this kernel refuses the freplace programs of libxdp's "
                    f"dispatcher ({reason}): sluice_edge runs alone and "
                    "xdp-loader could not add a second program "
                    f"({load.stderr.strip().splitlines()[-1]})")

    try:
        listing = loaded_programs(veth)
        assert "sluice_edge" in listing and "xdp_pass_test" in listing
        assert ping(veth.peer, veth.peer_v4, veth.edge_v4, 3) == 0
        assert ping(veth.peer, veth.other_v4, veth.edge_v4, 3) == 3
        assert tool.stop() == "closed"
        listing = loaded_programs(veth)
        assert "sluice_edge" not in listing and "xdp_pass_test" in listing
    finally:
        veth.edge.run("xdp-loader", "unload", veth.edge_if, "--all",
                      check=False)


def test_an_interface_taken_by_another_program_is_reported(tools, veth,
                                                           pin_dir, tmp_path):
    other = compile_xdp_pass(tmp_path)
    load = veth.edge.run("xdp-loader", "load", "-v", "-m", "native",
                         veth.edge_if, str(other))
    alone = "without dispatcher" in load.stderr
    try:
        deny = tmp_path / "deny"
        deny.write_text(f"{veth.peer_v4}/32\n")
        tool = tools(["-p", pin_dir.path, "-i", veth.edge_if, "-D",
                      str(deny)], ns=veth.edge)
        first = tool.start()
        if alone:
            assert first == (
                f"error: XDP on {veth.edge_if} is held by another program "
                "that cannot share it (no libxdp dispatcher here); unload it "
                f"(xdp-loader unload {veth.edge_if} --all) or drop "
                f"{veth.edge_if} from bpf.xdp.interfaces")
            assert pin_dir.entries() == []
            assert "xdp_pass_test" in loaded_programs(veth)
        else:
            assert first == "ok", tool.log()
            listing = loaded_programs(veth)
            assert "sluice_edge" in listing and "xdp_pass_test" in listing
            assert tool.stop() == "closed"
    finally:
        veth.edge.run("xdp-loader", "unload", veth.edge_if, "--all",
                      check=False)


@pytest.mark.parametrize("iface,sentence", [
    ("lo", "error: interface lo does not support native XDP; set "
           "bpf.xdp.mode: generic"),
    ("nosuch0", "error: bpf.xdp.interfaces names nosuch0, which does not "
                "exist here; fix the rules file or create the interface"),
])
def test_an_unusable_interface_is_one_sentence(tools, veth, pin_dir, iface,
                                               sentence):
    tool = tools(["-p", pin_dir.path, "-i", iface], ns=veth.edge)
    assert tool.start() == sentence
    assert tool.proc.wait(timeout=10) == 1
    assert pin_dir.entries() == []


def test_generic_mode_works_on_loopback(tools, veth, pin_dir, tmp_path):
    deny = tmp_path / "deny"
    deny.write_text("127.0.0.2/32\n")
    tool = tools(["-p", pin_dir.path, "-i", "lo", "-g", "-D", str(deny)],
                 ns=veth.edge)
    assert tool.start() == "ok", tool.log()
    assert ping(veth.edge, "127.0.0.1", "127.0.0.1", 3) == 3
    assert ping(veth.edge, "127.0.0.2", "127.0.0.1", 3) == 0
    assert edge_counts(pin_dir.path)[0][1] == 3
    assert tool.stop() == "closed"
