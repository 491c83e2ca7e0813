"""SecAgg+ mode (``aggregation = "secagg"``): Flower's legacy API, the same training code.

The server sees only the masked sum of the nodes' (example-weighted) adapters, never one
node's arrays: ``DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(...))`` with a legacy
``FedAvg`` on the server, a ``NumPyClient`` behind ``secaggplus_mod`` on the nodes. Arrays
travel as a bare list in the adapter's module order (both sides derive the names from the
AdapterSpec). The privacy check then applies to what can be checked: the aggregate's shapes
and every node's scalar metrics (which SecAgg+ leaves in clear).

Why one node's refusal fails a SecAgg+ round (written down rather than "fixed"): the server
only ever holds the masked sum. A node that refuses (its privacy budget is spent, its dataset
changed) after the key-sharing stage leaves pairwise masks in the others' vectors that can be
removed only by reconstructing its secret from ``reconstruction_threshold`` shares held by the
survivors. The jobs here run with few nodes (2-3) and ``num_shares = reconstruction_threshold
= 1.0`` (every node): with two nodes, going on without one would hand the server the other's
update in clear, which is exactly what SecAgg+ promised not to do; a lower threshold trades
that promise for dropout tolerance. So the legacy ``FedAvg`` runs with ``accept_failures =
False`` and the round (and the run) fails with the refusing node named; the readiness step
(:func:`.strategy.ready_for_rounds`) catches the common refusals (no budget set, dataset not in
the job, another owner's dataset) before round 1, when failing costs nothing. A reply whose
dataset its sender does not serve fails the round too: it cannot be taken out of a masked sum.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from flwr.app import Context, Message

from federated.engine.flower import state as saved
from federated.engine.flower.reply_check import ALLOWED_METRICS
from federated.engine.flower.settings import HEX64, ServerSettings

if TYPE_CHECKING:
    from flwr.serverapp import Grid

__all__ = ["legacy_client_app", "run_secagg"]

logger = logging.getLogger(__name__)


def _client_fn(context: Context):  # flwr's legacy Client type
    from flwr.client import NumPyClient

    from federated.engine.flower.settings import node_paths
    from federated.engine.flower.task import adapter_names, run_node_round

    class AdapterClient(NumPyClient):
        def fit(self, parameters, config):
            names = adapter_names(node_paths(context.node_config), context.run_config)
            reply = run_node_round(
                run_config=context.run_config,
                node_config=context.node_config,
                adapter_in=OrderedDict(zip(names, parameters, strict=True)),
                server_round=int(config.get("server-round", 0)),
                run_id=context.run_id,
            )
            return (
                [reply.arrays[n] for n in names],
                int(reply.metrics["num-examples"]),
                {**reply.metrics, "manifest-hash": reply.manifest_hash},
            )

    return AdapterClient().to_client()


def legacy_client_app(msg: Message, context: Context) -> Message:
    from flwr.client import ClientApp as LegacyClientApp
    from flwr.client.mod import secaggplus_mod

    return LegacyClientApp(client_fn=_client_fn, mods=[secaggplus_mod])(msg, context)


def run_secagg(grid: Grid, context: Context, settings: ServerSettings) -> dict[str, object]:
    from flwr.common import (
        FitRes,
        Parameters,
        Scalar,
        ndarrays_to_parameters,
        parameters_to_ndarrays,
    )
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.client_proxy import ClientProxy
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    from federated.engine.flower.strategy import (
        FederationFailed,
        JobModel,
        history_node_add_round,
        history_number,
        not_owned,
        ready_for_rounds,
    )

    out_dir = Path(settings.out_dir)
    model = JobModel.load(settings, dict(context.run_config))
    # The legacy workflow asks every connected node each round: nodes that fail to prepare
    # are reported, not left out (they refuse the round, which fails it under SecAgg+).
    extra: dict[str, object] = {}
    ready_for_rounds(grid, settings, extra)
    names, expected = list(model.initial), model.expected
    rounds: list[dict[str, object]] = []
    nodes: dict[str, dict[str, object]] = {}
    latest: dict[str, OrderedDict[str, np.ndarray]] = {"arrays": model.initial}
    round_started = [time.perf_counter()]

    class RecordingFedAvg(FedAvg):
        def aggregate_fit(
            self,
            server_round: int,
            results: list[tuple[ClientProxy, FitRes]],
            failures: list[tuple[ClientProxy, FitRes] | BaseException],
        ) -> tuple[Parameters | None, dict[str, Scalar]]:
            per_node: dict[str, dict[str, float]] = {}
            node_datasets: dict[str, str] = {}
            rejected: dict[str, list[str]] = {}
            for proxy, res in results:
                metrics = dict(res.metrics)
                sent_manifest = metrics.pop("manifest-hash", "")
                manifest = sent_manifest if isinstance(sent_manifest, str) else ""
                bad = [
                    k
                    for k, v in metrics.items()
                    if k not in ALLOWED_METRICS or isinstance(v, (str, bytes, bool))
                ]
                if not HEX64.match(manifest) or (
                    settings.dataset_manifests and manifest not in settings.dataset_manifests
                ):
                    bad.append("manifest-hash")
                elif not settings.sender_owns(str(proxy.cid), manifest):
                    # proxy.cid is the SuperLink's node id of the sender. The masked sum
                    # cannot leave one node out: the round fails (below).
                    bad.append(not_owned(str(proxy.cid), manifest))
                if bad:
                    rejected[str(proxy.cid)] = [
                        k if k.startswith("dataset_not_owned") else f"unexpected metric {k!r}"
                        for k in bad
                    ]
                    continue
                per_node[str(proxy.cid)] = {k: float(v) for k, v in metrics.items()}
                node_datasets[str(proxy.cid)] = manifest
            aggregated, metrics = super().aggregate_fit(server_round, results, failures)
            if aggregated is not None:
                arrays = parameters_to_ndarrays(aggregated)
                shapes_ok = len(arrays) == len(names) and all(
                    tuple(a.shape) == expected[n] for a, n in zip(arrays, names, strict=False)
                )
                if not shapes_ok or rejected:
                    raise FederationFailed(
                        f"round {server_round}: the SecAgg+ aggregate or a node's metrics "
                        f"failed the check ({rejected})"
                    )
                latest["arrays"] = OrderedDict(
                    (n, a.astype(np.float32)) for n, a in zip(names, arrays, strict=True)
                )
                for node, m in per_node.items():
                    history_node_add_round(nodes.setdefault(node, {"rounds": []}), server_round)
                    nodes[node]["manifest-hash"] = node_datasets[node]
                    nodes[node].update(
                        {
                            k: m[k]
                            for k in (
                                "epsilon",
                                "delta",
                                "num-examples",
                                "total-steps",
                                "noise-multiplier",
                            )
                            if k in m
                        }
                    )
                record = {
                    "round": server_round,
                    "nodes": per_node,
                    "node-datasets": node_datasets,
                    "accepted": len(per_node),
                    "failures": len(failures),
                    "seconds": time.perf_counter() - round_started[0],
                }
                rounds.append(record)
                saved.save_round(
                    out_dir,
                    server_round,
                    latest["arrays"],
                    {"history": {"job-id": settings.job_id, "rounds": rounds, "nodes": nodes}},
                )
                saved.post_progress(
                    settings.progress_url,
                    settings.progress_token,
                    {"job-id": settings.job_id, "status": "running", **record},
                )
                round_started[0] = time.perf_counter()
            return aggregated, metrics

    strategy = RecordingFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=settings.min_nodes,
        min_available_clients=settings.min_nodes,
        initial_parameters=ndarrays_to_parameters([model.initial[n] for n in names]),
        on_fit_config_fn=lambda r: {"server-round": r},
        accept_failures=False,
    )
    legacy = LegacyContext(
        context=context,
        config=ServerConfig(num_rounds=settings.num_rounds, round_timeout=settings.round_timeout),
        strategy=strategy,
    )
    workflow = DefaultWorkflow(
        fit_workflow=SecAggPlusWorkflow(
            num_shares=1.0, reconstruction_threshold=1.0, timeout=settings.round_timeout
        )
    )
    workflow(grid, legacy)
    if len(rounds) < settings.num_rounds:
        raise FederationFailed(f"SecAgg+ finished {len(rounds)} of {settings.num_rounds} rounds")
    epsilons = [
        history_number(n, "epsilon", -1)
        for n in nodes.values()
        if history_number(n, "epsilon", -1) >= 0
    ]
    steps = max((int(history_number(n, "total-steps", 0)) for n in nodes.values()), default=0)
    files = model.export(
        out_dir / "lora",
        latest["arrays"],
        steps=steps,
        manifests=sorted({str(n["manifest-hash"]) for n in nodes.values()}),
        epsilon=max(epsilons) if epsilons else None,
        noise=None,
        title=f"Atelier federated LoRA ({settings.job_id}, SecAgg+)",
    )
    result = {
        **extra,
        "job-id": settings.job_id,
        "rounds": rounds,
        "nodes": nodes,
        "status": "completed",
        "aggregation": "secagg",
        "num-server-rounds": settings.num_rounds,
        "final": files,
        "epsilon-max": max(epsilons) if epsilons else None,
    }
    saved.write_json(out_dir / saved.METRICS_FILE, result)
    saved.post_progress(
        settings.progress_url,
        settings.progress_token,
        {"job-id": settings.job_id, "status": "completed", "final": files},
    )
    return result
