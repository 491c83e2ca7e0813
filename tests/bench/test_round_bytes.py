"""bench/round_bytes.py on the tiny model: it runs, and it counts what the trainer sends.

Sizes, unlike timings, are deterministic, so the checks below are exact where they can be.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def round_bytes() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_round_bytes", ROOT / "bench" / "round_bytes.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_tiny_run_prints_both_transports_ratios(
    round_bytes: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    # when the bench runs on the tiny model
    assert round_bytes.main(["--tiny"]) == 0
    out = capsys.readouterr().out
    # then it prints a ratio per transport, and a RESULTS.md row for each
    ratios = {
        m.group(1): float(m.group(3))
        for m in re.finditer(
            r"^RATIO (named|packed)( \(default\))? wire/raw = (\d+\.\d+)x", out, re.M
        )
    }
    assert set(ratios) == {"named", "packed"}, out
    # packed is the default wire format (issue #14)
    assert re.search(r"^RATIO packed \(default\) wire/raw", out, re.M), out
    # every byte of the adapter is on the wire, and one flat array costs less than 48 headers
    assert 1.0 < ratios["packed"] < ratios["named"], out
    assert len(re.findall(r"^RESULTS: \| bytes per round per node", out, re.M)) == 2, out


def test_the_default_train_message_and_its_reply_are_packed(round_bytes: ModuleType) -> None:
    from collections import OrderedDict

    from federated.engine.flower.reply_check import ARRAY_RECORD, PACKED_ARRAY

    arrays = OrderedDict([("a.lora_B.weight", np.ones((8, 2), np.float32))])
    arrays["b.lora_B.weight"] = np.zeros((4, 2), np.float32)
    # when the run config names no transport
    train, reply = round_bytes.round_messages(arrays, transport=None, run_id=7)
    # then both directions carry one flat array of every value
    for message in (train, reply):
        record = message.content.array_records[ARRAY_RECORD]
        assert list(record) == [PACKED_ARRAY]
        assert record[PACKED_ARRAY].numpy().shape == (24,)
    # and a job that asks for named still gets named, both ways
    train, reply = round_bytes.round_messages(arrays, transport="named", run_id=7)
    assert list(reply.content.array_records[ARRAY_RECORD]) == list(arrays)


def test_meta_shapes_are_what_the_trainer_sends(round_bytes: ModuleType) -> None:
    # given the tiny UNet with real weights and the trainer's adapter
    import copy

    from federated.engine.adapter import AdapterSpec, attach_adapter, get_adapter_arrays
    from sdcore.tiny import build_tiny_pipeline

    unet = copy.deepcopy(build_tiny_pipeline(seed=0).unet)
    base_parameters = sum(p.numel() for p in unet.parameters())
    attach_adapter(unet, AdapterSpec(rank=3, alpha=3.0, mode="ffa"))
    sent = get_adapter_arrays(unet, AdapterSpec(rank=3, alpha=3.0, mode="ffa"))
    # when the bench derives the shapes on the meta device
    shapes, parameters = round_bytes.adapter_shapes(tiny=True, rank=3, mode="ffa")
    # then names, order and shapes are exactly those get_adapter_arrays sends
    assert list(shapes.items()) == [(k, v.shape) for k, v in sent.items()]
    assert parameters == base_parameters


def test_packed_overhead_is_fixed_not_per_byte(round_bytes: ModuleType) -> None:
    # given two adapters, one 4x the size of the other
    from collections import OrderedDict

    def wire(n: int) -> tuple[int, int]:
        arrays = OrderedDict([("a.lora_B.weight", np.ones((n, 4), np.float32) * 0.5)])
        arrays["b.lora_B.weight"] = np.arange(n * 4, dtype=np.float32).reshape(n, 4)
        train, reply = round_bytes.round_messages(arrays, transport="packed", run_id=7)
        raw = sum(a.nbytes for a in arrays.values())
        return (
            round_bytes.pull_bytes(train, 7).total - raw,
            round_bytes.push_bytes(reply, 7).total - raw,
        )

    # when both are packed and their Fleet API bodies counted
    small, large = wire(1000), wire(4000)
    # then the bytes beyond the raw adapter do not grow with it (a few bytes of varints)
    assert 0 < small[0] < 4096 and 0 < small[1] < 4096
    assert abs(large[0] - small[0]) < 32 and abs(large[1] - small[1]) < 32
