"""Federated LoRA training on the tiny SDXL model: cache, loss, DP step, round, LoRA files.

The tiny model has SDXL's architecture (two text encoders, pooled embeddings and time ids in
``added_cond_kwargs``), so every check here runs the same code paths a full SDXL base does.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from federated.engine.adapter import AdapterSpec, attach_adapter
from federated.engine.cache import (
    ImageGeometry,
    LatentCache,
    build_latent_cache,
    unet_kwargs,
)
from federated.engine.dataset import read_dataset
from federated.engine.dp import DPConfig, PerSampleMSE, make_private
from federated.engine.evaluate import pipeline_with_adapter
from federated.engine.export import LoraProvenance, save_lora_files
from federated.engine.ledger import PrivacyLedger
from federated.engine.synthetic import generate_synthetic_dataset
from federated.engine.trainer import (
    LoadedBase,
    TrainConfig,
    denoising_loss,
    load_base,
    train_round,
    training_scheduler,
)
from sdcore.tiny import TinyModelPaths
from sdcore.tiny_xl import save_tiny_sdxl_model

RESOLUTION = 32


@pytest.fixture(scope="module")
def xl_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModelPaths:
    return save_tiny_sdxl_model(tmp_path_factory.mktemp("tiny-sdxl"), seed=0)


@pytest.fixture(scope="module")
def xl_base(xl_model: TinyModelPaths, tmp_path_factory: pytest.TempPathFactory) -> LoadedBase:
    return load_base(
        xl_model.diffusers_dir,
        device=torch.device("cpu"),
        dtype=torch.float32,
        cache_dir=tmp_path_factory.mktemp("xl-fingerprints"),
    )


@pytest.fixture(scope="module")
def xl_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 synthetic images plus one wide (48x32) image, to see the crop in the time ids."""
    folder = generate_synthetic_dataset(
        tmp_path_factory.mktemp("xl-data"), n_images=16, seed=5, resolution=RESOLUTION
    )
    Image.new("RGB", (48, 32), (200, 30, 30)).save(folder / "wide.png")
    (folder / "wide.txt").write_text("a photo of sks red square", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def xl_cache(
    xl_base: LoadedBase, xl_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> LatentCache:
    return build_latent_cache(
        xl_base.pipe,
        read_dataset(xl_data),
        cache_dir=tmp_path_factory.mktemp("xl-cache"),
        resolution=RESOLUTION,
        model_hash=xl_base.fingerprint,
        family="sdxl",
    )


def test_the_sdxl_cache_holds_what_the_sdxl_pipeline_encodes(
    xl_base: LoadedBase, xl_data: Path, xl_cache: LatentCache
) -> None:
    # Given the SDXL pipeline's own prompt encoding (both encoders, pooled from the second)
    scan = read_dataset(xl_data)
    captions = [e.caption for e in scan.examples]
    with torch.no_grad():
        hidden, _, pooled, _ = xl_base.pipe.encode_prompt(
            prompt=captions, device="cpu", do_classifier_free_guidance=False
        )
    # Then the cache holds the same tensors, per example, plus six size ids each
    assert set(xl_cache.conditioning) == {"encoder_hidden_states", "text_embeds", "time_ids"}
    assert xl_cache.conditioning["encoder_hidden_states"].shape == (17, 77, 32 + 64)
    torch.testing.assert_close(xl_cache.conditioning["encoder_hidden_states"], hidden)
    torch.testing.assert_close(xl_cache.conditioning["text_embeds"], pooled)
    wide = [e.relpath for e in scan.examples].index("wide.png")
    ids = xl_cache.conditioning["time_ids"]
    # original (h, w), crop (top, left) of the centre crop, target (h, w)
    assert ids[wide].tolist() == [32.0, 48.0, 0.0, 8.0, 32.0, 32.0]
    assert ids[1 - min(wide, 1)].tolist() == [32.0, 32.0, 0.0, 0.0, 32.0, 32.0]
    assert ImageGeometry.center_crop(scan.examples[wide], 64).time_ids() == [32, 48, 0, 16, 64, 64]


def test_a_reloaded_sdxl_cache_is_the_same(xl_base: LoadedBase, xl_cache: LatentCache) -> None:
    assert xl_cache.path is not None
    again = LatentCache.load(xl_cache.path)
    for name, tensor in xl_cache.conditioning.items():
        torch.testing.assert_close(again.conditioning[name], tensor)


def test_the_loss_passes_pooled_embeddings_and_time_ids_as_added_conditioning(
    xl_base: LoadedBase, xl_cache: LatentCache
) -> None:
    # Given one batch of cached tensors, fixed noise and timesteps
    unet, scheduler = xl_base.pipe.unet, training_scheduler(xl_base.pipe)
    index = torch.arange(4)
    latents = xl_cache.latent_mean[index]
    conditioning = xl_cache.conditioning_for(index)
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(0))
    steps = torch.tensor([10, 200, 500, 900])
    kwargs = unet_kwargs(conditioning)
    assert set(kwargs) == {"encoder_hidden_states", "added_cond_kwargs"}
    # When the trainer's loss runs, it equals the UNet called as the SDXL pipeline calls it
    with torch.no_grad():
        loss = denoising_loss(unet, scheduler, latents, conditioning, steps, noise, PerSampleMSE())
        prediction = unet(
            scheduler.add_noise(latents, noise, steps),  # type: ignore[attr-defined]
            steps,
            encoder_hidden_states=conditioning["encoder_hidden_states"],
            added_cond_kwargs={
                "text_embeds": conditioning["text_embeds"],
                "time_ids": conditioning["time_ids"],
            },
        ).sample
    torch.testing.assert_close(loss, torch.nn.functional.mse_loss(prediction, noise))
    # and the size ids matter: other time ids, another loss
    other = dict(conditioning, time_ids=conditioning["time_ids"] * 2)
    with torch.no_grad():
        moved = denoising_loss(unet, scheduler, latents, other, steps, noise, PerSampleMSE())
    assert abs(float(moved) - float(loss)) > 1e-6


@pytest.mark.parametrize("mode", ["hooks", "ew"])
def test_opacus_per_sample_gradients_through_the_sdxl_unet_are_each_examples_own(
    xl_base: LoadedBase, xl_cache: LatentCache, mode: str
) -> None:
    # Given the SDXL UNet with a plain LoRA (A and B trained) wrapped by opacus
    spec = AdapterSpec(rank=2, alpha=2.0, mode="lora")
    unet = copy.deepcopy(xl_base.pipe.unet)
    attach_adapter(unet, spec)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # B away from zero, so A's gradients are not zero either
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    reference = copy.deepcopy(unet)
    params = [p for p in unet.parameters() if p.requires_grad]
    unet.train()
    private = make_private(
        unet,
        torch.optim.SGD(params, lr=0.1),
        n_examples=len(xl_cache),
        batch_size=4,
        dp=DPConfig(noise_multiplier=1.0, grad_sample_mode=mode),  # type: ignore[arg-type]
        noise_multiplier=1.0,
        state=None,
        seed=0,
    )
    index = torch.arange(3)
    latents = xl_cache.latent_mean[index]
    conditioning = xl_cache.conditioning_for(index)
    noise = torch.randn(latents.shape, generator=g)
    steps = torch.tensor([100, 400, 800])
    scheduler = training_scheduler(xl_base.pipe)
    # When one batch goes through backward
    denoising_loss(
        private.module, scheduler, latents, conditioning, steps, noise, private.criterion
    ).backward()
    # Then each per-sample gradient is that example's gradient, computed alone
    reference.train()
    ref_params = [p for p in reference.parameters() if p.requires_grad]
    for i in range(3):
        one = torch.tensor([i])
        loss = denoising_loss(
            reference,
            scheduler,
            latents[one],
            {k: v[one] for k, v in conditioning.items()},
            steps[one],
            noise[one],
            PerSampleMSE(),
        )
        grads = torch.autograd.grad(loss, ref_params)
        for p, expected in zip(params, grads, strict=True):
            got = p.grad_sample[i]  # type: ignore[attr-defined]
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-7)
    close = getattr(private.module, "_close", None)
    if callable(close):
        close()


