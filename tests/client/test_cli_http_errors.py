"""How the HTTP client turns the site's error answers into typed errors (no site needed)."""

from __future__ import annotations

import pytest
import responses

from client.http import (
    AtelierClient,
    AuthenticationError,
    ConflictError,
    EntitlementRequiredError,
    ModelNotFoundError,
    NotLoggedInError,
    PermissionDeniedError,
)

SITE = "https://atelier.test"


def error(status: int, code: str, message: str, **details: object) -> dict[str, object]:
    return {"status": status, "json": {"code": code, "message": message, "details": details}}


@responses.activate
def test_a_purchase_required_answer_is_an_entitlement_error_with_the_servers_message() -> None:
    responses.get(
        f"{SITE}/api/v1/files/1/download",
        **error(403, "purchase_required", "This costs 50 credits; buy it to download."),
    )
    with pytest.raises(EntitlementRequiredError) as caught:
        AtelierClient(SITE, "atl_x").request("GET", "/api/v1/files/1/download")
    assert caught.value.message == "This costs 50 credits; buy it to download."


@responses.activate
def test_other_403_answers_are_permission_errors() -> None:
    responses.post(
        f"{SITE}/api/v1/versions/3/publish", **error(403, "forbidden", "Only the owner.")
    )
    with pytest.raises(PermissionDeniedError):
        AtelierClient(SITE, "atl_x").version_publish(3)


@responses.activate
def test_a_missing_model_is_a_model_not_found_error() -> None:
    responses.get(f"{SITE}/api/v1/models/7", **error(404, "not_found", "No such model."))
    with pytest.raises(ModelNotFoundError, match="No such model."):
        AtelierClient(SITE).model_get(7)


@responses.activate
def test_a_revoked_token_is_an_authentication_error() -> None:
    responses.get(
        f"{SITE}/api/v1/auth/whoami",
        status=401,
        json={"code": "authentication_failed", "message": "Invalid or revoked API token."},
    )
    with pytest.raises(AuthenticationError, match="revoked"):
        AtelierClient(SITE, "atl_old").whoami()


def test_whoami_without_a_token_asks_to_log_in() -> None:
    with pytest.raises(NotLoggedInError):
        AtelierClient(SITE).whoami()


@responses.activate
def test_an_offset_conflict_carries_the_servers_offset() -> None:
    responses.patch(
        f"{SITE}/api/v1/uploads/u1",
        **error(409, "offset_mismatch", "Offset mismatch.", offset=4096),
    )
    with pytest.raises(ConflictError) as caught:
        AtelierClient(SITE, "atl_x").upload_append("u1", offset=0, data=b"x")
    assert caught.value.details == {"offset": 4096}


@responses.activate
def test_a_non_json_error_page_names_the_status_and_the_url() -> None:
    responses.get(f"{SITE}/api/v1/models/1", status=502, body="<html>Bad gateway</html>")
    with pytest.raises(Exception) as caught:
        AtelierClient(SITE).model_get(1)
    assert str(caught.value) == (
        f"The server answered 502 Bad Gateway to GET {SITE}/api/v1/models/1."
    )
