"""A LoRA trained on the site gets a real cover (issue #19): publishing adds the last round's
sample-grid strips first, the renderer then adds base-vs-LoRA pairs; the cover is the first
"with LoRA" half, not a grid strip, on the browse card, the API, the landing page and the model
page alike. A grid strip is the cover only when the version has nothing else."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.test import Client
from rest_framework.test import APIClient

from registry.models import SampleRole
from registry.services.images import sample_image_add
from registry.services.samples import RenderedSample, _store
from tests.registry.factories import make_model, png_bytes

pytestmark = pytest.mark.django_db


def _grid_strip(version: Any, owner: Any) -> Any:
    """A round's grid strip as federated publishing adds it (``{"job": id, "round": n}``)."""
    return sample_image_add(
        version=version,
        user=owner,
        image=ContentFile(png_bytes(size=(64, 16), color="gray"), name="round-2.png"),
        prompt="a red circle",
        parameters={"job": 7, "round": 2, "seed": 1},
    )


def _covers(client: Client, version: Any) -> dict[str, str]:
    model = version.model
    browse = client.get("/models/").content.decode()
    api = APIClient().get("/api/v1/models").json()["results"]
    page = client.get(f"/models/{model.pk}/{model.slug}/").content.decode()
    landing = client.get("/welcome/").content.decode()
    return {"browse": browse, "api": api[0]["cover_image_url"], "page": page, "landing": landing}


def test_a_trained_loras_cover_is_its_first_with_lora_half_not_the_grid(
    client: Client, alice: Any
) -> None:
    # Given a published LoRA whose first image is a round's grid strip, then a rendered pair
    version = make_model(owner=alice, name="Red circles LoRA")
    strip = _grid_strip(version, alice)
    base_half, with_lora = _store(
        version,
        [
            RenderedSample(png_bytes(color="white"), "a red circle", role=SampleRole.BASE, pair=0),
            RenderedSample(png_bytes(color="red"), "a red circle", role=SampleRole.ADAPTED, pair=0),
        ],
    )
    assert strip.position < base_half.position < with_lora.position
    # When the card, the API, the model page and the landing page show the cover
    covers = _covers(client, version)
    # Then each shows the "with LoRA" half, none the grid strip or the base alone
    url = with_lora.image.url
    assert f'src="{url}"' in covers["browse"] and strip.image.url not in covers["browse"]
    assert covers["api"].endswith(url)
    assert f'id="model-cover" src="{url}"' in covers["page"]
    assert f'<img src="{url}" alt="Red circles LoRA"' in covers["landing"]
    # and the strip is still on the model page, among the samples
    assert strip.image.url in covers["page"]


def test_a_grid_strip_is_the_cover_when_there_is_nothing_else(client: Client, alice: Any) -> None:
    version = make_model(owner=alice, name="Only a grid")
    strip = _grid_strip(version, alice)
    covers = _covers(client, version)
    assert covers["api"].endswith(strip.image.url)
    assert f'id="model-cover" src="{strip.image.url}"' in covers["page"]


def test_the_creators_own_image_first_stays_the_cover(client: Client, alice: Any) -> None:
    # Given a LoRA with a grid strip and the creator's own image, moved first
    version = make_model(owner=alice, name="Own cover")
    _grid_strip(version, alice)
    own = sample_image_add(
        version=version, user=alice, image=ContentFile(png_bytes(color="blue"), name="own.png")
    )
    client.force_login(alice)
    for _ in range(2):
        assert client.post(f"/images/{own.pk}/move/", {"direction": "up"}).status_code == 302
    # Then the creator's image is the cover (and moving an unknown image is a 404)
    assert (
        APIClient()
        .get("/api/v1/models")
        .json()["results"][0]["cover_image_url"]
        .endswith(own.image.url)
    )
    assert client.post("/images/999999/move/", {"direction": "up"}).status_code == 404
