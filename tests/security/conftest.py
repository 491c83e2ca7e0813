"""Security fixtures: the world of tests.security.world, built once per test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.security.world import World, build_world

NO_LIMITS = {scope: "100000/min" for scope in ("api", "login", "downloads", "generation")}


def load_license_catalogue() -> None:
    """The license catalogue is a data migration: a transactional test that ran before may
    have flushed it. Loading it is idempotent."""
    import importlib

    from django.apps import apps

    importlib.import_module("marketplace.migrations.0003_license_catalogue").load(apps, None)


@pytest.fixture
def restore_license_catalogue(django_db_blocker: Any) -> Iterator[None]:
    """A transactional test flushes every table; put the catalogue (data migration) back.

    Request it before ``transactional_db`` so that this runs after the flush.
    """
    yield
    with django_db_blocker.unblock():
        load_license_catalogue()


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
