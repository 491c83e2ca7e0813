"""Every API error has one shape: {"code", "message", "details"}."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def test_a_404_has_the_error_shape(db) -> None:
    response = APIClient().get("/api/v1/models/999999")

    assert response.status_code == 404
    body = response.json()
    assert set(body) == {"code", "message", "details"}
    assert body["code"] == "not_found"
    assert body["message"]


def test_a_validation_error_has_the_error_shape_with_field_details(make_user, token_for) -> None:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(make_user('alice'))}")

    response = api.post("/api/v1/models", {"kind": "lora"}, format="json")

    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"code", "message", "details"}
    assert body["code"] == "invalid"
    assert body["message"].startswith("name:")
    assert "name" in body["details"]


def test_malformed_json_has_the_error_shape(make_user, token_for) -> None:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(make_user('alice'))}")

    response = api.post("/api/v1/models", data=b"{not json", content_type="application/json")

    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"
    assert set(response.json()) == {"code", "message", "details"}


def test_a_wrong_method_has_the_error_shape(make_user, token_for) -> None:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(make_user('alice'))}")

    response = api.put("/api/v1/models", {}, format="json")

    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
    assert set(response.json()) == {"code", "message", "details"}
