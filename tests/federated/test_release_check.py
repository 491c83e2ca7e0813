"""The release check (issue #17): the similarity and the reproduction score (copies relative to
the base alone and to the node's other images) it is decided on, the node's settings, the
node's answer, and the site's end of a vetoed job (withheld: nothing published, the vetoing
dataset earns nothing, the job says how many nodes vetoed and never which image)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from federated import coordinator
from federated.engine.errors import ConfigError
from federated.engine.release_check import (
    COPY_MARGIN,
    DEFAULT_THRESHOLD,
    MIN_THRESHOLD,
    SAME_PICTURE,
    ReleaseVerdict,
    _pick_prompts,
    copy_margin,
    release_settings,
    reproduction,
    similarity,
    thumbnail,
    vetoes,
)
from federated.engine.superlink import RunStatus
from federated.engine.synthetic import generate_concept_dataset
from federated.models import FederatedJob, JobDataset, JobEvent
from federated.services.jobs import job_progress_record
from federated.services.release import job_withhold, run_release_withheld
from marketplace.selectors import wallet_balance

pytest_plugins = ["tests.federated.fixtures"]
State = FederatedJob.State


# --- the similarity ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> list[Image.Image]:
    folder = generate_concept_dataset(
        tmp_path_factory.mktemp("scenes"), n_images=6, seed=3, resolution=64
    )
    return [Image.open(p).convert("RGB") for p in sorted(folder.glob("*.png"))]


def _noise(seed: int, size: int = 64) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def test_an_identical_image_scores_one_and_its_resized_copy_nearly(
    scenes: list[Image.Image],
) -> None:
    scene = scenes[0]
    assert similarity(scene, scene.copy()) == pytest.approx(1.0)
    assert similarity(scene, scene.resize((512, 512), Image.Resampling.BICUBIC)) > 0.95
    # A PNG round trip and another mode (RGBA) change nothing
    assert similarity(scene, scene.convert("RGBA")) == pytest.approx(1.0)


def test_unrelated_images_score_low(scenes: list[Image.Image]) -> None:
    for scene in scenes:
        assert similarity(scene, _noise(1)) < 0.1
    assert similarity(_noise(1), _noise(2)) < 0.1
    # Two different scenes of the same concept are not one picture
    assert similarity(scenes[0], scenes[1]) < SAME_PICTURE


def test_similarity_is_deterministic_and_symmetric(scenes: list[Image.Image]) -> None:
    a, b = scenes[2], scenes[3]
    first = similarity(a, b)
    assert [similarity(a, b) for _ in range(3)] == [first] * 3
    assert similarity(b, a) == pytest.approx(first, abs=1e-12)
    assert np.array_equal(thumbnail(a), thumbnail(a.copy()))
    assert thumbnail(a).shape == (32, 32, 3)


def test_a_sample_that_copies_one_image_is_a_copy_and_its_image_is_found(
    scenes: list[Image.Image],
) -> None:
    private = [thumbnail(s) for s in scenes]
    noise = [thumbnail(_noise(seed)) for seed in (5, 6)]
    # sample 0 copies scene 4 where the base alone drew noise; sample 1 is noise
    found = reproduction([private[4], noise[1]], noise, private)
    assert (found.copies, found.samples, found.score, found.matched) == (1, 2, 0.5, 4)
    assert found.margins[0] > 0.5 and found.margins[1] < COPY_MARGIN
    # a duplicated file is the same picture, not "another image" that the sample is close to
    margin, nearest = copy_margin(private[4], noise[0], [*private, private[4].copy()])
    assert margin > 0.5 and nearest in (4, len(private))


def test_the_base_alone_never_copies_even_what_it_draws_well(scenes: list[Image.Image]) -> None:
    private = [thumbnail(s) for s in scenes]
    # the base alone draws a scene exactly (a picture the prompt alone gives): no LoRA made it
    drawn = [private[2], thumbnail(_noise(7))]
    found = reproduction(drawn, drawn, private)
    assert found.copies == 0 and found.score == 0.0 and found.best_margin <= 0.0
    with pytest.raises(ValueError):
        reproduction(drawn, drawn[:1], private)
    assert reproduction([], [], private).score == 0.0


def test_a_sample_equally_close_to_all_images_is_a_style_not_a_copy() -> None:
    # two private pictures, each half of the sample: the sample is as near one as the other
    left = np.zeros((32, 32, 3))
    left[:, :16] = 255.0
    right = np.zeros((32, 32, 3))
    right[:, 16:] = 255.0
    both = np.full((32, 32, 3), 255.0)
    margin, _ = copy_margin(both, np.zeros((32, 32, 3)), [left, right])
    assert abs(margin) < 1e-9


# --- the owner's settings and the node's answer -------------------------------------------------


def test_the_owner_threshold_has_a_default_and_a_floor() -> None:
    assert release_settings({}).threshold == DEFAULT_THRESHOLD == 0.25
    assert release_settings({"release-threshold": "0.6"}).threshold == 0.6
    assert release_settings({"release-threshold": MIN_THRESHOLD}).threshold == 0.0
    assert release_settings({"release-threshold": "1"}).threshold == 1.0
    assert release_settings({"release-samples": 3}).samples == 3
    for bad in ("1.01", "nan", "inf", "-0.1", str(MIN_THRESHOLD - 0.01)):
        with pytest.raises(ConfigError, match="between 0 and 1 .the share of release-check"):
            release_settings({"release-threshold": bad})
    with pytest.raises(ConfigError, match="must be a number: the share"):
        release_settings({"release-threshold": "strict"})
    with pytest.raises(ConfigError, match="release-samples must be 1 to"):
        release_settings({"release-samples": "0"})
    with pytest.raises(ConfigError, match="whole number"):
        release_settings({"release-samples": "many"})


def test_the_node_file_threshold_wins_and_is_read_at_each_check(tmp_path: Path) -> None:
    node_file = tmp_path / "node.json"
    node_file.write_text(json.dumps({"datasets": {}, "release-threshold": 0.5}))
    config = {"node-file": str(node_file), "release-threshold": "0.9"}
    assert release_settings(config).threshold == 0.5
    node_file.write_text(json.dumps({"datasets": {}, "release-threshold": 0.1}))
    assert release_settings(config).threshold == 0.1
    node_file.write_text(json.dumps({"datasets": {}, "release-threshold": 1.5}))
    with pytest.raises(ConfigError):
        release_settings(config)


def test_the_node_vetoes_when_the_share_of_copies_is_above_the_threshold() -> None:
    assert vetoes(0.375, DEFAULT_THRESHOLD) and not vetoes(0.25, DEFAULT_THRESHOLD)
    assert vetoes(0.125, 0.0) and not vetoes(0.0, 0.0)  # 0: any copy; no copy never vetoes
    assert not vetoes(1.0, 1.0)  # 1: never


def test_the_node_answers_only_a_verdict_and_a_reason_code() -> None:
    verdict = ReleaseVerdict("veto", "reproduced", 0.5, 4, 0.31, "cat.png", 0.25, 8, 1.0)
    assert verdict.reply() == {"verdict": "veto", "reason": "reproduced"}


def test_prompts_come_from_the_nodes_captions_chosen_per_job() -> None:
    captions = [f"caption {i}" for i in range(20)]
    first = _pick_prompts(captions, 5, "job-1")
    assert len(first) == 5 and set(first) <= set(captions)
    assert _pick_prompts(captions, 5, "job-1") == first
    assert _pick_prompts(captions, 5, "job-2") != first
    assert _pick_prompts(["a", "a", " ", "b"], 5, "job-1") == ["a", "b"]


# --- the site: a vetoed job is withheld -----------------------------------------------------------


@pytest.fixture
def two_owners(fed: Any) -> dict[str, Any]:
    """A running 2-round job: owner1's 10 examples at 3 credits per example and round,
    owner2's 20 at 2 (140 for owners at most, 14 fee, 154 held); both trained both rounds."""
    trainer = fed.user("trainer", credits=1_000)
    base = fed.base_version(fed.user("creator"))
    owner1, owner2 = fed.user("owner1"), fed.user("owner2")
    d1 = fed.dataset(owner1, count=10, price_per_example_round=3)
    d2 = fed.dataset(owner2, count=20, price_per_example_round=2)
    job, _ = fed.running(trainer, fed.spec(base, [d1, d2], rounds=2))
    h1, h2 = d1.dataset_version.manifest_hash, d2.dataset_version.manifest_hash
    for index in (1, 2):
        job_progress_record(
            job=job, payload=fed.report(job, index, {"1": (h1, 10, 1.0), "2": (h2, 20, 1.0)})
        )
    return {"job": job, "trainer": trainer, "owner1": owner1, "owner2": owner2, "h1": h1, "h2": h2}


