"""Schemathesis against the OpenAPI schema: every operation, as every role.

The schema is loaded from ``/api/schema/`` through the project's WSGI application, so any
operation added to the API is fuzzed here without a line changed. Each operation gets
``SECURITY_FUZZ_EXAMPLES`` generated cases (default 3) twice: with generated path
parameters, and with the ids of real objects (so that the handlers run past their 404s),
each sent as every role of :mod:`tests.security.world`; plus negative cases (input that
breaks the schema), which must get a 4xx. Checks: no 5xx, the status code, content type,
headers and body conform to the schema. ``make fuzz`` runs many more examples.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.security.world import ROLES, World

pytestmark = [pytest.mark.slow]

# The resumable upload's PATCH body is raw bytes (tus-style media type).
schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")

EXAMPLES = int(os.environ.get("SECURITY_FUZZ_EXAMPLES", "3"))
POSITIVE_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
NEGATIVE_CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


def real_path_parameters(world: World, names: set[str]) -> dict[str, Any]:
    """The ids of real objects for the path parameters an operation has."""
    known: dict[str, Any] = {
        "model_id": world.paid_version.model_id,
        "version_id": world.paid_version.pk,
        "file_id": world.paid_file.pk,
        "hash_value": world.paid_file.blob_id,
        "dataset_id": world.private_dataset_version.dataset_id,
        "dataset_version_id": world.private_dataset_version.pk,
        "listing_id": world.paid_listing.pk,
        "payout_id": world.payout.pk,
        "token_id": world.spare_token_ids["owner"],
        "upload_id": str(world.open_upload.pk),
        "username": world.users["owner"].get_username(),
    }
    return {name: known[name] for name in names if name in known}


def _describe(case: Any, role: str, error: BaseException) -> str:
    first_line = str(error).strip().splitlines()[:6]
    return f"{case.operation.label} as {role}: {case.path_parameters} {case.query} " + " | ".join(
        first_line
    )


def fuzz_operation(
    operation: Any, world: World, *, mode: GenerationMode, real_ids: bool, examples: int
) -> list[str]:
    """Run one operation's cases as every role; return the failures (never raises)."""
    failures: list[str] = []
    path_names = {p.name for p in operation.path_parameters}
    fixed = real_path_parameters(world, path_names) if real_ids else None
    if real_ids and not fixed:
        return failures
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=fixed or None)
    checks = POSITIVE_CHECKS if mode == GenerationMode.POSITIVE else NEGATIVE_CHECKS

    @hypothesis_settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        for role in ROLES:
            headers = world.headers(role)
            if case.headers:
                headers = {**case.headers, **headers}
            try:
                response = case.call(headers=headers)
            except Exception as exc:  # a crash inside the app: the worst failure
                failures.append(_describe(case, role, exc))
                continue
            try:
                case.validate_response(response, checks=checks, headers=headers)
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis: a FailureGroup
                failures.append(_describe(case, role, exc))

    try:
        run()
    except Unsatisfiable:  # negative mode: nothing but fixed path parameters to break
        pass
    return failures


def load_schema() -> Any:
    return schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())


def operations(schema: Any) -> list[Any]:
    found = []
    for result in schema.get_all_operations():
        found.append(result.ok())
    return found


def fuzz_all(world: World, examples: int) -> tuple[int, list[str]]:
    schema = load_schema()
    ops = operations(schema)
    failures: list[str] = []
    for operation in ops:
        for real_ids in (False, True):
            failures += fuzz_operation(
                operation,
                world,
                mode=GenerationMode.POSITIVE,
                real_ids=real_ids,
                examples=examples,
            )
        failures += fuzz_operation(
            operation,
            world,
            mode=GenerationMode.NEGATIVE,
            real_ids=True,
            examples=max(1, examples // 2),
        )
    return len(ops), failures


def test_every_operation_as_every_role_has_no_server_error_and_matches_the_schema(
    committed_world: World,
) -> None:
    world = committed_world
    # Given a site with every kind of object and a user for every role
    # When every operation of the schema is fuzzed as each role
    count, failures = fuzz_all(world, EXAMPLES)

    # Then there were operations to fuzz, and none failed a check
    assert count >= 40, f"only {count} operations in the schema"
    unique = sorted(set(failures))
    assert unique == [], f"{len(unique)} failures:\n" + "\n".join(unique[:60])


def test_the_fuzzer_catches_a_server_error(committed_world: World, settings: Any) -> None:
    world = committed_world
    # Given an operation whose view is made to crash (a URLconf with one broken route)
    from django.urls import path
    from rest_framework.permissions import AllowAny
    from rest_framework.response import Response
    from rest_framework.views import APIView

    class CrashApi(APIView):
        permission_classes = [AllowAny]

        def get(self, request: Any) -> Response:
            raise RuntimeError("boom")

    from drf_spectacular.views import SpectacularAPIView

    module = type(os)(f"crash_urls_{uuid.uuid4().hex}")
    module.urlpatterns = [  # type: ignore[attr-defined]
        path("api/schema/", SpectacularAPIView.as_view()),
        path("api/v1/crash", CrashApi.as_view()),
    ]
    import sys

    sys.modules[module.__name__] = module
    settings.ROOT_URLCONF = module.__name__
    settings.DEBUG_PROPAGATE_EXCEPTIONS = False

    # When it is fuzzed
    schema = load_schema()
    ops = operations(schema)
    failures = fuzz_operation(
        ops[0], world, mode=GenerationMode.POSITIVE, real_ids=False, examples=1
    )

    # Then the 500 is reported, for every role
    assert len(ops) == 1
    assert len(failures) == len(ROLES)
    assert all("Server error" in f or "500" in f for f in failures), failures
