"""The demo's trainer (``make demo``): launch a small federated LoRA job with DP-SGD through the
site's REST API, follow it round by round, and show what it published and who it paid.

    demo_job.py --site URL --username trainer --password-stdin --owners owner1,owner2 \
        [--rounds 2] [--epsilon 8] [--summary FILE] [--concept DIR] [--timeout 900]

Only what any API client can do: a token from ``POST /api/v1/auth/tokens``, the base model from
the catalogue (``/api/v1/models``), the owners' listed datasets (``/api/v1/federated/datasets``),
an estimate, the launch (``POST /api/v1/federated/jobs``, with an Idempotency-Key), then
``/api/v1/federated/jobs/<id>/progress`` until the job is finished. A job of an earlier demo run
that is still queued or running (the demo was stopped mid-job) is cancelled first: owners are
paid for the rounds it completed and the rest is refunded.

With ``--concept DIR`` it proves the job's worth (issue #13): before the launch it downloads
the base model version and prints its concept score (``demo.concept``: the fixed trigger
prompts and seeds, the fraction of figures drawn orange, the owners' concept); once the LoRA is
published it downloads it and prints the score of base + LoRA, same prompts and seeds, with
PNG grids of both under DIR.

The job's settings are chosen with the estimate's DP advice (``federated.engine.dp_advice``):
each owner's 256 images, batch 32 (sampling rate 1/8), 15 local steps per round, epsilon 8:
noise multiplier about 0.85 over 2 rounds, noise-to-signal 0.03 ("ok"). With the old settings
(16 images, batch 16: sampling rate 1) DP drowned the signal and the LoRA learnt nothing.

Exit status 0 when the job completed and published its LoRA, 1 otherwise. ``--summary``
writes the job's final detail (JSON), the URLs and the concept scores for scripts and tests.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from client.http import AtelierClient, AtelierError  # noqa: E402  (after the path fix)

BASE_MODEL = ("creator", "Atelier Shapes", "single-file")  # what demo_seed publishes
SDXL_BASE_MODEL = ("creator", "Atelier Tiny SDXL", "single-file")  # demo_seed --family sdxl
ACTIVE = ("queued", "running", "publishing")
TERMINAL = ("completed", "failed", "cancelled")
JOB_NAME = "Demo: atlr (orange shapes) LoRA"
# The job's LoRA settings, chosen with the DP advice (module docstring) and measured in
# bench/RESULTS-utility.md ("The demo's job"): FFA-LoRA rank 4 on the attention layers,
# AdamW lr 0.05, DP-SGD clipping at 0.05 (per-example gradient norms are about 0.08).
DEMO_SETTINGS = {
    "local_steps": 15,
    "batch_size": 32,
    "learning_rate": 0.05,
    "rank": 4,
    "alpha": 4.0,
    "max_grad_norm": 0.05,
}


def say(message: str = "") -> None:
    print(message, flush=True)


class Trainer:
    def __init__(self, site: str, username: str, password: str) -> None:
        self.site = site.rstrip("/")
        anonymous = AtelierClient(self.site)
        token, _ = anonymous.token_create(username=username, password=password, name="demo trainer")
        self.api = AtelierClient(self.site, token)

    def get(self, path: str, **params: str) -> Any:
        return self.api.request("GET", path, params=params or None).json()

    def post(self, path: str, body: object = None, **headers: str) -> Any:
        return self.api.request("POST", path, json=body, headers=headers or None).json()

    def base_version(self, family: str = "sd1") -> int:
        owner, name, version_name = SDXL_BASE_MODEL if family == "sdxl" else BASE_MODEL
        listed = self.get("/api/v1/models", creator=owner, page_size="100")
        for item in listed.get("results", []):
            if item.get("name") == name:
                model = self.api.model_get(int(item["id"]))
                for version in model.versions:
                    if version.name == version_name:
                        return version.id
        raise AtelierError(f"No {version_name!r} version of {owner}'s {name!r}: run demo_seed.")

    def fetch(self, version_id: int, folder: Path) -> Path:
        """Download the version's primary ``.safetensors`` file (as any buyer would) into
        ``folder``; kept when an earlier run fetched the same bytes."""
        version = self.api.version_get(version_id)
        files = [f for f in version.files if f.path.endswith(".safetensors") and "/" not in f.path]
        if not files:
            raise AtelierError(f"Version {version_id} has no .safetensors file to download.")
        remote = files[0]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / remote.path
        if path.is_file() and path.stat().st_size == remote.size:
            return path
        part = path.with_name(path.name + ".part")
        part.unlink(missing_ok=True)
        self.api.download(remote.download_url, part)
        part.replace(path)
        return path

    def datasets(self, owners: list[str]) -> list[dict[str, Any]]:
        """Each owner's newest listed private dataset."""
        listed = self.get("/api/v1/federated/datasets", page_size="100")
        items = listed.get("results", listed) if isinstance(listed, dict) else listed
        chosen = []
        for owner in owners:
            mine = [d for d in items if d.get("owner") == owner]
            if not mine:
                raise AtelierError(f"{owner} lists no private dataset (atelier node publish).")
            chosen.append(max(mine, key=lambda d: int(d["dataset_version_id"])))
        return chosen

    def cancel_leftovers(self) -> None:
        listed = self.get("/api/v1/federated/jobs", page_size="100")
        for job in listed.get("results", listed) if isinstance(listed, dict) else listed:
            if job.get("state") in ACTIVE and job.get("name") == JOB_NAME:
                done = self.post(f"/api/v1/federated/jobs/{job['id']}/cancel")
                say(
                    f"    cancelled job {job['id']} of an earlier demo run (it was "
                    f"{job['state']}): owners paid {done.get('owners_paid')} credits for its "
                    f"rounds, {done.get('refunded')} refunded"
                )


