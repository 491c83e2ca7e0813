"""The owner's sample images on the model page: add, remove, move (thin views over
``registry.services.images`` and ``registry.services.samples``), and how the page groups them
(a LoRA's rendered pairs side by side)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from core.auth import AuthenticatedHttpRequest
from core.errors import ApplicationError
from registry.models import ModelVersion, SampleImage, SampleRole
from registry.selectors import models as model_reads
from registry.selectors.versions import visible_versions
from registry.services.images import MAX_IMAGES_PER_VERSION
from registry.services.samples import sample_image_move, sample_image_remove, sample_images_add


@dataclass(frozen=True)
class GalleryItem:
    """What the page shows in one place: an image, or a base / with-this pair."""

    image: SampleImage
    base: SampleImage | None = None

    @property
    def is_pair(self) -> bool:
        return self.base is not None


def sample_gallery(images: Iterable[SampleImage]) -> list[GalleryItem]:
    """The images in their order, each ``adapted`` image with its ``base`` half beside it."""
    ordered = list(images)
    by_pk = {i.pk: i for i in ordered}
    return [
        GalleryItem(image, by_pk.get(image.pair_id) if image.pair_id else None)
        for image in ordered
        if image.role != SampleRole.BASE
    ]


def cover_of(images: Sequence[SampleImage]) -> SampleImage | None:
    """The version's cover: the one rule of :func:`registry.selectors.models.cover_of`."""
    return model_reads.cover_of(images)


def _page(version: ModelVersion) -> str:
    url = reverse(
        "registry:model-detail", kwargs={"model_id": version.model_id, "slug": version.model.slug}
    )
    return f"{url}?version={version.pk}#samples"


def _image(request: AuthenticatedHttpRequest, image_id: int) -> SampleImage:
    image = SampleImage.objects.select_related("version__model").filter(pk=image_id).first()
    if image is None or not visible_versions(request.user).filter(pk=image.version_id).exists():
        raise Http404("No such image.")
    return image


@login_required
@require_POST
def version_images_add(request: AuthenticatedHttpRequest, version_id: int) -> HttpResponse:
    version = visible_versions(request.user).select_related("model").filter(pk=version_id).first()
    if version is None:
        raise Http404("No such version.")
    files = request.FILES.getlist("images")
    if not files:
        messages.error(request, "Choose one or more PNG, JPEG or WebP images.")
        return redirect(_page(version))
    try:
        added = sample_images_add(
            version=version,
            user=request.user,
            files=files,
            prompt=request.POST.get("prompt", "")[:5000],
        )
    except ApplicationError as err:
        if err.status_code == 403:  # not the owner: nothing to show them on the page
            return HttpResponse(err.message, status=403, content_type="text/plain")
        messages.error(request, err.message)
    else:
        messages.success(request, f"{len(added)} image(s) added.")
    return redirect(_page(version))


@login_required
@require_POST
def sample_image_remove_view(request: AuthenticatedHttpRequest, image_id: int) -> HttpResponse:
    image = _image(request, image_id)
    try:
        sample_image_remove(image=image, user=request.user)
    except ApplicationError as err:
        return HttpResponse(err.message, status=err.status_code, content_type="text/plain")
    messages.success(request, "Image removed.")
    return redirect(_page(image.version))


@login_required
@require_POST
def sample_image_move_view(request: AuthenticatedHttpRequest, image_id: int) -> HttpResponse:
    image = _image(request, image_id)
    offset = {"up": -1, "down": 1, "first": -MAX_IMAGES_PER_VERSION}.get(
        request.POST.get("direction", ""), 0
    )
    try:
        sample_image_move(image=image, user=request.user, offset=offset)
    except ApplicationError as err:
        return HttpResponse(err.message, status=err.status_code, content_type="text/plain")
    return redirect(_page(image.version))
