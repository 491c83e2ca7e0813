"""LoRA adapters on the UNet (peft), FFA-LoRA initialisation, and arrays for transport.

Two modes:

- ``"ffa"`` (default, FFA-LoRA): every ``lora_A`` is drawn from a generator seeded by
  ``(init_seed, module name)`` and frozen; only ``lora_B`` (zero at start) is trained and
  sent. Every node derives the same A, so the average of the nodes' adapters
  ``mean_k(B_k) A`` is exactly the average of their updates ``mean_k(B_k A)``.
- ``"lora"``: A and B are both trained and sent (A starts from the same seeded draw on every
  node). Averaging A and B separately is then not the average of ``B A``.

Adapter arrays are an ordered ``dict[str, np.ndarray]`` keyed by peft state-dict names
(``down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight``), in module
order: what a Flower ``ArrayRecord`` carries.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from federated.engine.errors import AdapterMismatchError, ConfigError

if TYPE_CHECKING:
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from peft import LoraConfig

__all__ = [
    "DEFAULT_TARGET_MODULES",
    "AdapterArrays",
    "AdapterSpec",
    "adapter_state_dict",
    "attach_adapter",
    "average_adapters",
    "delta_weights",
    "ffa_init_a",
    "get_adapter_arrays",
    "set_adapter_arrays",
]

AdapterArrays = OrderedDict[str, np.ndarray]
DEFAULT_TARGET_MODULES: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
ADAPTER_NAME = "default"


@dataclass(frozen=True)
class AdapterSpec:
    """How the LoRA adapter is shaped and initialised; identical on every node of a job."""

    rank: int = 4
    alpha: float = 4.0
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    mode: Literal["ffa", "lora"] = "ffa"
    init_seed: int = 0

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ConfigError(f"LoRA rank must be at least 1, got {self.rank}")
        if self.alpha <= 0:
            raise ConfigError(f"LoRA alpha must be positive, got {self.alpha}")
        if self.mode not in ("ffa", "lora"):
            raise ConfigError(f"adapter mode must be 'ffa' or 'lora', got {self.mode!r}")
        if not self.target_modules:
            raise ConfigError("target_modules is empty")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def lora_config(self) -> LoraConfig:
        from peft import LoraConfig

        return LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,  # type: ignore[arg-type]  # peft takes float alphas too
            target_modules=list(self.target_modules),
            lora_dropout=0.0,
            init_lora_weights=True,
        )

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["target_modules"] = list(self.target_modules)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> AdapterSpec:
        values = dict(data)
        values["target_modules"] = tuple(values.get("target_modules", DEFAULT_TARGET_MODULES))  # type: ignore[arg-type]
        return cls(**values)  # type: ignore[arg-type]  # keys written by to_dict()


def _module_seed(init_seed: int, module_name: str) -> int:
    digest = hashlib.sha256(f"atelier-ffa:{init_seed}:{module_name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def ffa_init_a(init_seed: int, module_name: str, rank: int, in_features: int) -> torch.Tensor:
    """The shared initial ``lora_A`` of one module: uniform in ``±1/sqrt(in_features)``.

    Same bound as peft's default (Kaiming-uniform with ``a=sqrt(5)``), drawn from a generator
    seeded by the module's name, so it is the same on every machine and in every order.
    """
    generator = torch.Generator().manual_seed(_module_seed(init_seed, module_name))
    bound = 1.0 / math.sqrt(in_features)
    return (torch.rand(rank, in_features, generator=generator) * 2 - 1) * bound


def _lora_layers(unet: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    from peft.tuners.lora import LoraLayer

    return [
        (name, module)
        for name, module in unet.named_modules()
        if isinstance(module, LoraLayer) and isinstance(module, torch.nn.Module)
    ]


def _lora_weight(layer: torch.nn.Module, which: str) -> torch.Tensor:
    """``layer.lora_A["default"].weight`` (or ``lora_B``) of a peft LoRA layer."""
    modules = getattr(layer, which)
    weight = modules[ADAPTER_NAME].weight
    if not isinstance(weight, torch.Tensor):
        raise AdapterMismatchError(f"{which} of a LoRA layer has no weight tensor")
    return weight


def attach_adapter(unet: UNet2DConditionModel, spec: AdapterSpec) -> None:
    """Freeze the UNet, add the LoRA adapter, draw the shared A, zero B, mark trainables."""
    unet.requires_grad_(False)
    unet.add_adapter(spec.lora_config(), adapter_name=ADAPTER_NAME)
    layers = _lora_layers(unet)
    if not layers:
        raise ConfigError(f"no UNet module matches target_modules {list(spec.target_modules)}")
    with torch.no_grad():
        for name, layer in layers:
            lora_a = _lora_weight(layer, "lora_A")
            lora_b = _lora_weight(layer, "lora_B")
            lora_a.copy_(ffa_init_a(spec.init_seed, name, spec.rank, lora_a.shape[1]))
            lora_b.zero_()
            lora_a.requires_grad_(spec.mode == "lora")
            lora_b.requires_grad_(True)


def adapter_state_dict(unet: torch.nn.Module) -> OrderedDict[str, torch.Tensor]:
    """Every LoRA tensor (A and B) under peft names, in module order."""
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    for name, layer in _lora_layers(unet):
        state[f"{name}.lora_A.weight"] = _lora_weight(layer, "lora_A")
        state[f"{name}.lora_B.weight"] = _lora_weight(layer, "lora_B")
    return state


def _transported(name: str, spec: AdapterSpec) -> bool:
    return spec.mode == "lora" or ".lora_B." in name


def get_adapter_arrays(unet: torch.nn.Module, spec: AdapterSpec) -> AdapterArrays:
    """What a node sends: B only for FFA-LoRA, A and B for plain LoRA (float32 numpy)."""
    return OrderedDict(
        (name, tensor.detach().to("cpu", torch.float32).numpy().copy())
        for name, tensor in adapter_state_dict(unet).items()
        if _transported(name, spec)
    )


def set_adapter_arrays(
    unet: torch.nn.Module, spec: AdapterSpec, arrays: Mapping[str, np.ndarray]
) -> None:
    """Load transported arrays into the adapter; names and shapes must match exactly."""
    state = adapter_state_dict(unet)
    expected = [name for name in state if _transported(name, spec)]
    if set(arrays) != set(expected):
        missing = sorted(set(expected) - set(arrays))[:3]
        extra = sorted(set(arrays) - set(expected))[:3]
        raise AdapterMismatchError(
            f"adapter arrays do not match this {spec.mode} adapter "
            f"(missing {missing}, unexpected {extra})",
            details={"missing": len(set(expected) - set(arrays)), "unexpected": len(extra)},
        )
    with torch.no_grad():
        for name in expected:
            target = state[name]
            value = np.asarray(arrays[name])
            if tuple(value.shape) != tuple(target.shape):
                raise AdapterMismatchError(
                    f"{name}: shape {tuple(value.shape)} != {tuple(target.shape)}"
                )
            if not np.isfinite(value).all():
                raise AdapterMismatchError(f"{name}: received non-finite values")
            target.copy_(torch.from_numpy(value.astype(np.float32)).to(target.device, target.dtype))


def delta_weights(
    state: Mapping[str, torch.Tensor | np.ndarray], scale: float
) -> dict[str, torch.Tensor]:
    """``scale * B @ A`` per module, from a full (A and B) adapter state, in float64."""
    deltas: dict[str, torch.Tensor] = {}
    for name, a in state.items():
        if ".lora_A." not in name:
            continue
        module = name.split(".lora_A.")[0]
        b = state[f"{module}.lora_B.weight"]
        a64 = torch.as_tensor(
            np.asarray(a) if isinstance(a, np.ndarray) else a.detach().cpu()
        ).double()
        b64 = torch.as_tensor(
            np.asarray(b) if isinstance(b, np.ndarray) else b.detach().cpu()
        ).double()
        deltas[module] = scale * (b64 @ a64)
    return deltas


def average_adapters(
    adapters: Sequence[Mapping[str, np.ndarray]], weights: Sequence[float] | None = None
) -> AdapterArrays:
    """Weighted FedAvg of adapter arrays (each array averaged separately), in float64."""
    if not adapters:
        raise ValueError("nothing to average")
    weights = list(weights) if weights is not None else [1.0] * len(adapters)
    total = float(sum(weights))
    names = list(adapters[0])
    for adapter in adapters[1:]:
        if list(adapter) != names:
            raise AdapterMismatchError("adapters to average have different tensor names")
    return OrderedDict(
        (
            name,
            np.asarray(
                sum(
                    w * np.asarray(a[name], dtype=np.float64)
                    for a, w in zip(adapters, weights, strict=True)
                )
                / total,
                dtype=np.float32,
            ),
        )
        for name in names
    )