def _withheld_out(tmp_path: Path, job: FederatedJob, vetoed: list[str]) -> Path:
    """The job's out-dir as the ServerApp leaves it after a veto (no lora/ folder)."""
    out = Path(job.out_dir) if job.out_dir else tmp_path / f"out-{job.pk}"
    out.mkdir(parents=True, exist_ok=True)
    check = {
        "asked": 2,
        "allowed": 2 - len(vetoed),
        "vetoed": len(vetoed),
        "no-answer": 0,
        "vetoed-datasets": vetoed,
        "seconds": 3.2,
    }
    (out / "metrics.json").write_text(
        json.dumps({"job-id": job.flower_job_id, "status": "withheld", "release-check": check})
    )
    return out


@pytest.mark.django_db
def test_a_vetoed_run_ends_withheld_unpublished_and_the_vetoing_dataset_earns_nothing(
    two_owners: Any, tmp_path: Path
) -> None:
    w = two_owners
    job = w["job"]
    out = _withheld_out(tmp_path, job, [w["h2"]])
    # When the coordinator finds the run finished and its metrics withheld
    coordinator._finish_run(job, RunStatus(run_id=job.run_id, status="finished:completed"))
    job.refresh_from_db()
    assert job.state == State.WITHHELD and job.is_terminal
    assert job.result_version is None
    assert job.release_check == {"asked": 2, "allowed": 1, "vetoed": 1, "no_answer": 0}
    # owner1 is paid 3 x 10 x 2; owner2 vetoed and forfeits 2 x 20 x 2; fee 10 % of 60
    assert (wallet_balance(user=w["owner1"]), wallet_balance(user=w["owner2"])) == (60, 0)
    assert (job.owners_paid, job.fee_paid, job.refunded) == (60, 6, 154 - 66)
    assert wallet_balance(user=w["trainer"]) == 1_000 - 66
    vetoed = dict(JobDataset.objects.filter(job=job).values_list("manifest_hash", "release_vetoed"))
    assert vetoed == {w["h1"]: False, w["h2"]: True}
    assert "Release withheld: 1 of 2" in job.failure_reason
    # Withholding again (a redelivered task) pays nothing twice
    again = job_withhold(job=job, out_dir=out, report={"vetoed-datasets": [w["h1"]]})
    assert (again.owners_paid, again.state) == (60, State.WITHHELD)
    assert not JobDataset.objects.get(job=job, manifest_hash=w["h1"]).release_vetoed


