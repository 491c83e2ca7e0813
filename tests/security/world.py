"""One small site with every kind of thing a route can show, and a user for every role.

Built through the project's own services (uploads are real: hashing, inspection, storage).
Roles, the columns of the authorization matrix and the identities of the fuzzing run:

- ``anon``: nobody logged in;
- ``other``: a logged-in user with no relation to anything here;
- ``owner``: the creator who owns the models, the public dataset and the listings;
- ``buyer``: bought the paid model version and the paid dataset (entitled);
- ``shopper``: a funded buyer who bought nothing (no entitlement);
- ``data_owner``: owns a private dataset (manifest only, never shown to others);
- ``staff``: site staff (superuser, admin).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser

from core.services import token_create
from marketplace.models import Listing, Payout
from marketplace.payments import DemoProvider
from marketplace.services.ledger import wallet_top_up
from marketplace.services.listings import listing_create
from marketplace.services.payouts import payout_request
from marketplace.services.purchases import purchase_create
from registry.models import DatasetVersion, Model, ModelFile, ModelVersion, Upload, Visibility
from registry.services.catalog import model_create
from registry.services.downloads import signed_file_url
from registry.services.uploads import upload_create
from tests.registry.factories import (
    complete_upload,
    lora_bytes,
    make_private_dataset,
    make_public_dataset,
    make_version,
)

ROLES = ("anon", "other", "owner", "buyer", "shopper", "data_owner", "staff")
PASSWORD = "a-long-passphrase-for-tests"
# Text that only the private dataset's manifest holds (see factories.private_manifest).
MANIFEST_SECRETS = ("secret_holiday_", "/home/owner/photos")


@dataclass
class World:
    users: dict[str, AbstractBaseUser]
    tokens: dict[str, str]
    spare_token_ids: dict[str, int]
    paid_version: ModelVersion
    free_version: ModelVersion
    draft_version: ModelVersion
    private_version: ModelVersion
    paid_file: ModelFile
    draft_file: ModelFile
    private_file: ModelFile
    paid_listing: Listing
    dataset_listing: Listing
    public_dataset_version: DatasetVersion
    private_dataset_version: DatasetVersion
    private_dataset_version_private: DatasetVersion
    open_upload: Upload
    payout: Payout
    signed_urls: dict[str, str] = field(default_factory=dict)

    @property
    def paid_model(self) -> Model:
        return self.paid_version.model

    def headers(self, role: str) -> dict[str, str]:
        if role == "anon":
            return {}
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def fmt(self) -> dict[str, Any]:
        """Values for the ``{placeholders}`` in the matrix's URLs."""
        pv, dv, xv = self.paid_version, self.draft_version, self.private_version
        return {
            "owner": self.users["owner"].get_username(),
            "other": self.users["other"].get_username(),
            "model": pv.model_id,
            "model_slug": pv.model.slug,
            "paid": pv.pk,
            "free": self.free_version.pk,
            "free_model": self.free_version.model_id,
            "free_slug": self.free_version.model.slug,
            "draft": dv.pk,
            "private": xv.pk,
            "private_model": xv.model_id,
            "private_slug": xv.model.slug,
            "paid_file": self.paid_file.pk,
            "draft_file": self.draft_file.pk,
            "private_file": self.private_file.pk,
            "paid_sha": self.paid_file.blob_id,
            "draft_sha": self.draft_file.blob_id,
            "listing": self.paid_listing.pk,
            "dataset": self.public_dataset_version.dataset_id,
            "dataset_slug": self.public_dataset_version.dataset.slug,
            "dataset_version": self.public_dataset_version.pk,
            "pdataset": self.private_dataset_version.dataset_id,
            "pdataset_slug": self.private_dataset_version.dataset.slug,
            "pdataset_version": self.private_dataset_version.pk,
            "hidden_dataset": self.private_dataset_version_private.dataset_id,
            "hidden_dataset_slug": self.private_dataset_version_private.dataset.slug,
            "hidden_dataset_version": self.private_dataset_version_private.pk,
            "upload": self.open_upload.pk,
            "payout": self.payout.pk,
            "spare_token": self.spare_token_ids.get("owner", 0),
            "signed_buyer": self.signed_urls.get("buyer", ""),
            "signed_shopper": self.signed_urls.get("shopper", ""),
            "signed_forged": self.signed_urls.get("forged", ""),
        }


def build_world(*, payout_minimum_ok: bool = True) -> World:
    User = get_user_model()
    users: dict[str, AbstractBaseUser] = {}
    for role in ROLES[1:]:
        extra = {"is_staff": True, "is_superuser": True} if role == "staff" else {}
        users[role] = User.objects.create_user(
            username=f"sec-{role.replace('_', '-')}", email=f"{role}@example.test",
            password=PASSWORD, **extra,
        )
    owner = users["owner"]

    def version(name: str, seed: int, *, publish: bool = True,
                visibility: str = Visibility.PUBLIC) -> ModelVersion:
        model = model_create(owner=owner, name=name, kind="lora", visibility=visibility)
        upload = complete_upload(user=owner, data=lora_bytes(seed=seed),
                                 filename=f"{name.replace(' ', '-')}.safetensors")
        return make_version(model=model, upload=upload, publish=publish, license_code="mit")

    paid = version("Paid lora", 11)
    free = version("Free lora", 12)
    draft = version("Draft lora", 13, publish=False)
    private = version("Private lora", 14, visibility=Visibility.PRIVATE)
    public_ds = make_public_dataset(owner=owner, name="Sec colors")
    private_ds = make_private_dataset(owner=users["data_owner"], name="Sec holiday")
    hidden_ds = make_private_dataset(
        owner=users["data_owner"], name="Sec hidden", visibility=Visibility.PRIVATE
    )
    paid_listing = listing_create(seller=owner, target=paid, price=1200)
    dataset_listing = listing_create(seller=owner, target=public_ds, price=30)
    provider = DemoProvider()
    for role in ("buyer", "shopper"):
        wallet_top_up(user=users[role], amount=5000, provider=provider,
                      idempotency_key=f"sec-fund-{role}")
    purchase_create(buyer=users["buyer"], listing=paid_listing, idempotency_key="sec-buy-1")
    purchase_create(buyer=users["buyer"], listing=dataset_listing, idempotency_key="sec-buy-2")
    payout = payout_request(user=owner, amount=1000)
    open_upload = upload_create(user=owner, filename="half.safetensors", size=1000)

    tokens: dict[str, str] = {}
    spare: dict[str, int] = {}
    for role, user in users.items():
        tokens[role] = token_create(user=user, name="matrix").secret
        spare[role] = token_create(user=user, name="spare").token.pk

    paid_file = paid.files.select_related("blob").get()
    world = World(
        users=users, tokens=tokens, spare_token_ids=spare,
        paid_version=paid, free_version=free, draft_version=draft, private_version=private,
        paid_file=paid_file, draft_file=draft.files.get(), private_file=private.files.get(),
        paid_listing=paid_listing, dataset_listing=dataset_listing,
        public_dataset_version=public_ds, private_dataset_version=private_ds,
        private_dataset_version_private=hidden_ds, open_upload=open_upload, payout=payout,
    )
    for role in ("buyer", "shopper"):
        world.signed_urls[role] = signed_file_url(
            blob=paid_file.blob, filename=paid_file.filename, user_id=users[role].pk
        )
    world.signed_urls["forged"] = world.signed_urls["buyer"].replace("signature=", "signature=0")
    return world
