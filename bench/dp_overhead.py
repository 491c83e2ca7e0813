"""DP overhead: DP-SGD step time over non-private step time, same batch and model; peak memory.

Each mode runs in its own process (so peak memory and opacus' first-step warm-up belong to
that mode alone): ``none`` (non-private), then opacus ``ew``, ``hooks``, ``functorch`` and
``ghost`` (ghost clipping). All train the trainer's default adapter (FFA-LoRA, rank 4, on
to_q/to_k/to_v/to_out.0) on the cached latents, batch ``--batch`` (DP: Poisson batches of that
expected size), ``--steps`` timed steps after ``--warmup``. Memory: peak RSS of the process
(``ru_maxrss``) and its growth during training over the RSS after the model and cache are
loaded; on CUDA, ``torch.cuda.max_memory_allocated``.

    python bench/dp_overhead.py                    # tiny model, CPU, 64x64, batch 16
    python bench/dp_overhead.py --family sdxl      # the tiny SDXL model (added conditioning)
    python bench/dp_overhead.py --device cuda --full-size --resolution 512 --batch 4
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import psutil
import torch
from _common import build_pipeline, dump, machine, median, prepare_data, sync

from federated.engine.adapter import AdapterSpec, attach_adapter
from federated.engine.dp import AccountantState, DPConfig
from federated.engine.trainer import TrainConfig, train_on_cache, training_scheduler

MODES = ("none", "ew", "hooks", "functorch", "ghost")


def worker(args: argparse.Namespace) -> dict[str, object]:
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    pipe = build_pipeline(
        full_size=args.full_size, device=args.device, dtype=dtype, family=args.family
    )
    data = prepare_data(
        pipe,
        work=Path(args.work),
        n_images=args.images,
        resolution=args.resolution,
        device=args.device,
        family=args.family,
    )
    spec = AdapterSpec(rank=args.rank, alpha=float(args.rank), mode=args.adapter_mode)
    unet = copy.deepcopy(pipe.unet)
    attach_adapter(unet, spec)
    dp = None
    if args.worker != "none":
        dp = DPConfig(noise_multiplier=1.0, max_grad_norm=0.05, grad_sample_mode=args.worker)
    config = TrainConfig(
        resolution=args.resolution,
        adapter=spec,
        learning_rate=1e-3,
        batch_size=args.batch,
        local_steps=args.warmup + args.steps,
        device=args.device,
        dp=dp,
        mixed_precision="bf16" if args.device.startswith("cuda") else "no",
    )
    rss_before = psutil.Process().memory_info().rss
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    stamps = [time.perf_counter()]

    def on_step(step: int, loss: float) -> None:
        sync(args.device)
        stamps.append(time.perf_counter())

    loop = train_on_cache(
        unet,
        data.cache,
        noise_scheduler=training_scheduler(pipe),
        config=config,
        seed=0,
        noise_multiplier=1.0 if dp else None,
        accountant_state=AccountantState("rdp") if dp else None,
        on_step=on_step,
    )
    times = list(np.diff(stamps))
    return {
        "mode": args.worker,
        "step_seconds_median": median(times[args.warmup :]),
        "first_step_seconds": times[0],
        "steps": loop.steps,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_load_mb": rss_before / 2**20,
        "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20
        if args.device.startswith("cuda")
        else None,
    }


def paired(args: argparse.Namespace) -> dict[str, object]:
    """Alternate blocks of non-private and ``args.pair`` steps in one process.

    On a shared machine the load drifts by 2x within a minute; alternating short blocks makes
    both sides see the same load, so the ratio of their medians is what to trust.
    """
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    pipe = build_pipeline(
        full_size=args.full_size, device=args.device, dtype=dtype, family=args.family
    )
    data = prepare_data(
        pipe,
        work=Path(args.work),
        n_images=args.images,
        resolution=args.resolution,
        device=args.device,
        family=args.family,
    )
    spec = AdapterSpec(rank=args.rank, alpha=float(args.rank), mode=args.adapter_mode)
    scheduler = training_scheduler(pipe)
    block = 6
    times: dict[str, list[float]] = {"none": [], args.pair: []}
    for _ in range(max(1, args.steps // (block - 1))):
        for mode in ("none", args.pair):
            unet = copy.deepcopy(pipe.unet)
            attach_adapter(unet, spec)
            dp = (
                None
                if mode == "none"
                else DPConfig(noise_multiplier=1.0, max_grad_norm=0.05, grad_sample_mode=mode)
            )
            config = TrainConfig(
                resolution=args.resolution,
                adapter=spec,
                learning_rate=1e-3,
                batch_size=args.batch,
                local_steps=block,
                device=args.device,
                dp=dp,
                mixed_precision="bf16" if args.device.startswith("cuda") else "no",
            )
            stamps = [time.perf_counter()]

            def on_step(step: int, loss: float, stamps: list[float] = stamps) -> None:
                sync(args.device)
                stamps.append(time.perf_counter())

            train_on_cache(
                unet,
                data.cache,
                noise_scheduler=scheduler,
                config=config,
                seed=0,
                noise_multiplier=1.0 if dp else None,
                accountant_state=AccountantState("rdp") if dp else None,
                on_step=on_step,
            )
            times[mode].extend(list(np.diff(stamps))[1:])  # drop each block's first step
    return {
        "mode": args.pair,
        "none_step_seconds_median": median(times["none"]),
        "dp_step_seconds_median": median(times[args.pair]),
        "ratio": median(times[args.pair]) / median(times["none"]),
        "steps_each": len(times["none"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full-size", action="store_true")
    parser.add_argument("--family", choices=("sd1", "sdxl"), default="sd1")
    parser.add_argument("--resolution", type=int, default=None)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--adapter-mode", default="ffa", choices=("ffa", "lora"))
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--pair", choices=MODES[1:], help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.resolution = args.resolution or (512 if args.full_size else 64)
    if args.worker:
        print("RESULT " + json.dumps(worker(args)))
        return
    if args.pair:
        print("RESULT " + json.dumps(paired(args)))
        return

    modes = [m for m in args.modes.split(",") if m]
    if "none" not in modes:
        modes.insert(0, "none")
    runs: dict[str, list[dict[str, object]]] = {m: [] for m in modes}
    passthrough = [
        f"--device={args.device}",
        f"--family={args.family}",
        f"--resolution={args.resolution}",
        f"--batch={args.batch}",
        f"--rank={args.rank}",
        f"--adapter-mode={args.adapter_mode}",
        f"--images={args.images}",
        f"--steps={args.steps}",
        f"--warmup={args.warmup}",
        *(["--full-size"] if args.full_size else []),
        *([f"--threads={args.threads}"] if args.threads else []),
    ]
    with TemporaryDirectory(prefix="atelier-dp-bench-") as work:
        for _ in range(args.repeats):
            for mode in modes:
                cmd = [sys.executable, __file__, *passthrough, "--worker", mode, "--work", work]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                line = next(x for x in out.splitlines() if x.startswith("RESULT "))
                runs[mode].append(json.loads(line.removeprefix("RESULT ")))
        pairs: dict[str, dict[str, object]] = {}
        for mode in modes[1:]:
            cmd = [sys.executable, __file__, *passthrough, "--pair", mode, "--work", work]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            line = next(x for x in out.splitlines() if x.startswith("RESULT "))
            pairs[mode] = json.loads(line.removeprefix("RESULT "))
    base = median([float(r["step_seconds_median"]) for r in runs["none"]])  # type: ignore[arg-type]
    summary = {}
    for mode, results in runs.items():
        step = median([float(r["step_seconds_median"]) for r in results])  # type: ignore[arg-type]
        summary[mode] = {
            "step_ms": 1000 * step,
            "ratio_over_non_private": step / base,
            "peak_rss_mb": max(float(r["peak_rss_mb"]) for r in results),  # type: ignore[arg-type]
            "training_rss_growth_mb": max(
                float(r["peak_rss_mb"]) - float(r["rss_after_load_mb"])
                for r in results  # type: ignore[arg-type]
            ),
            "first_step_ms": 1000 * median([float(r["first_step_seconds"]) for r in results]),  # type: ignore[arg-type]
            "cuda_peak_mb": results[0]["cuda_peak_mb"],
            "paired_ratio": pairs[mode]["ratio"] if mode in pairs else 1.0,
        }
    result = {
        "benchmark": "dp_overhead",
        "machine": machine(),
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "worker", "work")},
        "modes": summary,
        "runs": runs,
        "pairs": pairs,
        "target_ratio": 1.5,
    }
    dump(result, args.out)
    for mode, row in summary.items():
        print(
            f"RATIO {mode}: paired {row['paired_ratio']:.2f}x, separate runs "
            f"{row['ratio_over_non_private']:.2f}x, step {row['step_ms']:.1f} ms, "
            f"peak RSS {row['peak_rss_mb']:.0f} MB (target DP <= 1.5x)"
        )


if __name__ == "__main__":
    main()
