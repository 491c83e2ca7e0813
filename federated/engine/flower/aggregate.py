"""FedAvg over adapter arrays, weighted by each node's number of examples (pure numpy)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from federated.engine.adapter import AdapterArrays, average_adapters

__all__ = ["fedavg", "weighted_mean"]


def fedavg(replies: Sequence[tuple[Mapping[str, np.ndarray], int]]) -> AdapterArrays:
    """``sum_k n_k * adapter_k / sum_k n_k``, array by array (FFA-LoRA: exact for ``B A``)."""
    if not replies:
        raise ValueError("no accepted replies to aggregate")
    return average_adapters([arrays for arrays, _ in replies], [float(n) for _, n in replies])


def weighted_mean(values: Sequence[tuple[float, int]]) -> float:
    total = sum(n for _, n in values)
    return float(sum(v * n for v, n in values) / total) if total else float("nan")
