"""The end of a job whose release a data owner's node vetoed (issue #17, the release check).

The ServerApp asks every node that trained to check the final LoRA against its own images
(``federated/engine/release_check.py`` on the node, ``federated/engine/flower/release.py`` on
the server). One veto and the run ends with ``metrics.json`` saying ``status = "withheld"`` and
no LoRA exported; the coordinator then calls :func:`job_withhold` instead of publishing.

What is fair, and why (docs/data-owner.md says it to owners):
- Nothing is published and the trainer gets no adapter: that is what the veto is for.
- Owners whose nodes did not veto are paid for the rounds they trained, as when a run fails:
  they spent compute and privacy budget in good faith.
- A dataset whose node vetoed earns nothing in that job (its share is refunded to the trainer).
  A veto cannot be checked by anyone but its node (the images never leave it), so it must not
  be free: an owner who vetoes every job earns nothing from any of them. An owner whose images
  really were reproduced gives up one job's pay to keep them private.
- The job says how many nodes were asked and how many vetoed; never which image, nor a score
  (the node sends neither).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from django.db import transaction

from federated.engine.flower.settings import HEX64
from federated.models import FederatedJob, JobDataset
from federated.services.jobs import _finish, lock_for_finish

__all__ = ["job_withhold", "run_release_withheld"]

State = FederatedJob.State
MAX_METRICS_BYTES = 16 * 1024 * 1024
COUNTS = (
    ("asked", "asked"),
    ("allowed", "allowed"),
    ("vetoed", "vetoed"),
    ("no-answer", "no_answer"),
)


def run_release_withheld(out_dir: Path) -> dict[str, Any] | None:
    """The release check of a run whose ``metrics.json`` says ``withheld``; else None."""
    path = Path(out_dir) / "metrics.json"
    try:
        if path.stat().st_size > MAX_METRICS_BYTES:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("status") != "withheld":
        return None
    report = data.get("release-check")
    return dict(report) if isinstance(report, dict) else {}


def _count(report: Mapping[str, Any], key: str) -> int:
    value = report.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0
    return max(0, min(int(value), 10**6))


def job_withhold(*, job: FederatedJob, out_dir: Path, report: Mapping[str, Any]) -> FederatedJob:
    """running -> withheld: nothing published; the vetoing datasets forfeit their earnings,
    the others are paid for their rounds, the rest is refunded. A finished job is returned
    unchanged (a second call pays nothing)."""
    with transaction.atomic():
        locked = lock_for_finish(job)
        if locked.is_terminal:
            return locked
        raw = report.get("vetoed-datasets", [])
        vetoed = {str(h) for h in raw if HEX64.match(str(h))} if isinstance(raw, list) else set()
        JobDataset.objects.filter(job=locked, manifest_hash__in=vetoed).update(release_vetoed=True)
        counts = {name: _count(report, key) for key, name in COUNTS}
        counts["vetoed"] = max(counts["vetoed"], 1)  # withheld means at least one veto
        locked.release_check = counts
        locked.out_dir = str(out_dir)
        locked.save(update_fields=["release_check", "out_dir", "updated_at"])
        _finish(
            locked,
            State.WITHHELD,
            f"Release withheld: {counts['vetoed']} of {counts['asked']} data owners' nodes found "
            "their images reproduced by the LoRA. Vetoing datasets earn nothing in this job; "
            "the others are paid for the rounds they trained.",
        )
        return locked
