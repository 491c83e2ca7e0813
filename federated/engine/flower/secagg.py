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

import dataclasses
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from flwr.app import Context, Message

from federated.engine.flower import state as saved
from federated.engine.flower.reply_check import ALLOWED_METRICS
from federated.engine.flower.settings import HEX64, ServerSettings
from federated.engine.flower.strategy import (
    NODE_HISTORY_KEYS,
    FederationFailed,
    JobModel,
    RoundSamples,
    history_node_add_round,
    not_owned,
    privacy_summary,
    ready_for_rounds,
    report_round,
)
from federated.engine.rounds import RoundRecord

if TYPE_CHECKING:
    from flwr.server.strategy import FedAvg
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


@dataclass
class SecAggRecorder:
    """What the SecAgg+ rounds leave: the checked per-node metrics, the latest aggregate, the
    history; each round saved and reported as in FedAvg mode."""

    settings: ServerSettings
    model: JobModel
    samples: RoundSamples
    rounds: list[RoundRecord] = field(default_factory=list)
    nodes: dict[str, dict[str, object]] = field(default_factory=dict)
    arrays: OrderedDict[str, np.ndarray] = field(default_factory=OrderedDict)
    round_started: float = field(default_factory=time.perf_counter)

    def node_problems(self, node: str, metrics: dict[str, object]) -> list[str]:
        """Why one node's (clear) metrics fail the check; pops its ``manifest-hash``."""
        settings = self.settings
        sent = metrics.pop("manifest-hash", "")
        manifest = sent if isinstance(sent, str) else ""
        bad = [
            f"unexpected metric {k!r}"
            for k, v in metrics.items()
            if k not in ALLOWED_METRICS or isinstance(v, (str, bytes, bool))
        ]
        if not HEX64.match(manifest) or (
            settings.dataset_manifests and manifest not in settings.dataset_manifests
        ):
            bad.append("unexpected metric 'manifest-hash'")
        elif not settings.sender_owns(node, manifest):
            # node is the SuperLink's id of the sender. The masked sum cannot leave one
            # node out: the round fails.
            bad.append(not_owned(node, manifest))
        metrics["manifest-hash"] = manifest
        return bad

    def check(
        self, results: list[tuple[str, dict[str, object]]]
    ) -> tuple[dict[str, dict[str, float]], dict[str, str], dict[str, list[str]]]:
        """(accepted metrics, their datasets, rejections) of one round's (node, metrics)."""
        per_node: dict[str, dict[str, float]] = {}
        node_datasets: dict[str, str] = {}
        rejected: dict[str, list[str]] = {}
        for node, sent in results:
            metrics = dict(sent)
            bad = self.node_problems(node, metrics)
            if bad:
                rejected[node] = bad
                continue
            node_datasets[node] = str(metrics.pop("manifest-hash"))
            per_node[node] = {k: float(v) for k, v in metrics.items()}  # type: ignore[arg-type]  # checked numbers
        return per_node, node_datasets, rejected

    def record(
        self,
        server_round: int,
        aggregate: list[np.ndarray],
        results: list[tuple[str, dict[str, object]]],
        failures: int,
    ) -> None:
        """Check the round, keep its aggregate, draw its grid, save and report it."""
        names, expected = list(self.model.initial), self.model.expected
        per_node, node_datasets, rejected = self.check(results)
        shapes_ok = len(aggregate) == len(names) and all(
            tuple(a.shape) == expected[n] for a, n in zip(aggregate, names, strict=False)
        )
        if not shapes_ok or rejected:
            raise FederationFailed(
                f"round {server_round}: the SecAgg+ aggregate or a node's metrics "
                f"failed the check ({rejected})"
            )
        self.arrays = OrderedDict(
            (n, a.astype(np.float32)) for n, a in zip(names, aggregate, strict=True)
        )
        for node, m in per_node.items():
            entry = self.nodes.setdefault(node, {"rounds": []})
            history_node_add_round(entry, server_round)
            entry["manifest-hash"] = node_datasets[node]
            entry.update({k: m[k] for k in NODE_HISTORY_KEYS if k in m})
        record = RoundRecord(
            round=server_round,
            nodes=per_node,
            node_datasets=node_datasets,
            failures=failures,
            seconds=time.perf_counter() - self.round_started,
        )
        record = dataclasses.replace(
            record, sample_grid=self.samples.draw(server_round, self.arrays)
        )
        self.rounds.append(record)
        report_round(
            self.settings,
            record,
            self.arrays,
            {
                "job-id": self.settings.job_id,
                "rounds": [r.to_dict() for r in self.rounds],
                "nodes": self.nodes,
            },
        )
        self.round_started = time.perf_counter()