def _fmt(value: object, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def follow(trainer: Trainer, job_id: int, timeout: float, poll: float) -> dict[str, Any]:
    """Print the job's state changes, events and rounds until it is finished."""
    started = time.monotonic()
    state, seen_rounds, seen_events = "", 0, 0
    while True:
        progress = trainer.get(f"/api/v1/federated/jobs/{job_id}/progress")
        events = progress.get("events", [])
        events = sorted(events, key=lambda e: e.get("created_at", ""))
        for event in events[seen_events:]:
            say(
                f"    [{time.monotonic() - started:5.0f} s] event {event['kind']}: "
                f"{event['message']}"
            )
        seen_events = max(seen_events, len(events))
        if progress["state"] != state:
            state = progress["state"]
            say(f"    [{time.monotonic() - started:5.0f} s] job {job_id} is {state}")
        for r in progress.get("rounds", [])[seen_rounds:]:
            refused = f", refused: {r['refused']}" if r.get("refused") else ""
            say(
                f"    [{time.monotonic() - started:5.0f} s] round {r['index']}/"
                f"{progress['rounds_total']}: loss {_fmt(r.get('train_loss'), '.4f')}, "
                f"epsilon {_fmt(r.get('epsilon_max'), '.2f')}, {r.get('nodes')} nodes, "
                f"{r.get('num_examples')} examples, {_fmt(r.get('seconds'), '.1f')} s{refused}"
            )
            grid = r.get("sample_grid_url")
            if grid:
                say(f"        sample grid: {trainer.site + grid if grid.startswith('/') else grid}")
        seen_rounds = max(seen_rounds, len(progress.get("rounds", [])))
        if state in TERMINAL:
            return dict(trainer.get(f"/api/v1/federated/jobs/{job_id}"))
        if time.monotonic() - started > timeout:
            raise AtelierError(f"job {job_id} is still {state} after {timeout:g} s")
        time.sleep(poll)


def main() -> int:
    parser = argparse.ArgumentParser(prog="demo_job.py")
    parser.add_argument("--site", required=True)
    parser.add_argument("--username", default="trainer")
    parser.add_argument("--password-stdin", action="store_true", required=True)
    parser.add_argument("--owners", default="owner1,owner2")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epsilon", type=float, default=8.0)
    parser.add_argument("--summary", help="write the finished job's detail here (JSON)")
    parser.add_argument(
        "--concept",
        type=Path,
        help="score the base and base + LoRA on the owners' concept; files and grids here",
    )
    parser.add_argument(
        "--family",
        choices=("sd1", "sdxl"),
        default="sd1",
        help="sdxl: train on the tiny SDXL base (demo_seed --family sdxl); no concept score",
    )
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--poll", type=float, default=1.0)
    args = parser.parse_args()
    password = sys.stdin.readline().rstrip("\r\n")
    try:
        return run(args, password)
    except KeyboardInterrupt:
        return 130
    except AtelierError as err:
        say(f"demo job: error: {err.message}")
        return 1


def run(args: argparse.Namespace, password: str) -> int:
    trainer = Trainer(args.site, args.username, password)
    site = trainer.site
    trainer.cancel_leftovers()
    owners = [o.strip() for o in args.owners.split(",") if o.strip()]
    datasets = trainer.datasets(owners)
    body = {
        "name": JOB_NAME,
        "base_version_id": trainer.base_version(args.family),
        "dataset_version_ids": [int(d["dataset_version_id"]) for d in datasets],
        "use": "style",
        "trigger_word": "atlr",  # the owners' concept (orange figures)
        "rounds": args.rounds,
        "dp": True,
        "target_epsilon": args.epsilon,
        **DEMO_SETTINGS,
        # a smaller DEMO_IMAGES: the batch fits the smallest dataset (the advice then warns)
        "batch_size": min(
            [DEMO_SETTINGS["batch_size"]] + [int(d["image_count"]) for d in datasets]
        ),
        "resolution": 64,  # the shapes base model's native size (and the tiny SDXL's)
        "timeout_minutes": 30,
    }
    for d in datasets:
        say(
            f"    dataset {d['name']!r} of {d['owner']} (version {d['dataset_version_id']}, "
            f"{d['image_count']} images, node {d['node']['name']!r} {d['node']['status']}): "
            f"{d['terms']['price_per_example_round']} credits per example per round, "
            f"epsilon {d['terms']['epsilon_per_job']:g} per job"
        )
    estimate = trainer.post("/api/v1/federated/jobs/estimate", body)
    if estimate["problems"]:
        for problem in estimate["problems"]:
            say(f"    refused: {problem['message']}")
        return 1
    say(
        f"    estimate: at most {estimate['owners_max']} credits to owners + "
        f"{estimate['fee']} fee = {estimate['total']} held in escrow"
    )
    advice = estimate.get("advice")
    if advice:
        say(
            f"    DP advice: {advice['level']} (epsilon {advice['target_epsilon']:g}, batch "
            f"{advice['batch_size']}, {advice['steps']} steps, "
            f"clipping {advice['max_grad_norm']:g})"
        )
        for owner in advice["owners"]:
            say(
                f"      {owner['dataset']!r}: {owner['examples']} examples, sampling rate "
                f"{owner['sample_rate']:.3g}, noise multiplier "
                f"{_fmt(owner['noise_multiplier'], '.3f')}, noise-to-signal "
                f"{_fmt(owner['noise_to_signal'], '.3f')} ({owner['level']})"
            )
        for warning in advice["warnings"]:
            say(f"      warning: {warning}")
    before = None
    base_file: Path | None = None
    if args.concept and args.family == "sdxl":
        say("    (no concept score: the tiny SDXL base has random weights and draws noise)")
        args.concept = None
    if args.concept:
        base_file = trainer.fetch(body["base_version_id"], args.concept / "base")
        before = concept_score("before (the base alone)", base_file, None)
    job = trainer.post("/api/v1/federated/jobs", body, **{"Idempotency-Key": str(uuid.uuid4())})
    job_id = int(job["id"])
    say(
        f"    launched job {job_id}: {args.rounds} rounds, DP-SGD to epsilon {args.epsilon:g}, "
        f"2 nodes"
    )
    say(f"    job page: {site}/train/jobs/{job_id}/")
    say(f"    API:      {site}/api/v1/federated/jobs/{job_id}")
    started = time.monotonic()
    detail = follow(trainer, job_id, args.timeout, args.poll)
    seconds = time.monotonic() - started
    summary: dict[str, Any] = {
        "job": detail,
        "seconds": seconds,
        "job_url": f"{site}/train/jobs/{job_id}/",
        "api_url": f"{site}/api/v1/federated/jobs/{job_id}",
    }
    ok = detail["state"] == "completed" and detail.get("result_version_id")
    if ok:
        model = trainer.api.model_get(int(detail["result_model_id"]))
        summary["model_url"] = (
            f"{site}/models/{model.id}/{model.slug}/?version={detail['result_version_id']}"
        )
        say(f"==> job {job_id} completed in {seconds:.0f} s; the LoRA is published:")
        say(f"    {summary['model_url']}")
        if detail.get("publish_note"):
            say(f"    note: {detail['publish_note']}")
    else:
        say(
            f"==> job {job_id} {detail['state']} after {seconds:.0f} s: "
            f"{detail.get('failure_reason') or detail.get('publish_note') or 'no reason given'}"
        )
    for d in detail.get("datasets", []):
        say(
            f"    {d['owner']} earned {d['earned']} credits for {d['dataset']!r}: "
            f"{d['rounds_completed']} rounds x {d['examples']} examples at "
            f"{d['price_per_example_round']} per example per round"
        )
    say(
        f"    owners paid {detail.get('owners_paid')}, platform fee {detail.get('fee_paid')}, "
        f"refunded to the trainer {detail.get('refunded')} (of {detail.get('max_cost')} held)"
    )
    if ok and args.concept and before is not None and base_file is not None:
        lora_file = trainer.fetch(int(detail["result_version_id"]), args.concept / "lora")
        after = concept_score("after (base + the published LoRA)", base_file, lora_file)
        summary["concept"] = concept_summary(before, after, args.concept)
    if args.summary:
        Path(args.summary).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return 0 if ok else 1


def concept_score(label: str, base_file: Path, lora_file: Path | None) -> Any:
    from demo.concept import score

    say(
        f"==> concept score {label.split(' ', 1)[0]}: drawing the 36 fixed images "
        f"(9 trigger prompts x seeds 0-3) with {base_file.name}"
        + (f" + {lora_file.name}" if lora_file else "")
    )
    scored = score(label, base_file, lora_file)
    say(f"    {scored.line()} [{scored.seconds:.0f} s]")
    return scored


def concept_summary(before: Any, after: Any, folder: Path) -> dict[str, Any]:
    from demo.concept import write_grid

    grids = {
        "before": write_grid(before, folder / "concept-before.png"),
        "after": write_grid(after, folder / "concept-after.png"),
        "side_by_side": write_grid(before, folder / "concept-before-after.png", beside=after),
    }
    verdict = "raises" if after.hits > before.hits else "does not raise"
    say(
        f"==> the published LoRA {verdict} the concept score: {before.score:.2f} -> "
        f"{after.score:.2f} ({before.hits} -> {after.hits} of {after.images} images orange)"
    )
    say(f"    base | base + LoRA, same prompts and seeds: {grids['side_by_side']}")
    return {
        "before": before.measure.to_dict(),
        "after": after.measure.to_dict(),
        "grids": {k: str(v) for k, v in grids.items()},
        "seconds": round(before.seconds + after.seconds, 1),
    }


if __name__ == "__main__":
    sys.exit(main())
