"""Coordinator overhead: a federated job launched through the site vs the same run by hand.

    HF_HUB_OFFLINE=1 python bench/coordinator.py [--rounds 2] [--repeats 2] [--poll 2]
        [--out bench-coordinator.json]

Everything real, on loopback: PostgreSQL (a throw-away ``atelier_bench_<pid>`` database),
gunicorn serving the site, a Celery worker on Redis (``BENCH_REDIS_URL``, default
``redis://127.0.0.1:6379/14``), one SuperLink and two SuperNodes with generated datasets.

- by hand: ``flwr run`` with the job's settings (server and nodes read the base model from
  disk), timed from the call to ``flwr ls`` saying ``finished:completed``;
- through the site: ``POST /api/v1/federated/jobs`` (Idempotency-Key) timed until
  ``GET /api/v1/federated/jobs/<id>`` says ``completed`` (the LoRA published and the owners
  paid): Celery, ``job_run_config``, ``flwr run``, the ServerApp fetching the base model from
  the site with the job token, progress reports, polling every ``--poll`` seconds, publishing
  and settlement.

A first run by hand warms the nodes' caches (latents, model fingerprints); then hand and site
runs alternate ``--repeats`` times. Prints the medians, their ratio and difference (target:
at most 1.1x plus a few seconds) and writes everything as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._server import PYTHON, BenchEnv, Server, bench_env, create_user_and_token  # noqa: E402

IMAGES = 16
RESOLUTION = 32


def job_settings(rounds: int) -> dict[str, Any]:
    """The job's hyperparameters (the site's JobSpec fields), those of the federation tests."""
    return {
        "rounds": rounds,
        "local_steps": 8,
        "batch_size": 16,
        "learning_rate": 0.1,
        "rank": 1,
        "alpha": 1.0,
        "resolution": RESOLUTION,
        "max_grad_norm": 0.05,
        "target_epsilon": 8.0,
        "delta": 1e-5,
        "seed": 0,
        "adapter_mode": "ffa",
        "aggregation": "fedavg",
    }


def hand_run_config(
    settings: dict[str, Any], *, base_model: Path, out_dir: Path, manifests: list[str]
) -> dict[str, Any]:
    """The same run as ``flwr run`` keys, as an operator would write them by hand."""
    return {
        "dataset-manifests": ",".join(manifests),
        "num-server-rounds": settings["rounds"],
        "min-nodes": 2,
        "local-steps": settings["local_steps"],
        "batch-size": settings["batch_size"],
        "lr": settings["learning_rate"],
        "rank": settings["rank"],
        "alpha": settings["alpha"],
        "resolution": settings["resolution"],
        "adapter-mode": settings["adapter_mode"],
        "aggregation": settings["aggregation"],
        "seed": settings["seed"],
        "dp": "on",
        "dp-target-epsilon": settings["target_epsilon"],
        "dp-delta": settings["delta"],
        "dp-max-grad-norm": settings["max_grad_norm"],
        "dp-planned-rounds": settings["rounds"],
        "base-model-path": str(base_model),
        "out-dir": str(out_dir),
        "job-id": f"hand-{uuid.uuid4().hex[:8]}",
    }


def time_hand_run(fed: Any, config: dict[str, Any]) -> float:
    from federated.engine.superlink import run_status

    started = time.perf_counter()
    run_id = fed.submit(config)
    while True:
        status = run_status(str(run_id), fed.connection)
        if status.finished:
            break
        time.sleep(0.5)
    seconds = time.perf_counter() - started
    if not status.completed:
        raise RuntimeError(f"hand run failed: {status.status} {status.details}")
    return seconds


def time_site_run(base_url: str, token: str, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"}
    started = time.perf_counter()
    response = requests.post(
        f"{base_url}/api/v1/federated/jobs",
        json=body,
        timeout=60,
        headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    if response.status_code != 201:
        raise RuntimeError(f"launch refused: {response.status_code} {response.text[:2000]}")
    job_id = response.json()["id"]
    while True:
        detail = requests.get(
            f"{base_url}/api/v1/federated/jobs/{job_id}", headers=headers, timeout=60
        ).json()
        if detail["state"] in ("completed", "failed", "cancelled"):
            break
        time.sleep(0.5)
    seconds = time.perf_counter() - started
    if detail["state"] != "completed":
        raise RuntimeError(f"site job {job_id} ended {detail['state']}: {detail['failure_reason']}")
    return seconds, detail


def _site_data(bench: BenchEnv, server: Server, owners: list[Any], credits: int) -> dict[str, Any]:
    """A base model, two owners' nodes and datasets (through the API), a funded trainer."""
    out = bench.manage(
        "publish_tiny_model",
        "--owner",
        "creator",  # the same bytes (seed 0)
        "--out",
        str(bench.workdir / "tiny-site"),
    )
    match = re.search(r"version single-file: id (\d+)", out)
    if match is None:
        raise RuntimeError(f"no single-file version in: {out}")
    trainer_token = create_user_and_token(bench, "trainer")
    bench.shell(
        "from django.contrib.auth import get_user_model\n"
        "from marketplace.payments import DemoProvider\n"
        "from marketplace.services.ledger import wallet_top_up\n"
        "u = get_user_model().objects.get(username='trainer')\n"
        f"wallet_top_up(user=u, amount={credits}, provider=DemoProvider(), "
        "idempotency_key='bench-fund')\n"
    )
    from tests.federated.factories import openssh_public_key

    dataset_ids = []
    for index, owner in enumerate(owners):
        token = create_user_and_token(bench, f"owner{index}")
        headers = {"Authorization": f"Bearer {token}"}
        node = requests.post(
            f"{server.base_url}/api/v1/federated/nodes",
            headers=headers,
            json={"name": f"node {index}", "public_key": openssh_public_key()},
            timeout=60,
        ).json()
        listed = requests.post(
            f"{server.base_url}/api/v1/federated/datasets",
            headers=headers,
            timeout=60,
            json={
                "node_id": node["id"],
                "name": f"Shapes {index}",
                "manifest": owner.manifest,
                "terms": {
                    "price_per_example_round": 1,
                    "epsilon_per_job": 8.0,
                    "epsilon_lifetime": 1000.0,
                },
            },
        )
        if listed.status_code != 201:
            raise RuntimeError(f"listing refused: {listed.text[:2000]}")
        dataset_ids.append(listed.json()["dataset_version_id"])
    return {
        "base_version_id": int(match.group(1)),
        "dataset_version_ids": dataset_ids,
        "trainer_token": trainer_token,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--poll", type=float, default=2.0, help="ATELIER_JOB_POLL_SECONDS of the coordinator"
    )
    parser.add_argument("--out", default="bench-coordinator.json")
    args = parser.parse_args()

    from federated.engine.localfed import LocalFederation
    from sdcore.tiny import TINY_SINGLE_FILE_NAME, save_tiny_model
    from tests.federated.live import owners_data

    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    settings = job_settings(args.rounds)
    with bench_env("coordinator") as bench:
        base_model = save_tiny_model(bench.workdir / "tiny", seed=0).single_file
        assert base_model.name == TINY_SINGLE_FILE_NAME
        owners = owners_data(bench.workdir / "owners", base_model=base_model)
        with LocalFederation([o.spec for o in owners], bench.workdir / "fed") as fed:
            bench.env.update(
                {
                    "CELERY_BROKER_URL": redis_url,
                    "CELERY_TASK_DEFAULT_QUEUE": queue,
                    "ATELIER_SUPERLINK": f"127.0.0.1:{fed.port}",
                    # TLS and node authentication, as in production: the site trusts the
                    # federation's CA; LocalFederation registered its own nodes' keys.
                    "ATELIER_SUPERLINK_INSECURE": "0",
                    "ATELIER_SUPERLINK_ROOT_CERTIFICATES": str(
                        fed.certs.ca_cert if fed.certs else ""
                    ),
                    "ATELIER_SUPERLINK_NODE_AUTH": "0",
                    "ATELIER_FLWR_HOME": str(bench.workdir / "site-flwr"),
                    "ATELIER_FEDERATION_DIR": str(bench.workdir / "federation"),
                    "ATELIER_JOB_POLL_SECONDS": str(args.poll),
                    "ATELIER_RATE_API": "100000/min",
                }
            )
            with Server(bench, workers=2) as server:
                bench.env["ATELIER_SITE_URL"] = server.base_url
                log = open(bench.workdir / "celery.log", "wb")  # closed below
                worker = subprocess.Popen(
                    [
                        PYTHON,
                        "-m",
                        "celery",
                        "-A",
                        "config",
                        "worker",
                        "-P",
                        "solo",
                        "-Q",
                        queue,
                        "--without-heartbeat",
                        "--without-gossip",
                        "--without-mingle",
                        "-l",
                        "INFO",
                    ],
                    cwd=ROOT,
                    env=bench.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
                try:
                    data = _site_data(bench, server, owners, credits=1_000_000)
                    body = {
                        "name": "Bench LoRA",
                        "use": "style",
                        "trigger_word": "sks",
                        "base_version_id": data["base_version_id"],
                        "dataset_version_ids": data["dataset_version_ids"],
                        **settings,
                    }
                    manifests = [o.manifest_hash for o in owners]
                    warm = time_hand_run(
                        fed,
                        hand_run_config(
                            settings,
                            base_model=base_model,
                            out_dir=bench.workdir / "warm",
                            manifests=manifests,
                        ),
                    )
                    print(f"warm-up run by hand: {warm:.1f} s", flush=True)
                    hand: list[float] = []
                    site: list[float] = []
                    for i in range(args.repeats):
                        hand.append(
                            time_hand_run(
                                fed,
                                hand_run_config(
                                    settings,
                                    base_model=base_model,
                                    out_dir=bench.workdir / f"h{i}",
                                    manifests=manifests,
                                ),
                            )
                        )
                        seconds, _ = time_site_run(server.base_url, data["trainer_token"], body)
                        site.append(seconds)
                        print(
                            f"repeat {i + 1}: by hand {hand[-1]:.1f} s, through the site "
                            f"{site[-1]:.1f} s",
                            flush=True,
                        )
                finally:
                    worker.terminate()
                    worker.wait(timeout=30)
                    log.close()
    hand_median, site_median = statistics.median(hand), statistics.median(site)
    report = {
        "settings": {**vars(args), **settings, "images-per-node": IMAGES, "nodes": 2},
        "load-average": os.getloadavg()[0],
        "hand-seconds": hand,
        "site-seconds": site,
        "warm-up-seconds": warm,
        "hand-median": hand_median,
        "site-median": site_median,
        "ratio": site_median / hand_median,
        "difference-seconds": site_median - hand_median,
    }
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(
        f"coordinator overhead: through the site {site_median:.1f} s vs by hand "
        f"{hand_median:.1f} s = {report['ratio']:.2f}x (+{report['difference-seconds']:.1f} s); "
        "target <= 1.1x + a few seconds"
    )


if __name__ == "__main__":
    main()
