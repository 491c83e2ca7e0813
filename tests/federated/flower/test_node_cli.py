"""``atelier node``: bad arguments and bad folders give a clear message and a non-zero exit."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from client.cli import main
from federated.engine.synthetic import generate_synthetic_dataset


def test_init_writes_a_private_key_only_the_owner_can_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["node", "init", "--node-dir", str(tmp_path / "node")]) == 0
    assert capsys.readouterr().out.startswith("ecdsa-sha2-nistp256 ")
    key = tmp_path / "node" / "node.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # flower-supernode --auth-supernode-private-key reads it this way
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key

    loaded = load_ssh_private_key(key.read_bytes(), password=None)
    assert isinstance(loaded, ec.EllipticCurvePrivateKey) and loaded.curve.name == "secp256r1"


def test_add_dataset_with_a_missing_path_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "node",
            "add-dataset",
            str(tmp_path / "nowhere"),
            "--epsilon",
            "4",
            "--delta",
            "1e-5",
            "--node-dir",
            str(tmp_path),
        ]
    )
    assert code == 1 and "does not exist" in capsys.readouterr().err


def test_add_dataset_with_an_empty_folder_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    code = main(
        [
            "node",
            "add-dataset",
            str(tmp_path / "empty"),
            "--epsilon",
            "4",
            "--delta",
            "1e-5",
            "--node-dir",
            str(tmp_path),
        ]
    )
    assert code == 1 and "no usable image" in capsys.readouterr().err


@pytest.mark.parametrize("epsilon", ["0", "-1"])
def test_add_dataset_refuses_a_non_positive_epsilon(
    tmp_path: Path, epsilon: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "node",
            "add-dataset",
            str(tmp_path),
            f"--epsilon={epsilon}",
            "--delta",
            "1e-5",
            "--node-dir",
            str(tmp_path),
        ]
    )
    assert code == 2 and "--epsilon must be positive" in capsys.readouterr().err


def test_add_dataset_prints_the_manifest_and_records_the_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = generate_synthetic_dataset(tmp_path / "data", n_images=4, seed=1, resolution=32)
    node = tmp_path / "node"
    assert (
        main(
            [
                "node",
                "add-dataset",
                str(data),
                "--epsilon",
                "4",
                "--delta",
                "1e-5",
                "--resolution",
                "32",
                "--node-dir",
                str(node),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert (
        '"schema":"atelier.dataset-manifest/1"' in out
        and "sks" not in out.split("Dataset report")[0]
    )
    assert main(["node", "status", "--node-dir", str(node)]) == 0
    assert "budget: epsilon 4" in capsys.readouterr().out


def test_start_without_init_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "node",
            "start",
            "--superlink",
            "127.0.0.1:9999",
            "--base-model",
            str(tmp_path),
            "--insecure",
            "--node-dir",
            str(tmp_path / "node"),
        ]
    )
    assert code == 1 and "atelier node init" in capsys.readouterr().err


def test_start_with_a_bad_superlink_address_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node = tmp_path / "node"
    data = generate_synthetic_dataset(tmp_path / "data", n_images=2, seed=1, resolution=32)
    assert main(["node", "init", "--node-dir", str(node)]) == 0
    assert main(
        [
            "node",
            "add-dataset",
            str(data),
            "--epsilon",
            "4",
            "--delta",
            "1e-5",
            "--node-dir",
            str(node),
        ]
    ) in (0, 1)
    capsys.readouterr()
    code = main(
        [
            "node",
            "start",
            "--superlink",
            "nowhere",
            "--base-model",
            str(tmp_path),
            "--insecure",
            "--node-dir",
            str(node),
            "--dry-run",
        ]
    )
    assert code == 2 and "HOST:PORT" in capsys.readouterr().err


@pytest.fixture
def node_with_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    node = tmp_path / "node"
    assert main(["node", "init", "--node-dir", str(node)]) == 0
    for seed in (1, 2):
        data = generate_synthetic_dataset(tmp_path / f"data-{seed}", n_images=2, seed=seed)
        args = ["node", "add-dataset", str(data), "--epsilon", "4", "--delta", "1e-5"]
        assert main([*args, "--node-dir", str(node)]) in (0, 1)
    capsys.readouterr()
    return node


def test_start_serves_every_dataset_through_the_node_file_and_fetches_the_model_per_job(
    node_with_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["node", "start", "--superlink", "127.0.0.1:9999", "--insecure", "--dry-run"]
    assert main([*args, "--node-dir", str(node_with_data)]) == 0
    command = capsys.readouterr().out
    assert f'node-file="{node_with_data / "node.json"}"' in command
    assert "base-model-path" not in command and "dataset-path" not in command


def test_a_registered_node_fetches_job_models_with_its_own_token(
    node_with_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["node", "start", "--superlink", "127.0.0.1:9999", "--insecure", "--dry-run"]
    assert main([*args, "--node-dir", str(node_with_data)]) == 0
    assert "registration-file" not in capsys.readouterr().out  # not registered: no token
    registration = node_with_data / "registration.json"
    registration.write_text('{"site": "http://site.test", "id": 3, "token": "atn_secret"}')
    assert main([*args, "--node-dir", str(node_with_data)]) == 0
    command = capsys.readouterr().out
    # The node config names the file (the token itself never goes on the command line)
    assert f'registration-file="{registration.resolve()}"' in command
    assert "atn_secret" not in command


def test_start_with_a_non_positive_heartbeat_interval_is_a_usage_error(
    node_with_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["node", "start", "--superlink", "127.0.0.1:9999", "--insecure"]
    code = main([*args, "--heartbeat-seconds", "0", "--node-dir", str(node_with_data)])
    assert code == 2 and "--heartbeat-seconds must be positive" in capsys.readouterr().err
