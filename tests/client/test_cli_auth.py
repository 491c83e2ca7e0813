"""``atelier login`` and ``atelier whoami`` against a live site, and argument errors."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.client.conftest import PASSWORD, Result

# Tests that talk to the live site need committed data (a transactional database).
live = pytest.mark.django_db(transaction=True)


@live
def test_login_with_password_stores_a_working_token_readable_only_by_the_user(
    cli: Callable[..., Result], site: str, alice: object, config_file: Path
) -> None:
    # when alice logs in with her password on standard input
    result = cli(
        "login", "--site", site, "--username", "alice", "--password-stdin", stdin=PASSWORD + "\n"
    )
    # then the token is stored, private, and the site accepts it
    assert result.code == 0, result.err
    config = json.loads(config_file.read_text())
    assert config["site"] == site and config["username"] == "alice"
    assert config["token"].startswith("atl_")
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    assert cli("whoami").out.strip() == f"alice on {site}"


@live
def test_login_with_a_wrong_password_fails_with_the_servers_message(
    cli: Callable[..., Result], site: str, alice: object, config_file: Path
) -> None:
    result = cli(
        "login",
        "--site",
        site,
        "--username",
        "alice",
        "--password-stdin",
        stdin="not the password\n",
    )
    assert result.code == 1
    assert result.err.strip() == "atelier: error: Wrong username or password."
    assert not config_file.exists()


@live
def test_login_with_a_token(
    cli: Callable[..., Result], site: str, alice: object, token_for: Callable[[object], str]
) -> None:
    result = cli("login", "--site", site, "--token", token_for(alice))
    assert result.code == 0, result.err
    assert "as alice" in result.err


@live
def test_login_with_a_bad_token_is_refused(
    cli: Callable[..., Result], site: str, config_file: Path
) -> None:
    result = cli("login", "--site", site, "--token", "atl_nonsense")
    assert result.code == 1
    assert "That token was refused" in result.err
    assert not config_file.exists()


@live
def test_login_without_a_terminal_or_password_stdin_explains_what_to_do(
    cli: Callable[..., Result], site: str
) -> None:
    result = cli("login", "--site", site, "--username", "alice")
    assert result.code == 1
    assert "pipe it with --password-stdin" in result.err


def test_whoami_when_not_logged_in(cli: Callable[..., Result]) -> None:
    result = cli("whoami")
    assert result.code == 1
    assert result.err.strip() == "atelier: error: Not logged in. Run `atelier login` first."


def test_unreachable_site_is_a_network_error_not_a_traceback(
    cli: Callable[..., Result],
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = cli(
        "login",
        "--site",
        f"http://127.0.0.1:{port}",
        "--username",
        "a",
        "--password-stdin",
        stdin="x\n",
    )
    assert result.code == 1
    assert "Cannot reach http://127.0.0.1:" in result.err
    assert "Traceback" not in result.err


def test_a_site_that_is_not_a_url_is_refused(cli: Callable[..., Result]) -> None:
    result = cli("login", "--site", "example.org", "--token", "t")
    assert result.code == 1
    assert "must start with http:// or https://" in result.err


def test_password_and_token_together_are_a_usage_error(cli: Callable[..., Result]) -> None:
    result = cli("login", "--password-stdin", "--token", "t")
    assert result.code == 2
    assert "not allowed with argument" in result.err


def test_no_command_prints_help_and_fails(cli: Callable[..., Result]) -> None:
    result = cli()
    assert result.code == 2
    assert "push" in result.err and "pull" in result.err


@live
def test_installed_console_script_talks_to_the_site(
    cli: Callable[..., Result], logged_in: str, config_file: Path
) -> None:
    # given the `atelier` script that `pip install -e .` puts next to the interpreter
    script = Path(sys.executable).parent / "atelier"
    assert script.exists(), "run `pip install -e .` (make install) to install the command"
    # when it runs as its own process with the stored token
    env = {**os.environ, "ATELIER_CONFIG": str(config_file)}
    done = subprocess.run(
        [str(script), "whoami"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    # then it answers from the site
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"alice on {logged_in}"


def test_installed_console_script_exits_non_zero_on_bad_arguments(config_file: Path) -> None:
    script = Path(sys.executable).parent / "atelier"
    env = {**os.environ, "ATELIER_CONFIG": str(config_file)}
    done = subprocess.run(
        [str(script), "push", "--kind", "spaceship"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "invalid choice: 'spaceship'" in done.stderr
    assert "Traceback" not in done.stderr
