"""Server-rendered registry pages with real data: browse, model, datasets, creator profiles."""

from __future__ import annotations

import io
import re
import struct
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from registry.models import Blob, Model, ModelVersion, VersionStatus
from registry.services.catalog import (
    FileSpec,
    ParentSpec,
    dataset_create,
    dataset_version_create_private,
    dataset_version_create_public,
    download_count_increment,
    lineage_add,
    model_create,
    version_create,
    version_publish,
)
from registry.services.uploads import upload_whole_file
from registry.views import catalog as views
from tests.registry.factories import lora_bytes

pytestmark = pytest.mark.django_db


def stored_upload(owner: object, data: bytes, filename: str):  # type: ignore[no-untyped-def]
    return upload_whole_file(
        user=owner,
        filename=filename,
        stream=io.BytesIO(data),
        size=len(data),  # type: ignore[arg-type]
    )


def new_version(
    owner: object,
    name: str,
    *,
    seed: int,
    kind: str = "lora",
    tags: Sequence[str] = (),
    description: str = "",
    visibility: str = "public",
    publish: bool = True,
    base_model: str = "",
    trigger_words: Sequence[str] = (),
    version_name: str = "v1",
    model: Model | None = None,
) -> ModelVersion:
    upload = stored_upload(
        owner, lora_bytes(seed=seed, alpha=2.0), f"{name.lower().replace(' ', '-')}.safetensors"
    )
    if model is None:
        model = model_create(
            owner=owner,  # type: ignore[arg-type]
            name=name,
            kind=kind,
            description=description,
            tags=tags,
            visibility=visibility,
        )
    version = version_create(
        model=model,
        user=owner,  # type: ignore[arg-type]
        name=version_name,
        files=[FileSpec(upload=upload)],
        base_model=base_model,
        trigger_words=trigger_words,
    )
    if publish:
        version = version_publish(version=version, user=owner)  # type: ignore[arg-type]
    return version


def card_names(html: str) -> list[str]:
    return re.findall(r'<h3 class="card-title">([^<]+)</h3>', html)


@pytest.fixture(autouse=True)
def _fast_passwords(fast_passwords: None) -> None:
    """Every test here: the suite's fast password hasher."""


def browse(client: Client, **params: str) -> str:
    response = client.get(reverse("registry:browse"), params)
    assert response.status_code == 200
    return response.content.decode()


def model_page(client: Client, shown: ModelVersion, **params: str):  # type: ignore[no-untyped-def]
    model = shown.model
    url = reverse("registry:model-detail", kwargs={"model_id": model.pk, "slug": model.slug})
    return client.get(url, params)


# --- browse ---------------------------------------------------------------------------------


def test_browse_lists_only_public_models_with_a_published_version(
    client: Client, alice: object
) -> None:
    # given one listed model and three that must not be listed
    new_version(alice, "Listed", seed=1)
    new_version(alice, "Draft only", seed=2, publish=False)
    new_version(alice, "Hidden", seed=3, visibility="private")
    removed = new_version(alice, "Removed", seed=4)
    Model.objects.filter(pk=removed.model_id).update(is_removed=True)
    # when anyone browses
    html = browse(client)
    # then only the listed one shows
    assert card_names(html) == ["Listed"]


def test_browse_filters_by_kind(client: Client, alice: object) -> None:
    new_version(alice, "A LoRA", seed=1, kind="lora")
    new_version(alice, "A VAE", seed=2, kind="vae")
    assert card_names(browse(client, kind="vae")) == ["A VAE"]


def test_browse_filters_by_base_model_family(client: Client, alice: object) -> None:
    new_version(alice, "For SD1", seed=1, base_model="sd1")
    new_version(alice, "For SDXL", seed=2, base_model="sdxl")
    assert card_names(browse(client, base="sdxl")) == ["For SDXL"]


def test_browse_filters_by_tag(client: Client, alice: object) -> None:
    new_version(alice, "Anime style", seed=1, tags=["anime", "style"])
    new_version(alice, "Photo style", seed=2, tags=["photo", "style"])
    assert card_names(browse(client, tag="anime")) == ["Anime style"]


