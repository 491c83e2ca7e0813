"""The one visibility rule: the querysets' ``visible_to(user)`` and ``registry.access`` (the same
rule asked of rows already loaded) agree for every viewer on every kind of model and dataset."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser

from registry.access import can_view_dataset, can_view_model, can_view_version
from registry.models import Dataset, Model, ModelVersion, Visibility
from registry.services.moderation import dataset_set_removed, model_set_removed
from tests.registry.factories import make_model, make_private_dataset

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(make_user: Any) -> dict[str, Any]:
    """Every visibility, removed or not, published or draft, all owned by one maker."""
    maker, staff = make_user("maker"), make_user("mod", is_staff=True)
    for visibility in Visibility.values:
        for removed in (False, True):
            for publish in (True, False):
                name = f"{visibility} {removed} {publish}"
                version = make_model(owner=maker, name=name, visibility=visibility, publish=publish)
                if removed:
                    model_set_removed(model=version.model, user=staff, removed=True)
            dataset = make_private_dataset(
                owner=maker, name=f"{visibility} {removed}", visibility=visibility
            ).dataset
            if removed:
                dataset_set_removed(dataset=dataset, user=staff, removed=True)
    return {
        "anonymous": AnonymousUser(),
        "stranger": make_user("stranger"),
        "owner": maker,
        "staff": staff,
    }


@pytest.mark.parametrize("viewer", ["anonymous", "stranger", "owner", "staff"])
def test_the_query_and_the_row_check_agree(world: dict[str, Any], viewer: str) -> None:
    # Given a viewer and every kind of model, version and dataset
    user = world[viewer]
    # When each is asked as a query and as a row
    # Then both give the same answer
    models = set(Model.objects.visible_to(user).values_list("pk", flat=True))
    assert models == {m.pk for m in Model.objects.all() if can_view_model(user, m)}
    versions = set(ModelVersion.objects.visible_to(user).values_list("pk", flat=True))
    assert versions == {
        v.pk for v in ModelVersion.objects.select_related("model") if can_view_version(user, v)
    }
    datasets = set(Dataset.objects.visible_to(user).values_list("pk", flat=True))
    assert datasets == {d.pk for d in Dataset.objects.all() if can_view_dataset(user, d)}


def test_others_see_published_versions_of_public_and_unlisted_models_only(
    world: dict[str, Any],
) -> None:
    # Given a stranger
    # When they ask for the versions they may open
    seen = ModelVersion.objects.visible_to(world["stranger"]).select_related("model")
    # Then they get the published ones of models neither private nor removed
    assert sorted(v.model.name for v in seen) == ["public False True", "unlisted False True"]
    # and the owner and staff see all twelve
    assert ModelVersion.objects.visible_to(world["owner"]).count() == 12
    assert ModelVersion.objects.visible_to(world["staff"]).count() == 12
