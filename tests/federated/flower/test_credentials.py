"""The ServerApp's credentials file: private, the job's own, and never the run config."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from federated.engine.errors import ConfigError
from federated.engine.flower.credentials import (
    credentials_path,
    load_credentials,
    write_credentials,
)
from federated.engine.flower.settings import ServerSettings

A, B = "a" * 64, "b" * 64


def _write(out: Path) -> Path:
    return write_credentials(
        out,
        "job-7",
        progress_token="atp_x",
        job_token="atj_y",
        senders={"123": (4, [A]), "18446744073709551615": (5, [B, A])},
    )


def test_the_file_is_written_0600_and_read_back_with_the_sender_map(tmp_path: Path) -> None:
    old = os.umask(0o000)  # even with a permissive umask
    try:
        path = _write(tmp_path / "out")
    finally:
        os.umask(old)
    assert path == credentials_path(tmp_path / "out")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_credentials(tmp_path / "out", "job-7")
    assert (loaded.progress_token, loaded.job_token) == ("atp_x", "atj_y")
    assert loaded.senders == {"123": frozenset({A}), "18446744073709551615": frozenset({A, B})}
    assert loaded.site_nodes == {"123": 4, "18446744073709551615": 5}
    assert loaded.binds_senders


def test_a_file_others_can_read_or_of_another_job_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path)
    with pytest.raises(ConfigError, match="not the file of job"):
        load_credentials(tmp_path, "job-8")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        load_credentials(tmp_path, "job-7")
    path.chmod(0o600)
    path.write_text(json.dumps({"job-id": "job-7", "senders": ["not", "a", "map"]}))
    with pytest.raises(ConfigError, match="senders"):
        load_credentials(tmp_path, "job-7")


def test_no_file_means_no_credentials_and_replies_not_bound(tmp_path: Path) -> None:
    loaded = load_credentials(tmp_path, "job-7")
    assert (loaded.progress_token, loaded.job_token, loaded.binds_senders) == ("", "", False)


def test_a_run_config_carrying_a_token_is_refused(tmp_path: Path) -> None:
    config = {"out-dir": str(tmp_path), "base-model-path": str(tmp_path)}
    assert ServerSettings.from_run_config(config, run_id=1).progress_token == ""
    for key in ("progress-token", "job-token"):
        with pytest.raises(ConfigError, match="every node reads it"):
            ServerSettings.from_run_config({**config, key: "atp_leak"}, run_id=1)


def test_a_sender_owns_only_its_own_datasets_once_bound(tmp_path: Path) -> None:
    config = {"out-dir": str(tmp_path), "base-model-path": str(tmp_path)}
    unbound = ServerSettings.from_run_config(config, run_id=1)
    assert unbound.sender_owns("999", A)  # no map: nothing to bind to (node auth off)
    bound = ServerSettings(**{**unbound.__dict__, "senders": {"1": frozenset({A})}})
    assert bound.sender_owns("1", A)
    assert not bound.sender_owns("1", B)  # another owner's dataset
    assert not bound.sender_owns("2", A)  # a sender the site does not know
