"""The page's SVG axes: tick labels stay inside the chart at the phone's type size."""

from __future__ import annotations

import re

from dora_bench.report.svgplot import PHONE_TICK_UNITS, Axes, text_width

TICK = re.compile(r'<text class="tick" x="([^"]+)" y="([^"]+)" text-anchor="(\w+)">([^<]+)</text>')


def x_ticks(ax: Axes) -> list[tuple[str, str, str]]:
    """(x, anchor, text) of the labels under the x axis (the y axis' labels sit left of the frame)."""
    below = ax.height - ax.bottom + 14
    return [(x, anchor, text) for x, y, anchor, text in TICK.findall("".join(ax.parts)) if float(y) == below]


def x_tick_extents(ax: Axes) -> list[tuple[str, float, float]]:
    ax.frame("x", "y", x_digits=3)
    out = []
    for x, anchor, text in x_ticks(ax):
        width = text_width(text, PHONE_TICK_UNITS)
        left = {"middle": float(x) - width / 2, "end": float(x) - width, "start": float(x)}[anchor]
        out.append((text, left, left + width))
    return out


def test_a_tick_at_the_right_edge_ends_at_the_edge_and_the_others_stay_centred():
    # the CI failure: seconds per step up to 0.0138 put a "0.014" tick in the range's padding, within a
    # few units of the frame, where half its width at phone size passes the chart's right edge
    ax = Axes((0.0100, 0.01378), (80.0, 90.0))
    assert ax.x(0.014) + text_width("0.014", PHONE_TICK_UNITS) / 2 > ax.width
    ticks = x_tick_extents(ax)
    assert [t for t, _, _ in ticks][-1] == "0.014"
    assert all(0 <= left and right <= ax.width for _, left, right in ticks), ticks
    centred = [t for t in x_ticks(ax) if t[1] == "middle"]
    assert len(centred) == len(ticks) - 1  # only the crowded one moved


def test_ticks_away_from_the_edge_are_centred_on_their_value():
    ax = Axes((0.0, 100.0), (0.0, 1.0))
    ax.frame("x", "y")
    ticks = x_ticks(ax)
    assert [t for _, _, t in ticks] == ["0", "50", "100"]
    for x, anchor, text in ticks:  # 100 sits at the data's end, 30 units inside the frame: room enough
        assert anchor == "middle" and abs(float(x) - ax.x(float(text))) < 0.06
