"""The latent and text-embedding cache: encode each image and caption once per dataset.

Each image is encoded by the VAE once (the mean and standard deviation of its latent
distribution, already multiplied by the VAE's scaling factor, so a step can still draw
``mean + std * noise`` as diffusers' training script does) and each caption by the text
encoder once. Training then runs only the UNet. The cache is one safetensors file keyed by
(dataset manifest hash, base model fingerprint, resolution, family): a new dataset content, a
different model or a different resolution is a different file.

SDXL adds two conditionings per example: the pooled embedding of its second text encoder
(``text_embeds``) and its size ids (``time_ids``: original height and width, crop top and
left, target height and width, as diffusers' SDXL training script computes them). Both are
cached with the hidden states of the two encoders (concatenated); :func:`unet_kwargs` turns
the cached tensors of a batch into the UNet's keyword arguments, for every family.

The cache is derived from private data: it stays in the node's cache folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from federated.engine.dataset import DatasetScan, Example, load_pixels
from sdcore.loading import write_safetensors

if TYPE_CHECKING:
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
        StableDiffusionPipeline,
    )

__all__ = [
    "ADDED_COND_KEYS",
    "CONDITIONING",
    "FamilyConditioning",
    "ImageGeometry",
    "LatentCache",
    "build_latent_cache",
    "cache_key",
    "encode_captions",
    "model_fingerprint",
    "remember_fingerprint",
    "unet_kwargs",
]

CACHE_FORMAT = "atelier.latent-cache/1"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(8 * 1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fingerprint_stamp(path: Path) -> tuple[Path, list[Path], str]:
    """(resolved path, its files, a key of their (path, size, mtime)) for the memo."""
    path = Path(path).resolve()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    stamp = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return path, files, hashlib.sha256(json.dumps(stamp).encode()).hexdigest()


def _memo_read(memo_file: Path) -> dict[str, str]:
    if not memo_file.is_file():
        return {}
    try:
        data = json.loads(memo_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _memo_write(memo_file: Path, stamp_key: str, fingerprint: str) -> None:
    memo = _memo_read(memo_file)
    memo[stamp_key] = fingerprint
    memo_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo_file.with_name(f".{memo_file.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(memo), encoding="utf-8")
    os.replace(tmp, memo_file)


def model_fingerprint(path: Path, *, memo_dir: Path | None = None) -> str:
    """SHA-256 of a single-file model, or of a folder's (relative path, file SHA-256) list.

    With ``memo_dir``, results are remembered by (absolute path, size, mtime) of every file, so
    a multi-gigabyte model is hashed once, not every round.
    """
    path, files, stamp_key = _fingerprint_stamp(path)
    memo_file = memo_dir / "fingerprints.json" if memo_dir else None
    if memo_file:
        known = _memo_read(memo_file).get(stamp_key)
        if known:
            return known
    if path.is_file():
        fingerprint = _file_sha256(path)
    else:
        listing = "\n".join(f"{f.relative_to(path).as_posix()}:{_file_sha256(f)}" for f in files)
        fingerprint = hashlib.sha256(listing.encode("utf-8")).hexdigest()
    if memo_file:
        _memo_write(memo_file, stamp_key, fingerprint)
    return fingerprint


def remember_fingerprint(path: Path, fingerprint: str, *, memo_dir: Path) -> None:
    """Record a fingerprint already verified (a download checked while it streamed)."""
    _memo_write(memo_dir / "fingerprints.json", _fingerprint_stamp(path)[2], fingerprint)


def cache_key(*, manifest_hash: str, model_hash: str, resolution: int, family: str) -> str:
    text = json.dumps(
        [CACHE_FORMAT, manifest_hash, model_hash, resolution, family], separators=(",", ":")
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _encode_sd_text(pipe: StableDiffusionPipeline, captions: list[str]) -> dict[str, torch.Tensor]:
    tokenizer = pipe.tokenizer
    ids = tokenizer(
        captions,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(pipe.text_encoder.device)
    hidden = pipe.text_encoder(ids)[0]
    return {"encoder_hidden_states": hidden}


def _encode_sdxl_text(
    pipe: StableDiffusionPipeline, captions: list[str]
) -> dict[str, torch.Tensor]:
    """Both encoders' penultimate hidden states, concatenated; the second one's pooled output.

    What ``StableDiffusionXLPipeline.encode_prompt`` and diffusers' SDXL training script do.
    """
    hidden: list[torch.Tensor] = []
    pooled: torch.Tensor | None = None
    encoders = [
        (pipe.tokenizer, pipe.text_encoder),
        (pipe.tokenizer_2, pipe.text_encoder_2),  # an SDXL pipeline
    ]
    for tokenizer, encoder in encoders:
        ids = tokenizer(
            captions,
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(encoder.device)
        out = encoder(ids, output_hidden_states=True)
        pooled = out[0]  # the last encoder's (CLIPTextModelWithProjection: text_embeds)
        hidden.append(out.hidden_states[-2])
    assert pooled is not None
    return {"encoder_hidden_states": torch.cat(hidden, dim=-1), "text_embeds": pooled}


@dataclass(frozen=True)
class ImageGeometry:
    """How an example became the training image: SDXL's size conditioning (pixels, (h, w))."""

    original: tuple[int, int]
    crop_top_left: tuple[int, int]
    target: tuple[int, int]

    def time_ids(self) -> list[int]:
        """``[orig_h, orig_w, crop_top, crop_left, target_h, target_w]``, the SDXL order."""
        return [*self.original, *self.crop_top_left, *self.target]

    @classmethod
    def center_crop(cls, example: Example, resolution: int) -> ImageGeometry:
        """The geometry of :func:`~federated.engine.dataset.load_pixels`: the shorter side
        resized to ``resolution``, then centre-cropped to a square."""
        width, height = example.width, example.height
        with Image.open(example.path) as image:
            if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF turns it 90 degrees
                width, height = height, width
        scale = resolution / min(width, height)
        resized_w = max(resolution, round(width * scale))
        resized_h = max(resolution, round(height * scale))
        return cls(
            original=(height, width),
            crop_top_left=((resized_h - resolution) // 2, (resized_w - resolution) // 2),
            target=(resolution, resolution),
        )


@dataclass(frozen=True)
class FamilyConditioning:
    """What a family's UNet is conditioned on, besides the noisy latents and the timestep."""

    encode: Callable[[StableDiffusionPipeline, list[str]], dict[str, torch.Tensor]]
    # SDXL: per-example size ids (``time_ids``, from :class:`ImageGeometry`)
    size_ids: bool = False


# Family -> its conditioning. Cached tensor names: ``encoder_hidden_states`` (every family),
# ``text_embeds`` and ``time_ids`` (SDXL's ``added_cond_kwargs``, see :func:`unet_kwargs`).
CONDITIONING: dict[str, FamilyConditioning] = {
    "sd1": FamilyConditioning(_encode_sd_text),
    "sd2": FamilyConditioning(_encode_sd_text),
    "sdxl": FamilyConditioning(_encode_sdxl_text, size_ids=True),
}
ADDED_COND_KEYS = ("text_embeds", "time_ids")


def unet_kwargs(conditioning: Mapping[str, torch.Tensor]) -> dict[str, object]:
    """The UNet's keyword arguments from one batch of cached conditioning tensors.

    ``unet(noisy, t, **unet_kwargs(cache.conditioning_for(indices)))`` for every family:
    SDXL's pooled embeddings and size ids go in ``added_cond_kwargs``.
    """
    kwargs: dict[str, object] = {k: v for k, v in conditioning.items() if k not in ADDED_COND_KEYS}
    added = {k: conditioning[k] for k in ADDED_COND_KEYS if k in conditioning}
    if added:
        kwargs["added_cond_kwargs"] = added
    return kwargs


def encode_captions(
    pipe: StableDiffusionPipeline, captions: list[str], *, family: str = "sd1"
) -> dict[str, torch.Tensor]:
    """Caption conditioning tensors for ``captions`` (no gradient)."""
    if family not in CONDITIONING:
        raise NotImplementedError(f"training is not implemented for the {family} family yet")
    with torch.no_grad():
        return CONDITIONING[family].encode(pipe, captions)


@dataclass
class LatentCache:
    """Cached VAE latent distributions and text conditioning of a dataset, on one device."""

    key: str
    latent_mean: torch.Tensor
    latent_std: torch.Tensor
    conditioning: dict[str, torch.Tensor]
    path: Path | None = None

    def __len__(self) -> int:
        return int(self.latent_mean.shape[0])

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> LatentCache:
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype or t.dtype)

        return LatentCache(
            key=self.key,
            latent_mean=move(self.latent_mean),
            latent_std=move(self.latent_std),
            conditioning={k: move(v) for k, v in self.conditioning.items()},
            path=self.path,
        )

    def sample_latents(
        self, indices: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        mean = self.latent_mean[indices]
        noise = torch.randn(mean.shape, generator=generator, device="cpu").to(
            mean.device, mean.dtype
        )
        return mean + self.latent_std[indices] * noise

    def conditioning_for(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: tensor[indices] for name, tensor in self.conditioning.items()}

    @classmethod
    def load(cls, path: Path) -> LatentCache:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
            metadata = handle.metadata() or {}
        conditioning = {
            k.removeprefix("cond."): v for k, v in tensors.items() if k.startswith("cond.")
        }
        return cls(
            key=metadata.get("key", path.stem),
            latent_mean=tensors["latent_mean"],
            latent_std=tensors["latent_std"],
            conditioning=conditioning,
            path=path,
        )


def build_latent_cache(
    pipe: StableDiffusionPipeline,
    scan: DatasetScan,
    *,
    cache_dir: Path,
    resolution: int,
    model_hash: str,
    family: str = "sd1",
    manifest_hash: str | None = None,
    batch_size: int = 8,
) -> LatentCache:
    """Load the cache for this (dataset, model, resolution), or encode everything once."""
    manifest_hash = manifest_hash or scan.manifest().manifest_hash
    key = cache_key(
        manifest_hash=manifest_hash, model_hash=model_hash, resolution=resolution, family=family
    )
    path = Path(cache_dir) / f"latents-{key}.safetensors"
    if path.is_file():
        try:
            cache = LatentCache.load(path)
            if len(cache) == len(scan):
                return cache
        except Exception:
            pass
    if resolution % pipe.vae_scale_factor:
        raise ValueError(f"resolution {resolution} is not a multiple of {pipe.vae_scale_factor}")

    vae = pipe.vae
    device = vae.device
    means: list[torch.Tensor] = []
    stds: list[torch.Tensor] = []
    conditioning: dict[str, list[torch.Tensor]] = {}
    examples = scan.examples
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            pixels = torch.from_numpy(np.stack([load_pixels(e, resolution) for e in chunk]))
            dist = vae.encode(pixels.to(device, vae.dtype)).latent_dist
            factor = vae.config.scaling_factor
            means.append((dist.mean * factor).float().cpu())
            stds.append((dist.std * factor).float().cpu())
            for name, tensor in encode_captions(
                pipe, [e.caption for e in chunk], family=family
            ).items():
                conditioning.setdefault(name, []).append(tensor.float().cpu())
            if CONDITIONING[family].size_ids:
                ids = [ImageGeometry.center_crop(e, resolution).time_ids() for e in chunk]
                conditioning.setdefault("time_ids", []).append(
                    torch.tensor(ids, dtype=torch.float32)
                )
    cache = LatentCache(
        key=key,
        latent_mean=torch.cat(means),
        latent_std=torch.cat(stds),
        conditioning={k: torch.cat(v) for k, v in conditioning.items()},
        path=path,
    )
    tensors: Mapping[str, torch.Tensor] = {
        "latent_mean": cache.latent_mean,
        "latent_std": cache.latent_std,
        **{f"cond.{k}": v for k, v in cache.conditioning.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors(
        path,
        tensors,
        {"format": CACHE_FORMAT, "key": key, "resolution": str(resolution), "family": family},
    )
    return cache
