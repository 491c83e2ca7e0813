"""The shared SVG line chart reads well with one point or many: distinct axis labels, a y
axis that fits the data, a legend above the plot, a labelled single point."""

from __future__ import annotations

import datetime
import xml.etree.ElementTree as ET

import pytest

from marketplace.charts import ChartPoint, ChartSeries, earnings_chart_svg, line_chart_svg, y_axis
from marketplace.selectors import DayEarning

NS = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def texts(root: ET.Element, css_class: str) -> list[str]:
    return [t.text or "" for t in root.iter(f"{NS}text") if t.get("class") == css_class]


def points(root: ET.Element) -> list[tuple[float, float]]:
    return [
        (float(c.get("cx", "nan")), float(c.get("cy", "nan")))
        for c in root.iter(f"{NS}circle")
        if c.get("class") == "point"
    ]


def series(values: list[float], name: str = "s") -> ChartSeries:
    return ChartSeries(name, [ChartPoint(x=i, y=v, title=f"{v}") for i, v in enumerate(values)])


def test_one_day_of_earnings_renders_one_labelled_point_and_one_date() -> None:
    # Given one day with earnings
    svg = earnings_chart_svg([DayEarning(day=datetime.date(2026, 12, 7), amount=40)])
    root = parse(svg)
    # Then: one point, the date written once (not twice on top of itself), its value beside it
    assert len(points(root)) == 1
    assert texts(root, "x-label") == ["2026-12-07"]
    assert texts(root, "value-label") == ["2026-12-07: 40 credits"]
    y_labels = texts(root, "y-label")
    assert len(y_labels) == len(set(y_labels)) >= 3
    assert y_labels[0] == "0" and y_labels[-1] == "40"


def test_earnings_ticks_are_whole_distinct_credits_even_for_tiny_amounts() -> None:
    days = [DayEarning(day=datetime.date(2026, 12, d), amount=a) for d, a in ((1, 1), (3, 2))]
    y_labels = texts(parse(earnings_chart_svg(days)), "y-label")
    assert y_labels == ["0", "1", "2"]


@pytest.mark.parametrize(
    "values",
    [[0.0], [0.0, 0.0], [5.0], [1e-6, 2e-6], [1234.0, 98765.0], [0.3, 0.31, 0.305], [-2.0, 3.0]],
)
def test_tick_labels_are_distinct_and_cover_the_data(values: list[float]) -> None:
    for from_zero in (True, False):
        axis = y_axis(values, from_zero=from_zero)
        labels = [text for _, text in axis.ticks]
        assert len(labels) == len(set(labels)), labels
        assert 2 <= len(labels) <= 7, labels
        assert axis.low <= min(values) and axis.high >= max(values)
        assert axis.low < axis.high


def test_a_loss_far_from_zero_gets_an_axis_around_it() -> None:
    # Given losses between 0.41 and 0.45
    losses = [0.45, 0.43, 0.41]
    axis = y_axis(losses, from_zero=False)
    # Then the axis does not start at 0 and the data fill most of it
    assert axis.low > 0
    assert (max(losses) - min(losses)) / (axis.high - axis.low) > 0.5
    root = parse(
        line_chart_svg(
            [series(losses)], label="l", css_class="c", x_labels=[(0, "a")], y_from_zero=False
        )
    )
    ys = [y for _, y in points(root)]
    assert max(ys) - min(ys) > 80  # of a 240-unit chart: the change is visible


def test_the_legend_sits_above_every_point() -> None:
    # Given two series whose largest values sit at the top of the plot, at the right
    many = [series([1, 2, 3, 10], "First dataset"), series([1, 5, 9, 10], "Second dataset")]
    root = parse(
        line_chart_svg(many, label="e", css_class="c", x_labels=[(0, "round 1"), (3, "round 4")])
    )
    legend_bottom = max(
        float(r.get("y", "0")) + float(r.get("height", "0"))
        for g in root.iter(f"{NS}g")
        if g.get("class") == "legend-item"
        for r in g.iter(f"{NS}rect")
    )
    # Then no point (radius 4) reaches up into the legend's rows
    assert min(y for _, y in points(root)) - 4 > legend_bottom


def test_crowded_x_labels_are_thinned_and_the_last_is_kept() -> None:
    labels = [(float(i), f"round {i}") for i in range(1, 41)]
    s = ChartSeries("loss", [ChartPoint(x=i, y=1.0 / i, title="") for i in range(1, 41)])
    root = parse(line_chart_svg([s], label="l", css_class="c", x_labels=labels, y_from_zero=False))
    shown = texts(root, "x-label")
    assert shown[0] == "round 1" and shown[-1] == "round 40"
    assert len(shown) == len(set(shown)) < 10
    xs = [float(t.get("x", "0")) for t in root.iter(f"{NS}text") if t.get("class") == "x-label"]
    assert all(b - a >= 70 for a, b in zip(xs, xs[1:], strict=False))


def test_no_point_no_chart() -> None:
    assert line_chart_svg([series([])], label="l", css_class="c", x_labels=[]) == ""
