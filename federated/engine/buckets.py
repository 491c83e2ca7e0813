"""Aspect-ratio bucketing (kohya style): images keep their shape instead of being squashed.

A job's buckets are the resolutions ``width x height`` whose sides are multiples of a step
and whose area is at most ``resolution²`` (kohya's ``make_buckets``): at 512 px and a 64 px
step, 512x512, 448x576, 384x640, 320x768, 256x1024 and the transposes. Each image goes to the
bucket whose aspect ratio is nearest its own (in log ratio), is resized to cover it and
centre-cropped; its original size and the crop are recorded (SDXL's time ids take both).

The step is ``vae_scale_factor x 8`` (64 px for SD 1.x/2.x/XL, kohya's ``bucket_reso_steps``)
when the resolution is at least 256 px. Below that (the tiny test model trains at 32-64 px) a
64 px step would leave only the square, so the step is the smallest side the UNet accepts:
the VAE factor times the UNet's downsampling (``2^(blocks-1)``), 16 px for the tiny model.

The latent cache then holds one tensor per bucket (:class:`BucketedLatentCache`). Training:

- without DP, each batch is drawn from one bucket (shuffled within buckets, batches in random
  order, as kohya does);
- with DP, the Poisson batch is still drawn over the WHOLE dataset (the accountant's sampling
  rate q = batch / N is unchanged), then split into per-bucket micro-batches; each
  micro-batch's per-sample gradients are kept and the optimizer clips every sample and adds
  the noise once (:func:`accumulate_micro_batches`). The privacy analysis is the unbucketed
  one.

What leaves the node: bucket counts only (``{"448x576": 12, "512x512": 30}``), never a
per-image size or crop.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from federated.engine.errors import ConfigError

if TYPE_CHECKING:
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
        StableDiffusionPipeline,
    )

    from federated.engine.cache import LatentCache
    from federated.engine.dataset import DatasetScan

__all__ = [
    "BUCKET_CACHE_FORMAT",
    "Bucket",
    "BucketedLatentCache",
    "Placement",
    "accumulate_micro_batches",
    "assign_bucket",
    "batch_sampler",
    "bucket_counts_json",
    "bucket_step",
    "build_bucketed_cache",
    "kohya_bucket_info",
    "make_buckets",
    "mean_latents",
    "place",
    "split_by_bucket",
]

BUCKET_CACHE_FORMAT = "atelier.bucket-cache/1"


@dataclass(frozen=True, order=True)
class Bucket:
    """One training resolution, in pixels."""

    width: int
    height: int

    @property
    def name(self) -> str:
        return f"{self.width}x{self.height}"

    @classmethod
    def parse(cls, name: str) -> Bucket:
        width, height = name.split("x")
        return cls(int(width), int(height))


def bucket_step(resolution: int, *, vae_scale_factor: int, unet_downsampling: int) -> int:
    """Side multiple of the buckets: 64 px at full size, the UNet's minimum below 256 px."""
    if resolution >= 256:
        return vae_scale_factor * 8
    return vae_scale_factor * unet_downsampling