@pytest.mark.django_db
def test_a_job_that_never_ran_can_be_neither_withheld_nor_published(
    fed: Any, tmp_path: Path
) -> None:
    from core.errors import ConflictError
    from federated.services.jobs import job_complete, job_create

    trainer = fed.user("trainer", credits=1_000)
    base = fed.base_version(fed.user("creator"))
    draft = job_create(trainer=trainer, spec=fed.spec(base, [fed.dataset(fed.user("o"))]))
    for finish in (job_withhold, job_complete):
        kwargs: dict[str, Any] = {"job": draft, "out_dir": tmp_path}
        if finish is job_withhold:
            kwargs["report"] = {"vetoed-datasets": []}
        with pytest.raises(ConflictError) as refused:
            finish(**kwargs)
        assert refused.value.code == "bad_state"
    draft.refresh_from_db()
    assert draft.state == State.DRAFT and draft.release_check in (None, {})
    assert wallet_balance(user=trainer) == 1_000


@pytest.mark.django_db
def test_a_hostile_report_cannot_make_another_jobs_dataset_forfeit_or_break_the_counts(
    two_owners: Any, tmp_path: Path
) -> None:
    job = two_owners["job"]
    report = {"vetoed-datasets": ["not-a-hash", "f" * 64], "asked": float("inf"), "vetoed": -3}
    job = job_withhold(job=job, out_dir=tmp_path, report=report)
    assert job.state == State.WITHHELD
    assert not JobDataset.objects.filter(job=job, release_vetoed=True).exists()
    assert job.release_check == {"asked": 0, "allowed": 0, "vetoed": 1, "no_answer": 0}


