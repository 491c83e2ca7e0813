"""ServerApp: FedAvg of LoRA adapters over the job's SuperNodes, or SecAgg+.

Thin: reads ``context.run_config`` and hands over to :func:`.strategy.run_fedavg` (Message API,
per-node records and a privacy check on every reply) or :func:`.secagg.run_secagg` (legacy
API workflow). An exception here ends the run as ``finished:failed`` with the reason in
``flwr ls``'s status details.
"""

from __future__ import annotations

import logging

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from federated.engine.flower.settings import ServerSettings

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    logging.basicConfig(level=logging.INFO)
    settings = ServerSettings.from_run_config(context.run_config, run_id=context.run_id)
    if settings.aggregation == "secagg":
        from federated.engine.flower.secagg import run_secagg

        run_secagg(grid, context, settings)
    else:
        from federated.engine.flower.strategy import run_fedavg

        run_fedavg(grid, context, settings)
