"""The registry's sample renderer: what a version looks like, made with the studio's own
generation path (:func:`sdcore.generate.generate`, the worker's pipeline cache, the same files
and access rules as a user's generation).

- A checkpoint: a few fixed prompts (``ATELIER_SAMPLE_PROMPTS``), fixed seeds, at its native
  size and steps (:func:`studio.services.defaults.native_settings`).
- A LoRA: for each of the first prompts, the base alone and the base with the LoRA, same
  prompt (led by its trigger words) and seed, stored as a pair. The base is the checkpoint it
  was trained on (its lineage), else the most used checkpoint of its family that its owner may
  use. No base: no samples, and the reason is logged by the registry.

Registered with the registry when the studio app loads (``studio.apps``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from django.conf import settings
from django.db.models import Q

from core.errors import ApplicationError
from registry.models import (
    FileLayout,
    LineageRelation,
    ModelKind,
    ModelVersion,
    SampleRole,
    VersionStatus,
)
from registry.services.samples import RenderedSample, SampleRenderer, SampleRenderError
from sdcore.errors import SdcoreError
from sdcore.generate import GenerationRequest, LoraSpec, generate, png_bytes
from studio.limits import GENERATION_FAMILIES, MIN_SIDE, generation_device, generation_queue, limits
from studio.services.defaults import NativeSettings, native_settings
from studio.services.files import blob_local_path, diffusers_folder_local_path
from studio.services.generations import check_checkpoint, safetensors_file, version_for_use

DEFAULT_PROMPTS = (
    "a red circle on a white background",
    "a blue square on a grey background",
    "a yellow triangle on a black background",
)
# A LoRA with trigger words is shown on prompts where its trigger stands in the scene, as its
# captions put it ("a atlr circle ..."): appending the trigger to a colour prompt ("atlr, a red
# circle") lets the colour word win, and the pair then barely shows what the LoRA learned.
DEFAULT_LORA_PROMPTS = (
    "a {trigger} circle on a white background",
    "a {trigger} square on a grey background",
)
SEEDS = (1, 2, 3, 4, 5, 6)
LORA_PAIRS = 2
BASE_CANDIDATES = 10


def sample_prompts() -> tuple[str, ...]:
    prompts = getattr(settings, "ATELIER_SAMPLE_PROMPTS", None) or DEFAULT_PROMPTS
    return tuple(str(p) for p in prompts)[: len(SEEDS)]


def lora_sample_prompts(trigger_words: Sequence[object]) -> tuple[str, ...]:
    """The pair prompts of a LoRA: its first trigger word in ``ATELIER_LORA_SAMPLE_PROMPTS``'
    templates (``{trigger}``), the other words after a comma; without trigger words, the fixed
    sample prompts."""
    words = [w.strip() for w in trigger_words if isinstance(w, str) and w.strip()]
    if not words:
        return sample_prompts()[:LORA_PAIRS]
    templates = getattr(settings, "ATELIER_LORA_SAMPLE_PROMPTS", None) or DEFAULT_LORA_PROMPTS
    rest = ", ".join(words[1:])
    prompts = []
    for template in list(templates)[:LORA_PAIRS]:
        prompt = str(template).replace("{trigger}", words[0])
        prompts.append(f"{prompt}, {rest}" if rest else prompt)
    return tuple(prompts)


def sample_guidance() -> float:
    return float(getattr(settings, "ATELIER_SAMPLE_GUIDANCE", 5.0))


def sample_steps(native: int) -> int:
    """The checkpoint's native steps, or fewer where ``ATELIER_SAMPLE_MAX_STEPS`` says (a
    CPU-only demo or test worker)."""
    most = getattr(settings, "ATELIER_SAMPLE_MAX_STEPS", None)
    return min(native, int(most)) if most else native


@dataclass(frozen=True)
class _Checkpoint:
    version: ModelVersion
    request: GenerationRequest  # prompt and seed filled in per image
    native: NativeSettings


def _bounded(native: NativeSettings) -> tuple[int, int, int]:
    """The native size and steps, kept inside the studio's limits."""
    bounds = limits()
    side = max(MIN_SIDE, min(bounds.max_side, native.width, native.height))
    width = min(max(MIN_SIDE, native.width), bounds.max_side) // 8 * 8
    height = min(max(MIN_SIDE, native.height), bounds.max_side) // 8 * 8
    if width * height > bounds.max_pixels:
        width = height = side // 8 * 8
    return width, height, max(1, min(native.steps, bounds.max_steps))


