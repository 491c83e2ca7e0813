"""SecAgg+ mode's round bookkeeping, without processes: the checked aggregate, the per-node
history, the round record (saved and reported) and the sample grid, as in FedAvg mode."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from federated.engine.flower.secagg import SecAggRecorder
from federated.engine.flower.settings import ServerSettings
from federated.engine.flower.state import load_state
from federated.engine.flower.strategy import FederationFailed, JobModel, RoundSamples
from federated.engine.rounds import RoundRecord
from federated.engine.samples import SampleGridSpec
from sdcore.tiny import TinyModelPaths, save_tiny_model

MANIFEST = "ab" * 32


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModelPaths:
    return save_tiny_model(tmp_path_factory.mktemp("tiny"), seed=0)


def _recorder(tiny: TinyModelPaths, out: Path) -> SecAggRecorder:
    config = {
        "out-dir": str(out),
        "base-model-path": str(tiny.single_file),
        "rank": 2,
        "alpha": 2.0,
        "aggregation": "secagg",
        "job-id": "job-sa",
        "dataset-manifests": MANIFEST,
    }
    settings = ServerSettings.from_run_config(config, run_id=1)
    # SuperLink node 11 serves the job's dataset (the credentials file's sender map)
    settings = dataclasses.replace(settings, senders={"11": frozenset({MANIFEST})})
    model = JobModel.load(settings, config)
    samples = RoundSamples(model, SampleGridSpec(prompts=("a red circle",), steps=2), out)
    return SecAggRecorder(settings, model, samples, arrays=model.initial)


def _metrics(**extra: object) -> dict[str, object]:
    return {"num-examples": 8, "epsilon": 1.5, "delta": 1e-5, "total-steps": 4, **extra}


def test_a_secagg_round_is_checked_recorded_saved_and_drawn(
    tiny: TinyModelPaths, tmp_path: Path
) -> None:
    recorder = _recorder(tiny, tmp_path)
    aggregate = [np.full(a.shape, 0.01, np.float32) for a in recorder.model.initial.values()]
    # When round 1's masked sum comes back from the one bound node
    recorder.record(1, aggregate, [("11", _metrics(**{"manifest-hash": MANIFEST}))], 0)
    # Then it is the round record, with the node's dataset and its history
    [record] = recorder.rounds
    assert isinstance(record, RoundRecord)
    assert (record.round, record.accepted, record.failures) == (1, 1, 0)
    assert record.node_datasets == {"11": MANIFEST}
    assert record.sample_grid is not None  # drawn with the round's aggregate
    assert recorder.nodes["11"]["rounds"] == [1] and recorder.nodes["11"]["epsilon"] == 1.5
    # And saved to resume from (no image in state.json)
    last, arrays, state = load_state(tmp_path)
    assert last == 1 and np.allclose(next(iter(arrays.values())), 0.01)
    assert "sample-grid-png" not in json.dumps(state)
    assert (tmp_path / "samples" / "round-1" / "grid.png").is_file()


@pytest.mark.parametrize(
    ("node", "metrics", "reason"),
    [
        ("11", _metrics(**{"manifest-hash": MANIFEST, "note": 1.0}), "unexpected metric 'note'"),
        ("11", _metrics(**{"manifest-hash": "cd" * 32}), "manifest-hash"),
        ("99", _metrics(**{"manifest-hash": MANIFEST}), "dataset_not_owned"),
    ],
)
def test_a_node_failing_the_check_fails_the_secagg_round(
    tiny: TinyModelPaths, tmp_path: Path, node: str, metrics: dict[str, object], reason: str
) -> None:
    recorder = _recorder(tiny, tmp_path)
    aggregate = list(recorder.model.initial.values())
    with pytest.raises(FederationFailed, match=reason):
        recorder.record(1, aggregate, [(node, metrics)], 0)
    assert recorder.rounds == [] and not (tmp_path / "state.json").exists()


def test_an_aggregate_of_another_shape_fails_the_secagg_round(
    tiny: TinyModelPaths, tmp_path: Path
) -> None:
    recorder = _recorder(tiny, tmp_path)
    with pytest.raises(FederationFailed, match="round 1"):
        recorder.record(
            1, [np.zeros(3, np.float32)], [("11", _metrics(**{"manifest-hash": MANIFEST}))], 0
        )
