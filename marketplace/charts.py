"""Server-side SVG charts (no JavaScript, no CDN)."""

from __future__ import annotations

from collections.abc import Sequence

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from marketplace.selectors import DayEarning

WIDTH, HEIGHT = 640, 240
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 56, 16, 16, 32


def earnings_chart_svg(days: Sequence[DayEarning]) -> SafeString:
    """A line chart with one point per day that had earnings; x is time, y is credits.

    Each point carries ``data-day`` and ``data-amount`` and a ``<title>`` for hover text.
    """
    if not days:
        return mark_safe("")
    first, last = days[0].day, days[-1].day
    span = max((last - first).days, 1)
    top = max(d.amount for d in days)
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM

    def xy(d: DayEarning) -> tuple[float, float]:
        x = PAD_LEFT + plot_w * ((d.day - first).days / span if len(days) > 1 else 0.5)
        y = PAD_TOP + plot_h * (1 - d.amount / top)
        return round(x, 1), round(y, 1)

    points = [xy(d) for d in days]
    line = " ".join(f"{x},{y}" for x, y in points)
    circles = format_html_join(
        "", '<circle class="point" cx="{}" cy="{}" r="4" data-day="{}" data-amount="{}">'
        "<title>{}: {} credits</title></circle>",
        ((x, y, d.day.isoformat(), d.amount, d.day.isoformat(), d.amount)
         for (x, y), d in zip(points, days, strict=True)),
    )
    base = PAD_TOP + plot_h
    return format_html(
        '<svg class="chart earnings-chart" viewBox="0 0 {w} {h}" width="100%" role="img" '
        'aria-label="Earnings per day" xmlns="http://www.w3.org/2000/svg" '
        'preserveAspectRatio="xMidYMid meet">'
        '<line x1="{l}" y1="{b}" x2="{r}" y2="{b}" stroke="#999"/>'
        '<line x1="{l}" y1="{t}" x2="{l}" y2="{b}" stroke="#999"/>'
        '<text x="{tl}" y="{ty}" font-size="11" text-anchor="end">{top}</text>'
        '<text x="{tl}" y="{b}" font-size="11" text-anchor="end">0</text>'
        '<text x="{l}" y="{dy}" font-size="11">{first}</text>'
        '<text x="{r}" y="{dy}" font-size="11" text-anchor="end">{last}</text>'
        '<polyline fill="none" stroke="#3b6fd8" stroke-width="2" points="{line}"/>'
        '<g fill="#3b6fd8">{circles}</g></svg>',
        w=WIDTH, h=HEIGHT, l=PAD_LEFT, r=WIDTH - PAD_RIGHT, t=PAD_TOP, b=base,
        tl=PAD_LEFT - 6, ty=PAD_TOP + 4, top=top, dy=HEIGHT - 8,
        first=first.isoformat(), last=last.isoformat(), line=line, circles=circles,
    )
