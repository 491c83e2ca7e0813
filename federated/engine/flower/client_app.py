"""ClientApp (one per SuperNode): train on the node's private data, reply arrays + scalars.

Thin: paths come from ``context.node_config`` (``dataset-path`` and/or ``node-file``,
``cache-dir``, ``ledger-path``, optional ``base-model-path``), the job's settings from
``context.run_config``; the round itself is :func:`federated.engine.flower.task.run_node_round`.
A round the node's privacy ledger does not allow (or any engine check that fails) is answered
with a Flower ``Error`` whose reason says why (``privacy_budget_exceeded: ...``): the node
refuses even when the server asks.

A query message (``action = "prepare"``, sent by the ServerApp before round 1) makes the node
ready: pick the job's dataset, fetch the base model, build the latent cache
(:func:`federated.engine.flower.task.prepare_node`). The reply holds only the dataset's public
manifest hash, where the model came from, and the seconds it took.

Imports are lean at module load (Flower only); torch, diffusers and opacus are imported when a
train message arrives, once per (fresh) process.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    MetricRecordValues,
    RecordDict,
)
from flwr.clientapp import ClientApp

from federated.engine.flower.reply_check import (
    ARRAY_RECORD,
    INFO_RECORD,
    METRIC_RECORD,
    PACKED_ARRAY,
    pack,
    unpack,
)

logger = logging.getLogger(__name__)

# Flower error codes of this app (Flower's own are below 1000).
NODE_REFUSED = 4001
NODE_FAILED = 4002

app = ClientApp()


def _refusal(err: Exception) -> tuple[int, str]:
    """The Flower error code and reason of an engine error (refusals vs. failures)."""
    from federated.engine.errors import DatasetNotInJobError, EngineError, PrivacyError

    if isinstance(err, EngineError):
        refused = isinstance(err, PrivacyError | DatasetNotInJobError)
        return (NODE_REFUSED if refused else NODE_FAILED), f"{err.code}: {err.message}"
    return NODE_FAILED, f"node_error: {type(err).__name__}: {err}"


@app.query()
def query(msg: Message, context: Context) -> Message:
    from federated.engine.flower.task import prepare_node

    config = msg.content.config_records.get("config", ConfigRecord())
    action = str(config.get("action", ""))
    if action == "release-check":
        return _release_check(msg, context)
    if action != "prepare":
        return Message(Error(code=NODE_FAILED, reason=f"unknown_query: {action!r}"), reply_to=msg)
    try:
        ready = prepare_node(run_config=context.run_config, node_config=context.node_config)
    except Exception as err:  # every failure is reported to the server, none kills the node
        code, reason = _refusal(err)
        logger.warning("prepare failed: %s", reason)
        return Message(Error(code=code, reason=reason), reply_to=msg)
    logger.info(
        "ready for the job: dataset %s..., model %s, %.1f s",
        ready.manifest_hash[:12],
        ready.model_source,
        ready.seconds,
    )
    content = RecordDict(
        {
            METRIC_RECORD: MetricRecord({"seconds": ready.seconds}),
            INFO_RECORD: ConfigRecord(
                {"manifest-hash": ready.manifest_hash, "model-source": ready.model_source}
            ),
        }
    )
    return Message(content, reply_to=msg)


def _release_check(msg: Message, context: Context) -> Message:
    """The release check (:mod:`.release_node`): the reply is one verdict
    (``allow`` or ``veto``) and a reason code; no score, no image, no caption leaves the node."""
    from federated.engine.flower.release_node import node_release_check

    record = msg.content.array_records.get(ARRAY_RECORD)
    if not record:
        return Message(Error(code=NODE_FAILED, reason="release_check: no adapter"), reply_to=msg)
    try:
        verdict = node_release_check(
            run_config=context.run_config,
            node_config=context.node_config,
            arrays={name: array.numpy() for name, array in record.items()},
            run_id=context.run_id,
        )
    except Exception as err:  # the server counts an error as no objection
        code, reason = _refusal(err)
        logger.warning("release check failed: %s", reason)
        return Message(Error(code=code, reason=reason), reply_to=msg)
    answer: dict[str, Any] = dict(verdict.reply())  # strings only: ConfigRecord's value union
    return Message(RecordDict({INFO_RECORD: ConfigRecord(answer)}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    if str(context.run_config.get("aggregation", "fedavg")) == "secagg":
        from federated.engine.flower.secagg import legacy_client_app

        return legacy_client_app(msg, context)

    from federated.engine.errors import EngineError
    from federated.engine.flower.task import run_node_round

    started = time.perf_counter()
    config = msg.content.config_records.get("config", ConfigRecord())
    server_round = int(config.get("server-round", 0))  # type: ignore[arg-type]  # int sent by the server
    record = msg.content.array_records.get(ARRAY_RECORD)
    adapter_in = {name: array.numpy() for name, array in record.items()} if record else None
    packed = adapter_in is not None and PACKED_ARRAY in adapter_in
    try:
        if packed:
            from federated.engine.flower.settings import node_paths
            from federated.engine.flower.task import adapter_layout

            layout = adapter_layout(node_paths(context.node_config), context.run_config)
            unpacked = unpack(adapter_in, layout)  # type: ignore[arg-type]  # not None when packed
            if isinstance(unpacked, str):
                return Message(
                    Error(code=NODE_FAILED, reason=f"adapter_mismatch: {unpacked}"), reply_to=msg
                )
            adapter_in = unpacked
        reply = run_node_round(
            run_config=context.run_config,
            node_config=context.node_config,
            adapter_in=adapter_in,
            server_round=server_round,
            run_id=context.run_id,
        )
    except EngineError as err:
        code, reason = _refusal(err)
        logger.warning("round %s refused: %s", server_round, err)
        return Message(Error(code=code, reason=reason), reply_to=msg)
    metrics: dict[str, MetricRecordValues] = dict(reply.metrics)
    metrics["message-seconds"] = (
        time.perf_counter() - started
    )  # model loading included; "seconds" is train_round
    content = RecordDict(
        {
            ARRAY_RECORD: ArrayRecord(
                {
                    name: Array(value)
                    for name, value in (pack(reply.arrays) if packed else reply.arrays).items()
                }
            ),
            METRIC_RECORD: MetricRecord(metrics),
            INFO_RECORD: ConfigRecord({"manifest-hash": reply.manifest_hash}),
        }
    )
    return Message(content, reply_to=msg)
