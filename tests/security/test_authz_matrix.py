"""The authorization matrix: every route × every role, the expected status of each cell.

Roles are those of :mod:`tests.security.world` (anon, other, owner, buyer with the paid
version and dataset, shopper with no entitlement, data_owner of the private datasets and of
the federated node, trainer of the federated jobs, staff). Each row names its URL pattern;
:func:`test_every_url_pattern_has_a_row_or_a_reason` fails on any pattern of the resolver
that has neither a row here nor an entry in ``EXEMPT``, so new routes must be added to this
table when they land.

Besides the status, cells check bodies: no paid file's bytes or signed link for someone not
entitled, no private dataset manifest detail, no unpublished or private model, no one
else's wallet, no bearer secret of a node or a job, no one else's generation. Web rows log
in with a session; API, compatible and download rows send the role's API token
(``Authorization: Bearer``), or, for the routes that machines call (a node's heartbeat, the
ServerApp's progress reports, the nodes' base-model download), the secret the row names,
the same for every role. Each cell runs in a savepoint, its checks too (so a check sees what
the request changed), rolled back after it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from django.test.client import ClientHandler
from django.urls import URLPattern, URLResolver, get_resolver

from federated.models import FederatedJob, JobRound
from registry.models import SampleImage
from studio.models import Generation
from tests.security.world import (
    MANIFEST_SECRETS,
    PEER_SECRETS,
    PRIVATE_PROMPT,
    ROLES,
    World,
)

pytestmark = pytest.mark.django_db

Check = Callable[[World, str, Any], None]
ALL = ROLES


def cells(default: int, **overrides: int) -> dict[str, int]:
    return {role: overrides.get(role, default) for role in ROLES}


def everyone(status: int) -> dict[str, int]:
    return cells(status)


def logged_in(status: int, *, anon: int = 302) -> dict[str, int]:
    """Pages behind ``login_required`` (anon is sent to the login page)."""
    return cells(status, anon=anon)


def api_logged_in(status: int) -> dict[str, int]:
    return cells(status, anon=401)


@dataclass(frozen=True)
class Row:
    name: str  # the URL pattern's name (namespace:name), for the route inventory
    path: str  # with {placeholders} from World.fmt()
    expect: dict[str, int]
    method: str = "get"
    api: bool = True  # token auth; False: web page with a session login
    data: dict[str, Any] | Callable[[World], dict[str, Any]] | None = None
    checks: tuple[Check, ...] = field(default_factory=tuple)
    label: str = ""
    token: str = ""  # a key of World.fed.secrets: sent instead of the role's API token

    @property
    def id(self) -> str:
        return self.label or f"{self.method.upper()} {self.name}"


# --- body checks ------------------------------------------------------------------------


def no_manifest_secrets(world: World, role: str, response: Any) -> None:
    if role in ("data_owner", "staff"):
        return
    body = _text(response)
    for secret in MANIFEST_SECRETS:
        assert secret not in body, f"{role} sees manifest detail {secret!r}"


def no_hidden_models(world: World, role: str, response: Any) -> None:
    if role in ("owner", "staff"):
        return
    body = _text(response)
    for name in ("Private lora", "Draft lora", "Private-lora", "Draft-lora"):
        assert name not in body, f"{role} sees {name!r}"


def no_paid_link_unless_entitled(world: World, role: str, response: Any) -> None:
    """A download answer carries a signed link or bytes only for those entitled."""
    if role in ("owner", "buyer", "staff"):
        return
    location = response.get("Location", "")
    assert "signature=" not in location, f"{role} got a signed link"
    assert response.status_code not in (200, 206, 302), f"{role} got {response.status_code}"
    data = b"".join(response.streaming_content) if response.streaming else response.content
    assert world.paid_file.blob_id not in data.decode("latin-1") or response.status_code >= 400


def own_wallet_only(world: World, role: str, response: Any) -> None:
    if response.status_code != 200:
        return
    from marketplace.selectors import wallet_balance

    body = response.json()
    assert body["balance"] == wallet_balance(user=world.users[role])


def only_own_items(world: World, role: str, response: Any) -> None:
    """A personal list (library, payouts, transactions, tokens) shows only the caller's."""
    if response.status_code != 200:
        return
    body = response.json()
    items = body["results"] if isinstance(body, dict) and "results" in body else body
    if role == "buyer" and "library" in response.wsgi_request.path:
        assert len(items) == 2
    elif role == "owner" and "payouts" in response.wsgi_request.path:
        assert [p["id"] for p in items] == [world.payout.pk]
    elif "payouts" in response.wsgi_request.path or "library" in response.wsgi_request.path:
        assert items == [], f"{role} sees someone's items"


def no_bearer_secrets(world: World, role: str, response: Any) -> None:
    """No node, job or progress token, nor what is stored of one, in any answer."""
    body = _text(response)
    for name, secret in world.fed.secrets.items():
        assert secret not in body, f"{role} sees the {name} token"
    for digest in world.fed.digests():
        assert digest not in body, f"{role} sees a token digest"


def no_peer_manifest(world: World, role: str, response: Any) -> None:
    """The peer is no role: the detail of its manifest never shows to anyone here."""
    body = _text(response)
    for secret in PEER_SECRETS:
        assert secret not in body, f"{role} sees the peer's manifest detail {secret!r}"


def no_hidden_federated_dataset(world: World, role: str, response: Any) -> None:
    if role in ("data_owner", "staff"):
        return
    name = world.fed.hidden.dataset_version.dataset.name
    assert name not in _text(response), f"{role} sees the private dataset {name!r}"


def _items(response: Any) -> list[Any]:
    body = response.json()
    return body["results"] if isinstance(body, dict) and "results" in body else body


def own_nodes_only(world: World, role: str, response: Any) -> None:
    if response.status_code == 200:
        mine = [world.fed.node.pk] if role == "data_owner" else []
        assert [n["id"] for n in _items(response)] == mine, f"{role} sees someone's nodes"


def own_federated_datasets_only(world: World, role: str, response: Any) -> None:
    if response.status_code != 200:
        return
    fed = world.fed
    mine = {t.dataset_version_id for t in (fed.listed, fed.consent, fed.hidden)}
    seen = {d["dataset_version_id"] for d in _items(response)}
    assert seen == (mine if role == "data_owner" else set()), f"{role} sees {seen}"


def own_earnings_only(world: World, role: str, response: Any) -> None:
    """The earnings list: the caller's datasets only (data_owner earned 12 in the settled
    job, the peer's earnings never show)."""
    if response.status_code != 200:
        return
    rows = {r["dataset_version_id"]: r["earned"] for r in _items(response)}
    if role != "data_owner":
        assert rows == {}, f"{role} sees earnings {rows}"
        return
    assert world.fed.peer_listed.dataset_version_id not in rows, "data_owner sees the peer's"
    assert rows.get(world.fed.listed.dataset_version_id) == 12, rows


