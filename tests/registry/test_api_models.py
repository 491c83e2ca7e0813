"""/api/v1/models: listing (filters, sort, search, pagination, query count), create, edit."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from registry.models import Model, Visibility
from registry.services.catalog import version_unpublish
from registry.services.moderation import model_set_removed
from tests.registry.factories import complete_upload, lora_bytes, make_model, make_version

pytestmark = pytest.mark.django_db

MODELS = "/api/v1/models"


def names(response: Any) -> list[str]:
    assert response.status_code == 200, response.json()
    return [item["name"] for item in response.json()["results"]]


# --- what is listed --------------------------------------------------------------------------


def test_list_shows_only_public_models_with_a_published_version(alice, bob) -> None:
    # Given one listed model and one of each kind that must not be listed
    upload = complete_upload(user=alice)
    make_model(owner=alice, name="Listed", upload=upload)
    make_model(owner=alice, name="Draft only", upload=upload, publish=False)
    make_model(owner=alice, name="Private", upload=upload, visibility=Visibility.PRIVATE)
    make_model(owner=alice, name="Unlisted", upload=upload, visibility=Visibility.UNLISTED)
    removed = make_model(owner=alice, name="Removed", upload=upload)
    model_set_removed(model=removed.model, user=_staff(bob), removed=True)

    # When anyone lists models
    response = APIClient().get(MODELS)

    # Then only the listed one appears
    assert names(response) == ["Listed"]


def _staff(user):
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    return user


def test_mine_lists_the_owners_drafts_and_private_models(alice, alice_api, bob) -> None:
    upload = complete_upload(user=alice)
    make_model(owner=alice, name="Draft", upload=upload, publish=False)
    make_model(owner=alice, name="Private", upload=upload, visibility=Visibility.PRIVATE)
    make_model(owner=bob, name="Bob's")

    response = alice_api.get(MODELS, {"mine": "1"})

    assert sorted(names(response)) == ["Draft", "Private"]
    draft = next(i for i in response.json()["results"] if i["name"] == "Draft")
    assert draft["latest_version"]["status"] == "draft"


def test_mine_without_credentials_is_401(db) -> None:
    response = APIClient().get(MODELS, {"mine": "1"})

    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_list_item_carries_owner_tags_and_latest_published_version(alice) -> None:
    version = make_model(
        owner=alice, name="Ink", tags=["Ink", "lineart"], license_code="creativeml-openrail-m"
    )
    make_version(model=version.model, name="v2-draft", publish=False)

    [item] = APIClient().get(MODELS).json()["results"]

    assert item["owner"]["username"] == "alice"
    assert item["repo_id"] == "alice/ink"
    assert item["tags"] == ["ink", "lineart"]
    assert item["latest_version"]["id"] == version.pk
    assert item["latest_version"]["license_code"] == "creativeml-openrail-m"
    assert item["base_models"] == ["sd1"]
    assert item["url"].endswith(f"/api/v1/models/{version.model_id}")


# --- filters ---------------------------------------------------------------------------------


@pytest.fixture
def catalogue(alice, bob):
    """Four listed models that differ in kind, family, tags, license and creator."""
    upload = complete_upload(user=alice)
    make_model(
        owner=alice,
        name="Ink LoRA",
        kind="lora",
        tags=["ink", "style"],
        upload=upload,
        license_code="creativeml-openrail-m",
    )
    make_model(
        owner=alice,
        name="XL Checkpoint",
        kind="checkpoint",
        tags=["style"],
        upload=upload,
        base_model="sdxl",
        license_code="cc-by-nc-4.0",
    )
    make_model(
        owner=bob, name="Bob Embedding", kind="embedding", tags=["ink"], license_code="cc-by-nc-4.0"
    )
    make_model(owner=bob, name="Bob VAE", kind="vae")


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"kind": "lora"}, ["Ink LoRA"]),
        ({"kind": ["lora", "vae"]}, ["Bob VAE", "Ink LoRA"]),
        ({"base_model": "sdxl"}, ["XL Checkpoint"]),
        ({"tags": "ink"}, ["Bob Embedding", "Ink LoRA"]),
        ({"tags": "ink,style"}, ["Ink LoRA"]),
        ({"license": "cc-by-nc-4.0"}, ["Bob Embedding", "XL Checkpoint"]),
        ({"creator": "BOB"}, ["Bob Embedding", "Bob VAE"]),
        ({"creator": "bob", "tags": "ink"}, ["Bob Embedding"]),
    ],
    ids=["kind", "kinds", "base-model", "tag", "all-tags", "license", "creator", "combined"],
)
def test_list_filters(catalogue, params: dict[str, Any], expected: list[str]) -> None:
    response = APIClient().get(MODELS, params)

    assert sorted(names(response)) == expected


def test_base_model_filter_ignores_unpublished_versions(alice) -> None:
    # Given a listed SD 1.x model whose SDXL version was unpublished
    version = make_model(owner=alice, name="Mixed")
    xl = make_version(model=version.model, name="xl", base_model="sdxl")
    version_unpublish(version=xl, user=alice)

    response = APIClient().get(MODELS, {"base_model": "sdxl"})

    assert names(response) == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"kind": "spaceship"}, "kind"),
        ({"sort": "random"}, "sort"),
        ({"base_model": "sd9"}, "base_model"),
    ],
)
def test_an_unknown_filter_value_is_400_naming_the_field(
    db, params: dict[str, str], field: str
) -> None:
    response = APIClient().get(MODELS, params)

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_filter"
    assert field in response.json()["details"]


# --- sorting and search ----------------------------------------------------------------------


def test_sort_by_downloads_and_by_rating(alice) -> None:
    upload = complete_upload(user=alice)
    for name, downloads, rating in [("A", 5, 4.0), ("B", 50, 3.0), ("C", 1, 5.0)]:
        version = make_model(owner=alice, name=name, upload=upload)
        Model.objects.filter(pk=version.model_id).update(
            download_count=downloads, rating_avg=rating, rating_count=3
        )

    by_downloads = APIClient().get(MODELS, {"sort": "downloads"})
    by_rating = APIClient().get(MODELS, {"sort": "rating"})
    newest = APIClient().get(MODELS)

    assert names(by_downloads) == ["B", "A", "C"]
    assert names(by_rating) == ["C", "A", "B"]
    assert names(newest) == ["C", "B", "A"]


@pytest.fixture
def searchable(alice):
    upload = complete_upload(user=alice)
    make_model(
        owner=alice,
        name="Watercolor Landscapes",
        description="Soft washes of paint.",
        upload=upload,
    )
    make_model(
        owner=alice,
        name="Pixel Sprites",
        description="Retro game art that also looks fine as watercolor.",
        upload=upload,
    )
    make_model(
        owner=alice,
        name="Anime Faces",
        description="Clean cel shading.",
        upload=upload,
        tags=["portrait"],
    )


def test_search_ranks_name_matches_above_description_matches(searchable) -> None:
    response = APIClient().get(MODELS, {"q": "watercolor"})

    assert names(response) == ["Watercolor Landscapes", "Pixel Sprites"]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ('"cel shading"', ["Anime Faces"]),
        ("watercolor -retro", ["Watercolor Landscapes"]),
        ("portrait", ["Anime Faces"]),
        ("Sprit", ["Pixel Sprites"]),
        ("nothing-like-this", []),
    ],
    ids=["phrase", "exclusion", "tag", "partial-name", "no-match"],
)
def test_search_uses_web_search_syntax(searchable, q: str, expected: list[str]) -> None:
    assert names(APIClient().get(MODELS, {"q": q})) == expected


def test_search_with_an_explicit_sort_follows_the_sort(searchable) -> None:
    response = APIClient().get(MODELS, {"q": "watercolor", "sort": "newest"})

    assert names(response) == ["Pixel Sprites", "Watercolor Landscapes"]


# --- pagination and query count --------------------------------------------------------------


@pytest.fixture
def many_models(alice, bob):
    """55 listed models by two owners, each with two tags and a published version."""
    upload = complete_upload(user=alice)
    bob_upload = complete_upload(user=bob, data=lora_bytes(seed=9))
    for i in range(55):
        owner, shared = (alice, upload) if i % 2 else (bob, bob_upload)
        make_model(owner=owner, name=f"Model {i:02d}", tags=[f"tag{i}", "common"], upload=shared)


def test_pages_hold_page_size_items_and_link_to_the_next(many_models) -> None:
    first = APIClient().get(MODELS, {"page_size": 20})
    last = APIClient().get(MODELS, {"page_size": 20, "page": 3})

    assert first.json()["count"] == 55
    assert len(first.json()["results"]) == 20
    assert "page=2" in first.json()["next"]
    assert len(last.json()["results"]) == 15
    assert last.json()["next"] is None


def test_a_page_past_the_end_is_404_json(many_models) -> None:
    response = APIClient().get(MODELS, {"page": 99})

    assert response.status_code == 404
    assert set(response.json()) == {"code", "message", "details"}


@pytest.mark.parametrize("page_size", [5, 50])
def test_list_runs_a_constant_number_of_queries(
    many_models, django_assert_max_num_queries, page_size: int
) -> None:
    # Given 55 listed models with tags and versions
    client = APIClient()

    # When a page of 5 or 50 is listed
    with django_assert_max_num_queries(6):
        response = client.get(MODELS, {"page_size": page_size, "tags": "common"})

    # Then the page is full and every item carries its relations
    items = response.json()["results"]
    assert len(items) == page_size
    assert all(len(item["tags"]) == 2 and item["latest_version"]["name"] == "v1" for item in items)
    assert len({item["owner"]["username"] for item in items}) == 2


def test_query_count_is_the_same_for_5_and_50_items_signed_in(
    many_models, alice_api: APIClient
) -> None:
    alice_api.get("/api/v1/auth/whoami")  # the token's last use is recorded once a minute
    counts = []
    for page_size in (5, 50):
        with CaptureQueriesContext(connection) as queries:
            response = alice_api.get(MODELS, {"page_size": page_size, "q": "model"})
        assert len(response.json()["results"]) == page_size
        counts.append(len(queries))

    assert counts[0] == counts[1] <= 6


# --- create and edit -------------------------------------------------------------------------


def test_create_returns_the_model_with_rendered_description(alice_api: APIClient) -> None:
    response = alice_api.post(
        MODELS,
        {"name": "Ink", "kind": "lora", "description": "**bold**", "tags": ["Ink"]},
        format="json",
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["slug"] == "ink"
    assert "<strong>bold</strong>" in body["description_html"]
    assert body["versions"] == []
    assert Model.objects.get(pk=body["id"]).owner.username == "alice"


def test_script_in_a_description_is_not_stored_in_the_html(alice_api: APIClient) -> None:
    # Given a description that tries to run script two ways
    description = (
        "Hello <script>alert('x')</script>\n\n"
        '<img src="x" onerror="alert(1)"> [link](javascript:alert(2))'
    )

    # When the model is created
    response = alice_api.post(
        MODELS, {"name": "Evil", "kind": "lora", "description": description}, format="json"
    )

    # Then the stored HTML keeps the text but no script, handler or javascript URL
    html = Model.objects.get(pk=response.json()["id"]).description_html
    assert "Hello" in html
    assert "<script" not in html.lower()
    assert "onerror" not in html.lower()
    assert "javascript:" not in html.lower()


def test_create_anonymously_is_401(db) -> None:
    response = APIClient().post(MODELS, {"name": "X", "kind": "lora"}, format="json")

    assert response.status_code == 401


def test_create_with_an_unknown_kind_is_400_naming_the_field(alice_api: APIClient) -> None:
    response = alice_api.post(MODELS, {"name": "X", "kind": "spaceship"}, format="json")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert "kind" in response.json()["details"]


def test_owner_patches_name_tags_and_visibility(alice, alice_api: APIClient) -> None:
    version = make_model(owner=alice, name="Old")

    response = alice_api.patch(
        f"{MODELS}/{version.model_id}",
        {"name": "New", "tags": ["a", "b"], "visibility": "unlisted"},
        format="json",
    )

    assert response.status_code == 200
    assert (response.json()["name"], response.json()["tags"]) == ("New", ["a", "b"])
    assert Model.objects.get(pk=version.model_id).visibility == "unlisted"


@pytest.mark.parametrize(
    ("body", "field"),
    [({"visibility": "secret"}, "visibility"), ({"tags": "not-a-list"}, "tags")],
)
def test_patch_with_bad_values_is_400(
    alice, alice_api: APIClient, body: dict[str, str], field: str
) -> None:
    version = make_model(owner=alice, name="Old")

    response = alice_api.patch(f"{MODELS}/{version.model_id}", body, format="json")

    assert response.status_code == 400
    assert field in response.json()["details"]


def test_another_user_cannot_patch_a_public_model(alice, bob_api: APIClient) -> None:
    version = make_model(owner=alice, name="Mine")

    response = bob_api.patch(f"{MODELS}/{version.model_id}", {"name": "Theirs"}, format="json")

    assert response.status_code == 403
    assert Model.objects.get(pk=version.model_id).name == "Mine"


# --- visibility of one model -----------------------------------------------------------------


def test_private_model_is_404_for_others_and_visible_to_its_owner(
    alice, alice_api: APIClient, bob_api: APIClient
) -> None:
    version = make_model(owner=alice, name="Secret", visibility=Visibility.PRIVATE)
    url = f"{MODELS}/{version.model_id}"

    assert bob_api.get(url).status_code == 404
    assert APIClient().get(url).status_code == 404
    assert bob_api.patch(url, {"name": "x"}, format="json").status_code == 404
    assert alice_api.get(url).json()["name"] == "Secret"


def test_detail_shows_drafts_to_the_owner_only(alice, alice_api: APIClient) -> None:
    version = make_model(owner=alice, name="Two")
    make_version(model=version.model, name="draft", publish=False)
    url = f"{MODELS}/{version.model_id}"

    owner_sees = [v["name"] for v in alice_api.get(url).json()["versions"]]
    others_see = [v["name"] for v in APIClient().get(url).json()["versions"]]

    assert owner_sees == ["draft", "v1"]
    assert others_see == ["v1"]


def test_unlisted_model_opens_by_id_but_is_not_listed(alice) -> None:
    version = make_model(owner=alice, name="By link", visibility=Visibility.UNLISTED)

    assert APIClient().get(f"{MODELS}/{version.model_id}").status_code == 200
    assert names(APIClient().get(MODELS)) == []
