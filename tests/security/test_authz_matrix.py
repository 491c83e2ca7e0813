"""The authorization matrix: every route × every role, the expected status of each cell.

Roles are those of :mod:`tests.security.world` (anon, other, owner, buyer with the paid
version and dataset, shopper with no entitlement, data_owner of the private datasets,
staff). Each row names its URL pattern; :func:`test_every_url_pattern_has_a_row_or_a_reason`
fails on any pattern of the resolver that has neither a row here nor an entry in ``EXEMPT``,
so new routes (federated jobs, the studio) must be added to this table when they land.

Besides the status, cells check bodies: no paid file's bytes or signed link for someone not
entitled, no private dataset manifest detail, no unpublished or private model, no one
else's wallet. Web rows log in with a session; API, compatible and download rows send the
role's API token (``Authorization: Bearer``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from tests.security.world import MANIFEST_SECRETS, ROLES, World

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
    data: dict[str, Any] | None = None
    checks: tuple[Check, ...] = field(default_factory=tuple)
    label: str = ""

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


def _text(response: Any) -> str:
    if response.streaming:
        return b"".join(response.streaming_content).decode("utf-8", "replace")
    return response.content.decode("utf-8", "replace")


# --- the table --------------------------------------------------------------------------
# Visibility answers 404 (never 403) so that no one learns a private thing exists.

OWNER_ONLY_404 = cells(404, owner=200, staff=200)
HF_PRIVATE = cells(404, anon=401, owner=200, staff=200)
PAID_DOWNLOAD = cells(403, anon=401, owner=302, buyer=302, staff=302)

ROWS: list[Row] = [
    # accounts
    Row("login", "/accounts/login/", everyone(200), api=False),
    Row("logout", "/accounts/logout/", everyone(302), method="post", api=False),
    Row("signup", "/accounts/signup/", everyone(200), api=False),
    Row("tokens", "/accounts/tokens/", logged_in(200), api=False),
    Row("token-revoke", "/accounts/tokens/{spare_token}/revoke/", logged_in(302),
        method="post", api=False),
    Row("api-schema", "/api/schema/", everyone(200)),
    Row("api-docs", "/api/docs/", everyone(200)),
    Row("api-redoc", "/api/redoc/", everyone(200)),
    Row("token-create", "/api/v1/auth/tokens", cells(201, anon=401), method="post",
        data={"name": "matrix"}),
    Row("token-list", "/api/v1/auth/tokens/list", api_logged_in(200)),
    Row("token-revoke-api", "/api/v1/auth/tokens/{spare_token}",
        cells(404, anon=401, owner=204), method="delete"),
    Row("whoami", "/api/v1/auth/whoami", api_logged_in(200)),
    # wallet and money
    Row("marketplace:wallet", "/api/v1/wallet", api_logged_in(200), checks=(own_wallet_only,)),
    Row("marketplace:wallet-transactions", "/api/v1/wallet/transactions", api_logged_in(200)),
    Row("marketplace:top-up-create", "/api/v1/wallet/top-ups", cells(400, anon=401),
        method="post", data={}),
    Row("marketplace:wallet-statement", "/api/v1/wallet/statement?from=2025-01-01&to=2030-01-01",
        api_logged_in(200)),
    Row("marketplace:payout-list", "/api/v1/payouts", api_logged_in(200),
        checks=(only_own_items,)),
    Row("marketplace:payout-paid", "/api/v1/payouts/{payout}/paid",
        cells(403, anon=401, staff=200), method="post", data={}),
    Row("marketplace:payout-rejected", "/api/v1/payouts/{payout}/rejected",
        cells(403, anon=401, staff=200), method="post", data={}),
    Row("marketplace:report-create", "/api/v1/reports", cells(400, anon=401),
        method="post", data={}),
    Row("marketplace:listing-list", "/api/v1/listings", everyone(200)),
    Row("marketplace:listing-detail", "/api/v1/listings/{listing}", everyone(200)),
    Row("marketplace:listing-detail", "/api/v1/listings/{listing}",
        cells(403, anon=401, owner=200), method="patch", data={"price": 1200},
        label="PATCH listing-detail"),
    Row("marketplace:purchase-create", "/api/v1/purchases", cells(400, anon=401),
        method="post", data={}),
    Row("marketplace:library", "/api/v1/library", api_logged_in(200),
        checks=(only_own_items,)),
    Row("marketplace:license-list", "/api/v1/licenses", everyone(200)),
    Row("marketplace:review-list", "/api/v1/reviews?model_version_id={paid}", everyone(200)),
    Row("marketplace:review-list", "/api/v1/reviews?model_version_id={draft}",
        OWNER_ONLY_404, label="GET review-list of a draft"),
    # marketplace pages
    Row("marketplace:purchase-confirm", "/buy/{listing}/", logged_in(200), api=False),
    Row("marketplace:purchase-submit", "/buy/{listing}/confirm/",
        cells(400, anon=302, owner=400), method="post", api=False, data={}),
    Row("marketplace:listing-edit", "/versions/{paid}/listing/", cells(404, anon=302, owner=200),
        api=False),
    Row("marketplace:wallet-page", "/wallet/", logged_in(200), api=False),
    Row("marketplace:wallet-statement-page", "/wallet/statement.csv?from=2025-01-01&to=2030-01-01",
        logged_in(200), api=False),
    Row("marketplace:payouts-page", "/wallet/payouts/", logged_in(200), api=False),
    Row("marketplace:library-page", "/library/", logged_in(200), api=False),
    Row("marketplace:earnings-page", "/earnings/", logged_in(200), api=False),
    Row("marketplace:review-submit", "/versions/{draft}/reviews/",
        cells(404, anon=302, owner=400, staff=400), method="post", api=False, data={}),
    Row("marketplace:report-version", "/report/version/{private}/",
        cells(404, anon=302, owner=200, staff=200), api=False),
    Row("marketplace:report-dataset", "/report/dataset/{hidden_dataset}/",
        cells(404, anon=302, data_owner=200, staff=200), api=False),
    # uploads (the owner's open upload)
    Row("registry:upload-create", "/api/v1/uploads", cells(400, anon=401), method="post",
        data={}),
    Row("registry:upload-detail", "/api/v1/uploads/{upload}", cells(404, anon=401, owner=200)),
    Row("registry:upload-complete", "/api/v1/uploads/{upload}/complete",
        cells(404, anon=401, owner=400), method="post", data={}),
    # downloads and signed URLs
    Row("registry:download-model-version", "/api/download/models/{paid}", PAID_DOWNLOAD,
        checks=(no_paid_link_unless_entitled,)),
    Row("registry:download-model-version", "/api/download/models/{draft}",
        cells(404, owner=302, staff=302), label="GET download of a draft"),
    Row("registry:download-model-version", "/api/download/models/{free}", everyone(302),
        label="GET download of a free version"),
    Row("registry:download-dataset-version", "/api/download/datasets/{dataset_version}",
        PAID_DOWNLOAD),
    Row("registry:download-dataset-version", "/api/download/datasets/{pdataset_version}",
        everyone(404), label="GET download of a private dataset (no file on the site)"),
    Row("registry:signed-file", "{signed_buyer}", everyone(200),
        label="GET signed-file (link of an entitled user)"),
    Row("registry:signed-file", "{signed_shopper}", everyone(403),
        label="GET signed-file (link of a user not entitled)"),
    Row("registry:signed-file", "{signed_forged}", everyone(403),
        label="GET signed-file (forged signature)"),
    Row("registry:api-file-download", "/api/v1/files/{paid_file}/download", PAID_DOWNLOAD,
        checks=(no_paid_link_unless_entitled,)),
    Row("registry:api-file-download", "/api/v1/files/{private_file}/download",
        cells(404, owner=302, staff=302), label="GET file download of a private model"),
    # registry REST
    Row("registry:api-model-list", "/api/v1/models", everyone(200),
        checks=(no_hidden_models,)),
    Row("registry:api-model-list", "/api/v1/models", cells(400, anon=401),
        method="post", data={}, label="POST api-model-list (bad input)"),
    Row("registry:api-model-detail", "/api/v1/models/{private_model}", OWNER_ONLY_404),
    Row("registry:api-model-detail", "/api/v1/models/{model}",
        cells(403, anon=401, owner=200, staff=200), method="patch", data={},
        label="PATCH api-model-detail (staff moderate)"),
    Row("registry:api-model-versions", "/api/v1/models/{model}/versions", everyone(200),
        checks=(no_hidden_models,)),
    Row("registry:api-model-versions", "/api/v1/models/{model}/versions",
        cells(400, anon=401), method="post", data={},
        label="POST api-model-versions (bad input)"),
    Row("registry:api-version-detail", "/api/v1/versions/{draft}", OWNER_ONLY_404),
    Row("registry:api-version-publish", "/api/v1/versions/{draft}/publish",
        cells(404, anon=401, owner=200, staff=200), method="post"),
    Row("registry:api-version-unpublish", "/api/v1/versions/{free}/unpublish",
        cells(403, anon=401, owner=200, staff=200), method="post"),
    Row("registry:api-version-images", "/api/v1/versions/{paid}/images",
        cells(415, anon=401), method="post", data={}, label="POST api-version-images (JSON)"),
    Row("registry:api-file-by-hash", "/api/v1/files/by-hash/{draft_sha}", OWNER_ONLY_404),
    Row("registry:api-file-conversion", "/api/v1/files/{paid_file}/conversion",
        api_logged_in(200)),
    Row("registry:api-file-conversion", "/api/v1/files/{private_file}/conversion",
        cells(404, anon=401, owner=200, staff=200), label="GET conversion of a private file"),
    Row("registry:api-dataset-list", "/api/v1/datasets", everyone(200),
        checks=(no_manifest_secrets,)),
    Row("registry:api-dataset-detail", "/api/v1/datasets/{pdataset}", everyone(200),
        checks=(no_manifest_secrets,)),
    Row("registry:api-dataset-detail", "/api/v1/datasets/{hidden_dataset}",
        cells(404, data_owner=200, staff=200), label="GET api-dataset-detail (private)"),
    Row("registry:api-dataset-versions", "/api/v1/datasets/{pdataset}/versions",
        cells(400, anon=401), method="post", data={}, label="POST api-dataset-versions (bad)"),
    Row("registry:api-dataset-version-detail", "/api/v1/dataset-versions/{pdataset_version}",
        everyone(200), checks=(no_manifest_secrets,)),
    Row("registry:api-user-detail", "/api/v1/users/{owner}", everyone(200),
        checks=(no_hidden_models,)),
    # Hugging Face compatible
    # HF semantics: an anonymous caller of a repo it may not see gets 401 (RepositoryNotFound)
    Row("registry:hf-model-info", "/api/models/{owner}/{private_slug}", HF_PRIVATE),
    Row("registry:hf-model-info-revision", "/api/models/{owner}/{model_slug}/revision/main",
        everyone(200)),
    Row("registry:hf-tree", "/api/models/{owner}/{private_slug}/tree/main", HF_PRIVATE),
    Row("registry:hf-resolve", "/{owner}/{model_slug}/resolve/main/Paid-lora.safetensors",
        cells(403, anon=401, owner=200, buyer=200, staff=200),
        checks=(no_paid_link_unless_entitled,)),
    # Civitai compatible
    Row("registry:civitai-models", "/civitai/api/v1/models", everyone(200),
        checks=(no_hidden_models,)),
    Row("registry:civitai-model", "/civitai/api/v1/models/{private_model}", OWNER_ONLY_404),
    Row("registry:civitai-version-by-hash", "/civitai/api/v1/model-versions/by-hash/{draft_sha}",
        OWNER_ONLY_404),
    Row("registry:civitai-version", "/civitai/api/v1/model-versions/{draft}", OWNER_ONLY_404),
    Row("registry:civitai-download-model-version", "/civitai/api/download/models/{paid}",
        PAID_DOWNLOAD, checks=(no_paid_link_unless_entitled,)),
    Row("registry:civitai-root-version-by-hash", "/api/v1/model-versions/by-hash/{draft_sha}",
        OWNER_ONLY_404),
    Row("registry:civitai-root-version", "/api/v1/model-versions/{private}", OWNER_ONLY_404),
    # registry pages
    Row("registry:browse", "/", everyone(200), api=False, checks=(no_hidden_models,)),
    Row("registry:model-redirect", "/models/{private_model}/", cells(404, owner=302, staff=302),
        api=False),
    Row("registry:model-detail", "/models/{private_model}/{private_slug}/",
        cells(404, owner=200, staff=200), api=False),
    Row("registry:model-detail", "/models/{model}/{model_slug}/", everyone(200), api=False,
        checks=(no_hidden_models,), label="GET model-detail (public)"),
    Row("registry:version-publish", "/versions/{draft}/publish/",
        cells(404, anon=302, owner=302, staff=302), method="post", api=False),
    Row("registry:file-convert", "/files/{private_file}/convert/",
        cells(404, anon=302, owner=302, staff=302), method="post", api=False),
    Row("registry:upload", "/upload/", logged_in(200), api=False),
    Row("registry:dataset-list", "/datasets/", everyone(200), api=False,
        checks=(no_manifest_secrets,)),
    Row("registry:dataset-detail", "/datasets/{pdataset}/{pdataset_slug}/", everyone(200),
        api=False, checks=(no_manifest_secrets,)),
    Row("registry:dataset-detail", "/datasets/{hidden_dataset}/{hidden_dataset_slug}/",
        cells(404, data_owner=200, staff=200), api=False,
        label="GET dataset-detail (private)"),
    Row("registry:creator", "/u/{owner}/", everyone(200), api=False,
        checks=(no_hidden_models,)),
]

# Patterns with no row, and why (a route, or a route prefix ending in "/").
EXEMPT: dict[str, str] = {
    "admin/": "every admin URL is checked by test_admin_is_staff_only below",
    "^media/(?P<path>.*)$": "DEBUG-only static serving of MEDIA_ROOT for the demo",
}


def _client(world: World, row: Row, role: str) -> Client:
    client = Client(enforce_csrf_checks=False)
    if role != "anon" and not row.api:
        client.force_login(world.users[role], backend="django.contrib.auth.backends.ModelBackend")
    return client


def _request(world: World, row: Row, role: str) -> Any:
    client = _client(world, row, role)
    url = row.path.format(**world.fmt())
    headers = world.headers(role) if row.api else {}
    kwargs: dict[str, Any] = {"headers": headers}
    if row.method in ("post", "patch", "put", "delete") and row.data is not None:
        kwargs["data"] = row.data
        if row.api:
            kwargs["content_type"] = "application/json"
    return getattr(client, row.method)(url, **kwargs)


def test_every_cell_of_the_matrix(world: World) -> None:
    # Given every role and object; when each row is requested as each role (each cell in a
    # savepoint rolled back after it, so that every cell sees the same world)
    mismatches: list[str] = []
    for row in ROWS:
        for role in ROLES:
            with transaction.atomic():
                response = _request(world, row, role)
                transaction.set_rollback(True)
            expected = row.expect[role]
            if response.status_code != expected:
                mismatches.append(
                    f"{row.id} as {role}: expected {expected}, got {response.status_code} "
                    f"{_text(response)[:120]!r}"
                )
                continue
            for check in row.checks:
                try:
                    check(world, role, response)
                except AssertionError as exc:
                    mismatches.append(f"{row.id} as {role}: {exc}")
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
    assert missing == [], "routes with no row in the authorization matrix:\n" + "\n".join(
        missing
    )
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
