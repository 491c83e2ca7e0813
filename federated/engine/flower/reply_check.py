"""What a node's reply may carry to the server, checked on EVERY reply before aggregation.

A reply passes only if it holds exactly the adapter's transported LoRA arrays (names and shapes
of :func:`federated.engine.adapter.get_adapter_arrays` for the job's AdapterSpec, finite
floating point), scalar numeric metrics under known names, and at most the dataset's public
manifest hash. Anything else (an extra array, a wrong shape, a list metric, an unknown record,
free text) could smuggle private data out of a node: the reply is dropped and recorded as
rejected with the reasons.

Pure: works on plain mappings (the Flower-specific unpacking is in :mod:`.strategy`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeGuard

import numpy as np

from federated.engine.flower.settings import HEX64

__all__ = [
    "ALLOWED_METRICS",
    "PACKED_ARRAY",
    "ReplyCheck",
    "ReplyParts",
    "check_reply",
    "pack",
    "unpack",
]

ALLOWED_METRICS = frozenset(
    {
        "num-examples",
        "train-loss",
        "steps",
        "total-steps",
        "epsilon",
        "delta",
        "noise-multiplier",
        "seconds",
        "message-seconds",
        "server-round",
    }
)
ARRAY_RECORD = "adapter"
METRIC_RECORD = "metrics"
INFO_RECORD = "info"
PACKED_ARRAY = (
    "lora.packed"  # transport="packed": every transported array, flattened, in module order
)
_FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")


@dataclass(frozen=True)
class ReplyParts:
    """A reply's content, unpacked: record name -> {key: value}, per record kind."""

    arrays: Mapping[str, Mapping[str, np.ndarray]]
    metrics: Mapping[str, Mapping[str, object]]
    configs: Mapping[str, Mapping[str, object]]


@dataclass
class ReplyCheck:
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _is_scalar_number(value: object) -> TypeGuard[int | float | np.integer | np.floating]:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def pack(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One flat float32 array (one header on the wire instead of one per LoRA tensor)."""
    return {
        PACKED_ARRAY: np.concatenate(
            [np.asarray(v, dtype=np.float32).ravel() for v in arrays.values()]
        )
    }


def unpack(
    arrays: Mapping[str, np.ndarray], expected: Mapping[str, Sequence[int]]
) -> dict[str, np.ndarray] | str:
    """Named arrays from a packed record, or why it cannot be one; named records pass through."""
    if PACKED_ARRAY not in arrays:
        return dict(arrays)
    if len(arrays) != 1:
        return f"a packed adapter record holds {len(arrays)} arrays, expected exactly 1"
    flat = np.asarray(arrays[PACKED_ARRAY])
    sizes = [int(np.prod(shape)) for shape in expected.values()]
    if flat.ndim != 1 or flat.shape[0] != sum(sizes):
        return f"packed adapter has shape {tuple(flat.shape)}, expected ({sum(sizes)},)"
    out, offset = {}, 0
    for (name, shape), size in zip(expected.items(), sizes, strict=True):
        out[name] = flat[offset : offset + size].reshape(tuple(shape))
        offset += size
    return out


def _array_problems(
    arrays: Mapping[str, np.ndarray], expected: Mapping[str, Sequence[int]]
) -> list[str]:
    """Every expected array, nothing else, each of its shape, floating point and finite."""
    names, wanted = list(arrays), set(expected)
    problems = [f"unexpected array {name!r}" for name in names if name not in wanted]
    problems += [f"missing array {name!r}" for name in sorted(wanted - set(names))]
    for name in names:
        if name not in wanted:
            continue
        value = np.asarray(arrays[name])
        if tuple(value.shape) != tuple(expected[name]):
            problems.append(
                f"array {name!r} has shape {tuple(value.shape)}, expected {tuple(expected[name])}"
            )
        elif str(value.dtype) not in _FLOAT_DTYPES:
            problems.append(f"array {name!r} has dtype {value.dtype}, expected floating point")
        elif not np.isfinite(value.astype(np.float32)).all():
            problems.append(f"array {name!r} has non-finite values")
    return problems


def _metric_problems(metrics: Mapping[str, object]) -> list[str]:
    """Known names only, scalar numbers only, and a positive ``num-examples``."""
    problems: list[str] = []
    for key, metric in metrics.items():
        if key not in ALLOWED_METRICS:
            problems.append(f"unexpected metric {key!r}")
        elif not _is_scalar_number(metric):
            problems.append(f"metric {key!r} is not a scalar number")
    num_examples = metrics.get("num-examples")
    if not _is_scalar_number(num_examples) or num_examples < 1:
        problems.append("metric 'num-examples' is missing or not positive")
    return problems


def _info_problems(info: Mapping[str, object]) -> list[str]:
    """At most the dataset's manifest hash (a SHA-256 hex digest)."""
    problems: list[str] = []
    for key, info_value in info.items():
        if key != "manifest-hash":
            problems.append(f"unexpected info {key!r}")
        elif not (isinstance(info_value, str) and HEX64.match(info_value)):
            problems.append("info 'manifest-hash' is not a SHA-256 hex digest")
    return problems


def check_reply(parts: ReplyParts, expected: Mapping[str, Sequence[int]]) -> ReplyCheck:
    """Check one reply against the expected ``{array name: shape}``; list every problem.

    A packed adapter (``transport="packed"``) must be exactly one 1-D array of the adapter's
    total size; it is then checked as the named arrays it unpacks to.
    """
    check = ReplyCheck()
    problems = check.problems
    if ARRAY_RECORD in parts.arrays:
        unpacked = unpack(parts.arrays[ARRAY_RECORD], expected)
        if isinstance(unpacked, str):
            problems.append(unpacked)
            return check
        parts = ReplyParts(
            arrays={**parts.arrays, ARRAY_RECORD: unpacked},
            metrics=parts.metrics,
            configs=parts.configs,
        )
    extra_records = (
        [f"array record {n!r}" for n in parts.arrays if n != ARRAY_RECORD]
        + [f"metric record {n!r}" for n in parts.metrics if n != METRIC_RECORD]
        + [f"config record {n!r}" for n in parts.configs if n != INFO_RECORD]
    )
    problems.extend(f"unexpected {r}" for r in extra_records)
    arrays = parts.arrays.get(ARRAY_RECORD)
    problems.extend(["no adapter arrays"] if arrays is None else _array_problems(arrays, expected))
    metrics = parts.metrics.get(METRIC_RECORD)
    problems.extend(["no metrics"] if metrics is None else _metric_problems(metrics))
    problems.extend(_info_problems(parts.configs.get(INFO_RECORD, {})))
    return check
