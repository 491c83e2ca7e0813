"""Aspect-ratio bucketing: buckets, crops, the bucketed cache, DP micro-batches, training."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from federated.engine.adapter import AdapterSpec, attach_adapter
from federated.engine.buckets import (
    Bucket,
    BucketedLatentCache,
    accumulate_micro_batches,
    assign_bucket,
    batch_sampler,
    bucket_step,
    build_bucketed_cache,
    kohya_bucket_info,
    make_buckets,
    place,
)
from federated.engine.dataset import load_pixels_cropped, read_dataset
from federated.engine.dp import DPConfig, PerSampleMSE, make_private
from federated.engine.trainer import (
    LoadedBase,
    TrainConfig,
    denoising_loss,
    train_on_cache,
    train_round,
    training_scheduler,
)
from sdcore.tiny import TinyModelPaths

RESOLUTION = 64  # the tiny model's native size; bucket step 16 px here
SIZES = [(128, 64), (64, 128), (96, 96), (120, 80), (80, 120), (200, 100)]


def _write_dataset(root: Path, n: int, seed: int) -> Path:
    """``n`` images of several aspect ratios: a red disc on a random background."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        width, height = SIZES[i % len(SIZES)]
        background = tuple(int(c) for c in rng.integers(0, 120, 3))
        image = Image.new("RGB", (width, height), background)
        radius = min(width, height) // 3
        cx, cy = width // 2 + int(rng.integers(-4, 5)), height // 2 + int(rng.integers(-4, 5))
        ImageDraw.Draw(image).ellipse(
            (cx - radius, cy - radius, cx + radius, cy + radius), fill=(230, 20, 20)
        )
        image.save(root / f"img{i:03d}.png")
        (root / f"img{i:03d}.txt").write_text("sks red circle", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def mixed_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_dataset(tmp_path_factory.mktemp("mixed-aspect"), 24, seed=5)


@pytest.fixture(scope="module")
def bucketed(
    tiny_base: LoadedBase, mixed_dataset: Path, engine_cache_dir: Path
) -> BucketedLatentCache:
    scan = read_dataset(mixed_dataset)
    return build_bucketed_cache(
        tiny_base.pipe,
        scan,
        cache_dir=engine_cache_dir,
        resolution=RESOLUTION,
        model_hash=tiny_base.fingerprint,
    )


# ---------------------------------------------------------------------------------------


def test_kohya_buckets_at_512_with_a_64_px_step() -> None:
    assert bucket_step(512, vae_scale_factor=8, unet_downsampling=8) == 64
    names = {b.name for b in make_buckets(512, 64)}
    assert {"512x512", "448x576", "576x448", "384x640", "320x768", "256x1024"} <= names
    for b in make_buckets(512, 64):
        assert b.width % 64 == 0 and b.height % 64 == 0
        assert b.width * b.height <= 512 * 512
        assert 256 <= min(b.width, b.height) and max(b.width, b.height) <= 1024


def test_the_tiny_model_buckets_use_the_unets_smallest_step() -> None:
    step = bucket_step(64, vae_scale_factor=8, unet_downsampling=2)
    assert step == 16
    buckets = make_buckets(64, step)
    assert Bucket(64, 64) in buckets and Bucket(128, 32) in buckets and Bucket(48, 80) in buckets


def test_an_image_goes_to_the_bucket_nearest_its_aspect_ratio() -> None:
    buckets = make_buckets(512, 64)
    assert assign_bucket(1024, 512, buckets) == Bucket(704, 320)  # 2.2, nearest 2:1
    assert assign_bucket(512, 1024, buckets) == Bucket(320, 704)
    assert assign_bucket(800, 800, buckets) == Bucket(512, 512)
    assert assign_bucket(768, 1024, buckets) == Bucket(448, 576)  # 3:4 -> 0.78


def test_the_crop_covers_the_bucket_and_is_centred(tmp_path: Path) -> None:
    folder = _write_dataset(tmp_path / "d", 6, seed=1)
    scan = read_dataset(folder)
    wide = next(e for e in scan.examples if (e.width, e.height) == (200, 100))
    bucket = assign_bucket(200, 100, make_buckets(64, 16))
    assert bucket == Bucket(80, 48)  # 96x48 is over 64x64 pixels; 96x32 is 3:1
    placement = place(200, 100, bucket)
    pixels, crop = load_pixels_cropped(wide, bucket.width, bucket.height)
    assert pixels.shape == (3, 48, 80)
    assert crop == placement.crop_top_left == (0, 8)  # 200x100 -> 96x48, 8 px off the left
    # the red disc stays round: its middle row and column are red over the same length
    red = (pixels[0] > 0.5) & (pixels[1] < -0.5)
    assert abs(int(red[24].sum()) - int(red[:, 40].sum())) <= 2
    placement = place(120, 80, Bucket(80, 48))  # 120x80 -> 80x53: 5 rows off, 2 at the top
    assert placement.crop_top_left == (2, 0)
    assert placement.original_size == (80, 120)


def test_the_bucketed_cache_keeps_aspect_ratios(bucketed: BucketedLatentCache) -> None:
    for i, (width, height) in enumerate(SIZES * 4):
        latent = bucketed.latent_mean(torch.tensor([i]))
        lh, lw = latent.shape[-2:]
        assert abs(np.log(lw / lh) - np.log(width / height)) < 0.35, (width, height, lw, lh)
    assert tuple(bucketed.original_size[0].tolist()) == (64, 128)


def test_a_two_to_one_image_has_a_two_to_one_latent(tiny_base: LoadedBase, tmp_path: Path) -> None:
    """At 128 px (16 px steps) the 2:1 images land in 176x80: latents 22x10."""
    scan = read_dataset(_write_dataset(tmp_path / "d", 6, seed=2))
    cache = build_bucketed_cache(
        tiny_base.pipe, scan, cache_dir=tmp_path, resolution=128, model_hash="m"
    )
    for i, (width, height) in enumerate(SIZES):
        lh, lw = cache.latent_mean(torch.tensor([i])).shape[-2:]
        if width == 2 * height:
            assert (lw, lh) == (22, 10)
        assert abs(np.log(lw / lh) - np.log(width / height)) < 0.12, (width, height, lw, lh)


def test_counts_only_leave_the_node(
    bucketed: BucketedLatentCache, tiny_model: TinyModelPaths, mixed_dataset: Path, tmp_path: Path
) -> None:
    counts = bucketed.counts()
    assert sum(counts.values()) == 24
    assert set(counts) == {b.name for b in bucketed.buckets}
    assert counts == {"48x80": 8, "64x64": 4, "80x48": 12}  # 2:1 and 3:2 share 80x48
    info = json.loads(kohya_bucket_info(counts))
    assert sum(b["count"] for b in info["buckets"].values()) == 24
    assert all(set(b) == {"resolution", "count"} for b in info["buckets"].values())

    config = TrainConfig(
        resolution=RESOLUTION, adapter=AdapterSpec(rank=1, alpha=1.0), batch_size=8,
        local_steps=2, device="cpu",
    )  # fmt: skip
    result = train_round(
        config,
        base_model=tiny_model.diffusers_dir,
        dataset=mixed_dataset,
        cache_dir=tmp_path,
        adapter_in=None,
        accountant_state=None,
        ledger=None,
        job_id="buckets",
    )
    assert json.loads(str(result.metrics()["bucket-counts"])) == counts
    square = train_round(
        dataclasses.replace(config, buckets=False),
        base_model=tiny_model.diffusers_dir,
        dataset=mixed_dataset,
        cache_dir=tmp_path,
        adapter_in=None,
        accountant_state=None,
        ledger=None,
        job_id="buckets",
    )
    assert square.metrics()["bucket-counts"] == ""


def test_the_cache_reloads_from_disk(bucketed: BucketedLatentCache) -> None:
    assert bucketed.path is not None and bucketed.path.is_file()
    again = BucketedLatentCache.load(bucketed.path)
    assert again.counts() == bucketed.counts()
    for b in bucketed.buckets:
        assert torch.equal(again.latent_means[b], bucketed.latent_means[b])
    assert torch.equal(again.crop_top_left, bucketed.crop_top_left)


def test_non_private_batches_come_from_one_bucket(bucketed: BucketedLatentCache) -> None:
    batches = batch_sampler(bucketed, 4, torch.Generator().manual_seed(0))
    seen: list[int] = []
    for _ in range(20):
        batch = next(batches)
        assert len(bucketed.bucket_of[batch].unique()) == 1
        seen.extend(batch.tolist())
    assert set(seen) == set(range(24))


@pytest.mark.parametrize("mode", ["hooks", "ew"])
def test_micro_batches_give_each_samples_own_clipped_gradient(
    tiny_base: LoadedBase, bucketed: BucketedLatentCache, mode: str
) -> None:
    """The per-sample gradients kept across bucket micro-batches are the examples' own."""
    spec = AdapterSpec(rank=1, alpha=1.0)
    unet = copy.deepcopy(tiny_base.pipe.unet)
    attach_adapter(unet, spec)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)  # so lora_A's gradient is not zero
    reference = copy.deepcopy(unet)
    params = [p for p in unet.parameters() if p.requires_grad]
    scheduler = training_scheduler(tiny_base.pipe)
    optimizer = torch.optim.SGD(params, lr=0.0)
    dp = DPConfig(noise_multiplier=1.0, max_grad_norm=1.0, grad_sample_mode=mode)  # type: ignore[arg-type]
    unet.train()
    private = make_private(
        unet, optimizer, n_examples=24, batch_size=6, dp=dp, noise_multiplier=1.0, state=None,
        seed=0,
    )  # fmt: skip
    unet.train()
    reference.train()
    indices = torch.tensor([0, 1, 2, 6, 7, 3])
    parts = bucketed.split(indices)
    assert len(parts) >= 3

    def fixed(part: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(int(part[0]))
        latents = bucketed.latent_mean(part)
        noise = torch.randn(latents.shape, generator=g)
        return latents, noise, torch.full((len(part),), 400)

    def run(part: torch.Tensor) -> torch.Tensor:
        latents, noise, t = fixed(part)
        cond = bucketed.conditioning_for(part)
        return denoising_loss(private.module, scheduler, latents, cond, t, noise, PerSampleMSE())

    accumulate_micro_batches([p[i : i + 1] for p in parts for i in range(len(p))], run, params)
    per_sample = [p.grad_sample for p in params]
    order = [int(i) for p in parts for i in p]
    ref_params = [p for p in reference.parameters() if p.requires_grad]
    for row, index in enumerate(order):
        part = torch.tensor([index])
        latents, noise, t = fixed(part)
        loss = denoising_loss(
            reference, scheduler, latents, bucketed.conditioning_for(part), t, noise, PerSampleMSE()
        )
        grads = torch.autograd.grad(loss, ref_params)
        for g, mine in zip(grads, per_sample, strict=True):
            torch.testing.assert_close(mine[row], g, rtol=1e-4, atol=1e-7)
    assert all(len(g) == len(indices) for g in per_sample)
    # one optimizer step consumes them (one clip over all parameters, noise once)
    private.optimizer.step()
    assert private.accountant.history == [(1.0, 1 / 4, 1)]


def test_dp_accounting_is_the_unbucketed_one(
    tiny_base: LoadedBase,
    bucketed: BucketedLatentCache,
    mixed_dataset: Path,
    engine_cache_dir: Path,
) -> None:
    from federated.engine.cache import build_latent_cache

    square = build_latent_cache(
        tiny_base.pipe,
        read_dataset(mixed_dataset),
        cache_dir=engine_cache_dir,
        resolution=RESOLUTION,
        model_hash=tiny_base.fingerprint,
    )
    dp = DPConfig(target_epsilon=8.0, max_grad_norm=0.05)
    config = TrainConfig(
        resolution=RESOLUTION, adapter=AdapterSpec(rank=1, alpha=1.0), batch_size=8,
        local_steps=6, dp=dp, device="cpu", learning_rate=1e-2,
    )  # fmt: skip
    results = []
    for cache in (bucketed, square):
        unet = copy.deepcopy(tiny_base.pipe.unet)
        attach_adapter(unet, config.adapter)
        results.append(
            train_on_cache(
                unet,
                cache,
                noise_scheduler=training_scheduler(tiny_base.pipe),
                config=config,
                seed=3,
                noise_multiplier=1.1,
            )
        )
    with_buckets, without = results
    assert with_buckets.sample_rate == without.sample_rate == 1 / 3
    assert with_buckets.steps == without.steps == 6
    assert with_buckets.accountant is not None and without.accountant is not None
    assert with_buckets.accountant.history == without.accountant.history
    assert with_buckets.accountant.epsilon(1e-5) == without.accountant.epsilon(1e-5)


def _fixed_loss(unet: torch.nn.Module, cache: BucketedLatentCache, base: LoadedBase) -> float:
    scheduler = training_scheduler(base.pipe)
    g = torch.Generator().manual_seed(123)
    total = 0.0
    unet.eval()
    with torch.no_grad():
        for part in cache.split(torch.arange(len(cache))):
            for _ in range(4):
                latents = cache.latent_mean(part)
                noise = torch.randn(latents.shape, generator=g)
                t = torch.randint(0, 1000, (len(part),), generator=g)
                loss = denoising_loss(
                    unet, scheduler, latents, cache.conditioning_for(part), t, noise, PerSampleMSE()
                )
                total += float(loss) * len(part)
    return total / (4 * len(cache))


@pytest.mark.parametrize("dp", [None, DPConfig(noise_multiplier=0.5, max_grad_norm=0.05)])
def test_bucketed_training_lowers_the_loss(
    tiny_base: LoadedBase, bucketed: BucketedLatentCache, dp: DPConfig | None
) -> None:
    config = TrainConfig(
        resolution=RESOLUTION, adapter=AdapterSpec(rank=1, alpha=1.0), batch_size=8,
        local_steps=30, device="cpu", learning_rate=1e-1, dp=dp,
    )  # fmt: skip
    unet = copy.deepcopy(tiny_base.pipe.unet)
    attach_adapter(unet, config.adapter)
    before = _fixed_loss(unet, bucketed, tiny_base)
    train_on_cache(
        unet,
        bucketed,
        noise_scheduler=training_scheduler(tiny_base.pipe),
        config=config,
        seed=0,
        noise_multiplier=dp.noise_multiplier if dp else None,
    )
    after = _fixed_loss(unet, bucketed, tiny_base)
    assert after < 0.97 * before, (before, after)


def test_sdxl_buckets_keep_aspect_ratios_and_carry_size_and_crop_in_the_time_ids(
    tmp_path: Path,
) -> None:
    """The SDXL family: each image's time ids are its original size, its crop, its bucket."""
    from federated.engine.trainer import load_base
    from sdcore.tiny_xl import save_tiny_sdxl_model

    paths = save_tiny_sdxl_model(tmp_path / "xl", seed=0)
    base = load_base(
        paths.diffusers_dir, device=torch.device("cpu"), dtype=torch.float32, cache_dir=tmp_path
    )
    scan = read_dataset(_write_dataset(tmp_path / "d", 12, seed=1))
    cache = build_bucketed_cache(
        base.pipe, scan, cache_dir=tmp_path, resolution=64, model_hash="x", family="sdxl"
    )
    assert cache.counts() == {"48x80": 4, "64x64": 2, "80x48": 6}
    # 128x64 -> 80x48: resized to 96x48, 8 px cut on the left
    assert cache.conditioning["time_ids"][0].tolist() == [64, 128, 0, 8, 48, 80]
    assert tuple(cache.latent_mean(torch.tensor([0])).shape[-2:]) == (6, 10)
    spec = AdapterSpec(rank=1, alpha=1.0)
    for dp in (None, DPConfig(noise_multiplier=1.0, max_grad_norm=0.05)):
        unet = copy.deepcopy(base.pipe.unet)
        attach_adapter(unet, spec)
        config = TrainConfig(
            resolution=64, adapter=spec, batch_size=6, local_steps=2, device="cpu", dp=dp
        )
        result = train_on_cache(
            unet,
            cache,
            noise_scheduler=training_scheduler(base.pipe),
            config=config,
            seed=0,
            noise_multiplier=1.0 if dp else None,
        )
        assert result.steps == 2 and all(np.isfinite(result.losses))