def test_browse_search_matches_stemmed_words_in_descriptions(client: Client, alice: object) -> None:
    # given a model whose description says "paintings" and a model that does not match
    new_version(alice, "Harbour", seed=1, description="Soft paintings of old harbours at dusk.")
    new_version(alice, "Portraits", seed=2, description="Studio light, sharp faces.")
    # when searching two words that are not a substring of anything (full-text search, stems)
    html = browse(client, q="painting harbour")
    # then only the first matches
    assert card_names(html) == ["Harbour"]


def test_browse_search_finds_tags(client: Client, alice: object) -> None:
    new_version(alice, "Ink", seed=1, tags=["calligraphy"])
    new_version(alice, "Other", seed=2, tags=["photo"])
    assert card_names(browse(client, q="calligraphy")) == ["Ink"]


def test_browse_sorts_by_downloads(client: Client, alice: object) -> None:
    new_version(alice, "Older popular", seed=1)
    popular = ModelVersion.objects.get(model__name="Older popular")
    new_version(alice, "Newer", seed=2)
    download_count_increment(target=popular)
    assert card_names(browse(client, sort="downloads")) == ["Older popular", "Newer"]
    assert card_names(browse(client, sort="newest")) == ["Newer", "Older popular"]


def test_browse_ignores_unknown_filter_values(client: Client, alice: object) -> None:
    new_version(alice, "Listed", seed=1)
    assert card_names(browse(client, kind="bogus", sort="sideways", base="x")) == ["Listed"]