def make_buckets(
    resolution: int, step: int, *, min_side: int | None = None, max_side: int | None = None
) -> tuple[Bucket, ...]:
    """kohya's bucket set: sides multiples of ``step``, area at most ``resolution²``.

    ``min_side`` defaults to half the resolution and ``max_side`` to twice it (kohya's 256 and
    1024 at 512), so aspect ratios from 1:4 to 4:1 have a bucket.
    """
    if step < 1 or resolution % step:
        raise ConfigError(f"resolution {resolution} is not a multiple of the bucket step {step}")
    min_side = min_side or max(step, resolution // 2 // step * step)
    max_side = max_side or 2 * resolution
    max_area = resolution * resolution
    found = {Bucket(resolution, resolution)}
    for width in range(min_side, max_side + 1, step):
        height = min(max_side, (max_area // width) // step * step)
        if height >= min_side:
            found.add(Bucket(width, height))
            found.add(Bucket(height, width))
    return tuple(sorted(found))


def assign_bucket(width: int, height: int, buckets: Sequence[Bucket]) -> Bucket:
    """The bucket whose aspect ratio is nearest the image's (log ratio; larger area on ties)."""
    ratio = math.log(width / height)
    return min(
        buckets,
        key=lambda b: (round(abs(math.log(b.width / b.height) - ratio), 9), -b.width * b.height),
    )


@dataclass(frozen=True)
class Placement:
    """Where one image goes: its bucket, original size and crop (local only, never sent)."""

    bucket: Bucket
    original_size: tuple[int, int]  # (height, width), as SDXL's time ids order them
    crop_top_left: tuple[int, int]  # (top, left) in the resized image


def place(width: int, height: int, bucket: Bucket) -> Placement:
    """The crop :func:`~federated.engine.dataset.load_pixels_cropped` makes for this bucket."""
    scale = max(bucket.width / width, bucket.height / height)
    resized_w = max(bucket.width, round(width * scale))
    resized_h = max(bucket.height, round(height * scale))
    return Placement(
        bucket,
        (height, width),
        ((resized_h - bucket.height) // 2, (resized_w - bucket.width) // 2),
    )


def bucket_counts_json(counts: Mapping[str, int]) -> str:
    """Canonical JSON of bucket counts (what a round reports)."""
    return json.dumps(dict(sorted(counts.items())), sort_keys=True, separators=(",", ":"))


def kohya_bucket_info(counts: Mapping[str, int]) -> str:
    """kohya's ``ss_bucket_info`` metadata value, counts only (no per-image error)."""
    buckets = {
        str(i): {"resolution": [Bucket.parse(name).width, Bucket.parse(name).height], "count": n}
        for i, (name, n) in enumerate(sorted(counts.items()))
    }
    return json.dumps({"buckets": buckets}, separators=(",", ":"))


# --------------------------------------------------------------------------------------
# The bucketed latent cache
# --------------------------------------------------------------------------------------


@dataclass
class BucketedLatentCache:
    """Latent distributions per bucket, text conditioning per example (global indices).

    ``bucket_of[i]`` is example i's bucket (an index into ``buckets``) and ``row[i]`` its row
    in that bucket's tensors; ``original_size`` and ``crop_top_left`` are ``[N, 2]``.
    """

    key: str
    buckets: tuple[Bucket, ...]
    latent_means: dict[Bucket, torch.Tensor]
    latent_stds: dict[Bucket, torch.Tensor]
    bucket_of: torch.Tensor
    row: torch.Tensor
    conditioning: dict[str, torch.Tensor]
    original_size: torch.Tensor
    crop_top_left: torch.Tensor
    path: Path | None = None

    def __len__(self) -> int:
        return int(self.bucket_of.shape[0])

    def counts(self) -> dict[str, int]:
        """Examples per bucket: the only thing about the buckets that leaves the node."""
        per = Counter(int(b) for b in self.bucket_of.tolist())
        return {self.buckets[b].name: n for b, n in sorted(per.items())}

    def target_size(self, indices: torch.Tensor) -> torch.Tensor:
        """``[len(indices), 2]`` (height, width) of each example's bucket."""
        sizes = torch.tensor([[b.height, b.width] for b in self.buckets])
        return sizes[self.bucket_of[indices.cpu()]]

    def to(
        self, device: str | torch.device, dtype: torch.dtype | None = None
    ) -> BucketedLatentCache:
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype or t.dtype)

        return BucketedLatentCache(
            key=self.key,
            buckets=self.buckets,
            latent_means={b: move(t) for b, t in self.latent_means.items()},
            latent_stds={b: move(t) for b, t in self.latent_stds.items()},
            bucket_of=self.bucket_of,
            row=self.row,
            conditioning={k: move(v) for k, v in self.conditioning.items()},
            original_size=self.original_size,
            crop_top_left=self.crop_top_left,
            path=self.path,
        )

    def _bucket_rows(self, indices: torch.Tensor) -> tuple[Bucket, torch.Tensor]:
        indices = indices.cpu()
        which = self.bucket_of[indices].unique()
        if len(which) != 1:
            raise ValueError("examples of one batch must share a bucket (split_by_bucket first)")
        return self.buckets[int(which[0])], self.row[indices]

    def latent_mean(self, indices: torch.Tensor) -> torch.Tensor:
        bucket, rows = self._bucket_rows(indices)
        return self.latent_means[bucket][rows.to(self.latent_means[bucket].device)]

    def sample_latents(
        self, indices: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        bucket, rows = self._bucket_rows(indices)
        rows = rows.to(self.latent_means[bucket].device)
        mean = self.latent_means[bucket][rows]
        noise = torch.randn(mean.shape, generator=generator, device="cpu").to(
            mean.device, mean.dtype
        )
        return mean + self.latent_stds[bucket][rows] * noise

    def conditioning_for(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: tensor[indices] for name, tensor in self.conditioning.items()}

    def split(self, indices: torch.Tensor) -> list[torch.Tensor]:
        """``indices`` as per-bucket groups (bucket order; order kept within a bucket)."""
        which = self.bucket_of[indices.cpu()]
        return [indices[which == b] for b in which.unique().tolist()]

    def save(self, path: Path, metadata: Mapping[str, str]) -> None:
        from sdcore.loading import write_safetensors

        tensors: dict[str, torch.Tensor] = {
            "bucket_of": self.bucket_of,
            "row": self.row,
            "original_size": self.original_size,
            "crop_top_left": self.crop_top_left,
            **{f"cond.{k}": v for k, v in self.conditioning.items()},
        }
        for bucket in self.buckets:
            tensors[f"mean.{bucket.name}"] = self.latent_means[bucket]
            tensors[f"std.{bucket.name}"] = self.latent_stds[bucket]
        path.parent.mkdir(parents=True, exist_ok=True)
        write_safetensors(
            path,
            tensors,
            {
                **metadata,
                "format": BUCKET_CACHE_FORMAT,
                "key": self.key,
                "buckets": json.dumps([b.name for b in self.buckets]),
            },
        )

    @classmethod
    def load(cls, path: Path) -> BucketedLatentCache:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
            metadata = handle.metadata() or {}
        if metadata.get("format") != BUCKET_CACHE_FORMAT:
            raise ValueError(f"{path} is not a bucketed latent cache")
        buckets = tuple(Bucket.parse(name) for name in json.loads(metadata["buckets"]))
        return cls(
            key=metadata.get("key", path.stem),
            buckets=buckets,
            latent_means={b: tensors[f"mean.{b.name}"] for b in buckets},
            latent_stds={b: tensors[f"std.{b.name}"] for b in buckets},
            bucket_of=tensors["bucket_of"],
            row=tensors["row"],
            conditioning={
                k.removeprefix("cond."): v for k, v in tensors.items() if k.startswith("cond.")
            },
            original_size=tensors["original_size"],
            crop_top_left=tensors["crop_top_left"],
            path=path,
        )


def _unet_downsampling(pipe: StableDiffusionPipeline) -> int:
    return int(2 ** (len(pipe.unet.config.block_out_channels) - 1))


def build_bucketed_cache(
    pipe: StableDiffusionPipeline,
    scan: DatasetScan,
    *,
    cache_dir: Path,
    resolution: int,
    model_hash: str,
    family: str = "sd1",
    manifest_hash: str | None = None,
    batch_size: int = 8,
) -> BucketedLatentCache:
    """Load the bucketed cache for this (dataset, model, resolution), or encode it once."""
    from federated.engine import cache as latent_cache
    from federated.engine.dataset import load_pixels_cropped, oriented_size

    step = bucket_step(
        resolution,
        vae_scale_factor=int(pipe.vae_scale_factor),
        unet_downsampling=_unet_downsampling(pipe),
    )
    buckets = make_buckets(resolution, step)
    manifest_hash = manifest_hash or scan.manifest().manifest_hash
    base_key = latent_cache.cache_key(
        manifest_hash=manifest_hash, model_hash=model_hash, resolution=resolution, family=family
    )
    key = hashlib.sha256(f"{base_key}:{BUCKET_CACHE_FORMAT}:{step}".encode()).hexdigest()[:32]
    path = Path(cache_dir) / f"latents-{key}.safetensors"
    if path.is_file():
        try:
            cached = BucketedLatentCache.load(path)
            if len(cached) == len(scan):
                return cached
        except Exception:
            pass

    examples = scan.examples
    sizes = [oriented_size(e) for e in examples]
    placements = [place(w, h, assign_bucket(w, h, buckets)) for w, h in sizes]
    used = tuple(sorted({p.bucket for p in placements}))
    bucket_of = torch.tensor([used.index(p.bucket) for p in placements], dtype=torch.long)
    row = torch.zeros(len(examples), dtype=torch.long)
    means: dict[Bucket, torch.Tensor] = {}
    stds: dict[Bucket, torch.Tensor] = {}
    crops = torch.zeros(len(examples), 2, dtype=torch.long)
    vae = pipe.vae
    factor = vae.config.scaling_factor
    with torch.no_grad():
        for b, bucket in enumerate(used):
            members = (bucket_of == b).nonzero().flatten().tolist()
            row[members] = torch.arange(len(members))
            bucket_means: list[torch.Tensor] = []
            bucket_stds: list[torch.Tensor] = []
            for start in range(0, len(members), batch_size):
                chunk = members[start : start + batch_size]
                loaded = [
                    load_pixels_cropped(examples[i], bucket.width, bucket.height) for i in chunk
                ]
                for i, (_, crop) in zip(chunk, loaded, strict=True):
                    crops[i] = torch.tensor(crop)
                pixels = torch.from_numpy(np.stack([pixels for pixels, _ in loaded]))
                dist = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist
                bucket_means.append((dist.mean * factor).float().cpu())
                bucket_stds.append((dist.std * factor).float().cpu())
            means[bucket] = torch.cat(bucket_means)
            stds[bucket] = torch.cat(bucket_stds)
        conditioning: dict[str, list[torch.Tensor]] = {}
        for start in range(0, len(examples), batch_size):
            chunk_examples = examples[start : start + batch_size]
            for name, tensor in latent_cache.encode_captions(
                pipe, [e.caption for e in chunk_examples], family=family
            ).items():
                conditioning.setdefault(name, []).append(tensor.float().cpu())
    if getattr(latent_cache.CONDITIONING.get(family), "size_ids", False):
        # SDXL's time ids: original (h, w), crop (top, left), target (h, w) of each image
        conditioning["time_ids"] = [
            torch.tensor(
                [
                    [
                        *p.original_size,
                        *map(int, crops[i].tolist()),
                        p.bucket.height,
                        p.bucket.width,
                    ]
                    for i, p in enumerate(placements)
                ],
                dtype=torch.float32,
            )
        ]
    cache = BucketedLatentCache(
        key=key,
        buckets=used,
        latent_means=means,
        latent_stds=stds,
        bucket_of=bucket_of,
        row=row,
        conditioning={k: torch.cat(v) for k, v in conditioning.items()},
        original_size=torch.tensor([p.original_size for p in placements], dtype=torch.long),
        crop_top_left=crops,
        path=path,
    )
    cache.save(path, {"resolution": str(resolution), "family": family, "step": str(step)})
    return cache


# --------------------------------------------------------------------------------------
# Batches: one call site for square and bucketed caches
# --------------------------------------------------------------------------------------


def split_by_bucket(
    cache: LatentCache | BucketedLatentCache, indices: torch.Tensor
) -> list[torch.Tensor]:
    """Per-bucket micro-batches of a batch (the batch itself for a square cache)."""
    if isinstance(cache, BucketedLatentCache):
        return cache.split(indices)
    return [indices]


def mean_latents(cache: LatentCache | BucketedLatentCache, indices: torch.Tensor) -> torch.Tensor:
    """The latent means of ``indices`` (one bucket)."""
    if isinstance(cache, BucketedLatentCache):
        return cache.latent_mean(indices)
    return cache.latent_mean[indices]


def batch_sampler(
    cache: LatentCache | BucketedLatentCache, batch_size: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Endless non-private batches.

    Square cache (or a single bucket): a random permutation cut into batches, reshuffled when
    fewer than ``batch_size`` remain (what the trainer always did). Several buckets: each
    epoch shuffles every bucket, cuts it into batches (the last one of a bucket may be
    smaller) and shuffles the batches' order.
    """
    n = len(cache)
    if not isinstance(cache, BucketedLatentCache) or len(cache.buckets) == 1:
        order = torch.randperm(n, generator=generator)
        position = 0
        while True:
            if position + batch_size > len(order):
                order, position = torch.randperm(n, generator=generator), 0
            yield order[position : position + batch_size]
            position += batch_size
    while True:
        batches: list[torch.Tensor] = []
        for b in range(len(cache.buckets)):
            members = (cache.bucket_of == b).nonzero().flatten()
            members = members[torch.randperm(len(members), generator=generator)]
            batches.extend(members.split(batch_size))
        for i in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[i]


def accumulate_micro_batches(
    parts: Sequence[torch.Tensor],
    run_part: Callable[[torch.Tensor], torch.Tensor],
    params: Sequence[torch.nn.Parameter],
) -> float:
    """Forward and backward each micro-batch, keeping every sample's gradient; the mean loss.

    After it, each parameter's ``grad_sample`` is ONE tensor with a row per example of the
    whole Poisson batch (micro-batches in order), so opacus' ``DPOptimizer.step`` clips each
    sample over all parameters, sums, adds the noise once and divides by the expected batch
    size, exactly as for an unsplit batch. (Left as opacus' list, ``accumulated_iterations``
    would count the micro-batches and divide the gradient again.)
    """
    kept: list[list[torch.Tensor]] = [[] for _ in params]
    total = 0.0
    count = 0
    for part in parts:
        loss = run_part(part)
        loss.backward()
        for slot, p in zip(kept, params, strict=True):
            sample = getattr(p, "grad_sample", None)
            if sample is None:
                raise RuntimeError("a trainable parameter has no per-sample gradient")
            slot.extend(sample if isinstance(sample, list) else [sample])
            p.grad_sample = None  # type: ignore[attr-defined]
        total += float(loss.detach()) * len(part)
        count += len(part)
    for slot, p in zip(kept, params, strict=True):
        p.grad_sample = torch.cat(slot)  # type: ignore[attr-defined]
    return total / max(count, 1)
