"""Empirical privacy audit (issue #17): canaries, membership inference, epsilon lower bounds.

One owner's private dataset (``--owner-images`` concept scenes) gets ``--canaries``
distinctive captioned images, each with probability 1/2 (:mod:`federated.audit.canaries`);
a second owner holds ``--other-images`` concept scenes. A LoRA is trained on both, with the
same adapter, optimiser, batch, rounds, steps and seeds for every variant: without DP, and
with DP-SGD at each of ``--epsilons``. Then the attack (:mod:`federated.audit.attack`: each
canary's denoising loss under the base minus under base + LoRA, fixed timesteps and noise)
scores every canary; from the scores and the coins (:mod:`federated.audit.stats`): the attack
AUC, the one-run lower bound on epsilon (Steinke, Nasr and Jagielski 2023) and the
Clopper-Pearson bound, at 95% confidence, beside the epsilon the owner's accountant reports.

``--federation inprocess``: each round calls ``train_round`` (the code a SuperNode's ClientApp
runs) once per owner and averages with the ServerApp's ``fedavg``, in this process.
``--federation real``: a real local federation (``LocalFederation``: a SuperLink and one
SuperNode process per owner, TLS and node authentication, driven by the ``flwr`` CLI). Real
nodes hold a privacy ledger and therefore train only with DP-SGD: there the "no DP" row is
DP-SGD with a negligible noise multiplier (``--real-nodp-sigma``) and a clipping norm no
gradient reaches (``--real-nodp-clip``), i.e. plain SGD on Poisson batches; its accounted
epsilon is astronomically large.

    python bench/privacy_audit.py                          # in-process, all variants
    python bench/privacy_audit.py --federation real --variants nodp,dp8
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from federated.audit.attack import membership_scores  # noqa: E402
from federated.audit.canaries import insert_canaries, make_canaries  # noqa: E402
from federated.audit.stats import (  # noqa: E402
    attack_auc,
    clopper_pearson_epsilon_lower_bound,
    one_run_epsilon_lower_bound,
)
from federated.engine.adapter import AdapterSpec  # noqa: E402
from federated.engine.dp import DPConfig  # noqa: E402
from federated.engine.flower.aggregate import fedavg  # noqa: E402
from federated.engine.synthetic import generate_concept_dataset  # noqa: E402
from federated.engine.trainer import TrainConfig, load_base, train_round  # noqa: E402
from sdcore.shapes import SHAPES_MODEL_DIR  # noqa: E402

DELTA = 1e-5
CONFIDENCE = 0.95


def audit_scores(
    scores: Mapping[str, np.ndarray], members: np.ndarray, *, delta: float = DELTA
) -> dict[str, object]:
    """AUC and both lower bounds of each attack's canary scores; the headline bound is the
    larger over the attacks, each computed at 1 - 0.05 / attacks (Bonferroni: 95% overall)."""
    level = 1 - (1 - CONFIDENCE) / len(scores)
    out: dict[str, object] = {"attacks": {}}
    best_one: dict[str, object] = {"epsilon": 0.0}
    best_cp: dict[str, object] = {"epsilon": 0.0}
    best_auc = 0.0
    for attack, values in scores.items():
        one_run = one_run_epsilon_lower_bound(values, members, delta=delta, confidence=level)
        cp = clopper_pearson_epsilon_lower_bound(values, members, delta=delta, confidence=level)
        auc = attack_auc(values, members)
        out["attacks"][attack] = {  # type: ignore[index]
            "auc": round(auc, 4),
            "eps_lb_one_run": one_run.to_dict(),
            "eps_lb_clopper_pearson": cp.to_dict(),
            "mean_score_in": float(np.mean(values[members])),
            "mean_score_out": float(np.mean(values[~members])),
            "scores": [round(float(v), 6) for v in values],
        }
        if one_run.epsilon >= float(best_one["epsilon"]):  # type: ignore[arg-type]
            best_one = {**one_run.to_dict(), "attack": attack}
        if cp.epsilon >= float(best_cp["epsilon"]):  # type: ignore[arg-type]
            best_cp = {**cp.to_dict(), "attack": attack}
        best_auc = max(best_auc, auc)
    out.update(
        {"auc": round(best_auc, 4), "eps_lb_one_run": best_one, "eps_lb_clopper_pearson": best_cp}
    )
    return out


def _variants(spec: str, epsilons: list[float]) -> list[tuple[str, float | None]]:
    out: list[tuple[str, float | None]] = []
    for name in spec.split(","):
        name = name.strip()
        if name == "nodp":
            out.append(("nodp", None))
        elif name == "dp":
            out.extend((f"dp{e:g}", e) for e in epsilons)
        elif name.startswith("dp") and name[2:]:
            out.append((name, float(name[2:])))
        elif name:
            raise SystemExit(f"unknown variant {name!r} (nodp, dp, dp<epsilon>)")
    return out


def _train_inprocess(
    datasets: list[Path],
    *,
    config: TrainConfig,
    rounds: int,
    base: Path,
    cache_dir: Path,
    job: str,
) -> tuple[Mapping[str, np.ndarray], float | None]:
    adapter = None
    states: list[bytes | None] = [None] * len(datasets)
    epsilon: float | None = None
    for round_index in range(rounds):
        replies = []
        for i, data in enumerate(datasets):
            result = train_round(
                config,
                base_model=base,
                dataset=data,
                cache_dir=cache_dir / f"node-{i}",
                adapter_in=adapter,
                accountant_state=states[i],
                ledger=None,
                job_id=job,
                round_index=round_index,
            )
            states[i] = result.accountant_state
            replies.append(result)
            if i == 0:
                epsilon = result.epsilon  # the canary owner's accountant
        adapter = fedavg([(r.adapter, r.num_examples) for r in replies])
        print(
            f"  {job} round {round_index + 1}: loss "
            f"{np.mean([r.train_loss for r in replies]):.4f} eps(owner 0) {epsilon}",
            flush=True,
        )
    assert adapter is not None
    return adapter, epsilon


def _train_real(
    datasets: list[Path],
    *,
    run_config: dict[str, object],
    work: Path,
    base: Path,
    job: str,
) -> tuple[Mapping[str, np.ndarray], float | None, dict[str, object]]:
    from federated.engine.flower.state import load_state
    from federated.engine.ledger import PrivacyLedger
    from federated.engine.localfed import LocalFederation, NodeSpec

    specs = []
    for i, data in enumerate(datasets):
        node = work / job / f"node-{i}"
        node.mkdir(parents=True, exist_ok=True)
        ledger = node / "ledger.db"
        PrivacyLedger(ledger).set_budget(str(data.resolve()), epsilon=1e12, delta=0.5)
        specs.append(NodeSpec(data, node / "cache", ledger, base))
    out = work / job / "server"
    started = time.perf_counter()
    with LocalFederation(specs, work / job / "fed") as fed:
        outcome = fed.run({**run_config, "out-dir": str(out), "job-id": job}, timeout=3000)
        if not outcome.ok:
            logs = fed.logs()
            raise SystemExit(
                f"{job}: {outcome.status} {outcome.details}\n{json.dumps(logs)[-4000:]}"
            )
    _, arrays, _ = load_state(out)
    spend = PrivacyLedger(specs[0].ledger_path).job_spend(str(datasets[0].resolve()), job)
    epsilon = float(spend.epsilon) if spend is not None else None
    info = {
        "serverapp_seconds": outcome.info.get("elapsed"),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    return arrays, epsilon, info


def table(results: Mapping[str, Mapping[str, object]]) -> str:
    lines = [
        "| variant | federation | epsilon accounted | eps lower bound, one-run (95%) "
        "| eps lower bound, Clopper-Pearson (95%) | attack AUC (vs base / vs reference) "
        "| canaries (in/out) | runs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in results.items():
        eps = row["epsilon_accounted"]
        assert eps is None or isinstance(eps, float | int)
        eps_text = "- (no DP)" if eps is None else (f"{eps:.3g}" if eps < 1e4 else f"{eps:.2e}")
        one = row["eps_lb_one_run"]
        cp = row["eps_lb_clopper_pearson"]
        attacks = row["attacks"]
        assert isinstance(one, dict) and isinstance(cp, dict) and isinstance(attacks, dict)
        aucs = " / ".join(f"{attacks[k]['auc']:.3f}" for k in ("base", "reference") if k in attacks)
        lines.append(
            f"| {name} | {row['federation']} | {eps_text} | {one['epsilon']:.2f} "
            f"({one.get('correct', '-')}/{one.get('guesses', '-')} guesses right) | "
            f"{cp['epsilon']:.2f} | {aucs} | {row['canaries_in']}/{row['canaries_out']} "
            f"| 1 |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, object]:  # noqa: PLR0915
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, default=SHAPES_MODEL_DIR)
    parser.add_argument("--federation", choices=("inprocess", "real"), default="inprocess")
    parser.add_argument("--variants", default="nodp,dp")
    parser.add_argument("--epsilons", default="8,2")
    parser.add_argument("--canaries", type=int, default=64)
    parser.add_argument("--owner-images", type=int, default=8, help="canary owner's own images")
    parser.add_argument("--other-images", type=int, default=8, help="the second owner's")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--local-steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--adapter-mode", choices=("ffa", "lora"), default="lora")
    parser.add_argument("--clip", type=float, default=0.05, help="DP clipping norm")
    parser.add_argument("--real-nodp-sigma", type=float, default=0.002)
    parser.add_argument("--real-nodp-clip", type=float, default=0.5)
    parser.add_argument("--no-reference", action="store_true", help="attack vs the base only")
    parser.add_argument(
        "--reference-from", type=Path, default=None, help="a reference.npz saved with --keep"
    )
    parser.add_argument("--draws", type=int, default=2, help="noise draws per timestep (attack)")
    parser.add_argument("--seed", type=int, default=0, help="canaries, coins and data")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--keep", type=Path, default=None, help="save the adapters here (.npz)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "privacy_audit.json")
    a = parser.parse_args(argv)
    torch.set_num_threads(a.threads)
    epsilons = [float(e) for e in a.epsilons.split(",") if e.strip()]
    variants = _variants(a.variants, epsilons)

    work = Path(tempfile.mkdtemp(prefix="atelier-audit-"))
    spec = AdapterSpec(rank=a.rank, alpha=float(a.rank), mode=a.adapter_mode)
    report: dict[str, object] = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()},
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "load_average_at_start": round(os.getloadavg()[0], 2),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": {},
    }
    results: dict[str, dict[str, object]] = report["results"]  # type: ignore[assignment]

    def train(
        name: str, datasets: list[Path], epsilon: float | None, federation: str
    ) -> tuple[Mapping[str, np.ndarray], float | None, dict[str, object], str]:
        info: dict[str, object] = {}
        if federation == "inprocess":
            dp = (
                None
                if epsilon is None
                else DPConfig(
                    target_epsilon=epsilon,
                    target_delta=DELTA,
                    planned_rounds=a.rounds,
                    max_grad_norm=a.clip,
                )
            )
            config = TrainConfig(
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
            adapter, accounted = _train_inprocess(
                datasets,
                config=config,
                rounds=a.rounds,
                base=a.base,
                cache_dir=work / "cache",
                job=f"audit-{name}",
            )
            return adapter, accounted, info, "in-process"
        run_config: dict[str, object] = {
            "num-server-rounds": a.rounds,
            "min-nodes": 2,
            "round-timeout": 1800.0,
            "local-steps": a.local_steps,
            "batch-size": a.batch,
            "lr": a.lr,
            "rank": a.rank,
            "alpha": float(a.rank),
            "adapter-mode": a.adapter_mode,
            "resolution": 64,
            "seed": 0,
            "dp-delta": DELTA,
            "dp-max-grad-norm": a.clip if epsilon is not None else a.real_nodp_clip,
            "base-model-path": str(a.base),
            "sample-grid": False,
            # the membership audit only; the release check has its own (bench/release_audit.py)
            "release-check": False,
        }
        label = "real SuperLink + 2 SuperNodes"
        if epsilon is None:
            run_config["dp-noise-multiplier"] = a.real_nodp_sigma
            label += f" (DP-SGD, sigma {a.real_nodp_sigma:g}, clip {a.real_nodp_clip:g})"
        else:
            run_config["dp-target-epsilon"] = epsilon
        adapter, accounted, info = _train_real(
            datasets, run_config=run_config, work=work, base=a.base, job=f"audit-{name}"
        )
        return adapter, accounted, info, label

    try:
        own = generate_concept_dataset(work / "owner-0-own", n_images=a.owner_images, seed=100)
        other = generate_concept_dataset(work / "owner-1", n_images=a.other_images, seed=101)
        canaries = make_canaries(a.canaries, seed=a.seed)
        owner0, canary_set = insert_canaries(own, work / "owner-0", canaries, include_seed=a.seed)
        members_by_name = {f"canary-{i:05d}.png": m for i, m in enumerate(canary_set.members)}
        print(
            f"owner 0: {a.owner_images} own images + {sum(canary_set.members)} of "
            f"{canary_set.count} canaries; owner 1: {a.other_images} images",
            flush=True,
        )
        base = load_base(
            a.base, device=torch.device("cpu"), dtype=torch.float32, cache_dir=work / "cache"
        )
        base.pipe.set_progress_bar_config(disable=True)
        datasets = [owner0, other]
        reference: dict[str, np.ndarray] | None = None
        if a.reference_from:
            with np.load(a.reference_from) as saved:
                reference = {k: saved[k] for k in saved.files}
        elif not a.no_reference:
            # The auditor's reference: the same training (no DP, in this process) with other
            # canaries of the same kind in owner 0's data; none of the audited canaries.
            fresh = make_canaries(a.canaries, seed=a.seed + 10_000)
            ref_data, _ = insert_canaries(own, work / "reference", fresh, include_seed=a.seed + 1)
            started = time.perf_counter()
            trained, _, _, _ = train("reference", [ref_data, other], None, "inprocess")
            reference = dict(trained)
            report["reference_seconds"] = round(time.perf_counter() - started, 1)
            if a.keep:
                a.keep.mkdir(parents=True, exist_ok=True)
                np.savez(a.keep / "reference.npz", **reference)  # type: ignore[arg-type]
        for name, epsilon in variants:
            started = time.perf_counter()
            adapter, accounted, info, federation = train(name, datasets, epsilon, a.federation)
            train_seconds = time.perf_counter() - started
            if a.keep:
                a.keep.mkdir(parents=True, exist_ok=True)
                np.savez(a.keep / f"{name}.npz", **dict(adapter))  # type: ignore[arg-type]
            scores: dict[str, np.ndarray] = {}
            names: list[str] = []
            for attack, calibration in (("base", None), ("reference", reference)):
                if attack == "reference" and reference is None:
                    continue
                scores[attack], names = membership_scores(
                    base.pipe,
                    canaries_dir=canary_set.all_dir,
                    cache_dir=work / "cache",
                    model_hash=base.fingerprint,
                    spec=spec,
                    adapter=adapter,
                    reference=calibration,
                    draws=a.draws,
                )
            members = np.asarray([members_by_name[n] for n in names])
            row = {
                "federation": federation,
                "epsilon_target": epsilon,
                "epsilon_accounted": accounted,
                "canaries_in": int(members.sum()),
                "canaries_out": int((~members).sum()),
                **audit_scores(scores, members),
                "train_seconds": round(train_seconds, 1),
                **info,
            }
            results[name] = row
            brief = {k: v for k, v in row.items() if k != "attacks"}
            print(f"{name}: {json.dumps(brief, default=str)}", flush=True)
            a.out.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["load_average_at_end"] = round(os.getloadavg()[0], 2)
    a.out.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    print(table(results))
    return report


if __name__ == "__main__":
    main()
