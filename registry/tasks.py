"""Celery tasks of the registry: thin, each loads by id and calls one service."""

from __future__ import annotations

from celery import shared_task

from registry.services.conversion import model_file_convert


@shared_task(acks_late=True, time_limit=3600, soft_time_limit=3500)
def convert_pickle_file(model_file_id: int) -> int | None:
    """Convert a pickle file to safetensors; safe to run twice (a done file is skipped)."""
    converted = model_file_convert(model_file_id=model_file_id)
    return converted.pk if converted else None


@shared_task(acks_late=True, time_limit=1800, soft_time_limit=1700)
def version_samples_render(version_id: int) -> int:
    """Render a published version's sample images; a redelivered task finds them and stops.
    A version that cannot be rendered keeps no samples (the service logs why)."""
    from registry.services.samples import version_samples_render as render

    return len(render(version_id=version_id))
