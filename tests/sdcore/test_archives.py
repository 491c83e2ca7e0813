"""Dataset archives: listings, every refusal, and all-or-nothing extraction."""

from __future__ import annotations

import json
import stat
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest

from sdcore.archives import extract_archive, inspect_archive
from sdcore.errors import ArchiveError
from tests.sdcore.fixtures import add_tar_member, make_tar, make_zip

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
DATASET = {
    "images/0001.png": PNG,
    "images/0001.txt": b"a red circle",
    "images/0002.jpg": PNG,
    "images/0002.txt": b"a blue square",
    "images/0003.webp": PNG,
    "images/orphan.txt": b"no image",
}


def _refusal(path: Path, **limits: int | float) -> ArchiveError:
    with pytest.raises(ArchiveError) as info:
        inspect_archive(path, **limits)  # type: ignore[arg-type]
    return info.value


def _zip_with_mode(path: Path, name: str, mode: int, content: bytes = b"target") -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ok.txt", b"fine")
        info = zipfile.ZipInfo(name)
        info.external_attr = mode << 16
        archive.writestr(info, content)
    return path


def _patch_headers(path: Path, name: str, local_at: int, central_at: int, value: bytes) -> None:
    """Overwrite a field of `name`'s local and central zip headers, at the given offsets."""
    raw = bytearray(path.read_bytes())
    encoded = name.encode()
    for signature, field_at, name_at in (
        (b"PK\x03\x04", local_at, 30),
        (b"PK\x01\x02", central_at, 46),
    ):
        start = 0
        while (start := raw.find(signature, start)) != -1:
            if raw[start + name_at : start + name_at + len(encoded)] == encoded:
                raw[start + field_at : start + field_at + len(value)] = value
            start += 4
    path.write_bytes(bytes(raw))


def _patch_declared_size(path: Path, name: str, size: int) -> None:
    _patch_headers(path, name, 22, 24, struct.pack("<I", size))


# --- listings ----------------------------------------------------------------------------


def test_zip_listing_pairs_images_with_captions(tmp_path: Path) -> None:
    # given
    path = make_zip(tmp_path / "data.zip", DATASET)
    # when
    listing = inspect_archive(path)
    # then
    assert listing.format == "zip"
    assert (listing.member_count, listing.image_count, listing.caption_count) == (6, 3, 3)
    assert listing.pairs == [
        ("images/0001.png", "images/0001.txt"),
        ("images/0002.jpg", "images/0002.txt"),
    ]
    assert listing.images_without_caption == ["images/0003.webp"]
    assert listing.captions_without_image == ["images/orphan.txt"]
    assert listing.captioned_count == 2
    assert listing.total_uncompressed == sum(len(v) for v in DATASET.values())


@pytest.mark.parametrize("gz", [False, True])
def test_tar_and_tar_gz_listings(tmp_path: Path, gz: bool) -> None:
    # given
    path = make_tar(tmp_path / ("data.tar.gz" if gz else "data.tar"), DATASET, gz=gz)
    # when
    listing = inspect_archive(path)
    # then
    assert listing.format == ("tar.gz" if gz else "tar")
    assert len(listing.pairs) == 2


def test_metadata_jsonl_captions_count_as_pairs(tmp_path: Path) -> None:
    # given
    rows = [{"file_name": "a.png", "text": "a"}, {"file_name": "b.png", "text": "b"}]
    metadata = "\n".join(json.dumps(r) for r in rows).encode() + b"\n{broken\n"
    path = make_zip(
        tmp_path / "data.zip",
        {"train/metadata.jsonl": metadata, "train/a.png": PNG, "train/b.png": PNG},
    )
    # when
    listing = inspect_archive(path)
    # then
    assert listing.metadata_file == "train/metadata.jsonl"
    assert (listing.metadata_rows, listing.metadata_pairs) == (2, 2)
    assert listing.captioned_count == 2
    assert listing.images_without_caption == []


def test_mac_junk_is_ignored(tmp_path: Path) -> None:
    # given
    path = make_zip(
        tmp_path / "data.zip",
        {"a.png": PNG, "a.txt": b"x", "__MACOSX/._a.png": b"junk", ".DS_Store": b"junk"},
    )
    # when
    listing = inspect_archive(path)
    # then
    assert listing.image_count == 1
    assert sorted(listing.ignored) == [".DS_Store", "__MACOSX/._a.png"]


def test_folder_members_are_listed_as_folders(tmp_path: Path) -> None:
    # given
    path = make_zip(tmp_path / "data.zip", {"images/": b"", "images/a.png": PNG})
    # when
    listing = inspect_archive(path)
    # then
    assert [m.is_dir for m in listing.members] == [True, False]


# --- refusals: names ---------------------------------------------------------------------