def own_jobs_only(world: World, role: str, response: Any) -> None:
    if response.status_code != 200:
        return
    fed = world.fed
    mine = {fed.running_job.pk, fed.pending_job.pk, fed.settled_job.pk}
    seen = {j["id"] for j in _items(response)}
    assert seen == (mine if role == "trainer" else set()), f"{role} sees jobs {seen}"


def own_approvals_only(world: World, role: str, response: Any) -> None:
    if response.status_code == 200:
        mine = [world.fed.pending_request.pk] if role == "data_owner" else []
        assert [a["id"] for a in _items(response)] == mine, f"{role} sees someone's requests"


def own_dataset_lines_only(world: World, role: str, response: Any) -> None:
    """A data owner sees a job for its datasets' sake: their lines (approval, participation,
    earnings), never another owner's (the peer's earnings in the settled job), nor a total
    paid to owners from which the others' share follows."""
    if response.status_code != 200 or role in ("trainer", "staff"):
        return
    owner = world.users[role].get_username()
    body = response.json()
    others = [d for d in body["datasets"] if d["owner"] != owner]
    assert others == [], f"{role} sees other owners' lines: {others}"
    own = sum(d["earned"] for d in body["datasets"])
    assert body.get("owners_paid") is None or body["owners_paid"] <= own, (
        f"{role} sees owners_paid {body['owners_paid']} (its own share: {own})"
    )


def progress_not_recorded(world: World, role: str, response: Any) -> None:
    """A report with a wrong token changes nothing (the running job keeps its one round)."""
    job = world.fed.running_job
    assert JobRound.objects.filter(job=job).count() == 1, f"{role}'s report was recorded"
    assert FederatedJob.objects.get(pk=job.pk).state == job.state


def progress_recorded(world: World, role: str, response: Any) -> None:
    assert JobRound.objects.filter(job=world.fed.running_job, index=2).exists()


def no_private_generation(world: World, role: str, response: Any) -> None:
    if role == "owner":
        return
    assert PRIVATE_PROMPT not in _text(response), f"{role} sees owner's private generation"


def own_generations_only(world: World, role: str, response: Any) -> None:
    if response.status_code == 200:
        gens = world.generations
        mine = {gens["private"].pk, gens["public"].pk} if role == "owner" else set()
        assert {g["id"] for g in _items(response)} == mine, f"{role} sees someone's generations"


def generation_unchanged(world: World, role: str, response: Any) -> None:
    """Only its owner changes a generation (the public one stays public, gets no sample)."""
    if role == "owner":
        return
    public = world.generations["public"]
    assert Generation.objects.get(pk=public.pk).is_public, f"{role} made it private"
    assert not SampleImage.objects.filter(version=world.base_checkpoint).exists(), (
        f"{role} attached owner's image as a sample"
    )


def images_unchanged(world: World, role: str, response: Any) -> None:
    """Only the creator (and staff, who moderate) adds, orders or removes a version's images."""
    if role in ("owner", "staff"):
        return
    images = list(SampleImage.objects.filter(version=world.paid_version).values("pk", "position"))
    assert images == [{"pk": world.sample_image.pk, "position": 0}], f"{role} changed {images}"


def _text(response: Any) -> str:
    if response.streaming:
        return b"".join(response.streaming_content).decode("utf-8", "replace")
    return response.content.decode("utf-8", "replace")


# --- the table --------------------------------------------------------------------------
# Visibility answers 404 (never 403) so that no one learns a private thing exists.

OWNER_ONLY_404 = cells(404, owner=200, staff=200)
HF_PRIVATE = cells(404, anon=401, owner=200, staff=200)
PAID_DOWNLOAD = cells(403, anon=401, owner=302, buyer=302, staff=302)


# A federated job: its trainer and staff, and the owners of its datasets (data_owner)
def job_page_own_lines_only(world: World, role: str, response: Any) -> None:
    """The job page: a data owner sees their own lines, not the peer's, nor the job's money."""
    if response.status_code != 200 or role in ("trainer", "staff"):
        return
    body = _text(response)
    peer = world.fed.peer_listed.dataset_version.dataset
    assert peer.owner.get_username() not in body and peer.name not in body, (
        f"{role} sees the peer's line on the job page"
    )
    assert "Paid to owners" not in body and "Held in escrow" not in body, (
        f"{role} sees the job's money"
    )


JOB_VISIBLE = cells(404, anon=401, trainer=200, data_owner=200, staff=200)
JOB_PAGE = cells(404, anon=302, trainer=200, data_owner=200, staff=200)
TRAINER_ONLY = cells(404, anon=401, trainer=200, staff=200)

