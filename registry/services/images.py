"""Sample images of a model version and preview images of a dataset: checked with Pillow,
size-limited, stored under a name the server chooses."""

from __future__ import annotations

import io
import uuid
from typing import IO, Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.files import File
from django.core.files.base import ContentFile
from django.db.models import Max
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from core.errors import AccessDeniedError, ApplicationError, PayloadTooLargeError
from registry.models import DatasetPreview, DatasetVersion, ModelVersion, SampleImage

IMAGE_FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}
MAX_IMAGE_PIXELS = 4096 * 4096
MAX_IMAGES_PER_VERSION = 50
MAX_PROMPT_CHARS = 5000


def sample_image_max_bytes() -> int:
    return int(settings.ATELIER_MAX_IMAGE_BYTES)


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
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        OSError,
        SyntaxError,
        ValueError,
    ) as exc:
        raise ApplicationError(
            "The file is not a readable PNG, JPEG or WebP image.", code="bad_image"
        ) from exc
    finally:
        stream.seek(0)
    return IMAGE_FORMATS[fmt], info


def sample_image_add(
    *,
    version: ModelVersion,
    user: User,
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
    top = SampleImage.objects.filter(version=version).aggregate(top=Max("position"))["top"]
    return SampleImage.objects.create(
        version=version,
        image=ContentFile(
            _without_metadata(image, ext, embedded), name=f"{uuid.uuid4().hex}.{ext}"
        ),
        prompt=prompt,
        parameters=params,
        position=0 if top is None else top + 1,
    )


def _without_metadata(image: File, ext: str, parameters: str) -> bytes:
    """The image re-encoded in its own format without EXIF, XMP or ICC data (camera, place,
    time stay with the creator); a PNG keeps only its A1111 ``parameters`` text, which the
    page shows anyway."""
    image.seek(0)
    with Image.open(image) as img:
        img.load()
        mode = img.mode if img.mode in ("RGB", "RGBA", "L", "LA") else "RGBA"
        clean = img.convert(mode)
    out = io.BytesIO()
    if ext == "png":
        text = PngImagePlugin.PngInfo()
        if parameters:
            text.add_text("parameters", parameters[:MAX_PROMPT_CHARS])
        clean.save(out, format="PNG", pnginfo=text)
    elif ext == "jpg":
        clean.convert("RGB").save(out, format="JPEG", quality=92)
    else:
        clean.save(out, format="WEBP", quality=92)
    return out.getvalue()


# --- previews of private datasets ---------------------------------------------------------------

MAX_PREVIEWS_PER_DATASET = 12
PREVIEW_MAX_SIDE = 512
MAX_CAPTION_CHARS = 500


def _clean_preview(image: File) -> bytes:
    """The preview re-encoded as a PNG at most ``PREVIEW_MAX_SIDE`` a side: the owner's EXIF
    (camera, place, time), text chunks and any other metadata stay on their machine."""
    image.seek(0)
    with Image.open(image) as img:
        img.load()
        clean = img.convert("RGBA" if "A" in img.getbands() else "RGB")
    clean.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))
    out = io.BytesIO()
    clean.save(out, format="PNG")
    return out.getvalue()


def dataset_preview_add(
    *, dataset_version: DatasetVersion, user: User, image: File, caption: str = ""
) -> DatasetPreview:
    """Show one image the owner chose on a dataset's page (owner or staff only). For a
    private dataset it is the only pixels the site ever holds, so it is checked like a sample
    image and stored without its metadata."""
    if not (user.pk == dataset_version.dataset.owner_id or user.is_staff):
        raise AccessDeniedError("Only the owner can add preview images.")
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
    caption = caption.strip()
    if len(caption) > MAX_CAPTION_CHARS:
        raise ApplicationError(
            f"The caption is longer than {MAX_CAPTION_CHARS} characters.", code="caption_too_long"
        )
    if DatasetPreview.objects.filter(dataset_version=dataset_version).count() >= (
        MAX_PREVIEWS_PER_DATASET
    ):
        raise ApplicationError(
            f"A dataset version shows at most {MAX_PREVIEWS_PER_DATASET} previews.",
            code="too_many_previews",
        )
    _check_image(image)
    png = _clean_preview(image)
    return DatasetPreview.objects.create(
        dataset_version=dataset_version,
        image=ContentFile(png, name=f"{uuid.uuid4().hex}.png"),
        caption=caption,
    )


def dataset_preview_remove(*, preview: DatasetPreview, user: User) -> None:
    if not (user.pk == preview.dataset_version.dataset.owner_id or user.is_staff):
        raise AccessDeniedError("Only the owner can remove preview images.")
    preview.image.delete(save=False)
    preview.delete()
