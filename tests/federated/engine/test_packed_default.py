"""Packed transport is the default wire format (issue #14: bytes per round <= 1.01x raw).

The node unpacks the flat array with the adapter's layout, remembered per (model fingerprint,
adapter spec) under its cache folder so that a round does not copy the UNet to learn it.
"""

from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path

import numpy as np

from federated.engine.adapter import attach_adapter, get_adapter_arrays
from federated.engine.flower.reply_check import PACKED_ARRAY, pack, unpack
from federated.engine.flower.settings import (
    NodePaths,
    ServerSettings,
    train_config_from_run_config,
)
from federated.engine.flower.task import adapter_layout
from federated.engine.localfed import APP_DIR
from federated.engine.trainer import LoadedBase
from sdcore.tiny import TinyModelPaths

RUN_CONFIG = {"rank": 2, "alpha": 2.0, "adapter-mode": "ffa", "resolution": 32}


def test_packed_is_the_default_and_named_is_still_accepted() -> None:
    base = {"out-dir": "/tmp/x", "base-model-path": "/tmp/m"}
    assert ServerSettings.from_run_config(base, run_id=1).transport == "packed"
    assert (
        ServerSettings.from_run_config({**base, "transport": "named"}, run_id=1).transport
        == "named"
    )
    app = tomllib.loads((APP_DIR / "pyproject.toml").read_text(encoding="utf-8"))
    assert app["tool"]["flwr"]["app"]["config"]["transport"] == "packed"
    assert app["tool"]["flwr"]["app"]["config"]["dp-grad-sample-mode"] == "auto"


def test_the_node_remembers_the_layout_and_unpacks_with_it(
    tiny_model: TinyModelPaths, tiny_base: LoadedBase, tmp_path: Path
) -> None:
    paths = NodePaths(
        dataset="",
        cache_dir=str(tmp_path / "cache"),
        ledger=str(tmp_path / "ledger.db"),
        base_model=str(tiny_model.diffusers_dir),
        dataset_key="",
    )
    # Given the adapter the job's settings attach to the tiny UNet
    spec = train_config_from_run_config(RUN_CONFIG).adapter
    unet = copy.deepcopy(tiny_base.pipe.unet)
    attach_adapter(unet, spec)
    arrays = get_adapter_arrays(unet, spec)
    for value in arrays.values():
        value[...] = np.random.default_rng(0).standard_normal(value.shape)
    # When the node learns the layout, then again
    layout = adapter_layout(paths, RUN_CONFIG)
    memos = list((tmp_path / "cache" / "layouts").glob("*.json"))
    # Then it is the adapter's, in order, remembered in one file, and unpacks exactly
    assert layout == {name: value.shape for name, value in arrays.items()}
    assert len(memos) == 1
    unpacked = unpack(pack(arrays), layout)
    assert not isinstance(unpacked, str)
    assert list(unpacked) == list(arrays)
    assert all(np.array_equal(unpacked[n], arrays[n]) for n in arrays)
    # The second call reads the file (a changed file shows through: nothing recomputed it)
    saved = json.loads(memos[0].read_text())
    saved[0][1] = [1, 1]
    memos[0].write_text(json.dumps(saved))
    assert next(iter(adapter_layout(paths, RUN_CONFIG).values())) == (1, 1)
    # ... and a garbled file is recomputed, not trusted
    memos[0].write_text("{not json")
    assert adapter_layout(paths, RUN_CONFIG) == layout
    # Another adapter spec is another file
    adapter_layout(paths, {**RUN_CONFIG, "rank": 1})
    assert len(list((tmp_path / "cache" / "layouts").glob("*.json"))) == 2


def test_a_packed_array_of_the_wrong_size_is_refused_by_name(tiny_base: LoadedBase) -> None:
    spec = train_config_from_run_config(RUN_CONFIG).adapter
    unet = copy.deepcopy(tiny_base.pipe.unet)
    attach_adapter(unet, spec)
    layout = {n: v.shape for n, v in get_adapter_arrays(unet, spec).items()}
    problem = unpack({PACKED_ARRAY: np.zeros(3, dtype=np.float32)}, layout)
    assert isinstance(problem, str) and "expected" in problem
