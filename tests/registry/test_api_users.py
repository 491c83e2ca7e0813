"""/api/v1/users/{username}: a creator's profile."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from registry.models import Model
from tests.registry.factories import complete_upload, make_model, make_private_dataset

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(make_user):
    user = make_user("alice")
    upload = complete_upload(user=user)
    listed = make_model(owner=user, name="Listed", upload=upload)
    Model.objects.filter(pk=listed.model_id).update(download_count=7)
    make_model(owner=user, name="Draft", upload=upload, publish=False)
    make_private_dataset(owner=user, name="Photos")
    return user


def test_profile_shows_listed_models_datasets_and_counts(alice) -> None:
    response = APIClient().get("/api/v1/users/alice")

    assert response.status_code == 200
    body = response.json()
    assert body["username"] == "alice"
    assert [m["name"] for m in body["models"]] == ["Listed"]
    assert [d["name"] for d in body["datasets"]] == ["Photos"]
    assert body["counts"] == {"models": 1, "datasets": 1, "published_versions": 1, "downloads": 7}


def test_own_profile_includes_drafts(alice, token_for) -> None:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(alice)}")

    body = api.get("/api/v1/users/ALICE").json()

    assert sorted(m["name"] for m in body["models"]) == ["Draft", "Listed"]
    assert body["counts"]["models"] == 2


@pytest.mark.parametrize("username", ["nobody", "a%00b", "a b"])
def test_unknown_or_impossible_user_is_404(db, username: str) -> None:
    response = APIClient().get(f"/api/v1/users/{username}")

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
