"""Generations: ask for one (checked, queued), run it on the worker, publish it as a sample.

Who may use what is the registry's access hook (:func:`registry.access.download_decision`):
a published version (free, or paid and bought: the marketplace's policy), or a version of
one's own even unpublished (a personal LoRA on a marketplace checkpoint). Every refusal
names the request field it is about in ``details["field"]`` and at the start of the message.
"""

from __future__ import annotations

import logging
import math
import re
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone

from core.errors import AccessDeniedError, ApplicationError, ConflictError, NotFoundError
from core.tasks import enqueue_on_commit
from registry.access import download_decision
from registry.models import (
    BaseModelFamily,
    FileFormat,
    FileLayout,
    ModelFile,
    ModelKind,
    ModelVersion,
    SampleImage,
)
from registry.services.images import sample_image_add
from sdcore.errors import SdcoreError
from sdcore.generate import (
    SAMPLERS,
    EmbeddingSpec,
    GenerationRequest,
    LoraSpec,
    generate,
    png_bytes,
)
from studio.limits import (
    EMBEDDING_WEIGHT_RANGE,
    GENERATION_FAMILIES,
    GUIDANCE_RANGE,
    LORA_WEIGHT_RANGE,
    MAX_EMBEDDINGS,
    MAX_LORAS,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MIN_SIDE,
    generation_device,
    generation_queue,
    limits,
)
from studio.models import (
    ACTIVE_STATUSES,
    Generation,
    GenerationResource,
    GenerationStatus,
    ResourceKind,
)
from studio.services.defaults import native_settings
from studio.services.files import blob_local_path, diffusers_folder_local_path

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.25
_TOKEN = re.compile(r"^[\w-]{1,100}$")


@dataclass(frozen=True)
class ResourceInput:
    """A LoRA or embedding version asked for, with its weight."""

    version_id: int
    weight: float = 1.0


def _invalid(field: str, message: str, code: str, **details: object) -> ApplicationError:
    return ApplicationError(f"{field}: {message}", code=code, details={"field": field, **details})


# --------------------------------------------------------------------------------------
# Checking a request
# --------------------------------------------------------------------------------------


def _check_text(field: str, value: str, *, required: bool) -> str:
    text = value.strip()
    if required and not text:
        raise _invalid(field, "write what the image should show.", "prompt_required")
    if len(text) > MAX_PROMPT_CHARS:
        raise _invalid(field, f"at most {MAX_PROMPT_CHARS} characters.", "prompt_too_long")
    if "\x00" in text:
        raise _invalid(field, "must not hold NUL characters.", "bad_text")
    return text


def _check_side(field: str, value: int, max_side: int) -> None:
    if value % 8:
        raise _invalid(field, f"{value} is not a multiple of 8.", "bad_size", value=value)
    if not MIN_SIDE <= value <= max_side:
        raise _invalid(
            field,
            f"must be between {MIN_SIDE} and {max_side} pixels.",
            "bad_size",
            value=value,
            min=MIN_SIDE,
            max=max_side,
        )


def _check_number(field: str, value: float, bounds: tuple[float, float], code: str) -> float:
    low, high = bounds
    if not math.isfinite(value) or not low <= value <= high:
        raise _invalid(field, f"must be between {low:g} and {high:g}.", code, min=low, max=high)
    return float(value)


