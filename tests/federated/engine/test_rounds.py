"""The round record the ServerApp writes and the site reads: one parse, clear refusals."""

from __future__ import annotations

import base64
import dataclasses
import json

import pytest

from federated.engine.rounds import (
    GRID_KEY,
    MAX_GRID_BYTES,
    PNG_SIGNATURE,
    RoundRecord,
    RoundRecordError,
)

PNG = PNG_SIGNATURE + b"rest of a png"


def _record() -> RoundRecord:
    return RoundRecord(
        round=2,
        nodes={"101": {"num-examples": 10.0, "epsilon": 2.5}, "202": {"num-examples": 5.0}},
        node_datasets={"101": "a" * 64},
        rejected={"303": ["unexpected array 'x'"]},
        refused={"404": "[1] no budget"},
        no_reply=["505"],
        nodes_asked=["101", "202", "303", "404", "505"],
        bytes_out_per_node=1234,
        train_loss=0.25,
        num_examples=15,
        seconds=1.5,
        sample_grid=PNG,
    )


def test_a_record_survives_its_wire_form_grid_included() -> None:
    record = _record()
    assert RoundRecord.from_dict(record.to_dict(with_grid=True)) == record


def test_the_wire_form_keeps_the_servers_keys_and_leaves_the_grid_out_by_default() -> None:
    data = _record().to_dict()
    assert GRID_KEY not in data
    assert data["accepted"] == 2 and data["all-replies-passed-check"] is False
    assert data["num-examples"] == 15 and data["bytes-out-per-node"] == 1234
    assert _record().epsilon_max == 2.5


def test_a_failed_round_has_no_totals_in_its_wire_form() -> None:
    data = RoundRecord(round=1, refused={"1": "x"}).to_dict()
    assert not {"num-examples", "train-loss", "seconds"} & set(data)
    assert not RoundRecord.from_dict(data).completed


def test_node_metrics_keep_finite_numbers_and_reasons_are_cut() -> None:
    record = RoundRecord.from_dict(
        {
            "round": 1,
            "nodes": {"1": {"epsilon": 1.0, "note": "text", "inf": float("inf"), "b": True}},
            "refused": {"2": "x" * 9000},
            "rejected": {"3": "one reason"},
            "train-loss": float("nan"),
        }
    )
    assert record.nodes == {"1": {"epsilon": 1.0}}
    assert len(record.refused["2"]) == 500
    assert record.rejected == {"3": ["one reason"]}
    assert record.train_loss is None


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"round": 0}, "'round'"),
        ({"round": "1"}, "'round'"),
        ({"round": True}, "'round'"),
        ({"nodes": ["101"]}, "'nodes'"),
        ({"nodes": {"101": "fast"}}, "node 101"),
        ({"no-reply": "303"}, "'no-reply'"),
        ({"train-loss": "low"}, "'train-loss'"),
        ({"num-examples": False}, "'num-examples'"),
        ({"refused": {str(n): "x" for n in range(1001)}}, "'refused'"),
        ({GRID_KEY: 12}, "base64"),
        ({GRID_KEY: "not base64!"}, "base64"),
        ({GRID_KEY: base64.b64encode(b"GIF89a....").decode()}, "not a PNG"),
        ({GRID_KEY: "A" * (MAX_GRID_BYTES * 2)}, "larger than"),
    ],
)
def test_a_bad_record_is_refused_naming_what_is_wrong(
    change: dict[str, object], words: str
) -> None:
    with pytest.raises(RoundRecordError) as err:
        RoundRecord.from_dict({**_record().to_dict(with_grid=True), **change})
    assert words in err.value.message
    assert err.value.code == "bad_round_record"


def test_a_record_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(RoundRecordError):
        RoundRecord.from_dict(["round", 1])


def test_the_servers_saved_history_reads_back_as_round_records() -> None:
    from federated.engine.flower.strategy import FederationFailed, History

    history = History(job_id="job-1", rounds=[_record(), RoundRecord(round=3)], nodes={})
    saved = json.loads(json.dumps(history.to_dict()))
    assert GRID_KEY not in json.dumps(saved)  # state.json and metrics.json hold no image
    again = History.from_dict(saved)
    assert again.rounds == [dataclasses.replace(_record(), sample_grid=None), RoundRecord(round=3)]
    saved["rounds"][0]["round"] = "two"
    with pytest.raises(FederationFailed, match="'round'"):
        History.from_dict(saved)
