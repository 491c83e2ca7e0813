"""Security fixtures: the world of tests.security.world, built once per test."""

from __future__ import annotations

from typing import Any

import pytest

from tests.security.world import World, build_world
from tests.support import load_license_catalogue

NO_LIMITS = {scope: "100000/min" for scope in ("api", "login", "downloads", "generation")}


@pytest.fixture
def no_rate_limits(settings: Any) -> None:
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": NO_LIMITS}


@pytest.fixture
def world(db: None, settings: Any, no_rate_limits: None) -> World:
    """Every role and object, in the test's transaction."""
    settings.ALLOWED_HOSTS = ["*"]
    load_license_catalogue()
    return build_world()


@pytest.fixture
def committed_world(
    restore_license_catalogue: None, transactional_db: None, settings: Any, no_rate_limits: None
) -> World:
    """The same, committed (for requests served by another thread or process)."""
    settings.ALLOWED_HOSTS = ["*"]
    load_license_catalogue()
    return build_world()
