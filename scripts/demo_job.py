"""The demo's trainer (``make demo``): launch a small federated LoRA job with DP-SGD through the
site's REST API, follow it round by round, and show what it published and who it paid.

    demo_job.py --site URL --username trainer --password-stdin --owners owner1,owner2 \
        [--rounds 3] [--epsilon 8] [--summary FILE] [--timeout 900]

Only what any API client can do: a token from ``POST /api/v1/auth/tokens``, the base model from
the catalogue (``/api/v1/models``), the owners' listed datasets (``/api/v1/federated/datasets``),
an estimate, the launch (``POST /api/v1/federated/jobs``, with an Idempotency-Key), then
``/api/v1/federated/jobs/<id>/progress`` until the job is finished. A job of an earlier demo run
that is still queued or running (the demo was stopped mid-job) is cancelled first: owners are
paid for the rounds it completed and the rest is refunded.

Exit status 0 when the job completed and published its LoRA, 1 otherwise. ``--summary``
writes the job's final detail (JSON) and the URLs for scripts and tests.
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
ACTIVE = ("queued", "running", "publishing")
TERMINAL = ("completed", "failed", "cancelled")
JOB_NAME = "Demo: atlr (orange shapes) LoRA"


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

    def base_version(self) -> int:
        owner, name, version_name = BASE_MODEL
        listed = self.get("/api/v1/models", creator=owner, page_size="100")
        for item in listed.get("results", []):
            if item.get("name") == name:
                model = self.api.model_get(int(item["id"]))
                for version in model.versions:
                    if version.name == version_name:
                        return version.id
        raise AtelierError(f"No {version_name!r} version of {owner}'s {name!r}: run demo_seed.")

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
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epsilon", type=float, default=8.0)
    parser.add_argument("--summary", help="write the finished job's detail here (JSON)")
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
        "base_version_id": trainer.base_version(),
        "dataset_version_ids": [int(d["dataset_version_id"]) for d in datasets],
        "use": "style",
        "trigger_word": "atlr",  # the owners' concept (orange figures)
        "rounds": args.rounds,
        "dp": True,
        "target_epsilon": args.epsilon,
        # The tiny model's settings (tests/federated/live.py): per-sample gradient norms are
        # about 0.08, so DP-SGD clips at 0.05 or it learns nothing.
        "local_steps": 4,
        "batch_size": 16,
        "learning_rate": 0.1,
        "rank": 1,
        "alpha": 1.0,
        "resolution": 64,  # the shapes base model's native size
        "max_grad_norm": 0.05,
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
    if args.summary:
        Path(args.summary).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
