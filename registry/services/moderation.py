"""Staff moderation: take a model or dataset off the site, or put it back."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db import transaction

from core.errors import AccessDeniedError
from registry.models import Dataset, Model


def _require_staff(user: User) -> None:
    if not user.is_staff:
        raise AccessDeniedError("Only staff can moderate.", code="staff_only")


@transaction.atomic
def model_set_removed(*, model: Model, user: User, removed: bool) -> Model:
    """Hide ``model`` from everyone but its owner and staff (or show it again)."""
    _require_staff(user)
    Model.objects.filter(pk=model.pk).update(is_removed=removed)
    model.is_removed = removed
    return model


@transaction.atomic
def dataset_set_removed(*, dataset: Dataset, user: User, removed: bool) -> Dataset:
    _require_staff(user)
    Dataset.objects.filter(pk=dataset.pk).update(is_removed=removed)
    dataset.is_removed = removed
    return dataset
