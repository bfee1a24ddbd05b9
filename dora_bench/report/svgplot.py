"""Small inline-SVG charts for the report page (``page.py``): axes with ticks, points, lines, bands.

Why SVG written here rather than matplotlib PNGs: every point is an element of the page, so it
carries its own hover text (``<title>``: seed, lr, record path), links to its record, and can be
hidden by the page's filters; nothing is loaded from a file, and a page of text and vectors
stays small. Each chart scales to its container's width (``viewBox``), so it never makes the
page scroll sideways on a phone. The numbers plotted are computed by the caller from
``cells``/``tables``; this module only places them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

#: matplotlib's tab10, so the page's colours match the PNG figures'.
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)

#: A chart is drawn at most this much larger than its own units (its text stays near 11-14 px).
MAX_SCALE = 1.3


#: The tick labels' size on a phone (report.css, ``max-width: 700px``), in chart units: the largest
#: they are drawn, so a label placed to fit at this size fits at every width.
PHONE_TICK_UNITS = 17


def text_width(text: str, size: float) -> float:
    """A generous estimate of a label's width: 0.62 em a character (sans-serif digits are about 0.55)."""
    return 0.62 * size * len(text)


def attrs(**values: object) -> str:
    """` key="value"` pairs, escaped; None leaves the attribute out; ``data_x`` becomes ``data-x``."""
    return "".join(
        f' {key.rstrip("_").replace("_", "-")}="{escape(str(value), quote=True)}"'
        for key, value in values.items()
        if value is not None
    )


def fmt(value: float, digits: int = 2) -> str:
    """A number for an axis tick or a label: no trailing zeros, thousands as k/M for big counts."""
    if abs(value) >= 1e6:
        return f"{value / 1e6:.3g}M"
    if abs(value) >= 1e4:
        return f"{value / 1e3:.3g}k"
    text = f"{value:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (about ``count`` of them)."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks, value = [], first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def log_ticks(low: float, high: float) -> list[float]:
    """Powers of ten (and 2x, 5x where few decades are shown) within [low, high]."""
    ticks = []
    for exponent in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1):
        for mantissa in (1, 2, 5) if math.log10(high / low) < 2.5 else (1,):
            value = mantissa * 10**exponent
            if low <= value <= high:
                ticks.append(float(value))
    return ticks or [low, high]


