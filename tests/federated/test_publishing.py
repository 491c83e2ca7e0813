"""Publishing a finished job: the engine's exported LoRA becomes a registry LoRA version of the
trainer's, with lineage, trigger word, sample images and a license its ancestors allow; once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from safetensors import safe_open

from federated.models import FederatedJob, JobEvent
from federated.services.jobs import job_complete, job_progress_record
from federated.services.publishing import LICENSE_CONFLICT_NOTE, run_metrics_read
from marketplace.models import LedgerTransaction
from marketplace.selectors import wallet_balance
from registry.models import (
    DatasetVersion,
    Lineage,
    Model,
    ModelFile,
    ModelVersion,
    SampleImage,
    VersionStatus,
    Visibility,
)
from registry.services.blobs import blob_open

pytest_plugins = ["tests.federated.fixtures"]
pytestmark = pytest.mark.usefixtures("ledger_checked", "fast_passwords")
State = FederatedJob.State


@pytest.fixture
def finished(fed: Any) -> Any:
    """Make a 2-round job on two datasets where only the first dataset's node trained."""

    def make(
        *, base_license: str = "creativeml-openrail-m", commercial_use: bool = False, **terms: Any
    ) -> tuple[Any, Any, Any]:
        trainer = fed.user("trainer", credits=1_000)
        base = fed.base_version(fed.user("creator"), license_code=base_license)
        d1 = fed.dataset(fed.user("owner1"), count=10, commercial_use=True, **terms)
        d2 = fed.dataset(fed.user("owner2"), count=20, commercial_use=True, **terms)
        job, _ = fed.running(
            trainer, fed.spec(base, [d1, d2], commercial_use=commercial_use, name="Red circles")
        )
        h1 = d1.dataset_version.manifest_hash
        for index in (1, 2):
            job_progress_record(job=job, payload=fed.report(job, index, {"7": (h1, 10, 2.0)}))
        return job, d1, d2

    return make


def test_complete_publishes_the_lora_with_lineage_trigger_word_and_samples(
    finished: Any, server_out: Any
) -> None:
    job, d1, d2 = finished()
    out = server_out(job)
    job = job_complete(job=job, out_dir=out)
    # Then a published LoRA model of the trainer's holds the engine's two files
    version = job.result_version
    assert job.state == State.COMPLETED
    assert version.status == VersionStatus.PUBLISHED
    assert (version.model.owner, version.model.kind, version.model.name) == (
        job.trainer,
        "lora",
        "Red circles",
    )
    assert version.model.visibility == Visibility.PUBLIC
    files = {f.path: f for f in ModelFile.objects.filter(version=version).select_related("blob")}
    primary = files[f"{version.model.slug}.safetensors"]
    assert primary.is_primary and primary.detected_kind == "lora"
    assert primary.architecture == "sd1" and primary.lora_rank == 2
    assert "diffusers/pytorch_lora_weights.safetensors" in files
    exported = (out / "lora" / "lora.safetensors").read_bytes()
    with blob_open(primary.blob) as fh:
        assert fh.read() == exported
    with safe_open(str(out / "lora" / "lora.safetensors"), "pt") as lora:
        dim = lora.metadata()["ss_network_dim"]
    assert str(primary.header_metadata["kohya"]["network_dim"]) == dim == "2"
    # With its lineage: the base (adapter of) and only the dataset that contributed
    links = {
        (link.relation, link.parent_version_id, link.parent_dataset_id)
        for link in Lineage.objects.filter(child=version)
    }
    assert links == {
        ("adapter", job.base_version_id, None),
        ("trained_on", None, d1.dataset_version_id),
    }
    # Trigger word, the base family, the last round's sample grid
    assert version.trigger_words == ["sks"]
    assert version.base_model == "sd1"
    samples = list(SampleImage.objects.filter(version=version))
    assert len(samples) == 1
    assert samples[0].prompt == "a photo of sks red circle"
    assert samples[0].parameters == {"job": job.pk, "round": 2, "seed": 0}
    # No commercial use was asked: the most permissive non-commercial license
    assert version.license_code == "cc-by-nc-4.0"
    assert JobEvent.objects.filter(job=job, kind="published").exists()


def test_a_commercial_job_keeps_the_bases_license(finished: Any, server_out: Any) -> None:
    job, _, _ = finished(commercial_use=True)
    job = job_complete(job=job, out_dir=server_out(job))
    assert job.result_version.license_code == "creativeml-openrail-m"
    assert job.result_version.is_published


def test_complete_twice_publishes_once_and_pays_once(finished: Any, server_out: Any) -> None:
    job, _, _ = finished()
    out = server_out(job)
    first = job_complete(job=job, out_dir=out)
    balances = (wallet_balance(user=job.trainer), LedgerTransaction.objects.count())
    again = job_complete(job=job, out_dir=out)
    assert again.result_version_id == first.result_version_id
    assert Model.objects.filter(owner=job.trainer, kind="lora").count() == 1
    assert ModelVersion.objects.filter(model__owner=job.trainer).count() == 1
    assert LedgerTransaction.objects.filter(kind="escrow_settle").count() == 1
    assert (wallet_balance(user=job.trainer), LedgerTransaction.objects.count()) == balances


def test_a_share_alike_base_without_commercial_terms_is_kept_private_and_says_why(
    finished: Any, server_out: Any
) -> None:
    job, _, _ = finished(base_license="cc-by-sa-4.0")
    job = job_complete(job=job, out_dir=server_out(job))
    version = job.result_version
    assert job.state == State.COMPLETED  # the run succeeded; owners are paid
    assert job.owners_paid == 20
    assert version.status == VersionStatus.DRAFT
    assert version.model.visibility == Visibility.PRIVATE
    assert LICENSE_CONFLICT_NOTE in job.publish_note and "cc-by-sa-4.0" in job.publish_note
    assert JobEvent.objects.filter(job=job, kind="kept_private").exists()


def test_when_the_lineage_check_refuses_the_model_is_kept_private(
    finished: Any, server_out: Any
) -> None:
    job, d1, _ = finished()
    DatasetVersion.objects.filter(pk=d1.dataset_version_id).update(license_code="custom")
    job = job_complete(job=job, out_dir=server_out(job))
    assert job.result_version.status == VersionStatus.DRAFT
    assert job.result_version.model.visibility == Visibility.PRIVATE
    assert "forbids derivatives" in job.publish_note


def test_output_that_cannot_be_published_fails_the_job_and_pays_what_was_earned(
    finished: Any, server_out: Any
) -> None:
    job, _, _ = finished()
    out = server_out(job)
    for path in (out / "lora").rglob("*.safetensors"):
        path.unlink()
    job = job_complete(job=job, out_dir=out)
    assert job.state == State.FAILED
    assert "exported no LoRA file" in job.failure_reason
    assert job.result_version is None
    assert not Model.objects.filter(kind="lora").exists()
    assert job.owners_paid == 20  # owner1's 10 examples x 2 rounds x 1 credit


def test_a_failed_runs_metrics_are_not_published(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text('{"status": "failed", "reason": "no nodes"}')
    from federated.services.publishing import PublishError

    with pytest.raises(PublishError) as err:
        run_metrics_read(tmp_path)
    assert "no nodes" in err.value.message
    (tmp_path / "metrics.json").write_text("[1, 2")
    with pytest.raises(PublishError):
        run_metrics_read(tmp_path)
