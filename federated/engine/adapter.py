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

Optional text-encoder LoRA (``AdapterSpec.text_encoder``, off by default): LoRA on the CLIP
text encoder's attention projections (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``), with
the same mode (FFA: only B trained and sent). Its arrays follow the UNet's under
``text_encoder.`` (``text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight``).
Training then encodes the captions every step through :class:`TextConditionedUNet` (the
cached embeddings are those of the frozen encoder); under DP the one module opacus wraps
holds both, so each example's gradient is clipped over the UNet's and the encoder's LoRA
parameters together.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from federated.engine.errors import AdapterMismatchError, ConfigError

if TYPE_CHECKING:
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from peft import LoraConfig

__all__ = [
    "DEFAULT_TARGET_MODULES",
    "TE_PREFIX",
    "TE_TARGET_MODULES",
    "AdapterArrays",
    "AdapterSpec",
    "TextConditionedUNet",
    "attach_text_encoder_adapter",
    "caption_input_ids",
    "initial_adapter_arrays",
    "text_encoder_for_training",
    "text_encoder_lora_files",
    "text_encoder_lora_state",
    "text_encoder_with_adapter",
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
TE_TARGET_MODULES: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj")
TE_PREFIX = "text_encoder."
ADAPTER_NAME = "default"


@dataclass(frozen=True)
class AdapterSpec:
    """How the LoRA adapter is shaped and initialised; identical on every node of a job."""

    rank: int = 4
    alpha: float = 4.0
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    mode: Literal["ffa", "lora"] = "ffa"
    init_seed: int = 0
    # LoRA on the text encoder's attention projections too (same rank, alpha and mode)
    text_encoder: bool = False

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

    def lora_config(self, target_modules: Sequence[str] | None = None) -> LoraConfig:
        from peft import LoraConfig

        return LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,  # type: ignore[arg-type]  # peft takes float alphas too
            target_modules=list(target_modules or self.target_modules),
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
    _init_layers(layers, spec, "")


def _init_layers(layers: list[tuple[str, torch.nn.Module]], spec: AdapterSpec, prefix: str) -> None:
    with torch.no_grad():
        for name, layer in layers:
            lora_a = _lora_weight(layer, "lora_A")
            lora_b = _lora_weight(layer, "lora_B")
            lora_a.copy_(ffa_init_a(spec.init_seed, prefix + name, spec.rank, lora_a.shape[1]))
            lora_b.zero_()
            lora_a.requires_grad_(spec.mode == "lora")
            lora_b.requires_grad_(True)


def attach_text_encoder_adapter(text_encoder: torch.nn.Module, spec: AdapterSpec) -> None:
    """Freeze the CLIP text encoder and add LoRA to its attention projections (as the UNet's)."""
    from peft import inject_adapter_in_model

    text_encoder.requires_grad_(False)
    inject_adapter_in_model(
        spec.lora_config(TE_TARGET_MODULES), text_encoder, adapter_name=ADAPTER_NAME
    )
    layers = _lora_layers(text_encoder)
    if not layers:
        raise ConfigError("the text encoder has no q_proj/k_proj/v_proj/out_proj to adapt")
    _init_layers(layers, spec, TE_PREFIX)


class TextConditionedUNet(torch.nn.Module):
    """The UNet with its text encoder in front: ``input_ids`` in, the UNet's output out.

    The module the trainer (and opacus) runs when the text encoder has LoRA: captions are
    encoded every step, so the encoder's LoRA gets gradients; one module holds every trained
    parameter, so opacus clips each example's gradient over all of them at once.
    """

    def __init__(self, unet: torch.nn.Module, text_encoder: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet
        self.text_encoder = text_encoder

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        input_ids: torch.Tensor,
        **kwargs: object,
    ) -> object:
        kwargs.pop("encoder_hidden_states", None)  # the frozen encoder's cached output
        hidden = self.text_encoder(input_ids)[0]
        return self.unet(sample, timestep, encoder_hidden_states=hidden, **kwargs)


def adapter_state_dict(
    unet: torch.nn.Module, text_encoder: torch.nn.Module | None = None
) -> OrderedDict[str, torch.Tensor]:
    """Every LoRA tensor (A and B) under peft names, in module order; then the encoder's."""
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    parts: list[tuple[str, torch.nn.Module]] = [("", unet)]
    if text_encoder is not None:
        parts.append((TE_PREFIX, text_encoder))
    for prefix, module in parts:
        for name, layer in _lora_layers(module):
            state[f"{prefix}{name}.lora_A.weight"] = _lora_weight(layer, "lora_A")
            state[f"{prefix}{name}.lora_B.weight"] = _lora_weight(layer, "lora_B")
    return state


def _transported(name: str, spec: AdapterSpec) -> bool:
    return spec.mode == "lora" or ".lora_B." in name


def get_adapter_arrays(
    unet: torch.nn.Module, spec: AdapterSpec, text_encoder: torch.nn.Module | None = None
) -> AdapterArrays:
    """What a node sends: B only for FFA-LoRA, A and B for plain LoRA (float32 numpy).

    With ``text_encoder`` (a text-encoder LoRA), its arrays follow under ``text_encoder.``.
    """
    return OrderedDict(
        (name, tensor.detach().to("cpu", torch.float32).numpy().copy())
        for name, tensor in adapter_state_dict(unet, text_encoder).items()
        if _transported(name, spec)
    )


def set_adapter_arrays(
    unet: torch.nn.Module,
    spec: AdapterSpec,
    arrays: Mapping[str, np.ndarray],
    text_encoder: torch.nn.Module | None = None,
) -> None:
    """Load transported arrays into the adapter; names and shapes must match exactly.

    A text-encoder LoRA's arrays are loaded into ``text_encoder``; without it (callers that
    need only the UNet) they are checked to be the spec's and left out.
    """
    state = adapter_state_dict(unet, text_encoder)
    if text_encoder is None and spec.text_encoder:
        arrays = {k: v for k, v in arrays.items() if not k.startswith(TE_PREFIX)}
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


def caption_input_ids(pipe: object, captions: Sequence[str]) -> torch.Tensor:
    """``[len(captions), max_length]`` token ids, as the cache's caption encoding pads them."""
    tokenizer = pipe.tokenizer  # type: ignore[attr-defined]  # a diffusers SD pipeline
    ids = tokenizer(
        list(captions),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    assert isinstance(ids, torch.Tensor)
    return ids


def text_encoder_for_training(
    pipe: object, spec: AdapterSpec, family: str
) -> torch.nn.Module | None:
    """A copy of the pipeline's text encoder with LoRA, or None when the spec has none."""
    if not spec.text_encoder:
        return None
    if family not in ("sd1", "sd2"):
        raise ConfigError(f"text-encoder LoRA is implemented for SD 1.x/2.x, not {family} yet")
    text_encoder = copy.deepcopy(pipe.text_encoder)  # type: ignore[attr-defined]
    attach_text_encoder_adapter(text_encoder, spec)
    return text_encoder


def text_encoder_with_adapter(
    text_encoder: torch.nn.Module, spec: AdapterSpec, arrays: Mapping[str, np.ndarray]
) -> torch.nn.Module:
    """A copy of ``text_encoder`` with the LoRA in ``arrays`` (its ``text_encoder.*`` part)."""
    adapted = copy.deepcopy(text_encoder)
    attach_text_encoder_adapter(adapted, spec)
    with torch.no_grad():
        for name, target in adapter_state_dict(adapted).items():
            key = TE_PREFIX + name
            if _transported(name, spec):
                if key not in arrays:
                    raise AdapterMismatchError(f"the adapter has no {key}")
                value = np.asarray(arrays[key], dtype=np.float32)
                if tuple(value.shape) != tuple(target.shape) or not np.isfinite(value).all():
                    raise AdapterMismatchError(f"{key}: wrong shape or non-finite values")
                target.copy_(torch.from_numpy(value).to(target.device, target.dtype))
    adapted.eval()
    return adapted


def text_encoder_lora_state(
    text_encoder: torch.nn.Module, spec: AdapterSpec, arrays: Mapping[str, np.ndarray]
) -> dict[str, torch.Tensor]:
    """Every A and B of the text encoder's LoRA (peft names, no prefix) from the arrays."""
    adapted = text_encoder_with_adapter(text_encoder, spec, arrays)
    return {k: v.detach().float().cpu().clone() for k, v in adapter_state_dict(adapted).items()}


def text_encoder_lora_files(
    *,
    kohya_file: Path,
    diffusers_file: Path,
    te_state: Mapping[str, torch.Tensor],
    spec: AdapterSpec,
) -> None:
    """Add the text encoder's LoRA to both written files.

    kohya: ``lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight`` (and
    ``lora_up``, ``.alpha``), as kohya's SD 1.x trainer names them; diffusers/peft:
    ``text_encoder.<peft name>`` with its adapter config under ``text_encoder.`` in
    ``lora_adapter_metadata`` (the real alpha, so a rank different from alpha reloads right).
    """
    from safetensors import safe_open

    from sdcore.loading import write_safetensors
    from sdcore.lora import LORA_ADAPTER_METADATA_KEY

    modules = [n.removesuffix(".lora_A.weight") for n in te_state if n.endswith(".lora_A.weight")]

    def canonical(module: str) -> str:
        # transformers 5's CLIPTextModel has no ``text_model.`` level; LoRA files keep it
        return module if module.startswith("text_model.") else f"text_model.{module}"

    for path, kohya in ((kohya_file, True), (diffusers_file, False)):
        with safe_open(str(path), framework="pt") as handle:
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
            metadata = dict(handle.metadata() or {})
        for module in modules:
            down = te_state[f"{module}.lora_A.weight"]
            up = te_state[f"{module}.lora_B.weight"]
            if kohya:
                name = "lora_te_" + canonical(module).replace(".", "_")
                tensors[f"{name}.lora_down.weight"] = down
                tensors[f"{name}.lora_up.weight"] = up
                tensors[f"{name}.alpha"] = torch.tensor(float(spec.alpha))
            else:
                tensors[f"{TE_PREFIX}{canonical(module)}.lora_A.weight"] = down
                tensors[f"{TE_PREFIX}{canonical(module)}.lora_B.weight"] = up
        if not kohya:
            packed = json.loads(metadata.get(LORA_ADAPTER_METADATA_KEY, "{}"))
            config = {
                "r": spec.rank,
                "lora_alpha": spec.alpha,
                "target_modules": sorted({m.rsplit(".", 1)[-1] for m in modules}),
                "lora_dropout": 0.0,
                "bias": "none",
                "use_dora": False,
                "init_lora_weights": True,
            }
            packed.update({f"{TE_PREFIX}{k}": v for k, v in config.items()})
            metadata[LORA_ADAPTER_METADATA_KEY] = json.dumps(packed, indent=2, sort_keys=True)
        metadata["ss_train_text_encoder"] = "true"
        write_safetensors(path, tensors, metadata)


def initial_adapter_arrays(pipe: object, spec: AdapterSpec) -> AdapterArrays:
    """The job's starting arrays (zero B, seeded A), the text encoder's too if it has LoRA."""
    unet = copy.deepcopy(pipe.unet)  # type: ignore[attr-defined]
    attach_adapter(unet, spec)
    text_encoder = None
    if spec.text_encoder:
        text_encoder = copy.deepcopy(pipe.text_encoder)  # type: ignore[attr-defined]
        attach_text_encoder_adapter(text_encoder, spec)
    return get_adapter_arrays(unet, spec, text_encoder)
