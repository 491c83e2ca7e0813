"""A node and one job, without Flower: which dataset it trains on, which base model, readiness.

The datasets are registered the way owners do it (``atelier node add-dataset``, which writes
``node.json`` and the privacy budget); the base model comes from a loopback HTTP server that
checks the node's token (from its registration.json), as the site's base-model endpoint does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.cli import main
from federated.engine.dataset import read_dataset
from federated.engine.errors import (
    BudgetNotSetError,
    ConfigError,
    DatasetError,
    DatasetNotInJobError,
    FetchError,
)
from federated.engine.flower.settings import ServerSettings, job_manifests, node_paths
from federated.engine.flower.task import prepare_node, resolve_base_model, select_dataset
from federated.engine.synthetic import generate_synthetic_dataset
from sdcore.tiny import TinyModelPaths
from tests.federated.engine.model_server import TOKEN, ModelServer, serve_model

RESOLUTION = 32


def _manifest(path: Path) -> str:
    return read_dataset(path).manifest().manifest_hash


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("owner-datasets")
    return {
        name: generate_synthetic_dataset(
            root / name, n_images=4, seed=seed, resolution=RESOLUTION
        ).resolve()
        for name, seed in (("a", 1), ("b", 2), ("c", 3))
    }


def _add(node_dir: Path, dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["node", "add-dataset", str(dataset), "--epsilon", "20", "--delta", "1e-3"]
    assert main([*args, "--resolution", str(RESOLUTION), "--node-dir", str(node_dir)]) == 0
    capsys.readouterr()


@pytest.fixture
def node_dir(tmp_path: Path, datasets: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> Path:
    """A node serving datasets a and b (node.json written by ``atelier node add-dataset``)."""
    for name in ("a", "b"):
        _add(tmp_path / "node", datasets[name], capsys)
    return tmp_path / "node"


def _node_config(node_dir: Path, *, token: str = TOKEN, **extra: str) -> dict[str, object]:
    """The node's config; its own site token in ``registration.json``, as ``atelier node
    register`` keeps it (the site's stand-in accepts ``TOKEN``)."""
    registration = node_dir / "registration.json"
    registration.parent.mkdir(parents=True, exist_ok=True)
    registration.write_text(json.dumps({"site": "http://site.test", "id": 1, "token": token}))
    return {
        "node-file": str(node_dir / "node.json"),
        "registration-file": str(registration),
        "cache-dir": str(node_dir / "cache"),
        "ledger-path": str(node_dir / "ledger.db"),
        **extra,
    }


@pytest.fixture(scope="module")
def site(fed_model: TinyModelPaths) -> Iterator[ModelServer]:
    with serve_model(fed_model.single_file.read_bytes()) as server:
        yield server


def _job(site: ModelServer, *manifests: str, **extra: object) -> dict[str, object]:
    return {
        "base-model-url": site.url,
        "base-model-sha": hashlib.sha256(site.body).hexdigest(),
        "dataset-manifests": ",".join(manifests),
        "resolution": RESOLUTION,
        "job-id": "job-7",
        **extra,
    }


def test_the_node_picks_the_dataset_whose_manifest_the_job_lists(
    node_dir: Path, datasets: dict[str, Path]
) -> None:
    paths = node_paths(_node_config(node_dir))
    b = _manifest(datasets["b"])
    chosen = select_dataset(paths, {"dataset-manifests": f"{'0' * 64}, {b}"})
    assert chosen.path == datasets["b"] and chosen.manifest_hash == b
    assert chosen.key == str(datasets["b"])  # the ledger key add-dataset set the budget under


def test_a_node_with_no_listed_dataset_refuses_with_dataset_not_in_job(
    node_dir: Path, datasets: dict[str, Path]
) -> None:
    paths = node_paths(_node_config(node_dir))
    with pytest.raises(DatasetNotInJobError) as caught:
        select_dataset(paths, {"dataset-manifests": _manifest(datasets["c"])})
    assert caught.value.code == "dataset_not_in_job"
    assert "none of this node's 2 datasets is in the job" in caught.value.message


def test_a_job_listing_no_manifest_trains_on_a_nodes_only_dataset_and_refuses_to_guess_among_two(
    node_dir: Path, datasets: dict[str, Path]
) -> None:
    single = node_paths({"dataset-path": str(datasets["c"]), "cache-dir": "c", "ledger-path": "l"})
    assert select_dataset(single, {"dataset-manifests": ""}).path == datasets["c"]
    with pytest.raises(DatasetNotInJobError, match="serves 2 datasets"):
        select_dataset(node_paths(_node_config(node_dir)), {})


def test_a_single_dataset_path_is_matched_by_its_computed_manifest(
    datasets: dict[str, Path],
) -> None:
    paths = node_paths({"dataset-path": str(datasets["c"]), "cache-dir": "c", "ledger-path": "l"})
    c = _manifest(datasets["c"])
    assert select_dataset(paths, {"dataset-manifests": c}).manifest_hash == c


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"dataset-manifests": "abc"}, "must list SHA-256 hex digests"),
        ({"out-dir": "o"}, "needs 'base-model-url'"),
        ({"out-dir": "o", "base-model-url": "http://x/m"}, "needs 'base-model-sha'"),
        ({"out-dir": "o", "base-model-path": "m", "prepare-timeout": -1}, "prepare-timeout"),
    ],
)
def test_bad_job_settings_are_config_errors(config: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ServerSettings.from_run_config(config, run_id=1)


def test_node_config_needs_a_dataset_or_a_node_file() -> None:
    with pytest.raises(ConfigError, match=r"lacks dataset-path \(or node-file\)"):
        node_paths({"cache-dir": "c", "ledger-path": "l"})


def test_job_manifests_are_normalised_and_deduplicated() -> None:
    h = "AB" * 32
    assert job_manifests({"dataset-manifests": f" {h},{h.lower()} ,"}) == (h.lower(),)


def test_prepare_fetches_the_model_once_builds_the_cache_and_names_the_dataset(
    node_dir: Path, datasets: dict[str, Path], site: ModelServer
) -> None:
    b = _manifest(datasets["b"])
    before = len(site.requests)
    ready = prepare_node(run_config=_job(site, b), node_config=_node_config(node_dir))
    assert ready.manifest_hash == b and ready.model_source == "downloaded"
    sha = hashlib.sha256(site.body).hexdigest()
    assert (node_dir / "cache" / "models" / f"{sha}.safetensors").is_file()
    assert list((node_dir / "cache").glob("latents-*.safetensors"))
    assert len(site.requests) == before + 1
    assert site.requests[-1]["Authorization"] == f"Bearer {TOKEN}"

    again = prepare_node(run_config=_job(site, b), node_config=_node_config(node_dir))
    assert again.model_source == "cached" and len(site.requests) == before + 1


def test_a_local_copy_with_the_jobs_fingerprint_is_used_without_a_request(
    node_dir: Path, fed_model: TinyModelPaths, site: ModelServer
) -> None:
    before = len(site.requests)
    paths = node_paths(_node_config(node_dir, **{"base-model-path": str(fed_model.single_file)}))
    assert resolve_base_model(paths, _job(site)) == (fed_model.single_file, "local")
    other = node_paths(_node_config(node_dir, **{"base-model-path": str(fed_model.diffusers_dir)}))
    path, source = resolve_base_model(other, _job(site))  # a folder: another fingerprint
    assert source == "downloaded" and path.name.endswith(".safetensors")
    assert len(site.requests) == before + 1


def test_no_base_model_at_all_is_a_config_error(node_dir: Path) -> None:
    with pytest.raises(ConfigError, match="no base-model-url"):
        resolve_base_model(node_paths(_node_config(node_dir)), {})


def test_prepare_with_a_token_the_site_refuses_fails_clearly(
    node_dir: Path, datasets: dict[str, Path], site: ModelServer
) -> None:
    job = _job(site, _manifest(datasets["a"]))
    with pytest.raises(FetchError) as caught:
        prepare_node(run_config=job, node_config=_node_config(node_dir, token="atn_stolen"))
    assert caught.value.code == "model_fetch_unauthorized"


def test_a_dataset_that_changed_since_it_was_listed_is_refused(
    node_dir: Path, datasets: dict[str, Path], site: ModelServer
) -> None:
    data = json.loads((node_dir / "node.json").read_text())
    entry = data["datasets"][str(datasets["a"])]
    stale = "1" * 64
    entry["manifest-hash"] = stale  # what it was when listed
    (node_dir / "node.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError) as caught:
        prepare_node(run_config=_job(site, stale), node_config=_node_config(node_dir))
    assert caught.value.code == "dataset_changed"


def test_a_dataset_without_a_privacy_budget_is_not_ready(
    tmp_path: Path, datasets: dict[str, Path], site: ModelServer
) -> None:
    config = {
        **_node_config(tmp_path),
        "node-file": "",
        "dataset-path": str(datasets["c"]),
        "cache-dir": str(tmp_path / "cache"),
        "ledger-path": str(tmp_path / "ledger.db"),
    }
    with pytest.raises(BudgetNotSetError):
        prepare_node(run_config=_job(site, _manifest(datasets["c"])), node_config=config)