def _check_settings(
    *, steps: int, width: int, height: int, guidance: float, sampler: str, seed: int | None
) -> int:
    """Check the numbers; return the seed (a random one for None or -1, as A1111 does)."""
    bounds = limits()
    if steps < 1:
        raise _invalid("steps", "at least 1.", "bad_steps")
    if steps > bounds.max_steps:
        raise _invalid(
            "steps", f"at most {bounds.max_steps} steps.", "too_many_steps", max=bounds.max_steps
        )
    _check_side("width", width, bounds.max_side)
    _check_side("height", height, bounds.max_side)
    if width * height > bounds.max_pixels:
        raise _invalid(
            "width",
            f"{width}x{height} is more than {bounds.max_pixels} pixels.",
            "too_large",
            max_pixels=bounds.max_pixels,
        )
    _check_number("guidance", guidance, GUIDANCE_RANGE, "bad_guidance")
    if sampler not in SAMPLERS:
        raise _invalid("sampler", f"one of: {', '.join(SAMPLERS)}.", "bad_sampler")
    if seed is None or seed == -1:
        return secrets.randbelow(MAX_SEED + 1)
    if not 0 <= seed <= MAX_SEED:
        raise _invalid("seed", f"between 0 and {MAX_SEED}, or -1 for a random one.", "bad_seed")
    return seed


def _family_label(family: str) -> str:
    if family in BaseModelFamily.values:
        return str(BaseModelFamily(family).label)
    return family or "an unknown base model"


def version_for_use(*, user: User, version_id: int, field: str) -> ModelVersion:
    """The version, if ``user`` may use its files: 404 when not visible, 403 when not bought."""
    version = (
        ModelVersion.objects.select_related("model", "model__owner").filter(pk=version_id).first()
    )
    decision = download_decision(user, version) if version is not None else None
    if version is None or decision is None or decision.status == 404:
        raise NotFoundError(
            f"{field}: no model version {version_id}, or it is not visible to you.",
            code="version_not_found",
            details={"field": field, "version_id": version_id},
        )
    if not decision.allowed:
        price = decision.details.get("price")
        reason = (
            f"{version} costs {price} credits; buy it to use it."
            if decision.code == "purchase_required" and price is not None
            else decision.message or "you may not use this version."
        )
        raise AccessDeniedError(
            f"{field}: {reason}",
            code=decision.code or "forbidden",
            details={**decision.details, "field": field, "version_id": version_id},
        )
    return version


def safetensors_file(version: ModelVersion, field: str) -> ModelFile:
    """The primary file when it is safetensors, else another safetensors file (a converted
    pickle); pickles are never loaded."""
    files = list(version.files.select_related("blob"))
    files.sort(key=lambda f: (not f.is_primary, f.path))
    for model_file in files:
        if model_file.format == FileFormat.SAFETENSORS and model_file.path.endswith(".safetensors"):
            return model_file
    raise _invalid(
        field,
        f"{version} has no .safetensors file (a pickle file must be converted first).",
        "no_usable_file",
    )


def _check_base(user: User, version_id: int) -> tuple[ModelVersion, ModelFile | None]:
    field = "base_version_id"
    version = version_for_use(user=user, version_id=version_id, field=field)
    return version, check_checkpoint(version, field)


def check_checkpoint(version: ModelVersion, field: str) -> ModelFile | None:
    """The file to load ``version`` from (None for a diffusers folder), if it is a checkpoint
    of a family the studio generates with; else an error naming ``field``."""
    if version.model.kind != ModelKind.CHECKPOINT:
        raise _invalid(
            field,
            f"{version} is a {version.model.get_kind_display()}, not a checkpoint.",
            "not_a_checkpoint",
        )
    if version.base_model not in GENERATION_FAMILIES:
        allowed = ", ".join(_family_label(f) for f in GENERATION_FAMILIES)
        raise _invalid(
            field,
            f"{version} is {_family_label(version.base_model)}; images are generated with "
            f"{allowed} checkpoints.",
            "unsupported_base_model",
        )
    if version.layout == FileLayout.DIFFUSERS:
        if not version.files.filter(path="model_index.json").exists():
            raise _invalid(field, f"{version} has no model_index.json.", "no_usable_file")
        return None
    return safetensors_file(version, field)


_RESOURCE_KINDS = {
    ResourceKind.LORA: (ModelKind.LORA, "loras", "a LoRA"),
    ResourceKind.EMBEDDING: (ModelKind.EMBEDDING, "embeddings", "an embedding"),
}


