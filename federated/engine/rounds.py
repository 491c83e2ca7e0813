"""One round as the ServerApp reports it: the record the engine writes and the site reads.

The ServerApp builds a :class:`RoundRecord` after each round and sends
``record.to_dict(with_grid=True)`` (kebab-case keys, JSON) with the progress report; it keeps
``record.to_dict()`` (no image) in ``state.json`` and ``metrics.json``. The site parses a
report once with :meth:`RoundRecord.from_dict`, which checks every field and raises
:class:`RoundRecordError` (a clear message naming the field) for anything else. Wire format::

    {
      "round": 2,                          # 1-based
      "nodes-asked": ["8231...", ...],     # the SuperLink node ids asked
      "bytes-out-per-node": 92160,
      "nodes": {"8231...": {"num-examples": 10.0, "epsilon": 2.5, ...}},   # accepted replies
      "node-datasets": {"8231...": "<manifest sha-256>"},
      "rejected": {"9001...": ["why", ...]},   # replies left out of the average
      "refused": {"9002...": "[code] reason"},  # nodes that answered with an error
      "no-reply": ["9003..."],
      "accepted": 1, "all-replies-passed-check": false,
      "train-loss": 0.41, "num-examples": 10, "seconds": 7.5,   # absent: the round failed
      "failures": 0,                        # SecAgg+ only
      "sample-grid-png": "<base64>"         # optional: the round's sample grid (PNG)
    }

Pure Python (standard library only): the ServerApp, the coordinator and the site share it.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from federated.engine.errors import EngineError

__all__ = [
    "GRID_KEY",
    "MAX_GRID_BYTES",
    "MAX_NODES",
    "PNG_SIGNATURE",
    "RoundRecord",
    "RoundRecordError",
]

MAX_NODES = 1000  # nodes named in one record
MAX_GRID_BYTES = 4 * 1024 * 1024  # the sample grid's PNG, decoded
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
GRID_KEY = "sample-grid-png"
_METRIC_KEY_CHARS = 60
_REASON_CHARS = 500
_PROBLEM_CHARS = 300


class RoundRecordError(EngineError):
    """A round record that is not one: a field of the wrong type, a bad round index or image."""

    default_code = "bad_round_record"


def _number(data: Mapping[str, object], key: str) -> float | None:
    """A number, None when absent, null or not finite; anything else is an error."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RoundRecordError(f"{key!r} must be a number.")
    number = float(value)
    return number if math.isfinite(number) else None


def _by_node(data: Mapping[str, object], key: str) -> dict[str, object]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping) or len(value) > MAX_NODES:
        raise RoundRecordError(f"{key!r} must be an object keyed by node id.")
    return {str(node): item for node, item in value.items()}


def _node_list(data: Mapping[str, object], key: str) -> list[str]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise RoundRecordError(f"{key!r} must be a list of node ids.")
    return [str(node) for node in value[:MAX_NODES]]


def _metrics(node: str, value: object) -> dict[str, float]:
    """A node's metrics: the finite numbers (anything else is left out)."""
    if not isinstance(value, Mapping):
        raise RoundRecordError(f"the metrics of node {node} must be an object.")
    return {
        str(k)[:_METRIC_KEY_CHARS]: float(v)
        for k, v in value.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))
    }


def _problems(value: object) -> list[str]:
    if isinstance(value, list):
        return [str(p)[:_PROBLEM_CHARS] for p in value]
    return [str(value)[:_REASON_CHARS]]


