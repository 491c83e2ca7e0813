"""Fixtures for the ``atelier`` command's tests: a live site, a config folder, small files."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from client.cli import main
from tests.registry.factories import lora_bytes

PASSWORD = "correct horse battery staple"


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture(autouse=True)
def _fast_passwords(fast_passwords: None) -> None:
    """Every test here: the suite's fast password hasher."""


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The command's config (and upload state) in a temporary folder, no ambient overrides."""
    path = tmp_path / "atelier-config" / "config.json"
    monkeypatch.setenv("ATELIER_CONFIG", str(path))
    monkeypatch.delenv("ATELIER_SITE", raising=False)
    monkeypatch.delenv("ATELIER_TOKEN", raising=False)
    return path


@pytest.fixture
def cli(
    config_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Result]:
    """Run ``atelier ARGS`` in-process; ``stdin`` feeds standard input."""

    def run(*args: str, stdin: str = "") -> Result:
        capsys.readouterr()
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = main(list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def site(live_server) -> str:  # type: ignore[no-untyped-def]
    return str(live_server.url)


@pytest.fixture
def alice(make_user: Callable[..., object]) -> object:
    return make_user("alice", password=PASSWORD)


@pytest.fixture
def logged_in(cli: Callable[..., Result], site: str, alice: object) -> Iterator[str]:
    result = cli(
        "login", "--site", site, "--username", "alice", "--password-stdin", stdin=PASSWORD + "\n"
    )
    assert result.code == 0, result.err
    yield site


@pytest.fixture
def lora_path(tmp_path: Path) -> Path:
    path = tmp_path / "work" / "ink-style.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(lora_bytes(seed=1, rank=8))
    return path