@dataclass(frozen=True)
class _Resource:
    kind: str
    version: ModelVersion
    model_file: ModelFile
    weight: float
    name: str


def embedding_word(version: ModelVersion, file_path: str) -> str:
    """The word that stands for an embedding in prompts: its first one-word trigger word,
    else its file's name without extension (as A1111 names embeddings)."""
    for word in version.trigger_words or []:
        if isinstance(word, str) and _TOKEN.match(word.strip()):
            return word.strip()
    return Path(file_path).stem


def _resource_name(kind: str, version: ModelVersion, model_file: ModelFile) -> str:
    if kind == ResourceKind.EMBEDDING:
        return embedding_word(version, model_file.path)
    return Path(model_file.path).stem


def _check_resources(
    user: User, base: ModelVersion, kind: str, items: Sequence[ResourceInput]
) -> list[_Resource]:
    model_kind, key, article = _RESOURCE_KINDS[ResourceKind(kind)]
    limit = MAX_LORAS if kind == ResourceKind.LORA else MAX_EMBEDDINGS
    weights = LORA_WEIGHT_RANGE if kind == ResourceKind.LORA else EMBEDDING_WEIGHT_RANGE
    if len(items) > limit:
        raise _invalid(key, f"at most {limit}.", f"too_many_{key}", max=limit)
    out: list[_Resource] = []
    for index, item in enumerate(items):
        field = f"{key}[{index}].version_id"
        if any(r.version.pk == item.version_id for r in out):
            raise _invalid(field, f"version {item.version_id} is listed twice.", "duplicate")
        weight = _check_number(f"{key}[{index}].weight", item.weight, weights, "bad_weight")
        version = version_for_use(user=user, version_id=item.version_id, field=field)
        if version.model.kind != model_kind:
            raise _invalid(
                field,
                f"{version} is a {version.model.get_kind_display()}, not {article}.",
                f"not_{'a_lora' if kind == ResourceKind.LORA else 'an_embedding'}",
            )
        if version.base_model != base.base_model:
            raise _invalid(
                field,
                f"{version} is for {_family_label(version.base_model)} but the checkpoint is "
                f"{_family_label(base.base_model)}.",
                "architecture_mismatch",
                expected=base.base_model,
                found=version.base_model,
            )
        model_file = safetensors_file(version, field)
        name = _resource_name(kind, version, model_file)
        if kind == ResourceKind.EMBEDDING and any(r.name.lower() == name.lower() for r in out):
            raise _invalid(field, f"two embeddings use the word {name!r}.", "duplicate")
        out.append(_Resource(kind, version, model_file, weight, name))
    return out


# --------------------------------------------------------------------------------------
# Creating
# --------------------------------------------------------------------------------------


def _enqueue(generation_id: int) -> None:
    """Run the generation on a worker once the transaction commits; if the broker is down,
    the generation is marked failed (nothing would pick it up) with a reason the user reads."""

    def unqueued(exc: Exception) -> None:
        generation_fail(
            generation_id=generation_id,
            code="queue_unavailable",
            message=f"The generation could not be queued ({type(exc).__name__}); try again.",
        )

    enqueue_on_commit(
        "studio.tasks.generation_run_task",
        args=[generation_id],
        queue=generation_queue(),
        on_failure=unqueued,
    )


