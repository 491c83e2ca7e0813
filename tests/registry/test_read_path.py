"""The API and the pages read through the same selectors: same cover, same filters."""

from __future__ import annotations

import re
from typing import Any

from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from rest_framework.test import APIClient

from registry.models import ModelVersion, SampleImage
from registry.services.catalog import version_publish
from registry.services.images import sample_image_add
from tests.registry.factories import make_model, make_version, png_bytes


def _image(version: ModelVersion, color: str) -> SampleImage:
    data = png_bytes(color=color)
    upload = SimpleUploadedFile(f"{color}.png", data, content_type="image/png")
    return sample_image_add(version=version, user=version.model.owner, image=upload, prompt=color)


def _page_covers(html: str) -> list[str]:
    return re.findall(r'<img class="cover" src="([^"]+)"', html)


def test_the_cover_is_the_same_image_on_the_api_and_the_browse_page(alice: Any) -> None:
    # given a model whose first-created version is the one published last
    older = make_model(owner=alice, name="Two versions", publish=False)
    newer = make_version(model=older.model, name="v2")
    older = version_publish(version=older, user=alice)
    published_last = _image(older, "red")
    _image(newer, "blue")
    # when the API lists the model and the browse page shows it
    listed = APIClient().get("/api/v1/models").json()["results"][0]
    html = Client().get("/models/").content.decode()
    # then both show the image of the version published last
    assert listed["latest_version"]["id"] == older.pk
    assert listed["cover_image_url"].endswith(published_last.image.url)
    assert _page_covers(html) == [published_last.image.url]


def test_the_page_and_the_api_filter_and_sort_alike(alice: Any, bob: Any) -> None:
    make_model(owner=alice, name="Ink LoRA", kind="lora", tags=["ink"])
    make_model(owner=bob, name="Ink VAE", kind="vae", tags=["ink"])
    make_model(owner=bob, name="Plain LoRA", kind="lora")

    api = APIClient().get("/api/v1/models", {"kind": "lora", "tags": "ink"}).json()["results"]
    html = Client().get("/", {"kind": "lora", "tag": "ink"}).content.decode()

    assert [m["name"] for m in api] == ["Ink LoRA"]
    assert re.findall(r'<h3 class="card-title">([^<]+)</h3>', html) == ["Ink LoRA"]