def test_refuses_a_parent_directory_component(tmp_path: Path) -> None:
    # given
    path = make_zip(tmp_path / "evil.zip", {"images/../../etc/cron.d/x": b"boom"})
    # when
    error = _refusal(path)
    # then
    assert error.code == "path_traversal"
    assert "images/../../etc/cron.d/x" in error.message


def test_refuses_a_parent_directory_component_with_backslashes(tmp_path: Path) -> None:
    # given
    path = make_zip(tmp_path / "evil.zip", {"..\\..\\evil.txt": b"boom"})
    # when
    error = _refusal(path)
    # then
    assert error.code == "path_traversal"


def test_refuses_an_absolute_path_in_a_tar(tmp_path: Path) -> None:
    # given
    path = make_tar(tmp_path / "evil.tar", {"/etc/passwd": b"root"})
    # when
    error = _refusal(path)
    # then
    assert error.code == "absolute_path"
    assert "/etc/passwd" in error.message


@pytest.mark.parametrize("name", ["C:/Windows/x.png", "c:evil.png", "D:\\x.txt"])
def test_refuses_a_drive_letter(tmp_path: Path, name: str) -> None:
    # given
    path = make_zip(tmp_path / "evil.zip", {name: b"x"})
    # when
    error = _refusal(path)
    # then
    assert error.code == "drive_letter"
    assert "drive letter" in error.message


def test_refuses_control_characters_in_a_name(tmp_path: Path) -> None:
    # given
    path = make_tar(tmp_path / "evil.tar", {"a\nb.png": PNG})
    # when
    error = _refusal(path)
    # then
    assert error.code == "bad_member_name"


def test_refuses_duplicate_names(tmp_path: Path) -> None:
    # given
    path = tmp_path / "dup.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.png", PNG)
        with pytest.warns(UserWarning):
            archive.writestr("a.png", b"other")
    # when
    error = _refusal(path)
    # then
    assert error.code == "duplicate_member"
    assert "'a.png'" in error.message


def test_refuses_names_that_are_the_same_once_normalized(tmp_path: Path) -> None:
    # given
    path = make_zip(tmp_path / "dup.zip", {"a/b.png": PNG, "./a//b.png": PNG})
    # when
    error = _refusal(path)
    # then
    assert error.code == "duplicate_member"


def test_refuses_a_file_used_as_a_folder(tmp_path: Path) -> None:
    # given
    path = make_zip(tmp_path / "conflict.zip", {"a": b"file", "a/b.png": PNG})
    # when
    error = _refusal(path)
    # then
    assert error.code == "path_conflict"
    assert "'a'" in error.message


# --- refusals: member types --------------------------------------------------------------


def test_refuses_a_symlink_in_a_zip(tmp_path: Path) -> None:
    # given
    path = _zip_with_mode(tmp_path / "link.zip", "link.png", stat.S_IFLNK | 0o777, b"/etc/passwd")
    # when
    error = _refusal(path)
    # then
    assert error.code == "link_member"
    assert "'link.png'" in error.message


def test_refuses_a_device_in_a_zip(tmp_path: Path) -> None:
    # given
    path = _zip_with_mode(tmp_path / "dev.zip", "dev", stat.S_IFCHR | 0o644)
    # when
    error = _refusal(path)
    # then
    assert error.code == "special_member"


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        (tarfile.SYMTYPE, "link_member"),
        (tarfile.LNKTYPE, "link_member"),
        (tarfile.CHRTYPE, "special_member"),
        (tarfile.BLKTYPE, "special_member"),
        (tarfile.FIFOTYPE, "special_member"),
    ],
)
def test_refuses_links_and_special_files_in_a_tar(tmp_path: Path, kind: bytes, code: str) -> None:
    # given
    path = make_tar(tmp_path / "evil.tar", {"ok.png": PNG})
    info = tarfile.TarInfo("special")
    info.type = kind
    info.linkname = "/etc/passwd" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
    add_tar_member(path, info)
    # when
    error = _refusal(path)
    # then
    assert error.code == code
    assert "'special'" in error.message


def test_refuses_an_encrypted_zip_member(tmp_path: Path) -> None:
    # given
    path = make_zip(tmp_path / "secret.zip", {"a.png": PNG}, compression=zipfile.ZIP_STORED)
    _patch_headers(path, "a.png", 6, 8, struct.pack("<H", 0x1))  # general purpose flags
    # when
    error = _refusal(path)
    # then
    assert error.code == "encrypted_member"


# --- refusals: sizes ---------------------------------------------------------------------


def test_refuses_too_many_members(tmp_path: Path) -> None:
    # given
    path = make_zip(tmp_path / "many.zip", {f"{i}.txt": b"x" for i in range(5)})
    # when
    error = _refusal(path, max_members=4)
    # then
    assert error.code == "too_many_members"
    assert "more than 4 members" in error.message