ROWS: list[Row] = [
    # accounts
    Row("login", "/accounts/login/", everyone(200), api=False),
    Row("logout", "/accounts/logout/", everyone(302), method="post", api=False),
    Row("signup", "/accounts/signup/", everyone(200), api=False),
    Row("tokens", "/accounts/tokens/", logged_in(200), api=False),
    Row(
        "token-revoke",
        "/accounts/tokens/{spare_token}/revoke/",
        logged_in(302),
        method="post",
        api=False,
    ),
    Row("api-schema", "/api/schema/", everyone(200)),
    Row("api-docs", "/api/docs/", everyone(200)),
    Row("api-redoc", "/api/redoc/", everyone(200)),
    Row(
        "token-create",
        "/api/v1/auth/tokens",
        cells(201, anon=401),
        method="post",
        data={"name": "matrix"},
    ),
    Row("token-list", "/api/v1/auth/tokens/list", api_logged_in(200)),
    Row(
        "token-revoke-api",
        "/api/v1/auth/tokens/{spare_token}",
        cells(404, anon=401, owner=204),
        method="delete",
    ),
    Row("whoami", "/api/v1/auth/whoami", api_logged_in(200)),
    # wallet and money
    Row("marketplace:wallet", "/api/v1/wallet", api_logged_in(200), checks=(own_wallet_only,)),
    Row("marketplace:wallet-transactions", "/api/v1/wallet/transactions", api_logged_in(200)),
    Row(
        "marketplace:top-up-create",
        "/api/v1/wallet/top-ups",
        cells(400, anon=401),
        method="post",
        data={},
    ),
    Row(
        "marketplace:wallet-statement",
        "/api/v1/wallet/statement?from=2025-01-01&to=2030-01-01",
        api_logged_in(200),
    ),
    Row("marketplace:payout-list", "/api/v1/payouts", api_logged_in(200), checks=(only_own_items,)),
    Row(
        "marketplace:payout-paid",
        "/api/v1/payouts/{payout}/paid",
        cells(403, anon=401, staff=200),
        method="post",
        data={},
    ),
    Row(
        "marketplace:payout-rejected",
        "/api/v1/payouts/{payout}/rejected",
        cells(403, anon=401, staff=200),
        method="post",
        data={},
    ),
    Row(
        "marketplace:report-create", "/api/v1/reports", cells(400, anon=401), method="post", data={}
    ),
    Row("marketplace:listing-list", "/api/v1/listings", everyone(200)),
    Row("marketplace:listing-detail", "/api/v1/listings/{listing}", everyone(200)),
    Row(
        "marketplace:listing-detail",
        "/api/v1/listings/{listing}",
        cells(403, anon=401, owner=200),
        method="patch",
        data={"price": 1200},
        label="PATCH listing-detail",
    ),
    Row(
        "marketplace:purchase-create",
        "/api/v1/purchases",
        cells(400, anon=401),
        method="post",
        data={},
    ),
    Row("marketplace:library", "/api/v1/library", api_logged_in(200), checks=(only_own_items,)),
    Row("marketplace:license-list", "/api/v1/licenses", everyone(200)),
    Row("marketplace:review-list", "/api/v1/reviews?model_version_id={paid}", everyone(200)),
    Row(
        "marketplace:review-list",
        "/api/v1/reviews?model_version_id={draft}",
        OWNER_ONLY_404,
        label="GET review-list of a draft",
    ),
    # marketplace pages
    Row("marketplace:purchase-confirm", "/buy/{listing}/", logged_in(200), api=False),
    Row(
        "marketplace:purchase-submit",
        "/buy/{listing}/confirm/",
        cells(400, anon=302, owner=400),
        method="post",
        api=False,
        data={},
    ),
    Row(
        "marketplace:listing-edit",
        "/versions/{paid}/listing/",
        cells(404, anon=302, owner=200),
        api=False,
    ),
    Row("marketplace:wallet-page", "/wallet/", logged_in(200), api=False),
    Row(
        "marketplace:wallet-statement-page",
        "/wallet/statement.csv?from=2025-01-01&to=2030-01-01",
        logged_in(200),
        api=False,
    ),
    Row("marketplace:payouts-page", "/wallet/payouts/", logged_in(200), api=False),
    Row("marketplace:library-page", "/library/", logged_in(200), api=False),
    Row("marketplace:earnings-page", "/earnings/", logged_in(200), api=False),
    Row(
        "marketplace:review-submit",
        "/versions/{draft}/reviews/",
        cells(404, anon=302, owner=400, staff=400),
        method="post",
        api=False,
        data={},
    ),
    Row(
        "marketplace:report-version",
        "/report/version/{private}/",
        cells(404, anon=302, owner=200, staff=200),
        api=False,
    ),
    Row(
        "marketplace:report-dataset",
        "/report/dataset/{hidden_dataset}/",
        cells(404, anon=302, data_owner=200, staff=200),
        api=False,
    ),
    # uploads (the owner's open upload)
    Row("registry:upload-create", "/api/v1/uploads", cells(400, anon=401), method="post", data={}),
    Row("registry:upload-detail", "/api/v1/uploads/{upload}", cells(404, anon=401, owner=200)),
    Row(
        "registry:upload-complete",
        "/api/v1/uploads/{upload}/complete",
        cells(404, anon=401, owner=400),
        method="post",
        data={},
    ),
    # downloads and signed URLs
    Row(
        "registry:download-model-version",
        "/api/download/models/{paid}",
        PAID_DOWNLOAD,
        checks=(no_paid_link_unless_entitled,),
    ),
    Row(
        "registry:download-model-version",
        "/api/download/models/{draft}",
        cells(404, owner=302, staff=302),
        label="GET download of a draft",
    ),
    Row(
        "registry:download-model-version",
        "/api/download/models/{free}",
        everyone(302),
        label="GET download of a free version",
    ),
    Row(
        "registry:download-dataset-version",
        "/api/download/datasets/{dataset_version}",
        PAID_DOWNLOAD,
    ),
    Row(
        "registry:download-dataset-version",
        "/api/download/datasets/{pdataset_version}",
        everyone(404),
        label="GET download of a private dataset (no file on the site)",
    ),
    Row(
        "registry:signed-file",
        "{signed_buyer}",
        everyone(200),
        label="GET signed-file (link of an entitled user)",
    ),
    Row(
        "registry:signed-file",
        "{signed_shopper}",
        everyone(403),
        label="GET signed-file (link of a user not entitled)",
    ),
    Row(
        "registry:signed-file",
        "{signed_forged}",
        everyone(403),
        label="GET signed-file (forged signature)",
    ),
    Row(
        "registry:api-file-download",
        "/api/v1/files/{paid_file}/download",
        PAID_DOWNLOAD,
        checks=(no_paid_link_unless_entitled,),
    ),
    Row(
        "registry:api-file-download",
        "/api/v1/files/{private_file}/download",
        cells(404, owner=302, staff=302),
        label="GET file download of a private model",
    ),
    # registry REST
    Row("registry:api-model-list", "/api/v1/models", everyone(200), checks=(no_hidden_models,)),
    Row(
        "registry:api-model-list",
        "/api/v1/models",
        cells(400, anon=401),
        method="post",
        data={},
        label="POST api-model-list (bad input)",
    ),
    Row("registry:api-model-detail", "/api/v1/models/{private_model}", OWNER_ONLY_404),
    Row(
        "registry:api-model-detail",
        "/api/v1/models/{model}",
        cells(403, anon=401, owner=200, staff=200),
        method="patch",
        data={},
        label="PATCH api-model-detail (staff moderate)",
    ),
    Row(
        "registry:api-model-versions",
        "/api/v1/models/{model}/versions",
        everyone(200),
        checks=(no_hidden_models,),
    ),
    Row(
        "registry:api-model-versions",
        "/api/v1/models/{model}/versions",
        cells(400, anon=401),
        method="post",
        data={},
        label="POST api-model-versions (bad input)",
    ),
    Row("registry:api-version-detail", "/api/v1/versions/{draft}", OWNER_ONLY_404),
    Row(
        "registry:api-version-publish",
        "/api/v1/versions/{draft}/publish",
        cells(404, anon=401, owner=200, staff=200),
        method="post",
    ),
    Row(
        "registry:api-version-unpublish",
        "/api/v1/versions/{free}/unpublish",
        cells(403, anon=401, owner=200, staff=200),
        method="post",
    ),
    Row(
        "registry:api-version-images",
        "/api/v1/versions/{paid}/images",
        cells(415, anon=401),
        method="post",
        data={},
        label="POST api-version-images (JSON)",
    ),
    Row(
        "registry:api-version-images-order",
        "/api/v1/versions/{paid}/images/order",
        cells(403, anon=401, owner=200, staff=200),
        method="put",
        data=lambda world: {"image_ids": [world.sample_image.pk]},
        checks=(images_unchanged,),
    ),
    Row(
        "registry:api-image",
        "/api/v1/images/{image}",
        cells(403, anon=401, owner=204, staff=204),
        method="delete",
        checks=(images_unchanged,),
    ),
    Row("registry:api-file-by-hash", "/api/v1/files/by-hash/{draft_sha}", OWNER_ONLY_404),
    Row("registry:api-file-conversion", "/api/v1/files/{paid_file}/conversion", api_logged_in(200)),
    Row(
        "registry:api-file-conversion",
        "/api/v1/files/{private_file}/conversion",
        cells(404, anon=401, owner=200, staff=200),
        label="GET conversion of a private file",
    ),
    Row(
        "registry:api-dataset-list",
        "/api/v1/datasets",
        everyone(200),
        checks=(no_manifest_secrets,),
    ),
    Row(
        "registry:api-dataset-detail",
        "/api/v1/datasets/{pdataset}",
        everyone(200),
        checks=(no_manifest_secrets,),
    ),
    Row(
        "registry:api-dataset-detail",
        "/api/v1/datasets/{hidden_dataset}",
        cells(404, data_owner=200, staff=200),
        label="GET api-dataset-detail (private)",
    ),
    Row(
        "registry:api-dataset-versions",
        "/api/v1/datasets/{pdataset}/versions",
        cells(400, anon=401),
        method="post",
        data={},
        label="POST api-dataset-versions (bad)",
    ),
    Row(
        "registry:api-dataset-version-detail",
        "/api/v1/dataset-versions/{pdataset_version}",
        everyone(200),
        checks=(no_manifest_secrets,),
    ),
    Row(
        "registry:api-user-detail",
        "/api/v1/users/{owner}",
        everyone(200),
        checks=(no_hidden_models,),
    ),
    # Hugging Face compatible
    # HF semantics: an anonymous caller of a repo it may not see gets 401 (RepositoryNotFound)
    Row("registry:hf-model-info", "/api/models/{owner}/{private_slug}", HF_PRIVATE),
    Row(
        "registry:hf-model-info-revision",
        "/api/models/{owner}/{model_slug}/revision/main",
        everyone(200),
    ),
    Row("registry:hf-tree", "/api/models/{owner}/{private_slug}/tree/main", HF_PRIVATE),
    Row(
        "registry:hf-resolve",
        "/{owner}/{model_slug}/resolve/main/Paid-lora.safetensors",
        cells(403, anon=401, owner=200, buyer=200, staff=200),
        checks=(no_paid_link_unless_entitled,),
    ),
    # Civitai compatible
    Row(
        "registry:civitai-models",
        "/civitai/api/v1/models",
        everyone(200),
        checks=(no_hidden_models,),
    ),
    Row("registry:civitai-model", "/civitai/api/v1/models/{private_model}", OWNER_ONLY_404),
    Row(
        "registry:civitai-version-by-hash",
        "/civitai/api/v1/model-versions/by-hash/{draft_sha}",
        OWNER_ONLY_404,
    ),
    Row("registry:civitai-version", "/civitai/api/v1/model-versions/{draft}", OWNER_ONLY_404),
    Row(
        "registry:civitai-download-model-version",
        "/civitai/api/download/models/{paid}",
        PAID_DOWNLOAD,
        checks=(no_paid_link_unless_entitled,),
    ),
    Row(
        "registry:civitai-root-version-by-hash",
        "/api/v1/model-versions/by-hash/{draft_sha}",
        OWNER_ONLY_404,
    ),
    Row("registry:civitai-root-version", "/api/v1/model-versions/{private}", OWNER_ONLY_404),
    Row(
        "registry:civitai-version-mini",
        "/civitai/api/v1/model-versions/mini/{draft}",
        OWNER_ONLY_404,
    ),
    Row(
        "registry:civitai-root-version-mini",
        "/api/v1/model-versions/mini/{private}",
        OWNER_ONLY_404,
    ),
    Row(
        "registry:civitai-versions-by-hashes",
        "/civitai/api/v1/model-versions/by-hash",
        everyone(400),
        method="post",
        data={},
        label="POST civitai-versions-by-hashes (bad)",
    ),
    Row(
        "registry:civitai-root-versions-by-hashes",
        "/api/v1/model-versions/by-hash",
        everyone(400),
        method="post",
        data={},
        label="POST civitai-root-versions-by-hashes (bad)",
    ),
    Row("registry:civitai-enums", "/civitai/api/v1/enums", everyone(200)),
    Row("registry:civitai-root-enums", "/api/v1/enums", everyone(200)),
    Row("registry:civitai-unknown", "/civitai/api/v1/nope", everyone(404)),
    Row("registry:civitai-root-unknown", "/api/v1/model-versions/1/nope", everyone(404)),
    # a diffusers version's zip: only through a signed link (none here)
    Row("registry:civitai-archive-file", "/files/archive/{paid}/x.zip", everyone(403)),
    # registry pages
    # "/": the landing page for visitors, browse for signed-in users (config.views.home)
    Row("home", "/", everyone(200), api=False, checks=(no_hidden_models,)),
    Row("registry:browse", "/models/", everyone(200), api=False, checks=(no_hidden_models,)),
    Row("landing", "/welcome/", everyone(200), api=False),  # counts of published items only
    Row(
        "registry:model-redirect",
        "/models/{private_model}/",
        cells(404, owner=302, staff=302),
        api=False,
    ),
    Row(
        "registry:model-detail",
        "/models/{private_model}/{private_slug}/",
        cells(404, owner=200, staff=200),
        api=False,
    ),
    Row(
        "registry:model-detail",
        "/models/{model}/{model_slug}/",
        everyone(200),
        api=False,
        checks=(no_hidden_models,),
        label="GET model-detail (public)",
    ),
    Row(
        "registry:version-publish",
        "/versions/{draft}/publish/",
        cells(404, anon=302, owner=302, staff=302),
        method="post",
        api=False,
    ),
    Row(
        "registry:file-convert",
        "/files/{private_file}/convert/",
        cells(404, anon=302, owner=302, staff=302),
        method="post",
        api=False,
    ),
    Row("registry:upload", "/upload/", logged_in(200), api=False),
    Row(
        "registry:dataset-list",
        "/datasets/",
        everyone(200),
        api=False,
        checks=(no_manifest_secrets,),
    ),
    Row(
        "registry:dataset-detail",
        "/datasets/{pdataset}/{pdataset_slug}/",
        everyone(200),
        api=False,
        checks=(no_manifest_secrets,),
    ),
    Row(
        "registry:dataset-detail",
        "/datasets/{hidden_dataset}/{hidden_dataset_slug}/",
        cells(404, data_owner=200, staff=200),
        api=False,
        label="GET dataset-detail (private)",
    ),
    Row("registry:creator", "/u/{owner}/", everyone(200), api=False, checks=(no_hidden_models,)),
    # federated: nodes (data_owner's node; its heartbeat is authenticated by the node token)
    Row(
        "federated:node-list",
        "/api/v1/federated/nodes",
        api_logged_in(200),
        checks=(own_nodes_only, no_bearer_secrets),
    ),
    Row(
        "federated:node-list",
        "/api/v1/federated/nodes",
        cells(400, anon=401),
        method="post",
        data={},
        label="POST node-list (bad input)",
    ),
    Row(
        "federated:node-list",
        "/api/v1/federated/nodes",
        everyone(401),
        token="node",
        label="GET node-list (a node token is no user's API token)",
    ),
    Row(
        "federated:node-heartbeat",
        "/api/v1/federated/nodes/heartbeat",
        everyone(401),
        method="post",
        data={},
        label="POST node-heartbeat (a user's token is no node's)",
    ),
    Row(
        "federated:node-heartbeat",
        "/api/v1/federated/nodes/heartbeat",
        everyone(200),
        method="post",
        token="node",
        data=lambda w: {"datasets": [w.fed.listed.dataset_version.manifest_hash]},
        checks=(no_bearer_secrets, no_manifest_secrets),
        label="POST node-heartbeat (node)",
    ),
    Row(
        "federated:node-heartbeat",
        "/api/v1/federated/nodes/heartbeat",
        everyone(401),
        method="post",
        data={},
        token="revoked_node",
        label="POST node-heartbeat (revoked node)",
    ),
    Row(
        "federated:node-revoke",
        "/api/v1/federated/nodes/{node}/revoke",
        cells(404, anon=401, data_owner=200, staff=200),
        method="post",
        checks=(no_bearer_secrets,),
    ),
    # federated: datasets (listed and hidden ones of data_owner's, a listed one of the peer's)
    Row(
        "federated:dataset-list",
        "/api/v1/federated/datasets",
        api_logged_in(200),
        checks=(
            no_manifest_secrets,
            no_peer_manifest,
            no_hidden_federated_dataset,
            no_bearer_secrets,
        ),
    ),
    Row(
        "federated:dataset-list",
        "/api/v1/federated/datasets",
        cells(400, anon=401),
        method="post",
        data={},
        label="POST dataset-list (bad input)",
    ),
    Row(
        "federated:dataset-mine",
        "/api/v1/federated/datasets/mine",
        api_logged_in(200),
        checks=(own_federated_datasets_only, no_peer_manifest, no_bearer_secrets),
    ),
    Row(
        "federated:dataset-detail",
        "/api/v1/federated/datasets/{fdataset}",
        api_logged_in(200),
        checks=(no_manifest_secrets, no_bearer_secrets),
    ),
    Row(
        "federated:dataset-detail",
        "/api/v1/federated/datasets/{fhidden}",
        cells(404, anon=401, data_owner=200, staff=200),
        checks=(no_manifest_secrets,),
        label="GET dataset-detail (private)",
    ),
    Row(
        "federated:dataset-detail",
        "/api/v1/federated/datasets/{fpeer}",
        api_logged_in(200),
        checks=(no_peer_manifest,),
        label="GET dataset-detail (the peer's)",
    ),
    Row(
        "federated:dataset-terms",
        "/api/v1/federated/datasets/{fdataset}/terms",
        cells(403, anon=401, data_owner=200),
        method="patch",
        data={"price_per_example_round": 2},
    ),
    Row(
        "federated:dataset-terms",
        "/api/v1/federated/datasets/{fhidden}/terms",
        cells(404, anon=401, data_owner=200, staff=403),
        method="patch",
        data={"price_per_example_round": 2},
        label="PATCH dataset-terms (private)",
    ),
    Row(
        "federated:dataset-budget",
        "/api/v1/federated/datasets/{fdataset}/budget",
        cells(404, anon=401, data_owner=200, staff=200),
    ),
    Row(
        "federated:dataset-budget",
        "/api/v1/federated/datasets/{fpeer}/budget",
        cells(404, anon=401, staff=200),
        label="GET dataset-budget (the peer's)",
    ),
    Row(
        "federated:dataset-earnings",
        "/api/v1/federated/datasets/{fdataset}/earnings",
        cells(404, anon=401, data_owner=200, staff=200),
    ),
    Row(
        "federated:dataset-earnings",
        "/api/v1/federated/datasets/{fpeer}/earnings",
        cells(404, anon=401, staff=200),
        label="GET dataset-earnings (the peer's)",
    ),
    Row(
        "federated:earnings",
        "/api/v1/federated/earnings",
        api_logged_in(200),
        checks=(own_earnings_only,),
    ),
    # federated: jobs (trainer's running, pending and settled jobs)
    Row(
        "federated:job-list", "/api/v1/federated/jobs", api_logged_in(200), checks=(own_jobs_only,)
    ),
    Row(
        "federated:job-list",
        "/api/v1/federated/jobs",
        cells(400, anon=401),
        method="post",
        data={},
        label="POST job-list (bad input)",
    ),
    Row(
        "federated:job-estimate",
        "/api/v1/federated/jobs/estimate",
        cells(400, anon=401),
        method="post",
        data={},
    ),
    Row(
        "federated:job-estimate",
        "/api/v1/federated/jobs/estimate",
        cells(404, anon=401, data_owner=200, staff=200),
        method="post",
        data=lambda w: {
            "name": "Sec probe",
            "base_version_id": w.base_checkpoint.pk,
            "dataset_version_ids": [w.fed.hidden.dataset_version_id],
            "use": "style",
            "rounds": 2,
            "resolution": 32,
            "rank": 2,
        },
        checks=(no_hidden_federated_dataset,),
        label="POST job-estimate (a private dataset)",
    ),
    Row(
        "federated:job-detail",
        "/api/v1/federated/jobs/{job}",
        JOB_VISIBLE,
        checks=(no_bearer_secrets, no_manifest_secrets, own_dataset_lines_only),
    ),
    Row(
        "federated:job-detail",
        "/api/v1/federated/jobs/{job}",
        everyone(401),
        token="job",
        label="GET job-detail (the job token the nodes hold is no user's)",
    ),
    Row(
        "federated:job-detail",
        "/api/v1/federated/jobs/{pending_job}",
        JOB_VISIBLE,
        checks=(no_bearer_secrets,),
        label="GET job-detail (awaiting approval)",
    ),
    Row(
        "federated:job-detail",
        "/api/v1/federated/jobs/{settled_job}",
        JOB_VISIBLE,
        checks=(no_bearer_secrets, no_peer_manifest, own_dataset_lines_only),
        label="GET job-detail (settled, with the peer's dataset)",
    ),
    Row("federated:job-cancel", "/api/v1/federated/jobs/{job}/cancel", TRAINER_ONLY, method="post"),
    # The live page reads progress (trainer, staff); anon too gets the 404 (AllowAny: the
    # POST is the ServerApp's, authenticated by the job's progress token).
    Row(
        "federated:job-progress",
        "/api/v1/federated/jobs/{job}/progress",
        cells(404, trainer=200, staff=200),
        checks=(no_bearer_secrets,),
    ),
    Row(
        "federated:job-progress",
        "/api/v1/federated/jobs/{job}/progress",
        everyone(401),
        method="post",
        data=lambda w: w.fed.report,
        checks=(progress_not_recorded,),
        label="POST job-progress (a user's token)",
    ),
    Row(
        "federated:job-progress",
        "/api/v1/federated/jobs/{job}/progress",
        everyone(401),
        method="post",
        data=lambda w: w.fed.report,
        token="forged_progress",
        checks=(progress_not_recorded,),
        label="POST job-progress (forged token)",
    ),
    Row(
        "federated:job-progress",
        "/api/v1/federated/jobs/{job}/progress",
        everyone(401),
        method="post",
        data=lambda w: w.fed.report,
        token="settled_progress",
        checks=(progress_not_recorded,),
        label="POST job-progress (another job's token)",
    ),
    Row(
        "federated:job-progress",
        "/api/v1/federated/jobs/{job}/progress",
        everyone(401),
        method="post",
        data=lambda w: w.fed.report,
        token="job",
        checks=(progress_not_recorded,),
        label="POST job-progress (the job token)",
    ),
    Row(
        "federated:job-progress",
        "/api/v1/federated/jobs/{job}/progress",
        everyone(200),
        method="post",
        data=lambda w: w.fed.report,
        token="progress",
        checks=(progress_recorded,),
        label="POST job-progress (its progress token)",
    ),
    Row(
        "federated:job-progress",
        "/api/v1/federated/jobs/{settled_job}/progress",
        everyone(409),
        method="post",
        data={"status": "running", "round": 2},
        token="settled_progress",
        label="POST job-progress (finished job, its token)",
    ),
    Row(
        "federated:job-base-model",
        "/api/v1/federated/jobs/{job}/base-model",
        everyone(401),
        label="GET job-base-model (a user's token)",
    ),
    Row(
        "federated:job-base-model",
        "/api/v1/federated/jobs/{job}/base-model",
        everyone(200),
        token="job",
        label="GET job-base-model (its job token)",
    ),
    Row(
        "federated:job-base-model",
        "/api/v1/federated/jobs/{job}/base-model",
        everyone(401),
        token="progress",
        label="GET job-base-model (the progress token)",
    ),
    Row(
        "federated:job-base-model",
        "/api/v1/federated/jobs/{job}/base-model",
        everyone(401),
        token="settled_job",
        label="GET job-base-model (another job's token)",
    ),
    Row(
        "federated:job-base-model",
        "/api/v1/federated/jobs/{settled_job}/base-model",
        everyone(403),
        token="settled_job",
        label="GET job-base-model (finished job)",
    ),
    # federated: approvals (the pending job's request on data_owner's dataset)
    Row(
        "federated:approval-list",
        "/api/v1/federated/approvals",
        api_logged_in(200),
        checks=(own_approvals_only,),
    ),
    Row(
        "federated:approval-approve",
        "/api/v1/federated/approvals/{request}/approve",
        cells(404, anon=401, data_owner=200),
        method="post",
    ),
    Row(
        "federated:approval-reject",
        "/api/v1/federated/approvals/{request}/reject",
        cells(404, anon=401, data_owner=200),
        method="post",
        data={"note": "no"},
    ),
    # federated pages: the trainer's jobs and wizard, the job page, the data owner's dashboard
    Row("training:job-list", "/train/", logged_in(200), api=False, checks=(no_bearer_secrets,)),
    Row(
        "training:job-new",
        "/train/new/",
        logged_in(200),
        api=False,
        checks=(no_hidden_federated_dataset,),
    ),
    Row(
        "training:job-new",
        "/train/new/",
        logged_in(400),
        method="post",
        api=False,
        data={"action": "launch"},
        label="POST job-new (an empty launch)",
    ),
    Row(
        "training:job-detail",
        "/train/jobs/{job}/",
        JOB_PAGE,
        api=False,
        checks=(no_bearer_secrets, job_page_own_lines_only),
    ),
    Row(
        "training:job-detail",
        "/train/jobs/{settled_job}/",
        JOB_PAGE,
        api=False,
        checks=(no_bearer_secrets, no_peer_manifest, job_page_own_lines_only),
        label="GET job-detail page (settled, with the peer's dataset)",
    ),
    # a job's public page exists only once its LoRA is published and visible; this world's
    # jobs published nothing (the page itself: tests/marketplace/test_public_job_page.py)
    Row("training:job-public", "/train/jobs/{settled_job}/public/", everyone(404), api=False),
    Row(
        "training:job-live",
        "/train/jobs/{settled_job}/live/",
        JOB_PAGE,
        api=False,
        checks=(job_page_own_lines_only,),
    ),
    Row(
        "training:job-cancel",
        "/train/jobs/{job}/cancel/",
        cells(404, anon=302, trainer=302, staff=302),
        method="post",
        api=False,
    ),
    Row("training:dashboard", "/nodes/", logged_in(200), api=False, checks=(no_bearer_secrets,)),
    Row(
        "training:approval-approve",
        "/nodes/approvals/{request}/approve/",
        cells(404, anon=302, data_owner=302),
        method="post",
        api=False,
    ),
    Row(
        "training:approval-reject",
        "/nodes/approvals/{request}/reject/",
        cells(404, anon=302, data_owner=302),
        method="post",
        api=False,
        data={"note": "no"},
    ),
    Row(
        "training:dataset-detail",
        "/nodes/datasets/{fdataset}/",
        cells(404, anon=302, data_owner=200, staff=200),
        api=False,
    ),
    Row(
        "training:dataset-detail",
        "/nodes/datasets/{fpeer}/",
        cells(404, anon=302, staff=200),
        api=False,
        label="GET dataset-detail page (the peer's)",
    ),
    Row(
        "training:dataset-preview-add",
        "/nodes/datasets/{fdataset}/previews/",
        cells(404, anon=302, data_owner=400, staff=400),
        method="post",
        api=False,
        data={},
    ),
    Row(
        "training:dataset-preview-add",
        "/nodes/datasets/{fpeer}/previews/",
        cells(404, anon=302, staff=400),
        method="post",
        api=False,
        data={},
        label="POST dataset-preview-add (the peer's)",
    ),
    Row(
        "training:dataset-terms-edit",
        "/nodes/datasets/{fdataset}/terms/",
        cells(404, anon=302, data_owner=400, staff=400),
        method="post",
        api=False,
        data={},
    ),
    Row(
        "training:dataset-preview-remove",
        "/nodes/datasets/{fdataset}/previews/999999/remove/",
        cells(404, anon=302),
        method="post",
        api=False,
    ),
    # studio (owner's private and public generations, both done)
    Row(
        "studio:generate",
        "/studio/",
        logged_in(200),
        api=False,
        checks=(no_hidden_models, no_private_generation),
    ),
    Row(
        "studio:generate",
        "/studio/?version={private}&from={gen_private}",
        logged_in(200),
        api=False,
        checks=(no_hidden_models, no_private_generation),
        label="GET generate (again from a private generation, with a private model)",
    ),
    Row(
        "studio:gallery",
        "/studio/gallery/",
        logged_in(200),
        api=False,
        checks=(no_private_generation,),
    ),
    Row(
        "studio:generation-detail",
        "/studio/generations/{gen_private}/",
        cells(404, owner=200),
        api=False,
    ),
    Row(
        "studio:generation-detail",
        "/studio/generations/{gen_public}/",
        everyone(200),
        api=False,
        checks=(no_private_generation, no_hidden_models),
        label="GET generation-detail (public)",
    ),
    Row(
        "studio:generation-visibility",
        "/studio/generations/{gen_private}/visibility/",
        cells(404, anon=302, owner=302),
        method="post",
        api=False,
        data={"is_public": "1"},
    ),
    Row(
        "studio:generation-visibility",
        "/studio/generations/{gen_public}/visibility/",
        logged_in(302),
        method="post",
        api=False,
        data={"is_public": "0"},
        checks=(generation_unchanged,),
        label="POST generation-visibility (public)",
    ),
    Row(
        "studio:generation-cancel",
        "/studio/generations/{gen_private}/cancel/",
        cells(404, anon=302, owner=302),
        method="post",
        api=False,
        checks=(generation_unchanged,),
    ),
    Row(
        "studio:generation-cancel",
        "/studio/generations/{gen_public}/cancel/",
        cells(403, anon=302, owner=302),
        method="post",
        api=False,
        checks=(generation_unchanged,),
        label="POST generation-cancel (public)",
    ),
    Row(
        "registry:version-images-add",
        "/versions/{paid}/images/",
        logged_in(302),
        method="post",
        api=False,
        data={},
        checks=(images_unchanged,),
        label="POST version-images-add (no file: back to the page)",
    ),
    Row(
        "registry:sample-image-remove",
        "/images/{image}/remove/",
        cells(403, anon=302, owner=302, staff=302),
        method="post",
        api=False,
        checks=(images_unchanged,),
    ),
    Row(
        "registry:sample-image-move",
        "/images/{image}/move/",
        cells(403, anon=302, owner=302, staff=302),
        method="post",
        api=False,
        data={"direction": "down"},
        checks=(images_unchanged,),
    ),
    Row(
        "studio:generation-sample",
        "/studio/generations/{gen_private}/sample/",
        cells(404, anon=302, owner=302),
        method="post",
        api=False,
        data={"version_id": "{checkpoint}"},
    ),
    Row(
        "studio:generation-sample",
        "/studio/generations/{gen_public}/sample/",
        logged_in(302),
        method="post",
        api=False,
        data={"version_id": "{checkpoint}"},
        checks=(generation_unchanged,),
        label="POST generation-sample (public)",
    ),
    Row(
        "studio:api-generation-list",
        "/api/v1/generations",
        api_logged_in(200),
        checks=(own_generations_only, no_private_generation),
    ),
    Row(
        "studio:api-generation-list",
        "/api/v1/generations",
        cells(400, anon=401),
        method="post",
        data={},
        label="POST api-generation-list (bad input)",
    ),
    Row("studio:api-generation-detail", "/api/v1/generations/{gen_private}", cells(404, owner=200)),
    Row(
        "studio:api-generation-detail",
        "/api/v1/generations/{gen_public}",
        everyone(200),
        checks=(no_private_generation,),
        label="GET api-generation-detail (public)",
    ),
    Row(
        "studio:api-generation-detail",
        "/api/v1/generations/{gen_private}",
        cells(404, anon=401, owner=200),
        method="patch",
        data={"is_public": True},
        label="PATCH api-generation-detail (private)",
    ),
    Row(
        "studio:api-generation-detail",
        "/api/v1/generations/{gen_public}",
        cells(403, anon=401, owner=200),
        method="patch",
        data={"is_public": False},
        checks=(generation_unchanged,),
        label="PATCH api-generation-detail (public)",
    ),
    Row(
        "studio:generation-image", "/api/v1/generations/{gen_private}/image", cells(404, owner=200)
    ),
    Row(
        "studio:generation-image",
        "/api/v1/generations/{gen_public}/image",
        everyone(200),
        label="GET generation-image (public)",
    ),
    Row(
        "studio:api-generation-cancel",
        "/api/v1/generations/{gen_private}/cancel",
        cells(404, anon=401, owner=409),
        method="post",
        checks=(generation_unchanged,),
    ),
    Row(
        "studio:api-generation-cancel",
        "/api/v1/generations/{gen_public}/cancel",
        cells(403, anon=401, owner=409),
        method="post",
        checks=(generation_unchanged,),
        label="POST api-generation-cancel (public)",
    ),
    Row(
        "studio:api-generation-samples",
        "/api/v1/generations/{gen_private}/samples",
        cells(404, anon=401, owner=201),
        method="post",
        data=lambda w: {"version_id": w.base_checkpoint.pk},
    ),
    Row(
        "studio:api-generation-samples",
        "/api/v1/generations/{gen_public}/samples",
        cells(403, anon=401, owner=201),
        method="post",
        data=lambda w: {"version_id": w.base_checkpoint.pk},
        checks=(generation_unchanged,),
        label="POST api-generation-samples (public)",
    ),
]

