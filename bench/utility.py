"""Utility of federated (and private) LoRA training: does the LoRA learn the owners' concept?

The owners' private datasets hold a concept the shapes base model does not know: orange
figures, captioned with the trigger word ``atlr`` where a colour word would stand
(:func:`federated.engine.synthetic.generate_concept_dataset`). For each way of training a LoRA
on them, with the same adapter, optimiser, batch, steps per node and seeds, this measures

- the concept score (:func:`sdcore.concept.measure_concept`): the fraction of images drawn for
  the fixed prompts ``"a atlr <shape> on a <background> background"`` (3 shapes x 3
  backgrounds, seeds 0-3, 20 Euler steps, guidance 4) whose figure the fixed detector reads as
  orange; and how many of them have the prompted shape;
- the held-out denoising loss (:func:`federated.engine.evaluate.validation_loss`) on concept
  images no node holds (fixed timesteps and noise);

for: the base alone; a LoRA trained centrally on all owners' data (one node holding the union,
the same rounds and steps); federated without DP; federated with DP-SGD at epsilon 8 and 2.
Then DP at epsilon 8 again with more data per owner, to find the dataset size at which DP stops
drowning the signal.

Federation here is in-process: each round calls the trainer's ``train_round`` (the code a
SuperNode's ClientApp runs) once per owner from the global adapter, and averages the replies
with the ServerApp's ``fedavg`` (weighted by examples). No SuperLink, no SuperNodes: the
numbers are about what is learnt, not about transport (``bench/federation.py`` measures that).

    python bench/utility.py                        # writes bench/utility.json, prints the table
    python bench/utility.py --dp-sizes 64,256,1024 --rounds 4 --local-steps 30
    # the demo's job (scripts/demo_job.py), in-process:
    python bench/utility.py --variants base,dp --epsilons 8 --images 256 --owner-seed 11 \
        --batch 32 --local-steps 15 --rounds 2 --lr 0.05 --clip 0.05
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from federated.engine.adapter import AdapterSpec  # noqa: E402
from federated.engine.dp import DPConfig  # noqa: E402
from federated.engine.evaluate import evaluate_adapter, pipeline_with_adapter  # noqa: E402
from federated.engine.flower.aggregate import fedavg  # noqa: E402
from federated.engine.synthetic import generate_concept_dataset  # noqa: E402
from federated.engine.trainer import TrainConfig, load_base, train_round  # noqa: E402
from sdcore.concept import measure_concept  # noqa: E402
from sdcore.shapes import SHAPES_MODEL_DIR  # noqa: E402

HELD_OUT_SEED = 999
HELD_OUT_IMAGES = 32


def _union(folders: Sequence[Path], out: Path) -> Path:
    """One kohya folder with every owner's images and captions (the central baseline)."""
    out.mkdir(parents=True, exist_ok=True)
    index = 0
    for folder in folders:
        for png in sorted(folder.glob("*.png")):
            shutil.copyfile(png, out / f"{index:05d}.png")
            shutil.copyfile(png.with_suffix(".txt"), out / f"{index:05d}.txt")
            index += 1
    return out


def _train(
    name: str,
    datasets: Sequence[Path],
    *,
    config: TrainConfig,
    rounds: int,
    base: Path,
    cache_dir: Path,
) -> dict[str, object]:
    """FedAvg over ``datasets`` (one node each) for ``rounds`` rounds; the final adapter."""
    adapter = None
    states: list[bytes | None] = [None] * len(datasets)
    history = []
    started = time.perf_counter()
    for round_index in range(rounds):
        replies = []
        for i, data in enumerate(datasets):
            result = train_round(
                config,
                base_model=base,
                dataset=data,
                cache_dir=cache_dir,
                adapter_in=adapter,
                accountant_state=states[i],
                ledger=None,
                job_id=f"utility-{name}",
                round_index=round_index,
            )
            states[i] = result.accountant_state
            replies.append(result)
        adapter = fedavg([(r.adapter, r.num_examples) for r in replies])
        history.append(
            {
                "round": round_index + 1,
                "train_loss": round(float(np.mean([r.train_loss for r in replies])), 5),
                "epsilon": max((r.epsilon or 0.0) for r in replies) or None,
                "noise_multiplier": replies[0].noise_multiplier,
                "sample_rate": replies[0].sample_rate,
            }
        )
        print(f"  {name} round {round_index + 1}: {history[-1]}", flush=True)
    return {"adapter": adapter, "rounds": history, "seconds": time.perf_counter() - started}


def _measure(
    pipe: object,
    *,
    adapter: dict[str, np.ndarray] | None,
    spec: AdapterSpec,
    held_out: Path,
    cache_dir: Path,
    fingerprint: str,
) -> dict[str, object]:
    drawing = pipe if adapter is None else pipeline_with_adapter(pipe, spec, adapter)  # type: ignore[arg-type]
    concept = measure_concept(drawing)
    loss = evaluate_adapter(
        pipe,  # type: ignore[arg-type]
        dataset=held_out,
        cache_dir=cache_dir,
        resolution=64,
        model_hash=fingerprint,
        spec=spec if adapter is not None else None,
        adapter=adapter,
    )
    return {"concept": concept.to_dict(), "held_out_loss": round(loss, 5)}


