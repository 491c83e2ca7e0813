"""A creator's own sample images, over HTTP: added at upload and on the model page, ordered
(the first is the cover on cards and the page header), removed; metadata stripped; and another
member can touch none of it."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from PIL import Image

from registry.models import SampleImage
from tests.registry.factories import lora_bytes, make_model, png_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_passwords(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _png(name: str, color: str, **info: str) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, png_bytes(size=(16, 16), color=color, **info), "image/png")


def _jpeg_with_exif(name: str) -> SimpleUploadedFile:
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif[0x8825] = {2: (48.0, 51.0, 24.0)}  # GPSInfo: latitude
    out = io.BytesIO()
    Image.new("RGB", (16, 16), "green").save(out, format="JPEG", exif=exif)
    return SimpleUploadedFile(name, out.getvalue(), "image/jpeg")


def _page(client: Client, version: Any) -> str:
    model = version.model
    return client.get(f"/models/{model.pk}/{model.slug}/?version={version.pk}").content.decode()


def _order(version: Any) -> list[int]:
    return list(SampleImage.objects.filter(version=version).values_list("pk", flat=True))


def test_the_upload_form_takes_images_in_order_and_the_first_is_the_cover(
    client: Client, alice: Any
) -> None:
    client.force_login(alice)
    data = {
        "name": "Ink wash",
        "kind": "lora",
        "visibility": "public",
        "version_name": "v1",
        "file": SimpleUploadedFile("ink.safetensors", lora_bytes()),
        "images": [_png("first.png", "red"), _png("second.png", "blue")],
    }
    response = client.post("/upload/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    images = list(SampleImage.objects.filter(version__model__name="Ink wash"))
    assert [i.position for i in images] == [0, 1]
    red = Image.open(images[0].image.open("rb")).convert("RGB").getpixel((0, 0))
    assert red == (255, 0, 0)
    # the page header shows the first as the cover
    html = client.get(response["Location"]).content.decode()
    cover = re.search(r'id="model-cover" src="([^"]+)"', html)
    assert cover is not None and cover.group(1) == images[0].image.url


def test_an_upload_with_a_file_that_is_not_an_image_is_refused_and_creates_nothing(
    client: Client, alice: Any
) -> None:
    client.force_login(alice)
    data = {
        "name": "Liar",
        "kind": "lora",
        "visibility": "public",
        "version_name": "v1",
        "file": SimpleUploadedFile("ink.safetensors", lora_bytes()),
        "images": [SimpleUploadedFile("evil.png", b"<?php system($_GET[1]); ?>", "image/png")],
    }
    response = client.post("/upload/", data)
    assert response.status_code == 400
    assert "evil.png" in response.content.decode()
    assert not SampleImage.objects.exists()
    assert not SampleImage.objects.filter(version__model__name="Liar").exists()


def test_the_owner_adds_images_on_the_model_page_without_their_exif(
    client: Client, alice: Any
) -> None:
    version = make_model(owner=alice)
    client.force_login(alice)
    response = client.post(
        f"/versions/{version.pk}/images/",
        {
            "images": [
                _jpeg_with_exif("cam.jpg"),
                _png("b.png", "blue", parameters="a cat\nSteps: 20"),
            ]
        },
    )
    assert response.status_code == 302
    jpeg, png = SampleImage.objects.filter(version=version)
    with jpeg.image.open("rb") as handle:
        raw = handle.read()
    assert b"SecretCam" not in raw and not Image.open(io.BytesIO(raw)).getexif()
    # a PNG keeps its A1111 parameters (the prompt shown on the page)
    assert png.prompt == "a cat" and (jpeg.position, png.position) == (0, 1)
    assert "remove-image" in _page(client, version)


def test_the_owner_reorders_and_the_browse_card_shows_the_new_first_image(
    client: Client, alice: Any, alice_api: Any
) -> None:
    version = make_model(owner=alice, name="Reordered")
    client.force_login(alice)
    client.post(f"/versions/{version.pk}/images/", {"images": [_png("a.png", "red")]})
    client.post(f"/versions/{version.pk}/images/", {"images": [_png("b.png", "blue")]})
    first, second = _order(version)

    # When the owner moves the second image up on the page
    client.post(f"/images/{second}/move/", {"direction": "up"})
    assert _order(version) == [second, first]
    cover = SampleImage.objects.get(pk=second).image.url
    assert cover in client.get("/").content.decode()

    # and back through the API
    response = alice_api.put(
        f"/api/v1/versions/{version.pk}/images/order", {"image_ids": [first, second]}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert [i["id"] for i in response.json()] == [first, second]
    assert SampleImage.objects.get(pk=first).image.url in client.get("/").content.decode()

    # an order that leaves an image out is refused, naming the field
    response = alice_api.put(
        f"/api/v1/versions/{version.pk}/images/order", {"image_ids": [first]}, format="json"
    )
    assert response.status_code == 400 and response.json()["code"] == "bad_order"


def test_removing_an_image_deletes_it_and_its_file_after_commit(
    client: Client, alice: Any, django_capture_on_commit_callbacks: Any
) -> None:
    version = make_model(owner=alice)
    client.force_login(alice)
    client.post(f"/versions/{version.pk}/images/", {"images": [_png("a.png", "red")]})
    image = SampleImage.objects.get(version=version)
    storage, name = image.image.storage, image.image.name
    assert storage.exists(name)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/images/{image.pk}/remove/")
    assert response.status_code == 302
    assert not SampleImage.objects.filter(pk=image.pk).exists()
    assert not storage.exists(name)


def test_another_member_cannot_add_remove_or_reorder_the_owners_images(
    client: Client, alice: Any, bob: Any, bob_api: Any
) -> None:
    version = make_model(owner=alice)
    client.force_login(alice)
    client.post(
        f"/versions/{version.pk}/images/", {"images": [_png("a.png", "red"), _png("b.png", "blue")]}
    )
    before = _order(version)
    client.force_login(bob)

    assert (
        client.post(
            f"/versions/{version.pk}/images/", {"images": [_png("x.png", "black")]}
        ).status_code
        == 403
    )
    assert client.post(f"/images/{before[0]}/remove/").status_code == 403
    assert client.post(f"/images/{before[1]}/move/", {"direction": "up"}).status_code == 403
    assert bob_api.delete(f"/api/v1/images/{before[0]}").status_code == 403
    response = bob_api.put(
        f"/api/v1/versions/{version.pk}/images/order",
        {"image_ids": list(reversed(before))},
        format="json",
    )
    assert response.status_code == 403
    assert (
        bob_api.post(
            f"/api/v1/versions/{version.pk}/images", {"image": _png("y.png", "black")}
        ).status_code
        == 403
    )

    # Then nothing changed, and the page shows bob no owner controls
    assert _order(version) == before
    assert "remove-image" not in _page(client, version)


def test_a_private_models_images_are_404_to_others(
    client: Client, alice: Any, bob_api: Any
) -> None:
    version = make_model(owner=alice, visibility="private")
    client.force_login(alice)
    client.post(f"/versions/{version.pk}/images/", {"images": [_png("a.png", "red")]})
    image = SampleImage.objects.get(version=version)
    assert bob_api.delete(f"/api/v1/images/{image.pk}").status_code == 404
    assert SampleImage.objects.filter(pk=image.pk).exists()
