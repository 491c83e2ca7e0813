"""Server-side SVG charts of the federated pages, on the shared line chart of
``marketplace.charts``: loss and epsilon by round, a dataset's privacy budget and earnings."""

from __future__ import annotations

from collections.abc import Sequence

from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from federated.models import JobDataset
from federated.selectors import Budget, RoundRow, SettledEarning
from marketplace.charts import PALETTE, ChartPoint, ChartSeries, line_chart_svg

BAR_WIDTH, BAR_HEIGHT = 640, 64


def _round_domain(rounds_total: int, rows: Sequence[RoundRow]) -> tuple[float, float]:
    last = max([rounds_total, *(r.index for r in rows)])
    return 1.0, float(max(last, 1))


def _round_labels(domain: tuple[float, float]) -> list[tuple[float, str]]:
    """``round 1`` and every round after it (the chart drops those that would crowd)."""
    return [(float(i), f"round {i}") for i in range(1, int(domain[1]) + 1)]


def _round_point(row: RoundRow, value: float, what: str, series: str = "") -> ChartPoint:
    data: tuple[tuple[str, str | int | float], ...] = (
        ("round", row.index),
        ("value", f"{value:.6g}"),
    )
    if series:
        data = (*data, ("dataset", series))
    return ChartPoint(
        x=row.index, y=value, title=f"Round {row.index}: {what} {value:.4g}", data=data
    )


def loss_chart_svg(rows: Sequence[RoundRow], *, rounds_total: int) -> SafeString:
    """Training loss by round: one point per round that reported a loss; the y axis fits the
    losses (a loss does not fall to 0, so the axis does not start there)."""
    points = [_round_point(r, r.train_loss, "loss") for r in rows if r.train_loss is not None]
    domain = _round_domain(rounds_total, rows)
    return line_chart_svg(
        [ChartSeries("Training loss", points)],
        label="Training loss by round",
        css_class="loss-chart",
        x_labels=_round_labels(domain),
        x_domain=domain,
        y_from_zero=False,
    )


def epsilon_chart_svg(
    rows: Sequence[RoundRow], datasets: Sequence[JobDataset], *, rounds_total: int
) -> SafeString:
    """Epsilon spent by round: one series per dataset whose node reported its epsilon, else
    the round's largest epsilon (``epsilon_max``)."""
    series = []
    for jd in datasets:
        name = jd.dataset_version.dataset.name
        points = [
            _round_point(r, eps, "epsilon", str(jd.dataset_version_id))
            for r in rows
            if (eps := r.epsilon_of(jd.dataset_version_id)) is not None
        ]
        if points:
            series.append(ChartSeries(name, points))
    if not series:
        points = [
            _round_point(r, r.epsilon_max, "epsilon (largest)")
            for r in rows
            if r.epsilon_max is not None
        ]
        series = [ChartSeries("Epsilon (largest of the nodes)", points)]
    domain = _round_domain(rounds_total, rows)
    return line_chart_svg(
        series,
        label="Epsilon spent by round",
        css_class="epsilon-chart",
        x_labels=_round_labels(domain),
        x_domain=domain,
    )


def budget_bar_svg(budget: Budget) -> SafeString:
    """The lifetime privacy budget as one bar: spent, reserved by active jobs, remaining."""
    lifetime = budget.epsilon_lifetime
    if lifetime <= 0:
        return mark_safe("")
    parts = [
        ("spent", budget.spent, PALETTE[1]),
        ("reserved", budget.reserved, PALETTE[4]),
        ("remaining", budget.remaining, "#d9d9e3"),
    ]
    x = 0.0
    rects = []
    for name, value, color in parts:
        width = round(BAR_WIDTH * min(max(value, 0.0), lifetime) / lifetime, 1)
        rects.append((name, x, width, color, f"{value:.4g}", name, f"{value:.4g}"))
        x = round(x + width, 1)
    bars = format_html_join(
        "",
        '<rect class="budget-{}" x="{}" y="0" width="{}" height="40" fill="{}" '
        'data-epsilon="{}"><title>{}: epsilon {}</title></rect>',
        rects,
    )
    return format_html(
        '<svg class="chart budget-bar" viewBox="0 0 {w} {h}" width="100%" role="img" '
        'aria-label="Privacy budget: spent {spent}, reserved {reserved}, remaining {remaining} '
        'of {lifetime}" xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="xMidYMid meet">'
        '{bars}<text x="4" y="60" font-size="13">0</text>'
        '<text x="{w}" y="60" font-size="13" text-anchor="end">lifetime {lifetime}</text></svg>',
        w=BAR_WIDTH,
        h=BAR_HEIGHT,
        spent=f"{budget.spent:.4g}",
        reserved=f"{budget.reserved:.4g}",
        remaining=f"{budget.remaining:.4g}",
        lifetime=f"{lifetime:.4g}",
        bars=bars,
    )


def epsilon_by_job_svg(budget: Budget) -> SafeString:
    """Cumulative epsilon spent, one point per job that spent some (in job order)."""
    spent = [j for j in sorted(budget.jobs, key=lambda j: j.job_id) if j.epsilon > 0]
    total = 0.0
    points = []
    for i, j in enumerate(spent, 1):
        total += j.epsilon
        points.append(
            ChartPoint(
                x=i,
                y=total,
                title=(f"Job {j.job_id} {j.job_name}: epsilon {j.epsilon:.4g} (total {total:.4g})"),
                data=(
                    ("job", j.job_id),
                    ("epsilon", f"{j.epsilon:.6g}"),
                    ("total", f"{total:.6g}"),
                ),
            )
        )
    if not points:
        return mark_safe("")
    return line_chart_svg(
        [ChartSeries("Epsilon spent", points)],
        label="Epsilon spent in total, job by job",
        css_class="epsilon-jobs-chart",
        x_labels=[(float(i), f"job {j.job_id}") for i, j in enumerate(spent, 1)],
    )


def dataset_earnings_svg(rows: Sequence[SettledEarning]) -> SafeString:
    """Credits earned in total over time: one point per settled job, x its settlement."""
    if not rows:
        return mark_safe("")
    first = rows[0].settled_at
    total = 0
    points = []
    for r in rows:
        total += r.earned
        day = timezone.localdate(r.settled_at).isoformat()
        points.append(
            ChartPoint(
                x=(r.settled_at - first).total_seconds(),
                y=total,
                title=f"{day}, job {r.job_id}: {r.earned} credits (total {total})",
                data=(("job", r.job_id), ("earned", r.earned), ("total", total)),
            )
        )
    return line_chart_svg(
        [ChartSeries("Earned", points)],
        label="Credits earned over time",
        css_class="dataset-earnings-chart",
        x_labels=[
            (p.x, timezone.localdate(r.settled_at).isoformat())
            for p, r in zip(points, rows, strict=True)
        ],
        y_integer=True,
    )
