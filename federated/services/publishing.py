"""Publishing a finished job's LoRA into the registry: a new LoRA model owned by the trainer,
its files ingested through the registry's upload service (hashes, detection, dedupe), its
lineage (the base version and every dataset version that contributed), trigger word, sample
images, and the most permissive license its ancestors allow.

When the marketplace's lineage check refuses every license, the model is kept private (the
version stays a draft only the trainer sees) and the reason is recorded on the job.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.core.files import File

from core.errors import ApplicationError
from federated.models import FederatedJob, JobDataset, JobEvent
from federated.services.events import job_event
from marketplace.models import COMMERCIAL_LEVELS, License
from marketplace.selectors import licenses_by_code
from marketplace.services.licenses import license_check
from registry.models import LineageRelation, ModelKind, ModelVersion, Visibility
from registry.services.catalog import (
    FileSpec,
    ParentSpec,
    model_create,
    model_update,
    version_create,
    version_publish,
)
from registry.services.images import sample_image_add
from registry.services.uploads import upload_whole_file

METRICS_FILE = "metrics.json"
LORA_DIR = "lora"
KOHYA_FILE = "lora.safetensors"
SAMPLES_DIR = "samples"
SAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MAX_SAMPLES = 16
MAX_METRICS_BYTES = 20 * 1024 * 1024
_ROUND_DIR = re.compile(r"^round[-_]?(\d+)$")
LICENSE_CONFLICT_NOTE = "Kept private (a draft only the trainer sees)"


class PublishError(ApplicationError):
    """The run's output cannot be published (missing or unreadable files)."""

    code = "publish_failed"


@dataclass(frozen=True)
class LoraFile:
    path: Path
    version_path: str
    is_primary: bool


def _inside(root: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def run_metrics_read(out_dir: Path) -> dict[str, Any]:
    """``out_dir/metrics.json`` as the ServerApp wrote it; a completed run's only."""
    path = out_dir / METRICS_FILE
    try:
        if path.stat().st_size > MAX_METRICS_BYTES:
            raise PublishError(f"{path} is too large to be the run's metrics.")
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PublishError(f"The run wrote no {METRICS_FILE} in {out_dir}.") from exc
    except (OSError, ValueError) as exc:
        raise PublishError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise PublishError(f"{path} does not hold a JSON object.")
    if data.get("status", "completed") != "completed":
        raise PublishError(f"The run did not complete: {str(data.get('reason', ''))[:500]}")
    return data


def lora_files_find(out_dir: Path) -> list[LoraFile]:
    """The LoRA files the engine exported under ``out_dir/lora``: the kohya single file
    (primary, what A1111 and ComfyUI load) and the diffusers/PEFT file(s) at their paths."""
    root = out_dir / LORA_DIR
    found = sorted(p for p in root.rglob("*.safetensors") if p.is_file() and _inside(root, p))
    if not found:
        raise PublishError(f"The run exported no LoRA file under {root}.")
    top = [p for p in found if p.parent == root]
    primary = root / KOHYA_FILE if (root / KOHYA_FILE) in top else (top or found)[0]
    return [
        LoraFile(p, p.relative_to(root).as_posix(), p == primary)
        for p in [primary, *[q for q in found if q != primary]]
    ]


def sample_images_find(out_dir: Path) -> list[tuple[Path, int | None]]:
    """Sample images under ``out_dir/samples``: those of the last ``round-N`` folder when
    there are such folders, else the images in the folder itself, with their round."""
    root = out_dir / SAMPLES_DIR
    if not root.is_dir():
        return []
    rounds = sorted(
        (
            (int(m.group(1)), p)
            for p in root.iterdir()
            if p.is_dir() and (m := _ROUND_DIR.match(p.name))
        ),
        key=lambda item: item[0],
    )
    folder, index = (rounds[-1][1], rounds[-1][0]) if rounds else (root, None)
    images = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in SAMPLE_SUFFIXES and _inside(root, p)
    )
    return [(p, index) for p in images[:MAX_SAMPLES]]


@dataclass(frozen=True)
class LicenseChoice:
    code: str
    problem: str = ""  # why no license satisfies every ancestor (the model stays private)


def license_for_result(*, job: FederatedJob, contributing: list[JobDataset]) -> LicenseChoice:
    """The most permissive license the ancestors allow: one a share-alike ancestor imposes,
    else the base model's own when nothing restricts it further, else the catalogue license
    with the highest commercial level allowed. Commercial use only if the job asked for it
    (every dataset's terms then allowed it): otherwise the level is "none"."""
    catalogue = licenses_by_code()
    codes = [job.base_version.license_code] + [
        jd.dataset_version.license_code for jd in contributing
    ]
    ancestors = [catalogue[c] for c in codes if c in catalogue]
    level = min(
        (COMMERCIAL_LEVELS.index(lic.commercial_use) for lic in ancestors),
        default=len(COMMERCIAL_LEVELS) - 1,
    )
    if not job.commercial_use:
        level = 0
    sticky = sorted({lic.code for lic in ancestors if not lic.different_license_allowed})
    if sticky:
        imposed = catalogue[sticky[0]]
        if len(sticky) > 1:
            return LicenseChoice(
                imposed.code, "ancestors require different licenses: " + ", ".join(sticky)
            )
        if COMMERCIAL_LEVELS.index(imposed.commercial_use) > level:
            return LicenseChoice(
                imposed.code,
                (
                    f"an ancestor requires derivatives to keep {imposed.code}, which allows "
                    f"commercial use ({imposed.commercial_use}); the job did not ask for "
                    "commercial use, so its datasets' terms do not grant it"
                ),
            )
        return LicenseChoice(imposed.code)
    base = catalogue.get(job.base_version.license_code)
    if base is not None and COMMERCIAL_LEVELS.index(base.commercial_use) == level:
        return LicenseChoice(base.code)

    def rank(lic: License) -> tuple[int, bool, bool, bool, str]:
        return (
            COMMERCIAL_LEVELS.index(lic.commercial_use),
            lic.derivatives_allowed,
            lic.different_license_allowed,
            not lic.credit_required,
            lic.code,
        )

    allowed = [
        lic for lic in catalogue.values() if COMMERCIAL_LEVELS.index(lic.commercial_use) <= level
    ]
    return LicenseChoice(max(allowed, key=rank).code if allowed else "")


