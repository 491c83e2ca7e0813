"""Optional text-encoder LoRA: training, DP over all trained parameters, files, transport."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from federated.engine.adapter import (
    TE_PREFIX,
    AdapterSpec,
    TextConditionedUNet,
    attach_adapter,
    attach_text_encoder_adapter,
    caption_input_ids,
    initial_adapter_arrays,
    set_adapter_arrays,
    text_encoder_lora_state,
)
from federated.engine.dp import DPConfig, PerSampleMSE, make_private
from federated.engine.evaluate import pipeline_with_adapter
from federated.engine.export import LoraProvenance, save_lora_files
from federated.engine.flower.settings import train_config_from_run_config
from federated.engine.trainer import (
    LoadedBase,
    RoundResult,
    TrainConfig,
    denoising_loss,
    train_round,
    training_scheduler,
)
from sdcore.loading import load_pipeline
from sdcore.tiny import TinyModelPaths

from .conftest import TRAIN_RESOLUTION

TE_SPEC = AdapterSpec(rank=2, alpha=4.0, text_encoder=True)
CONFIG = TrainConfig(
    resolution=TRAIN_RESOLUTION,
    adapter=TE_SPEC,
    learning_rate=1e-1,
    batch_size=8,
    local_steps=6,
    device="cpu",
)


def _round(
    config: TrainConfig, tiny_model: TinyModelPaths, dataset: Path, cache_dir: Path
) -> RoundResult:
    return train_round(
        config,
        base_model=tiny_model.diffusers_dir,
        dataset=dataset,
        cache_dir=cache_dir,
        adapter_in=None,
        accountant_state=None,
        ledger=None,
        job_id="te-lora",
    )


@pytest.fixture(scope="module")
def te_round(
    tiny_model: TinyModelPaths, small_datasets: list[Path], engine_cache_dir: Path
) -> RoundResult:
    return _round(CONFIG, tiny_model, small_datasets[0], engine_cache_dir)


def test_the_job_option_turns_it_on() -> None:
    assert not train_config_from_run_config({}).adapter.text_encoder
    config = train_config_from_run_config({"text-encoder-lora": "true", "buckets": "false"})
    assert config.adapter.text_encoder and not config.buckets
    assert TrainConfig.from_dict(CONFIG.to_dict()) == CONFIG


def test_a_job_with_text_encoder_lora_trains_both(
    te_round: RoundResult, tiny_base: LoadedBase
) -> None:
    names = list(te_round.adapter)
    te = [n for n in names if n.startswith(TE_PREFIX)]
    unet = [n for n in names if not n.startswith(TE_PREFIX)]
    # FFA: only B is sent, for both; q/k/v/out of each of the tiny encoder's 2 layers
    assert len(te) == 2 * 4 and all(".lora_B." in n for n in te)
    # the module's own names (transformers 5's CLIPTextModel has no ``text_model.`` level)
    assert te[0].endswith("encoder.layers.0.self_attn.k_proj.lora_B.weight")
    assert unet and all(".lora_B." in n for n in unet)
    assert max(float(np.abs(te_round.adapter[n]).max()) for n in te) > 0  # B moved off zero
    assert max(float(np.abs(te_round.adapter[n]).max()) for n in unet) > 0
    # the server starts the job with the same names and shapes (the aggregation transports them)
    initial = initial_adapter_arrays(tiny_base.pipe, TE_SPEC)
    assert list(initial) == names
    assert all(initial[n].shape == te_round.adapter[n].shape for n in names)


def test_a_dp_job_with_text_encoder_lora_trains_and_accounts(
    tiny_model: TinyModelPaths, small_datasets: list[Path], engine_cache_dir: Path
) -> None:
    dp = DPConfig(noise_multiplier=1.0, max_grad_norm=0.05)
    result = _round(
        dataclasses.replace(CONFIG, dp=dp), tiny_model, small_datasets[1], engine_cache_dir
    )
    assert result.epsilon is not None and result.epsilon > 0
    assert any(n.startswith(TE_PREFIX) for n in result.adapter)


def test_dp_clips_each_example_over_the_unet_and_the_text_encoder_together(
    tiny_base: LoadedBase,
) -> None:
    """One clip norm over the concatenation of every trained parameter's gradient."""
    pipe = tiny_base.pipe
    unet = copy.deepcopy(pipe.unet)
    attach_adapter(unet, TE_SPEC)
    text_encoder = copy.deepcopy(pipe.text_encoder)
    attach_text_encoder_adapter(text_encoder, TE_SPEC)
    with torch.no_grad():  # non-zero B everywhere, so both parts have gradients
        for module in (unet, text_encoder):
            for name, p in module.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.05)
    model = TextConditionedUNet(unet, text_encoder)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    te_params = {id(p) for p in text_encoder.parameters() if p.requires_grad}
    assert te_params and len(te_params) < len(params)
    clip = 1e-4  # far below every per-sample norm: every example is clipped
    private = make_private(
        model,
        torch.optim.SGD(params, lr=0.0),
        n_examples=4,
        batch_size=4,
        dp=DPConfig(noise_multiplier=1e-9, max_grad_norm=clip, grad_sample_mode="hooks"),
        noise_multiplier=1e-9,
        state=None,
        seed=0,
    )
    captions = ["sks red circle", "a blue square", "sks", "red circle on grass"]
    ids = caption_input_ids(pipe, captions)
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(4, 4, 4, 4, generator=g)
    noise = torch.randn(latents.shape, generator=g)
    t = torch.tensor([100, 300, 500, 700])
    scheduler = training_scheduler(pipe)
    loss = denoising_loss(
        private.module, scheduler, latents, {"input_ids": ids}, t, noise, PerSampleMSE()
    )
    loss.backward()
    per_sample = [p.grad_sample.detach().clone() for p in params]  # type: ignore[attr-defined]
    private.optimizer.step()
    got = [p.grad.detach().clone() for p in params]  # type: ignore[union-attr]

    def clipped_mean(groups: list[list[int]]) -> list[torch.Tensor]:
        out = [torch.zeros_like(s[0]) for s in per_sample]
        for i in range(4):
            for group in groups:
                norm = torch.sqrt(sum(per_sample[j][i].pow(2).sum() for j in group))
                factor = min(1.0, clip / (float(norm) + 1e-6))
                for j in group:
                    out[j] += per_sample[j][i] * factor / 4
        return out

    joint = clipped_mean([list(range(len(params)))])
    te_group = [j for j, p in enumerate(params) if id(p) in te_params]
    separate = clipped_mean([te_group, [j for j in range(len(params)) if j not in te_group]])
    for mine, want in zip(got, joint, strict=True):
        torch.testing.assert_close(mine, want, rtol=1e-3, atol=1e-12)
    differs = max(float((a - b).abs().max()) for a, b in zip(got, separate, strict=True))
    assert differs > 1e-3 * max(float(a.abs().max()) for a in got)
    # every example's clipped gradient has norm ``clip`` over all parameters together
    total = torch.sqrt(sum((a * 4).pow(2).sum() for a in got))  # type: ignore[arg-type]
    assert float(total) <= 4 * clip * 1.001


