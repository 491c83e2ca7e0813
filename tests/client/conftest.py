"""Fixtures for the ``atelier`` command's tests: a live site, a config folder, small files."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save as save_safetensors

from client.cli import main

PASSWORD = "correct horse battery staple"
CROSS_ATTN_K = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"


def lora_bytes(*, seed: int, rank: int = 4, alpha: float = 2.0) -> bytes:
    """A kohya LoRA for SD 1.x (a few KB): detected as a LoRA of that rank and alpha."""
    rng = np.random.default_rng(seed)
    tensors = {
        f"{CROSS_ATTN_K}.lora_down.weight": rng.standard_normal((rank, 768)).astype(np.float16),
        f"{CROSS_ATTN_K}.lora_up.weight": rng.standard_normal((320, rank)).astype(np.float16),
        f"{CROSS_ATTN_K}.alpha": np.array(alpha, dtype=np.float32),
    }
    return save_safetensors(tensors, metadata={"ss_network_alpha": str(alpha)})


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture(autouse=True)
def _fast_passwords(settings) -> None:  # type: ignore[no-untyped-def]
    """PBKDF2 costs most of a second per check on a small machine; these tests need no strength."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


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
