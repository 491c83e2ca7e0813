"""The ServerApp's sample grid: drawn by sdcore's generate with the round's LoRA, at the base's
native resolution, the same every time for the same adapter, best effort, and optional."""

from __future__ import annotations

import io
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from federated.engine.errors import ConfigError
from federated.engine.flower.settings import ServerSettings, sample_grid_spec
from federated.engine.flower.strategy import JobModel, RoundSamples
from federated.engine.rounds import PNG_SIGNATURE
from federated.engine.samples import DEFAULT_PROMPTS, SampleGridSpec
from sdcore.tiny import TinyModelPaths

SPEC = SampleGridSpec(prompts=("a red circle", "a blue square"), seeds=(0, 1), steps=4)


def _model(tiny_model: TinyModelPaths, out: Path) -> JobModel:
    config = {
        "out-dir": str(out),
        "base-model-path": str(tiny_model.single_file),
        "rank": 2,
        "alpha": 2.0,
        "dp": "off",
    }
    return JobModel.load(ServerSettings.from_run_config(config, run_id=1), config)


def _random_adapter(model: JobModel, seed: int) -> OrderedDict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return OrderedDict(
        (k, (0.5 * rng.standard_normal(v.shape)).astype(np.float32))
        for k, v in model.initial.items()
    )


def test_a_round_grid_is_a_png_at_native_resolution_saved_under_its_round(
    tiny_model: TinyModelPaths, tmp_path: Path
) -> None:
    # Given the ServerApp's model of a job on the tiny base (64 px native)
    model = _model(tiny_model, tmp_path)
    samples = RoundSamples(model=model, spec=SPEC, out_dir=tmp_path)
    # When round 2's grid is drawn with an adapter
    started = time.perf_counter()
    png = samples.draw(2, _random_adapter(model, 0))
    print(f"sample grid, 4 cells x 4 steps, 64 px: {time.perf_counter() - started:.2f} s")
    # Then it is a PNG of 2 seeds (columns) x 2 prompts (rows) at 64 px, saved for publishing
    assert png is not None and png.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(png)) as image:
        assert (image.format, image.size) == ("PNG", (2 * 64, 2 * 64))
    assert (tmp_path / "samples" / "round-2" / "grid.png").read_bytes() == png
    assert samples.to_dict()["samples"]["prompts"] == list(SPEC.prompts)  # type: ignore[index]


def test_the_same_adapter_draws_the_same_grid_and_another_adapter_another(
    tiny_model: TinyModelPaths, tmp_path: Path
) -> None:
    model = _model(tiny_model, tmp_path)
    samples = RoundSamples(model=model, spec=SPEC, out_dir=tmp_path)
    first = samples.draw(1, _random_adapter(model, 0))
    again = samples.draw(2, _random_adapter(model, 0))
    other = samples.draw(3, _random_adapter(model, 7))
    assert first is not None and again is not None and other is not None

    def pixels(png: bytes) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)

    assert np.array_equal(pixels(first), pixels(again))
    assert np.abs(pixels(first) - pixels(other)).mean() > 1.0  # the LoRA was applied


def test_a_grid_that_cannot_be_drawn_leaves_the_round_without_one(
    tiny_model: TinyModelPaths, tmp_path: Path
) -> None:
    model = _model(tiny_model, tmp_path)
    broken = SampleGridSpec(prompts=("a red circle",), steps=2, sampler="No such sampler")
    samples = RoundSamples(model=model, spec=broken, out_dir=tmp_path)
    assert samples.draw(1, model.initial) is None
    assert not (tmp_path / "samples" / "round-1" / "grid.png").exists()


def test_a_grid_over_the_reports_limit_is_saved_but_not_sent(
    tiny_model: TinyModelPaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from federated.engine.flower import strategy

    # Given an out-dir not made yet and a report limit smaller than any grid
    out = tmp_path / "not-yet"
    model = _model(tiny_model, out)
    monkeypatch.setattr(strategy, "MAX_GRID_BYTES", 100)
    samples = RoundSamples(model=model, spec=SampleGridSpec(prompts=("a",), steps=2), out_dir=out)
    # When the round's grid is drawn, it is kept for publishing but left out of the report
    assert samples.draw(1, model.initial) is None
    assert (out / "samples" / "round-1" / "grid.png").read_bytes().startswith(PNG_SIGNATURE)
    assert [p.name for p in (out / "samples" / "round-1").iterdir()] == ["grid.png"]


def test_the_grid_is_on_by_default_and_off_with_sample_grid_false() -> None:
    spec = sample_grid_spec({})
    assert spec is not None and spec.prompts == DEFAULT_PROMPTS and spec.seeds == (0,)
    assert sample_grid_spec({"sample-grid": False}) is None
    assert sample_grid_spec({"sample-grid": "false"}) is None
    custom = sample_grid_spec({"sample-grid-prompts": "a cat | a dog", "sample-grid-seeds": "3,4"})
    assert custom is not None and custom.prompts == ("a cat", "a dog")
    assert custom.seeds == (3, 4)


@pytest.mark.parametrize(
    "config",
    [
        {"sample-grid": "maybe"},
        {"sample-grid-seeds": "x"},
        {"sample-grid-steps": 0},
        {"sample-grid-size": 12},
        {"sample-grid-prompts": "|".join(["p"] * 17)},
    ],
)
def test_a_bad_sample_grid_config_is_refused(config: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        sample_grid_spec(config)
