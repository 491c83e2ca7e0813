"""Django admin: staff browse the registry and moderate through the services."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from core.errors import AccessDeniedError
from registry.models import Model, ModelVersion
from registry.services.moderation import model_set_removed
from tests.registry.factories import make_model, make_private_dataset

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(make_user) -> Client:
    client = Client()
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    return client


@pytest.mark.parametrize(
    "page",
    [
        "model",
        "modelversion",
        "modelfile",
        "blob",
        "dataset",
        "datasetversion",
        "lineage",
        "sampleimage",
        "upload",
        "tag",
    ],
)
def test_every_registry_changelist_renders_for_staff(alice, staff: Client, page: str) -> None:
    version = make_model(owner=alice, name="Ink")
    make_private_dataset(owner=alice)

    listing = staff.get(f"/admin/registry/{page}/")

    assert listing.status_code == 200
    if page == "model":
        assert staff.get(f"/admin/registry/model/{version.model_id}/change/").status_code == 200


def test_mark_removed_hides_the_model_from_the_api(alice, staff: Client) -> None:
    # Given a listed model
    version = make_model(owner=alice, name="Ink")

    # When staff mark it removed in the admin
    response = staff.post(
        "/admin/registry/model/",
        {"action": "mark_removed", "_selected_action": [version.model_id]},
    )

    # Then it is gone for everyone else, and its owner still sees it
    assert response.status_code == 302
    assert Model.objects.get(pk=version.model_id).is_removed
    assert APIClient().get("/api/v1/models").json()["results"] == []
    assert APIClient().get(f"/api/v1/models/{version.model_id}").status_code == 404


def test_unpublish_action_unpublishes_the_version(alice, staff: Client) -> None:
    version = make_model(owner=alice, name="Ink")

    staff.post(
        "/admin/registry/modelversion/",
        {"action": "unpublish", "_selected_action": [version.pk]},
    )

    assert ModelVersion.objects.get(pk=version.pk).status == "unpublished"


def test_the_admin_offers_no_add_or_delete_for_catalogue_rows(alice, staff: Client) -> None:
    version = make_model(owner=alice, name="Ink")

    assert staff.get("/admin/registry/model/add/").status_code == 403
    assert staff.get(f"/admin/registry/model/{version.model_id}/delete/").status_code == 403


def test_moderation_refuses_non_staff(alice) -> None:
    version = make_model(owner=alice, name="Ink")

    with pytest.raises(AccessDeniedError):
        model_set_removed(model=version.model, user=alice, removed=True)

    assert not Model.objects.get(pk=version.model_id).is_removed