@transaction.atomic
def generation_create(
    *,
    user: User,
    base_version_id: int,
    prompt: str,
    negative_prompt: str = "",
    seed: int | None = None,
    steps: int | None = None,
    guidance: float = 7.0,
    width: int | None = None,
    height: int | None = None,
    sampler: str = "Euler",
    loras: Sequence[ResourceInput] = (),
    embeddings: Sequence[ResourceInput] = (),
    compare: bool = False,
) -> Generation:
    """Check a request and queue it; the worker runs it after the transaction commits.

    ``steps``, ``width`` and ``height`` left out are the checkpoint's native ones
    (:func:`studio.services.defaults.native_settings`). ``compare`` (with LoRAs): also make
    the same request and seed without the LoRAs, the returned generation's ``baseline``, so
    the page shows base and base + LoRA side by side.

    Locks the user's row, so that two requests at once cannot both pass the limit of
    generations queued or running per user.
    """
    prompt = _check_text("prompt", prompt, required=True)
    negative_prompt = _check_text("negative_prompt", negative_prompt, required=False)
    base, base_file = _check_base(user, base_version_id)
    if steps is None or width is None or height is None:
        native = native_settings(base)
        steps = native.steps if steps is None else steps
        width = native.width if width is None else width
        height = native.height if height is None else height
    seed = _check_settings(
        steps=steps, width=width, height=height, guidance=guidance, sampler=sampler, seed=seed
    )
    resources = _check_resources(user, base, ResourceKind.LORA, loras) + _check_resources(
        user, base, ResourceKind.EMBEDDING, embeddings
    )
    if compare and not loras:
        raise _invalid("compare", "choose a LoRA to compare with the base.", "nothing_to_compare")

    get_user_model().objects.select_for_update().filter(pk=user.pk).first()
    active = Generation.objects.filter(user=user, status__in=ACTIVE_STATUSES).count()
    most = limits().max_active_per_user
    wanted = 2 if compare else 1
    if active + wanted > most:
        raise ApplicationError(
            f"You have {active} generations queued or running; wait for one to finish.",
            code="too_many_generations",
            status=429,
            details={"active": active, "limit": most},
        )
    fields = {
        "user": user,
        "base_version": base,
        "base_file": base_file,
        "base_name": str(base),
        "prompt": prompt,
        "negative_prompt": negative_prompt,
        "seed": seed,
        "steps": steps,
        "guidance": guidance,
        "width": width,
        "height": height,
        "sampler": sampler,
    }
    baseline = None
    if compare:
        baseline = Generation.objects.create(**fields)
        _resources_add(baseline, [r for r in resources if r.kind != ResourceKind.LORA])
    generation = Generation.objects.create(**fields, baseline=baseline)
    _resources_add(generation, resources)
    generation_id = generation.pk
    if baseline is not None:
        _enqueue(baseline.pk)
    _enqueue(generation_id)
    return generation


def _resources_add(generation: Generation, resources: Sequence[_Resource]) -> None:
    positions: dict[str, int] = {}
    rows = []
    for res in resources:
        positions[res.kind] = positions.get(res.kind, -1) + 1
        rows.append(
            GenerationResource(
                generation=generation,
                kind=res.kind,
                version=res.version,
                model_file=res.model_file,
                position=positions[res.kind],
                weight=res.weight,
                name=res.name,
                display_name=str(res.version),
            )
        )
    GenerationResource.objects.bulk_create(rows)


# --------------------------------------------------------------------------------------
# Running (the Celery task's body)
# --------------------------------------------------------------------------------------


def generation_fail(*, generation_id: int, code: str, message: str) -> None:
    """Mark an unfinished generation failed with a reason the user will read."""
    Generation.objects.filter(pk=generation_id, status__in=ACTIVE_STATUSES).update(
        status=GenerationStatus.FAILED,
        error_code=code[:64],
        error=message[:2000],
        finished_at=timezone.now(),
    )


class GenerationCancelled(Exception):
    """Raised inside the sampling loop when the generation's owner cancelled it."""


def generation_progress_set(*, generation_id: int, step: int) -> bool:
    """Record the step; False when the generation is no longer running (it was cancelled)."""
    updated = Generation.objects.filter(pk=generation_id, status=GenerationStatus.RUNNING).update(
        progress_step=step
    )
    return updated > 0


def _progress_writer(generation_id: int) -> Callable[[int, int], None]:
    """Write the step at most every PROGRESS_INTERVAL_S (and always the last one); stop the
    sampling (:class:`GenerationCancelled`) once the row is no longer running."""
    last = [0.0]

    def write(step: int, total: int) -> None:
        now = time.monotonic()
        if step < total and now - last[0] < PROGRESS_INTERVAL_S:
            return
        last[0] = now
        if not generation_progress_set(generation_id=generation_id, step=step):
            raise GenerationCancelled(generation_id)

    return write


