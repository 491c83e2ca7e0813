"""The federated REST API under ``/api/v1/federated/`` (routes in ``urls.py``), a module per
resource: ``nodes``, ``datasets`` (private datasets and their terms), ``earnings``, ``jobs``
(estimate, launch, detail, cancel), ``job_run`` (the ServerApp's progress reports, the base
model for nodes), ``approvals``.

Thin: parse, call one service or selector, render. Nodes authenticate with their node token
(also to fetch the base model of a job they serve), the ServerApp with the job's progress and
job tokens from its credentials file (never the run config, which every node reads).
"""
