"""Server-rendered pages of the registry: browse, model, upload, datasets, creator profiles.

Thin views: parse the request, call one selector (reads) or the services (writes), render.
They never go through the REST API.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.files.storage import storages
from django.db import transaction
from django.forms import Form
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from core.auth import AuthenticatedHttpRequest
from core.errors import ApplicationError
from core.pagination import page_context
from registry.forms import BrowseForm, ModelUploadForm, upload_terms
from registry.models import DatasetKind, Model, ModelFile, ModelVersion, Upload, UploadStatus
from registry.selectors import datasets as dataset_reads
from registry.selectors import models as model_reads
from registry.selectors.creators import creator_profile
from registry.selectors.versions import lineage_links, version_detail, visible_versions
from registry.services.catalog import FileSpec, model_create, version_create, version_publish
from registry.services.conversion import model_file_conversion_request
from registry.services.samples import sample_images_add
from registry.services.uploads import upload_whole_file
from registry.views.images import cover_of, sample_gallery

MODELS_PER_PAGE = 24
DATASETS_PER_PAGE = 24

# Which upload-form field an error from the catalogue services belongs to.
_ERROR_FIELDS = {
    "name_required": "name",
    "bad_kind": "kind",
    "bad_visibility": "visibility",
    "too_many_tags": "tags",
    "duplicate_version": "version_name",
}


def _with_cover_urls(models: Iterable[Model]) -> None:
    """The cover image's URL from the storage (local media or signed object storage)."""
    storage = storages["default"]
    for model in models:
        name = getattr(model, "cover_image", None)
        model.cover_url = storage.url(name) if name else ""  # type: ignore[attr-defined]


def model_url(model: Model, version: ModelVersion | None = None) -> str:
    url = reverse("registry:model-detail", kwargs={"model_id": model.pk, "slug": model.slug})
    return f"{url}?version={version.pk}" if version is not None else url


@require_GET
def browse(request: HttpRequest) -> HttpResponse:
    form = BrowseForm(request.GET)
    filters = form.filters()
    models = model_reads.model_list(user=request.user, filters=filters)
    context = {
        "form": form,
        "filters": filters,
        **page_context(request, models, per_page=MODELS_PER_PAGE),
    }
    _with_cover_urls(context["page"].object_list)
    return render(request, "registry/browse.html", context)


@require_GET
def model_redirect(request: HttpRequest, model_id: int) -> HttpResponse:
    model = model_reads.visible_models(request.user).filter(pk=model_id).first()
    if model is None:
        raise Http404("No such model.")
    return redirect(model_url(model))


@require_GET
def model_detail(request: HttpRequest, model_id: int, slug: str) -> HttpResponse:
    model = model_reads.model_detail(model_id=model_id, user=request.user)
    if model is None:
        raise Http404("No such model.")
    if slug != model.slug:
        url = model_url(model)
        wanted = request.GET.get("version", "")
        return redirect(f"{url}?version={wanted}" if wanted.isdigit() else url)
    versions: list[ModelVersion] = model.shown_versions  # type: ignore[attr-defined]
    selected = _selected_version(versions, request.GET.get("version", ""))
    version = (
        version_detail(version_id=selected.pk, user=request.user) if selected is not None else None
    )
    parents, children = lineage_links(version) if version else ([], [])
    is_owner = request.user.is_authenticated and request.user.pk == model.owner_id
    images = list(version.images.all()) if version else []
    context = {
        "model": model,
        "versions": versions,
        "version": version,
        "files": list(version.files.all()) if version else [],
        "images": images,
        "gallery": sample_gallery(images),
        "cover": cover_of(images),
        "parents": parents,
        "children": children,
        "is_owner": is_owner,
    }
    return render(request, "registry/model_detail.html", context)


def _selected_version(versions: list[ModelVersion], wanted: str) -> ModelVersion | None:
    if wanted.isdigit():
        for version in versions:
            if version.pk == int(wanted):
                return version
        raise Http404("No such version.")
    candidates = [v for v in versions if v.is_published] or versions
    return candidates[0] if candidates else None


@login_required
@require_POST
def file_convert_view(request: AuthenticatedHttpRequest, file_id: int) -> HttpResponse:
    """Queue the conversion of a pickle file to safetensors (the owner's button)."""
    model_file = (
        ModelFile.objects.select_related("version", "version__model").filter(pk=file_id).first()
    )
    if (
        model_file is None
        or not visible_versions(request.user).filter(pk=model_file.version_id).exists()
    ):
        raise Http404("No such file.")
    try:
        model_file_conversion_request(model_file=model_file, user=request.user)
    except ApplicationError as err:
        messages.error(request, err.message)
    else:
        messages.success(request, f"{model_file.path} will be converted to safetensors.")
    return redirect(model_url(model_file.version.model, model_file.version))


@login_required
@require_POST
def version_publish_view(request: AuthenticatedHttpRequest, version_id: int) -> HttpResponse:
    version = visible_versions(request.user).filter(pk=version_id).first()
    if version is None:
        raise Http404("No such version.")
    try:
        version = version_publish(version=version, user=request.user)
    except ApplicationError as err:
        messages.error(request, err.message)
    else:
        messages.success(request, f"Version {version.name} is published.")
    return redirect(model_url(version.model, version))


