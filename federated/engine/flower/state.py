"""What the ServerApp keeps on disk: ``round-N.npz`` per round, ``state.json``, ``metrics.json``.

``state.json`` names the last saved round and holds the history, so a restarted ServerApp given
``resume-from`` (that folder) continues at the next round with the saved adapter. Progress
reports are POSTed as JSON with a bearer token; a failed POST is logged, never fatal.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = ["load_state", "post_progress", "save_round", "write_json"]

logger = logging.getLogger(__name__)
STATE_FILE = "state.json"
METRICS_FILE = "metrics.json"


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str), encoding="utf-8")
    os.replace(tmp, path)


def save_round(
    out_dir: Path, round_index: int, arrays: Mapping[str, np.ndarray], state: dict[str, object]
) -> Path:
    """Write ``round-N.npz`` then ``state.json`` pointing at it (in that order: crash-safe)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"round-{round_index}.npz"
    tmp = out_dir / f".round-{round_index}.tmp.npz"
    # numpy's stub checks **kwds against allow_pickle (bool) as well; no LoRA name is that.
    np.savez(tmp, **{name: np.asarray(value) for name, value in arrays.items()})  # type: ignore[arg-type]
    os.replace(tmp, path)
    write_json(
        out_dir / STATE_FILE,
        {**state, "last-round": round_index, "adapter": path.name, "names": list(arrays)},
    )
    return path


def load_state(folder: Path) -> tuple[int, OrderedDict[str, np.ndarray], dict[str, object]]:
    """(last saved round, its adapter arrays, the saved state) from a ``state.json`` folder."""
    folder = Path(folder)
    state_path = folder / STATE_FILE if folder.is_dir() else folder
    state = json.loads(state_path.read_text(encoding="utf-8"))
    with np.load(state_path.parent / state["adapter"]) as data:
        arrays = OrderedDict((name, data[name]) for name in state["names"])
    return int(state["last-round"]), arrays, state


def post_progress(
    url: str, token: str, payload: Mapping[str, object], *, timeout: float = 5.0
) -> bool:
    """POST one round's report; log and return False on any failure."""
    if not url:
        return False
    request = urllib.request.Request(
        url,
        data=json.dumps(payload, default=str).encode("utf-8"),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    try:
        # The URL comes from the job's run config (the coordinator).
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
        return True
    except Exception as exc:  # progress is best effort, never fatal
        logger.warning("progress report to %s failed: %s", url, exc)
        return False
