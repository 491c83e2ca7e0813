"""The payment provider is a setting: a class path, the demo one (named), or none."""

from __future__ import annotations

import pytest

from marketplace.models import TopUp

pytestmark = pytest.mark.django_db


def _top_up(api_client, token_for, user, amount: int = 50):  # type: ignore[no-untyped-def]
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(user)}")
    return api_client.post(
        "/api/v1/wallet/top-ups", {"amount": amount}, format="json", HTTP_IDEMPOTENCY_KEY="k"
    )


def test_a_provider_class_named_by_its_path_is_used(api_client, token_for, alice, settings) -> None:
    settings.ATELIER_PAYMENT_PROVIDER = "marketplace.payments.DecliningProvider"
    response = _top_up(api_client, token_for, alice)
    assert response.status_code == 402
    assert response.json()["code"] == "payment_declined"
    assert not TopUp.objects.exists()


def test_a_provider_that_cannot_be_imported_is_503(api_client, token_for, alice, settings) -> None:
    settings.ATELIER_PAYMENT_PROVIDER = "payments.nowhere.Provider"
    response = _top_up(api_client, token_for, alice)
    assert response.status_code == 503
    assert response.json()["code"] == "payments_unavailable"


def test_none_refuses_top_ups_on_purpose(api_client, token_for, alice, settings) -> None:
    settings.ATELIER_PAYMENT_PROVIDER = "none"
    response = _top_up(api_client, token_for, alice)
    assert response.status_code == 503
    assert "no payment provider" in response.json()["message"]


def test_bad_input_is_still_400_before_the_provider_is_asked(
    api_client, token_for, alice, settings
) -> None:
    settings.ATELIER_PAYMENT_PROVIDER = ""
    response = _top_up(api_client, token_for, alice, amount=-1)
    assert response.status_code == 400


def test_wallet_page_says_top_ups_are_unavailable_next_to_the_field(
    client, alice, settings
) -> None:
    settings.ATELIER_PAYMENT_PROVIDER = ""
    client.force_login(alice)
    response = client.post("/wallet/", {"amount": "50", "idempotency_key": "k"})
    assert response.status_code == 400
    assert b"Top-ups are unavailable" in response.content
    assert not TopUp.objects.exists()
