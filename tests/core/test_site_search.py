"""Site search finds a model by a file's hash (a SHA-256 or AutoV2 prefix, any case) and by a
trigger word, on the browse page and the API alike (one read path: registry.selectors)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from registry.models import ModelVersion
from registry.services.catalog import FileSpec, model_create, version_create, version_publish
from tests.registry.factories import complete_upload, lora_bytes, make_model

pytestmark = pytest.mark.django_db


def _titles(html: str) -> list[str]:
    return re.findall(r'<h3 class="card-title">([^<]+)</h3>', html)


def _lora(
    owner: Any, name: str, *, seed: int, trigger: str = "", publish: bool = True
) -> ModelVersion:
    model = model_create(owner=owner, name=name, kind="lora")
    upload = complete_upload(user=owner, data=lora_bytes(seed=seed))
    version = version_create(
        model=model,
        user=owner,
        name="v1",
        files=[FileSpec(upload)],
        trigger_words=[trigger] if trigger else [],
    )
    return version_publish(version=version, user=owner) if publish else version


def _sha256(version: ModelVersion) -> str:
    return version.files.get().blob.sha256


def test_an_autov2_hash_finds_its_model_on_the_page_and_the_api(alice: Any) -> None:
    # Given two published LoRAs with different files
    wanted = _lora(alice, "Wanted", seed=1)
    _lora(alice, "Other", seed=2)
    autov2 = _sha256(wanted)[:10].upper()  # as Civitai and A1111 show it
    # When someone searches for the AutoV2 hash
    html = Client().get("/", {"q": autov2}).content.decode()
    api = APIClient().get("/api/v1/models", {"q": autov2}).json()["results"]
    # Then only the model with that file is found, on both
    assert _titles(html) == ["Wanted"]
    assert [m["name"] for m in api] == ["Wanted"]


def test_a_full_sha256_finds_its_model_and_a_short_prefix_does_not(alice: Any) -> None:
    wanted = _lora(alice, "Hashed", seed=3)
    sha = _sha256(wanted)

    assert _titles(Client().get("/", {"q": sha}).content.decode()) == ["Hashed"]
    assert _titles(Client().get("/", {"q": sha[:6]}).content.decode()) == []


def test_a_trigger_word_finds_its_lora(alice: Any) -> None:
    # Given a LoRA trained on the word "zxqstyle" that is not in its name or description
    _lora(alice, "Painterly", seed=4, trigger="zxqstyle painting")
    make_model(owner=alice, name="Unrelated")
    # When a visitor searches for the trigger word
    html = Client().get("/", {"q": "ZXQSTYLE"}).content.decode()
    # Then the LoRA is found
    assert _titles(html) == ["Painterly"]


def test_a_draft_versions_hash_and_trigger_stay_hidden_from_others(alice: Any) -> None:
    # Given a published model whose second version is a draft with its own file and word
    published = _lora(alice, "Public", seed=5)
    draft = version_create(
        model=published.model,
        user=alice,
        name="v2",
        files=[FileSpec(complete_upload(user=alice, data=lora_bytes(seed=6)))],
        trigger_words=["secretword"],
    )
    # When a visitor searches for the draft's hash or word, nothing is found
    assert _titles(Client().get("/", {"q": _sha256(draft)[:10]}).content.decode()) == []
    assert _titles(Client().get("/", {"q": "secretword"}).content.decode()) == []
