"""The node's side of the release check: draw samples with the final adapter and with the base
alone, compare both with the node's images, decide.

The similarity, the reproduction score, the owner's settings and the verdict are
:mod:`federated.engine.release_check` (pure); this module adds what a Flower node has: the job's
dataset and base model as a round picks them (:mod:`.task`), and the LoRA file the samples are
drawn with. Each sample costs two generations (adapter, base alone; same prompt and seed).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import numpy as np

from federated.engine.release_check import (
    GUIDANCE,
    STEPS,
    ReleaseSettings,
    ReleaseVerdict,
    Reproduction,
    _pick_prompts,
    release_settings,
    reproduction,
    thumbnail,
    vetoes,
)

__all__ = ["node_release_check"]

logger = logging.getLogger(__name__)


def node_release_check(
    *,
    run_config: Mapping[str, object],
    node_config: Mapping[str, object],
    arrays: Mapping[str, np.ndarray],
    run_id: int = 0,
) -> ReleaseVerdict:
    """Draw samples with the final adapter and with the base alone from the node's own
    captions, score the reproduction of the node's images; veto or allow.

    Raises an :class:`~federated.engine.errors.EngineError` when the node cannot check (its
    settings are bad, its dataset changed): the server counts that as no objection.
    """
    from PIL import Image as PILImage

    from federated.engine.export import LoraProvenance, save_lora_files
    from federated.engine.flower.settings import node_paths, train_config_from_run_config
    from federated.engine.flower.task import (
        _check_base_model,
        _safe,
        _scan_for_job,
        _set_threads,
        resolve_base_model,
        select_dataset,
    )
    from federated.engine.trainer import _device_and_dtype, load_base
    from sdcore.generate import GenerationRequest, LoraSpec, PipelineCache, generate

    started = time.perf_counter()
    owner = release_settings(node_config)
    paths = node_paths(node_config)
    job_id = str(run_config.get("job-id", "") or f"run-{run_id}")
    scan = _scan_for_job(select_dataset(paths, run_config))
    base_model, _ = resolve_base_model(paths, run_config)
    _set_threads(node_config)
    _check_base_model(base_model, paths.cache_dir, str(run_config.get("base-model-sha", "")))
    prompts = _pick_prompts([e.caption for e in scan.examples], owner.samples, job_id)
    if not prompts:
        return _verdict(paths.cache_dir, job_id, "allow", "no_captions", None, "", owner, started)
    config = train_config_from_run_config(run_config)
    device, dtype = _device_and_dtype(config)
    base = load_base(base_model, device=device, dtype=dtype, cache_dir=Path(paths.cache_dir))
    size = int(config.resolution)
    thumbs: list[np.ndarray] = []
    base_thumbs: list[np.ndarray] = []
    with tempfile.TemporaryDirectory(prefix="release-") as tmp:
        files = save_lora_files(
            Path(tmp),
            unet=base.pipe.unet,
            spec=config.adapter,
            arrays=arrays,
            text_encoder=base.pipe.text_encoder,
            provenance=LoraProvenance(
                base_model_name=base_model.name,
                base_model_hash=base.fingerprint,
                family=base.family,
                resolution=size,
                steps=0,
            ),
        )
        cache = PipelineCache(max_entries=1)
        lora = (LoraSpec(path=files.kohya_file, name="release"),)
        # ``samples`` draws, cycling through the prompts with a new seed each (a small dataset
        # gets several tries per caption); each drawn twice: with the adapter, and by the base
        # alone with the same prompt and seed (what the prompt gives without the LoRA)
        for index in range(owner.samples):
            prompt = prompts[index % len(prompts)]
            for loras, out in ((lora, thumbs), ((), base_thumbs)):
                result = generate(
                    GenerationRequest(
                        checkpoint=base_model,
                        checkpoint_key=base.fingerprint,
                        prompt=prompt,
                        seed=index,
                        steps=STEPS,
                        guidance=GUIDANCE,
                        width=size,
                        height=size,
                        loras=loras,
                    ),
                    device=str(device),
                    cache=cache,
                )
                out.append(thumbnail(result.image))
    private: list[np.ndarray] = []
    for example in scan.examples:
        with PILImage.open(example.path) as image:
            private.append(thumbnail(image))
    found = reproduction(thumbs, base_thumbs, private)
    vetoed = vetoes(found.score, owner.threshold)
    return _verdict(
        paths.cache_dir,
        job_id,
        "veto" if vetoed else "allow",
        "reproduced" if vetoed else "ok",
        found,
        scan.examples[found.matched].relpath if found.matched >= 0 else "",
        owner,
        started,
        safe_job=_safe(job_id),
    )


def _verdict(
    cache_dir: str,
    job_id: str,
    verdict: str,
    reason: str,
    found: Reproduction | None,
    matched: str,
    owner: ReleaseSettings,
    started: float,
    *,
    safe_job: str = "",
) -> ReleaseVerdict:
    """The verdict, written for the owner to ``<cache-dir>/jobs/<job>/release-check.json``."""
    from federated.engine.flower.task import _safe

    out = ReleaseVerdict(
        verdict=verdict,
        reason=reason,
        score=round(found.score, 4) if found else 0.0,
        copies=found.copies if found else 0,
        best_margin=round(found.best_margin, 4) if found else 0.0,
        matched=matched,
        threshold=owner.threshold,
        samples=found.samples if found else 0,
        seconds=time.perf_counter() - started,
    )
    path = Path(cache_dir) / "jobs" / (safe_job or _safe(job_id)) / "release-check.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"job-id": job_id, **asdict(out)}
    if found is not None:
        record["margins"] = [round(m, 4) for m in found.margins]
    path.write_text(json.dumps(record, indent=2), encoding="utf-8")
    logger.info(
        "release check for %s: %s (%d of %d samples copy an image, share %.2f against "
        "threshold %.2f; best margin %.3f; %.1f s)",
        job_id,
        verdict,
        out.copies,
        out.samples,
        out.score,
        owner.threshold,
        out.best_margin,
        out.seconds,
    )
    return out
