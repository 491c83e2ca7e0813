"""``manage.py publish_tiny_model``: build the tiny model and publish it, idempotently."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from core.errors import ApplicationError
from registry.compat.selectors import version_commit
from registry.management.commands.publish_tiny_model import (
    owner_get_or_create,
    tiny_model_publish,
)
from registry.models import Blob, FileLayout, Model, ModelFile, ModelVersion
from sdcore.tiny import TinyModelPaths

pytest_plugins = ["tests.registry.compat_fixtures"]

DIFFUSERS_FILES = {
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/tokenizer.json",
    "tokenizer/tokenizer_config.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
}


@pytest.mark.slow
@pytest.mark.django_db
def test_command_builds_and_publishes_both_layouts(tmp_path: Path) -> None:
    # given no user called "demo"
    out = io.StringIO()
    # when the command runs
    call_command("publish_tiny_model", owner="demo", out=str(tmp_path / "tiny"), stdout=out)
    # then demo owns one checkpoint with a published diffusers folder and single file
    model = Model.objects.get(owner__username="demo")
    diffusers = model.versions.get(layout=FileLayout.DIFFUSERS)
    single = model.versions.get(layout=FileLayout.SINGLE_FILE)
    assert (model.kind, model.name) == ("checkpoint", "Tiny SD 1.5")
    built = tmp_path / "tiny" / "diffusers"
    assert set(diffusers.files.values_list("path", flat=True)) == {
        p.relative_to(built).as_posix() for p in built.rglob("*") if p.is_file()
    }
    assert list(single.files.values_list("path", flat=True)) == ["tiny-sd1.safetensors"]
    assert diffusers.is_published and single.is_published
    assert (diffusers.base_model, single.base_model) == ("sd1", "sd1")
    # and it printed the repo id, the version ids and their commits
    printed = out.getvalue()
    assert "demo/tiny-sd-15" in printed
    assert f"id {diffusers.pk}" in printed and f"id {single.pk}" in printed
    assert version_commit(diffusers) in printed


@pytest.mark.django_db
def test_diffusers_version_holds_every_file_of_the_folder(publish_tiny, tiny_paths) -> None:
    # given the tiny model's saved folder
    folder = tiny_paths.diffusers_dir
    local = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}
    # when it is published
    tiny = publish_tiny()
    # then the diffusers version has each file at its relative path, with its bytes
    stored = {f.path: f for f in tiny.diffusers.files.select_related("blob")}
    assert set(stored) == set(local) == DIFFUSERS_FILES
    assert all(stored[path].blob.size == p.stat().st_size for path, p in local.items())
    assert stored["model_index.json"].is_primary


@pytest.mark.django_db
def test_publishing_again_duplicates_nothing(publish_tiny, make_user) -> None:
    # given the tiny model published once
    alice = make_user("alice")
    first = publish_tiny(owner=alice)
    counts = [m.objects.count() for m in (Model, ModelVersion, ModelFile, Blob)]
    # when it is published again
    second = publish_tiny(owner=alice)
    # then the same model and versions are reused, and no row is added
    assert second.model.pk == first.model.pk
    assert (second.diffusers.pk, second.single.pk) == (first.diffusers.pk, first.single.pk)
    assert [m.objects.count() for m in (Model, ModelVersion, ModelFile, Blob)] == counts


@pytest.mark.django_db
def test_other_bytes_under_an_existing_version_are_refused(
    publish_tiny, make_user, tiny_paths, tmp_path
) -> None:
    # given the tiny model published, and a copy of it with one file changed
    alice = make_user("alice")
    publish_tiny(owner=alice)
    copy = tmp_path / "other"
    shutil.copytree(tiny_paths.diffusers_dir, copy / "diffusers")
    shutil.copy(tiny_paths.single_file, copy / tiny_paths.single_file.name)
    (copy / "diffusers" / "scheduler" / "scheduler_config.json").write_text('{"changed": 1}')
    other = TinyModelPaths(copy / "diffusers", copy / tiny_paths.single_file.name)
    # when the copy is published under the same name
    with pytest.raises(ApplicationError) as caught:
        tiny_model_publish(owner=alice, paths=other, name="Tiny SD 1.5", seed=1)
    # then it is refused, naming the version
    assert caught.value.code == "version_differs"


@pytest.mark.django_db
def test_existing_owner_is_reused(make_user) -> None:
    alice = make_user("alice")
    assert owner_get_or_create(username="alice") == (alice, False)


@pytest.mark.django_db
def test_missing_owner_is_created_without_a_usable_password() -> None:
    user, created = owner_get_or_create(username="newcomer")
    assert created and not user.has_usable_password()


@pytest.mark.django_db
def test_blank_owner_is_a_command_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError):
        call_command("publish_tiny_model", owner="  ", out=str(tmp_path / "tiny"))
