"""The generation API: who may use which files, what bad input gets, listing and sharing.

No worker here: a created generation stays queued (the task is queued on commit, and these
tests never commit). The worker's part is in ``test_run.py`` and ``test_end_to_end.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from drf_spectacular.drainage import GENERATOR_STATS
from rest_framework.settings import api_settings
from rest_framework.test import APIClient

from studio.api.generations import GenerationListCreateApi
from studio.models import Generation, GenerationStatus

pytestmark = pytest.mark.django_db

URL = "/api/v1/generations"


def _body(studio: Any, **extra: Any) -> dict[str, Any]:
    return {
        "base_version_id": studio.base.pk,
        "prompt": "a castle on a hill",
        "seed": 7,
        "steps": 2,
        "width": 32,
        "height": 32,
        **extra,
    }


def test_a_request_with_a_lora_and_an_embedding_is_queued(studio, client_for) -> None:
    # When the artist asks for an image with the creator's free LoRA and embedding
    response = client_for(studio.artist).post(
        URL,
        _body(
            studio,
            negative_prompt="easyneg",
            loras=[{"version_id": studio.lora.pk, "weight": 0.8}],
            embeddings=[{"version_id": studio.embedding.pk}],
        ),
        format="json",
    )
    # Then it is accepted and queued, with what it uses and where to follow it
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "queued" and body["progress"] == {
        "step": 0,
        "total": 2,
        "text": "Queued",
        "eta_seconds": None,  # no generation finished yet: no pace to guess from
    }
    assert body["queue_position"] == 0 and body["image_url"] is None
    assert body["loras"] == [
        {
            "version_id": studio.lora.pk,
            "name": "castles",
            "display_name": "Castles v1",
            "weight": 0.8,
        }
    ]
    assert [e["name"] for e in body["embeddings"]] == ["easyneg"]
    assert response["Location"].endswith(f"/studio/generations/{body['id']}/")
    generation = Generation.objects.get(pk=body["id"])
    assert (generation.user, generation.seed, generation.base_version) == (
        studio.artist,
        7,
        studio.base,
    )


def test_a_paid_lora_without_a_purchase_is_403_naming_the_field(studio, client_for, sell) -> None:
    sell(studio.lora, 50)
    response = client_for(studio.artist).post(
        URL, _body(studio, loras=[{"version_id": studio.lora.pk}]), format="json"
    )
    assert response.status_code == 403
    body = response.json()
    assert body["code"] == "purchase_required"
    assert body["details"]["field"] == "loras[0].version_id"
    assert body["details"]["price"] == 50
    assert body["message"] == "loras[0].version_id: Castles v1 costs 50 credits; buy it to use it."
    assert not Generation.objects.exists()


def test_a_paid_lora_can_be_used_once_bought(studio, client_for, sell, buy) -> None:
    buy(studio.artist, sell(studio.lora, 50))
    response = client_for(studio.artist).post(
        URL, _body(studio, loras=[{"version_id": studio.lora.pk}]), format="json"
    )
    assert response.status_code == 202, response.content


def test_a_paid_checkpoint_without_a_purchase_is_403(studio, client_for, sell) -> None:
    sell(studio.base, 20)
    response = client_for(studio.artist).post(URL, _body(studio), format="json")
    assert response.status_code == 403
    assert response.json()["details"]["field"] == "base_version_id"


def test_someone_elses_unpublished_lora_is_404(
    studio, client_for, publish_file, resource_files, make_user
) -> None:
    stranger = make_user("stranger")
    draft = publish_file(stranger, resource_files["other_lora"], kind="lora", publish=False)
    response = client_for(studio.artist).post(
        URL, _body(studio, loras=[{"version_id": draft.pk}]), format="json"
    )
    assert response.status_code == 404
    body = response.json()
    assert (body["code"], body["details"]["field"]) == ("version_not_found", "loras[0].version_id")


def test_my_own_unpublished_lora_on_a_marketplace_checkpoint_is_accepted(
    studio, client_for, publish_file, resource_files
) -> None:
    # Given the artist's own draft LoRA (a personal LoRA) and the creator's published base
    mine = publish_file(studio.artist, resource_files["other_lora"], kind="lora", publish=False)
    assert not mine.is_published
    # When the artist uses it
    response = client_for(studio.artist).post(
        URL, _body(studio, loras=[{"version_id": mine.pk, "weight": 1.2}]), format="json"
    )
    # Then it is accepted
    assert response.status_code == 202, response.content
    assert response.json()["loras"][0]["version_id"] == mine.pk


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        ({"width": 36}, "width", "bad_size"),
        ({"height": 20}, "height", "bad_size"),
        ({"width": 4096, "height": 64}, "width", "bad_size"),
        ({"width": 1024, "height": 1024}, "width", "too_large"),
        ({"steps": 500}, "steps", "too_many_steps"),
        ({"steps": 0}, "steps", "bad_steps"),
        ({"guidance": 99}, "guidance", "bad_guidance"),
        ({"seed": 2**40}, "seed", "bad_seed"),
        ({"prompt": "x" * 2001}, "prompt", "prompt_too_long"),
        ({"loras": [{"version_id": 1, "weight": 1}] * 6}, "loras", "too_many_loras"),
    ],
)
def test_bad_settings_are_400_naming_the_field(
    studio, client_for, change: dict[str, Any], field: str, code: str
) -> None:
    response = client_for(studio.artist).post(URL, _body(studio, **change), format="json")
    assert response.status_code == 400, response.content
    body = response.json()
    assert (body["code"], body["details"]["field"]) == (code, field)
    assert body["message"].startswith(f"{field}: ")
    assert not Generation.objects.exists()


def test_input_of_the_wrong_type_is_400_naming_the_field(studio, client_for) -> None:
    response = client_for(studio.artist).post(
        URL, _body(studio, steps="many", sampler="Heun++", prompt=["a"]), format="json"
    )
    assert response.status_code == 400
    assert set(response.json()["details"]) == {"steps", "sampler", "prompt"}


def test_a_nul_character_in_the_prompt_is_refused_by_the_json_parser(studio, client_for) -> None:
    response = client_for(studio.artist).post(
        URL, _body(studio, steps="many", prompt="a\x00b"), format="json"
    )
    assert response.status_code == 400
    body = response.json()
    assert (body["code"], body["details"]["field"]) == ("bad_text", "prompt")
    assert not Generation.objects.exists()


def test_a_lora_for_another_architecture_is_400(
    studio, client_for, publish_file, resource_files
) -> None:
    sdxl = publish_file(
        studio.creator,
        resource_files["other_lora"],
        kind="lora",
        base_model="sdxl",
        name="XL thing",
    )
    response = client_for(studio.artist).post(
        URL, _body(studio, loras=[{"version_id": sdxl.pk}]), format="json"
    )
    assert response.status_code == 400
    body = response.json()
    assert (body["code"], body["details"]["field"]) == (
        "architecture_mismatch",
        "loras[0].version_id",
    )
    assert "is for SDXL but the checkpoint is SD 1.x" in body["message"]


@pytest.mark.parametrize(
    ("make_body", "field", "code"),
    [
        (lambda s: {"base_version_id": s.lora.pk}, "base_version_id", "not_a_checkpoint"),
        (
            lambda s: {"loras": [{"version_id": s.embedding.pk}]},
            "loras[0].version_id",
            "not_a_lora",
        ),
        (
            lambda s: {"embeddings": [{"version_id": s.lora.pk}]},
            "embeddings[0].version_id",
            "not_an_embedding",
        ),
        (
            lambda s: {"loras": [{"version_id": s.lora.pk, "weight": 5}]},
            "loras[0].weight",
            "bad_weight",
        ),
        (
            lambda s: {"loras": [{"version_id": s.lora.pk}, {"version_id": s.lora.pk}]},
            "loras[1].version_id",
            "duplicate",
        ),
    ],
)
def test_files_of_the_wrong_kind_are_400_naming_the_field(
    studio, client_for, make_body: Any, field: str, code: str
) -> None:
    response = client_for(studio.artist).post(
        URL, _body(studio, **make_body(studio)), format="json"
    )
    assert response.status_code == 400, response.content
    assert (response.json()["code"], response.json()["details"]["field"]) == (code, field)


def test_a_flux_checkpoint_is_refused_as_unsupported(
    studio, client_for, publish_file, tiny_checkpoint
) -> None:
    xl = publish_file(
        studio.creator, tiny_checkpoint, kind="checkpoint", base_model="flux", name="Flux base"
    )
    response = client_for(studio.artist).post(
        URL, _body(studio, base_version_id=xl.pk), format="json"
    )
    assert response.status_code == 400
    assert response.json()["code"] == "unsupported_base_model"


def test_a_user_may_not_queue_more_than_the_limit(studio, client_for, settings) -> None:
    settings.ATELIER_GENERATION_MAX_ACTIVE = 2
    client = client_for(studio.artist)
    assert [client.post(URL, _body(studio), format="json").status_code for _ in range(2)] == [
        202,
        202,
    ]
    response = client.post(URL, _body(studio), format="json")
    assert response.status_code == 429
    assert response.json()["code"] == "too_many_generations"
    assert Generation.objects.count() == 2


def test_anonymous_requests_are_401(studio) -> None:
    assert APIClient().post(URL, _body(studio), format="json").status_code == 401
    assert APIClient().get(URL).status_code == 401


def test_the_list_holds_only_my_generations_newest_first(
    studio, client_for, make_user, django_assert_max_num_queries
) -> None:
    other = make_user("other")
    mine = [
        client_for(studio.artist).post(URL, _body(studio, seed=s), format="json").json()["id"]
        for s in (1, 2, 3)
    ]
    client_for(other).post(URL, _body(studio), format="json")
    client = client_for(studio.artist)
    with django_assert_max_num_queries(12):
        response = client.get(URL)
    assert response.status_code == 200
    assert [g["id"] for g in response.json()["results"]] == mine[::-1]


def test_a_generation_is_private_until_its_owner_makes_it_public(
    studio, client_for, make_user
) -> None:
    # Given a finished generation of the artist's
    generation_id = client_for(studio.artist).post(URL, _body(studio), format="json").json()["id"]
    Generation.objects.filter(pk=generation_id).update(status=GenerationStatus.SUCCEEDED)
    detail = f"{URL}/{generation_id}"
    stranger = client_for(make_user("stranger"))
    # Then others get 404 for it and its image
    assert stranger.get(detail).status_code == 404
    assert APIClient().get(f"{detail}/image").status_code == 404
    # and may not change it
    assert stranger.patch(detail, {"is_public": True}, format="json").status_code == 404
    # When the owner makes it public
    response = client_for(studio.artist).patch(detail, {"is_public": True}, format="json")
    assert response.status_code == 200 and response.json()["is_public"] is True
    # Then anyone may read it, but only the owner may change it
    assert APIClient().get(detail).status_code == 200
    assert stranger.patch(detail, {"is_public": False}, format="json").status_code == 403


def test_an_unfinished_generation_cannot_be_made_public(studio, client_for) -> None:
    client = client_for(studio.artist)
    generation_id = client.post(URL, _body(studio), format="json").json()["id"]
    response = client.patch(f"{URL}/{generation_id}", {"is_public": True}, format="json")
    assert response.status_code == 400
    assert response.json()["details"]["field"] == "is_public"


def test_the_create_api_has_the_generation_throttle_scope_when_a_rate_is_set() -> None:
    rate_set = "generation" in (api_settings.DEFAULT_THROTTLE_RATES or {})
    assert GenerationListCreateApi.throttle_scope == ("generation" if rate_set else None)


def test_requests_beyond_the_generation_rate_are_429(
    studio, client_for, monkeypatch: pytest.MonkeyPatch
) -> None:
    if GenerationListCreateApi.throttle_scope is None:
        pytest.skip("no rate is set for the generation scope")
    from rest_framework.throttling import ScopedRateThrottle

    monkeypatch.setattr(
        ScopedRateThrottle,
        "THROTTLE_RATES",
        {**ScopedRateThrottle.THROTTLE_RATES, "generation": "1/min"},
    )
    client = client_for(studio.artist)
    assert client.post(URL, _body(studio), format="json").status_code == 202
    refused = client.post(URL, _body(studio), format="json")
    assert refused.status_code == 429
    assert client.get(URL).status_code == 200  # reading is not a generation
    assert Generation.objects.count() == 1


def test_the_schema_documents_the_generation_api_without_warnings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    GENERATOR_STATS.reset()
    response = APIClient().get("/api/schema/")
    assert response.status_code == 200
    paths = yaml.safe_load(response.content)["paths"]
    assert {
        "/api/v1/generations",
        "/api/v1/generations/{generation_id}",
        "/api/v1/generations/{generation_id}/samples",
    } <= set(paths)
    assert set(paths["/api/v1/generations"]) == {"get", "post"}
    assert "202" in paths["/api/v1/generations"]["post"]["responses"]
    assert not GENERATOR_STATS, capsys.readouterr().err


def test_a_generation_asked_for_while_the_broker_is_down_is_failed_with_the_reason(
    studio: Any, client_for: Any, broker_down: str, django_capture_on_commit_callbacks: Any
) -> None:
    # When the artist asks for an image while the broker is down, and the request commits
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(studio.artist).post(URL, _body(studio), format="json")

    # Then the request is answered, and the generation is failed with a reason, not queued
    assert response.status_code == 202, response.content
    generation = Generation.objects.get(pk=response.json()["id"])
    assert generation.status == GenerationStatus.FAILED
    assert generation.error_code == "queue_unavailable"
    assert "could not be queued" in generation.error