def _recording_fedavg(recorder: SecAggRecorder) -> FedAvg:
    """Flower's legacy ``FedAvg`` (every node, no failure accepted) that hands each round's
    aggregate to ``recorder``."""
    from flwr.common import (
        FitRes,
        Parameters,
        Scalar,
        ndarrays_to_parameters,
        parameters_to_ndarrays,
    )
    from flwr.server.client_proxy import ClientProxy
    from flwr.server.strategy import FedAvg

    class RecordingFedAvg(FedAvg):
        def aggregate_fit(
            self,
            server_round: int,
            results: list[tuple[ClientProxy, FitRes]],
            failures: list[tuple[ClientProxy, FitRes] | BaseException],
        ) -> tuple[Parameters | None, dict[str, Scalar]]:
            aggregated, metrics = super().aggregate_fit(server_round, results, failures)
            if aggregated is not None:
                recorder.record(
                    server_round,
                    parameters_to_ndarrays(aggregated),
                    [(str(proxy.cid), dict(res.metrics)) for proxy, res in results],
                    len(failures),
                )
            return aggregated, metrics

    settings = recorder.settings
    return RecordingFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=settings.min_nodes,
        min_available_clients=settings.min_nodes,
        initial_parameters=ndarrays_to_parameters(list(recorder.model.initial.values())),
        on_fit_config_fn=lambda r: {"server-round": r},
        accept_failures=False,
    )


def run_secagg(grid: Grid, context: Context, settings: ServerSettings) -> dict[str, object]:
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    model = JobModel.load(settings, dict(context.run_config))
    # The legacy workflow asks every connected node each round: nodes that fail to prepare
    # are reported, not left out (they refuse the round, which fails it under SecAgg+).
    extra: dict[str, object] = {}
    ready_for_rounds(grid, settings, extra)
    samples = RoundSamples(model=model, spec=settings.sample_grid, out_dir=Path(settings.out_dir))
    recorder = SecAggRecorder(settings, model, samples, arrays=model.initial)
    legacy = LegacyContext(
        context=context,
        config=ServerConfig(num_rounds=settings.num_rounds, round_timeout=settings.round_timeout),
        strategy=_recording_fedavg(recorder),
    )
    workflow = DefaultWorkflow(
        fit_workflow=SecAggPlusWorkflow(
            num_shares=1.0, reconstruction_threshold=1.0, timeout=settings.round_timeout
        )
    )
    workflow(grid, legacy)
    if len(recorder.rounds) < settings.num_rounds:
        raise FederationFailed(
            f"SecAgg+ finished {len(recorder.rounds)} of {settings.num_rounds} rounds"
        )
    from federated.engine.flower.release import check_secagg_release

    withheld = check_secagg_release(grid, context.run_config, recorder, extra)  # a veto: no export
    return withheld if withheld is not None else _finish_secagg(recorder, extra)


def _finish_secagg(recorder: SecAggRecorder, extra: dict[str, object]) -> dict[str, object]:
    """Export the LoRA, write ``metrics.json`` and post the final report."""
    settings, nodes = recorder.settings, recorder.nodes
    out_dir = Path(settings.out_dir)
    epsilon, _, steps = privacy_summary(nodes)
    files = recorder.model.export(
        out_dir / "lora",
        recorder.arrays,
        steps=steps,
        manifests=sorted({str(n["manifest-hash"]) for n in nodes.values()}),
        epsilon=epsilon,
        noise=None,
        title=f"Atelier federated LoRA ({settings.job_id}, SecAgg+)",
    )
    result = {
        **extra,
        **recorder.samples.to_dict(),
        "job-id": settings.job_id,
        "rounds": [r.to_dict() for r in recorder.rounds],
        "nodes": nodes,
        "status": "completed",
        "aggregation": "secagg",
        "num-server-rounds": settings.num_rounds,
        "final": files,
        "epsilon-max": epsilon,
    }
    saved.write_json(out_dir / saved.METRICS_FILE, result)
    saved.post_progress(
        settings.progress_url,
        settings.progress_token,
        {"job-id": settings.job_id, "status": "completed", "final": files},
    )
    return result
