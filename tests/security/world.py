"""One small site with every kind of thing a route can show, and a user for every role.

Built through the project's own services (uploads are real: hashing, inspection, storage).
Roles, the columns of the authorization matrix and the identities of the fuzzing run:

- ``anon``: nobody logged in;
- ``other``: a logged-in user with no relation to anything here;
- ``owner``: the creator who owns the models, the public dataset and the listings;
- ``buyer``: bought the paid model version and the paid dataset (entitled);
- ``shopper``: a funded buyer who bought nothing (no entitlement);
- ``data_owner``: owns a private dataset (manifest only, never shown to others), and the
  federated node and listed datasets of :class:`FederatedWorld`;
- ``trainer``: a funded user who launched federated jobs on data_owner's datasets (and
  nothing else: no purchase, no model);
- ``staff``: site staff (superuser, admin).

Besides the roles, ``peer`` is a second data owner (no column of the matrix): the settled
job trained on a dataset of each, so that each owner's share of it can be checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any
from unittest import mock

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.utils import timezone

from core.services import token_create
from federated.models import DatasetTerms, FederatedJob, JobDataset, Node
from federated.services.datasets import federated_dataset_create
from federated.services.jobs import (
    JobSpec,
    job_cancel,
    job_create_and_launch,
    job_mark_running,
    job_progress_record,
    job_run_config,
)
from federated.services.nodes import node_register, node_revoke
from marketplace.models import Listing, Payout
from marketplace.payments import DemoProvider
from marketplace.services.ledger import wallet_top_up
from marketplace.services.listings import listing_create
from marketplace.services.payouts import payout_request
from marketplace.services.purchases import purchase_create
from registry.models import (
    DatasetVersion,
    Model,
    ModelFile,
    ModelVersion,
    SampleImage,
    Upload,
    Visibility,
)
from registry.services.catalog import model_create
from registry.services.downloads import signed_file_url
from registry.services.uploads import upload_create
from studio.models import Generation, GenerationStatus
from tests.federated.factories import openssh_public_key
from tests.registry.factories import (
    complete_upload,
    lora_bytes,
    make_private_dataset,
    make_public_dataset,
    make_version,
    png_bytes,
    private_manifest,
)

ROLES = ("anon", "other", "owner", "buyer", "shopper", "data_owner", "trainer", "staff")
PASSWORD = "a-long-passphrase-for-tests"
# Text that only the private dataset's manifest holds (see factories.private_manifest).
MANIFEST_SECRETS = ("secret_holiday_", "/home/owner/photos")
# Text that only the peer's manifest holds: no role may ever see it.
PEER_SECRETS = ("peer_secret_", "/home/peer/vault")
# Text that only owner's private generation holds (its prompt), and the public one's.
PRIVATE_PROMPT = "sec-private-prompt lighthouse at dusk"
PUBLIC_PROMPT = "sec-shared-prompt red barn"


@dataclass
class FederatedWorld:
    """data_owner's node and listed datasets, trainer's jobs on them, and their secrets.

    ``secrets`` holds the bearer secrets the matrix sends instead of a role's API token:
    ``node`` (data_owner's node), ``revoked_node``, ``job`` and ``progress`` (the running
    job's), ``settled_job`` and ``settled_progress`` (the settled job's: another job's
    tokens), ``forged_progress`` (a well-formed progress token no job has).
    """

    node: Node
    revoked_node: Node
    listed: DatasetTerms  # listed, approval automatic; in the running and settled jobs
    consent: DatasetTerms  # listed, approval manual; in the pending job
    hidden: DatasetTerms  # visibility private: only data_owner and staff see it
    peer_listed: DatasetTerms  # the peer's, in the settled job
    running_job: FederatedJob  # running, one round reported
    pending_job: FederatedJob  # awaiting data_owner's approval
    settled_job: FederatedJob  # cancelled after a round with both owners: both earned
    pending_request: JobDataset  # the pending job's request on ``consent``
    secrets: dict[str, str]
    report: dict[str, Any]  # the running job's next round report, as the ServerApp posts it

    def digests(self) -> list[str]:
        """What is stored of the secrets: never in any answer."""
        jobs = (self.running_job, self.settled_job)
        return [
            self.node.token_digest,
            self.revoked_node.token_digest,
            *(j.job_token_digest for j in jobs),
            *(j.progress_token_digest for j in jobs),
        ]


@dataclass
class World:
    users: dict[str, User]
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
    base_checkpoint: ModelVersion
    fed: FederatedWorld
    generations: dict[str, Generation]  # owner's "private" and "public" (both done)
    peer: User
    sample_image: SampleImage  # the creator's own image on the paid version
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
            "image": self.sample_image.pk,
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
            "checkpoint": self.base_checkpoint.pk,
            "node": self.fed.node.pk,
            "fdataset": self.fed.listed.dataset_version_id,
            "fhidden": self.fed.hidden.dataset_version_id,
            "fpeer": self.fed.peer_listed.dataset_version_id,
            "job": self.fed.running_job.pk,
            "pending_job": self.fed.pending_job.pk,
            "settled_job": self.fed.settled_job.pk,
            "request": self.fed.pending_request.pk,
            "gen_private": self.generations["private"].pk,
            "gen_public": self.generations["public"].pk,
        }


@cache
def _password_hash() -> str:
    """PASSWORD hashed once per process (the production hasher, about a second each)."""
    return make_password(PASSWORD)


def build_world(*, payout_minimum_ok: bool = True) -> World:
    user_model = get_user_model()
    users: dict[str, User] = {}
    for role in ROLES[1:]:
        extra = {"is_staff": True, "is_superuser": True} if role == "staff" else {}
        users[role] = user_model.objects.create_user(
            username=f"sec-{role.replace('_', '-')}",
            email=f"{role}@example.test",
            password=None,
            **extra,
        )
        users[role].password = _password_hash()
        users[role].save(update_fields=["password"])
    owner = users["owner"]

    def version(
        name: str, seed: int, *, publish: bool = True, visibility: str = Visibility.PUBLIC
    ) -> ModelVersion:
        model = model_create(owner=owner, name=name, kind="lora", visibility=visibility)
        upload = complete_upload(
            user=owner, data=lora_bytes(seed=seed), filename=f"{name.replace(' ', '-')}.safetensors"
        )
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
        wallet_top_up(
            user=users[role], amount=5000, provider=provider, idempotency_key=f"sec-fund-{role}"
        )
    purchase_create(buyer=users["buyer"], listing=paid_listing, idempotency_key="sec-buy-1")
    purchase_create(buyer=users["buyer"], listing=dataset_listing, idempotency_key="sec-buy-2")
    payout = payout_request(user=owner, amount=1000)
    open_upload = upload_create(user=owner, filename="half.safetensors", size=1000)

    tokens: dict[str, str] = {}
    spare: dict[str, int] = {}
    for role, user in users.items():
        tokens[role] = token_create(user=user, name="matrix").secret
        spare[role] = token_create(user=user, name="spare").token.pk

    # A free SD 1.x checkpoint of owner's: the base of the jobs and of the generations
    checkpoint = make_version(
        model=model_create(owner=owner, name="Base checkpoint", kind="checkpoint"),
        upload=complete_upload(
            user=owner, data=lora_bytes(seed=15), filename="Base-checkpoint.safetensors"
        ),
        license_code="creativeml-openrail-m",
        base_model="sd1",
    )
    wallet_top_up(
        user=users["trainer"], amount=5000, provider=provider, idempotency_key="sec-fund-trainer"
    )
    peer = user_model.objects.create_user(
        username="sec-peer", email="peer@example.test", password=None
    )
    fed = _federated(
        data_owner=users["data_owner"], trainer=users["trainer"], peer=peer, base=checkpoint
    )

    paid_file = paid.files.select_related("blob").get()
    world = World(
        users=users,
        tokens=tokens,
        spare_token_ids=spare,
        paid_version=paid,
        free_version=free,
        draft_version=draft,
        private_version=private,
        paid_file=paid_file,
        draft_file=draft.files.get(),
        private_file=private.files.get(),
        paid_listing=paid_listing,
        dataset_listing=dataset_listing,
        public_dataset_version=public_ds,
        private_dataset_version=private_ds,
        private_dataset_version_private=hidden_ds,
        open_upload=open_upload,
        payout=payout,
        base_checkpoint=checkpoint,
        fed=fed,
        peer=peer,
        sample_image=_sample_image(paid),
        generations={
            "private": _generation(
                owner=owner, base=checkpoint, prompt=PRIVATE_PROMPT, public=False
            ),
            "public": _generation(owner=owner, base=checkpoint, prompt=PUBLIC_PROMPT, public=True),
        },
    )
    for role in ("buyer", "shopper"):
        world.signed_urls[role] = signed_file_url(
            blob=paid_file.blob, filename=paid_file.filename, user_id=users[role].pk
        )
    world.signed_urls["forged"] = world.signed_urls["buyer"].replace("signature=", "signature=0")
    return world


def _server_credentials(job: FederatedJob) -> dict[str, Any]:
    """The ServerApp's credentials file of a started job (its tokens live there, not in the
    run config)."""
    import json

    from federated.services.jobs import job_credentials_path

    path = job_credentials_path(job=FederatedJob.objects.get(pk=job.pk))
    return dict(json.loads(path.read_text(encoding="utf-8")))


def _report(job: FederatedJob, index: int, nodes: dict[str, tuple[str, int]]) -> dict[str, Any]:
    """A round report as the ServerApp posts it: ``nodes`` maps a Flower node id to (the
    manifest hash it trained on, examples)."""
    return {
        "job-id": job.flower_job_id,
        "status": "running",
        "round": index,
        "nodes-asked": list(nodes),
        "bytes-out-per-node": 1234,
        "nodes": {
            n: {"num-examples": float(ex), "epsilon": 1.0 * index, "delta": 1e-5, "train-loss": 0.5}
            for n, (_, ex) in nodes.items()
        },
        "node-datasets": {n: h for n, (h, _) in nodes.items()},
        "refused": {},
        "rejected": {},
        "no-reply": [],
        "accepted": len(nodes),
        "train-loss": 0.5,
        "num-examples": sum(ex for _, ex in nodes.values()),
        "seconds": 1.0,
    }


def _federated(
    *, data_owner: User, trainer: User, peer: User, base: ModelVersion
) -> FederatedWorld:
    """Nodes, listed datasets and jobs, through the federated services. The coordinator's
    tasks are never sent (``_enqueue`` is a no-op here): no job starts a real run, and a
    committed world sends nothing to a broker other test runs share."""
    registered = node_register(owner=data_owner, name="sec-node", public_key=openssh_public_key())
    old = node_register(owner=data_owner, name="sec-old-node", public_key=openssh_public_key())
    node_revoke(node=old.node, user=data_owner)
    peer_node = node_register(owner=peer, name="sec-peer-node", public_key=openssh_public_key())
    terms = {"price_per_example_round": 1, "epsilon_per_job": 8.0, "epsilon_lifetime": 40.0}

    def listed(name: str, seed: int, **extra: Any) -> DatasetTerms:
        return federated_dataset_create(
            owner=data_owner,
            node_id=registered.node.pk,
            name=name,
            manifest=private_manifest(count=12, seed=seed),
            terms={**terms, **extra.pop("terms", {})},
            **extra,
        )

    fed_listed = listed("Sec fed photos", 101)
    consent = listed("Sec fed consent", 102, terms={"approval": "manual"})
    hidden = listed("Sec fed hidden", 103, visibility=Visibility.PRIVATE)
    peer_manifest = {
        "count": 12,
        "manifest_hash": f"{104:064x}",
        "resolutions": {"512x512": 12},
        "files": [{"name": f"peer_secret_{i}.jpg"} for i in range(2)],
        "root": "/home/peer/vault",
    }
    peer_listed = federated_dataset_create(
        owner=peer,
        node_id=peer_node.node.pk,
        name="Sec peer photos",
        manifest=peer_manifest,
        terms=terms,
    )

    def spec(name: str, *datasets: DatasetTerms) -> JobSpec:
        return JobSpec(
            name=name,
            base_version_id=base.pk,
            dataset_version_ids=tuple(t.dataset_version_id for t in datasets),
            use="style",
            rounds=2,
            resolution=32,
            local_steps=5,
            rank=2,
            trigger_word="sks",
        )

    def hash_of(t: DatasetTerms) -> str:
        return t.dataset_version.manifest_hash

    with mock.patch("federated.services.jobs._enqueue"):
        running, _ = job_create_and_launch(
            trainer=trainer, spec=spec("Sec running", fed_listed), idempotency_key="sec-job-running"
        )
        run = {**job_run_config(job=running), **_server_credentials(running)}
        running = job_mark_running(job=running, run_id="9101")
        job_progress_record(
            job=running, payload=_report(running, 1, {"11": (hash_of(fed_listed), 12)})
        )
        pending, _ = job_create_and_launch(
            trainer=trainer, spec=spec("Sec pending", consent), idempotency_key="sec-job-pending"
        )
        settled, _ = job_create_and_launch(
            trainer=trainer,
            spec=spec("Sec settled", fed_listed, peer_listed),
            idempotency_key="sec-job-settled",
        )
        other_run = {**job_run_config(job=settled), **_server_credentials(settled)}
        settled = job_mark_running(job=settled, run_id="9102")
        job_progress_record(
            job=settled,
            payload=_report(
                settled, 1, {"11": (hash_of(fed_listed), 12), "21": (hash_of(peer_listed), 12)}
            ),
        )
        job_cancel(job=settled, user=trainer)

    def fresh(job: FederatedJob) -> FederatedJob:
        return FederatedJob.objects.get(pk=job.pk)

    running = fresh(running)
    return FederatedWorld(
        node=registered.node,
        revoked_node=Node.objects.get(pk=old.node.pk),
        listed=fed_listed,
        consent=consent,
        hidden=hidden,
        peer_listed=peer_listed,
        running_job=running,
        pending_job=fresh(pending),
        settled_job=fresh(settled),
        pending_request=JobDataset.objects.get(job=pending),
        secrets={
            "node": registered.token,
            "revoked_node": old.token,
            "job": str(run["job-token"]),
            "progress": str(run["progress-token"]),
            "settled_job": str(other_run["job-token"]),
            "settled_progress": str(other_run["progress-token"]),
            "forged_progress": "atp_" + "A" * 43,
        },
        report=_report(running, 2, {"11": (hash_of(fed_listed), 12)}),
    )


def _sample_image(version: ModelVersion) -> SampleImage:
    """The creator's own image, first in order (the cover)."""
    image = SampleImage(version=version, prompt="a red square", position=0)
    image.image.save("sec-sample.png", ContentFile(png_bytes(size=(64, 64))), save=False)
    image.save()
    return image


def _generation(*, owner: User, base: ModelVersion, prompt: str, public: bool) -> Generation:
    """A finished generation, written as the worker leaves it (the service would queue a
    task: no worker runs in these tests)."""
    parameters = f"{prompt}\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 42, Size: 64x64"
    generation = Generation(
        user=owner,
        base_version=base,
        base_file=base.files.get(),
        base_name=str(base),
        prompt=prompt,
        seed=42,
        steps=20,
        guidance=7.0,
        width=64,
        height=64,
        sampler="Euler",
        status=GenerationStatus.SUCCEEDED,
        progress_step=20,
        parameters=parameters,
        is_public=public,
        device="cpu",
        duration_ms=1000,
        started_at=timezone.now(),
        finished_at=timezone.now(),
    )
    generation.image.save(
        "sec-generation.png",
        ContentFile(png_bytes(size=(64, 64), parameters=parameters)),
        save=False,
    )
    generation.save()
    return generation