# Patterns with no row, and why (a route, or a route prefix ending in "/").
EXEMPT: dict[str, str] = {
    "admin/": "every admin URL is checked by test_admin_is_staff_only below",
    "^media/(?P<path>.*)$": "DEBUG-only static serving of MEDIA_ROOT for the demo",
    "api/federated/<path:rest>": "308 to /api/v1/federated/ (tests/federated/test_api.py); the"
    " rows of the new routes apply",
}


def _client(world: World, row: Row, role: str, handler: ClientHandler | None) -> Client:
    client = Client(enforce_csrf_checks=False)
    if handler is not None:  # loaded once: building the middleware (WhiteNoise) is slow
        client.handler = handler
    if role != "anon" and not row.api:
        client.force_login(world.users[role], backend="django.contrib.auth.backends.ModelBackend")
    return client


def _headers(world: World, row: Row, role: str) -> dict[str, str]:
    if not row.api:
        return {}
    if row.token:
        return {"Authorization": f"Bearer {world.fed.secrets[row.token]}"}
    return world.headers(role)


def _data(world: World, row: Row) -> dict[str, Any] | None:
    data = row.data(world) if callable(row.data) else row.data
    if data is None or row.api:
        return data
    fmt = world.fmt()  # form fields may name objects too ("{checkpoint}")
    return {k: v.format(**fmt) if isinstance(v, str) else v for k, v in data.items()}