@pytest.fixture(scope="module")
def xl_rounds(
    xl_model: TinyModelPaths, xl_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, object]]:
    """A DP FFA-LoRA round (ledger charged) and a non-private plain LoRA round, on SDXL."""
    root = tmp_path_factory.mktemp("xl-rounds")
    ledger = PrivacyLedger(root / "ledger.db")
    key = str(xl_data.resolve())
    ledger.set_budget(key, epsilon=30.0, delta=1e-3)
    dp_config = TrainConfig(
        resolution=RESOLUTION,
        adapter=AdapterSpec(rank=2, alpha=4.0),
        learning_rate=0.1,
        batch_size=8,
        local_steps=3,
        device="cpu",
        dp=DPConfig(target_epsilon=8.0, target_delta=1e-5, max_grad_norm=0.05, planned_rounds=2),
    )
    dp_round = train_round(
        dp_config,
        base_model=xl_model.diffusers_dir,
        dataset=xl_data,
        cache_dir=root / "cache",
        adapter_in=None,
        accountant_state=None,
        ledger=ledger,
        job_id="xl-job",
    )
    plain_config = TrainConfig(
        resolution=RESOLUTION,
        adapter=AdapterSpec(rank=2, alpha=4.0, mode="lora"),
        learning_rate=0.1,
        batch_size=8,
        local_steps=3,
        device="cpu",
    )
    plain_round = train_round(
        plain_config,
        base_model=xl_model.diffusers_dir,
        dataset=xl_data,
        cache_dir=root / "cache",
        adapter_in=None,
        accountant_state=None,
        ledger=None,
        job_id="xl-plain",
    )
    yield {
        "dp": dp_round,
        "dp_config": dp_config,
        "plain": plain_round,
        "plain_config": plain_config,
        "ledger": ledger,
        "key": key,
    }


