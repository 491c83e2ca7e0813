"""Train the small "atelier-shapes" SD 1.x base model on synthetic shapes, on CPU.

The model has the tiny SD 1.x architecture of :mod:`sdcore.tiny` (UNet with cross-attention,
KL autoencoder with scale factor 8, CLIP text encoder, offline tokenizer, Euler scheduler) and
draws 64x64 images of the scenes of :mod:`sdcore.shapes` ("a blue square on a white
background"). One run does, all seeded:

1. the VAE alone, as an autoencoder (MSE plus a tiny KL term) on crops of the synthetic images,
   then (``--vae-full-steps``) on whole images; its latents are rescaled exactly (quant convs)
   so that SD's ``scaling_factor`` 0.18215 gives them unit variance, and it is frozen;
2. optionally (``--decoder-steps``) the VAE decoder alone on whole images half of which have a
   figure of a random colour, encoder frozen: latents unchanged, any colour decodable;
3. the images are encoded once (cached latents);
4. the UNet and the text encoder together, epsilon prediction on SD's noise schedule with
   min-SNR weighting, optional offset noise and a bias towards noisy timesteps, 10% empty
   captions (so classifier-free guidance works), an EMA of the UNet weights (saved).

``--init-from DIR`` continues from a saved run (a later stage; steps set to 0 are skipped). The
shipped model is three stages (see its README.md, which lists the commands)::

    python -m sdcore.train_base --out stage1
    python -m sdcore.train_base --init-from stage1 --out stage2 --vae-steps 0 \
        --unet-steps 500 --offset-noise 0.3 --high-t-fraction 0.5 --unet-lr 1e-3 --ema-decay 0.98
    python -m sdcore.train_base --init-from stage2 --out sdcore/models/atelier-shapes \
        --vae-steps 0 --unet-steps 0 --decoder-steps 200 --decoder-lr 1e-3

The output is a ``save_pretrained`` diffusers folder that :func:`sdcore.loading.load_pipeline`
loads, plus ``training.json`` (arguments, losses, wall and CPU times). Same arguments and thread
count give the same run on the same machine.

Torch runs on one thread by default (``--threads``): the ops are small, and on a busy 2-core
machine two OpenMP threads made each step about ten times slower (measured here: a VAE step
of batch 8 took 1.6 to 2.1 s with two threads and 0.16 s with one). ``cpu_seconds`` in
``training.json`` is the process's CPU time: what the run costs on one idle core, whatever else
the machine is doing.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import ImageDraw

from sdcore.loading import load_pipeline
from sdcore.shapes import draw_shape, generate_scenes, render_scene, sample_scene
from sdcore.tiny import build_tiny_pipeline

__all__ = ["main", "train_base"]

SD_SCALING_FACTOR = 0.18215


def _images_tensor(n: int, seed: int, resolution: int) -> tuple[torch.Tensor, list[str]]:
    scenes = generate_scenes(n, seed=seed, resolution=resolution)
    pixels = np.stack([np.asarray(image, dtype=np.uint8) for image, _ in scenes])
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return images, [scene.caption for _, scene in scenes]


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _train_vae(
    vae: torch.nn.Module,
    images: torch.Tensor,
    *,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
    crop: int,
    full_steps: int,
    full_batch: int,
) -> list[float]:
    gen = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    total = steps + full_steps
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.1)
    vae.train()
    losses: list[float] = []
    for step in range(total):
        full = step >= steps
        idx = torch.randint(len(images), (full_batch if full else batch,), generator=gen)
        x = images[idx]
        # The last steps see whole images: the mid-block attention of the VAE works on the
        # whole latent, and trained on crops only it reconstructed whole images with 2.5x the
        # error (MSE 0.13 against 0.05 on crops, measured on the first shipped model).
        if crop < x.shape[-1] and not full:
            # The VAE is convolutional: training on 8-aligned crops costs a quarter of the
            # compute at half the side, and it still encodes whole 64x64 images.
            oy, ox = (
                8 * torch.randint(0, (x.shape[-1] - crop) // 8 + 1, (2,), generator=gen)
            ).tolist()
            x = x[:, :, oy : oy + crop, ox : ox + crop]
        posterior = vae.encode(x).latent_dist  # type: ignore[operator]  # AutoencoderKL
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)
        recon = vae.decode(z).sample  # type: ignore[operator]  # AutoencoderKL
        rec = F.mse_loss(recon, x)
        kl = posterior.kl().mean() / z[0].numel()
        loss = rec + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(rec.detach()))
        if step % 50 == 0 or step == total - 1:
            _log(f"vae step {step}/{total} rec {np.mean(losses[-100:]):.4f} kl {float(kl):.3f}")
    vae.eval()
    return losses


@torch.no_grad()
def _rescale_latents(vae: torch.nn.Module, images: torch.Tensor) -> float:
    """Rescale the latent space exactly so that ``latents * 0.18215`` has unit variance."""
    # vae is an AutoencoderKL: torch types a Module's attributes as Tensor | Module.
    encode = vae.encode
    means = torch.cat(
        [encode(images[i : i + 256]).latent_dist.mean for i in range(0, len(images), 256)]  # type: ignore[operator]
    )
    std = float(means.std())
    c = 1.0 / (SD_SCALING_FACTOR * std)
    quant, post = vae.quant_conv, vae.post_quant_conv
    if not isinstance(quant, torch.nn.Conv2d) or not isinstance(post, torch.nn.Conv2d):
        raise TypeError("the VAE has no quant_conv and post_quant_conv to rescale")
    if quant.bias is None:
        raise TypeError("the VAE's quant_conv has no bias to shift")
    ch = quant.out_channels // 2
    quant.weight[:ch] *= c
    quant.bias[:ch] *= c
    quant.bias[ch:] += 2.0 * math.log(c)  # log-variance
    post.weight /= c
    return std


def _colour_images(n: int, seed: int, resolution: int) -> torch.Tensor:
    """Scenes of the base grammar, every other one with a figure of a uniformly random RGB
    colour: the VAE must reproduce any colour (as SD's does), while the UNet and the text
    encoder only ever see the base palette."""
    images = []
    for index in range(n):
        rng = np.random.default_rng([seed, index, 0xC010])
        scene = sample_scene(rng)
        image = render_scene(scene, resolution)
        if index % 2:
            fill = tuple(int(c) for c in rng.integers(0, 256, size=3))
            draw_shape(
                ImageDraw.Draw(image),
                scene.shape,
                scene.cx * resolution,
                scene.cy * resolution,
                scene.radius * resolution,
                fill,  # type: ignore[arg-type]  # 3 items
            )
        images.append(np.asarray(image, dtype=np.uint8))
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    return pixels / 127.5 - 1.0


def _train_decoder(
    vae: torch.nn.Module, images: torch.Tensor, *, steps: int, batch: int, lr: float, seed: int
) -> list[float]:
    """Train the VAE decoder alone, on whole images, with the encoder frozen.

    The latents of every image stay exactly what they were (the UNet trained on them stays
    valid); only what the decoder draws from them changes. The first VAE, trained on the six
    base colours, decoded purple as cyan: no adapter could have taught the UNet purple.
    """
    gen = torch.Generator().manual_seed(seed + 4)
    with torch.no_grad():
        encode = vae.encode  # an AutoencoderKL's method; torch types Module attributes as Tensor
        posteriors = [
            encode(images[i : i + 128]).latent_dist  # type: ignore[operator]
            for i in range(0, len(images), 128)
        ]
        means = torch.cat([p.mean for p in posteriors])
        stds = torch.cat([p.std for p in posteriors])
    decoder_params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())  # type: ignore[union-attr]
    vae.requires_grad_(False)
    for param in decoder_params:
        param.requires_grad_(True)
    opt = torch.optim.AdamW(decoder_params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    vae.train()
    losses: list[float] = []
    for step in range(steps):
        idx = torch.randint(len(images), (batch,), generator=gen)
        z = means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=gen)
        recon = vae.decode(z).sample  # type: ignore[operator]  # AutoencoderKL
        loss = F.mse_loss(recon, images[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(decoder_params, 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if step % 25 == 0 or step == steps - 1:
            _log(f"decoder step {step}/{steps} rec {np.mean(losses[-50:]):.4f}")
    vae.eval()
    vae.requires_grad_(False)
    return losses


@torch.no_grad()
def _encode(vae: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    parts = [vae.encode(images[i : i + 256]).latent_dist.mean for i in range(0, len(images), 256)]  # type: ignore[operator]
    return torch.cat(parts) * SD_SCALING_FACTOR


def _train_unet(
    pipe: object,
    latents: torch.Tensor,
    captions: list[str],
    *,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
    ema_decay: float,
    token_init_std: float | None,
    text_lr_scale: float,
    offset_noise: float,
    high_t_fraction: float,
) -> tuple[list[float], torch.nn.Module]:
    unet, text_encoder, tokenizer, scheduler = (
        pipe.unet,  # type: ignore[attr-defined]
        pipe.text_encoder,  # type: ignore[attr-defined]
        pipe.tokenizer,  # type: ignore[attr-defined]
        pipe.scheduler,  # type: ignore[attr-defined]
    )
    gen = torch.Generator().manual_seed(seed + 2)
    ids = tokenizer(
        captions + [""],
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    empty = ids[-1]
    ids = ids[:-1]
    # Only the tokens up to the longest caption matter with a causal encoder; keep 77 anyway
    # (SD's shape), it is cheap at this width.
    alphas = scheduler.alphas_cumprod.float()
    snr = alphas / (1 - alphas)
    # Options tried once (token embeddings re-initialised with std 0.3, text encoder at 5x the
    # learning rate): with the shipped steps they read the prompted colour less often (37%
    # against 52% of images), so both are off by default.
    if token_init_std is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 3)
            text_encoder.get_input_embeddings().weight.data.normal_(0.0, token_init_std)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(
        [
            {"params": list(unet.parameters()), "lr": lr},
            {"params": list(text_encoder.parameters()), "lr": lr * text_lr_scale},
        ],
        weight_decay=1e-2,
    )
    warmup = max(1, steps // 50)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1.0, (s + 1) / warmup)
            * (0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))) * 0.9 + 0.1)
        ),
    )
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    unet.train()
    text_encoder.train()
    losses: list[float] = []
    for step in range(steps):
        idx = torch.randint(len(latents), (batch,), generator=gen)
        x0 = latents[idx]
        tok = ids[idx].clone()
        drop = torch.rand(batch, generator=gen) < 0.1
        tok[drop] = empty
        cond = text_encoder(tok)[0]
        noise = torch.randn(x0.shape, generator=gen)
        if offset_noise:
            # Offset noise: a random constant per image and channel. The latent is only 8x8,
            # so at SD's last timesteps its mean still carries the image's colour; without
            # this the first model read the colour from the seed's noise (seed 1 drew red and
            # seed 3 yellow whatever the prompt said).
            noise = noise + offset_noise * torch.randn(
                (x0.shape[0], x0.shape[1], 1, 1), generator=gen
            )
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=gen)
        if high_t_fraction:
            # Part of each batch from the noisier half of the schedule, where the figure's
            # colour and place are decided (the second stage's aim).
            high = torch.rand(batch, generator=gen) < high_t_fraction
            half = scheduler.config.num_train_timesteps // 2
            t = torch.where(high, half + t // 2, t)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        pred = unet(xt, t, encoder_hidden_states=cond).sample
        weight = torch.clamp(snr[t], max=5.0) / snr[t]
        per = F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))
        loss = (per * weight).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), unet.parameters(), strict=True):
                pe.lerp_(p, 1 - decay)
        losses.append(float(per.detach().mean()))
        if step % 50 == 0 or step == steps - 1:
            _log(f"unet step {step}/{steps} loss {np.mean(losses[-200:]):.4f}")
    text_encoder.eval()
    return losses, ema


def _model_card(summary: dict[str, object]) -> str:
    a = summary["args"]
    assert isinstance(a, dict)
    return f"""---
license: cc0-1.0
library_name: diffusers
pipeline_tag: text-to-image
tags: [stable-diffusion, sd-1.x, synthetic, atelier]
---

# atelier-shapes: a small Stable Diffusion 1.x base trained on synthetic shapes

A 64x64 text-to-image model with the SD 1.x architecture (UNet2DConditionModel with
cross-attention, AutoencoderKL with scale factor 8 and scaling factor 0.18215, CLIP text
encoder, Euler scheduler) at the tiny widths of `sdcore/tiny.py`, trained from scratch on CPU
by `sdcore/train_base.py`. It exists so that the demo and the tests have a base model that
draws something measurable; it is not an artistic model.

## Use

```python
from sdcore.loading import load_pipeline
from sdcore.shapes import SHAPES_MODEL_DIR
pipe = load_pipeline(SHAPES_MODEL_DIR)
image = pipe("a red circle on a white background", height=64, width=64,
             num_inference_steps=20, guidance_scale=4.0).images[0]
```

Native resolution 64x64; 20 Euler steps, guidance 3 to 5.
Prompts it was trained on: `a [small|large] <colour> <shape> [on the left|on the right|at the
top|at the bottom] on a <background> background`, colours red, green, blue, yellow, white,
black; shapes circle, square, triangle; backgrounds white, black, grey. Purple is left out on
purpose (a concept the base does not know, for LoRA training).

## Data

{a["n_images"]} scenes from `sdcore.shapes.generate_scenes(seed={a["seed"]})`: one flat-coloured
shape, two sizes, five positions with jitter, colour jitter, plain background; captions name the
colour, shape and background, half of them the size, half the position.

## Training (seed {a["seed"]}, {a["threads"]} CPU threads, torch {summary["torch"]})

1. VAE: {a["vae_steps"]} steps, batch {a["vae_batch"]} of {a["vae_crop"]}x{a["vae_crop"]} crops,
   AdamW lr {a["vae_lr"]} one-cycle, MSE + 1e-4 KL; final reconstruction MSE (pixels in [-1, 1])
   {summary["vae_final_mse"]:.4f}. Then latents rescaled exactly to unit variance at scaling
   factor 0.18215, VAE frozen, images encoded once. {summary["vae_seconds"]} s.
2. UNet and text encoder together: {a["unet_steps"]} steps, batch {a["unet_batch"]}, AdamW lr
   {a["unet_lr"]} (warm-up, cosine), epsilon prediction, min-SNR-5 weighting, 10% empty
   captions, EMA {a["ema_decay"]} (the EMA weights are saved); final loss
   {summary["unet_final_loss"]:.4f}. {summary["unet_seconds"]} s.

Total {summary["total_seconds"]} s wall clock. Loss curves and every argument: `training.json`.

## Retrain

```
python -m sdcore.train_base --out sdcore/models/atelier-shapes
```

with the arguments recorded in `training.json` (the command's defaults are those of the shipped
run). Same arguments and thread count give the same weights on the same machine.

## Measured

How often the drawn figure has the prompted colour and shape is measured by the fixed detector
`sdcore.concept` (see `tests/sdcore/test_shapes_model.py`).
"""


def train_base(
    out_dir: Path,
    *,
    seed: int = 0,
    n_images: int = 2048,
    resolution: int = 64,
    vae_steps: int = 1200,
    vae_batch: int = 16,
    vae_lr: float = 2e-3,
    vae_crop: int = 32,
    vae_full_steps: int = 0,
    vae_full_batch: int = 8,
    unet_steps: int = 1800,
    unet_batch: int = 16,
    unet_lr: float = 2e-3,
    ema_decay: float = 0.995,
    token_init_std: float | None = None,
    text_lr_scale: float = 1.0,
    offset_noise: float = 0.0,
    high_t_fraction: float = 0.0,
    decoder_steps: int = 0,
    decoder_batch: int = 8,
    decoder_lr: float = 5e-4,
    decoder_images: int = 1024,
    init_from: Path | None = None,
    threads: int = 1,
) -> dict[str, object]:
    """Train the model and save it to ``out_dir``; return the run's summary (also saved)."""
    args = {k: v for k, v in locals().items() if k != "out_dir"}
    args["init_from"] = str(init_from) if init_from is not None else None
    if init_from is None and (vae_steps + vae_full_steps == 0 or unet_steps == 0):
        raise ValueError("a run from random weights needs VAE and UNet steps (or --init-from)")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    started = time.perf_counter()
    cpu_started = time.process_time()
    if init_from is None:
        pipe = build_tiny_pipeline(seed=seed)
    else:
        # A later stage: continue from a saved run (its training.json is kept alongside).
        pipe = load_pipeline(Path(init_from))
        pipe.unet.train()
    images, captions = _images_tensor(n_images, seed, resolution)
    _log(f"{n_images} scenes ready")

    t0 = time.perf_counter()
    vae_losses = (
        []
        if vae_steps + vae_full_steps == 0
        else _train_vae(
            pipe.vae,
            images,
            steps=vae_steps,
            batch=vae_batch,
            lr=vae_lr,
            seed=seed,
            crop=vae_crop,
            full_steps=vae_full_steps,
            full_batch=vae_full_batch,
        )
    )
    raw_std = _rescale_latents(pipe.vae, images) if vae_losses else float("nan")
    pipe.vae.requires_grad_(False)
    decoder_losses: list[float] = []
    if decoder_steps:
        decoder_losses = _train_decoder(
            pipe.vae,
            _colour_images(decoder_images, seed, resolution),
            steps=decoder_steps,
            batch=decoder_batch,
            lr=decoder_lr,
            seed=seed,
        )
    vae_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    unet_losses: list[float] = []
    if unet_steps:
        latents = _encode(pipe.vae, images)
        _log(f"latents {tuple(latents.shape)} std {float(latents.std()):.3f} (raw {raw_std:.3f})")
        unet_losses, ema = _train_unet(
            pipe,
            latents,
            captions,
            steps=unet_steps,
            batch=unet_batch,
            lr=unet_lr,
            seed=seed,
            ema_decay=ema_decay,
            token_init_std=token_init_std,
            text_lr_scale=text_lr_scale,
            offset_noise=offset_noise,
            high_t_fraction=high_t_fraction,
        )
        pipe.unet.load_state_dict(ema.state_dict())
    unet_seconds = time.perf_counter() - t0
    pipe.unet.eval()

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(out_dir), safe_serialization=True)
    summary: dict[str, object] = {
        "args": args,
        "torch": torch.__version__,
        "vae_final_mse": float(np.mean(vae_losses[-100:])) if vae_losses else None,
        "unet_final_loss": float(np.mean(unet_losses[-200:])) if unet_losses else None,
        "decoder_final_mse": float(np.mean(decoder_losses[-50:])) if decoder_losses else None,
        "vae_seconds": round(vae_seconds, 1),
        "unet_seconds": round(unet_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        # CPU time of the process: what the run costs on one idle core, whatever the load.
        "cpu_seconds": round(time.process_time() - cpu_started, 1),
        "load_average_at_end": round(os.getloadavg()[0], 2),
        "vae_loss_curve": [
            round(float(np.mean(vae_losses[i : i + 100])), 5)
            for i in range(0, len(vae_losses), 100)
        ],
        "unet_loss_curve": [
            round(float(np.mean(unet_losses[i : i + 200])), 5)
            for i in range(0, len(unet_losses), 200)
        ],
    }
    (out_dir / "training.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if init_from is None:
        (out_dir / "README.md").write_text(_model_card(summary), encoding="utf-8")
    else:
        previous = Path(init_from) / "training.json"
        if previous.is_file():
            summary["previous_stage"] = json.loads(previous.read_text(encoding="utf-8"))
        (out_dir / "training.json").write_text(
            json.dumps(summary, indent=2) + "\n", encoding="utf-8"
        )
    _log(f"saved to {out_dir} in {summary['total_seconds']} s")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-images", type=int, default=2048)
    parser.add_argument("--vae-steps", type=int, default=1200)
    parser.add_argument("--vae-full-steps", type=int, default=0)
    parser.add_argument("--unet-steps", type=int, default=1800)
    parser.add_argument("--offset-noise", type=float, default=0.0)
    parser.add_argument("--high-t-fraction", type=float, default=0.0)
    parser.add_argument("--decoder-steps", type=int, default=0)
    parser.add_argument("--decoder-lr", type=float, default=5e-4)
    parser.add_argument("--unet-lr", type=float, default=2e-3)
    parser.add_argument("--ema-decay", type=float, default=0.995)
    parser.add_argument("--init-from", type=Path, default=None)
    parser.add_argument("--unet-batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    a = parser.parse_args(argv)
    train_base(
        a.out,
        seed=a.seed,
        n_images=a.n_images,
        vae_steps=a.vae_steps,
        vae_full_steps=a.vae_full_steps,
        unet_steps=a.unet_steps,
        offset_noise=a.offset_noise,
        high_t_fraction=a.high_t_fraction,
        decoder_steps=a.decoder_steps,
        decoder_lr=a.decoder_lr,
        unet_lr=a.unet_lr,
        ema_decay=a.ema_decay,
        init_from=a.init_from,
        unet_batch=a.unet_batch,
        threads=a.threads,
    )


if __name__ == "__main__":
    main()
