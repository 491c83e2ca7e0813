"""Aspect-ratio buckets and text-encoder LoRA: the trainer's steps/s with each on and off.

One run, one mixed-aspect dataset (2:1, 1:2, 3:2, 2:3 and square images: a red disc on a
random background), the tiny SD 1.x model at 64 px (bucket step 16 px: 80x48, 48x80 and
64x64 here), batch 8, rank 4, FFA-LoRA (the default adapter). Configurations, alternated
over the repetitions:

- ``square``: every image centre-cropped to 64x64 (``buckets=False``), the reference;
- ``buckets``: the bucketed cache; without DP one bucket per batch, with DP the Poisson batch
  over all images split into per-bucket micro-batches (one forward/backward each);
- ``te``: text-encoder LoRA on (captions encoded every step), with buckets;

each without DP and with DP (opacus, ``auto`` mode, noise multiplier 1.0). Reports the median
step time and steps/s of each against ``square`` of the same DP setting.

    python bench/buckets_te.py [--steps 30 --repeats 3 --threads 1 --out bench/buckets_te.json]
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import dump, machine, median

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from federated.engine.adapter import (
    AdapterSpec,
    TextConditionedUNet,
    attach_adapter,
    caption_input_ids,
    text_encoder_for_training,
)
from federated.engine.buckets import build_bucketed_cache
from federated.engine.cache import build_latent_cache
from federated.engine.dataset import read_dataset
from federated.engine.dp import DPConfig
from federated.engine.trainer import TrainConfig, train_on_cache, training_scheduler
from sdcore.tiny import build_tiny_pipeline

SIZES = [(128, 64), (64, 128), (96, 96), (120, 80), (80, 120), (200, 100)]


def write_dataset(root: Path, n: int) -> Path:
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    for i in range(n):
        width, height = SIZES[i % len(SIZES)]
        image = Image.new("RGB", (width, height), tuple(int(c) for c in rng.integers(0, 120, 3)))
        r = min(width, height) // 3
        ImageDraw.Draw(image).ellipse(
            (width // 2 - r, height // 2 - r, width // 2 + r, height // 2 + r), fill=(230, 20, 20)
        )
        image.save(root / f"{i:03d}.png")
        (root / f"{i:03d}.txt").write_text(f"sks red circle, photo {i % 5}", encoding="utf-8")
    return root


def run(pipe, cache, scan, *, te: bool, dp: bool, args: argparse.Namespace) -> list[float]:
    spec = AdapterSpec(rank=args.rank, alpha=float(args.rank), text_encoder=te)
    unet = copy.deepcopy(pipe.unet)
    attach_adapter(unet, spec)
    text_encoder = text_encoder_for_training(pipe, spec, "sd1")
    ids = caption_input_ids(pipe, [e.caption for e in scan.examples])
    config = TrainConfig(
        resolution=args.resolution,
        adapter=spec,
        learning_rate=1e-3,
        batch_size=args.batch,
        local_steps=args.warmup + args.steps,
        device="cpu",
        mixed_precision="no",
        dp=DPConfig(noise_multiplier=1.0, max_grad_norm=0.05) if dp else None,
    )
    stamps = [time.perf_counter()]
    train_on_cache(
        unet if text_encoder is None else TextConditionedUNet(unet, text_encoder),
        cache,
        noise_scheduler=training_scheduler(pipe),
        config=config,
        seed=0,
        noise_multiplier=1.0 if dp else None,
        on_step=lambda step, loss: stamps.append(time.perf_counter()),
        conditioning_for=(lambda i: {"input_ids": ids[i]}) if te else None,
    )
    return [float(t) for t in np.diff(stamps)][args.warmup :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = build_tiny_pipeline(seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        scan = read_dataset(write_dataset(Path(tmp), args.images))
        common = {
            "cache_dir": Path(tmp) / "cache",
            "resolution": args.resolution,
            "model_hash": "m",
        }
        started = time.perf_counter()
        square = build_latent_cache(pipe, scan, **common)
        square_build = time.perf_counter() - started
        started = time.perf_counter()
        bucketed = build_bucketed_cache(pipe, scan, **common)
        bucket_build = time.perf_counter() - started
        configs = {
            "square": (square, False),
            "buckets": (bucketed, False),
            "te": (bucketed, True),
            "square-te": (square, True),
        }
        times: dict[str, list[float]] = {}
        for _ in range(args.repeats):
            for dp in (False, True):
                for name, (cache, te) in configs.items():
                    key = f"{name}{'-dp' if dp else ''}"
                    times.setdefault(key, []).extend(
                        run(pipe, cache, scan, te=te, dp=dp, args=args)
                    )
    rows = {}
    for key, values in times.items():
        reference = median(times["square-dp" if key.endswith("-dp") else "square"])
        rows[key] = {
            "median_step_s": round(median(values), 5),
            "steps_per_s": round(1 / median(values), 2),
            "ratio_to_square": round(reference / median(values), 3),
        }
    dump(
        {
            "bench": "buckets_te",
            "machine": machine(),
            "args": {k: str(v) for k, v in vars(args).items()},
            "buckets": bucketed.counts(),
            "cache_build_s": {"square": round(square_build, 3), "buckets": round(bucket_build, 3)},
            "results": rows,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