def _request(world: World, row: Row, role: str, handler: ClientHandler | None = None) -> Any:
    client = _client(world, row, role, handler)
    url = row.path.format(**world.fmt())
    kwargs: dict[str, Any] = {"headers": _headers(world, row, role)}
    data = _data(world, row)
    if row.method in ("post", "patch", "put", "delete") and data is not None:
        kwargs["data"] = data
        if row.api:
            kwargs["content_type"] = "application/json"
    return getattr(client, row.method)(url, **kwargs)


def _cell(world: World, row: Row, role: str, handler: ClientHandler) -> list[str]:
    """Request one cell and check it (inside the cell's savepoint): its mismatches."""
    response = _request(world, row, role, handler)
    expected = row.expect[role]
    if response.status_code != expected:
        return [
            f"{row.id} as {role}: expected {expected}, got {response.status_code} "
            f"{_text(response)[:120]!r}"
        ]
    found = []
    for check in row.checks:
        try:
            check(world, role, response)
        except AssertionError as exc:
            found.append(f"{row.id} as {role}: {exc}")
    return found


def test_every_cell_of_the_matrix(world: World) -> None:
    # Given every role and object; when each row is requested as each role (each cell in a
    # savepoint rolled back after it, so that every cell sees the same world)
    mismatches: list[str] = []
    handler = ClientHandler(enforce_csrf_checks=False)  # each cell: a fresh client, no cookie
    for row in ROWS:
        for role in ROLES:
            with transaction.atomic():
                mismatches += _cell(world, row, role, handler)
                transaction.set_rollback(True)
    # Then every cell has its expected status and body
    assert mismatches == [], "\n".join(mismatches)


