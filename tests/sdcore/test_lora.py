"""LoRA key conversion (kohya <-> peft) and LoRA file writing, without a model."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sdcore.lora import (
    LoraFormatError,
    kohya_module_to_diffusers,
    kohya_to_diffusers,
    peft_to_kohya,
    save_lora_diffusers,
    save_lora_kohya,
)

MODULES = [
    "down_blocks.0.attentions.1.transformer_blocks.0.attn1.to_q",
    "up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_out.0",
    "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj",
    "down_blocks.1.attentions.0.proj_in",
    "up_blocks.1.resnets.2.conv1",
    "down_blocks.2.resnets.0.time_emb_proj",
]


def _state(rank: int = 2) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    state = {}
    for module in MODULES:
        state[f"{module}.lora_A.weight"] = torch.randn(rank, 8, generator=generator)
        state[f"{module}.lora_B.weight"] = torch.randn(8, rank, generator=generator)
    return state


@pytest.mark.parametrize("module", MODULES)
def test_kohya_names_convert_back_to_the_diffusers_module(module: str) -> None:
    kohya = "lora_unet_" + module.replace(".", "_")
    assert kohya_module_to_diffusers(kohya) == ("unet", module)


@pytest.mark.parametrize(
    ("kohya", "expected"),
    [
        (
            "lora_te_text_model_encoder_layers_11_self_attn_out_proj",
            "text_model.encoder.layers.11.self_attn.out_proj",
        ),
        ("lora_te_text_model_encoder_layers_0_mlp_fc1", "text_model.encoder.layers.0.mlp.fc1"),
    ],
)
def test_text_encoder_names_convert(kohya: str, expected: str) -> None:
    assert kohya_module_to_diffusers(kohya) == ("text_encoder", expected)


@pytest.mark.parametrize(
    ("kohya", "expected"),
    [
        (
            "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q",
            "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
        ),
        ("lora_unet_output_blocks_11_1_proj_out", "up_blocks.3.attentions.2.proj_out"),
        (
            "lora_unet_middle_block_1_transformer_blocks_0_attn2_to_k",
            "mid_block.attentions.0.transformer_blocks.0.attn2.to_k",
        ),
        ("lora_unet_input_blocks_4_0_in_layers_2", "down_blocks.1.resnets.0.conv1"),
    ],
)
def test_ldm_style_kohya_names_convert_for_sd1(kohya: str, expected: str) -> None:
    assert kohya_module_to_diffusers(kohya) == ("unet", expected)


def test_peft_to_kohya_and_back_keeps_tensors_and_the_real_alpha() -> None:
    state = _state(rank=2)
    kohya = peft_to_kohya(state, alpha=8.0)
    assert (
        kohya["lora_unet_down_blocks_0_attentions_1_transformer_blocks_0_attn1_to_q.alpha"].item()
        == 8.0
    )
    back = kohya_to_diffusers(kohya)
    assert set(back.unet) == set(state)
    assert all(torch.equal(back.unet[k], state[k]) for k in state)
    assert set(back.alphas.values()) == {8.0} and set(back.ranks.values()) == {2}


def test_a_missing_alpha_means_alpha_equals_rank() -> None:
    kohya = {
        k: v
        for k, v in peft_to_kohya(_state(rank=2), alpha=8.0).items()
        if not k.endswith(".alpha")
    }
    assert set(kohya_to_diffusers(kohya).alphas.values()) == {2.0}


def test_lycoris_layers_are_refused_with_a_message() -> None:
    with pytest.raises(LoraFormatError, match="LyCORIS"):
        kohya_to_diffusers(
            {"lora_unet_down_blocks_0_attentions_0_proj_in.hada_w1_a": torch.zeros(1)}
        )


def test_an_unpaired_lora_a_is_refused(tmp_path: Path) -> None:
    state = _state()
    del state[f"{MODULES[0]}.lora_B.weight"]
    with pytest.raises(LoraFormatError, match="no lora_B"):
        save_lora_kohya(tmp_path / "x.safetensors", state, alpha=1.0)


def test_files_are_byte_identical_for_the_same_content(tmp_path: Path) -> None:
    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    meta = {"ss_network_dim": "2", "modelspec.title": "t"}
    a = save_lora_kohya(tmp_path / "a.safetensors", _state(), alpha=4.0, metadata=meta)
    b = save_lora_kohya(
        tmp_path / "b.safetensors", _state(), alpha=4.0, metadata=dict(reversed(meta.items()))
    )
    assert digest(a) == digest(b)
    d = save_lora_diffusers(tmp_path / "d", _state(), rank=2, alpha=4.0, metadata=meta)
    assert all(k.startswith("unet.") for k in load_file(str(d)))