def table(results: dict[str, dict[str, object]]) -> str:
    """The results as a markdown table (what bench/RESULTS-utility.md shows)."""
    lines = [
        "| variant | images per owner | concept score (orange) | prompted shape | held-out loss "
        "| epsilon reached | noise multiplier | train s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in results.items():
        concept = row["concept"]
        assert isinstance(concept, dict)
        rounds = row.get("rounds") or [{}]
        assert isinstance(rounds, list)
        last = rounds[-1]
        eps = last.get("epsilon")
        sigma = last.get("noise_multiplier")
        lines.append(
            f"| {name} | {row.get('images_per_owner', '-')} | "
            f"{concept['score']:.2f} ({round(concept['score'] * concept['images'])}/"
            f"{concept['images']}) | {concept['shape_accuracy']:.2f} | "
            f"{row['held_out_loss']:.4f} | {'-' if not eps else f'{eps:.2f}'} | "
            f"{'-' if not sigma else f'{sigma:.3f}'} | {row.get('train_seconds', '-')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, default=SHAPES_MODEL_DIR)
    parser.add_argument("--owners", type=int, default=2)
    parser.add_argument("--images", type=int, default=64, help="images per owner")
    parser.add_argument(
        "--owner-seed", type=int, default=100, help="owner i's data seed is this + i (demo: 11)"
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--local-steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--clip", type=float, default=1.0, help="DP clipping norm")
    parser.add_argument("--epsilons", default="8,2")
    parser.add_argument("--dp-sizes", default="", help="images per owner for the DP sweep")
    parser.add_argument("--variants", default="base,central,federated,dp")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "utility.json")
    a = parser.parse_args(argv)
    torch.set_num_threads(a.threads)
    variants = set(a.variants.split(","))

    work = Path(tempfile.mkdtemp(prefix="atelier-utility-"))
    cache_dir = work / "cache"
    spec = AdapterSpec(rank=a.rank, alpha=float(a.rank))

    def config(dp: DPConfig | None) -> TrainConfig:
        return TrainConfig(
            resolution=64,
            adapter=spec,
            learning_rate=a.lr,
            batch_size=a.batch,
            local_steps=a.local_steps,
            seed=0,
            dp=dp,
            device="cpu",
            mixed_precision="no",
        )

    def owners(n_images: int) -> list[Path]:
        return [
            generate_concept_dataset(
                work / f"owner-{i}-{n_images}", n_images=n_images, seed=a.owner_seed + i
            )
            for i in range(a.owners)
        ]

    def dp(epsilon: float) -> DPConfig:
        return DPConfig(target_epsilon=epsilon, planned_rounds=a.rounds, max_grad_norm=a.clip)

    report: dict[str, object] = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()},
        "torch": torch.__version__,
        "load_average_at_start": round(os.getloadavg()[0], 2),
        "results": {},
    }
    results: dict[str, object] = report["results"]  # type: ignore[assignment]
    try:
        held_out = generate_concept_dataset(
            work / "held-out", n_images=HELD_OUT_IMAGES, seed=HELD_OUT_SEED
        )
        base = load_base(
            a.base, device=torch.device("cpu"), dtype=torch.float32, cache_dir=cache_dir
        )
        base.pipe.set_progress_bar_config(disable=True)
        data = owners(a.images)

        def run(name: str, datasets: Sequence[Path], dp_config: DPConfig | None) -> None:
            trained = _train(
                name,
                datasets,
                config=config(dp_config),
                rounds=a.rounds,
                base=a.base,
                cache_dir=cache_dir,
            )
            measured = _measure(
                base.pipe,
                adapter=trained["adapter"],  # type: ignore[arg-type]
                spec=spec,
                held_out=held_out,
                cache_dir=cache_dir,
                fingerprint=base.fingerprint,
            )
            results[name] = {
                **measured,
                "rounds": trained["rounds"],
                "train_seconds": round(float(trained["seconds"]), 1),  # type: ignore[arg-type]
                "images_per_owner": len(list(datasets[0].glob("*.png"))),
                "nodes": len(datasets),
            }
            print(f"{name}: {measured}", flush=True)

        if "base" in variants:
            results["base"] = _measure(
                base.pipe,
                adapter=None,
                spec=spec,
                held_out=held_out,
                cache_dir=cache_dir,
                fingerprint=base.fingerprint,
            )
            print(f"base: {results['base']}", flush=True)
        if "central" in variants:
            run("central", [_union(data, work / "union")], None)
        if "federated" in variants:
            run("federated", data, None)
        epsilons = [float(e) for e in a.epsilons.split(",") if e]
        if "dp" in variants:
            for epsilon in epsilons:
                run(f"federated-dp-eps{epsilon:g}", data, dp(epsilon))
        for size in [int(s) for s in a.dp_sizes.split(",") if s]:
            run(f"federated-dp-eps{epsilons[0]:g}-{size}-per-owner", owners(size), dp(epsilons[0]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["load_average_at_end"] = round(os.getloadavg()[0], 2)
    a.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(table(results))  # type: ignore[arg-type]
    return report


if __name__ == "__main__":
    main()
