"""Sample images of a model version: checked with Pillow, size-limited, stored under a name
the server chooses."""

from __future__ import annotations

import uuid
from typing import IO, Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files import File
from PIL import Image, UnidentifiedImageError

from core.errors import AccessDeniedError, ApplicationError, PayloadTooLargeError
from registry.models import ModelVersion, SampleImage

IMAGE_FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}
MAX_IMAGE_PIXELS = 4096 * 4096
MAX_IMAGES_PER_VERSION = 50
MAX_PROMPT_CHARS = 5000


def sample_image_max_bytes() -> int:
    return int(getattr(settings, "ATELIER_MAX_IMAGE_BYTES", 10 * 1024 * 1024))


def _check_image(stream: IO[bytes]) -> tuple[str, dict[str, str]]:
    """The image's file extension and its PNG text chunks; raises for anything else."""
    try:
        stream.seek(0)
        with Image.open(stream) as img:
            fmt = img.format or ""
            width, height = img.size
            info = {str(k): v for k, v in img.info.items() if isinstance(v, str)}
            if fmt not in IMAGE_FORMATS:
                raise ApplicationError(
                    f"Sample images are PNG, JPEG or WebP, not {fmt or 'unknown'}.",
                    code="unsupported_image",
                )
            if width * height > MAX_IMAGE_PIXELS:
                raise PayloadTooLargeError(
                    f"The image is {width}x{height}; at most {MAX_IMAGE_PIXELS} pixels.",
                    code="image_too_large",
                    details={"max_pixels": MAX_IMAGE_PIXELS},
                )
            img.verify()
        stream.seek(0)
        with Image.open(stream) as img:
            img.load()  # decodes every pixel: a truncated file fails here
    except ApplicationError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError,
            ValueError) as exc:
        raise ApplicationError(
            "The file is not a readable PNG, JPEG or WebP image.", code="bad_image"
        ) from exc
    finally:
        stream.seek(0)
    return IMAGE_FORMATS[fmt], info


def sample_image_add(
    *,
    version: ModelVersion,
    user: AbstractBaseUser,
    image: File,
    prompt: str = "",
    parameters: dict[str, Any] | None = None,
) -> SampleImage:
    """Attach a sample image to ``version`` (owner or staff only).

    A PNG written by A1111 carries its generation settings in a ``parameters`` text chunk;
    when no prompt is given, the prompt is taken from there.
    """
    if not (user.pk == version.model.owner_id or user.is_staff):
        raise AccessDeniedError("Only the owner can add sample images.")
    limit = sample_image_max_bytes()
    size = image.size or 0
    if size > limit:
        raise PayloadTooLargeError(
            f"The image is {size} bytes; the limit is {limit} bytes.",
            code="too_large",
            details={"limit": limit},
        )
    if size == 0:
        raise ApplicationError("The image is empty.", code="empty_file")
    if SampleImage.objects.filter(version=version).count() >= MAX_IMAGES_PER_VERSION:
        raise ApplicationError(
            f"A version has at most {MAX_IMAGES_PER_VERSION} sample images.",
            code="too_many_images",
        )
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ApplicationError(
            f"The prompt is longer than {MAX_PROMPT_CHARS} characters.", code="prompt_too_long"
        )
    ext, info = _check_image(image)
    params = dict(parameters or {})
    embedded = info.get("parameters", "").replace("\x00", "")  # PostgreSQL refuses NUL
    if embedded and not prompt:
        prompt = embedded.split("\n", 1)[0][:MAX_PROMPT_CHARS]
    if embedded and "a1111" not in params:
        params["a1111"] = embedded[:MAX_PROMPT_CHARS]
    return SampleImage.objects.create(
        version=version,
        image=File(image, name=f"{uuid.uuid4().hex}.{ext}"),
        prompt=prompt,
        parameters=params,
    )
