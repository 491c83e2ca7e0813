"""Formats from magic bytes, and names that must agree with them."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
import zipfile

import pytest

from sdcore.errors import FormatMismatchError
from sdcore.sniff import SNIFF_BYTES, check_extension, extension_of, sniff_format
from tests.sdcore.fixtures import safetensors_bytes


def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({}, 2))
    return buffer.getvalue()


def _tar_bytes() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("a.txt")
        info.size = 1
        archive.addfile(info, io.BytesIO(b"a"))
    return buffer.getvalue()


SAFETENSORS = safetensors_bytes({"w": ("F32", (4,))})
SAMPLES = {
    "safetensors": SAFETENSORS,
    "zip": _zip_bytes(),
    "pickle": pickle.dumps({"a": 1}, protocol=2),
    "gguf": b"GGUF\x03\x00\x00\x00" + bytes(32),
    "tar": _tar_bytes(),
    "gzip": gzip.compress(b"hello"),
    "unknown": b"just some text that is no model at all",
}


@pytest.mark.parametrize("expected", list(SAMPLES))
def test_sniffs_each_format_from_its_first_bytes(expected: str) -> None:
    # given
    content = SAMPLES[expected]
    # when
    sniffed = sniff_format(content[:SNIFF_BYTES], len(content))
    # then
    assert sniffed == expected


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_sniffs_pickles_of_every_binary_protocol(protocol: int) -> None:
    # given
    content = pickle.dumps([1, 2], protocol=protocol)
    # when / then
    assert sniff_format(content, len(content)) == "pickle"


def test_a_safetensors_length_past_the_file_end_is_not_safetensors() -> None:
    # given
    content = struct.pack("<Q", 10_000) + b'{"a": 1}'
    # when / then
    assert sniff_format(content, len(content)) == "unknown"


def test_empty_and_tiny_files_are_unknown() -> None:
    # given / when / then
    assert sniff_format(b"", 0) == "unknown"
    assert sniff_format(b"\x80", 1) == "unknown"


@pytest.mark.parametrize(
    ("filename", "sniffed"),
    [
        ("model.safetensors", "safetensors"),
        ("MODEL.SafeTensors", "safetensors"),
        ("model.ckpt", "zip"),
        ("model.ckpt", "pickle"),
        ("embedding.pt", "zip"),
        ("model.pth", "pickle"),
        ("pytorch_model.bin", "zip"),
        ("data.zip", "zip"),
        ("data.tar", "tar"),
        ("data.tar.gz", "gzip"),
        ("data.tgz", "gzip"),
        ("model.gguf", "gguf"),
    ],
)
def test_allowed_pairs_of_name_and_bytes_pass(filename: str, sniffed: str) -> None:
    # given / when / then
    assert check_extension(filename, sniffed) == extension_of(filename)


def test_a_safetensors_name_on_a_pickle_is_refused() -> None:
    # given / when
    with pytest.raises(FormatMismatchError) as info:
        check_extension("model.safetensors", "pickle")
    # then
    assert info.value.code == "format_mismatch"
    assert "named .safetensors but its bytes are a Python pickle" in info.value.message
    assert ".ckpt" in info.value.message


def test_a_safetensors_name_on_a_zip_is_refused() -> None:
    # given / when
    with pytest.raises(FormatMismatchError) as info:
        check_extension("model.safetensors", "zip")
    # then
    assert info.value.code == "format_mismatch"
    assert "zip archive" in info.value.message


def test_a_checkpoint_name_on_safetensors_bytes_is_refused() -> None:
    # given / when
    with pytest.raises(FormatMismatchError) as info:
        check_extension("model.ckpt", "safetensors")
    # then
    assert info.value.code == "format_mismatch"
    assert "'model.ckpt'" in info.value.message


def test_an_archive_name_on_model_bytes_is_refused() -> None:
    # given / when
    with pytest.raises(FormatMismatchError) as info:
        check_extension("images.tar.gz", "safetensors")
    # then
    assert info.value.code == "format_mismatch"


def test_an_extension_that_is_not_allowed_is_refused() -> None:
    # given / when
    with pytest.raises(FormatMismatchError) as info:
        check_extension("setup.exe", "unknown")
    # then
    assert info.value.code == "extension_not_allowed"
    assert "'.exe'" in info.value.message


def test_a_name_without_extension_is_refused() -> None:
    # given / when
    with pytest.raises(FormatMismatchError) as info:
        check_extension("model", "safetensors")
    # then
    assert info.value.code == "extension_not_allowed"


def test_extension_ignores_folders_and_case() -> None:
    # given / when / then
    assert extension_of("some.dir/Data.TAR.GZ") == ".tar.gz"
    assert extension_of(".bashrc") == ""


def test_safetensors_header_length_with_low_byte_0x80_is_not_taken_for_a_pickle() -> None:
    # Given a safetensors prefix whose 8-byte length (0x380) starts with the pickle mark 0x80
    prefix = struct.pack("<Q", 0x380) + b"{" + b" " * 600

    # When it is sniffed
    sniffed = sniff_format(prefix, 10_000)

    # Then it is safetensors
    assert sniffed == "safetensors"
