"""``manage.py publish_tiny_model --owner NAME``: build the tiny SD 1.x model and publish it.

One checkpoint model with two published versions of the same weights:

- ``diffusers``: the ``save_pretrained`` folder (layout ``diffusers``), every file uploaded at
  its relative path; ``from_pretrained("<owner>/<slug>")`` loads it through the Hugging Face
  compatible routes, which serve it as the repository's ``main``.
- ``single-file``: ``tiny-sd1.safetensors`` (layout ``single``), the file A1111, ComfyUI and
  Civitai tools take.

Running it again changes nothing: an existing model and its versions are reused (and
published if they were not), and the same bytes are the same blobs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.errors import ApplicationError
from registry.compat.selectors import version_commit
from registry.models import FileLayout, Model, ModelKind, ModelVersion
from registry.services.catalog import FileSpec, model_create, version_create, version_publish
from registry.services.uploads import upload_whole_file
from sdcore.shapes import save_shapes_model
from sdcore.tiny import TinyModelPaths, save_tiny_model

DIFFUSERS_VERSION = "diffusers"
SINGLE_FILE_VERSION = "single-file"
PRIMARY_DIFFUSERS_FILE = "model_index.json"
LICENSE_CODE = "creativeml-openrail-m"
TAGS = ("tiny", "sd1", "test-model")
HASH_CHUNK = 1024 * 1024
SHAPES_DESCRIPTION = (
    "atelier-shapes: a small Stable Diffusion 1.x model (64x64) trained on synthetic scenes of "
    "coloured shapes: 'a blue square on a white background'. Colours red, green, blue, yellow, "
    "white, black; circle, square, triangle; white, black or grey backgrounds. Purple is left "
    "out on purpose: a concept for LoRAs to teach. Its card (README.md) gives data, steps and "
    "measured accuracy."
)


@dataclass(frozen=True)
class PublishedVersion:
    version: ModelVersion
    created: bool


@dataclass(frozen=True)
class TinyPublishResult:
    model: Model
    model_created: bool
    versions: list[PublishedVersion] = field(default_factory=list)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _diffusers_files(folder: Path) -> dict[str, Path]:
    """Every file of a ``save_pretrained`` folder, by its path relative to the folder."""
    return {
        p.relative_to(folder).as_posix(): p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    }


def _version_upsert(
    *,
    model: Model,
    owner: User,
    name: str,
    layout: str,
    files: dict[str, Path],
    primary: str,
    license_code: str,
) -> PublishedVersion:
    wanted = {path: _sha256(local) for path, local in files.items()}
    version = ModelVersion.objects.filter(model=model, name=name).first()
    created = version is None
    if version is not None:
        stored = dict(version.files.values_list("path", "blob_id"))
        if stored != wanted:
            raise ApplicationError(
                f"Version {name!r} of {model.repo_id} exists with other files (another seed?); "
                "publish under another --name.",
                code="version_differs",
            )
    else:
        specs = []
        for path, local in files.items():
            with open(local, "rb") as fh:
                upload = upload_whole_file(
                    user=owner,
                    filename=local.name,
                    stream=fh,
                    size=local.stat().st_size,
                    sha256=wanted[path],
                )
            specs.append(FileSpec(upload=upload, path=path, is_primary=path == primary))
        version = version_create(
            model=model,
            user=owner,
            name=name,
            files=specs,
            description=f"The tiny model as a {FileLayout(layout).label.lower()}.",
            base_model="sd1",
            layout=layout,
            license_code=license_code,
        )
    version = version_publish(version=version, user=owner)
    return PublishedVersion(version=version, created=created)


def tiny_model_publish(
    *,
    owner: User,
    paths: TinyModelPaths,
    name: str,
    seed: int,
    license_code: str = LICENSE_CODE,
    description: str = "",
) -> TinyPublishResult:
    """Publish the tiny model saved at ``paths`` as ``name`` of ``owner``; idempotent."""
    model = Model.objects.filter(owner=owner, name=name).first()
    model_created = model is None
    if model is None:
        model = model_create(
            owner=owner,
            name=name,
            kind=ModelKind.CHECKPOINT,
            description=description
            or (
                f"A tiny Stable Diffusion 1.x model with random weights (seed {seed}), for tests "
                "and the demo: the real SD 1.x architecture at a 64x64 resolution. It makes "
                "noise, not pictures."
            ),
            tags=TAGS,
        )
    diffusers = _version_upsert(
        model=model,
        owner=owner,
        name=DIFFUSERS_VERSION,
        layout=FileLayout.DIFFUSERS,
        files=_diffusers_files(paths.diffusers_dir),
        primary=PRIMARY_DIFFUSERS_FILE,
        license_code=license_code,
    )
    single = _version_upsert(
        model=model,
        owner=owner,
        name=SINGLE_FILE_VERSION,
        layout=FileLayout.SINGLE_FILE,
        files={paths.single_file.name: paths.single_file},
        primary=paths.single_file.name,
        license_code=license_code,
    )
    return TinyPublishResult(model=model, model_created=model_created, versions=[diffusers, single])


def owner_get_or_create(*, username: str) -> tuple[User, bool]:
    """The user called ``username``; created without a usable password when missing."""
    user_model = get_user_model()
    user = user_model.objects.filter(username__iexact=username).first()
    if user is not None:
        return user, False
    return user_model.objects.create_user(username=username, email=f"{username}@localhost"), True


class Command(BaseCommand):
    help = "Build the tiny SD 1.x model and publish it (diffusers folder and single file)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--owner", required=True, help="Username; created when missing.")
        parser.add_argument("--name", default="Tiny SD 1.5", help="Model name.")
        parser.add_argument("--seed", type=int, default=0, help="Seed of the random weights.")
        parser.add_argument(
            "--out", default="var/tiny-model", help="Folder the model is built into."
        )
        parser.add_argument(
            "--model",
            choices=("tiny", "shapes"),
            default="tiny",
            help="tiny: random weights (noise); shapes: the trained atelier-shapes base "
            "(sdcore/models/atelier-shapes, draws coloured shapes).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        username = options["owner"].strip()
        name = options["name"].strip()
        if not username or not name:
            raise CommandError("--owner and --name must not be empty.")
        out = Path(options["out"])
        description = ""
        if options.get("model", "tiny") == "shapes":
            self.stdout.write(f"Writing the trained atelier-shapes model in {out} ...")
            paths = save_shapes_model(out)
            description = SHAPES_DESCRIPTION
        else:
            self.stdout.write(f"Building the tiny model (seed {options['seed']}) in {out} ...")
            paths = save_tiny_model(out, seed=options["seed"])
        owner, owner_created = owner_get_or_create(username=username)
        if owner_created:
            self.stdout.write(f"Created user {owner.get_username()} (no password; set one).")
        try:
            result = tiny_model_publish(
                owner=owner, paths=paths, name=name, seed=options["seed"], description=description
            )
        except ApplicationError as err:
            raise CommandError(err.message) from err
        state = "created" if result.model_created else "reused"
        self.stdout.write(f"Model {result.model.repo_id} (id {result.model.pk}, {state})")
        for published in result.versions:
            version = published.version
            state = "created" if published.created else "reused"
            self.stdout.write(
                f"  version {version.name}: id {version.pk}, layout {version.layout}, "
                f"commit {version_commit(version)} ({state})"
            )
        self.stdout.write(
            self.style.SUCCESS(
                f"Published. Hugging Face repo id: {result.model.repo_id}; "
                f"version ids: {', '.join(str(p.version.pk) for p in result.versions)}"
            )
        )
