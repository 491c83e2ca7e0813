"""The demo app holds the demo's own command, apart from the apps it fills."""

from __future__ import annotations

from django.core.management import get_commands


def test_demo_seed_is_a_command_of_the_demo_app() -> None:
    # When Django lists the management commands of the installed apps
    commands = get_commands()

    # Then demo_seed comes from the demo app (not federated, which it no longer lives in)
    assert commands["demo_seed"] == "demo"
