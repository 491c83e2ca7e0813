"""Text-to-image with a Stable Diffusion checkpoint, LoRAs and textual-inversion embeddings.

SD 1.x, SD 2.x and SDXL checkpoints (SDXL: two text encoders, pooled embeddings and time ids,
all inside diffusers' SDXL pipeline). LoRAs are kohya files (``lora_unet_*`` in diffusers or
SGM block names, ``lora_te_``/``lora_te1_``/``lora_te2_``) or diffusers/PEFT files; an SDXL
embedding holds ``clip_l`` and ``clip_g`` vectors, one per text encoder. A LoRA or embedding of
another family than the checkpoint's is refused with ``architecture_mismatch`` or
``embedding_mismatch`` before the pipeline runs.

Pure Python (no Django): :func:`generate` takes a :class:`GenerationRequest` naming local
files, loads the checkpoint with :func:`sdcore.loading.load_pipeline` (a diffusers folder or
an original single file), applies each LoRA with its weight and each embedding, runs the
pipeline on CPU or CUDA with a progress callback, and returns a PIL image with the
A1111-style parameters text that :func:`png_bytes` embeds in the PNG ``parameters`` chunk
(the text A1111's "PNG Info" and Civitai read):

    a castle on a hill <lora:castles:0.8>
    Negative prompt: blurry
    Steps: 20, Sampler: Euler, CFG scale: 7, Seed: 42, Size: 512x512, Model hash: 6ce0161689,
    Model: v1-5-pruned-emaonly, Lora hashes: "castles: 0a1b2c3d4e5f", TI hashes: "..."

(one line after ``Negative prompt``; wrapped here). Hashes are the ones A1111 writes:
``Model hash`` the AutoV2 of the checkpoint file, ``Lora hashes`` the first 12 hex of each
LoRA's AutoV3, ``TI hashes`` the first 12 hex of each embedding's SHA-256.

The same request and seed give the same image on the same device: the initial noise comes
from a CPU generator seeded with ``seed``, as A1111's CPU RNG option does.

Loaded pipelines are kept in a small :class:`PipelineCache` (a worker that serves the same
base model twice loads it once); LoRAs and embeddings are removed again after each image, so
a cached pipeline is always the bare checkpoint.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sdcore.errors import SdcoreError
from sdcore.loading import load_pipeline, read_single_file_header
from sdcore.lora import LoraFormatError, kohya_module_to_diffusers

if TYPE_CHECKING:
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
        StableDiffusionPipeline,
    )
    from PIL.Image import Image

__all__ = [
    "SAMPLERS",
    "EmbeddingSpec",
    "GenerationError",
    "GenerationRequest",
    "GenerationResult",
    "LoraSpec",
    "PipelineCache",
    "a1111_parameters",
    "default_cache",
    "generate",
    "parse_a1111_parameters",
    "pipeline_family",
    "png_bytes",
    "resolve_device",
]

ProgressCallback = Callable[[int, int], None]
log = logging.getLogger(__name__)


class GenerationError(SdcoreError):
    """A generation cannot run as asked; the message says why (shown to the user)."""

    default_code = "generation_failed"


@dataclass(frozen=True)
class Sampler:
    """An A1111 sampler name and the diffusers scheduler that implements it."""

    scheduler_class: str
    options: Mapping[str, object] = field(default_factory=dict)
    schedule_type: str = ""


# A1111's names for the samplers offered; each is built from the checkpoint's scheduler config.
SAMPLERS: dict[str, Sampler] = {
    "Euler": Sampler("EulerDiscreteScheduler"),
    "Euler a": Sampler("EulerAncestralDiscreteScheduler"),
    "DPM++ 2M": Sampler(
        "DPMSolverMultistepScheduler", {"use_karras_sigmas": True}, schedule_type="Karras"
    ),
    "DDIM": Sampler("DDIMScheduler"),
}


@dataclass(frozen=True)
class LoraSpec:
    """A LoRA file (kohya or diffusers/PEFT format) and the weight to apply it with.

    ``name`` is what A1111 calls it (the file name without extension) and ``autov3`` the
    hash written under ``Lora hashes``.
    """

    path: Path
    weight: float = 1.0
    name: str = ""
    autov3: str = ""

    @property
    def label(self) -> str:
        return self.name or Path(self.path).stem


@dataclass(frozen=True)
class EmbeddingSpec:
    """A textual-inversion embedding; ``token`` is the word that stands for it in prompts.

    As in A1111, each whole-word occurrence of ``token`` in the prompt and the negative
    prompt is replaced by the embedding's vectors, scaled by ``weight``.
    """

    path: Path
    token: str
    weight: float = 1.0
    sha256: str = ""


@dataclass(frozen=True)
class GenerationRequest:
    checkpoint: Path
    prompt: str
    negative_prompt: str = ""
    seed: int = 0
    steps: int = 20
    guidance: float = 7.0
    width: int = 512
    height: int = 512
    sampler: str = "Euler"
    loras: tuple[LoraSpec, ...] = ()
    embeddings: tuple[EmbeddingSpec, ...] = ()
    model_name: str = ""
    model_hash: str = ""
    # Identifies the checkpoint's content (a hash) for the pipeline cache; default: its path.
    checkpoint_key: str = ""


@dataclass(frozen=True)
class GenerationResult:
    image: Image
    parameters: str
    device: str
    seconds: float


# --------------------------------------------------------------------------------------
# Devices and the pipeline cache
# --------------------------------------------------------------------------------------


def resolve_device(device: str = "auto") -> torch.device:
    """``auto``: CUDA when a GPU is visible, else CPU; ``cuda`` without a GPU is an error."""
    wanted = (device or "auto").strip().lower()
    if wanted == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(wanted)
    except RuntimeError as exc:
        raise GenerationError(f"unknown device {device!r}", code="device_unavailable") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise GenerationError("no CUDA device is available here", code="device_unavailable")
    return resolved


def _dtype_for(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type == "cuda" else torch.float32


class PipelineCache:
    """The last ``max_entries`` loaded pipelines, by checkpoint path, device and dtype."""

    def __init__(self, max_entries: int = 1) -> None:
        self.max_entries = max(0, max_entries)
        self._pipes: OrderedDict[tuple[str, str, str], StableDiffusionPipeline] = OrderedDict()
        self._lock = threading.Lock()

    def get(
        self, checkpoint: Path, device: torch.device, dtype: torch.dtype, *, key: str = ""
    ) -> StableDiffusionPipeline:
        """The pipeline of ``checkpoint``, loaded unless cached under ``key`` (a content hash;
        default: the resolved path)."""
        cache_key = (key or str(Path(checkpoint).resolve()), str(device), str(dtype))
        with self._lock:
            pipe = self._pipes.get(cache_key)
            if pipe is not None:
                self._pipes.move_to_end(cache_key)
                return pipe
        started = time.monotonic()
        pipe = load_pipeline(Path(checkpoint), dtype=dtype, device=device)
        log.info(
            "loaded %s on %s in %.1f s", Path(checkpoint).name, device, time.monotonic() - started
        )
        with self._lock:
            if self.max_entries:
                self._pipes[cache_key] = pipe
                while len(self._pipes) > self.max_entries:
                    self._pipes.popitem(last=False)
        return pipe

    def discard(self, pipe: StableDiffusionPipeline) -> None:
        with self._lock:
            for key, cached in list(self._pipes.items()):
                if cached is pipe:
                    del self._pipes[key]

    def clear(self) -> None:
        with self._lock:
            self._pipes.clear()

    def __len__(self) -> int:
        return len(self._pipes)


_default_cache = PipelineCache(max_entries=1)


def default_cache() -> PipelineCache:
    """The process-wide cache :func:`generate` uses unless given another."""
    return _default_cache


# --------------------------------------------------------------------------------------
# LoRAs and embeddings
# --------------------------------------------------------------------------------------

_KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")
_LYCORIS_MARKERS = (".hada_", ".lokr_", ".lora_mid.", ".dora_scale")


_FAMILY_LABELS = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL", "sd3": "SD 3", "flux": "Flux"}


def pipeline_family(pipe: Any) -> str:
    """``sdxl`` for a pipeline with two text encoders, ``sd2`` for a 1024-wide context, else
    ``sd1`` (the families :func:`sdcore.loading.load_pipeline` gives)."""
    if getattr(pipe, "text_encoder_2", None) is not None:
        return "sdxl"
    return "sd2" if pipe.unet.config.cross_attention_dim == 1024 else "sd1"


def _check_lora_family(spec: LoraSpec, path: Path, family: str) -> None:
    """Refuse a LoRA whose names, shapes or metadata say another family than the checkpoint's
    (an SD 1.x LoRA on an SDXL checkpoint): diffusers would drop the keys it cannot place."""
    from sdcore.detect import detect
    from sdcore.safetensors_header import read_header

    try:
        found = detect(read_header(path)).architecture
    except (SdcoreError, ValueError, OSError):
        return  # the header is checked again below, with its own message
    if found in _FAMILY_LABELS and found != family:
        raise GenerationError(
            f"LoRA {spec.label} is for {_FAMILY_LABELS[found]} but the checkpoint is "
            f"{_FAMILY_LABELS.get(family, family)}",
            code="architecture_mismatch",
        )


def _check_lora_file(spec: LoraSpec, unet_config: Mapping[str, Any], family: str = "sd1") -> None:
    """Refuse a file that is not a LoRA diffusers can apply, with a message naming it."""
    path = Path(spec.path)
    if path.suffix.lower() != ".safetensors":
        raise GenerationError(
            f"LoRA {spec.label}: only .safetensors files are applied", code="lora_invalid"
        )
    try:
        names = list(read_single_file_header(path).shapes)
    except SdcoreError as exc:
        raise GenerationError(f"LoRA {spec.label}: {exc.message}", code="lora_invalid") from exc
    if any(marker in name for name in names for marker in _LYCORIS_MARKERS):
        raise GenerationError(
            f"LoRA {spec.label} is a LyCORIS (LoHa, LoKr or DoRA) file; only LoRA is applied",
            code="lora_invalid",
        )
    _check_lora_family(spec, path, family)
    kohya = {name.split(".", 1)[0] for name in names if name.startswith(_KOHYA_PREFIXES)}
    if kohya:
        try:
            for module in kohya:
                kohya_module_to_diffusers(module, unet_layout=unet_config)
        except LoraFormatError as exc:
            raise GenerationError(f"LoRA {spec.label}: {exc.message}", code="lora_invalid") from exc
        return
    if not any(".lora_A." in n or ".lora.down." in n or ".lora_down." in n for n in names):
        raise GenerationError(
            f"{spec.label} holds no LoRA weights (lora_A/lora_B or lora_down/lora_up)",
            code="lora_invalid",
        )


def _apply_loras(pipe: StableDiffusionPipeline, loras: Sequence[LoraSpec]) -> None:
    names: list[str] = []
    for index, spec in enumerate(loras):
        _check_lora_file(spec, pipe.unet.config, pipeline_family(pipe))
        adapter = f"atelier_lora_{index}"
        path = Path(spec.path)
        try:
            pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=adapter)
        except (ValueError, KeyError, RuntimeError, OSError) as exc:
            raise GenerationError(
                f"LoRA {spec.label} does not fit this checkpoint ({_first_line(exc)})",
                code="lora_mismatch",
            ) from exc
        names.append(adapter)
    if names:
        pipe.set_adapters(names, adapter_weights=[float(s.weight) for s in loras])


def _embedding_tensors(spec: EmbeddingSpec, widths: Sequence[int]) -> list[torch.Tensor]:
    """The embedding's vectors for each text encoder, shape ``(n, width)``: one tensor for SD
    1.x/2.x (A1111 ``emb_params`` or a diffusers file), ``clip_l`` and ``clip_g`` for SDXL."""
    from safetensors.torch import load_file

    path = Path(spec.path)
    if path.suffix.lower() != ".safetensors":
        raise GenerationError(
            f"embedding {spec.token}: only .safetensors files are used (pickles are never "
            "loaded here)",
            code="embedding_invalid",
        )
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own SafetensorError
        raise GenerationError(
            f"embedding {spec.token}: not a readable safetensors file ({exc})",
            code="embedding_invalid",
        ) from exc
    is_sdxl_file = bool({"clip_l", "clip_g"} & set(tensors))
    if len(widths) == 2:
        if not {"clip_l", "clip_g"} <= set(tensors):
            raise GenerationError(
                f"embedding {spec.token} is not an SDXL embedding (it needs clip_l and clip_g "
                "vectors for SDXL's two text encoders)",
                code="embedding_mismatch",
            )
        found = [tensors["clip_l"], tensors["clip_g"]]
    elif is_sdxl_file:
        raise GenerationError(
            f"embedding {spec.token} is for SDXL (clip_l/clip_g vectors)",
            code="embedding_mismatch",
        )
    elif "emb_params" in tensors:
        found = [tensors["emb_params"]]
    elif len(tensors) == 1:
        found = [next(iter(tensors.values()))]
    else:
        raise GenerationError(
            f"embedding {spec.token}: expected one tensor (emb_params), found {len(tensors)}",
            code="embedding_invalid",
        )
    out: list[torch.Tensor] = []
    for vectors, width in zip(found, widths, strict=True):
        if vectors.ndim == 1:
            vectors = vectors[None, :]
        if vectors.ndim != 2 or vectors.shape[0] == 0:
            raise GenerationError(
                f"embedding {spec.token}: vectors of shape {tuple(vectors.shape)} are not (n, d)",
                code="embedding_invalid",
            )
        if vectors.shape[1] != width:
            raise GenerationError(
                f"embedding {spec.token} has {vectors.shape[1]}-wide vectors but this "
                f"checkpoint's text encoder is {width} wide",
                code="embedding_mismatch",
            )
        out.append(vectors.float() * float(spec.weight))
    if len(out) == 2 and out[0].shape[0] != out[1].shape[0]:
        raise GenerationError(
            f"embedding {spec.token}: clip_l has {out[0].shape[0]} vectors but clip_g "
            f"{out[1].shape[0]}",
            code="embedding_invalid",
        )
    return out


def _text_encoders(pipe: Any) -> list[tuple[Any, Any]]:
    """(tokenizer, text encoder) pairs: one for SD 1.x/2.x, two for SDXL."""
    pairs = [(pipe.tokenizer, pipe.text_encoder)]
    if getattr(pipe, "text_encoder_2", None) is not None:
        pairs.append((pipe.tokenizer_2, pipe.text_encoder_2))
    return pairs


def _token_pattern(token: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w-]){re.escape(token)}(?![\w-])", re.IGNORECASE)


def _apply_embeddings(
    pipe: StableDiffusionPipeline, embeddings: Sequence[EmbeddingSpec], texts: Sequence[str]
) -> list[str]:
    """Load each embedding under a placeholder token (into both text encoders for SDXL) and
    put it where its word is."""
    pairs = _text_encoders(pipe)
    widths = [int(te.get_input_embeddings().weight.shape[1]) for _, te in pairs]
    out = list(texts)
    for index, spec in enumerate(embeddings):
        placeholder = f"<atelier-emb-{index}>"
        for vectors, (tokenizer, text_encoder) in zip(
            _embedding_tensors(spec, widths), pairs, strict=True
        ):
            dtype = text_encoder.get_input_embeddings().weight.dtype
            try:
                pipe.load_textual_inversion(
                    {placeholder: vectors.to(dtype)},
                    token=placeholder,
                    tokenizer=tokenizer,
                    text_encoder=text_encoder,
                )
            except (ValueError, RuntimeError) as exc:
                raise GenerationError(
                    f"embedding {spec.token} cannot be loaded ({_first_line(exc)})",
                    code="embedding_invalid",
                ) from exc
        pattern = _token_pattern(spec.token)
        out = [pattern.sub(placeholder, text) for text in out]
    return out


def _unload_embeddings(pipe: Any) -> None:
    for tokenizer, text_encoder in _text_encoders(pipe):
        if any(not t.special for t in tokenizer.added_tokens_decoder.values()):
            pipe.unload_textual_inversion(tokenizer=tokenizer, text_encoder=text_encoder)


@contextmanager
def _adapted(
    pipe: StableDiffusionPipeline, request: GenerationRequest, cache: PipelineCache
) -> Iterator[tuple[str, str]]:
    """The pipeline with the request's LoRAs and embeddings; removed again on the way out."""
    clean = True
    try:
        _apply_loras(pipe, request.loras)
        prompt, negative = _apply_embeddings(
            pipe, request.embeddings, (request.prompt, request.negative_prompt)
        )
        yield prompt, negative
    finally:
        try:
            if request.loras:
                pipe.unload_lora_weights()
            if request.embeddings:
                _unload_embeddings(pipe)
        except Exception:  # a pipeline that cannot be cleaned is not reused
            log.exception("could not remove LoRAs or embeddings; the pipeline is dropped")
            clean = False
        if not clean:
            cache.discard(pipe)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