def _te_output(text_encoder: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return text_encoder(ids)[0]


def test_the_exported_files_load_in_diffusers_and_change_the_text_encoder(
    te_round: RoundResult, tiny_base: LoadedBase, tiny_model: TinyModelPaths, tmp_path: Path
) -> None:
    files = save_lora_files(
        tmp_path,
        unet=tiny_base.pipe.unet,
        spec=TE_SPEC,
        arrays=te_round.adapter,
        provenance=LoraProvenance(
            base_model_name="tiny", base_model_hash="0" * 64, family="sd1", resolution=32, steps=6
        ),
        text_encoder=tiny_base.pipe.text_encoder,
    )
    with safe_open(str(files.kohya_file), framework="pt") as handle:
        kohya_keys = set(handle.keys())
        assert handle.metadata()["ss_train_text_encoder"] == "true"
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight" in kohya_keys
    assert "lora_te_text_model_encoder_layers_1_self_attn_out_proj.alpha" in kohya_keys
    with safe_open(str(files.diffusers_file), framework="pt") as handle:
        assert any(k.startswith("text_encoder.text_model.") for k in handle.keys())

    # the in-memory text encoder with the trained LoRA
    adapted = copy.deepcopy(tiny_base.pipe.text_encoder)
    attach_text_encoder_adapter(adapted, TE_SPEC)
    unet = copy.deepcopy(tiny_base.pipe.unet)
    attach_adapter(unet, TE_SPEC)
    set_adapter_arrays(unet, TE_SPEC, te_round.adapter, adapted)
    ids = caption_input_ids(tiny_base.pipe, ["sks red circle"])
    base_out = _te_output(tiny_base.pipe.text_encoder, ids)
    expected = _te_output(adapted, ids)
    assert float((expected - base_out).abs().max()) > 1e-4  # the LoRA changes the encoder
    # the evaluation pipeline (sample grids, concept scores) carries it too
    evaluated = pipeline_with_adapter(tiny_base.pipe, TE_SPEC, te_round.adapter)
    torch.testing.assert_close(_te_output(evaluated.text_encoder, ids), expected)

    state = text_encoder_lora_state(tiny_base.pipe.text_encoder, TE_SPEC, te_round.adapter)
    assert set(state) == {n.removeprefix(TE_PREFIX) for n in state} and len(state) == 16

    for folder, weight in (
        (files.diffusers_dir, files.diffusers_file.name),
        (files.kohya_file.parent, files.kohya_file.name),
    ):
        pipe = load_pipeline(tiny_model.diffusers_dir, dtype=torch.float32, device="cpu")
        pipe.load_lora_weights(str(folder), weight_name=weight, adapter_name="te")
        got = _te_output(pipe.text_encoder, ids)
        assert float((got - base_out).abs().max()) > 1e-4, weight
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
