"""HTTP hardening, attacked through real HTTP (a live server, or gunicorn for its access log).

- Client addresses: ``X-Forwarded-For`` is believed only from ``ATELIER_TRUSTED_PROXIES``;
  a stranger's failed logins lock out their own addresses, never the owner's.
- Tokens: ``?token=`` only on the download link, and never in an access log.
- Bad numbers and bodies: out-of-range integers, deep JSON, an 11 MB body: 4xx JSON naming
  the field or the limit. Every API error, 500 under DEBUG included, is JSON.
- Names and tags: at most 20 tags; no bidirectional overrides or invisible characters.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from tests.security.world import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)


def rates(settings: Any, **scopes: str) -> None:
    base = dict(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"])
    base.update(scopes)
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": base}


def login(base: str, username: str, password: str, forwarded_for: str | None = None) -> Any:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return requests.post(
        f"{base}/api/v1/auth/tokens",
        json={"username": username, "password": password},
        headers=headers,
        timeout=30,
    )


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    body = response.json()
    if "error" in body:  # Civitai's download path also carries Civitai's key: the message
        assert body.pop("error") == body.get("message"), body
    assert set(body) == {"code", "message", "details"}, body
    if code is not None:
        assert body["code"] == code, body
    return body


@pytest.fixture
def site(live_server: Any, settings: Any) -> str:
    settings.ALLOWED_HOSTS = ["*"]
    rates(settings, api="100000/min", login="100000/min", downloads="100000/min")
    return str(live_server.url)


@pytest.fixture
def alice(transactional_db: None) -> Any:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user("alice", "alice@example.test", PASSWORD)


# --- client addresses and login throttling ---------------------------------------------------


def test_rotating_x_forwarded_for_does_not_escape_the_login_rate(
    site: str, settings: Any, alice: Any
) -> None:
    # Given a login rate of 3 a minute and no trusted proxy (the default)
    rates(settings, login="3/min")
    assert settings.ATELIER_TRUSTED_PROXIES == []

    # When one client tries 4 logins, each with a new X-Forwarded-For (and a new username,
    # so that no lockout is involved)
    answers = [login(site, f"user{i}", "guess", forwarded_for=f"203.0.113.{i}") for i in range(4)]

    # Then the header is ignored: the 4th attempt is throttled
    assert [a.status_code for a in answers[:3]] == [401, 401, 401]
    body = assert_error(answers[3], 429, "throttled")
    assert int(answers[3].headers["Retry-After"]) >= 1
    assert body["details"]["retry_after"] >= 1


def test_behind_a_trusted_proxy_the_client_is_the_right_most_untrusted_address(
    site: str, settings: Any, alice: Any
) -> None:
    # Given the live server's peer (127.0.0.1) is a trusted proxy, and a login rate of 3
    settings.ATELIER_TRUSTED_PROXIES = ["127.0.0.1", "10.0.0.0/8"]
    rates(settings, login="3/min")

    # When one client (198.51.100.9) writes a new fake address at the left of the chain each
    # time, behind two trusted proxies
    answers = [
        login(site, f"user{i}", "guess", forwarded_for=f"203.0.113.{i}, 198.51.100.9, 10.1.2.3")
        for i in range(4)
    ]

    # Then it is counted as 198.51.100.9 every time: the 4th attempt is throttled
    assert [a.status_code for a in answers[:3]] == [401, 401, 401]
    assert_error(answers[3], 429, "throttled")
    # And another client behind the same proxies is not
    other = login(site, "alice", PASSWORD, forwarded_for="198.51.100.10, 10.1.2.3")
    assert other.status_code == 201, other.text


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("192.0.2.1", "203.0.113.5", "192.0.2.1"),  # untrusted peer: the header is ignored
        ("10.0.0.2", "", "10.0.0.2"),  # trusted peer, no header: the peer
        ("10.0.0.2", "203.0.113.5", "203.0.113.5"),
        ("10.0.0.2", "6.6.6.6, 203.0.113.5, 10.0.0.9", "203.0.113.5"),  # right-most untrusted
        ("10.0.0.2", "10.0.0.7, 10.0.0.9", "10.0.0.7"),  # all trusted: the left-most
        ("10.0.0.2", "6.6.6.6, not-an-address", "10.0.0.2"),  # garbage: stop at the proxy
        ("10.0.0.2", "[2001:db8::1]:443", "2001:db8::1"),
        ("10.0.0.2", "203.0.113.5:5555", "203.0.113.5"),
        ("::ffff:10.0.0.2", "::ffff:203.0.113.5", "203.0.113.5"),  # IPv4-mapped
    ],
)
def test_the_client_address_believes_only_trusted_proxies(
    settings: Any, peer: str, forwarded: str, client: str
) -> None:
    from django.test import RequestFactory

    from core.throttles import client_address

    settings.ATELIER_TRUSTED_PROXIES = ["10.0.0.0/8"]
    request = RequestFactory().get("/", REMOTE_ADDR=peer, HTTP_X_FORWARDED_FOR=forwarded)
    assert client_address(request) == client


def test_ipv6_clients_are_counted_by_their_64_network() -> None:
    from core.throttles import address_key

    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("203.0.113.5") == "203.0.113.5"


def test_a_strangers_failed_logins_from_many_addresses_do_not_lock_the_owner_out(
    site: str, settings: Any, alice: Any
) -> None:
    # Given a lockout after 3 failures per address, behind a trusted proxy
    settings.ATELIER_TRUSTED_PROXIES = ["127.0.0.1"]
    settings.ATELIER_LOGIN_MAX_FAILURES = 3
    settings.ATELIER_LOGIN_LOCKOUT_SECONDS = 600

    # When a stranger fails 3 times for alice from each of 10 addresses
    for n in range(10):
        for _ in range(3):
            login(site, "alice", "guess", forwarded_for=f"203.0.113.{n}")

    # Then the stranger's addresses are locked out, even with the right password
    locked = login(site, "alice", PASSWORD, forwarded_for="203.0.113.0")
    assert_error(locked, 429, "locked_out")
    # And alice, from her own address, logs in
    mine = login(site, "alice", PASSWORD, forwarded_for="198.51.100.7")
    assert mine.status_code == 201, mine.text
    assert mine.json()["username"] == "alice"


def test_an_account_under_attack_gives_each_new_address_fewer_guesses(
    site: str, settings: Any, alice: Any
) -> None:
    # Given: 10 failures per address normally; past 20 failures for the account from all
    # addresses, 1 failure per address
    settings.ATELIER_TRUSTED_PROXIES = ["127.0.0.1"]
    settings.ATELIER_LOGIN_MAX_FAILURES = 10
    settings.ATELIER_LOGIN_ACCOUNT_MAX_FAILURES = 20
    settings.ATELIER_LOGIN_MAX_FAILURES_UNDER_ATTACK = 1
    for n in range(20):  # a distributed guesser: one failure from each of 20 addresses
        assert login(site, "alice", "guess", forwarded_for=f"203.0.113.{n}").status_code == 401

    # When a fresh address fails once, then tries again
    first = login(site, "alice", "guess", forwarded_for="192.0.2.50")
    second = login(site, "alice", "guess2", forwarded_for="192.0.2.50")

    # Then its second guess is refused without being checked
    assert first.status_code == 401
    assert_error(second, 429, "locked_out")
    # And the right password from an address that has not failed still logs in
    assert login(site, "alice", PASSWORD, forwarded_for="192.0.2.77").status_code == 201
    # And another user is not slowed down
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_user("bob", "bob@example.test", PASSWORD)
    assert login(site, "bob", "guess", forwarded_for="192.0.2.50").status_code == 401
    assert login(site, "bob", "guess", forwarded_for="192.0.2.50").status_code == 401


# --- tokens in URLs ---------------------------------------------------------------------------


@dataclass
class People:
    """alice owns a public model and a draft version; bob owns nothing. Both have tokens."""

    site: str
    users: dict[str, Any]
    tokens: dict[str, str]
    public_model_id: int
    draft_version_id: int

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"} if who in self.tokens else {}


@pytest.fixture
def people(site: str, alice: Any) -> People:
    from django.contrib.auth import get_user_model

    from core.services import token_create
    from tests.registry.factories import make_model

    bob = get_user_model().objects.create_user("bob", "bob@example.test", PASSWORD)
    public = make_model(owner=alice, name="Public LoRA")
    draft = make_model(owner=alice, name="Draft LoRA", publish=False)
    return People(
        site=site,
        users={"alice": alice, "bob": bob},
        tokens={u.get_username(): token_create(user=u, name="t").secret for u in (alice, bob)},
        public_model_id=public.model_id,
        draft_version_id=draft.pk,
    )


def test_a_query_token_is_refused_on_api_routes(people: People) -> None:
    site, token = people.site, people.tokens["alice"]

    # When the token is sent as ?token= to ordinary API routes
    whoami = requests.get(f"{site}/api/v1/auth/whoami", params={"token": token}, timeout=30)
    library = requests.get(f"{site}/api/v1/library", params={"token": token}, timeout=30)
    civitai = requests.get(f"{site}/civitai/api/v1/models", params={"token": token}, timeout=30)

    # Then each is refused with 401 and says where the token goes
    for response in (whoami, library, civitai):
        assert response.status_code == 401, (response.url, response.text)
        assert response.json()["code"] == "token_in_query"
        assert "Authorization header" in response.json()["message"]
    # And the header still works
    ok = requests.get(f"{site}/api/v1/auth/whoami", headers=people.headers("alice"), timeout=30)
    assert ok.status_code == 200
    assert ok.json()["username"] == "alice"


def test_a_query_token_works_on_the_civitai_download_link(people: People) -> None:
    site, draft = people.site, people.draft_version_id

    for path in (f"/api/download/models/{draft}", f"/civitai/api/download/models/{draft}"):
        # When alice follows Civitai's download link to her draft with ?token=, at both mounts
        response = requests.get(
            site + path, params={"token": people.tokens["alice"]}, allow_redirects=False, timeout=30
        )
        # Then it redirects to the signed file
        assert response.status_code == 302, (path, response.text)
        # And without a token, or with bob's, the draft does not exist
        assert requests.get(site + path, allow_redirects=False, timeout=30).status_code == 404
        bobs = requests.get(
            site + path, params={"token": people.tokens["bob"]}, allow_redirects=False, timeout=30
        )
        assert bobs.status_code == 404


def test_the_access_log_never_holds_a_token(people: People, settings: Any, tmp_path: Any) -> None:
    from tests.gunicorn_server import gunicorn_server

    token, draft = people.tokens["alice"], people.draft_version_id
    # Given gunicorn as in docs/production.md, with its access log
    with gunicorn_server(
        settings, tmp_path / "gunicorn.log", GUNICORN_CMD_ARGS="--access-logfile -"
    ) as server:
        # When a Civitai client downloads with ?token=, and another client misplaces its token
        download = requests.get(
            f"{server.url}/api/download/models/{draft}?token={token}",
            allow_redirects=False,
            timeout=30,
        )
        misplaced = requests.get(f"{server.url}/api/v1/auth/whoami?token={token}&x=1", timeout=30)
        assert download.status_code == 302
        assert misplaced.status_code == 401
        # (gunicorn writes an access line just after sending the response)
        deadline = time.monotonic() + 15
        while "whoami" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.1)
    log = server.log()  # after the server stopped: every line is written

    # Then both requests are in the access log, with the token redacted
    assert f"/api/download/models/{draft}?token=[redacted]" in log, log[-3000:]
    assert "/api/v1/auth/whoami?token=[redacted]&x=1" in log, log[-3000:]
    # And no part of the secret is anywhere in it
    assert token not in log
    assert token[len("atl_") :][:16] not in log


# --- bad numbers and bodies ------------------------------------------------------------------


@pytest.mark.parametrize("number", [2**63, 10**30, -(10**30)])
def test_numbers_out_of_range_are_refused_naming_the_field(people: People, number: int) -> None:
    site, alice, bob = people.site, people.headers("alice"), people.headers("bob")
    cases = [
        (
            "POST",
            "/api/v1/listings",
            {"model_version_id": people.draft_version_id, "price": number},
            alice,
            "price",
        ),
        ("POST", "/api/v1/wallet/top-ups", {"amount": number}, bob, "amount"),
        ("POST", "/api/v1/payouts", {"amount": number}, bob, "amount"),
        ("POST", "/api/v1/purchases", {"listing_id": number}, bob, "listing_id"),
        (
            "POST",
            f"/api/v1/models/{people.public_model_id}/versions",
            {"name": "v9", "files": [{"upload_id": str(uuid.uuid4()), "size": number}]},
            alice,
            "files[0].size",
        ),
    ]
    for method, path, body, headers, field in cases:
        # When a number beyond 64 bits is sent
        response = requests.request(
            method,
            site + path,
            data=json.dumps(body),
            timeout=30,
            headers={
                **headers,
                "Content-Type": "application/json",
                "Idempotency-Key": uuid.uuid4().hex,
            },
        )
        # Then it is a 400 in the JSON shape naming the field and the range
        error = assert_error(response, 400, "number_out_of_range")
        assert error["details"]["field"] == field, error
        assert error["details"]["max"] == 2**63 - 1
        assert field in error["message"]
    # And nothing was written
    from marketplace.models import Listing

    assert not Listing.objects.exists()


@pytest.mark.parametrize("number", [2**63, 10**30])
def test_ids_out_of_range_in_urls_are_not_found(people: People, number: int) -> None:
    for path in (
        f"/api/v1/models/{number}",
        f"/api/v1/versions/{number}",
        f"/api/v1/listings/{number}",
        f"/api/v1/federated/jobs/{number}",
        f"/api/download/models/{number}",
        f"/api/v1/generations/{number}",
        f"/api/v1/auth/tokens/{number}",
    ):
        # When an id beyond any database integer is asked for
        response = requests.request(
            "DELETE" if "tokens" in path else "GET",
            people.site + path,
            headers=people.headers("alice"),
            timeout=30,
        )
        # Then there is no such object (404 JSON), not a crash
        assert_error(response, 404)
    # And Civitai's routes, which take the id as text, say it is not an id
    civitai = requests.get(f"{people.site}/civitai/api/v1/models/{number}", timeout=30)
    assert civitai.status_code == 400
    assert civitai.json()["code"] == "bad_id"


def test_deeply_nested_json_is_refused_with_the_limit(people: People) -> None:
    site = people.site
    body = "[" * 50_000 + "]" * 50_000
    for path, who in (
        ("/api/v1/models", "alice"),
        ("/api/v1/federated/jobs", "bob"),
        ("/api/v1/auth/tokens", "nobody"),
    ):
        # When a body nests 50,000 deep
        response = requests.post(
            site + path,
            data=body,
            timeout=30,
            headers={**people.headers(who), "Content-Type": "application/json"},
        )
        # Then it is refused with 400 and the limit
        error = assert_error(response, 400, "json_too_deep")
        assert error["details"] == {"limit": 64}
    # And a body within the limit is parsed (and judged on its content)
    nested: Any = "x"
    for _ in range(60):
        nested = [nested]
    ok = requests.post(
        f"{site}/api/v1/models",
        headers=people.headers("alice"),
        timeout=30,
        json={"name": "Shallow", "kind": "lora", "extra": nested},
    )
    assert ok.status_code == 201, ok.text


def test_a_number_too_big_for_its_column_is_a_400_not_a_500(people: People) -> None:
    # Given alice's private dataset (its manifest's image count is a 32-bit column)
    site, alice = people.site, people.headers("alice")
    dataset = requests.post(
        f"{site}/api/v1/datasets",
        headers=alice,
        timeout=30,
        json={"name": "Holiday", "kind": "private"},
    )
    assert dataset.status_code == 201, dataset.text

    # When a version's manifest claims 2**40 images (within 64 bits, beyond the column)
    response = requests.post(
        f"{site}/api/v1/datasets/{dataset.json()['id']}/versions",
        headers=alice,
        timeout=30,
        json={"name": "v1", "manifest": {"count": 2**40, "manifest_hash": "a" * 64}},
    )

    # Then the database's refusal is a 400 in the JSON shape, and nothing is stored
    error = assert_error(response, 400, "number_out_of_range")
    assert "out of range" in error["message"]
    from registry.models import DatasetVersion

    assert not DatasetVersion.objects.filter(dataset_id=dataset.json()["id"]).exists()


def test_nul_characters_anywhere_in_a_json_body_are_refused(people: People) -> None:
    # Given alice's private dataset, whose versions take a free-form JSON manifest
    site, alice = people.site, people.headers("alice")
    dataset = requests.post(
        f"{site}/api/v1/datasets",
        headers=alice,
        timeout=30,
        json={"name": "Holiday", "kind": "private"},
    )
    assert dataset.status_code == 201, dataset.text

    # When a NUL character hides in the manifest (PostgreSQL cannot store it)
    manifest = {"count": 3, "manifest_hash": "a" * 64, "captions": {"note": "x\x00y"}}
    response = requests.post(
        f"{site}/api/v1/datasets/{dataset.json()['id']}/versions",
        headers=alice,
        timeout=30,
        json={"name": "v1", "manifest": manifest},
    )

    # Then it is a 400 naming where it is, not a 500
    error = assert_error(response, 400, "bad_text")
    assert error["details"]["field"] == "manifest.captions.note"


def test_a_body_over_the_memory_limit_gets_413_json(people: People, settings: Any) -> None:
    site, limit = people.site, settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    big = b"x" * (11 * 1024 * 1024)
    sends = [
        (
            "/api/v1/models",
            b'{"name": "' + big + b'", "kind": "lora"}',
            "application/json",
            people.headers("alice"),
        ),
        (
            "/api/v1/models",
            b"name=" + big,
            "application/x-www-form-urlencoded",
            people.headers("alice"),
        ),
        ("/api/v1/auth/tokens", b'{"username": "' + big + b'"}', "application/json", {}),
    ]
    for path, data, content_type, headers in sends:
        # When 11 MB come in one request body
        response = requests.post(
            site + path, data=data, timeout=60, headers={**headers, "Content-Type": content_type}
        )
        # Then the answer is 413 in the JSON shape, with the limit
        error = assert_error(response, 413, "too_large")
        assert error["details"] == {"limit": limit}
        assert str(limit) in error["message"]


# --- every API error is JSON, also under DEBUG ----------------------------------------------

SECRET_WORDS = "sekrit-internal-detail"


def _crash_urlconf() -> str:
    from django.http import HttpRequest, HttpResponse
    from django.urls import include, path
    from rest_framework.permissions import AllowAny
    from rest_framework.response import Response
    from rest_framework.views import APIView

    class CrashApi(APIView):
        permission_classes = [AllowAny]

        def get(self, request: Any) -> Response:
            raise ZeroDivisionError(SECRET_WORDS)

    def crash_plain(request: HttpRequest) -> HttpResponse:
        raise KeyError(SECRET_WORDS)

    module = type(sys)(f"crash_urls_{uuid.uuid4().hex}")
    module.urlpatterns = [  # type: ignore[attr-defined]
        path("api/v1/crash", CrashApi.as_view()),
        path("api/download/crash", crash_plain),
        path("", include("config.urls")),
    ]
    module.handler404 = "core.errors.handler404"  # type: ignore[attr-defined]
    module.handler500 = "core.errors.handler500"  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    return module.__name__


@pytest.mark.parametrize("debug", [True, False])
def test_an_api_server_error_is_json_without_a_traceback(
    site: str, settings: Any, caplog: pytest.LogCaptureFixture, debug: bool
) -> None:
    # Given API routes that crash, under DEBUG (the demo) or not
    settings.ROOT_URLCONF = _crash_urlconf()
    settings.DEBUG = debug
    settings.DEBUG_PROPAGATE_EXCEPTIONS = False

    for path in ("/api/v1/crash", "/api/download/crash"):
        with caplog.at_level(logging.ERROR, logger="django.request"):
            # When a client calls one (asking for HTML, as a browser would)
            response = requests.get(site + path, headers={"Accept": "text/html"}, timeout=30)

        # Then the answer is the JSON error shape, with nothing of the exception in it
        error = assert_error(response, 500, "server_error")
        assert error["details"] == {}
        for leak in (SECRET_WORDS, "Traceback", "ZeroDivisionError", "KeyError", 'File "'):
            assert leak not in response.text
        # And the traceback went to the log
        crashed = [r for r in caplog.records if r.exc_info and path in r.getMessage()]
        assert crashed, [r.getMessage() for r in caplog.records]
        caplog.clear()

    # And under DEBUG, an unknown API route is JSON too (not the debug 404 page)
    missing = requests.get(
        f"{site}/api/v1/no-such-route", headers={"Accept": "text/html"}, timeout=30
    )
    assert_error(missing, 404, "not_found")
    # And web pages keep their HTML
    page = requests.get(f"{site}/no-such-page/", timeout=30)
    assert page.status_code == 404
    assert page.headers["Content-Type"].startswith("text/html")


# --- names and tags ---------------------------------------------------------------------------


def test_more_than_20_tags_are_refused_naming_the_field(people: People) -> None:
    site, alice = people.site, people.headers("alice")
    tags = [f"tag{i}" for i in range(21)]

    # When a model is created, or edited, or a dataset created, with 21 tags
    created = requests.post(
        f"{site}/api/v1/models",
        headers=alice,
        timeout=30,
        json={"name": "Many tags", "kind": "lora", "tags": tags},
    )
    edited = requests.patch(
        f"{site}/api/v1/models/{people.public_model_id}",
        headers=alice,
        json={"tags": tags},
        timeout=30,
    )
    dataset = requests.post(
        f"{site}/api/v1/datasets",
        headers=alice,
        timeout=30,
        json={"name": "Many tags", "kind": "public", "tags": tags},
    )

    # Then each is refused, naming the field and the limit, and nothing is written
    for response in (created, edited, dataset):
        error = assert_error(response, 400, "invalid")
        assert "tags" in error["details"], error
        assert "20" in error["message"], error
    from registry.models import Dataset, Model

    assert not Model.objects.filter(name="Many tags").exists()
    assert not Dataset.objects.filter(name="Many tags").exists()
    assert Model.objects.get(pk=people.public_model_id).tags.count() == 0
    # And 20 tags are fine
    twenty = requests.post(
        f"{site}/api/v1/models",
        headers=alice,
        timeout=30,
        json={"name": "Twenty tags", "kind": "lora", "tags": tags[:20]},
    )
    assert twenty.status_code == 201, twenty.text
    assert len(twenty.json()["tags"]) == 20


@pytest.mark.parametrize("char", ["\u202e", "\u200b", "\u2066", "\x1b", "\ufeff", "\u3164"])
def test_invisible_and_bidi_characters_in_names_and_tags_are_refused(
    people: People, char: str
) -> None:
    site, alice = people.site, people.headers("alice")
    name = f"safe-model{char}gnp.exe"
    sends = [
        ("POST", "/api/v1/models", {"name": name, "kind": "lora"}, "name"),
        ("POST", "/api/v1/models", {"name": "Fine", "kind": "lora", "tags": ["ok", name]}, "tags"),
        ("PATCH", f"/api/v1/models/{people.public_model_id}", {"name": name}, "name"),
        ("POST", "/api/v1/datasets", {"name": name, "kind": "public"}, "name"),
        (
            "POST",
            f"/api/v1/models/{people.public_model_id}/versions",
            {"name": name, "files": [{"upload_id": str(uuid.uuid4())}]},
            "name",
        ),
        ("POST", "/api/v1/auth/tokens", {"name": name}, "name"),
    ]
    for method, path, body, field in sends:
        # When a name or tag holds the character
        response = requests.request(method, site + path, json=body, headers=alice, timeout=30)
        # Then it is refused on that field, saying which character
        error = assert_error(response, 400, "invalid")
        assert field in error["details"], error
        assert f"U+{ord(char):04X}" in error["message"], error
    from registry.models import Model

    assert not Model.objects.filter(name__contains=char).exists()
    assert char not in Model.objects.get(pk=people.public_model_id).name


def test_the_web_upload_form_refuses_a_bidi_override_in_the_name(people: People) -> None:
    from registry.models import Model
    from tests.registry.factories import lora_bytes

    site = people.site
    browser = requests.Session()
    # Given alice logged in through the login page
    page = browser.get(f"{site}/accounts/login/", timeout=30)
    logged_in = browser.post(
        f"{site}/accounts/login/",
        timeout=30,
        allow_redirects=False,
        data={
            "username": "alice",
            "password": PASSWORD,
            "csrfmiddlewaretoken": browser.cookies["csrftoken"],
        },
        headers={"Referer": page.url},
    )
    assert logged_in.status_code == 302, logged_in.text[:500]

    # When the upload form is posted with U+202E in the name and U+200B in a tag
    browser.get(f"{site}/upload/", timeout=30)
    response = browser.post(
        f"{site}/upload/",
        timeout=60,
        headers={"Referer": f"{site}/upload/"},
        data={
            "name": "safe-model\u202egnp.exe",
            "kind": "lora",
            "version_name": "v1",
            "visibility": "public",
            "tags": "ok, fine\u200b",
            "csrfmiddlewaretoken": browser.cookies["csrftoken"],
        },
        files={"file": ("x.safetensors", lora_bytes(seed=7))},
    )

    # Then the page says so next to the fields, and nothing is created
    assert response.status_code == 400
    assert "U+202E" in response.text and "U+200B" in response.text
    assert not Model.objects.filter(name__contains="\u202e").exists()