# --------------------------------------------------------------------------------------
# Generating
# --------------------------------------------------------------------------------------


def _check_request(request: GenerationRequest) -> None:
    if request.sampler not in SAMPLERS:
        raise GenerationError(
            f"unknown sampler {request.sampler!r}; one of: {', '.join(SAMPLERS)}",
            code="bad_sampler",
        )
    if request.steps < 1:
        raise GenerationError("steps must be at least 1", code="bad_steps")
    for name, value in (("width", request.width), ("height", request.height)):
        if value < 8 or value % 8:
            raise GenerationError(f"{name} must be a positive multiple of 8", code="bad_size")
    if not math.isfinite(request.guidance):
        raise GenerationError("guidance must be a finite number", code="bad_guidance")


def _scheduler(pipe: StableDiffusionPipeline, sampler: str) -> object:
    import diffusers

    spec = SAMPLERS[sampler]
    cls = getattr(diffusers, spec.scheduler_class)
    return cls.from_config(pipe.scheduler.config, **spec.options)


def generate(
    request: GenerationRequest,
    *,
    device: str = "auto",
    progress: ProgressCallback | None = None,
    cache: PipelineCache | None = None,
) -> GenerationResult:
    """Run one text-to-image generation; ``progress(step, total)`` is called after each step.

    Raises :class:`GenerationError` (bad request, LoRA or embedding that does not fit) or
    :class:`sdcore.loading.ModelLoadError` (the checkpoint cannot be loaded).
    """
    _check_request(request)
    cache = _default_cache if cache is None else cache
    target = resolve_device(device)
    started = time.monotonic()
    pipe = cache.get(
        Path(request.checkpoint), target, _dtype_for(target), key=request.checkpoint_key
    )
    original_scheduler = pipe.scheduler
    total = request.steps

    def on_step_end(
        _pipe: object, step: int, _timestep: object, kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        if progress is not None:
            progress(min(step + 1, total), total)
        return kwargs

    try:
        pipe.scheduler = _scheduler(pipe, request.sampler)
        with _adapted(pipe, request, cache) as (prompt, negative):
            generator = torch.Generator(device="cpu").manual_seed(int(request.seed))
            try:
                output = pipe(
                    prompt=prompt,
                    negative_prompt=negative or None,
                    num_inference_steps=request.steps,
                    guidance_scale=float(request.guidance),
                    width=request.width,
                    height=request.height,
                    generator=generator,
                    output_type="pil",
                    callback_on_step_end=on_step_end,
                )
            except torch.cuda.OutOfMemoryError as exc:
                raise GenerationError(
                    f"the GPU ran out of memory at {request.width}x{request.height}",
                    code="out_of_memory",
                ) from exc
    finally:
        pipe.scheduler = original_scheduler
    image = output.images[0]
    return GenerationResult(
        image=image,
        parameters=a1111_parameters(request),
        device=str(target),
        seconds=time.monotonic() - started,
    )


# --------------------------------------------------------------------------------------
# A1111 parameters text and PNG
# --------------------------------------------------------------------------------------


def _quote(value: str) -> str:
    """A1111's ``quote``: JSON-quote a value holding a comma, colon or newline."""
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def _number(value: float) -> str:
    return f"{value:g}"


def a1111_parameters(request: GenerationRequest) -> str:
    """The ``parameters`` text A1111 writes into its PNGs, for this request.

    LoRAs appear in the prompt as ``<lora:name:weight>``, as A1111 users write them, so
    "send to txt2img" in A1111 reapplies them.
    """
    prompt = request.prompt.strip()
    tags = " ".join(f"<lora:{s.label}:{_number(s.weight)}>" for s in request.loras)
    if tags:
        prompt = f"{prompt} {tags}" if prompt else tags
    lines = [prompt]
    if request.negative_prompt.strip():
        lines.append(f"Negative prompt: {request.negative_prompt.strip()}")
    sampler = SAMPLERS.get(request.sampler)
    fields: list[tuple[str, str]] = [
        ("Steps", str(request.steps)),
        ("Sampler", request.sampler),
    ]
    if sampler is not None and sampler.schedule_type:
        fields.append(("Schedule type", sampler.schedule_type))
    fields += [
        ("CFG scale", _number(request.guidance)),
        ("Seed", str(request.seed)),
        ("Size", f"{request.width}x{request.height}"),
    ]
    if request.model_hash:
        fields.append(("Model hash", request.model_hash[:10]))
    if request.model_name:
        fields.append(("Model", request.model_name))
    lora_hashes = [f"{s.label}: {s.autov3[:12]}" for s in request.loras if s.autov3]
    if lora_hashes:
        fields.append(("Lora hashes", ", ".join(lora_hashes)))
    ti_hashes = [f"{e.token}: {e.sha256[:12]}" for e in request.embeddings if e.sha256]
    if ti_hashes:
        fields.append(("TI hashes", ", ".join(ti_hashes)))
    weighted = [f"{e.token}: {_number(e.weight)}" for e in request.embeddings if e.weight != 1]
    if weighted:
        fields.append(("TI weights", ", ".join(weighted)))
    fields.append(("Version", "Atelier"))
    text = ", ".join(f"{key}: {_quote(value)}" for key, value in fields)
    lines.append(text)
    return "\n".join(lines)


# A1111's parse_generation_parameters, for the last line of the text.
_PARAM_RE = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE_RE = re.compile(r"^(\d+)x(\d+)$")


def parse_a1111_parameters(text: str) -> dict[str, str]:
    """Read an A1111 ``parameters`` text back: ``Prompt``, ``Negative prompt`` and each field.

    Quoted values are unquoted; ``Size`` also gives ``Size-1`` and ``Size-2`` as A1111 does.
    """
    *lines, last = text.strip().split("\n")
    if len(_PARAM_RE.findall(last)) < 3:  # no parameter line: it is all prompt
        lines.append(last)
        last = ""
    prompt: list[str] = []
    negative: list[str] = []
    in_negative = False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("Negative prompt:"):
            in_negative = True
            stripped = stripped[len("Negative prompt:") :].strip()
        (negative if in_negative else prompt).append(stripped)
    out = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in _PARAM_RE.findall(last):
        value = value.strip()
        if value.startswith('"') and value.endswith('"'):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        out[key.strip()] = value
        size = _SIZE_RE.match(value) if key.strip() == "Size" else None
        if size:
            out["Size-1"], out["Size-2"] = size.group(1), size.group(2)
    return out


def png_bytes(image: Image, parameters: str) -> bytes:
    """The image as PNG with ``parameters`` in a text chunk (tEXt, or iTXt beyond Latin-1)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", parameters)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()
