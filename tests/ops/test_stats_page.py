"""/stats, the live HTML page, in Debian's headless Chromium: it is one
self-contained file, it fills its tables from /status, and its charts draw
and move while traffic flows.

Chromium runs with a virtual-time budget: the page's one-second polling
timer fires quickly in real time while every /status fetch is real, so a
few seconds of wall clock give the charts dozens of real samples."""

import os
import shutil
import time

import pytest

import png
from opsutil import Traffic, run

WIDTH, HEIGHT = 1200, 900
# The first two colours of the page's palette: APIs in /status order.
API_COLORS = {"plain": (0x25, 0x63, 0xEB), "hooked": (0xEA, 0x58, 0x0C)}

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-quic", "--no-first-run",
                  "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--force-device-scale-factor=1"]


@pytest.fixture(scope="module")
def chromium():
    path = shutil.which("chromium")
    assert path, "Debian's chromium is a test dependency: make deps"
    return path


def browse(chromium, tmp_path, url, *action, budget_ms=60000):
    """One fresh Chromium profile per run, removed with tmp_path."""
    profile = tmp_path / ("profile-%d" % time.monotonic_ns())
    out = run([chromium, *CHROMIUM_FLAGS, "--user-data-dir=%s" % profile,
               "--window-size=%d,%d" % (WIDTH, HEIGHT),
               "--virtual-time-budget=%d" % budget_ms, *action, url],
              timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out


def screenshot(chromium, tmp_path, url, name):
    path = tmp_path / name
    browse(chromium, tmp_path, url, "--screenshot=%s" % path)
    return png.read(str(path))


def line_pixels(image, tolerance=24):
    """For each API colour, the positions of pixels in it: the chart lines,
    plus a legend mark and a table swatch (a few pixels each)."""
    found = {name: set() for name in API_COLORS}
    px, ch, w = image.pixels, image.channels, image.width
    for y in range(image.height):
        row = y * w * ch
        for x in range(w):
            i = row + x * ch
            r, g, b = px[i], px[i + 1], px[i + 2]
            for name, (cr, cg, cb) in API_COLORS.items():
                if abs(r - cr) <= tolerance and abs(g - cg) <= tolerance \
                        and abs(b - cb) <= tolerance:
                    found[name].add((x, y))
    return found


def test_stats_page_is_self_contained(ops_gateway):
    status, body = ops_gateway.admin("/stats")
    assert status == 200
    html = body.decode()
    assert html.lstrip().startswith("<!DOCTYPE html>")
    for outside in ("http://", "https://", "src=", "<link", "@import",
                    "url("):
        assert outside not in html, outside


def test_stats_page_fills_its_tables_from_status(ops_gateway, chromium,
                                                 tmp_path):
    url = "http://%s/stats" % ops_gateway.admin_addr
    dom = browse(chromium, tmp_path, url, "--dump-dom",
                 budget_ms=5000).stdout
    st = ops_gateway.status()
    assert 'id="live">live' in dom
    assert "version %s" % st["version"] in dom
    for api in st["apis"]:
        assert ">%s</td>" % api["name"] in dom or \
            "</i>%s</td>" % api["name"] in dom
    for worker in st["pool"]["workers"]:
        assert "<td>%d</td>" % worker["pid"] in dom
    assert "splice mode" in dom


def test_stats_charts_draw_and_move_while_traffic_flows(ops_gateway,
                                                         chromium, tmp_path):
    url = "http://%s/stats" % ops_gateway.admin_addr
    with Traffic(ops_gateway.port, limit=20000, seconds=60):
        time.sleep(1)
        first = screenshot(chromium, tmp_path, url, "first.png")
        time.sleep(3)
        second = screenshot(chromium, tmp_path, url, "second.png")
    assert (first.width, first.height) == (WIDTH, HEIGHT)

    lines = [line_pixels(first), line_pixels(second)]
    for name in API_COLORS:
        for shot in lines:
            xs = [x for x, _ in shot[name]]
            # A line across the chart, not just the legend mark.
            assert len(shot[name]) > 150, (name, len(shot[name]))
            assert max(xs) - min(xs) > 200, name
        # The lines moved between the shots: many of their pixels differ.
        moved = lines[0][name] ^ lines[1][name]
        assert len(moved) > 100, (name, len(moved))
