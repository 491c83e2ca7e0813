"""Flower apps of the federated LoRA trainer.

``server_app`` and ``client_app`` are thin (they read ``context.run_config`` and
``context.node_config`` and move records); the work is in modules that import neither Flower
nor Django: :mod:`.settings` (run config -> training config), :mod:`.task` (one node round),
:mod:`.aggregate` (FedAvg), :mod:`.reply_check` (what a reply may contain), :mod:`.state`
(saved rounds, metrics file, progress reports), :mod:`.credentials` (the ServerApp's tokens and
the SuperLink node id -> datasets map, in a 0600 file in its out-dir: never in the run config
that every node reads). :mod:`.strategy` drives the Message-API
rounds; :mod:`.secagg` is the SecAgg+ mode on Flower's legacy API.
"""