def test_a_dp_round_on_sdxl_trains_b_only_and_charges_the_ledger(
    xl_rounds: dict[str, object],
) -> None:
    result = xl_rounds["dp"]
    ledger = xl_rounds["ledger"]
    assert isinstance(ledger, PrivacyLedger)
    assert result.steps == 3 and result.epsilon is not None and 0 < result.epsilon < 8.0  # type: ignore[attr-defined]
    assert all(".lora_B." in name for name in result.adapter)  # type: ignore[attr-defined]
    assert any(np.abs(v).max() > 0 for v in result.adapter.values())  # type: ignore[attr-defined]
    spend = ledger.job_spend(str(xl_rounds["key"]), "xl-job")
    assert spend is not None and spend.epsilon == pytest.approx(result.epsilon, rel=1e-6)  # type: ignore[attr-defined]


def test_a_plain_lora_round_on_sdxl_sends_a_and_b(xl_rounds: dict[str, object]) -> None:
    result = xl_rounds["plain"]
    names = list(result.adapter)  # type: ignore[attr-defined]
    assert any(".lora_A." in n for n in names) and any(".lora_B." in n for n in names)
    assert result.epsilon is None and np.isfinite(result.train_loss)  # type: ignore[attr-defined]


def _image(pipe: object) -> np.ndarray:
    out = pipe(  # type: ignore[operator]
        "a photo of sks red circle",
        num_inference_steps=3,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    )
    return np.asarray(out.images[0])


def test_the_sdxl_lora_files_reload_in_diffusers_and_say_sdxl(
    xl_model: TinyModelPaths, xl_base: LoadedBase, xl_rounds: dict[str, object], tmp_path: Path
) -> None:
    # Given the trained plain adapter (rank 2, alpha 4: the alpha must survive both formats)
    config = xl_rounds["plain_config"]
    assert isinstance(config, TrainConfig)
    arrays = xl_rounds["plain"].adapter  # type: ignore[attr-defined]
    scaled = {k: v * 50.0 for k, v in arrays.items()}  # a few steps move little: show it
    files = save_lora_files(
        tmp_path,
        unet=xl_base.pipe.unet,
        spec=config.adapter,
        arrays=scaled,
        provenance=LoraProvenance(
            base_model_name="tiny-sdxl",
            base_model_hash=xl_base.fingerprint,
            family="sdxl",
            resolution=RESOLUTION,
            steps=3,
        ),
    )
    # Then both files carry the SDXL metadata A1111 and ComfyUI read
    for path in (files.diffusers_file, files.kohya_file):
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata()
            names = list(handle.keys())
        assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
        assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
        assert meta["ss_v2"] == "False" and meta["ss_network_alpha"] == "4.0"
    # the kohya file names modules as sd-scripts does for SDXL (original UNet blocks)
    assert names and all(n.startswith("lora_unet_") for n in names)
    assert any(n.startswith("lora_unet_input_blocks_4_1_transformer_blocks_0_") for n in names)
    assert not any("down_blocks" in n for n in names)
    # and both reload in diffusers' SDXL pipeline to the in-memory adapter's image
    pipe = xl_base.pipe
    base_image = _image(pipe)
    expected = _image(pipeline_with_adapter(pipe, config.adapter, scaled))
    assert np.abs(expected - base_image).max() > 1e-3
    for path in (files.diffusers_file, files.kohya_file):
        pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name="t")
        try:
            np.testing.assert_allclose(_image(pipe), expected, atol=1e-5)
        finally:
            pipe.unload_lora_weights()
    meta_json = json.loads(meta["ss_network_args"])
    assert meta_json["mode"] == "lora"
