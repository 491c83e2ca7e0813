"""Trainer speed: this trainer's steps/s against the plain loop of diffusers' LoRA script.

Reference: the training loop of diffusers' ``examples/text_to_image/train_text_to_image_lora.py``
(every step encodes the batch with the VAE, samples the latent, encodes the captions with the
text encoder, then runs the UNet with LoRA on to_q/to_k/to_v/to_out.0, MSE on the noise,
AdamW, gradient-norm clipping at 1.0). Images are decoded and preprocessed once in advance for
the reference (its data loader's work is not counted: that favours the reference).

This trainer: latents and text embeddings cached once (the cache build is timed apart), then
only the UNet runs (``federated.engine.trainer.train_on_cache``). Same model, LoRA rank and
targets (plain LoRA, A and B trained, as the script does), batch and resolution, same run;
repetitions alternate the two loops.

SDXL (``--family sdxl``): the reference is the loop of diffusers'
``examples/text_to_image/train_text_to_image_lora_sdxl.py`` (VAE encode, both text encoders
every step, the size ids computed per image, the UNet with ``added_cond_kwargs``, MSE, clip,
AdamW); this trainer reads the cached latents, dual embeddings, pooled embeddings and size ids.

    python bench/trainer_speed.py                       # tiny model, CPU, 64x64, batch 8
    python bench/trainer_speed.py --family sdxl         # tiny SDXL model, CPU, 64x64
    python bench/trainer_speed.py --device cuda --full-size --resolution 512 --batch 4
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import torch
import torch.nn.functional as F
from _common import build_pipeline, dump, machine, median, prepare_data, sync

from federated.engine.adapter import AdapterSpec, attach_adapter
from federated.engine.cache import ImageGeometry
from federated.engine.dataset import DatasetScan, load_pixels
from federated.engine.trainer import TrainConfig, train_on_cache, training_scheduler


def reference_inputs(pipe, scan: DatasetScan, resolution: int) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """What the reference script's data loader hands its loop: pixels, token ids (one tensor
    per text encoder), and for SDXL each image's size ids (original size, crop, target)."""

    def tokens(tokenizer) -> torch.Tensor:  # type: ignore[no-untyped-def]
        return tokenizer(
            [e.caption for e in scan.examples],
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids

    sdxl = getattr(pipe, "text_encoder_2", None) is not None
    return {
        "pixels": torch.from_numpy(np.stack([load_pixels(e, resolution) for e in scan.examples])),
        "ids": [tokens(pipe.tokenizer), *([tokens(pipe.tokenizer_2)] if sdxl else [])],
        "time_ids": torch.tensor(
            [ImageGeometry.center_crop(e, resolution).time_ids() for e in scan.examples],
            dtype=torch.float32,
        )
        if sdxl
        else None,
    }


def reference_steps(pipe, inputs: dict[str, object], args: argparse.Namespace) -> list[float]:  # type: ignore[no-untyped-def]
    """The diffusers script's loop body; returns the duration of each step."""
    from peft import LoraConfig

    pixels: torch.Tensor = inputs["pixels"]  # type: ignore[assignment]
    ids: list[torch.Tensor] = inputs["ids"]  # type: ignore[assignment]
    time_ids: torch.Tensor | None = inputs.get("time_ids")  # type: ignore[assignment]

    device = args.device
    unet = copy.deepcopy(pipe.unet)
    unet.requires_grad_(False)
    unet.add_adapter(
        LoraConfig(
            r=args.rank,
            lora_alpha=args.rank,
            init_lora_weights="gaussian",
            target_modules=["to_k", "to_q", "to_v", "to_out.0"],
        )
    )
    params = [p for p in unet.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    scheduler = training_scheduler(pipe)
    generator = torch.Generator().manual_seed(0)
    autocast = (
        torch.autocast(device.split(":")[0], dtype=torch.bfloat16)
        if device.startswith("cuda") or pipe.unet.dtype == torch.bfloat16
        else torch.autocast("cpu", enabled=False)
    )
    unet.train()
    times: list[float] = []
    for _ in range(args.warmup + args.steps):
        sync(device)
        start = time.perf_counter()
        index = torch.randint(0, len(pixels), (args.batch,), generator=generator)
        with torch.no_grad():
            latents = pipe.vae.encode(pixels[index].to(device, pipe.vae.dtype)).latent_dist.sample()
            latents = latents * pipe.vae.config.scaling_factor
            added: dict[str, torch.Tensor] | None = None
            if time_ids is None:  # train_text_to_image_lora.py
                hidden = pipe.text_encoder(ids[0][index].to(device), return_dict=False)[0]
            else:  # train_text_to_image_lora_sdxl.py: encode_prompt, both encoders
                states, pooled = [], None
                for encoder, tokens in ((pipe.text_encoder, ids[0]), (pipe.text_encoder_2, ids[1])):
                    out = encoder(
                        tokens[index].to(device), output_hidden_states=True, return_dict=False
                    )
                    pooled = out[0]
                    states.append(out[-1][-2])
                hidden = torch.cat(states, dim=-1)
                added = {
                    "time_ids": time_ids[index].to(device, hidden.dtype),
                    "text_embeds": pooled,
                }
        noise = torch.randn_like(latents)
        timesteps = torch.randint(
            0, scheduler.config.num_train_timesteps, (args.batch,), device=device
        )
        noisy = scheduler.add_noise(latents, noise, timesteps)
        with autocast:
            pred = unet(noisy, timesteps, hidden, added_cond_kwargs=added, return_dict=False)[0]
        loss = F.mse_loss(pred.float(), noise.float(), reduction="mean")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad()
        sync(device)
        times.append(time.perf_counter() - start)
    return times[args.warmup :]


def cached_steps(pipe, cache, args: argparse.Namespace) -> list[float]:  # type: ignore[no-untyped-def]
    spec = AdapterSpec(rank=args.rank, alpha=float(args.rank), mode="lora")
    unet = copy.deepcopy(pipe.unet)
    attach_adapter(unet, spec)
    config = TrainConfig(
        resolution=args.resolution,
        adapter=spec,
        learning_rate=1e-4,
        batch_size=args.batch,
        local_steps=args.warmup + args.steps,
        device=args.device,
        # bf16 weights train under bf16 autocast (CUDA, or gpu_sd15's CPU --dtype bf16 dry run)
        mixed_precision="bf16" if pipe.unet.dtype == torch.bfloat16 else "no",
    )
    stamps: list[float] = []
    sync(args.device)
    stamps.append(time.perf_counter())

    def on_step(step: int, loss: float) -> None:
        sync(args.device)
        stamps.append(time.perf_counter())

    train_on_cache(
        unet,
        cache,
        noise_scheduler=training_scheduler(pipe),
        config=config,
        seed=0,
        on_step=on_step,
    )
    return list(np.diff(stamps))[args.warmup :]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full-size", action="store_true", help="full-size random weights")
    parser.add_argument("--family", choices=("sd1", "sdxl"), default="sd1")
    parser.add_argument(
        "--resolution", type=int, default=None, help="default 64, or 512 with --full-size"
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    args.resolution = args.resolution or (512 if args.full_size else 64)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    pipe = build_pipeline(
        full_size=args.full_size, device=args.device, dtype=dtype, family=args.family
    )

    with TemporaryDirectory(prefix="atelier-bench-") as tmp:
        data = prepare_data(
            pipe,
            work=Path(tmp),
            n_images=args.images,
            resolution=args.resolution,
            device=args.device,
            family=args.family,
        )
        inputs = reference_inputs(pipe, data.scan, args.resolution)
        ref_rates: list[float] = []
        our_rates: list[float] = []
        for _ in range(args.repeats):
            ref_rates.append(len(t) / sum(t) if (t := reference_steps(pipe, inputs, args)) else 0.0)
            our_rates.append(
                len(t) / sum(t) if (t := cached_steps(pipe, data.cache, args)) else 0.0
            )

    ref = median(ref_rates)
    ours = median(our_rates)
    steps_to_break_even = data.cache_seconds / max(1e-9, 1 / ref - 1 / ours) if ours > ref else None
    result = {
        "benchmark": "trainer_speed",
        "machine": machine(),
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "reference_steps_per_s": ref_rates,
        "cached_steps_per_s": our_rates,
        "ratio_cached_over_reference": ours / ref,
        "cache_build_seconds": data.cache_seconds,
        "cache_images": args.images,
        "steps_to_amortise_cache": steps_to_break_even,
        "ratio_including_cache_for_steps": (args.steps / ref)
        / (data.cache_seconds + args.steps / ours),
        "target_ratio": 1.3,
    }
    dump(result, args.out)
    print(f"RATIO trainer/reference steps/s = {ours / ref:.2f}x (target >= 1.3x)")


if __name__ == "__main__":
    main()
