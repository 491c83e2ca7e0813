"""``manage.py demo_seed``: the demo's accounts and content, idempotent.

Creates staff and demo users (printing their logins), publishes the tiny SD 1.x base model,
and a public dataset of synthetic captioned images. Running it again changes nothing.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from registry.models import Dataset, DatasetKind
from registry.services.catalog import dataset_create, dataset_version_create_public
from registry.services.uploads import upload_whole_file

DEMO_PASSWORD = "atelier-demo-pass"
DEMO_USERS = (
    ("admin", "staff: admin site, moderation", True),
    ("creator", "publishes models", False),
    ("buyer", "browses and buys", False),
    ("owner1", "data owner (node 1)", False),
    ("owner2", "data owner (node 2)", False),
    ("trainer", "launches federated jobs", False),
)


class Command(BaseCommand):
    help = "Create demo accounts, the tiny base model and a public demo dataset."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--password", default=DEMO_PASSWORD)

    def handle(self, *args: object, **options: object) -> None:
        password = str(options["password"])
        User = get_user_model()
        for username, role, staff in DEMO_USERS:
            user, created = User.objects.get_or_create(
                username=username, defaults={"email": f"{username}@demo.atelier.test"}
            )
            if created:
                user.set_password(password)
                user.is_staff = user.is_superuser = staff
                user.save()
            self.stdout.write(f"  login {username:8} / {password}   ({role})")
        call_command(
            "publish_tiny_model",
            owner="creator",
            out=str(Path(settings.VAR_DIR) / "tiny-model"),
            stdout=self.stdout,
        )
        self._demo_dataset(User.objects.get(username="creator"))

    def _demo_dataset(self, owner: object) -> None:
        name = "Red circles (synthetic)"
        if Dataset.objects.filter(owner=owner, name=name).exists():
            self.stdout.write(f"dataset {name!r} exists")
            return
        from federated.engine.synthetic import generate_synthetic_dataset

        with tempfile.TemporaryDirectory() as tmp:
            folder = generate_synthetic_dataset(Path(tmp) / "ds", n_images=12, seed=7)
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                for path in sorted(folder.iterdir()):
                    archive.write(path, arcname=path.name)
            data = buffer.getvalue()
        upload = upload_whole_file(
            user=owner,  # type: ignore[arg-type]
            filename="red-circles.zip",
            stream=io.BytesIO(data),
            size=len(data),
        )
        dataset = dataset_create(
            owner=owner,  # type: ignore[arg-type]
            name=name,
            kind=DatasetKind.PUBLIC,
            description="Twelve 64x64 images of a red circle, captioned with the token `sks`.",
            tags=["synthetic", "shapes"],
        )
        dataset_version_create_public(
            dataset=dataset,
            user=owner,
            name="v1",
            upload=upload,  # type: ignore[arg-type]
        )
        self.stdout.write(f"published dataset {name!r}")