def _checked_again(generation: Generation) -> None:
    """Access may have changed since the request (unpublished, refunded): check it again.

    Errors name the version (``Castles v1: ...``), not a request field."""
    used = [(generation.base_name, generation.base_version_id, True)]
    used += [
        (r.display_name, r.version_id, r.model_file_id is not None)
        for r in generation.resources.all()
    ]
    for label, version_id, has_file in used:
        if version_id is None or not has_file:
            raise ApplicationError(f"{label} was deleted.", code="version_deleted")
        version_for_use(user=generation.user, version_id=version_id, field=label)


def _sd_request(generation: Generation) -> GenerationRequest:
    base = generation.base_version
    assert base is not None  # checked by _checked_again
    if base.layout == FileLayout.DIFFUSERS:
        checkpoint = diffusers_folder_local_path(files=base.files.select_related("blob"))
        model_name, model_hash, key = base.model.slug, "", f"folder:{checkpoint.name}"
    else:
        base_file = generation.base_file
        if base_file is None:
            raise ApplicationError("The checkpoint's file was deleted.", code="version_deleted")
        checkpoint = blob_local_path(blob=base_file.blob, filename=base_file.filename)
        model_name, model_hash = Path(base_file.path).stem, base_file.blob.autov2
        key = f"file:{base_file.blob_id}"
    loras: list[LoraSpec] = []
    embeddings: list[EmbeddingSpec] = []
    for res in generation.resources.select_related("model_file__blob"):
        model_file = res.model_file
        assert model_file is not None  # checked by _checked_again
        path = blob_local_path(blob=model_file.blob, filename=model_file.filename)
        if res.kind == ResourceKind.LORA:
            loras.append(LoraSpec(path, res.weight, res.name, model_file.blob.autov3 or ""))
        else:
            embeddings.append(EmbeddingSpec(path, res.name, res.weight, model_file.blob_id))
    return GenerationRequest(
        checkpoint=checkpoint,
        prompt=generation.prompt,
        negative_prompt=generation.negative_prompt,
        seed=generation.seed,
        steps=generation.steps,
        guidance=generation.guidance,
        width=generation.width,
        height=generation.height,
        sampler=generation.sampler,
        loras=tuple(loras),
        embeddings=tuple(embeddings),
        model_name=model_name,
        model_hash=model_hash,
        checkpoint_key=key,
    )


def generation_run(*, generation_id: int) -> Generation:
    """Run a queued generation: progress on the row, then the PNG or the failure's reason.

    Running it again after it finished changes nothing (a redelivered task).
    """
    generation = Generation.objects.select_related(
        "user", "base_version__model", "base_file__blob"
    ).get(pk=generation_id)
    if generation.is_finished:
        return generation
    started = timezone.now()
    claimed = Generation.objects.filter(pk=generation_id, status=GenerationStatus.QUEUED).update(
        status=GenerationStatus.RUNNING, started_at=started, progress_step=0
    )
    if not claimed and generation.status == GenerationStatus.QUEUED:
        return Generation.objects.get(pk=generation_id)  # cancelled since it was read
    try:
        _checked_again(generation)
        result = generate(
            _sd_request(generation),
            device=generation_device(),
            progress=_progress_writer(generation_id),
        )
        png = png_bytes(result.image, result.parameters)
    except GenerationCancelled:
        log.info("generation %s cancelled while running", generation_id)
        return Generation.objects.get(pk=generation_id)
    except (ApplicationError, SdcoreError) as exc:
        generation_fail(generation_id=generation_id, code=exc.code, message=exc.message)
        return Generation.objects.get(pk=generation_id)
    except (OSError, RuntimeError, ValueError) as exc:
        log.exception("generation %s failed", generation_id)
        generation_fail(
            generation_id=generation_id,
            code="generation_failed",
            message=f"The worker could not make the image: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}"[:500],
        )
        return Generation.objects.get(pk=generation_id)
    generation.image.save(f"{uuid.uuid4().hex}.png", ContentFile(png), save=False)
    done = Generation.objects.filter(pk=generation_id, status=GenerationStatus.RUNNING).update(
        status=GenerationStatus.SUCCEEDED,
        image=generation.image.name,
        parameters=result.parameters,
        progress_step=generation.steps,
        device=result.device[:20],
        duration_ms=round(result.seconds * 1000),
        finished_at=timezone.now(),
        error="",
        error_code="",
    )
    if not done:  # cancelled after the last step: the image is not kept
        generation.image.delete(save=False)
    return Generation.objects.get(pk=generation_id)


