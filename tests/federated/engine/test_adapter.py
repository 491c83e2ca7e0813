"""LoRA adapters: FFA initialisation, arrays for transport, and exactness of averaging."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from federated.engine.adapter import (
    AdapterSpec,
    adapter_state_dict,
    attach_adapter,
    average_adapters,
    delta_weights,
    get_adapter_arrays,
    set_adapter_arrays,
)
from federated.engine.errors import AdapterMismatchError
from federated.engine.trainer import LoadedBase, TrainConfig, train_round
from sdcore.tiny import TinyModelPaths

from .conftest import TRAIN_RESOLUTION


def _adapted(base: LoadedBase, spec: AdapterSpec) -> torch.nn.Module:
    unet = copy.deepcopy(base.pipe.unet)
    attach_adapter(unet, spec)
    return unet


def test_ffa_a_is_the_same_on_every_node_whatever_the_global_rng(tiny_base: LoadedBase) -> None:
    torch.manual_seed(1)
    first = adapter_state_dict(_adapted(tiny_base, AdapterSpec(init_seed=5)))
    torch.manual_seed(2)
    second = adapter_state_dict(_adapted(tiny_base, AdapterSpec(init_seed=5)))
    other_seed = adapter_state_dict(_adapted(tiny_base, AdapterSpec(init_seed=6)))
    a_names = [n for n in first if ".lora_A." in n]
    assert len(a_names) == 48  # 12 attention blocks x (q, k, v, out)
    assert all(torch.equal(first[n], second[n]) for n in a_names)
    assert not any(torch.equal(first[n], other_seed[n]) for n in a_names)


def test_ffa_trains_only_b_and_starts_as_the_base_model(tiny_base: LoadedBase) -> None:
    unet = _adapted(tiny_base, AdapterSpec(mode="ffa"))
    trainable = [n for n, p in unet.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_B." in n for n in trainable)
    x = torch.randn(1, 4, 4, 4)
    cond = torch.randn(1, 77, 32)
    with torch.no_grad():
        expected = tiny_base.pipe.unet(x, 10, cond).sample
        assert torch.equal(unet(x, 10, cond).sample, expected)


def test_plain_lora_trains_and_transports_a_and_b(tiny_base: LoadedBase) -> None:
    spec = AdapterSpec(mode="lora")
    unet = _adapted(tiny_base, spec)
    names = list(get_adapter_arrays(unet, spec))
    assert sum(".lora_A." in n for n in names) == sum(".lora_B." in n for n in names) == 48
    assert all(p.requires_grad for n, p in unet.named_parameters() if ".lora_" in n)


def test_ffa_transports_only_b(tiny_base: LoadedBase) -> None:
    spec = AdapterSpec(mode="ffa")
    names = list(get_adapter_arrays(_adapted(tiny_base, spec), spec))
    assert len(names) == 48 and all(".lora_B." in n for n in names)


def test_arrays_round_trip_into_another_model(tiny_base: LoadedBase) -> None:
    spec = AdapterSpec(mode="lora", rank=2)
    source = _adapted(tiny_base, spec)
    arrays = get_adapter_arrays(source, spec)
    rng = np.random.default_rng(0)
    arrays = type(arrays)(
        (k, rng.standard_normal(v.shape).astype(np.float32)) for k, v in arrays.items()
    )
    target = _adapted(tiny_base, spec)
    set_adapter_arrays(target, spec, arrays)
    back = get_adapter_arrays(target, spec)
    assert list(back) == list(arrays)
    assert all(np.array_equal(back[k], arrays[k]) for k in arrays)


def test_arrays_with_wrong_names_shapes_or_values_are_refused(tiny_base: LoadedBase) -> None:
    spec = AdapterSpec()
    unet = _adapted(tiny_base, spec)
    arrays = get_adapter_arrays(unet, spec)
    first = next(iter(arrays))
    with pytest.raises(AdapterMismatchError, match="missing"):
        set_adapter_arrays(unet, spec, {k: v for k, v in arrays.items() if k != first})
    bad_shape = dict(arrays) | {first: np.zeros((1, 1), np.float32)}
    with pytest.raises(AdapterMismatchError, match="shape"):
        set_adapter_arrays(unet, spec, bad_shape)
    nan = dict(arrays) | {first: np.full(arrays[first].shape, np.nan, np.float32)}
    with pytest.raises(AdapterMismatchError, match="non-finite"):
        set_adapter_arrays(unet, spec, nan)


def _node_adapters(
    mode: str, tiny_model: TinyModelPaths, datasets: list[Path], cache_dir: Path
) -> tuple[AdapterSpec, list[dict[str, np.ndarray]]]:
    spec = AdapterSpec(rank=4, alpha=8.0, mode=mode)  # type: ignore[arg-type]
    config = TrainConfig(
        resolution=TRAIN_RESOLUTION,
        adapter=spec,
        learning_rate=1e-2,
        batch_size=8,
        local_steps=6,
        device="cpu",
    )
    results = [
        train_round(
            config,
            base_model=tiny_model.diffusers_dir,
            dataset=d,
            cache_dir=cache_dir,
            adapter_in=None,
            accountant_state=None,
            ledger=None,
            job_id=f"avg-{mode}",
        )
        for d in datasets
    ]
    return spec, [dict(r.adapter) for r in results]


def _full_states(
    base: LoadedBase, spec: AdapterSpec, adapters: list[dict[str, np.ndarray]]
) -> list[dict[str, torch.Tensor]]:
    states = []
    for arrays in adapters:
        unet = _adapted(base, spec)
        set_adapter_arrays(unet, spec, arrays)
        states.append({k: v.detach().clone() for k, v in adapter_state_dict(unet).items()})
    return states


def _averaging_error(
    base: LoadedBase, spec: AdapterSpec, adapters: list[dict[str, np.ndarray]]
) -> float:
    """|| delta(average of adapters) - average of deltas || / || average of deltas ||."""
    deltas = [delta_weights(s, spec.scale) for s in _full_states(base, spec, adapters)]
    mean_delta = {m: sum(d[m] for d in deltas) / len(deltas) for m in deltas[0]}
    [averaged] = _full_states(base, spec, [average_adapters(adapters)])
    delta_of_mean = delta_weights(averaged, spec.scale)
    num = sum(float((delta_of_mean[m] - mean_delta[m]).norm() ** 2) for m in mean_delta) ** 0.5
    den = sum(float(mean_delta[m].norm() ** 2) for m in mean_delta) ** 0.5
    return num / den


def test_ffa_average_of_node_adapters_is_exactly_the_average_update_and_plain_lora_is_not(
    tiny_model: TinyModelPaths,
    tiny_base: LoadedBase,
    small_datasets: list[Path],
    engine_cache_dir: Path,
) -> None:
    # Given three nodes that trained on different data of one concept, in each mode
    ffa_spec, ffa = _node_adapters("ffa", tiny_model, small_datasets, engine_cache_dir)
    lora_spec, lora = _node_adapters("lora", tiny_model, small_datasets, engine_cache_dir)
    # When their adapters are averaged (FedAvg) and compared with the average of B@A
    ffa_error = _averaging_error(tiny_base, ffa_spec, ffa)
    lora_error = _averaging_error(tiny_base, lora_spec, lora)
    print(f"relative FedAvg error: FFA-LoRA {ffa_error:.3e}, plain LoRA {lora_error:.3e}")
    # Then FFA is exact up to float32 rounding, plain LoRA is measurably off
    assert ffa_error < 1e-6
    assert lora_error > 1e-3
