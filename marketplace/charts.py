"""Server-side SVG charts (no JavaScript, no CDN).

:func:`line_chart_svg` draws any number of series on one pair of axes; the earnings chart
here and the federated charts (``federated/charts.py``) are built on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from marketplace.selectors import DayEarning

WIDTH, HEIGHT = 640, 240
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 56, 16, 16, 32
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


def _plain(value: float) -> str:
    return str(value)


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
    if not tagged:
        return format_html(
            '<polyline fill="none" stroke="{c}" stroke-width="2" points="{line}"/>'
            '<g fill="{c}">{circles}</g>',
            c=color,
            line=line,
            circles=circles,
        )
    return format_html(
        '<g class="series" data-series="{name}">'
        '<polyline fill="none" stroke="{c}" stroke-width="2" points="{line}"/>'
        '<g fill="{c}">{circles}</g></g>',
        name=series.name,
        c=color,
        line=line,
        circles=circles,
    )


def _legend_svg(series: Sequence[ChartSeries], colors: Sequence[str]) -> SafeString:
    x = WIDTH - PAD_RIGHT - 6
    return format_html_join(
        "",
        '<g class="legend-item"><rect x="{}" y="{}" width="10" height="10" fill="{}"/>'
        '<text x="{}" y="{}" font-size="11" text-anchor="end">{}</text></g>',
        (
            (x - 8, PAD_TOP + 2 + 14 * i, color, x - 12, PAD_TOP + 11 + 14 * i, s.name)
            for i, (s, color) in enumerate(zip(series, colors, strict=True))
        ),
    )


def line_chart_svg(
    series: Sequence[ChartSeries],
    *,
    label: str,
    css_class: str,
    x_first: str,
    x_last: str,
    x_domain: tuple[float, float] | None = None,
    y_format: Callable[[float], str] = _plain,
) -> SafeString:
    """A line chart of ``series`` (empty string when no series has a point): y from 0 to the
    largest value, x over ``x_domain`` (default: the points' range), ``x_first`` and
    ``x_last`` written under the ends of the x axis. With more than one series, each is a
    ``<g class="series" data-series=...>`` and a legend names them.

    Each point is a ``<circle class="point">`` with its ``data-*`` attributes and a
    ``<title>`` for hover text.
    """
    drawn = [s for s in series if s.points]
    if not drawn:
        return mark_safe("")
    xs = [p.x for s in drawn for p in s.points]
    low, high = x_domain if x_domain is not None else (min(xs), max(xs))
    top = max(p.y for s in drawn for p in s.points)
    scale = top if top > 0 else 1
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM

    def xy(p: ChartPoint) -> tuple[float, float]:
        x = PAD_LEFT + plot_w * ((p.x - low) / (high - low) if high > low else 0.5)
        y = PAD_TOP + plot_h * (1 - p.y / scale)
        return round(x, 1), round(y, 1)

    tagged = len(drawn) > 1
    colors = [s.color or PALETTE[i % len(PALETTE)] for i, s in enumerate(drawn)]
    lines = format_html_join(
        "", "{}", ((_series_svg(s, c, xy, tagged),) for s, c in zip(drawn, colors, strict=True))
    )
    legend = _legend_svg(drawn, colors) if tagged else mark_safe("")
    base = PAD_TOP + plot_h
    return format_html(
        '<svg class="chart {cls}" viewBox="0 0 {w} {h}" width="100%" role="img" '
        'aria-label="{label}" xmlns="http://www.w3.org/2000/svg" '
        'preserveAspectRatio="xMidYMid meet">'
        '<line x1="{l}" y1="{b}" x2="{r}" y2="{b}" stroke="#999"/>'
        '<line x1="{l}" y1="{t}" x2="{l}" y2="{b}" stroke="#999"/>'
        '<text x="{tl}" y="{ty}" font-size="11" text-anchor="end">{top}</text>'
        '<text x="{tl}" y="{b}" font-size="11" text-anchor="end">0</text>'
        '<text x="{l}" y="{dy}" font-size="11">{first}</text>'
        '<text x="{r}" y="{dy}" font-size="11" text-anchor="end">{last}</text>'
        "{lines}{legend}</svg>",
        cls=css_class,
        label=label,
        w=WIDTH,
        h=HEIGHT,
        l=PAD_LEFT,
        r=WIDTH - PAD_RIGHT,
        t=PAD_TOP,
        b=base,
        tl=PAD_LEFT - 6,
        ty=PAD_TOP + 4,
        top=y_format(top),
        dy=HEIGHT - 8,
        first=x_first,
        last=x_last,
        lines=lines,
        legend=legend,
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
        x_first=first.isoformat(),
        x_last=days[-1].day.isoformat(),
    )