def _patterns(resolver: URLResolver, prefix: str = "", ns: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for pattern in resolver.url_patterns:
        if isinstance(pattern, URLResolver):
            inner_ns = ns + (f"{pattern.namespace}:" if pattern.namespace else "")
            out += _patterns(pattern, prefix + str(pattern.pattern), inner_ns)
        elif isinstance(pattern, URLPattern):
            name = f"{ns}{pattern.name}" if pattern.name else ""
            out.append((name, prefix + str(pattern.pattern)))
    return out


def test_every_url_pattern_has_a_row_or_a_reason() -> None:
    # Given every URL pattern the resolver knows
    patterns = _patterns(get_resolver())
    covered = {row.name for row in ROWS}

    # When each is looked up in the table or the exemptions
    missing = []
    for name, route in patterns:
        if name in covered or route in EXEMPT:
            continue
        if any(key.endswith("/") and route.startswith(key) for key in EXEMPT):
            continue
        missing.append(f"{name or '(unnamed)'} {route}")

    # Then none is left out (add a row to ROWS for a new route)
    assert missing == [], "routes with no row in the authorization matrix:\n" + "\n".join(missing)
    assert len(patterns) > 60


def test_admin_is_staff_only(world: World) -> None:
    # Given every admin URL (with 1 for any id) and the staff user
    from django.contrib import admin
    from django.urls import reverse

    admin_urls = []
    for name, route in _patterns(get_resolver()):
        if not name.startswith("admin:"):
            continue
        if name in ("admin:login", "admin:logout", "admin:jsi18n"):
            continue  # the login page itself is public; logout is POST only
        url = "/" + route.replace("^", "").replace("$", "")
        for token in ("<path:object_id>", "<int:object_id>", "<id>", "<object_id>"):
            url = url.replace(token, "1")
        admin_urls.append(url.split("<")[0].split("(")[0])

    # When anonymous and non-staff users ask for any of them
    for role in ("anon", "other", "owner"):
        client = Client()
        if role != "anon":
            client.force_login(world.users[role])
        for url in admin_urls:
            response = client.get(url)
            # Then they are sent to the admin login, or get no page at all
            assert response.status_code in (302, 404), (role, url, response.status_code)
            if response.status_code == 302:
                assert "/admin/login/" in response["Location"], (role, url)

    # And staff see every model's changelist
    staff = Client()
    staff.force_login(world.users["staff"])
    for model in admin.site._registry:
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        assert staff.get(url).status_code == 200, url


# --- CSRF: every route of the matrix, posted from a logged-in browser without the token ---


@pytest.mark.django_db
def test_every_browser_post_without_a_csrf_token_is_refused(world: World) -> None:
    # Given every web page of the matrix and every REST write, with a logged-in session
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.users["owner"])
    # (routes a node or the ServerApp calls with a machine token ignore sessions: 401)
    urls: dict[tuple[str, str], set[int]] = {}
    for row in ROWS:
        if row.path.startswith("{signed"):
            continue
        if not row.api or row.method in ("post", "patch", "delete"):
            key = (row.method if row.method != "get" else "post", row.path.format(**world.fmt()))
            urls[key] = urls.get(key, {403}) | ({401} if row.token else set())
    assert len(urls) > 40
    # When each is posted without the CSRF token
    accepted = []
    for (method, url), refusals in sorted(urls.items()):
        response = getattr(client, method)(url, data={} if method != "delete" else None)
        if response.status_code not in refusals:
            accepted.append(f"{method.upper()} {url}: {response.status_code}")
    # Then every one is refused: 403, or 401 where only a machine token is accepted
    assert accepted == []
