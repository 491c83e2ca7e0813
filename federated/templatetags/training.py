"""Template tags that put federated training on registry pages: a private dataset's terms
with "Train on this", and how a LoRA trained on the site was made (its job, rounds,
datasets and privacy spent). The registry's templates load them; registry code never
imports federated."""

from __future__ import annotations

from typing import Any

from django import template

from federated import selectors
from registry.models import DatasetVersion, ModelVersion

register = template.Library()


@register.inclusion_tag("federated/_dataset_offer.html", takes_context=True)
def dataset_offer(context: template.Context, version: DatasetVersion | None) -> dict[str, Any]:
    """The terms card of a private dataset version (nothing for a public dataset)."""
    offer = (
        selectors.dataset_offer(dataset_version_id=version.pk, user=context["user"])
        if version is not None
        else None
    )
    return {"offer": offer, "user": context.get("user")}


@register.inclusion_tag("federated/_trained_from.html", takes_context=True)
def trained_from(context: template.Context, version: ModelVersion | None) -> dict[str, Any]:
    """The "Trained on the site" card of a LoRA a federated job published (else nothing)."""
    record = (
        selectors.training_record(version=version, user=context["user"])
        if version is not None
        else None
    )
    return {"record": record}
