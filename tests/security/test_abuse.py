"""Abuse: rate limits (429 + Retry-After, on Redis), login lockout, per-user upload quota."""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from tests.registry.factories import lora_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def redis_cache(settings: Any) -> str:
    """The default cache on the real Redis (the broker's server), keys of this test only."""
    broker = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
    prefix = f"sec-{uuid.uuid4().hex[:10]}"
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": broker,
            "KEY_PREFIX": prefix,
            "TIMEOUT": 120,
        }
    }
    return prefix


def rates(settings: Any, **scopes: str) -> None:
    base = dict(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"])
    base.update(scopes)
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": base}


def assert_throttled(response: Any, scope: str | None = None) -> None:
    assert response.status_code == 429
    assert int(response["Retry-After"]) >= 1
    body = response.json()
    if "error" in body:  # Civitai's download path also carries Civitai's key: the message
        assert body.pop("error") == body["message"]
    assert set(body) == {"code", "message", "details"}
    assert body["code"] == "throttled"
    assert body["details"]["retry_after"] >= 1
    if scope is not None:
        assert body["details"]["scope"] == scope


def test_api_rate_limit_answers_429_with_retry_after(redis_cache: str, settings: Any) -> None:
    # Given an API rate of 3 a minute
    rates(settings, api="3/min")
    client = APIClient()

    # When a fourth request comes within the minute
    statuses = [client.get("/api/v1/licenses").status_code for _ in range(3)]
    fourth = client.get("/api/v1/licenses")

    # Then the first three pass and the fourth gets 429, Retry-After and the error shape
    assert statuses == [200, 200, 200]
    assert_throttled(fourth)
    # And the counter is in Redis, not in this process
    import redis

    keys = redis.Redis.from_url(settings.CACHES["default"]["LOCATION"]).keys(f"{redis_cache}:*")
    assert any(b"throttle_api_" in key for key in keys), keys


def test_api_rate_is_per_user(redis_cache: str, settings: Any, make_user, token_for) -> None:
    # Given an API rate of 2 a minute and two users
    rates(settings, api="2/min")
    alice, bob = make_user("alice"), make_user("bob")
    a, b = APIClient(), APIClient()
    a.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(alice)}")
    b.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(bob)}")

    # When alice uses up her rate
    for _ in range(2):
        assert a.get("/api/v1/auth/whoami").status_code == 200

    # Then she is throttled and bob is not
    assert_throttled(a.get("/api/v1/auth/whoami"))
    assert b.get("/api/v1/auth/whoami").status_code == 200


def test_download_routes_have_their_own_rate(redis_cache: str, settings: Any, make_user) -> None:
    # Given a downloads rate of 2 a minute and a published free version
    from tests.registry.factories import make_model

    rates(settings, downloads="2/min")
    version = make_model(owner=make_user("creator"))
    client = Client()

    # When it is downloaded three times
    first = [client.get(f"/api/download/models/{version.pk}").status_code for _ in range(2)]
    third = client.get(f"/api/download/models/{version.pk}")

    # Then the third is refused (plain Django view: same 429 shape) and the API is not
    assert first == [302, 302]
    assert_throttled(third, scope="downloads")
    assert client.get("/api/v1/licenses").status_code == 200


def test_generation_scope_is_configured_for_the_studio() -> None:
    # The studio's views use core.throttles.GenerationThrottle; its rate comes from settings
    from django.conf import settings

    from core.throttles import GenerationThrottle

    assert GenerationThrottle.scope == "generation"
    assert settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["generation"]
    assert GenerationThrottle().num_requests >= 1


def test_token_login_is_rate_limited_per_address(
    redis_cache: str, settings: Any, make_user
) -> None:
    # Given a login rate of 2 a minute
    rates(settings, login="2/min")
    make_user("alice", password="a-long-passphrase")
    client = APIClient()

    # When a third login comes from the same address
    for _ in range(2):
        ok = client.post(
            "/api/v1/auth/tokens", {"username": "alice", "password": "a-long-passphrase"}
        )
        assert ok.status_code == 201
    third = client.post(
        "/api/v1/auth/tokens", {"username": "alice", "password": "a-long-passphrase"}
    )

    # Then it is throttled
    assert_throttled(third)


