"""Reading private datasets: both layouts, every kind of bad file, and the manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from federated.engine.dataset import IssueKind, load_pixels, read_dataset
from federated.engine.errors import DatasetError
from federated.engine.synthetic import generate_synthetic_dataset


def _good(folder: Path, n: int = 3, *, seed: int = 5) -> Path:
    return generate_synthetic_dataset(folder, n_images=n, seed=seed, resolution=32)


def _kinds(folder: Path, **limits: int) -> dict[str, IssueKind]:
    return {issue.path: issue.kind for issue in read_dataset(folder, **limits).issues}


def test_kohya_layout_pairs_each_image_with_its_txt_caption(tmp_path: Path) -> None:
    # Given a kohya folder of three images with captions
    scan = read_dataset(_good(tmp_path))
    # Then three examples, captions read and whitespace-normalised, nothing skipped
    assert scan.layout == "kohya"
    assert len(scan) == 3
    assert all(e.caption.startswith("a photo of sks red circle") for e in scan.examples)
    assert scan.issues == ()


def test_imagefolder_layout_reads_metadata_jsonl(tmp_path: Path) -> None:
    folder = generate_synthetic_dataset(
        tmp_path, n_images=4, seed=1, resolution=32, layout="imagefolder"
    )
    scan = read_dataset(folder)
    assert scan.layout == "imagefolder"
    assert [e.relpath for e in scan.examples] == [f"{i:05d}.png" for i in range(4)]
    assert "sks" in scan.examples[0].caption


def test_corrupt_bytes_with_an_image_extension_are_skipped_not_fatal(tmp_path: Path) -> None:
    folder = _good(tmp_path)
    (folder / "corrupt.png").write_bytes(b"\x89PNG-but-not-really" * 10)
    (folder / "corrupt.txt").write_text("sks red circle")
    scan = read_dataset(folder)
    assert len(scan) == 3
    assert _kinds(folder)["corrupt.png"] is IssueKind.NOT_AN_IMAGE


def test_a_truncated_png_is_reported_as_truncated(tmp_path: Path) -> None:
    folder = _good(tmp_path)
    data = (folder / "00000.png").read_bytes()
    (folder / "cut.png").write_bytes(data[: len(data) // 2])
    (folder / "cut.txt").write_text("sks red circle")
    assert _kinds(folder)["cut.png"] is IssueKind.TRUNCATED_IMAGE


def test_an_image_over_the_pixel_limit_is_skipped_before_decoding(tmp_path: Path) -> None:
    folder = _good(tmp_path)
    Image.new("RGB", (200, 200), "white").save(folder / "huge.png")
    (folder / "huge.txt").write_text("sks red circle")
    kinds = _kinds(folder, max_image_pixels=100 * 100)
    assert kinds["huge.png"] is IssueKind.OVERSIZED_IMAGE


def test_a_file_over_the_byte_limit_is_skipped(tmp_path: Path) -> None:
    folder = _good(tmp_path)
    limit = max(p.stat().st_size for p in folder.glob("*.png"))
    noisy = Image.frombytes("RGB", (64, 64), np.random.default_rng(0).bytes(64 * 64 * 3))
    noisy.save(folder / "big.png")
    (folder / "big.txt").write_text("sks red circle")
    assert (folder / "big.png").stat().st_size > limit
    scan = read_dataset(folder, max_image_bytes=limit)
    [issue] = scan.issues
    assert (issue.path, issue.kind) == ("big.png", IssueKind.OVERSIZED_IMAGE)
    assert "over the limit" in issue.message
    assert len(scan) == 3


def test_non_image_files_are_reported(tmp_path: Path) -> None:
    folder = _good(tmp_path)
    (folder / "notes.pdf").write_bytes(b"%PDF-1.4")
    (folder / "README").write_text("hello")
    kinds = _kinds(folder)
    assert kinds["notes.pdf"] is IssueKind.NOT_AN_IMAGE
    assert kinds["README"] is IssueKind.NOT_AN_IMAGE


def test_missing_and_empty_captions_are_reported(tmp_path: Path) -> None:
    folder = _good(tmp_path)
    (folder / "00001.txt").unlink()
    (folder / "00002.txt").write_text("   \n")
    scan = read_dataset(folder)
    kinds = {i.path: i.kind for i in scan.issues}
    assert len(scan) == 1
    assert kinds == {"00001.png": IssueKind.MISSING_CAPTION, "00002.png": IssueKind.EMPTY_CAPTION}


def test_bad_metadata_lines_and_paths_outside_the_folder_are_reported(tmp_path: Path) -> None:
    folder = generate_synthetic_dataset(
        tmp_path / "d", n_images=2, seed=1, resolution=32, layout="imagefolder"
    )
    lines = (folder / "metadata.jsonl").read_text().splitlines()
    lines += [
        "{not json",
        json.dumps({"file_name": "../outside.png", "text": "x"}),
        json.dumps({"file_name": "ghost.png", "text": "x"}),
    ]
    (folder / "metadata.jsonl").write_text("\n".join(lines))
    Image.new("RGB", (8, 8)).save(tmp_path / "outside.png")
    kinds = sorted(i.kind.value for i in read_dataset(folder).issues)
    assert kinds == ["bad_metadata", "missing_image", "outside_dataset"]


@pytest.mark.parametrize("case", ["empty", "missing", "a_file", "only_bad_files"])
def test_unusable_paths_raise_a_dataset_error_with_a_message(tmp_path: Path, case: str) -> None:
    path = tmp_path / "data"
    if case == "empty":
        path.mkdir()
    elif case == "a_file":
        path.write_text("x")
    elif case == "only_bad_files":
        path.mkdir()
        (path / "a.png").write_bytes(b"garbage")
        (path / "a.txt").write_text("sks")
    with pytest.raises(DatasetError) as caught:
        read_dataset(path)
    message = str(caught.value)
    assert str(path) in message
    expected = {
        "empty": "no usable image",
        "missing": "does not exist",
        "a_file": "is not a folder",
        "only_bad_files": "1 not_an_image",
    }[case]
    assert expected in message
    assert caught.value.code == "dataset_invalid"


def test_the_manifest_reveals_no_file_names_or_caption_text(tmp_path: Path) -> None:
    folder = _good(tmp_path, n=5)
    (folder / "00000.png").rename(folder / "alice-holiday.png")
    (folder / "00000.txt").rename(folder / "alice-holiday.txt")
    manifest_json = read_dataset(folder).manifest().to_json()
    for secret in ("alice", "holiday", ".png", "sks", "circle", "background"):
        assert secret not in manifest_json
    data = json.loads(manifest_json)
    assert data["count"] == 5
    assert sum(data["short_side_buckets"].values()) == 5
    assert "min" not in manifest_json and "max" not in manifest_json


def test_content_hash_ignores_names_and_order_but_not_pixels(tmp_path: Path) -> None:
    a = _good(tmp_path / "a", n=3)
    b = tmp_path / "b"
    shutil.copytree(a, b)
    for src in sorted(b.glob("*.png")):
        src.rename(b / f"renamed-{src.name}")
    for src in sorted(b.glob("0*.txt")):
        src.rename(b / f"renamed-{src.name}")
    c = tmp_path / "c"
    shutil.copytree(a, c)
    image = Image.open(c / "00000.png").convert("RGB")
    image.putpixel((0, 0), (0, 0, 0))
    image.save(c / "00000.png")
    hash_a = read_dataset(a).manifest().content_hash
    assert read_dataset(b).manifest().content_hash == hash_a
    assert read_dataset(c).manifest().content_hash != hash_a


def test_load_pixels_crops_to_a_square_in_minus_one_to_one(tmp_path: Path) -> None:
    Image.new("RGBA", (60, 30), (255, 0, 0, 0)).save(tmp_path / "wide.png")
    (tmp_path / "wide.txt").write_text("x")
    example = read_dataset(tmp_path).examples[0]
    pixels = load_pixels(example, 16)
    assert pixels.shape == (3, 16, 16)
    # fully transparent red is composited on white
    assert pixels.min() >= -1.0 and pixels.max() <= 1.0
    assert float(pixels.mean()) == pytest.approx(1.0)