def checkpoint_request(version: ModelVersion) -> GenerationRequest:
    """A request template for a checkpoint version: its local files, native size and steps."""
    native = native_settings(version)
    width, height, steps = _bounded(native)
    if version.layout == FileLayout.DIFFUSERS:
        folder = diffusers_folder_local_path(files=version.files.select_related("blob"))
        path, name, hash_, key = folder, version.model.slug, "", f"folder:{folder.name}"
    else:
        model_file = safetensors_file(version, "base_version_id")
        path = blob_local_path(blob=model_file.blob, filename=model_file.filename)
        name, hash_ = Path(model_file.path).stem, model_file.blob.autov2
        key = f"file:{model_file.blob_id}"
    return GenerationRequest(
        checkpoint=path,
        prompt="",
        steps=sample_steps(steps),
        guidance=sample_guidance(),
        width=width,
        height=height,
        sampler="Euler",
        model_name=name,
        model_hash=hash_,
        checkpoint_key=key,
    )


def _render(request: GenerationRequest) -> tuple[bytes, dict[str, object]]:
    try:
        result = generate(request, device=generation_device())
    except SdcoreError as exc:
        raise SampleRenderError(exc.message, code=exc.code) from exc
    except (OSError, RuntimeError, ValueError) as exc:
        raise SampleRenderError(
            f"the image could not be made: {type(exc).__name__}", code="render_failed"
        ) from exc
    parameters = {
        "seed": request.seed,
        "steps": request.steps,
        "sampler": request.sampler,
        "cfg_scale": request.guidance,
        "width": request.width,
        "height": request.height,
        "a1111": result.parameters,
    }
    return png_bytes(result.image, result.parameters), parameters


def _checkpoint_samples(version: ModelVersion) -> list[RenderedSample]:
    template = checkpoint_request(version)
    out = []
    for prompt, seed in zip(sample_prompts(), SEEDS, strict=False):
        png, params = _render(replace(template, prompt=prompt, seed=seed))
        out.append(RenderedSample(png=png, prompt=prompt, parameters=params))
    return out


def lora_base(version: ModelVersion) -> ModelVersion:
    """The checkpoint to show a LoRA on: the one it was trained on (lineage), else the most
    downloaded checkpoint of its family its owner may use. Raises ``SampleRenderError``."""
    owner = version.model.owner
    parents = [
        link.parent_version
        for link in version.parents.select_related("parent_version__model").filter(
            relation__in=[LineageRelation.ADAPTER, LineageRelation.FINETUNE],
            parent_version__isnull=False,
        )
    ]
    others = list(
        ModelVersion.objects.filter(
            Q(status=VersionStatus.PUBLISHED) | Q(model__owner=owner),
            model__kind=ModelKind.CHECKPOINT,
            model__is_removed=False,
            base_model=version.base_model,
        ).order_by("-model__download_count", "-published_at", "-pk")[:BASE_CANDIDATES]
    )
    reasons = []
    for candidate in [p for p in parents if p is not None] + others:
        try:
            base = version_for_use(user=owner, version_id=candidate.pk, field="base")
            check_checkpoint(base, "base")
        except ApplicationError as err:
            reasons.append(f"{candidate}: {err.message}")
            continue
        return base
    raise SampleRenderError(
        f"no {version.get_base_model_display()} checkpoint its owner may use to show it on"
        + (f" ({'; '.join(reasons[:3])})" if reasons else ""),
        code="no_base",
    )


def _lora_samples(version: ModelVersion) -> list[RenderedSample]:
    base = lora_base(version)
    model_file = safetensors_file(version, "version")
    path = blob_local_path(blob=model_file.blob, filename=model_file.filename)
    lora = LoraSpec(path, 1.0, Path(model_file.path).stem, model_file.blob.autov3 or "")
    template = checkpoint_request(base)
    out = []
    pairs = zip(lora_sample_prompts(version.trigger_words or []), SEEDS, strict=False)
    for number, (prompt, seed) in enumerate(pairs):
        request = replace(template, prompt=prompt, seed=seed)
        for role, req in (
            (SampleRole.BASE, request),
            (SampleRole.ADAPTED, replace(request, loras=(lora,))),
        ):
            png, params = _render(req)
            params["base_version_id"] = base.pk
            params["base"] = str(base)
            out.append(RenderedSample(png, prompt, params, role=role, pair=number))
    return out


def version_samples_make(version: ModelVersion) -> Sequence[RenderedSample]:
    """The renderer's body: images for a checkpoint or a LoRA; other kinds get none."""
    if version.base_model not in GENERATION_FAMILIES:
        raise SampleRenderError(
            f"{version.get_base_model_display()} models are not rendered here",
            code="unsupported_base_model",
        )
    if version.model.kind == ModelKind.CHECKPOINT:
        check_checkpoint(version, "version")
        return _checkpoint_samples(version)
    if version.model.kind == ModelKind.LORA:
        return _lora_samples(version)
    return []


RENDERER = SampleRenderer(render=version_samples_make, queue=generation_queue)