def test_web_login_form_is_rate_limited(redis_cache: str, settings: Any, make_user) -> None:
    # Given a login rate of 2 a minute
    rates(settings, login="2/min")
    make_user("alice", password="a-long-passphrase")
    client = Client()

    # When the form is posted three times
    for _ in range(2):
        client.post("/accounts/login/", {"username": "alice", "password": "nope"})
    third = client.post("/accounts/login/", {"username": "alice", "password": "a-long-passphrase"})

    # Then the third gets 429 with Retry-After and a message on the page, and no session
    assert third.status_code == 429
    assert int(third["Retry-After"]) >= 1
    assert "Too many login attempts" in third.content.decode()
    assert "_auth_user_id" not in client.session


def test_lockout_after_failed_logins_for_that_username_and_address(
    redis_cache: str, settings: Any, make_user
) -> None:
    # Given a lockout after 3 failures
    settings.ATELIER_LOGIN_MAX_FAILURES = 3
    settings.ATELIER_LOGIN_LOCKOUT_SECONDS = 600
    make_user("alice", password="a-long-passphrase")
    make_user("bob", password="a-long-passphrase")
    client = Client()

    # When alice's password is guessed wrong 3 times
    for _ in range(3):
        wrong = client.post("/accounts/login/", {"username": "alice", "password": "guess"})
        assert wrong.status_code == 200
    locked = client.post("/accounts/login/", {"username": "alice", "password": "a-long-passphrase"})

    # Then even the right password is refused for the window, with a clear message
    assert locked.status_code == 429
    assert "Too many failed logins for this username" in locked.content.decode()
    assert int(locked["Retry-After"]) > 500
    assert "_auth_user_id" not in client.session
    # And the token API says the same, as JSON
    api = APIClient().post(
        "/api/v1/auth/tokens", {"username": "alice", "password": "a-long-passphrase"}
    )
    assert api.status_code == 429
    assert api.json()["code"] == "locked_out"
    assert int(api["Retry-After"]) > 500
    # And bob, from the same address, is not affected
    assert (
        client.post(
            "/accounts/login/", {"username": "bob", "password": "a-long-passphrase"}
        ).status_code
        == 302
    )
    # And alice from another address is not locked out
    other = Client(REMOTE_ADDR="10.9.8.7")
    assert (
        other.post(
            "/accounts/login/", {"username": "alice", "password": "a-long-passphrase"}
        ).status_code
        == 302
    )


def test_lockout_does_not_reveal_whether_the_account_exists(
    redis_cache: str, settings: Any, make_user
) -> None:
    # Given a lockout after 2 failures, one real and one made-up username
    settings.ATELIER_LOGIN_MAX_FAILURES = 2
    make_user("alice", password="a-long-passphrase")
    bodies = {}
    for username in ("alice", "nobody-here"):
        client = Client()
        for _ in range(2):
            client.post("/accounts/login/", {"username": username, "password": "guess"})
        # When a third attempt is made
        response = client.post("/accounts/login/", {"username": username, "password": "x"})
        bodies[username] = (
            response.status_code,
            "Too many failed logins" in response.content.decode(),
        )
    # Then both answers are the same
    assert bodies["alice"] == bodies["nobody-here"] == (429, True)


def test_a_successful_login_resets_the_failure_count(
    redis_cache: str, settings: Any, make_user
) -> None:
    settings.ATELIER_LOGIN_MAX_FAILURES = 3
    make_user("alice", password="a-long-passphrase")
    client = Client()
    # Given two failures, then a success
    for _ in range(2):
        client.post("/accounts/login/", {"username": "alice", "password": "guess"})
    assert (
        client.post(
            "/accounts/login/", {"username": "alice", "password": "a-long-passphrase"}
        ).status_code
        == 302
    )
    client.logout()
    # When two more failures follow
    for _ in range(2):
        client.post("/accounts/login/", {"username": "alice", "password": "guess"})
    # Then alice is not locked out (the count started again)
    assert (
        client.post(
            "/accounts/login/", {"username": "alice", "password": "a-long-passphrase"}
        ).status_code
        == 302
    )


