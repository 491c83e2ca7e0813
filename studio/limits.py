"""What one generation may ask for, from settings (``ATELIER_GENERATION_*``), read per call."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

# Families whose checkpoints sdcore.loading loads (StableDiffusionPipeline for SD 1.x/2.x,
# StableDiffusionXLPipeline for SDXL and its descendants: Pony, Illustrious, NoobAI...).
GENERATION_FAMILIES = ("sd1", "sd2", "sdxl")
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
        max_steps=int(settings.ATELIER_GENERATION_MAX_STEPS),
        max_side=int(settings.ATELIER_GENERATION_MAX_SIDE),
        max_pixels=int(settings.ATELIER_GENERATION_MAX_PIXELS),
        max_active_per_user=int(settings.ATELIER_GENERATION_MAX_ACTIVE),
    )


def generation_device() -> str:
    return str(settings.ATELIER_GENERATION_DEVICE)


def generation_queue() -> str | None:
    """The Celery queue for generations (a GPU worker's), or None for the default queue."""
    return str(settings.ATELIER_GENERATION_QUEUE) or None


def generation_time_limit() -> int:
    return int(settings.ATELIER_GENERATION_TIME_LIMIT)