@dataclass
class Axes:
    """A chart of ``width`` x ``height`` user units: the data ranges mapped into the plot area."""

    x_range: tuple[float, float]
    y_range: tuple[float, float]
    width: float = 640
    height: float = 300
    left: float = 58
    right: float = 14
    top: float = 14
    bottom: float = 44
    log_x: bool = False
    parts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.x_range = _padded(*self.x_range, log=self.log_x)
        self.y_range = _padded(*self.y_range, log=False)

    def x(self, value: float) -> float:
        low, high = self.x_range
        if self.log_x:
            value, low, high = math.log10(value), math.log10(low), math.log10(high)
        return self.left + (value - low) / (high - low) * (self.width - self.left - self.right)

    def y(self, value: float) -> float:
        low, high = self.y_range
        return self.height - self.bottom - (value - low) / (high - low) * (self.height - self.top - self.bottom)

    def frame(self, x_label: str, y_label: str, x_ticks: list[float] | None = None, x_digits: int = 2) -> None:
        """Grid lines, ticks and axis labels (drawn first, under the data)."""
        x0, x1 = self.left, self.width - self.right
        y0, y1 = self.height - self.bottom, self.top
        out = ['<g class="axes">']
        for value in nice_ticks(*self.y_range):
            if self.y_range[0] <= value <= self.y_range[1]:
                y = self.y(value)
                out.append(f'<line class="grid" x1="{x0:.1f}" x2="{x1:.1f}" y1="{y:.1f}" y2="{y:.1f}"/>')
                out.append(
                    f'<text class="tick" x="{x0 - 4:.1f}" y="{y + 3.5:.1f}" text-anchor="end">{fmt(value)}</text>'
                )
        if x_ticks is None:
            x_ticks = log_ticks(*self.x_range) if self.log_x else nice_ticks(*self.x_range)
        for value in x_ticks:
            if self.x_range[0] <= value <= self.x_range[1]:
                x = self.x(value)
                text = fmt(value, x_digits)
                out.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{y0:.1f}" y2="{y1:.1f}"/>')
                at, anchor = self._x_tick_place(x, text)
                out.append(f'<text class="tick" x="{at:.1f}" y="{y0 + 14:.1f}" text-anchor="{anchor}">{text}</text>')
        out.append(f'<rect class="frame" x="{x0:.1f}" y="{y1:.1f}" width="{x1 - x0:.1f}" height="{y0 - y1:.1f}"/>')
        out.append(
            f'<text class="label" x="{(x0 + x1) / 2:.1f}" y="{self.height - 6:.1f}" text-anchor="middle">'
            f"{escape(x_label)}</text>"
        )
        out.append(
            f'<text class="label" transform="translate(15 {(y0 + y1) / 2:.1f}) rotate(-90)" text-anchor="middle">'
            f"{escape(y_label)}</text>"
        )
        out.append("</g>")
        self.parts[:0] = out

    def _x_tick_place(self, x: float, text: str) -> tuple[float, str]:
        """Centred under its tick, unless at the phone's type size it would run past the chart's right
        edge (the right margin is narrower than a long label): then it ends at that edge."""
        half = 0.5 * text_width(text, PHONE_TICK_UNITS)
        if x + half > self.width - 1:
            return self.width - 1, "end"
        return x, "middle"

    def add(self, element: str) -> None:
        self.parts.append(element)

    def svg(self, title: str, **data: object) -> str:
        """The chart as an ``<svg>`` element (``role="img"`` with its title for screen readers)."""
        return (
            f'<svg class="chart" viewBox="0 0 {self.width:.0f} {self.height:.0f}" role="img"'
            f"{attrs(aria_label=title, style=f'max-width:{self.width * MAX_SCALE:.0f}px', **data)}>"
            f"<title>{escape(title)}</title>" + "".join(self.parts) + "</svg>"
        )


def _padded(low: float, high: float, log: bool) -> tuple[float, float]:
    """The range with a margin, so no point sits on the frame (and a single value gets a width)."""
    if log:
        low, high = max(low, 1e-12), max(high, 1e-12)
        if high <= low:
            return low / 2, high * 2
        span = math.log10(high / low)
        return low / 10 ** (0.08 * span + 0.05), high * 10 ** (0.08 * span + 0.05)
    if high <= low:
        return low - 1, high + 1
    pad = 0.06 * (high - low)
    return low - pad, high + pad


def polyline(points: list[tuple[float, float]], **extra: object) -> str:
    return f'<polyline points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in points)}"{attrs(**extra)}/>'


def band(upper: list[tuple[float, float]], lower: list[tuple[float, float]], **extra: object) -> str:
    """A filled area between two lines of the same x's (the seeds' min and max)."""
    ring = upper + lower[::-1]
    return f'<polygon points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in ring)}"{attrs(**extra)}/>'


def point(x: float, y: float, tip: str, href: str | None = None, r: float = 3.5, **extra: object) -> str:
    """A dot with its hover text; with ``href``, a link (to the run's record)."""
    dot = f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}"{attrs(**extra)}><title>{escape(tip)}</title></circle>'
    return f'<a href="{escape(href, quote=True)}">{dot}</a>' if href else dot


def heat_colour(value: float, top: float) -> str:
    """White to dark blue (YlGnBu's ends) by ``value / top``."""
    t = 0.0 if top <= 0 else max(0.0, min(1.0, value / top))
    start, end = (255, 255, 217), (8, 29, 88)
    mid = (65, 182, 196)
    a, b, s = (start, mid, t * 2) if t < 0.5 else (mid, end, (t - 0.5) * 2)
    return "#" + "".join(f"{round(u + (v - u) * s):02x}" for u, v in zip(a, b))