def _description(job: FederatedJob, contributing: list[JobDataset], metrics: dict[str, Any]) -> str:
    base = job.base_version
    lines = [
        f"A LoRA trained by federated job #{job.pk} on {len(contributing)} private dataset(s) "
        "that never left their owners' machines.",
        "",
        f"- Base model: {base.model.name} {base.name}",
        f"- Rounds: {job.num_rounds}, rank {job.config.get('rank')}, "
        f"resolution {job.config.get('resolution')}",
    ]
    if job.dp_enabled:
        eps = metrics.get("epsilon-max")
        reached = f", epsilon reached {float(eps):.3g}" if isinstance(eps, int | float) else ""
        lines.append(
            f"- Differential privacy (DP-SGD): target epsilon "
            f"{job.target_epsilon:g}, delta {job.config.get('delta'):g}{reached}"
        )
    else:
        lines.append("- Differential privacy: off")
    lines += [
        f"- Trained on: {jd.dataset_version.dataset.name} ({jd.dataset_version.name}), "
        f"{jd.rounds_completed} round(s)"
        for jd in contributing
    ]
    return "\n".join(lines)


def _ingest(job: FederatedJob, files: list[LoraFile], slug: str) -> list[FileSpec]:
    specs: list[FileSpec] = []
    for i, lora in enumerate(files):
        filename = f"{slug}.safetensors" if lora.is_primary else f"{slug}-{i}.safetensors"
        with open(lora.path, "rb") as stream:
            upload = upload_whole_file(
                user=job.trainer, filename=filename, stream=stream, size=lora.path.stat().st_size
            )
        specs.append(
            FileSpec(
                upload=upload,
                path=filename if lora.is_primary else lora.version_path,
                is_primary=lora.is_primary,
            )
        )
    return specs


def _samples_add(
    job: FederatedJob, version: ModelVersion, out_dir: Path, metrics: dict[str, Any]
) -> int:
    info = metrics.get("samples") if isinstance(metrics.get("samples"), dict) else {}
    prompt = str(info.get("prompt", ""))[:5000] if info else ""
    added = 0
    for path, index in sample_images_find(out_dir):
        params: dict[str, Any] = {"job": job.pk}
        if index is not None:
            params["round"] = index
        if info and "seed" in info:
            params["seed"] = info["seed"]
        with open(path, "rb") as fh:
            sample_image_add(
                version=version,
                user=job.trainer,
                image=File(fh, name=path.name),
                prompt=prompt,
                parameters=params,
            )
        added += 1
    return added


def job_publish(*, job: FederatedJob, out_dir: Path) -> ModelVersion:
    """Create and publish the job's LoRA version (inside the caller's transaction, with the
    job row locked). Raises :class:`PublishError` when the output cannot be published."""
    out_dir = Path(out_dir)
    metrics = run_metrics_read(out_dir)
    files = lora_files_find(out_dir)
    contributing = [
        jd
        for jd in job.datasets.select_related("dataset_version__dataset").order_by("pk")
        if jd.rounds_completed > 0
    ]
    choice = license_for_result(job=job, contributing=contributing)
    license_code = choice.code
    trainer = job.trainer
    try:
        model = model_create(
            owner=trainer,
            name=job.name,
            kind=ModelKind.LORA,
            description=_description(job, contributing, metrics),
            tags=["federated", "lora"],
        )
        version = version_create(
            model=model,
            user=trainer,
            name="v1",
            files=_ingest(job, files, model.slug),
            description=f"Federated job #{job.pk}.",
            base_model=job.base_version.base_model,
            trigger_words=[job.trigger_word] if job.trigger_word else [],
            parents=[ParentSpec(LineageRelation.ADAPTER, version=job.base_version)]
            + [
                ParentSpec(LineageRelation.TRAINED_ON, dataset_version=jd.dataset_version)
                for jd in contributing
            ],
            license_code=license_code,
        )
        samples = _samples_add(job, version, out_dir, metrics)
    except PublishError:
        raise
    except ApplicationError as err:
        raise PublishError(
            f"The registry refused the run's output: {err.message}",
            details={"code": err.code, **err.details},
        ) from err
    try:
        if choice.problem:
            raise ApplicationError(choice.problem, code="license_conflict")
        license_check(version=version, for_sale=False)
    except ApplicationError as err:
        model_update(model=model, user=trainer, visibility=Visibility.PRIVATE)
        job.publish_note = (
            f"{LICENSE_CONFLICT_NOTE}: no license "
            f"satisfies every ancestor; {license_code or 'none'} was refused: "
            f"{err.message}"
        )
        job_event(
            job=job,
            kind="kept_private",
            level=JobEvent.Level.WARNING,
            message=job.publish_note,
            data={"code": err.code, **err.details},
        )
        return version
    version = version_publish(version=version, user=trainer)
    job.publish_note = f"Published with license {license_code or 'none'}."
    job_event(
        job=job,
        kind="published",
        message=(
            f"Published {model.name} {version.name} (license {license_code or 'none'}, "
            f"{len(files)} file(s), {samples} sample image(s))."
        ),
        data={"model_id": model.pk, "version_id": version.pk},
    )
    return version
