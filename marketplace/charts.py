"""Server-side SVG charts (no JavaScript, no CDN).

:func:`line_chart_svg` draws any number of series on one pair of axes; the earnings chart
here and the federated charts (``federated/charts.py``) are built on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from marketplace.selectors import DayEarning

WIDTH, HEIGHT = 560, 240
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 60, 20, 14, 34
FONT = 13
LEGEND_ROW = 20
MIN_LABEL_GAP = 70  # x labels closer than this (in chart units) are dropped, the last kept
PALETTE = ("#3b6fd8", "#d8593b", "#2e8b57", "#9b59b6", "#c9a227", "#17a2b8", "#e83e8c")


@dataclass(frozen=True)
class ChartPoint:
    """One point: ``x`` and ``y`` in data units, hover text, and ``data-*`` attributes."""

    x: float
    y: float
    title: str
    data: tuple[tuple[str, str | int | float], ...] = ()


@dataclass(frozen=True)
class ChartSeries:
    name: str
    points: Sequence[ChartPoint]
    color: str = ""  # empty: the palette's colour for the series' position


@dataclass(frozen=True)
class YAxis:
    """The y range drawn and its ticks (values and their labels, all different)."""

    low: float
    high: float
    ticks: tuple[tuple[float, str], ...]


def _nice_step(span: float, *, intervals: int, integer: bool) -> float:
    raw = span / intervals
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    return max(step, 1.0) if integer else step


def _tick_label(value: float, step: float) -> str:
    """``value`` with the decimals its ``step`` needs (0.25 steps: two), so ticks differ."""
    if float(step).is_integer():
        return f"{round(value):,}"
    if math.isclose(value, 0, abs_tol=step / 1000):
        return "0"
    decimals = -math.floor(math.log10(step))
    if not math.isclose(step, round(step * 10**decimals) / 10**decimals):
        decimals += 1  # 0.25, 2.5e-3: one digit more than the magnitude
    return f"{value:.{decimals}f}"


def y_axis(values: Sequence[float], *, from_zero: bool, integer: bool = False) -> YAxis:
    """A y axis that fits ``values``: from 0 (amounts that add up: credits, epsilon) or, with
    ``from_zero=False``, around the data with a margin (a loss that moves between 0.41 and
    0.45 is not drawn flat against a 0 far below it). One value gets a range around it. Ticks
    are round numbers, 3 to 6 of them, labelled with as many decimals as tell them apart."""
    lo, hi = min(values), max(values)
    if from_zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        if hi == lo:
            hi = lo + 1
    else:
        pad = (hi - lo) * 0.1 if hi > lo else (abs(hi) * 0.1 or 1.0)
        floor_at_zero = lo >= 0
        lo, hi = lo - pad, hi + pad
        if floor_at_zero:
            lo = max(lo, 0.0)
    step = _nice_step(hi - lo, intervals=4, integer=integer)
    low = math.floor(lo / step + 1e-9) * step
    high = math.ceil(hi / step - 1e-9) * step
    count = round((high - low) / step)
    ticks = tuple((low + k * step, _tick_label(low + k * step, step)) for k in range(count + 1))
    return YAxis(low=low, high=high, ticks=ticks)


def _series_svg(
    series: ChartSeries, color: str, xy: Callable[[ChartPoint], tuple[float, float]], tagged: bool
) -> SafeString:
    points = [xy(p) for p in series.points]
    line = " ".join(f"{x},{y}" for x, y in points)
    circles = format_html_join(
        "",
        '<circle class="point" cx="{}" cy="{}" r="4"{}><title>{}</title></circle>',
        (
            (x, y, format_html_join("", ' data-{}="{}"', p.data), p.title)
            for (x, y), p in zip(points, series.points, strict=True)
        ),
    )
    body = format_html(
        '<polyline fill="none" stroke="{c}" stroke-width="2" points="{line}"/>'
        '<g fill="{c}">{circles}</g>',
        c=color,
        line=line,
        circles=circles,
    )
    if not tagged:
        return body
    return format_html('<g class="series" data-series="{}">{}</g>', series.name, body)


def _legend_svg(series: Sequence[ChartSeries], colors: Sequence[str]) -> tuple[SafeString, int]:
    """The legend in rows above the plot (it never covers a point), and how many rows."""
    items = []
    x, row = PAD_LEFT, 0
    for s, color in zip(series, colors, strict=True):
        width = 18 + round(len(s.name) * FONT * 0.6) + 14
        if x > PAD_LEFT and x + width > WIDTH - PAD_RIGHT:
            x, row = PAD_LEFT, row + 1
        y = 4 + row * LEGEND_ROW
        items.append((x, y, color, x + 16, y + 11, s.name))
        x += width
    svg = format_html_join(
        "",
        '<g class="legend-item"><rect x="{}" y="{}" width="12" height="12" fill="{}"/>'
        '<text x="{}" y="{}">{}</text></g>',
        items,
    )
    return svg, row + 1


def _x_labels_svg(
    labels: Sequence[tuple[float, str]], x_of: Callable[[float], float], y: float
) -> SafeString:
    """X labels at their places, each text once and none closer than ``MIN_LABEL_GAP`` to the
    one before (the last label wins over a close neighbour that is not the first); a lone
    label is centred, otherwise the first starts at its place and the last ends at it."""
    placed: list[tuple[float, str]] = []
    for value, text in labels:
        x = x_of(value)
        if any(t == text for _, t in placed):
            continue
        if placed and x - placed[-1][0] < MIN_LABEL_GAP:
            is_last = (value, text) == tuple(labels[-1])
            if not is_last or len(placed) == 1:
                continue
            placed.pop()
        placed.append((x, text))
    rows = []
    for i, (x, text) in enumerate(placed):
        anchor = "middle"
        if len(placed) > 1 and i == 0 and x <= PAD_LEFT + 1:
            anchor = "start"
        elif len(placed) > 1 and i == len(placed) - 1 and x >= WIDTH - PAD_RIGHT - 1:
            anchor = "end"
        rows.append((x, y, anchor, text))
    return format_html_join(
        "", '<text class="x-label" x="{}" y="{}" text-anchor="{}">{}</text>', rows
    )


def line_chart_svg(
    series: Sequence[ChartSeries],
    *,
    label: str,
    css_class: str,
    x_labels: Sequence[tuple[float, str]],
    x_domain: tuple[float, float] | None = None,
    y_from_zero: bool = True,
    y_integer: bool = False,
) -> SafeString:
    """A line chart of ``series`` (empty string when no series has a point).

    The y axis fits the data (:func:`y_axis`: from 0 with ``y_from_zero``, else around the
    data) with round, distinct tick labels and light grid lines; x runs over ``x_domain``
    (default: the points' range) with ``x_labels`` (value, text) under it, each text once.
    With more than one series, each is a ``<g class="series" data-series=...>`` and a legend
    above the plot names them. A series of one point shows its value next to it.

    Each point is a ``<circle class="point">`` with its ``data-*`` attributes and a
    ``<title>`` for hover text.
    """
    drawn = [s for s in series if s.points]
    if not drawn:
        return mark_safe("")
    xs = [p.x for s in drawn for p in s.points]
    low, high = x_domain if x_domain is not None else (min(xs), max(xs))
    axis = y_axis([p.y for s in drawn for p in s.points], from_zero=y_from_zero, integer=y_integer)
    tagged = len(drawn) > 1
    colors = [s.color or PALETTE[i % len(PALETTE)] for i, s in enumerate(drawn)]
    legend, legend_rows = _legend_svg(drawn, colors) if tagged else (mark_safe(""), 0)
    top = PAD_TOP + legend_rows * LEGEND_ROW
    height = HEIGHT + legend_rows * LEGEND_ROW
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = height - top - PAD_BOTTOM
    base = top + plot_h

    def x_of(value: float) -> float:
        return round(PAD_LEFT + plot_w * ((value - low) / (high - low) if high > low else 0.5), 1)

    def y_of(value: float) -> float:
        return round(top + plot_h * (1 - (value - axis.low) / (axis.high - axis.low)), 1)

    def xy(p: ChartPoint) -> tuple[float, float]:
        return x_of(p.x), y_of(p.y)

    lines = format_html_join(
        "", "{}", ((_series_svg(s, c, xy, tagged),) for s, c in zip(drawn, colors, strict=True))
    )
    grid = format_html_join(
        "",
        '<line x1="{l}" y1="{y}" x2="{r}" y2="{y}" stroke="#e6e6ee"/>'
        '<text class="y-label" x="{tl}" y="{ty}" text-anchor="end">{text}</text>',
        (
            {
                "l": PAD_LEFT,
                "r": WIDTH - PAD_RIGHT,
                "y": y_of(v),
                "tl": PAD_LEFT - 6,
                "ty": y_of(v) + 4,
                "text": text,
            }
            for v, text in axis.ticks
        ),
    )
    single = format_html_join(
        "",
        '<text class="value-label" x="{}" y="{}" text-anchor="middle">{}</text>',
        (
            (x_of(p.x), y + 22 if y < top + plot_h / 2 else y - 10, p.title)
            for s in drawn
            if len(s.points) == 1
            for p in s.points
            for y in (y_of(p.y),)
        ),
    )
    return format_html(
        '<svg class="chart {cls}" viewBox="0 0 {w} {h}" width="100%" role="img" '
        'aria-label="{label}" xmlns="http://www.w3.org/2000/svg" '
        'preserveAspectRatio="xMidYMid meet" font-size="{font}">'
        "{legend}{grid}"
        '<line x1="{l}" y1="{b}" x2="{r}" y2="{b}" stroke="#999"/>'
        '<line x1="{l}" y1="{t}" x2="{l}" y2="{b}" stroke="#999"/>'
        "{xlabels}{lines}{single}</svg>",
        cls=css_class,
        label=label,
        w=WIDTH,
        h=height,
        font=FONT,
        legend=legend,
        grid=grid,
        l=PAD_LEFT,
        r=WIDTH - PAD_RIGHT,
        t=top,
        b=base,
        xlabels=_x_labels_svg(x_labels, x_of, height - 10),
        lines=lines,
        single=single,
    )


def earnings_chart_svg(days: Sequence[DayEarning]) -> SafeString:
    """A line chart with one point per day that had earnings; x is time, y is credits.

    Each point carries ``data-day`` and ``data-amount`` and a ``<title>`` for hover text.
    """
    if not days:
        return mark_safe("")
    first = days[0].day
    points = [
        ChartPoint(
            x=(d.day - first).days,
            y=d.amount,
            title=f"{d.day.isoformat()}: {d.amount} credits",
            data=(("day", d.day.isoformat()), ("amount", d.amount)),
        )
        for d in days
    ]
    return line_chart_svg(
        [ChartSeries("Earnings", points)],
        label="Earnings per day",
        css_class="earnings-chart",
        x_labels=[(0, first.isoformat()), ((days[-1].day - first).days, days[-1].day.isoformat())],
        y_integer=True,
    )
