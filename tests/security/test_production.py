"""Production settings: check --deploy, secrets, cookies, HSTS, CSP, CSRF, hashers, tokens."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from tests.security.world import World

ROOT = Path(__file__).resolve().parents[2]


def production_env(**extra: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "DJANGO_DEBUG": "0",
        "ATELIER_HTTPS": "1",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "atelier.example",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        # No payment provider, on purpose (unset, the startup check warns: marketplace.W001)
        "ATELIER_PAYMENT_PROVIDER": "none",
    }
    env.update(extra)
    return env


def run_manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def settings_in(env: dict[str, str], *names: str) -> dict[str, Any]:
    code = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        f"print(json.dumps({{n: repr(getattr(s, n)) for n in {list(names)!r}}}))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    import json

    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_check_deploy_is_clean_with_production_settings() -> None:
    # Given the production environment (HTTPS, DEBUG off, a real secret key)
    # When Django's deployment checks run, failing on any warning
    proc = run_manage(production_env(), "check", "--deploy", "--fail-level", "WARNING")
    # Then there is nothing to report
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no issues" in proc.stdout


def test_production_refuses_to_start_without_a_secret_key() -> None:
    env = production_env()
    del env["SECRET_KEY"]
    proc = run_manage(env, "check")
    assert proc.returncode != 0
    assert "SECRET_KEY is not set" in proc.stderr


def test_check_deploy_flags_a_weak_secret_key() -> None:
    # A short key: the deployment check (security.W009) must catch it
    proc = run_manage(
        production_env(SECRET_KEY="short"), "check", "--deploy", "--fail-level", "WARNING"
    )
    assert proc.returncode != 0
    assert "W009" in proc.stdout + proc.stderr


def test_production_settings_are_hardened() -> None:
    # Given the production environment, when its settings load
    values = settings_in(
        production_env(),
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        "SECURE_SSL_REDIRECT",
        "SECURE_HSTS_SECONDS",
        "SESSION_COOKIE_HTTPONLY",
        "PASSWORD_HASHERS",
        "DEBUG",
        "CACHES",
    )
    # Then cookies are secure, HSTS is a year, and passwords are hashed with Argon2id
    assert values["SESSION_COOKIE_SECURE"] == "True"
    assert values["CSRF_COOKIE_SECURE"] == "True"
    assert values["SECURE_SSL_REDIRECT"] == "True"
    assert values["SECURE_HSTS_SECONDS"] == "31536000"
    assert values["SESSION_COOKIE_HTTPONLY"] == "True"
    assert values["DEBUG"] == "False"
    assert values["PASSWORD_HASHERS"].startswith(
        "['django.contrib.auth.hashers.Argon2PasswordHasher'"
    )


def test_redis_cache_is_used_when_configured() -> None:
    values = settings_in(production_env(REDIS_CACHE_URL="redis://127.0.0.1:6379/9"), "CACHES")
    assert "RedisCache" in values["CACHES"]
    assert "redis://127.0.0.1:6379/9" in values["CACHES"]


@pytest.mark.django_db
@pytest.mark.production_hashers
def test_new_passwords_are_stored_with_argon2(make_user) -> None:
    user = make_user("alice", password="a-long-passphrase")
    assert user.password.startswith("argon2$argon2id$")
    assert user.check_password("a-long-passphrase")


@pytest.mark.django_db
@pytest.mark.production_hashers
def test_a_pbkdf2_hash_is_upgraded_to_argon2_on_login(make_user) -> None:
    from django.contrib.auth.hashers import make_password

    user = make_user("alice")
    user.password = make_password("old-passphrase-1", hasher="pbkdf2_sha256")
    user.save()
    assert Client().login(username="alice", password="old-passphrase-1")
    user.refresh_from_db()
    assert user.password.startswith("argon2$")


@pytest.mark.django_db
def test_pages_carry_a_csp_with_a_fresh_nonce_on_their_inline_script(world: World) -> None:
    # Given a model page, which has an inline script
    fmt = world.fmt()
    url = f"/models/{fmt['model']}/{fmt['model_slug']}/"
    # When it is fetched twice
    first, second = Client().get(url), Client().get(url)
    # Then each response has a CSP with its own nonce, and the inline script carries it
    policies = [r["Content-Security-Policy"] for r in (first, second)]
    nonces = [re.search(r"'nonce-([^']+)'", p).group(1) for p in policies]  # type: ignore[union-attr]
    assert nonces[0] != nonces[1]
    assert "script-src 'self' 'nonce-" in policies[0]
    assert "'unsafe-inline'" not in policies[0].split("script-src")[1].split(";")[0]
    assert "frame-ancestors 'none'" in policies[0]
    assert f'<script nonce="{nonces[0]}">' in first.content.decode()


def test_no_template_has_an_inline_script_without_a_nonce() -> None:
    # Every <script> is either a file (src=) or carries the nonce; no inline handlers
    bad = []
    folders = [ROOT / "templates", *ROOT.glob("*/templates")]
    for path in (p for folder in folders for p in folder.rglob("*.html")):
        text = path.read_text()
        for tag in re.findall(r"<script\b[^>]*>", text):
            data_block = 'type="application/json"' in tag  # not run, so not under CSP
            if "src=" not in tag and "csp_nonce" not in tag and not data_block:
                bad.append(f"{path.relative_to(ROOT)}: {tag}")
        if re.search(r"\son(click|load|change|submit|input)=", text):
            bad.append(f"{path.relative_to(ROOT)}: inline event handler")
    assert bad == []


@pytest.mark.django_db
def test_api_tokens_are_stored_hashed_and_can_be_revoked(make_user) -> None:
    from core.models import ApiToken
    from core.services import token_create, token_digest

    # Given a new token
    alice = make_user("alice")
    issued = token_create(user=alice, name="cli")
    row = ApiToken.objects.get(pk=issued.token.pk)
    # Then only its SHA-256 and a short prefix are stored
    assert issued.secret not in (row.digest, row.prefix, row.name)
    assert row.digest == token_digest(issued.secret)
    assert len(row.prefix) == 12
    headers = {"Authorization": f"Bearer {issued.secret}"}
    assert Client().get("/api/v1/auth/whoami", headers=headers).status_code == 200
    # When it is revoked through the API, then it no longer works
    revoke = Client().delete(f"/api/v1/auth/tokens/{row.pk}", headers=headers)
    assert revoke.status_code == 204
    assert Client().get("/api/v1/auth/whoami", headers=headers).status_code == 401