@pytest.mark.django_db
def test_a_completed_runs_metrics_are_not_withheld(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "completed"}))
    assert run_release_withheld(tmp_path) is None
    assert run_release_withheld(tmp_path / "missing") is None
    (tmp_path / "metrics.json").write_text("not json")
    assert run_release_withheld(tmp_path) is None


@pytest.mark.django_db
def test_the_withheld_report_logs_counts_only(two_owners: Any) -> None:
    job = two_owners["job"]
    job_progress_record(
        job=job,
        payload={
            "job-id": job.flower_job_id,
            "status": "withheld",
            "release-check": {"asked": 2, "vetoed": 1, "vetoed-datasets": [two_owners["h2"]]},
        },
    )
    event = JobEvent.objects.filter(job=job, kind="server_withheld").get()
    assert event.message.startswith("The release check: 1 of 2 nodes vetoed the release")
    assert two_owners["h2"][:12] not in event.message


@pytest.mark.django_db
def test_the_job_page_and_api_say_a_node_vetoed_without_naming_an_image_or_a_score(
    client: Any, two_owners: Any, tmp_path: Path
) -> None:
    w = two_owners
    job = w["job"]
    _withheld_out(tmp_path, job, [w["h2"]])
    coordinator._finish_run(job, RunStatus(run_id=job.run_id, status="finished:completed"))
    client.force_login(w["trainer"])
    page = client.get(f"/train/jobs/{job.pk}/").content.decode()
    assert "Withheld (a data owner vetoed the release)" in page
    assert "1 of 2 data owners' nodes vetoed the release" in page
    assert "No LoRA was published" in page
    assert "score" not in page.lower() and ".png" not in page
    body = client.get(f"/api/v1/federated/jobs/{job.pk}").json()
    assert body["state"] == "withheld" and body["result_version_id"] is None
    assert body["release_check"] == {"asked": 2, "allowed": 1, "vetoed": 1, "no_answer": 0}
    # The owner whose node vetoed sees the same counts, and nothing more
    client.force_login(w["owner2"])
    assert (
        "1 of 2 data owners' nodes vetoed" in client.get(f"/train/jobs/{job.pk}/").content.decode()
    )


# --- the owner's CLI ----------------------------------------------------------------------------


def test_atelier_node_start_passes_the_owners_threshold_and_refuses_one_below_the_floor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from client.cli import main
    from federated.engine.synthetic import generate_synthetic_dataset

    node = tmp_path / "node"
    assert main(["node", "init", "--node-dir", str(node)]) == 0
    data = generate_synthetic_dataset(tmp_path / "data", n_images=2, seed=1)
    args = ["node", "add-dataset", str(data), "--epsilon", "4", "--delta", "1e-5"]
    assert main([*args, "--node-dir", str(node)]) in (0, 1)
    capsys.readouterr()
    start = ["node", "start", "--superlink", "127.0.0.1:9999", "--insecure", "--dry-run"]
    assert main([*start, "--node-dir", str(node), "--release-threshold", "0.7"]) == 0
    assert 'release-threshold="0.7"' in capsys.readouterr().out
    assert main([*start, "--node-dir", str(node)]) == 0
    assert "release-threshold" not in capsys.readouterr().out  # the default (0.25) on the node
    for bad in ("-0.1", "1.5", "nan"):
        assert main([*start, "--node-dir", str(node), "--release-threshold", bad]) == 2
        assert "--release-threshold must be between 0 and 1" in capsys.readouterr().err
