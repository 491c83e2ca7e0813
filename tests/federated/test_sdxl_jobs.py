"""An SDXL base is a trainable base on the site: the wizard offers it, the launch checks pass.

The tiny SDXL single file (sdcore.tiny_xl) is uploaded and published as a creator does it;
the registry's inspection labels it SDXL from the file itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from federated.selectors import base_versions_for_training
from federated.services.jobs import job_estimate
from sdcore.tiny_xl import TINY_SDXL_SINGLE_FILE_NAME, save_tiny_sdxl_model

pytest_plugins = ["tests.federated.fixtures"]
pytestmark = pytest.mark.usefixtures("ledger_checked", "fast_passwords")


@pytest.fixture(scope="module")
def xl_single_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_sdxl_model(tmp_path_factory.mktemp("xl-site"), seed=0).single_file


def _publish_sdxl_base(owner: Any, path: Path) -> Any:
    from registry.services.catalog import FileSpec, model_create, version_create, version_publish
    from registry.services.uploads import upload_whole_file

    with open(path, "rb") as stream:
        upload = upload_whole_file(
            user=owner, filename=TINY_SDXL_SINGLE_FILE_NAME, stream=stream, size=path.stat().st_size
        )
    model = model_create(owner=owner, name="Tiny SDXL", kind="checkpoint")
    version = version_create(
        model=model,
        user=owner,
        name="single-file",
        files=[FileSpec(upload)],
        license_code="creativeml-openrail-m",
    )
    return version_publish(version=version, user=owner)


def test_an_sdxl_base_is_offered_and_passes_the_launch_checks(
    fed: Any, xl_single_file: Path
) -> None:
    # Given a published SDXL single-file checkpoint and two datasets whose terms allow SDXL
    trainer = fed.user("trainer", credits=10_000)
    base = _publish_sdxl_base(fed.user("creator"), xl_single_file)
    assert base.base_model == "sdxl"
    datasets = [
        fed.dataset(fed.user(f"owner{i}"), allowed_families=["sd1", "sdxl"]) for i in (1, 2)
    ]
    # Then the wizard lists it and the estimate finds nothing against it
    assert base in base_versions_for_training(user=trainer)
    estimate = job_estimate(trainer=trainer, spec=fed.spec(base, datasets))
    assert estimate.problems == []


def test_a_dataset_whose_terms_exclude_sdxl_is_still_refused(
    fed: Any, xl_single_file: Path
) -> None:
    trainer = fed.user("trainer", credits=10_000)
    base = _publish_sdxl_base(fed.user("creator"), xl_single_file)
    sd1_only = fed.dataset(fed.user("owner1"), allowed_families=["sd1"])
    estimate = job_estimate(trainer=trainer, spec=fed.spec(base, [sd1_only]))
    assert {p["code"] for p in estimate.problems} >= {"terms_forbid_family"}
    assert "family_not_trainable" not in {p["code"] for p in estimate.problems}