def test_browse_paginates_and_keeps_filters_in_page_links(
    client: Client, alice: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(views, "MODELS_PER_PAGE", 2)
    for seed, name in enumerate(["One", "Two", "Three"]):
        new_version(alice, name, seed=seed, kind="lora")
    first = browse(client, kind="lora")
    second = browse(client, kind="lora", page="2")
    assert card_names(first) == ["Three", "Two"]
    assert card_names(second) == ["One"]
    assert "?kind=lora&amp;page=2" in first


def test_browse_query_count_does_not_grow_with_the_page(
    client: Client, alice: object, django_assert_max_num_queries: Callable[..., object]
) -> None:
    for seed in range(6):
        new_version(alice, f"Model {seed}", seed=seed, tags=[f"t{seed}", "shared"])
    with django_assert_max_num_queries(6):  # type: ignore[operator]
        html = browse(client)
    assert len(card_names(html)) == 6


# --- model page ------------------------------------------------------------------------------


def test_model_page_shows_all_six_hashes_and_file_facts(client: Client, alice: object) -> None:
    version = new_version(alice, "Hashes", seed=7, trigger_words=["hsh style"])
    blob = Blob.objects.get(model_files__version=version)
    html = model_page(client, version).content.decode()
    for label, value in [
        ("SHA-256", blob.sha256),
        ("AutoV1", blob.autov1),
        ("AutoV2", blob.autov2),
        ("AutoV3", blob.autov3),
        ("CRC32", blob.crc32),
        ("BLAKE3", blob.blake3),
    ]:
        assert re.search(rf"<dt>{label}</dt><dd class=\"hash\">{value}</dd>", html), label
    assert blob.autov3  # a safetensors file has an AutoV3
    assert '<span class="format">SafeTensors</span>' in html
    assert '<span class="detected-kind">lora</span>' in html
    assert '<span class="lora-rank">4</span>' in html
    assert '<span class="lora-alpha">2</span>' in html
    assert '<dd class="base-model">SD 1.x</dd>' in html
    assert re.search(r'<span class="size">\d+(\.\d)?\xa0KB</span>', html)


def test_model_page_links_the_download_route_of_the_version(client: Client, alice: object) -> None:
    version = new_version(alice, "Dl", seed=1)
    html = model_page(client, version).content.decode()
    assert f'href="/api/download/models/{version.pk}"' in html


def test_model_page_shows_trigger_words_with_copy_buttons(client: Client, alice: object) -> None:
    version = new_version(alice, "Triggers", seed=1, trigger_words=["zxc style", "blue hour"])
    html = model_page(client, version).content.decode()
    assert 'data-copy="zxc style"' in html
    assert 'data-copy="blue hour"' in html


def test_model_page_renders_the_sanitized_description(client: Client, alice: object) -> None:
    version = new_version(
        alice, "Desc", seed=1, description="**bold words**\n\n<script>alert(1)</script>"
    )
    html = model_page(client, version).content.decode()
    assert "<strong>bold words</strong>" in html
    assert "alert(1)</script>" not in html


def test_model_page_shows_the_license_code_in_its_partial(client: Client, alice: object) -> None:
    # given a draft with a license code (publishing would consult the marketplace catalogue)
    version = new_version(alice, "Licensed", seed=1, publish=False)
    ModelVersion.objects.filter(pk=version.pk).update(license_code="creativeml-openrail-m")
    client.force_login(alice)  # type: ignore[arg-type]
    html = model_page(client, version).content.decode()
    assert '<code class="license-code">creativeml-openrail-m</code>' in html


def test_model_page_shows_lineage_both_ways(client: Client, alice: object, bob: object) -> None:
    # given a base model and a LoRA derived from it by someone else
    base = new_version(alice, "Base ckpt", seed=1, kind="checkpoint")
    child = new_version(bob, "Derived lora", seed=2, publish=False)
    lineage_add(version=child, user=bob, parent=ParentSpec(relation="adapter", version=base))  # type: ignore[arg-type]
    version_publish(version=child, user=bob)  # type: ignore[arg-type]
    # when the two pages are opened
    child_html = model_page(client, child).content.decode()
    base_html = model_page(client, base).content.decode()
    # then each links to the other
    child_url = reverse("registry:model-detail", args=[child.model_id, child.model.slug])
    base_url = reverse("registry:model-detail", args=[base.model_id, base.model.slug])
    assert f"{base_url}?version={base.pk}" in child_html.split('class="derived-from"')[1]
    assert f"{child_url}?version={child.pk}" in base_html.split('class="used-by"')[1]


def test_model_page_hides_lineage_children_the_visitor_cannot_see(
    client: Client, alice: object, bob: object
) -> None:
    base = new_version(alice, "Base ckpt", seed=1, kind="checkpoint")
    hidden = new_version(bob, "Secret child", seed=2, visibility="private", publish=False)
    lineage_add(version=hidden, user=bob, parent=ParentSpec(relation="adapter", version=base))  # type: ignore[arg-type]
    html = model_page(client, base).content.decode()
    assert "Secret child" not in html


def test_model_page_shows_dataset_parents(client: Client, alice: object) -> None:
    dataset = dataset_create(owner=alice, name="Owner photos", kind="private")  # type: ignore[arg-type]
    dataset_version = dataset_version_create_private(
        dataset=dataset,
        user=alice,
        name="v1",
        manifest={"count": 12, "manifest_hash": "a" * 64},  # type: ignore[arg-type]
    )
    version = new_version(alice, "Trained", seed=1, publish=False)
    lineage_add(
        version=version,
        user=alice,  # type: ignore[arg-type]
        parent=ParentSpec(relation="trained_on", dataset_version=dataset_version),
    )
    version_publish(version=version, user=alice)  # type: ignore[arg-type]
    html = model_page(client, version).content.decode()
    derived = html.split('class="derived-from"')[1].split("</ul>")[0]
    assert reverse("registry:dataset-detail", args=[dataset.pk, dataset.slug]) in derived


def test_private_model_is_404_for_others_and_visible_to_its_owner(
    client: Client, alice: object, bob: object
) -> None:
    version = new_version(alice, "Mine", seed=1, visibility="private")
    assert model_page(client, version).status_code == 404
    client.force_login(bob)  # type: ignore[arg-type]
    assert model_page(client, version).status_code == 404
    client.force_login(alice)  # type: ignore[arg-type]
    assert model_page(client, version).status_code == 200


def test_removed_model_is_404(client: Client, alice: object) -> None:
    version = new_version(alice, "Gone", seed=1)
    Model.objects.filter(pk=version.model_id).update(is_removed=True)
    assert model_page(client, version).status_code == 404


def test_unlisted_model_opens_by_link(client: Client, alice: object) -> None:
    version = new_version(alice, "By link", seed=1, visibility="unlisted")
    assert model_page(client, version).status_code == 200
    assert card_names(browse(client)) == []


def test_draft_version_is_404_for_others(client: Client, alice: object) -> None:
    published = new_version(alice, "Mixed", seed=1)
    draft = new_version(
        alice, "Mixed", seed=2, publish=False, model=published.model, version_name="v2"
    )
    response = model_page(client, published, version=str(draft.pk))
    assert response.status_code == 404
    assert "v2" not in model_page(client, published).content.decode()


def test_owner_sees_a_draft_with_a_publish_button(client: Client, alice: object) -> None:
    draft = new_version(alice, "Drafty", seed=1, publish=False)
    client.force_login(alice)  # type: ignore[arg-type]
    html = model_page(client, draft).content.decode()
    publish_url = reverse("registry:version-publish", args=[draft.pk])
    assert f'action="{publish_url}"' in html
    assert "csrfmiddlewaretoken" in html.split(publish_url)[1][:300]


def test_publish_button_publishes_the_draft(client: Client, alice: object) -> None:
    draft = new_version(alice, "Drafty", seed=1, publish=False)
    client.force_login(alice)  # type: ignore[arg-type]
    response = client.post(reverse("registry:version-publish", args=[draft.pk]))
    assert response.status_code == 302
    assert response["Location"].endswith(f"?version={draft.pk}")
    draft.refresh_from_db()
    assert draft.status == VersionStatus.PUBLISHED


def test_publish_by_someone_else_is_404(client: Client, alice: object, bob: object) -> None:
    draft = new_version(alice, "Drafty", seed=1, publish=False)
    client.force_login(bob)  # type: ignore[arg-type]
    response = client.post(reverse("registry:version-publish", args=[draft.pk]))
    assert response.status_code == 404
    draft.refresh_from_db()
    assert draft.status == VersionStatus.DRAFT


def test_publish_requires_post(client: Client, alice: object) -> None:
    draft = new_version(alice, "Drafty", seed=1, publish=False)
    client.force_login(alice)  # type: ignore[arg-type]
    assert client.get(reverse("registry:version-publish", args=[draft.pk])).status_code == 405


def test_wrong_slug_redirects_to_the_canonical_url(client: Client, alice: object) -> None:
    version = new_version(alice, "Canonical name", seed=1)
    response = client.get(f"/models/{version.model_id}/old-name/")
    assert response.status_code == 302
    assert response["Location"] == f"/models/{version.model_id}/canonical-name/"


def test_model_page_shows_the_sample_images_of_the_version(client: Client, alice: object) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from registry.services.images import sample_image_add

    version = new_version(alice, "Pictures", seed=1)
    image = sample_image_add(
        version=version,
        user=alice,  # type: ignore[arg-type]
        image=SimpleUploadedFile("sample.png", _png(3), content_type="image/png"),
        prompt="a harbour at dusk, inkwash",
    )
    html = model_page(client, version).content.decode()
    assert f'<img src="{image.image.url}" alt="a harbour at dusk, inkwash"' in html
    assert f'src="/media/{image.image.name}"' in browse(client)


def test_model_page_lists_versions_as_tabs(client: Client, alice: object) -> None:
    first = new_version(alice, "Tabs", seed=1)
    second = new_version(alice, "Tabs", seed=2, model=first.model, version_name="v2")
    html = model_page(client, first, version=str(first.pk)).content.decode()
    assert f'href="?version={second.pk}"' in html
    assert re.search(rf'href="\?version={first.pk}" class="tab active"', html)


# --- datasets and creators -------------------------------------------------------------------


def _png(seed: int) -> bytes:
    """A valid 1x1 PNG."""
    import zlib

    raw = b"\x00" + bytes([seed % 256, 0, 0])

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def _public_dataset(owner: object, name: str = "Street photos", images: int = 3):  # type: ignore[no-untyped-def]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(images):
            archive.writestr(f"img{i}.png", _png(i))
            archive.writestr(f"img{i}.txt", f"a photo, number {i}")
    dataset = dataset_create(owner=owner, name=name, kind="public")  # type: ignore[arg-type]
    upload = stored_upload(owner, buffer.getvalue(), "photos.zip")
    version = dataset_version_create_public(dataset=dataset, user=owner, name="v1", upload=upload)  # type: ignore[arg-type]
    return dataset, version


def test_public_dataset_page_shows_files_image_count_and_download(
    client: Client, alice: object
) -> None:
    dataset, version = _public_dataset(alice, images=3)
    response = client.get(reverse("registry:dataset-detail", args=[dataset.pk, dataset.slug]))
    html = response.content.decode()
    assert response.status_code == 200
    assert "photos.zip" in html
    assert version.blob_id in html
    assert '<dd class="image-count">3</dd>' in html
    assert f'href="/api/download/datasets/{version.pk}"' in html


def test_private_dataset_page_shows_manifest_stats_and_no_download(
    client: Client, alice: object
) -> None:
    dataset = dataset_create(owner=alice, name="Family album", kind="private")  # type: ignore[arg-type]
    version = dataset_version_create_private(
        dataset=dataset,
        user=alice,  # type: ignore[arg-type]
        name="v1",
        manifest={
            "count": 40,
            "manifest_hash": "b" * 64,
            "mean_width": 512,
            "files": [{"path": "secret/holiday.png"}],
            "root": "/home/alice/family",
        },
    )
    html = client.get(
        reverse("registry:dataset-detail", args=[dataset.pk, dataset.slug])
    ).content.decode()
    stats = html.split('id="stats-h"')[1].split("</section>")[0]
    assert "b" * 64 in stats and "512" in stats
    assert "secret/holiday.png" not in html
    assert "/home/alice" not in html
    assert f"/api/download/datasets/{version.pk}" not in html


def test_dataset_list_shows_public_datasets_only(client: Client, alice: object) -> None:
    _public_dataset(alice, name="Open set")
    hidden = dataset_create(owner=alice, name="Hidden set", kind="private", visibility="private")  # type: ignore[arg-type]
    dataset_version_create_private(
        dataset=hidden,
        user=alice,
        name="v1",
        manifest={"count": 1, "manifest_hash": "c" * 64},  # type: ignore[arg-type]
    )
    html = client.get(reverse("registry:dataset-list")).content.decode()
    assert "Open set" in html
    assert "Hidden set" not in html


def test_private_visibility_dataset_is_404_for_others(client: Client, alice: object) -> None:
    hidden = dataset_create(owner=alice, name="Hidden set", kind="private", visibility="private")  # type: ignore[arg-type]
    url = reverse("registry:dataset-detail", args=[hidden.pk, hidden.slug])
    assert client.get(url).status_code == 404
    client.force_login(alice)  # type: ignore[arg-type]
    assert client.get(url).status_code == 200


def test_creator_profile_lists_their_public_models_and_datasets(
    client: Client, alice: object, bob: object
) -> None:
    new_version(alice, "Alice public", seed=1)
    new_version(alice, "Alice private", seed=2, visibility="private")
    new_version(bob, "Bob public", seed=3)
    _public_dataset(alice, name="Alice photos")
    html = client.get(reverse("registry:creator", args=["alice"])).content.decode()
    assert card_names(html) == ["Alice public"]
    assert "Alice photos" in html


def test_creator_sees_their_own_private_models_on_their_profile(
    client: Client, alice: object
) -> None:
    new_version(alice, "Alice private", seed=2, visibility="private")
    client.force_login(alice)  # type: ignore[arg-type]
    html = client.get(reverse("registry:creator", args=["alice"])).content.decode()
    assert card_names(html) == ["Alice private"]


def test_unknown_creator_is_404(client: Client) -> None:
    assert client.get(reverse("registry:creator", args=["nobody"])).status_code == 404


# --- layout ----------------------------------------------------------------------------------


def test_pages_are_responsive(client: Client, alice: object) -> None:
    version = new_version(alice, "Layout", seed=1)
    html = model_page(client, version).content.decode()
    css = (Path(settings.BASE_DIR) / "static" / "atelier.css").read_text()
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert 'class="layout-detail"' in html
    phone = css.split("@media (max-width: 600px)")[1]
    tablet = css.split("@media (max-width: 800px)")[1].split("@media")[0]
    assert ".layout-detail" in tablet and "grid-template-columns:minmax(0, 1fr)" in tablet
    assert ".grid" in phone


def test_browse_keeps_the_layout_links(client: Client) -> None:
    html = browse(client)
    for href in [
        'href="/api/docs/"',
        'href="/accounts/login/"',
        'href="/accounts/signup/"',
        'href="/datasets/"',
    ]:
        assert href in html
    assert 'class="layout-sidebar"' in html
