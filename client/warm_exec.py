"""A warm executor of ClientApps for a SuperNode in Flower's ``process`` isolation mode.

Flower's own executor (``flower-superexec``) starts a fresh ``flwr-clientapp`` process for
every message: Python, then torch, diffusers, transformers, peft and opacus are imported again
each time (seconds per message on a small machine). This one imports them once, then asks the
SuperNode's runtime API for tasks as ``flower-superexec`` does (``AcquireTask``), and runs each
task in a child forked from the warm process: the child calls Flower's own ``run_clientapp``
with the task's token, so the ClientApp, its privacy ledger and its refusals run exactly as in
a fresh process; only the imports are already done. A child that crashes takes nothing else
with it; the SuperNode reports its task failed. ``atelier node start`` starts this process
next to ``flower-supernode --isolation process`` and restarts it if it dies.

    python -m client.warm_exec --runtime-api-address 127.0.0.1:9094 [--parent-pid PID]
        [--preload-model PATH --cache-dir DIR]

``--preload-model``: the node's own base model, loaded once in the warm process on a CPU node
(a message for a job on that model then starts with it in memory, shared copy-on-write with
the forked child, instead of loading it again: ~3 s a message on the tiny model under load).
Not on a GPU node: CUDA cannot be used in a child forked after CUDA was initialised, so there
the child loads the model itself. A job on another model loads its own, as before.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import time
from pathlib import Path

__all__ = ["main", "serve"]

log = logging.getLogger("atelier.warm_exec")
POLL_SECONDS = 0.2  # between AcquireTask calls (Flower's executor: 1 s); a local request


# What a ClientApp imports on its way to a round (the task module imports most lazily).
WARM_MODULES = (
    "torch",
    "numpy",
    "diffusers",
    "transformers",
    "peft",
    "opacus",
    "federated.engine.flower.client_app",
    "federated.engine.flower.task",
    "federated.engine.trainer",
    "federated.engine.adapter",
    "federated.engine.cache",
    "federated.engine.dataset",
    "federated.engine.dp",
    "federated.engine.fetch",
    "federated.engine.ledger",
    "flwr.supernode.runtime.run_clientapp",
)


def _warm_up(model: str | None = None, cache_dir: str | None = None) -> None:
    """Import what every ClientApp imports; a module that is missing is left to the task.

    With ``model`` (and the node's ``cache_dir``), also load that base model the way the
    trainer does, on a CPU node (see the module doc)."""
    for name in WARM_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            log.warning("not preloaded: %s (%s)", name, exc)
    try:
        from federated.engine.flower.fast_supernode import shorten_pull_backoff

        shorten_pull_backoff()  # inherited by every forked ClientApp
    except ImportError as exc:
        log.warning("Flower's pull backoff unchanged (%s)", exc)
    if not model:
        return
    try:
        import torch

        from federated.engine.constants import default_device
        from federated.engine.trainer import load_base

        if default_device() != "cpu":  # never initialise CUDA in a process that forks
            log.info("not preloading %s: the device is %s", model, default_device())
            return
        load_base(
            Path(model),
            device=torch.device("cpu"),
            dtype=torch.float32,
            cache_dir=Path(cache_dir) if cache_dir else Path(model).parent,
        )
        log.info("preloaded the base model %s", model)
    except Exception:  # a model that cannot load here is the task's to report
        log.exception("could not preload the base model %s", model)


def _reap(children: set[int]) -> None:
    for pid in list(children):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            children.discard(pid)


def _run_child(address: str, token: str) -> None:
    """In the forked child: one ClientApp task, then exit (never back into the loop)."""
    code = 0
    try:
        from flwr.supernode.runtime.run_clientapp import run_clientapp

        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        run_clientapp(runtime_api_address=address, token=token, insecure=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    except BaseException:  # the task's status was pushed by run_clientapp's exit handler
        logging.getLogger("atelier.warm_exec").exception("ClientApp task failed")
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve(
    address: str,
    *,
    parent_pid: int | None = None,
    model: str | None = None,
    cache_dir: str | None = None,
) -> None:
    """Warm up, then run every ClientApp task the SuperNode at ``address`` hands out."""
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient

    started = time.perf_counter()
    _warm_up(model, cache_dir)
    log.info("warm in %.1f s; runtime API %s", time.perf_counter() - started, address)
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    children: set[int] = set()
    client = RuntimeHttpClient.from_server_address(
        server_address=address,
        insecure=True,
        root_certificates=None,
        interceptors=[],
        retry_invoker=make_simple_http_retry_invoker(),
    )
    try:
        while not stopping:
            _reap(children)
            if parent_pid is not None and os.getppid() != parent_pid:
                break  # the node that started us is gone
            response = client.AcquireTask(
                AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP.value])
            )
            if response.HasField("task") and response.token:
                pid = os.fork()
                if pid == 0:
                    client = None  # type: ignore[assignment]  # the parent's connection
                    _run_child(address, response.token)
                children.add(pid)
                log.info("task %d: ClientApp in process %d", response.task.task_id, pid)
                continue
            time.sleep(POLL_SECONDS)
    finally:
        if client is not None:
            client.close()
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while children and time.monotonic() < deadline:
            _reap(children)
            time.sleep(0.1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m client.warm_exec", description=__doc__)
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument("--preload-model", default=None, help="the node's base model (CPU)")
    parser.add_argument("--cache-dir", default=None, help="the node's cache folder")
    args = parser.parse_args(argv)
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # a data owner's node phones no one
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per poll
    serve(
        args.runtime_api_address,
        parent_pid=args.parent_pid,
        model=args.preload_model,
        cache_dir=args.cache_dir,
    )


if __name__ == "__main__":
    main()