# --- upload quota -------------------------------------------------------------------------


def _api_upload(client: APIClient, data: bytes, name: str = "q.safetensors") -> Any:
    created = client.post(
        "/api/v1/uploads",
        {"filename": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()},
        format="json",
    )
    return created


def test_upload_quota_refuses_before_any_byte_is_kept(settings: Any, make_user, token_for) -> None:
    from registry.models import Blob, Upload
    from registry.services.uploads import upload_bytes_used, upload_whole_file

    # Given a quota of 100 KB and a user who already stored one 40 KB-ish file
    settings.ATELIER_UPLOAD_QUOTA_BYTES = 100_000
    alice = make_user("alice")
    first = lora_bytes(seed=1)
    upload_whole_file(
        user=alice, filename="a.safetensors", stream=io.BytesIO(first), size=len(first)
    )
    used = upload_bytes_used(alice)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(alice)}")
    blobs_before = Blob.objects.count()

    # When she starts an upload that would go past the quota
    too_big = 100_000 - used + 1
    response = client.post(
        "/api/v1/uploads", {"filename": "b.safetensors", "size": too_big}, format="json"
    )

    # Then it is refused with 413 and a clear message, nothing is created, usage is unchanged
    assert response.status_code == 413
    body = response.json()
    assert body["code"] == "quota_exceeded"
    assert "quota" in body["message"]
    assert body["details"] == {"quota": 100_000, "used": used, "size": too_big}
    assert Upload.objects.filter(user=alice).count() == 1
    assert Blob.objects.count() == blobs_before
    assert upload_bytes_used(alice) == used
    assert (
        not any(os.scandir(settings.UPLOAD_TEMP_DIR))
        if os.path.isdir(settings.UPLOAD_TEMP_DIR)
        else True
    )
    # And an upload that fits is accepted
    fits = client.post(
        "/api/v1/uploads", {"filename": "c.safetensors", "size": 100_000 - used}, format="json"
    )
    assert fits.status_code == 201


def test_a_failed_upload_gives_its_quota_back(settings: Any, make_user) -> None:
    from core.errors import ApplicationError
    from registry.services.uploads import upload_bytes_used, upload_whole_file

    # Given a quota and a file the server refuses (not a valid safetensors file)
    settings.ATELIER_UPLOAD_QUOTA_BYTES = 10_000
    alice = make_user("alice")
    junk = b"\x00" * 9_000
    # When it is uploaded and refused
    with pytest.raises(ApplicationError):
        upload_whole_file(
            user=alice, filename="bad.safetensors", stream=io.BytesIO(junk), size=len(junk)
        )
    # Then the quota is untouched and the same size fits again
    assert upload_bytes_used(alice) == 0
    with pytest.raises(ApplicationError) as again:
        upload_whole_file(
            user=alice, filename="bad.safetensors", stream=io.BytesIO(junk), size=len(junk)
        )
    assert again.value.code != "quota_exceeded"


def test_web_upload_form_shows_the_quota_message(settings: Any, make_user) -> None:
    # Given a tiny quota
    settings.ATELIER_UPLOAD_QUOTA_BYTES = 10
    alice = make_user("alice")
    client = Client()
    client.force_login(alice)
    data = lora_bytes(seed=2)
    # When the upload form is posted
    from django.core.files.uploadedfile import SimpleUploadedFile

    response = client.post(
        "/upload/",
        {
            "name": "Quota",
            "kind": "lora",
            "version_name": "v1",
            "visibility": "public",
            "file": SimpleUploadedFile("q.safetensors", data),
        },
    )
    # Then the page says so, and nothing is stored
    from registry.models import Upload

    assert response.status_code in (400, 413)
    assert "quota" in response.content.decode()
    assert not Upload.objects.filter(user=alice).exists()
