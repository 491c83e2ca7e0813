"""The federated charts with one round or many: the loss axis fits the losses (not from 0),
round labels are written once each, the privacy budget's epsilon axis starts at 0."""

from __future__ import annotations

import datetime
import xml.etree.ElementTree as ET

from django.utils import timezone

from federated.charts import dataset_earnings_svg, epsilon_chart_svg, loss_chart_svg
from federated.selectors import RoundRow, SettledEarning

NS = "{http://www.w3.org/2000/svg}"


def row(index: int, loss: float | None, epsilon: float | None = None) -> RoundRow:
    return RoundRow(
        index=index,
        train_loss=loss,
        num_examples=10,
        seconds=1.0,
        bytes_out_per_node=0,
        epsilon_max=epsilon,
        nodes=[],
        refused={},
        no_reply=[],
    )


def labels(svg: str, css_class: str) -> list[str]:
    root = ET.fromstring(svg)
    return [t.text or "" for t in root.iter(f"{NS}text") if t.get("class") == css_class]


def test_one_round_of_loss_is_one_point_with_its_value_and_round_1_once() -> None:
    svg = loss_chart_svg([row(1, 0.4321)], rounds_total=1)
    assert svg.count('class="point"') == 1
    assert labels(svg, "x-label") == ["round 1"]
    assert labels(svg, "value-label") == ["Round 1: loss 0.4321"]
    y = labels(svg, "y-label")
    assert len(y) == len(set(y)) and float(y[0]) > 0  # around 0.43, not from 0


def test_a_loss_that_moves_little_far_from_zero_does_not_start_at_zero() -> None:
    rows = [row(1, 0.52), row(2, 0.5), row(3, 0.49)]
    y = labels(loss_chart_svg(rows, rounds_total=3), "y-label")
    assert float(y[0]) > 0.4 and float(y[-1]) < 0.6
    assert len(y) == len(set(y))


def test_round_labels_are_each_written_once_while_rounds_remain() -> None:
    # Given 2 of 5 rounds done: the axis runs to round 5, every label once
    rows = [row(1, 1.0, 0.5), row(2, 0.9, 1.0)]
    x = labels(loss_chart_svg(rows, rounds_total=5), "x-label")
    assert x == [f"round {i}" for i in range(1, 6)]
    eps = labels(epsilon_chart_svg(rows, [], rounds_total=5), "y-label")
    assert eps[0] == "0" and len(eps) == len(set(eps))


def test_one_settled_job_of_earnings_renders_and_two_on_one_day_name_the_day_once() -> None:
    day = timezone.make_aware(datetime.datetime(2026, 12, 7, 10, 0))

    def earning(job: int, minutes: int) -> SettledEarning:
        return SettledEarning(
            job_id=job,
            job_name="j",
            state="completed",
            rounds_completed=1,
            example_rounds=1,
            earned=7,
            settled_at=day + datetime.timedelta(minutes=minutes),
        )

    one = dataset_earnings_svg([earning(1, 0)])
    assert one.count('class="point"') == 1 and labels(one, "x-label") == ["2026-12-07"]
    two = dataset_earnings_svg([earning(1, 0), earning(2, 5)])
    assert labels(two, "x-label") == ["2026-12-07"]
    assert int(labels(two, "y-label")[-1]) >= 14  # the total, on a round tick
