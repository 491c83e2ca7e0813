"""ServerApp: FedAvg of LoRA adapters over the job's SuperNodes, or SecAgg+.

Thin: reads ``context.run_config`` (nothing secret) and the job's credentials file in its
out-dir on the SuperLink host (:mod:`.credentials`: the progress token, the job token, which
datasets each SuperLink node id serves), and hands over to :func:`.strategy.run_fedavg`
(Message API, per-node records and a privacy check on every reply) or
:func:`.secagg.run_secagg` (legacy API workflow). An exception here ends the run as
``finished:failed`` with the reason in ``flwr ls``'s status details.
"""

from __future__ import annotations

import dataclasses
import logging

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from federated.engine.flower.credentials import load_credentials
from federated.engine.flower.fast_supernode import shorten_pull_backoff
from federated.engine.flower.settings import ServerSettings

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # Not a line per HTTP request: Flower pushes this process's log to the SuperLink over
    # HTTP, so each push would log a line that the next push sends (a push every interval
    # for the whole run, and a run log made mostly of them)
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    shorten_pull_backoff()  # the replies' objects: 0.05 s, not 1 s, when not there yet
    settings = ServerSettings.from_run_config(context.run_config, run_id=context.run_id)
    credentials = load_credentials(settings.out_dir, settings.job_id)
    settings = dataclasses.replace(
        settings,
        progress_token=credentials.progress_token,
        job_token=credentials.job_token,
        senders=credentials.senders,
    )
    if settings.aggregation == "secagg":
        from federated.engine.flower.secagg import run_secagg

        run_secagg(grid, context, settings)
    else:
        from federated.engine.flower.strategy import run_fedavg

        run_fedavg(grid, context, settings)
