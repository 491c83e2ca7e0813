"""``manage.py demo_seed``: the demo's accounts and content, idempotent. It lives in the demo
app, above every other app, because it fills them (registry, marketplace, the engine's
synthetic data).

Creates staff and demo users (printing their logins), tops up the wallets of the trainer and
the buyer with demo credits, publishes the tiny SD 1.x base model, and a public dataset of
synthetic captioned images. Running it again changes nothing, except topping a wallet up again
when earlier demo runs spent it below half of its demo credits.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from marketplace.models import TopUp
from marketplace.payments import DemoProvider
from marketplace.selectors import wallet_balance
from marketplace.services.ledger import wallet_top_up
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
# Demo credits (through the demo payment provider, as a top-up on the Wallet page would).
DEMO_CREDITS = {"trainer": 10_000, "buyer": 1_000}
TOP_UP_KEY = "demo-seed-"


DEMO_BASE_MODEL = "Atelier Shapes"  # scripts/demo_job.py looks it up by this name
# With --family sdxl (DEMO_FAMILY=sdxl): the tiny SDXL model (random weights), one single file
DEMO_SDXL_BASE_MODEL = "Atelier Tiny SDXL"


class Command(BaseCommand):
    help = "Create demo accounts, the tiny base model and a public demo dataset."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--password", default=DEMO_PASSWORD)
        parser.add_argument(
            "--family",
            choices=("sd1", "sdxl"),
            default="sd1",
            help="sdxl: also publish the tiny SDXL base (DEMO_FAMILY=sdxl trains on it)",
        )

    def handle(self, *args: object, **options: object) -> None:
        password = str(options["password"])
        user_model = get_user_model()
        for username, role, staff in DEMO_USERS:
            user, created = user_model.objects.get_or_create(
                username=username, defaults={"email": f"{username}@demo.atelier.test"}
            )
            if created:
                user.set_password(password)
                user.is_staff = user.is_superuser = staff
                user.save()
            self.stdout.write(f"  login {username:8} / {password}   ({role})")
        for username, credits in DEMO_CREDITS.items():
            self._credits(user_model.objects.get(username=username), credits)
        # The demo's base: the trained shapes model (it draws what its prompts say), not the
        # random tiny model; scripts/demo_job.py trains the owners' concept on top of it.
        call_command(
            "publish_tiny_model",
            owner="creator",
            name=DEMO_BASE_MODEL,
            model="shapes",
            out=str(Path(settings.VAR_DIR) / "shapes-model"),
            stdout=self.stdout,
        )
        self._demo_dataset(user_model.objects.get(username="creator"))
        if options.get("family") == "sdxl":
            self._tiny_sdxl_base(user_model.objects.get(username="creator"))

    def _tiny_sdxl_base(self, owner: User) -> None:
        """The tiny SDXL model's single file as a published checkpoint (once)."""
        from registry.models import Model
        from registry.services.catalog import (
            FileSpec,
            model_create,
            version_create,
            version_publish,
        )
        from sdcore.tiny_xl import TINY_SDXL_SINGLE_FILE_NAME, save_tiny_sdxl_model

        if Model.objects.filter(owner=owner, name=DEMO_SDXL_BASE_MODEL).exists():
            self.stdout.write(f"  base model {DEMO_SDXL_BASE_MODEL!r}: reused")
            return
        paths = save_tiny_sdxl_model(Path(settings.VAR_DIR) / "tiny-sdxl", seed=0)
        path = paths.single_file
        with path.open("rb") as stream:
            upload = upload_whole_file(
                user=owner,
                filename=TINY_SDXL_SINGLE_FILE_NAME,
                stream=stream,
                size=path.stat().st_size,
            )
        model = model_create(
            owner=owner,
            name=DEMO_SDXL_BASE_MODEL,
            kind="checkpoint",
            description="The SDXL architecture at a 64x64 resolution with random weights "
            "(sdcore.tiny_xl): the demo's SDXL job trains on it.",
        )
        version = version_create(
            model=model,
            user=owner,
            name="single-file",
            files=[FileSpec(upload)],
            license_code="creativeml-openrail-m",
        )
        version_publish(version=version, user=owner)
        self.stdout.write(
            f"  base model {DEMO_SDXL_BASE_MODEL!r}: published ({version.base_model})"
        )

    def _credits(self, user: User, credits: int) -> None:
        """Top ``user`` up to ``credits`` when the wallet holds less than half of them."""
        balance = wallet_balance(user=user)
        if balance < credits // 2:
            done = TopUp.objects.filter(user=user, idempotency_key__startswith=TOP_UP_KEY).count()
            wallet_top_up(
                user=user,
                amount=credits - balance,
                provider=DemoProvider(),
                idempotency_key=f"{TOP_UP_KEY}{done + 1}",
            )
            balance = wallet_balance(user=user)
        self.stdout.write(f"  wallet {user.get_username()}: {balance} credits")

    def _demo_dataset(self, owner: User) -> None:
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
            user=owner,
            filename="red-circles.zip",
            stream=io.BytesIO(data),
            size=len(data),
        )
        dataset = dataset_create(
            owner=owner,
            name=name,
            kind=DatasetKind.PUBLIC,
            description="Twelve 64x64 images of a red circle, captioned with the token `sks`.",
            tags=["synthetic", "shapes"],
        )
        dataset_version_create_public(
            dataset=dataset,
            user=owner,
            name="v1",
            upload=upload,
        )
        self.stdout.write(f"published dataset {name!r}")
