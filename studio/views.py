"""The studio's pages: the generation form ("Try it"), one generation, the gallery, the PNG.

Thin views: parse the request, call one selector (reads) or service (writes), render.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from core.auth import AuthenticatedHttpRequest, request_user
from core.errors import ApplicationError, NotFoundError, error_response
from core.pagination import page_context
from registry.models import ModelKind, ModelVersion
from studio.forms import GenerationForm, initial_from_generation
from studio.limits import limits
from studio.models import GenerationStatus
from studio.selectors import (
    FormChoices,
    embeddings_of,
    form_choices,
    generation_eta,
    generation_get,
    generation_list,
    loras_of,
    progress_label,
    queue_position,
    sample_targets,
)
from studio.services.defaults import native_settings
from studio.services.generations import (
    generation_cancel,
    generation_create,
    generation_sample_attach,
    generation_visibility_set,
)

GALLERY_PER_PAGE = 24


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _initial_for(version_id: int | None, choices: FormChoices) -> dict[str, Any]:
    """ "Try it" on a version: a checkpoint becomes the base; a LoRA or an embedding fills the
    first slot, with a checkpoint of its family as the base."""
    everything: list[ModelVersion] = [*choices.checkpoints, *choices.loras, *choices.embeddings]
    version = next((v for v in everything if v.pk == version_id), None)
    if version is None:
        return {}
    if version.model.kind == ModelKind.CHECKPOINT:
        return {"base_version": version.pk}
    slot = "lora_1" if version.model.kind == ModelKind.LORA else "embedding_1"
    initial: dict[str, Any] = {slot: version.pk}
    base = next((c for c in choices.checkpoints if c.base_model == version.base_model), None)
    if base is not None:
        initial["base_version"] = base.pk
    words = [w for w in version.trigger_words if isinstance(w, str)]
    if words:
        initial["prompt"] = ", ".join(words)
    return initial


@login_required
@require_http_methods(["GET", "POST"])
def generate(request: AuthenticatedHttpRequest) -> HttpResponse:
    wanted = _int(request.GET.get("version"))
    choices = form_choices(user=request.user, include=wanted)
    initial = _initial_for(wanted, choices)
    again = _int(request.GET.get("from"))
    previous = generation_get(generation_id=again, user=request.user) if again else None
    if previous is not None and previous.user_id == request.user.pk:
        initial = initial_from_generation(previous)
    natives = {v.pk: native_settings(v) for v in choices.checkpoints}
    form = GenerationForm(request.POST or None, choices=choices, initial=initial, natives=natives)
    status = 200
    if request.method == "POST":
        status = 400
        if form.is_valid():
            try:
                generation = generation_create(user=request.user, **form.service_arguments())
            except ApplicationError as err:
                form.add_service_error(err)
                status = err.status_code
            else:
                return redirect("studio:generation-detail", generation_id=generation.pk)
    context = {
        "form": form,
        "lora_slots": form.slot_fields("lora"),
        "embedding_slots": form.slot_fields("embedding"),
        "limits": limits(),
        "recent": list(generation_list(user=request.user)[:6]),
    }
    return render(request, "studio/generate.html", context, status=status)


@require_GET
def generation_detail(request: HttpRequest, generation_id: int) -> HttpResponse:
    generation = generation_get(generation_id=generation_id, user=request.user)
    if generation is None:
        raise Http404("No such generation.")
    user = request.user
    owner = user if user.is_authenticated and generation.user_id == user.pk else None
    ahead = queue_position(generation)
    context = {
        "generation": generation,
        "is_owner": owner is not None,
        "loras": loras_of(generation),
        "embeddings": embeddings_of(generation),
        "queue_position": ahead,
        "progress_label": progress_label(generation),
        "eta_seconds": generation_eta(generation, ahead=ahead),
        "sample_targets": sample_targets(generation=generation, user=owner)
        if owner is not None and generation.status == GenerationStatus.SUCCEEDED
        else [],
        "status_url": reverse("studio:api-generation-detail", args=[generation.pk]),
        "baseline": generation_get(generation_id=generation.baseline_id, user=user)
        if generation.baseline_id
        else None,
    }
    return render(request, "studio/generation_detail.html", context)


@login_required
@require_GET
def gallery(request: AuthenticatedHttpRequest) -> HttpResponse:
    generations = generation_list(user=request.user)
    context = page_context(request, generations, per_page=GALLERY_PER_PAGE)
    return render(request, "studio/gallery.html", context)


@require_GET
def generation_image(request: HttpRequest, generation_id: int) -> HttpResponseBase:
    """The PNG, to its owner (session or API token), or to anyone when it is public; shown
    inline, or saved as ``atelier-<id>-<seed>.png`` with ``?download=1``."""
    user = request_user(request)
    generation = generation_get(generation_id=generation_id, user=user)
    if generation is None or generation.status != GenerationStatus.SUCCEEDED:
        return error_response(NotFoundError("No such image, or it is not visible to you."))
    response = FileResponse(
        generation.image.open("rb"),
        content_type="image/png",
        as_attachment=request.GET.get("download") == "1",
        filename=f"atelier-{generation.pk}-{generation.seed}.png",
    )
    response["Cache-Control"] = "public, max-age=300" if generation.is_public else "private"
    return response


@login_required
@require_POST
def generation_visibility(request: AuthenticatedHttpRequest, generation_id: int) -> HttpResponse:
    generation = generation_get(generation_id=generation_id, user=request.user)
    if generation is None:
        raise Http404("No such generation.")
    make_public = request.POST.get("is_public") == "1"
    try:
        generation_visibility_set(generation=generation, user=request.user, is_public=make_public)
    except ApplicationError as err:
        messages.error(request, err.message)
    else:
        messages.success(
            request, "Anyone with the link can see it now." if make_public else "Only you see it."
        )
    return redirect("studio:generation-detail", generation_id=generation.pk)


@login_required
@require_POST
def generation_cancel_view(request: AuthenticatedHttpRequest, generation_id: int) -> HttpResponse:
    generation = generation_get(generation_id=generation_id, user=request.user)
    if generation is None:
        raise Http404("No such generation.")
    try:
        generation_cancel(generation=generation, user=request.user)
    except ApplicationError as err:
        if err.status_code == 403:
            raise PermissionDenied(err.message) from err
        messages.error(request, err.message)
    else:
        messages.success(request, "Cancelled: no image will be made.")
    return redirect("studio:generation-detail", generation_id=generation.pk)


@login_required
@require_POST
def generation_sample(request: AuthenticatedHttpRequest, generation_id: int) -> HttpResponse:
    generation = generation_get(generation_id=generation_id, user=request.user)
    if generation is None:
        raise Http404("No such generation.")
    wanted = _int(request.POST.get("version_id"))
    version = next(
        (v for v in sample_targets(generation=generation, user=request.user) if v.pk == wanted),
        None,
    )
    if version is None:
        messages.error(request, "Choose one of your versions that made this image.")
        return redirect("studio:generation-detail", generation_id=generation.pk)
    try:
        generation_sample_attach(generation=generation, user=request.user, version=version)
    except ApplicationError as err:
        messages.error(request, err.message)
    else:
        messages.success(request, f"Added as a sample image of {version}.")
    return redirect("studio:generation-detail", generation_id=generation.pk)
