"""The server-side privacy check on every reply, and FedAvg weighted by examples."""

from __future__ import annotations

import numpy as np

from federated.engine.flower.aggregate import fedavg
from federated.engine.flower.reply_check import PACKED_ARRAY, ReplyParts, check_reply, pack, unpack

EXPECTED = {"a.lora_B.weight": (4, 1), "b.lora_B.weight": (8, 1)}
HASH = "ab" * 32


def _reply(
    arrays: dict[str, np.ndarray] | None = None,
    metrics: dict[str, object] | None = None,
    **records: dict[str, dict[str, object]],
) -> ReplyParts:
    arrays = (
        arrays if arrays is not None else {n: np.zeros(s, np.float32) for n, s in EXPECTED.items()}
    )
    metrics = (
        metrics if metrics is not None else {"num-examples": 16, "train-loss": 0.5, "epsilon": 1.2}
    )
    return ReplyParts(
        arrays={"adapter": arrays, **records.get("extra_arrays", {})},
        metrics={"metrics": metrics, **records.get("metrics", {})},
        configs={"info": {"manifest-hash": HASH}, **records.get("configs", {})},
    )


def test_a_reply_with_exactly_the_adapter_and_scalar_metrics_passes() -> None:
    assert check_reply(_reply(), EXPECTED).ok


def test_an_extra_array_is_rejected() -> None:
    arrays = {n: np.zeros(s, np.float32) for n, s in EXPECTED.items()} | {
        "latents": np.zeros((16, 4, 4, 4), np.float32)
    }
    check = check_reply(_reply(arrays), EXPECTED)
    assert not check.ok and any("latents" in p for p in check.problems)


def test_a_wrong_shape_is_rejected() -> None:
    arrays = {
        "a.lora_B.weight": np.zeros((4, 2), np.float32),
        "b.lora_B.weight": np.zeros((8, 1), np.float32),
    }
    check = check_reply(_reply(arrays), EXPECTED)
    assert not check.ok and any("shape" in p for p in check.problems)


def test_a_missing_array_an_extra_record_and_non_scalar_metrics_are_rejected() -> None:
    parts = _reply(
        {"a.lora_B.weight": np.zeros((4, 1), np.float32)},
        {"num-examples": 16, "captions": [1.0, 2.0]},
        extra_arrays={"extra": {}},
        configs={"notes": {"x": "y"}},
    )
    problems = check_reply(parts, EXPECTED).problems
    assert any("missing array" in p for p in problems)
    assert any("'captions'" in p for p in problems)
    assert any("'extra'" in p for p in problems) and any("'notes'" in p for p in problems)


def test_free_text_in_the_info_record_is_rejected() -> None:
    parts = ReplyParts(
        arrays=_reply().arrays,
        metrics=_reply().metrics,
        configs={"info": {"manifest-hash": "a photo of alice"}},
    )
    assert not check_reply(parts, EXPECTED).ok


def test_fedavg_weights_by_examples() -> None:
    one = {"a": np.ones((2,), np.float32)}
    three = {"a": np.full((2,), 3.0, np.float32)}
    assert np.allclose(fedavg([(one, 10), (three, 30)])["a"], 2.5)


def test_a_packed_adapter_of_the_right_size_passes_and_unpacks_to_the_named_arrays() -> None:
    named = {n: np.arange(np.prod(s), dtype=np.float32).reshape(s) for n, s in EXPECTED.items()}
    packed = pack(named)
    assert check_reply(_reply(packed), EXPECTED).ok
    unpacked = unpack(packed, EXPECTED)
    assert not isinstance(unpacked, str) and all(
        np.array_equal(unpacked[n], named[n]) for n in named
    )


def test_a_packed_adapter_with_extra_values_or_a_second_array_is_rejected() -> None:
    longer = {PACKED_ARRAY: np.zeros(13, np.float32)}
    assert any(
        "packed adapter has shape" in p for p in check_reply(_reply(longer), EXPECTED).problems
    )
    two = {PACKED_ARRAY: np.zeros(12, np.float32), "more": np.zeros(1, np.float32)}
    assert not check_reply(_reply(two), EXPECTED).ok
