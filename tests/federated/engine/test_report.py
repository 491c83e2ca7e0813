"""The owner's dataset report: trigger word, duplicates, small images, captions, tags."""

from __future__ import annotations

import shutil
from pathlib import Path

from PIL import Image

from federated.engine.dataset import read_dataset
from federated.engine.report import Severity, ahash, build_report, dhash, hamming
from federated.engine.synthetic import generate_synthetic_dataset


def _dataset(tmp_path: Path, n: int = 4) -> Path:
    return generate_synthetic_dataset(tmp_path / "d", n_images=n, seed=1, resolution=64)


def test_a_caption_without_the_trigger_word_is_an_error_naming_the_file(tmp_path: Path) -> None:
    folder = _dataset(tmp_path)
    (folder / "00002.txt").write_text("a photo of a red circle")
    report = build_report(read_dataset(folder), trigger_word="sks", resolution=64)
    [finding] = report.by_check("trigger_word")
    assert finding.severity is Severity.ERROR
    assert finding.paths == ("00002.png",)
    assert not report.ok
    assert "NOT READY" in report.to_text()


def test_a_clean_synthetic_dataset_passes(tmp_path: Path) -> None:
    report = build_report(read_dataset(_dataset(tmp_path)), trigger_word="sks", resolution=64)
    assert report.ok
    assert report.by_check("near_duplicates") == []


def test_a_resized_copy_is_a_near_duplicate_and_an_exact_copy_an_exact_duplicate(
    tmp_path: Path,
) -> None:
    folder = _dataset(tmp_path)
    Image.open(folder / "00000.png").resize((80, 80)).save(folder / "copy-resized.png")
    shutil.copy(folder / "00000.txt", folder / "copy-resized.txt")
    shutil.copy(folder / "00001.png", folder / "copy-exact.png")
    shutil.copy(folder / "00001.txt", folder / "copy-exact.txt")
    report = build_report(read_dataset(folder), trigger_word="sks", resolution=64)
    [near] = report.by_check("near_duplicates")
    [exact] = report.by_check("exact_duplicates")
    assert near.paths[0].startswith("00000.png ~ copy-resized.png")
    assert exact.paths == ("00001.png = copy-exact.png",)


def test_images_below_the_training_resolution_are_flagged(tmp_path: Path) -> None:
    folder = _dataset(tmp_path)
    report = build_report(read_dataset(folder), trigger_word="sks", resolution=128)
    [finding] = report.by_check("below_resolution")
    assert len(finding.paths) == 4
    assert "(64x64)" in finding.paths[0]


def test_overlong_captions_and_tags_in_every_caption_are_reported(tmp_path: Path) -> None:
    folder = _dataset(tmp_path)
    (folder / "00003.txt").write_text("sks, " + " ".join(["word"] * 80))
    report = build_report(read_dataset(folder), trigger_word="sks", resolution=64)
    long = [f for f in report.by_check("caption_length") if f.severity is Severity.WARNING]
    assert long and long[0].paths == ("00003.png",)
    assert report.caption_words["max"] == 81
    assert report.tag_frequencies[0][1] == 3  # "a photo of sks red circle" in 3 of 4


def test_perceptual_hashes_are_close_for_a_resize_and_far_for_another_picture(
    tmp_path: Path,
) -> None:
    folder = _dataset(tmp_path)
    first = Image.open(folder / "00000.png")
    other = Image.open(folder / "00001.png")
    resized = first.resize((40, 40))
    assert hamming(dhash(first), dhash(resized)) <= 4
    assert hamming(ahash(first), ahash(resized)) <= 4
    assert hamming(dhash(first), dhash(other)) > 8
