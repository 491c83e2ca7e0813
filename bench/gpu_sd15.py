"""Full-size SD 1.5 on one CUDA GPU, in at most 8 minutes: LoRA, DP, a 2-node round, generation.

    python bench/gpu_sd15.py                        # on a CUDA machine; appends its results
    python bench/gpu_sd15.py --out-dir "$OUT"       # also writes gpu_sd15.json and gpu_sd15.md
    python bench/gpu_sd15.py --device cpu --tiny    # a dry run of the same code, tiny model
    python bench/gpu_sd15.py --device cpu --tiny --dtype bf16   # ... with bf16 autocast
    python bench/gpu_sd15.py --family sdxl --out-dir "$OUT"     # full-size SDXL, 1024x1024
    python bench/gpu_sd15.py --family sdxl --device cpu --tiny  # ... its dry run (tiny SDXL)

The bf16 CPU dry run (2026-12-07) showed opacus ``ew`` failing in backward under bf16 autocast
(``ExpandedWeights`` linear: BFloat16 != float); ``hooks`` ran. The trainer's default DP mode
is now ``auto`` (``federated.engine.dp.resolve_grad_sample_mode``: ``hooks`` under bf16
autocast, ``ew`` in fp32), and an explicit ``ew`` under autocast is refused before any step;
this script runs ``auto`` (what a job runs) and records the mode it resolved to.

Without a CUDA device (and without ``--device cpu --tiny``) it prints a line starting with
``gpu_sd15: SKIPPED`` and exits 0, having run nothing.

The model is SD 1.5's architecture with random weights (``bench/_common.build_pipeline``:
UNet 320/640/1280/1280 with cross-attention 768, VAE 128/256/512/512, CLIP 768 x 12), in
bf16, built on the GPU (nothing is downloaded). Images: the synthetic dataset at 512x512,
latents and text embeddings cached once (timed). Phases, each timed with
``torch.cuda.synchronize`` and with ``torch.cuda.max_memory_allocated`` reset before it:

1. ``lora``: the trainer's loop (``train_on_cache``, plain LoRA rank 4 so that it matches the
   reference) against the reference: the training loop of diffusers'
   ``train_text_to_image_lora.py`` (``bench/trainer_speed.reference_steps``: VAE and text
   encoder every step), same batch, same run; ratio of steps/s.
2. ``dp``: the trainer's default adapter (FFA-LoRA) without DP, then DP-SGD with each opacus
   mode of ``--dp-modes`` (default ``auto``, the trainer's choice; add ``functorch`` or
   ``ghost`` to compare); a mode that runs out of memory or is refused is recorded as such;
   the fastest that fits is used in phase 3.
3. ``federated``: one FedAvg round of two nodes sharing the GPU, in this process: two
   trainers (each its own UNet copy with the adapter, as two node processes would hold), run
   first one after the other (the reference, and their warm-up), then at the same time in two
   threads (the round), DP with the mode of phase 2, then the engine's
   ``fedavg`` (``federated.engine.flower.aggregate``) of their arrays sent through the
   engine's packed transport (``pack``/``unpack``). No Flower processes: what it measures is
   the GPU's share between two nodes, against the same steps run one node after the other.
4. ``generate``: a diffusers ``StableDiffusionPipeline`` built from the random components,
   512x512, ``--gen-steps`` Euler steps: plain (the reference) and with the trained adapter
   of phase 3 in the UNet.

Time: every phase checks what is left of ``--budget`` (default 400 s) before it starts and is
skipped (recorded) when too little is left; an alarm at ``--budget`` + 40 s stops the phase
running then; results so far are always written. Step counts are small by construction.
Results: appended as a section to ``--results`` (default bench/RESULTS-trainer.md).

``--family sdxl`` runs the same phases on SDXL 1.0 base's architecture (random weights,
``bench/_common.SDXL_UNET_CONFIG``: UNet 320/640/1280 with transformer depths 1/2/10 and
cross-attention 2048, CLIP ViT-L plus OpenCLIP ViT-bigG), at 1024x1024 and batch 2 by
default; the reference of phase 1 is then the loop of ``train_text_to_image_lora_sdxl.py``
(both text encoders and the size ids every step); files ``gpu_sdxl.json``/``gpu_sdxl.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import signal
import sys
import threading
import time
import traceback
from argparse import Namespace
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory
from types import FrameType
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, build_pipeline, machine, median, sync

SKIP_EXIT = 0  # no CUDA device: nothing run, a SKIPPED line printed
DEFAULT_RESULTS = ROOT / "bench" / "RESULTS-trainer.md"


class BudgetExceeded(Exception):
    """The hard time limit fired during a phase."""


class Bench:
    def __init__(self, args: Namespace) -> None:
        self.args = args
        self.cuda = args.device.startswith("cuda")
        self.bf16 = self.cuda or args.dtype == "bf16"
        self.started = time.perf_counter()
        self.results: dict[str, Any] = {
            "benchmark": "gpu_sdxl" if args.family == "sdxl" else "gpu_sd15",
            "machine": machine(),
            "config": {k: v for k, v in vars(args).items() if k not in ("out_dir", "results")},
            "phases": {},
        }

    # --- bookkeeping -------------------------------------------------------------------

    def left(self) -> float:
        return float(self.args.budget) - (time.perf_counter() - self.started)

    def reset_memory(self) -> None:
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_mb(self) -> float | None:
        return torch.cuda.max_memory_allocated() / 2**20 if self.cuda else None

    def phase(self, name: str, need: float, body: Callable[[], dict[str, Any]]) -> None:
        """Run ``body`` unless less than ``need`` seconds are left; record what happened."""
        if self.left() < need:
            self.results["phases"][name] = {
                "status": f"skipped: {self.left():.0f} s of the budget left, needs ~{need:.0f} s"
            }
            print(f"gpu_sd15: {name} skipped (time budget)", flush=True)
            return
        print(f"gpu_sd15: {name} ...", flush=True)
        started = time.perf_counter()
        self.reset_memory()
        try:
            record = {"status": "ok", **body()}
        except BudgetExceeded:
            record = {"status": "stopped: hard time limit"}
        except torch.cuda.OutOfMemoryError as exc:
            record = {"status": f"out of memory: {str(exc).splitlines()[0]}"}
        except Exception as exc:  # one phase failing must not lose the others' numbers
            record = {"status": f"failed: {type(exc).__name__}: {exc}"}
            traceback.print_exc()
        record["seconds"] = round(time.perf_counter() - started, 2)
        record.setdefault("peak_memory_mb", self.peak_mb())
        self.results["phases"][name] = record
        print(f"gpu_sd15: {name}: {json.dumps(record, default=str)}", flush=True)

    # --- the work ----------------------------------------------------------------------

    def timed_loop(
        self, unet: torch.nn.Module, cache: Any, config: Any, scheduler: object
    ) -> list[float]:
        """Step durations of ``train_on_cache`` (warm-up steps dropped)."""
        from federated.engine.dp import AccountantState
        from federated.engine.trainer import train_on_cache

        stamps = [time.perf_counter()]

        def on_step(step: int, loss: float) -> None:
            sync(self.args.device)
            stamps.append(time.perf_counter())

        train_on_cache(
            unet,  # type: ignore[arg-type]
            cache,
            noise_scheduler=scheduler,
            config=config,
            seed=0,
            noise_multiplier=1.0 if config.dp else None,
            accountant_state=AccountantState("rdp") if config.dp else None,
            on_step=on_step,
        )
        return [float(t) for t in np.diff(stamps)][self.args.warmup :]

    def config(self, spec: Any, *, dp_mode: str | None, steps: int) -> Any:
        from federated.engine.dp import DPConfig
        from federated.engine.trainer import TrainConfig

        return TrainConfig(
            resolution=self.args.resolution,
            adapter=spec,
            learning_rate=1e-4,
            batch_size=self.args.batch,
            local_steps=steps,
            device=self.args.device,
            dp=DPConfig(noise_multiplier=1.0, max_grad_norm=0.05, grad_sample_mode=dp_mode)  # type: ignore[arg-type]
            if dp_mode
            else None,
            mixed_precision="bf16" if self.bf16 else "no",
        )

    def run(self) -> None:
        args = self.args
        dtype = torch.bfloat16 if self.bf16 else torch.float32
        state: dict[str, Any] = {}

        def build() -> dict[str, Any]:
            with torch.device(args.device):  # random init on the GPU: seconds, not minutes
                state["pipe"] = build_pipeline(
                    full_size=not args.tiny, device=args.device, dtype=dtype, family=args.family
                )
            unet = state["pipe"].unet
            return {"unet_parameters": sum(p.numel() for p in unet.parameters())}

        self.phase("build", 20, build)
        if "pipe" not in state:
            return
        pipe = state["pipe"]
        with TemporaryDirectory(prefix="gpu-sd15-") as tmp:
            self.phase("data", 20, lambda: self.data(pipe, Path(tmp), state))
            if "caches" not in state:
                return
            self.phase("lora", 45, lambda: self.lora(pipe, state))
            self.phase("dp", 60, lambda: self.dp(pipe, state))
            self.phase("federated", 45, lambda: self.federated(pipe, state))
            self.phase("generate", 20, lambda: self.generate(pipe, state))

    def data(self, pipe: Any, work: Path, state: dict[str, Any]) -> dict[str, Any]:
        from trainer_speed import reference_inputs

        from federated.engine.cache import build_latent_cache
        from federated.engine.dataset import read_dataset
        from federated.engine.synthetic import generate_synthetic_dataset

        args = self.args
        caches, seconds = [], []
        for node in range(2):  # one dataset per node of phase 3; node 0's for phases 1-2
            folder = generate_synthetic_dataset(
                work / f"dataset-{node}",
                n_images=args.images,
                seed=1 + node,
                resolution=args.resolution,
            )
            scan = read_dataset(folder)
            sync(args.device)
            started = time.perf_counter()
            cache = build_latent_cache(
                pipe,
                scan,
                cache_dir=work / f"cache-{node}",
                resolution=args.resolution,
                model_hash="gpu-sd15",
                family=args.family,
            )
            caches.append(cache.to(args.device))
            sync(args.device)
            seconds.append(time.perf_counter() - started)
            if node == 0:  # what the reference script's data loader gives its loop
                state["reference_inputs"] = reference_inputs(pipe, scan, args.resolution)
        state["caches"] = caches
        return {"images_per_node": args.images, "cache_build_seconds": seconds}

    def lora(self, pipe: Any, state: dict[str, Any]) -> dict[str, Any]:
        from trainer_speed import cached_steps, reference_steps

        args = self.args
        loop_args = Namespace(
            device=args.device,
            rank=args.rank,
            batch=args.batch,
            resolution=args.resolution,
            warmup=args.warmup,
            steps=args.steps,
        )
        self.reset_memory()
        ref = reference_steps(pipe, state["reference_inputs"], loop_args)
        ref_peak = self.peak_mb()
        self.reset_memory()
        ours = cached_steps(pipe, state["caches"][0], loop_args)
        ours_peak = self.peak_mb()
        ref_rate, our_rate = 1 / median(ref), 1 / median(ours)
        return {
            "reference_steps_per_s": ref_rate,
            "trainer_steps_per_s": our_rate,
            "ratio_trainer_over_reference": our_rate / ref_rate,
            "reference_peak_memory_mb": ref_peak,
            "peak_memory_mb": ours_peak,
            "batch": args.batch,
            "timed_steps": args.steps,
        }

    def dp(self, pipe: Any, state: dict[str, Any]) -> dict[str, Any]:
        from federated.engine.adapter import AdapterSpec, attach_adapter
        from federated.engine.dp import resolve_grad_sample_mode
        from federated.engine.trainer import training_scheduler

        args = self.args
        spec = AdapterSpec(rank=args.rank, alpha=float(args.rank))  # the default: FFA-LoRA
        modes: dict[str, dict[str, Any]] = {}
        for mode in ["none", *args.dp_modes]:
            if self.left() < 25:
                modes[mode] = {"status": "skipped: time budget"}
                continue
            self.reset_memory()
            unet = copy.deepcopy(pipe.unet)
            attach_adapter(unet, spec)
            config = self.config(
                spec, dp_mode=None if mode == "none" else mode, steps=args.warmup + args.steps
            )
            try:
                times = self.timed_loop(unet, state["caches"][0], config, training_scheduler(pipe))
                modes[mode] = {
                    "status": "ok",
                    "steps_per_s": 1 / median(times),
                    "peak_memory_mb": self.peak_mb(),
                }
            except torch.cuda.OutOfMemoryError:
                modes[mode] = {"status": "out of memory", "peak_memory_mb": self.peak_mb()}
            except BudgetExceeded:
                raise
            except Exception as exc:  # a mode that cannot run here; the others still can
                modes[mode] = {"status": f"failed: {type(exc).__name__}: {exc}"}
                traceback.print_exc()
            finally:
                del unet
        fitted = {
            m: r["steps_per_s"] for m, r in modes.items() if m != "none" and r["status"] == "ok"
        }
        if not fitted:
            return {"modes": modes, "fastest": None}
        fastest = max(fitted, key=lambda m: fitted[m])
        state["dp_mode"] = fastest
        state["dp_steps_per_s"] = fitted[fastest]
        plain = modes["none"].get("steps_per_s")
        return {
            "modes": modes,
            "fastest": fastest,
            "dp_steps_per_s": fitted[fastest],
            "non_private_steps_per_s": plain,
            "ratio_dp_step_over_non_private": plain / fitted[fastest] if plain else None,
            "peak_memory_mb": modes[fastest]["peak_memory_mb"],
            "auto_resolves_to": resolve_grad_sample_mode("auto", bf16_autocast=self.bf16),
        }

    def federated(self, pipe: Any, state: dict[str, Any]) -> dict[str, Any]:
        from federated.engine.adapter import (
            AdapterSpec,
            attach_adapter,
            get_adapter_arrays,
            set_adapter_arrays,
        )
        from federated.engine.flower.aggregate import fedavg
        from federated.engine.flower.reply_check import pack, unpack
        from federated.engine.trainer import training_scheduler

        args = self.args
        mode = state.get("dp_mode", "auto")  # the trainer's choice (hooks under autocast)
        spec = AdapterSpec(rank=args.rank, alpha=float(args.rank))
        unets = []
        for _ in range(2):
            unet = copy.deepcopy(pipe.unet)
            attach_adapter(unet, spec)
            unets.append(unet)
        start = get_adapter_arrays(unets[0], spec)
        layout = {name: value.shape for name, value in start.items()}
        config = self.config(spec, dp_mode=mode, steps=args.fed_steps)
        replies: list[tuple[dict[str, np.ndarray], int] | None] = [None, None]
        node_seconds = [0.0, 0.0]
        errors: list[BaseException] = []

        def node(i: int) -> None:
            try:
                began = time.perf_counter()
                incoming = unpack(pack(start), layout)  # the server's message, packed
                assert not isinstance(incoming, str)
                set_adapter_arrays(unets[i], spec, incoming)
                self.timed_loop(unets[i], state["caches"][i], config, training_scheduler(pipe))
                sync(args.device)
                replies[i] = (dict(pack(get_adapter_arrays(unets[i], spec))), args.images)
                node_seconds[i] = time.perf_counter() - began
            except BaseException as exc:  # re-raised in the main thread
                errors.append(exc)

        # the same steps one node after the other (also the warm-up of both copies)
        sync(args.device)
        began = time.perf_counter()
        for i in range(2):
            node(i)
        if errors:
            raise errors[0]
        sequential = time.perf_counter() - began
        sequential_nodes = list(node_seconds)
        # the round: both nodes at once on the one GPU
        sync(args.device)
        began = time.perf_counter()
        threads = [threading.Thread(target=node, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        named = []
        for reply in replies:
            assert reply is not None
            arrays = unpack(reply[0], layout)
            assert not isinstance(arrays, str)
            named.append((arrays, reply[1]))
        average = fedavg(named)
        set_adapter_arrays(unets[0], spec, average)
        sync(args.device)
        wall = time.perf_counter() - began
        state["average"] = average
        del unets[:]
        steps = 2 * args.fed_steps
        changed = float(sum(np.abs(a).sum() for a in average.values()))
        return {
            "dp_mode": mode,
            "local_steps_per_node": args.fed_steps,
            "round_seconds": wall,
            "node_seconds": node_seconds,
            "round_steps_per_s": steps / wall,
            "same_steps_one_after_the_other_seconds": sequential,
            "sequential_node_seconds": sequential_nodes,
            "ratio_round_over_sequential": wall / sequential,
            "adapter_bytes": int(sum(a.nbytes for a in average.values())),
            "adapter_abs_sum_after_round": changed,
        }

    def generate(self, pipe: Any, state: dict[str, Any]) -> dict[str, Any]:
        args = self.args
        base_unet = pipe.unet
        out: dict[str, Any] = {"steps": args.gen_steps, "resolution": args.resolution}
        variants = [("plain", base_unet)]
        if "average" in state:  # the round's adapter in a fresh copy, as a user would load it
            from federated.engine.adapter import AdapterSpec, attach_adapter, set_adapter_arrays

            spec = AdapterSpec(rank=args.rank, alpha=float(args.rank))
            adapted = copy.deepcopy(base_unet)
            attach_adapter(adapted, spec)
            set_adapter_arrays(adapted, spec, state["average"])
            variants.append(("with_adapter", adapted.eval()))
        try:
            for label, unet in variants:
                pipe.unet = unet
                self.reset_memory()
                times = []
                for _ in range(2):  # the first call warms up; the second is timed
                    sync(args.device)
                    began = time.perf_counter()
                    autocast = (
                        torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16)
                        if self.bf16
                        else contextlib.nullcontext()
                    )
                    with torch.no_grad(), autocast:
                        pipe(
                            "sks red circle",
                            num_inference_steps=args.gen_steps,
                            height=args.resolution,
                            width=args.resolution,
                            generator=torch.Generator().manual_seed(0),
                            output_type="np",
                        )
                    sync(args.device)
                    times.append(time.perf_counter() - began)
                out[label] = {
                    "seconds_per_image": times[-1],
                    "denoising_steps_per_s": args.gen_steps / times[-1],
                    "peak_memory_mb": self.peak_mb(),
                }
        finally:
            pipe.unet = base_unet
        if "with_adapter" in out:
            out["ratio_adapter_over_plain_seconds"] = (
                out["with_adapter"]["seconds_per_image"] / out["plain"]["seconds_per_image"]
            )
        peaks = [v["peak_memory_mb"] for v in out.values() if isinstance(v, dict)]
        out["peak_memory_mb"] = max(peaks) if self.cuda and peaks else None
        return out


def _number(value: object, spec: str = ".2f") -> str:
    return format(value, spec) if isinstance(value, int | float) else "-"


def markdown(results: dict[str, Any]) -> str:
    """The section appended to RESULTS-trainer.md."""
    m = results["machine"]
    c = results["config"]
    p = results["phases"]
    family = "SDXL" if c.get("family") == "sdxl" else "SD 1.5"
    lines = [
        f"## Full-size {family} on {m.get('gpu') or 'CPU (dry run, tiny model)'} "
        f"(`bench/gpu_sd15.py{' --family sdxl' if family == 'SDXL' else ''}`, {m['date']})",
        "",
        f"Random weights, {'tiny model' if c['tiny'] else family + ' architecture'}, "
        f"{'bf16' if str(c['device']).startswith('cuda') or c['dtype'] == 'bf16' else 'fp32'}, "
        f"{c['resolution']}x"
        f"{c['resolution']}, batch {c['batch']}, rank {c['rank']}, {c['warmup']} warm-up + "
        f"{c['steps']} timed steps per loop; torch {m['torch']}; total "
        f"{results.get('total_seconds', 0):.0f} s. Peak memory: "
        "`torch.cuda.max_memory_allocated` during the phase (model weights included).",
        "",
        "| phase | measured | peak memory MB | status |",
        "| --- | --- | --- | --- |",
    ]

    def row(key: str, name: str, text: str) -> None:
        record = p.get(key, {"status": "not run"})
        lines.append(
            f"| {name} | {text} | {_number(record.get('peak_memory_mb'), '.0f')} "
            f"| {record.get('status')} |"
        )

    lora = p.get("lora", {})
    row(
        "lora",
        "LoRA step (trainer / diffusers script loop)",
        f"{_number(lora.get('trainer_steps_per_s'))} / "
        f"{_number(lora.get('reference_steps_per_s'))} steps/s = "
        f"**{_number(lora.get('ratio_trainer_over_reference'))}x** (reference peak "
        f"{_number(lora.get('reference_peak_memory_mb'), '.0f')} MB)",
    )
    dp = p.get("dp", {})
    modes = ", ".join(
        f"{k} {_number(v.get('steps_per_s'))}" if v.get("status") == "ok" else f"{k} {v['status']}"
        for k, v in dp.get("modes", {}).items()
    )
    row(
        "dp",
        "DP step (fastest opacus mode that fits)",
        f"{dp.get('fastest')} (auto: {dp.get('auto_resolves_to')}): "
        f"{_number(dp.get('dp_steps_per_s'))} steps/s, "
        f"DP/non-DP step time **{_number(dp.get('ratio_dp_step_over_non_private'))}x** "
        f"(steps/s: {modes})",
    )
    fed = p.get("federated", {})
    row(
        "federated",
        "federated round, 2 nodes on the GPU",
        f"{_number(fed.get('round_seconds'))} s for {_number(fed.get('local_steps_per_node'), 'd')}"
        f" DP steps per node ({_number(fed.get('round_steps_per_s'))} steps/s); / the same "
        f"steps one after the other **{_number(fed.get('ratio_round_over_sequential'))}x**",
    )
    gen = p.get("generate", {})
    plain = gen.get("plain", {})
    adapted = gen.get("with_adapter", {})
    row(
        "generate",
        "generation",
        f"{_number(plain.get('seconds_per_image'))} s/image at {gen.get('steps')} steps "
        f"({_number(plain.get('denoising_steps_per_s'))} it/s); with the adapter "
        f"{_number(adapted.get('seconds_per_image'))} s "
        f"({_number(gen.get('ratio_adapter_over_plain_seconds'))}x)",
    )
    data = p.get("data", {})
    lines += [
        "",
        "Latent cache build: "
        f"{', '.join(_number(x) for x in data.get('cache_build_seconds', []))} s for "
        f"{data.get('images_per_node')} images per node. Federated round: two trainers in "
        "this process, in two threads, each with its own UNet copy, then the engine's "
        "`fedavg` over packed arrays (no Flower processes). Raw JSON: `--out-dir`.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny model (for a CPU dry run)")
    parser.add_argument("--family", choices=("sd1", "sdxl"), default="sd1")
    parser.add_argument(
        "--resolution", type=int, default=None, help="512 (SDXL 1024), or 32 with --tiny"
    )
    parser.add_argument("--batch", type=int, default=None, help="4 (SDXL 2)")
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--images", type=int, default=16, help="per node")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per loop")
    parser.add_argument("--fed-steps", type=int, default=5, help="local steps per node")
    parser.add_argument("--gen-steps", type=int, default=20)
    parser.add_argument(
        "--dp-modes",
        default="auto",
        help="opacus modes to try, in order (auto: the trainer's choice for this dtype)",
    )
    parser.add_argument(
        "--dtype",
        choices=("auto", "bf16"),
        default="auto",
        help="auto: bf16 on CUDA, fp32 on CPU; bf16: also on CPU (a dry run of the GPU numerics)",
    )
    parser.add_argument("--budget", type=float, default=400.0, help="seconds (<= 440)")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--no-append", action="store_true", help="do not touch --results")
    parser.add_argument("--out-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    args.dp_modes = [m for m in args.dp_modes.split(",") if m]
    bad = [m for m in args.dp_modes if m not in ("auto", "ew", "hooks", "functorch", "ghost")]
    if bad:
        parser.error(f"unknown opacus modes {bad}")
    if args.budget > 440:
        parser.error("--budget above 440 s would not fit the 8 minutes")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            "gpu_sd15: SKIPPED: no CUDA device (torch.cuda.is_available() is False with torch "
            f"{torch.__version__}); nothing was run. Run it on a machine with an NVIDIA GPU, "
            "or `--device cpu --tiny` for a dry run."
        )
        return SKIP_EXIT
    if not args.device.startswith("cuda") and not args.tiny:
        parser.error("full size runs only on CUDA; use --tiny for a CPU dry run")
    args.resolution = args.resolution or (
        32 if args.tiny else 1024 if args.family == "sdxl" else 512
    )
    args.batch = args.batch or (2 if args.family == "sdxl" else 4)

    bench = Bench(args)

    def alarm(signum: int, frame: FrameType | None) -> None:
        raise BudgetExceeded

    signal.signal(signal.SIGALRM, alarm)
    signal.alarm(int(args.budget) + 40)
    try:
        bench.run()
    finally:
        signal.alarm(0)
    bench.results["total_seconds"] = time.perf_counter() - bench.started
    text = json.dumps(bench.results, indent=2, default=str)
    section = markdown(bench.results)
    print(text)
    print(section)
    if args.out_dir is not None:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        stem = "gpu_sdxl" if args.family == "sdxl" else "gpu_sd15"
        (args.out_dir / f"{stem}.json").write_text(text + "\n", encoding="utf-8")
        (args.out_dir / f"{stem}.md").write_text(section, encoding="utf-8")
    if not args.no_append:
        with args.results.open("a", encoding="utf-8") as handle:
            handle.write("\n" + section)
    failed = [k for k, v in bench.results["phases"].items() if v.get("status") != "ok"]
    print(f"gpu_sd15: done in {bench.results['total_seconds']:.0f} s; not ok: {failed or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