@login_required
@require_http_methods(["GET", "POST"])
def upload(request: AuthenticatedHttpRequest) -> HttpResponse:
    form = ModelUploadForm(request.POST or None, request.FILES or None)
    terms = upload_terms()
    terms_form = terms.form(request.POST or None) if terms is not None else None
    if request.method == "POST" and all(
        [form.is_valid(), terms_form is None or terms_form.is_valid()]
    ):
        stored = _stored_upload(request, form)
        if stored is not None:
            version = _create_model_and_version(request, form, stored, terms_form)
            if version is not None:
                messages.success(
                    request, f"{version.model.name} {version.name} is saved as a draft."
                )
                return redirect(model_url(version.model, version))
    has_errors = bool(form.errors) or bool(terms_form is not None and terms_form.errors)
    context = {
        "form": form,
        "terms_form": terms_form,
        "chunk_size": settings.ATELIER_UPLOAD_CHUNK_BYTES,
    }
    return render(request, "registry/upload.html", context, status=400 if has_errors else 200)


def _stored_upload(request: AuthenticatedHttpRequest, form: ModelUploadForm) -> Upload | None:
    """The completed upload the form refers to, or the form's own file stored now."""
    upload_id = form.cleaned_data.get("upload_id")
    if upload_id:
        stored = Upload.objects.filter(pk=upload_id, user=request.user).first()
        if stored is None or stored.status != UploadStatus.COMPLETE:
            form.add_error(
                "file", "The uploaded file was not found or is not complete; choose it again."
            )
            return None
        return stored
    uploaded = form.cleaned_data["file"]
    try:
        return upload_whole_file(
            user=request.user, filename=uploaded.name, stream=uploaded, size=uploaded.size
        )
    except ApplicationError as err:
        form.add_error("file", err.message)
        return None


def _create_model_and_version(
    request: AuthenticatedHttpRequest,
    form: ModelUploadForm,
    stored: Upload,
    terms_form: Form | None,
) -> ModelVersion | None:
    """The model, its draft version, its images and its terms, all or nothing; an error goes
    to the field it is about (on the terms form for the license and the price)."""
    data = form.cleaned_data
    terms = upload_terms()
    try:
        with transaction.atomic():
            model = model_create(
                owner=request.user,
                name=data["name"],
                kind=data["kind"],
                description=data["description"],
                tags=data["tags"],
                visibility=data["visibility"],
            )
            version = version_create(
                model=model,
                user=request.user,
                name=data["version_name"],
                files=[FileSpec(upload=stored)],
                trigger_words=data["trigger_words"],
                base_model=data["base_model"],
                base_model_name=data.get("base_model_name", ""),
            )
            try:
                sample_images_add(version=version, user=request.user, files=data["images"])
            except ApplicationError as err:
                form.add_error("images", err.message)
                raise
            if terms is not None and terms_form is not None:
                try:
                    terms.save(version, request.user, terms_form.cleaned_data)
                except ApplicationError as err:
                    terms_form.add_error(terms.error_fields.get(err.code), err.message)
                    raise
            return version
    except ApplicationError as err:
        if not form.has_error("images") and not (terms_form is not None and terms_form.errors):
            form.add_error(_ERROR_FIELDS.get(err.code, "file"), err.message)
        return None


@require_GET
def dataset_list(request: HttpRequest) -> HttpResponse:
    datasets = dataset_reads.dataset_list(user=request.user, filters=dataset_reads.DatasetFilters())
    context = page_context(request, datasets, per_page=DATASETS_PER_PAGE)
    return render(request, "registry/dataset_list.html", context)


@require_GET
def dataset_detail(request: HttpRequest, dataset_id: int, slug: str) -> HttpResponse:
    dataset = dataset_reads.dataset_detail(dataset_id=dataset_id, user=request.user)
    if dataset is None:
        raise Http404("No such dataset.")
    if slug != dataset.slug:
        return redirect("registry:dataset-detail", dataset_id=dataset.pk, slug=dataset.slug)
    versions = dataset.shown_versions  # type: ignore[attr-defined]
    wanted = request.GET.get("version", "")
    version = next((v for v in versions if str(v.pk) == wanted), versions[0] if versions else None)
    context = {
        "dataset": dataset,
        "versions": versions,
        "version": version,
        "is_public_kind": dataset.kind == DatasetKind.PUBLIC,
        "stats": dataset_reads.manifest_stats(version.manifest) if version else [],
        "previews": list(version.previews.all()) if version else [],
    }
    return render(request, "registry/dataset_detail.html", context)


@require_GET
def creator(request: HttpRequest, username: str) -> HttpResponse:
    profile = creator_profile(username=username, user=request.user)
    if profile is None:
        raise Http404("No such creator.")
    _with_cover_urls(profile.models)
    return render(request, "registry/creator.html", {"profile": profile})
