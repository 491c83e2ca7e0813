"""What one generation may ask for, from settings (``ATELIER_GENERATION_*``), read per call."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

# Families whose checkpoints load as a StableDiffusionPipeline (sdcore.loading).
GENERATION_FAMILIES = ("sd1", "sd2")
MIN_SIDE = 32
MAX_PROMPT_CHARS = 2000
MAX_LORAS = 5
MAX_EMBEDDINGS = 5
LORA_WEIGHT_RANGE = (-2.0, 2.0)
EMBEDDING_WEIGHT_RANGE = (0.0, 2.0)
GUIDANCE_RANGE = (0.0, 30.0)
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class Limits:
    max_steps: int
    max_side: int
    max_pixels: int
    max_active_per_user: int


def limits() -> Limits:
    return Limits(
        max_steps=int(getattr(settings, "ATELIER_GENERATION_MAX_STEPS", 50)),
        max_side=int(getattr(settings, "ATELIER_GENERATION_MAX_SIDE", 1024)),
        max_pixels=int(getattr(settings, "ATELIER_GENERATION_MAX_PIXELS", 1024 * 768)),
        max_active_per_user=int(getattr(settings, "ATELIER_GENERATION_MAX_ACTIVE", 3)),
    )


def generation_device() -> str:
    return str(getattr(settings, "ATELIER_GENERATION_DEVICE", "auto"))


def generation_queue() -> str | None:
    """The Celery queue for generations (a GPU worker's), or None for the default queue."""
    return str(getattr(settings, "ATELIER_GENERATION_QUEUE", "")) or None


def generation_time_limit() -> int:
    return int(getattr(settings, "ATELIER_GENERATION_TIME_LIMIT", 600))