def _grid(data: Mapping[str, object]) -> bytes | None:
    """The sample grid: base64 of a PNG of at most :data:`MAX_GRID_BYTES` bytes."""
    value = data.get(GRID_KEY)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RoundRecordError(f"{GRID_KEY!r} must be a base64 string.")
    if len(value) > (MAX_GRID_BYTES // 3 + 1) * 4:
        raise RoundRecordError(f"the sample grid is larger than {MAX_GRID_BYTES} bytes.")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RoundRecordError(f"{GRID_KEY!r} is not valid base64.") from exc
    if not raw.startswith(PNG_SIGNATURE):
        raise RoundRecordError("the sample grid is not a PNG image.")
    return raw


@dataclass(frozen=True)
class RoundRecord:
    """One round: who was asked, whose reply was averaged, refused or rejected, and the totals.

    ``train_loss``, ``num_examples`` and ``seconds`` are None for a round that failed (too few
    accepted replies): such a record is kept in the history but completes nothing.
    """

    round: int
    nodes: dict[str, dict[str, float]] = field(default_factory=dict)
    node_datasets: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, list[str]] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    no_reply: list[str] = field(default_factory=list)
    nodes_asked: list[str] = field(default_factory=list)
    bytes_out_per_node: int = 0
    train_loss: float | None = None
    num_examples: int | None = None
    seconds: float | None = None
    failures: int | None = None  # SecAgg+: the workflow's failures count
    sample_grid: bytes | None = field(default=None, repr=False)  # PNG

    def __post_init__(self) -> None:
        if isinstance(self.round, bool) or not isinstance(self.round, int) or self.round < 1:
            raise RoundRecordError("'round' must be a whole number from 1.")

    @property
    def accepted(self) -> int:
        return len(self.nodes)

    @property
    def completed(self) -> bool:
        """Whether the round produced an aggregate (a failed round counts no examples)."""
        return self.num_examples is not None

    @property
    def epsilon_max(self) -> float | None:
        """The largest epsilon an accepted node reported (None: DP off or no node)."""
        epsilons = [m["epsilon"] for m in self.nodes.values() if m.get("epsilon", -1.0) >= 0]
        return max(epsilons) if epsilons else None

    def to_dict(self, *, with_grid: bool = False) -> dict[str, object]:
        """The wire form (kebab-case keys); the grid (base64) only ``with_grid``."""
        data: dict[str, object] = {
            "round": self.round,
            "nodes-asked": list(self.nodes_asked),
            "bytes-out-per-node": self.bytes_out_per_node,
            "nodes": {node: dict(m) for node, m in self.nodes.items()},
            "node-datasets": dict(self.node_datasets),
            "rejected": {node: list(p) for node, p in self.rejected.items()},
            "refused": dict(self.refused),
            "no-reply": list(self.no_reply),
            "accepted": self.accepted,
            "all-replies-passed-check": not self.rejected,
        }
        optional = {
            "train-loss": self.train_loss,
            "num-examples": self.num_examples,
            "seconds": self.seconds,
            "failures": self.failures,
        }
        data.update({key: value for key, value in optional.items() if value is not None})
        if with_grid and self.sample_grid is not None:
            data[GRID_KEY] = base64.b64encode(self.sample_grid).decode("ascii")
        return data

    @classmethod
    def from_dict(cls, data: object) -> RoundRecord:
        """Parse and check a record (a progress report's round, a saved history's entry).

        Numbers that are not finite read as absent, node metrics keep their finite numbers,
        reasons are cut to a few hundred characters; every other deviation is an error.
        """
        if not isinstance(data, Mapping):
            raise RoundRecordError("a round record must be an object.")
        index = data.get("round")
        if isinstance(index, bool) or not isinstance(index, int):
            raise RoundRecordError("'round' must be a whole number.")
        examples = _number(data, "num-examples")
        failures = _number(data, "failures")
        return cls(
            round=index,
            nodes={n: _metrics(n, m) for n, m in _by_node(data, "nodes").items()},
            node_datasets={n: str(h).lower() for n, h in _by_node(data, "node-datasets").items()},
            rejected={n: _problems(p) for n, p in _by_node(data, "rejected").items()},
            refused={n: str(r)[:_REASON_CHARS] for n, r in _by_node(data, "refused").items()},
            no_reply=_node_list(data, "no-reply"),
            nodes_asked=_node_list(data, "nodes-asked"),
            bytes_out_per_node=int(_number(data, "bytes-out-per-node") or 0),
            train_loss=_number(data, "train-loss"),
            num_examples=None if examples is None else int(examples),
            seconds=_number(data, "seconds"),
            failures=None if failures is None else int(failures),
            sample_grid=_grid(data),
        )
