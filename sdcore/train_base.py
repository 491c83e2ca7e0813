"""Train the small "atelier-shapes" SD 1.x base model on synthetic shapes, on CPU.

    python -m sdcore.train_base --out sdcore/models/atelier-shapes

The model has the tiny SD 1.x architecture of :mod:`sdcore.tiny` (UNet with cross-attention,
KL autoencoder with scale factor 8, CLIP text encoder, offline tokenizer, Euler scheduler) and
draws 64x64 images of the scenes of :mod:`sdcore.shapes` ("a blue square on a white
background"). Training, all seeded:

1. the VAE alone, as an autoencoder (MSE plus a tiny KL term) on the synthetic images; then its
   latents are rescaled exactly (quant convs) so that SD's ``scaling_factor`` 0.18215 gives
   them unit variance, and the VAE is frozen;
2. the images are encoded once (cached latents);
3. the UNet and the text encoder together, epsilon prediction on SD's noise schedule with
   min-SNR weighting, 10% empty captions (so classifier-free guidance works), an EMA of the
   UNet weights (saved).

The output is a ``save_pretrained`` diffusers folder that :func:`sdcore.loading.load_pipeline`
loads, plus ``training.json`` (arguments, losses, times) and the model card ``README.md``.
Same arguments and thread count give the same run on the same machine.

Torch runs on one thread by default (``--threads``): the ops are small, and on a busy 2-core
machine two OpenMP threads made each step about ten times slower (measured here: a VAE step
of batch 8 took 1.6 to 2.1 s with two threads and 0.16 s with one). The shipped run took 16
minutes on that busy machine; its figures are in ``training.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sdcore.shapes import generate_scenes
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
) -> list[float]:
    gen = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    vae.train()
    losses: list[float] = []
    for step in range(steps):
        idx = torch.randint(len(images), (batch,), generator=gen)
        x = images[idx]
        if crop < x.shape[-1]:
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
        if step % 50 == 0 or step == steps - 1:
            _log(f"vae step {step}/{steps} rec {np.mean(losses[-100:]):.4f} kl {float(kl):.3f}")
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
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=gen)
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
    unet_steps: int = 1800,
    unet_batch: int = 16,
    unet_lr: float = 2e-3,
    ema_decay: float = 0.995,
    token_init_std: float | None = None,
    text_lr_scale: float = 1.0,
    threads: int = 1,
) -> dict[str, object]:
    """Train the model and save it to ``out_dir``; return the run's summary (also saved)."""
    args = {k: v for k, v in locals().items() if k != "out_dir"}
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    started = time.perf_counter()
    pipe = build_tiny_pipeline(seed=seed)
    images, captions = _images_tensor(n_images, seed, resolution)
    _log(f"{n_images} scenes ready")

    t0 = time.perf_counter()
    vae_losses = _train_vae(
        pipe.vae, images, steps=vae_steps, batch=vae_batch, lr=vae_lr, seed=seed, crop=vae_crop
    )
    raw_std = _rescale_latents(pipe.vae, images)
    pipe.vae.requires_grad_(False)
    latents = _encode(pipe.vae, images)
    vae_seconds = time.perf_counter() - t0
    _log(f"latents {tuple(latents.shape)} std {float(latents.std()):.3f} (raw {raw_std:.3f})")

    t0 = time.perf_counter()
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
    )
    unet_seconds = time.perf_counter() - t0
    pipe.unet.load_state_dict(ema.state_dict())
    pipe.unet.eval()

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(out_dir), safe_serialization=True)
    summary: dict[str, object] = {
        "args": args,
        "torch": torch.__version__,
        "vae_final_mse": float(np.mean(vae_losses[-100:])),
        "unet_final_loss": float(np.mean(unet_losses[-200:])),
        "vae_seconds": round(vae_seconds, 1),
        "unet_seconds": round(unet_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
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
    (out_dir / "README.md").write_text(_model_card(summary), encoding="utf-8")
    _log(f"saved to {out_dir} in {summary['total_seconds']} s")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-images", type=int, default=2048)
    parser.add_argument("--vae-steps", type=int, default=1200)
    parser.add_argument("--unet-steps", type=int, default=1800)
    parser.add_argument("--unet-batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    a = parser.parse_args(argv)
    train_base(
        a.out,
        seed=a.seed,
        n_images=a.n_images,
        vae_steps=a.vae_steps,
        unet_steps=a.unet_steps,
        unet_batch=a.unet_batch,
        threads=a.threads,
    )


if __name__ == "__main__":
    main()