def test_refuses_too_many_members_in_a_tar_gz(tmp_path: Path) -> None:
    # given
    path = make_tar(tmp_path / "many.tar.gz", {f"{i}.txt": b"x" for i in range(5)}, gz=True)
    # when
    error = _refusal(path, max_members=4)
    # then
    assert error.code == "too_many_members"


def test_refuses_a_total_size_over_the_limit(tmp_path: Path) -> None:
    # given
    path = make_zip(tmp_path / "big.zip", {"a.png": PNG, "b.png": PNG})
    # when
    error = _refusal(path, max_total_uncompressed=len(PNG) + 1)
    # then
    assert error.code == "too_large"
    assert "'b.png'" in error.message


def test_refuses_a_zip_bomb_ratio(tmp_path: Path) -> None:
    # given
    path = make_zip(tmp_path / "bomb.zip", {"zeros.png": bytes(4 * 1024 * 1024)})
    # when
    error = _refusal(path)
    # then
    assert error.code == "compression_ratio"
    assert "zip bomb" in error.message and "'zeros.png'" in error.message


def test_refuses_a_tar_gz_bomb_ratio(tmp_path: Path) -> None:
    # given
    path = make_tar(tmp_path / "bomb.tar.gz", {"zeros.png": bytes(4 * 1024 * 1024)}, gz=True)
    # when
    error = _refusal(path)
    # then
    assert error.code == "compression_ratio"


def test_small_members_may_compress_well(tmp_path: Path) -> None:
    # given
    path = make_zip(tmp_path / "captions.zip", {"a.txt": b"a" * 100_000})
    # when
    listing = inspect_archive(path)
    # then
    assert listing.caption_count == 1


def test_refuses_a_file_that_is_no_archive(tmp_path: Path) -> None:
    # given
    path = tmp_path / "data.zip"
    path.write_bytes(b"this is not an archive" * 40)
    # when
    error = _refusal(path)
    # then
    assert error.code == "archive_unreadable"


def test_refuses_a_truncated_tar_gz(tmp_path: Path) -> None:
    # given
    path = make_tar(tmp_path / "cut.tar.gz", DATASET, gz=True)
    path.write_bytes(path.read_bytes()[:-30])
    # when
    error = _refusal(path)
    # then
    assert error.code == "archive_unreadable"


# --- extraction --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz"])
def test_extracts_every_member(tmp_path: Path, kind: str) -> None:
    # given
    source = tmp_path / f"data.{kind}"
    if kind == "zip":
        make_zip(source, DATASET)
    else:
        make_tar(source, DATASET, gz=kind == "tar.gz")
    dest = tmp_path / "out" / "dataset"
    # when
    listing = extract_archive(source, dest)
    # then
    assert listing.image_count == 3
    for name, content in DATASET.items():
        assert (dest / name).read_bytes() == content


def test_extraction_refuses_an_existing_destination(tmp_path: Path) -> None:
    # given
    source = make_zip(tmp_path / "data.zip", DATASET)
    dest = tmp_path / "dataset"
    dest.mkdir()
    # when
    with pytest.raises(ArchiveError) as info:
        extract_archive(source, dest)
    # then
    assert info.value.code == "dest_exists"


def test_refused_archive_leaves_nothing_behind(tmp_path: Path) -> None:
    # given
    source = make_zip(tmp_path / "evil.zip", {"ok.png": PNG, "../evil.png": PNG})
    out = tmp_path / "out"
    out.mkdir()
    # when
    with pytest.raises(ArchiveError):
        extract_archive(source, out / "dataset")
    # then
    assert list(out.iterdir()) == []
    assert not (tmp_path / "evil.png").exists()


def test_a_member_larger_than_declared_is_caught_while_streaming(tmp_path: Path) -> None:
    # given: the headers claim 1000 bytes; the data inflates to 2 MiB
    source = make_zip(tmp_path / "liar.zip", {"ok.png": PNG, "liar.png": bytes(2 * 1024 * 1024)})
    _patch_declared_size(source, "liar.png", 1000)
    out = tmp_path / "out"
    out.mkdir()
    # when
    with pytest.raises(ArchiveError) as info:
        extract_archive(source, out / "dataset")
    # then
    assert info.value.code in ("size_mismatch", "archive_unreadable")
    assert list(out.iterdir()) == []


def test_a_member_smaller_than_declared_is_refused(tmp_path: Path) -> None:
    # given
    source = make_zip(tmp_path / "liar.zip", {"a.png": PNG}, compression=zipfile.ZIP_STORED)
    _patch_declared_size(source, "a.png", len(PNG) + 10)
    out = tmp_path / "out"
    out.mkdir()
    # when
    with pytest.raises(ArchiveError):
        extract_archive(source, out / "dataset")
    # then
    assert list(out.iterdir()) == []
