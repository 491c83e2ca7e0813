"""Site search finds a model by a file's hash (a SHA-256 or AutoV2 prefix, any case) and by a
trigger word, on the browse page and the API alike (one read path: registry.selectors)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from registry.models import ModelVersion
from registry.selectors.models import ModelFilters, model_list
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


def test_like_wildcards_and_short_words_do_not_match_every_trigger_word(alice: Any) -> None:
    # Given a LoRA with a trigger word
    _lora(alice, "Painterly", seed=7, trigger="zxqstyle")
    # When someone searches for LIKE wildcards, quotes, a two-letter piece or a huge query
    for q in ("%%%", "___", "zx", '"', "'; drop table x; --", "z" * 200):
        response = Client().get("/", {"q": q})
        # Then the page answers and finds nothing (wildcards are escaped, not patterns)
        assert response.status_code == 200, q
        assert _titles(response.content.decode()) == [], q
    assert APIClient().get("/api/v1/models", {"q": "%%%"}).json()["results"] == []


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the indexes are PostgreSQL's (migration 0007)"
)
def test_the_hash_and_trigger_word_matches_can_use_their_indexes(alice: Any) -> None:
    # Given a published LoRA (a tiny table: the planner would rather scan, so scans are off)
    wanted = _lora(alice, "Indexed", seed=8, trigger="zxqstyle")
    filters = ModelFilters(q=_sha256(wanted)[:10])
    # When the search's query is planned with sequential scans discouraged
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        plans = []
        for q in ("zxqstyle", filters.q):
            sql, params = model_list(user=alice, filters=ModelFilters(q=q)).query.sql_with_params()
            cursor.execute("EXPLAIN " + sql, params)
            plans.append("\n".join(row[0] for row in cursor.fetchall()))
    # Then the trigger word is looked up in the trigram index, the hash prefix in the file's
    # pattern index, and neither is a subplan run per model
    assert "version_trigger_words_trgm" in plans[0], plans[0]
    assert re.search(r"registry_modelfile_blob_id_\w+_like", plans[1]), plans[1]
    for plan in plans:
        assert "= ANY ($" in plan and "hashed SubPlan" not in plan, plan
