"""What the landing page tells visitors, read from the site's own data (no figure is written
down anywhere else): how many models, creators, datasets, purchases and trained LoRAs there
are, a few covers, and a LoRA's before/after pair. It reads every app, so it sits on the top
floor with the urls that join them."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.contrib.auth.models import AnonymousUser
from django.core.files.storage import storages
from django.db.models import Exists, OuterRef, Sum
from django.urls import reverse

from federated.models import DatasetTerms, FederatedJob
from marketplace.models import Purchase
from registry.models import DatasetKind, Model, ModelKind, SampleImage, SampleRole, VersionStatus
from registry.selectors.datasets import listed_datasets
from registry.selectors.models import ModelFilters, listed_models, model_list

COVERS = 6


@dataclass(frozen=True)
class Showcase:
    """A model shown on the landing page with its cover."""

    name: str
    kind: str
    url: str
    image_url: str


@dataclass(frozen=True)
class BeforeAfter:
    """A LoRA's rendered pair: the base model alone and with the LoRA (same prompt, seed)."""

    model_name: str
    url: str
    prompt: str
    before_url: str
    after_url: str
    trained_here: bool  # the LoRA came out of a federated job on this site


@dataclass(frozen=True)
class LandingFacts:
    models: int = 0
    loras: int = 0
    creators: int = 0
    public_datasets: int = 0
    private_datasets: int = 0
    purchases: int = 0
    jobs_completed: int = 0
    paid_to_data_owners: int = 0
    covers: list[Showcase] = field(default_factory=list)
    pair: BeforeAfter | None = None


def _model_url(model: Model) -> str:
    return reverse("registry:model-detail", args=[model.pk, model.slug])


def _before_after() -> BeforeAfter | None:
    """The newest published LoRA pair of a listed model, one trained on the site first."""
    adapted = (
        SampleImage.objects.filter(
            role=SampleRole.ADAPTED,
            pair__isnull=False,
            version__status=VersionStatus.PUBLISHED,
            version__model__in=listed_models(),
        )
        .annotate(
            trained_here=Exists(FederatedJob.objects.filter(result_version=OuterRef("version")))
        )
        .select_related("pair", "version__model")
        .order_by("-trained_here", "-created_at", "-pk")
    )
    image = adapted.first()
    if image is None or image.pair is None:
        return None
    storage = storages["default"]
    model = image.version.model
    return BeforeAfter(
        model_name=model.name,
        url=_model_url(model),
        prompt=image.prompt,
        before_url=storage.url(image.pair.image.name),
        after_url=storage.url(image.image.name),
        trained_here=bool(image.trained_here),
    )


def landing_facts() -> LandingFacts:
    listed = listed_models()
    completed = FederatedJob.objects.filter(state=FederatedJob.State.COMPLETED)
    storage = storages["default"]
    newest = model_list(user=AnonymousUser(), filters=ModelFilters())
    # cover_image is model_list's annotation, which the stubs cannot see.
    with_cover = newest.exclude(cover_image=None)  # type: ignore[misc]
    covers = [
        Showcase(
            m.name,
            m.get_kind_display(),
            _model_url(m),
            storage.url(m.cover_image),  # type: ignore[attr-defined]  # the same annotation
        )
        for m in with_cover[:COVERS]
    ]
    return LandingFacts(
        models=listed.count(),
        loras=listed.filter(kind=ModelKind.LORA).count(),
        creators=listed.values("owner_id").distinct().count(),
        public_datasets=listed_datasets().filter(kind=DatasetKind.PUBLIC).count(),
        private_datasets=DatasetTerms.objects.filter(
            dataset_version__dataset__in=listed_datasets()
        ).count(),
        purchases=Purchase.objects.count(),
        jobs_completed=completed.count(),
        paid_to_data_owners=completed.aggregate(total=Sum("owners_paid"))["total"] or 0,
        covers=covers,
        pair=_before_after(),
    )
