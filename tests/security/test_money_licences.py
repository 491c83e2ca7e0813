"""Money and licences against a hostile user, through real HTTP (a live server, requests).

- Credits enter only through a payment provider; the demo provider is explicit.
- Only earned credits are withdrawable; bought credits are spendable only.
- A version's licence limits hold along its whole lineage, however deep; cycles are refused.
- A listing whose lineage asks more royalties than its price leaves after the fee is refused.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from core.services import token_create
from registry.services.catalog import ParentSpec, model_create
from tests.registry.factories import complete_upload, lora_bytes, make_version
from tests.support import load_license_catalogue

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def live(
    restore_license_catalogue: None, transactional_db: None, live_server: Any, settings: Any
) -> str:
    settings.ALLOWED_HOSTS = ["*"]
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            scope: "100000/min" for scope in ("api", "login", "downloads", "generation")
        },
    }
    load_license_catalogue()
    return str(live_server.url)


def _user(name: str) -> Any:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user(
        username=name, email=f"{name}@example.test", password="a-long-passphrase"
    )


def _session(user: Any) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token_create(user=user, name='t').secret}"
    return session


def _assert_error_shape(response: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message", "details"}
    assert body["code"] == code, body
    return body


def _top_up(session: requests.Session, live: str, amount: int, key: str) -> requests.Response:
    return session.post(
        f"{live}/api/v1/wallet/top-ups",
        json={"amount": amount},
        headers={"Idempotency-Key": key},
        timeout=30,
    )


# --- credits enter only through a configured payment provider ---------------------------------


def test_top_up_of_a_trillion_is_refused_without_a_payment_provider(
    live: str, settings: Any
) -> None:
    # Given a site with no payment provider configured (production without one)
    settings.ATELIER_PAYMENT_PROVIDER = ""
    attacker = _user("minter")
    session = _session(attacker)
    # When the attacker asks for 10**12 credits
    response = _top_up(session, live, 10**12, "mint-1")
    # Then the site refuses with 503 in the error shape, and no credit exists
    body = _assert_error_shape(response, 503, "payments_unavailable")
    assert "payment provider" in body["message"]
    wallet = session.get(f"{live}/api/v1/wallet", timeout=30).json()
    assert wallet["balance"] == 0
    from marketplace.models import TopUp

    assert not TopUp.objects.exists()


def test_demo_provider_is_refused_with_debug_off_unless_allowed(live: str, settings: Any) -> None:
    # Given the demo provider named in a production (DEBUG off) configuration
    settings.DEBUG = False
    settings.ATELIER_PAYMENT_PROVIDER = "demo"
    settings.ATELIER_ALLOW_DEMO_PAYMENTS = False
    session = _session(_user("minter"))
    # When a top-up is asked, it is refused
    _assert_error_shape(_top_up(session, live, 10**12, "mint-2"), 503, "payments_unavailable")
    # And only an explicit allowance (a staging site) turns the demo provider on
    settings.ATELIER_ALLOW_DEMO_PAYMENTS = True
    allowed = _top_up(session, live, 500, "mint-3")
    assert allowed.status_code == 201, allowed.text
    assert allowed.json()["provider"] == "demo"


def _manage_check(**extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "DJANGO_DEBUG": "0",
        "ATELIER_HTTPS": "1",
        "SECRET_KEY": "a-long-enough-secret-key-for-the-check-" + "x" * 30,
        "ALLOWED_HOSTS": "atelier.example",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        **extra,
    }
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_startup_check_warns_without_a_provider_and_refuses_the_demo_one() -> None:
    # Without a provider: a warning that top-ups are refused
    none = _manage_check()
    assert none.returncode == 0, none.stderr
    assert "marketplace.W001" in none.stderr + none.stdout
    # With the demo provider and DEBUG off: an error, the command fails
    demo = _manage_check(ATELIER_PAYMENT_PROVIDER="demo")
    assert demo.returncode != 0
    assert "marketplace.E001" in demo.stderr + demo.stdout
    # Explicitly allowed (staging), or explicitly none: clean
    for extra in (
        {"ATELIER_PAYMENT_PROVIDER": "demo", "ATELIER_ALLOW_DEMO_PAYMENTS": "1"},
        {"ATELIER_PAYMENT_PROVIDER": "none"},
    ):
        clean = _manage_check(**extra)
        assert clean.returncode == 0, clean.stderr
        assert "marketplace." not in clean.stderr + clean.stdout, extra


# --- only earned credits are withdrawable ------------------------------------------------------


def test_bought_credits_cannot_be_paid_out_but_earned_credits_can(live: str, settings: Any) -> None:
    settings.ATELIER_PAYOUT_MINIMUM = 1000
    # Given a creator who bought 5000 credits with the demo provider
    creator, buyer = _user("creator"), _user("buyer")
    as_creator, as_buyer = _session(creator), _session(buyer)
    assert _top_up(as_creator, live, 5000, "c-1").status_code == 201
    # When they ask to cash out bought credits: refused, nothing set aside
    refused = as_creator.post(f"{live}/api/v1/payouts", json={"amount": 1000}, timeout=30)
    body = _assert_error_shape(refused, 400, "above_balance")
    assert "earned" in body["message"]
    assert body["details"]["withdrawable"] == 0
    # Given they then sell a model for 2000 (fee 10%: 1800 earned)
    model = model_create(owner=creator, name="Sold lora", kind="lora")
    version = make_version(
        model=model,
        upload=complete_upload(user=creator, data=lora_bytes(seed=3)),
        license_code="mit",
    )
    listed = as_creator.post(
        f"{live}/api/v1/listings", json={"model_version_id": version.pk, "price": 2000}, timeout=30
    )
    assert listed.status_code == 201, listed.text
    assert _top_up(as_buyer, live, 2000, "b-1").status_code == 201
    bought = as_buyer.post(
        f"{live}/api/v1/purchases",
        json={"listing_id": listed.json()["id"]},
        headers={"Idempotency-Key": "p-1"},
        timeout=30,
    )
    assert bought.status_code == 201, bought.text
    wallet = as_creator.get(f"{live}/api/v1/wallet", timeout=30).json()
    assert (wallet["balance"], wallet["withdrawable"]) == (6800, 1800)
    # Then earned credits pay out, and no more than were earned
    paid = as_creator.post(f"{live}/api/v1/payouts", json={"amount": 1500}, timeout=30)
    assert paid.status_code == 201, paid.text
    again = as_creator.post(f"{live}/api/v1/payouts", json={"amount": 1000}, timeout=30)
    assert _assert_error_shape(again, 400, "above_balance")["details"]["withdrawable"] == 300
    wallet = as_creator.get(f"{live}/api/v1/wallet", timeout=30).json()
    assert (wallet["balance"], wallet["withdrawable"]) == (5300, 300)


# --- licences hold along the whole lineage -----------------------------------------------------


def _chain_over_non_commercial(depth: int) -> tuple[Any, Any]:
    """A cc-by-nc-4.0 base (its owner), ``depth`` unlicensed drafts of the attacker on top of
    it, one over the other; returns (attacker, the top draft)."""
    author, attacker = _user("author"), _user("attacker")
    base = make_version(
        model=model_create(owner=author, name="NC base", kind="checkpoint"),
        upload=complete_upload(user=author, data=lora_bytes(seed=1)),
        license_code="cc-by-nc-4.0",
    )
    upload = complete_upload(user=attacker, data=lora_bytes(seed=2))
    model = model_create(owner=attacker, name="Laundering", kind="lora")
    parent = base
    for i in range(depth):
        parent = make_version(
            model=model,
            upload=upload,
            name=f"draft {i}",
            publish=False,
            parents=[ParentSpec("finetune", version=parent)],
        )
    return attacker, parent


@pytest.mark.parametrize("depth", [21, 50])
def test_mit_derivative_over_a_deep_unlicensed_chain_is_refused(live: str, depth: int) -> None:
    # Given a non-commercial base under `depth` unlicensed drafts
    attacker, top = _chain_over_non_commercial(depth)
    session = _session(attacker)
    model = model_create(owner=attacker, name="Relicensed", kind="lora")
    mit = make_version(
        model=model,
        upload=complete_upload(user=attacker, data=lora_bytes(seed=4)),
        name="mit",
        publish=False,
        license_code="mit",
        parents=[ParentSpec("finetune", version=top)],
    )
    # When the attacker publishes an MIT derivative of the top draft: refused, naming the base
    response = session.post(f"{live}/api/v1/versions/{mit.pk}/publish", timeout=60)
    body = _assert_error_shape(response, 400, "license_conflict")
    assert "cc-by-nc-4.0" in body["message"]
    mit.refresh_from_db()
    assert mit.published_at is None
    # And selling an unlicensed derivative of it is refused too
    free = make_version(
        model=model,
        upload=complete_upload(user=attacker, data=lora_bytes(seed=5)),
        name="unlicensed",
        parents=[ParentSpec("finetune", version=top)],
    )
    listing = session.post(
        f"{live}/api/v1/listings", json={"model_version_id": free.pk, "price": 100}, timeout=60
    )
    body = _assert_error_shape(listing, 400, "license_conflict")
    assert body["details"]["clause"] == "commercial_use"


def test_a_lineage_cycle_is_refused_where_lineage_is_set(live: str) -> None:
    from core.errors import ApplicationError
    from registry.models import Lineage
    from registry.services.catalog import lineage_add

    # Given a -> b -> c (c derives from b, b from a)
    owner = _user("owner")
    upload = complete_upload(user=owner, data=lora_bytes(seed=6))
    model = model_create(owner=owner, name="Loop", kind="lora")
    a = make_version(model=model, upload=upload, name="a", publish=False)
    b = make_version(
        model=model,
        upload=upload,
        name="b",
        publish=False,
        parents=[ParentSpec("finetune", version=a)],
    )
    c = make_version(
        model=model,
        upload=upload,
        name="c",
        publish=False,
        parents=[ParentSpec("finetune", version=b)],
    )
    # When the owner makes a derive from c: refused (400) with a message naming the loop
    with pytest.raises(ApplicationError) as err:
        lineage_add(version=a, user=owner, parent=ParentSpec("finetune", version=c))
    assert err.value.status_code == 400
    assert err.value.code == "lineage_cycle"
    assert f"{c.pk}" in err.value.message and "cycle" in err.value.message
    assert not Lineage.objects.filter(child=a).exists()
    # And a cycle already in the table (written behind the service's back, over a
    # non-commercial base) neither hangs the walk nor hides the base's limits
    author = _user("author")
    base = make_version(
        model=model_create(owner=author, name="NC", kind="checkpoint"),
        upload=complete_upload(user=author, data=lora_bytes(seed=7)),
        license_code="cc-by-nc-4.0",
    )
    Lineage.objects.create(child=a, parent_version=c, relation="merge")
    Lineage.objects.create(child=b, parent_version=base, relation="merge")
    mit = make_version(
        model=model,
        upload=upload,
        name="mit",
        publish=False,
        license_code="mit",
        parents=[ParentSpec("finetune", version=c)],
    )
    response = _session(owner).post(f"{live}/api/v1/versions/{mit.pk}/publish", timeout=60)
    assert "cc-by-nc-4.0" in _assert_error_shape(response, 400, "license_conflict")["message"]


# --- royalties that cannot be honoured ---------------------------------------------------------


def test_listing_whose_lineage_royalties_exceed_the_price_is_refused(live: str) -> None:
    # Given three bases, each listed by its owner with a 5000 bps royalty
    bases = []
    for i in range(3):
        owner = _user(f"base{i}")
        version = make_version(
            model=model_create(owner=owner, name=f"Base {i}", kind="lora"),
            upload=complete_upload(user=owner, data=lora_bytes(seed=10 + i)),
            license_code="mit",
        )
        response = _session(owner).post(
            f"{live}/api/v1/listings",
            json={"model_version_id": version.pk, "price": 10, "royalty_bps": 5000},
            timeout=30,
        )
        assert response.status_code == 201, response.text
        bases.append(version)
    # When a derivative of all three is listed at 37
    seller = _user("merger")
    merge = make_version(
        model=model_create(owner=seller, name="Merge", kind="checkpoint"),
        upload=complete_upload(user=seller, data=lora_bytes(seed=20)),
        license_code="mit",
        parents=[ParentSpec("merge", version=v) for v in bases],
    )
    response = _session(seller).post(
        f"{live}/api/v1/listings", json={"model_version_id": merge.pk, "price": 37}, timeout=30
    )
    # Then it is refused with the numbers: the total asked, what the price leaves
    body = _assert_error_shape(response, 400, "royalties_exceed_price")
    assert "15000" in body["message"] and "37" in body["message"]
    assert body["details"]["royalty_bps_total"] == 15000
    assert body["details"]["royalty_bps_max"] == 9000
    assert body["details"]["price"] == 37
    from marketplace.models import Listing

    assert not Listing.objects.filter(model_version=merge).exists()