# --------------------------------------------------------------------------------------
# The owner's changes
# --------------------------------------------------------------------------------------


def _require_owner(generation: Generation, user: User) -> None:
    if generation.user_id != user.pk:
        raise AccessDeniedError("Only its owner can change this generation.")


def generation_cancel(*, generation: Generation, user: User) -> Generation:
    """Stop a queued or running generation (and its "checkpoint alone" twin): a queued one is
    skipped when a worker takes it; a running one stops at its next progress write.

    Only its owner may; a finished one cannot be cancelled (409)."""
    _require_owner(generation, user)
    stop = {
        "status": GenerationStatus.CANCELLED,
        "error_code": "cancelled",
        "error": "Cancelled by its owner.",
        "finished_at": timezone.now(),
    }
    active = Generation.objects.filter(user_id=user.pk, status__in=ACTIVE_STATUSES)
    if not active.filter(pk=generation.pk).update(**stop):
        status = Generation.objects.get(pk=generation.pk).get_status_display().lower()
        raise ConflictError(
            f"This generation is already {status}; only a queued or running one can be cancelled.",
            code="already_finished",
        )
    if generation.baseline_id is not None:
        active.filter(pk=generation.baseline_id).update(**stop)
    return Generation.objects.get(pk=generation.pk)


def generation_visibility_set(*, generation: Generation, user: User, is_public: bool) -> Generation:
    """Show the image to anyone with the link (public) or to its owner only."""
    _require_owner(generation, user)
    if is_public and generation.status != GenerationStatus.SUCCEEDED:
        raise ApplicationError(
            "is_public: only a finished image can be made public.",
            code="not_finished",
            details={"field": "is_public"},
        )
    Generation.objects.filter(pk=generation.pk).update(is_public=is_public)
    generation.is_public = is_public
    return generation


def generation_sample_attach(
    *, generation: Generation, user: User, version: ModelVersion
) -> SampleImage:
    """Add the image as a sample image of ``version``, a version that made it and that
    ``user`` owns (the registry's ``sample_image_add`` checks ownership and the image)."""
    _require_owner(generation, user)
    if generation.status != GenerationStatus.SUCCEEDED or not generation.image:
        raise ApplicationError("The image is not ready.", code="not_finished")
    used = {generation.base_version_id, *generation.resources.values_list("version_id", flat=True)}
    if version.pk not in used:
        raise _invalid(
            "version_id", f"{version} was not used to make this image.", "version_not_used"
        )
    attached = SampleImage.objects.filter(version=version, parameters__generation_id=generation.pk)
    if attached.exists():
        raise ConflictError(
            f"This image is already a sample image of {version}.", code="already_attached"
        )
    parameters = {
        "generation_id": generation.pk,
        "seed": generation.seed,
        "steps": generation.steps,
        "sampler": generation.sampler,
        "cfg_scale": generation.guidance,
        "width": generation.width,
        "height": generation.height,
    }
    with generation.image.open("rb") as image:
        return sample_image_add(
            version=version,
            user=user,
            image=image,
            prompt=generation.prompt,
            parameters=parameters,
        )
