"""Streaming hashes checked against hashlib, zlib, blake3 and sha256sum, at every boundary."""

from __future__ import annotations

import hashlib
import itertools
import multiprocessing
import multiprocessing.queues
import random
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import blake3
import pytest

from sdcore.hashes import (
    AUTOV1_LENGTH,
    AUTOV1_OFFSET,
    HASH_TYPES,
    FileHashes,
    MultiHasher,
    hash_file,
)
from tests.sdcore.fixtures import safetensors_bytes, write_bytes

WINDOW_END = AUTOV1_OFFSET + AUTOV1_LENGTH


def _random_bytes(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def _safetensors_content(data_size: int) -> bytes:
    content = safetensors_bytes({"w": ("U8", (data_size,))}, metadata={"title": "t"})
    n = struct.unpack("<Q", content[:8])[0]
    return content[: 8 + n] + _random_bytes(data_size, seed=1)


SAFETENSORS = _safetensors_content(AUTOV1_OFFSET + AUTOV1_LENGTH + 12345)
HEADER_END = 8 + struct.unpack("<Q", SAFETENSORS[:8])[0]


def _expected(content: bytes, *, safetensors: bool) -> FileHashes:
    sha = hashlib.sha256(content).hexdigest()
    data_start = 8 + struct.unpack("<Q", content[:8])[0] if safetensors else 0
    v3 = hashlib.sha256(content[data_start:]).hexdigest() if safetensors else None
    return FileHashes(
        sha256=sha,
        autov1=hashlib.sha256(content[AUTOV1_OFFSET:WINDOW_END]).hexdigest()[:8],
        autov2=sha[:10],
        autov3=v3[:12] if v3 else None,
        crc32=f"{zlib.crc32(content):08x}",
        blake3=blake3.blake3(content).hexdigest(),
        size=len(content),
        autov3_full=v3,
    )


def _feed(content: bytes, cuts: list[int], *, parallel: bool = False) -> FileHashes:
    hasher = MultiHasher(parallel=parallel)
    bounds = [0, *sorted(c for c in cuts if 0 < c < len(content)), len(content)]
    for lo, hi in itertools.pairwise(bounds):
        hasher.update(content[lo:hi])
    return hasher.hexdigests()


def test_every_hash_matches_independent_implementations_in_one_chunk() -> None:
    # given
    content = SAFETENSORS
    # when
    hashes = _feed(content, [])
    # then
    assert hashes == _expected(content, safetensors=True)


@pytest.mark.parametrize("cut", [1, 3, 7, 8, 9, 10])
def test_the_header_length_can_arrive_split_across_chunks(cut: int) -> None:
    # given
    content = SAFETENSORS
    # when
    hashes = _feed(content, [cut, cut + 1])
    # then
    assert hashes == _expected(content, safetensors=True)


def test_one_byte_chunks_through_the_header_give_the_same_hashes() -> None:
    # given
    content = SAFETENSORS
    # when
    hashes = _feed(content, list(range(1, HEADER_END + 3)))
    # then
    assert hashes == _expected(content, safetensors=True)


@pytest.mark.parametrize(
    "cut",
    [
        AUTOV1_OFFSET - 1,
        AUTOV1_OFFSET,
        AUTOV1_OFFSET + 1,
        WINDOW_END - 1,
        WINDOW_END,
        WINDOW_END + 1,
        HEADER_END - 1,
        HEADER_END,
        HEADER_END + 1,
    ],
)
def test_chunk_boundaries_at_window_and_header_edges(cut: int) -> None:
    # given
    content = SAFETENSORS
    # when
    hashes = _feed(content, [cut])
    # then
    assert hashes == _expected(content, safetensors=True)


def test_random_chunk_sizes_give_the_same_hashes() -> None:
    # given
    content = SAFETENSORS
    rng = random.Random(7)
    cuts = sorted(rng.sample(range(1, len(content)), 200))
    # when
    hashes = _feed(content, cuts)
    # then
    assert hashes == _expected(content, safetensors=True)


def test_two_threaded_hashing_gives_the_same_hashes() -> None:
    # given
    content = SAFETENSORS + _random_bytes(3 * 1024 * 1024, seed=3)
    content = _safetensors_content(len(content))
    # when
    hashes = _feed(content, [5, HEADER_END + 1, 2 * 1024 * 1024], parallel=True)
    # then
    assert hashes == _expected(content, safetensors=True)


def test_accepts_memoryviews_and_bytearrays() -> None:
    # given
    content = SAFETENSORS
    hasher = MultiHasher()
    # when
    hasher.update(bytearray(content[:100]))
    hasher.update(memoryview(content)[100:])
    # then
    assert hasher.hexdigests() == _expected(content, safetensors=True)


def test_autov3_is_the_hash_of_the_bytes_after_the_header() -> None:
    # given
    content = SAFETENSORS
    # when
    hashes = _feed(content, [])
    # then
    assert hashes.autov3_full == hashlib.sha256(content[HEADER_END:]).hexdigest()
    assert hashes.autov3 == hashes.autov3_full[:12]


def test_autov3_ignores_metadata_changes() -> None:
    # given
    data = _random_bytes(64, seed=5)
    one = safetensors_bytes({"w": ("U8", (64,))}, {"title": "one"}, {"w": data})
    two = safetensors_bytes({"w": ("U8", (64,))}, {"title": "a longer title"}, {"w": data})
    # when
    first, second = _feed(one, []), _feed(two, [])
    # then
    assert first.autov3 == second.autov3
    assert first.sha256 != second.sha256


def test_autov3_is_none_for_a_pickle() -> None:
    # given
    content = b"\x80\x02}q\x00." + _random_bytes(1000)
    # when
    hashes = _feed(content, [])
    # then
    assert hashes.autov3 is None and hashes.autov3_full is None
    assert hashes == _expected(content, safetensors=False)


def test_autov3_is_none_when_the_declared_header_is_past_the_end() -> None:
    # given
    content = struct.pack("<Q", 5000) + b'{"w": 1}'
    # when
    hashes = _feed(content, [])
    # then
    assert hashes.autov3 is None


def test_autov3_can_be_turned_off() -> None:
    # given
    hasher = MultiHasher(safetensors=False)
    # when
    hasher.update(SAFETENSORS)
    # then
    assert hasher.hexdigests().autov3 is None


def test_autov1_of_a_file_shorter_than_its_window_hashes_what_exists() -> None:
    # given
    content = _random_bytes(AUTOV1_OFFSET + 100)
    # when
    hashes = _feed(content, [AUTOV1_OFFSET + 50])
    # then
    assert hashes.autov1 == hashlib.sha256(content[AUTOV1_OFFSET:]).hexdigest()[:8]


def test_autov1_of_a_file_of_one_mib_or_less_is_the_hash_of_nothing() -> None:
    # given
    content = _random_bytes(AUTOV1_OFFSET)
    # when
    hashes = _feed(content, [])
    # then
    assert hashes.autov1 == "e3b0c442"


def test_autov1_matches_a1111_model_hash(tmp_path: Path) -> None:
    # given
    path = write_bytes(tmp_path / "model.ckpt", _random_bytes(WINDOW_END + 999))
    # when
    with open(path, "rb") as fh:  # A1111's modules/sd_models.py model_hash, verbatim logic
        fh.seek(0x100000)
        a1111 = hashlib.sha256(fh.read(0x10000)).hexdigest()[0:8]
    # then
    assert hash_file(path).autov1 == a1111


def test_empty_input_has_the_empty_hashes() -> None:
    # given
    hasher = MultiHasher()
    # when
    hashes = hasher.hexdigests()
    # then
    assert hashes.sha256 == hashlib.sha256(b"").hexdigest()
    assert hashes.crc32 == "00000000"
    assert hashes.size == 0
    assert hashes.autov3 is None


def test_crc32_is_eight_lowercase_hex_digits() -> None:
    # given
    content = b"a"  # crc32 0xe8b7be43
    # when
    hashes = _feed(content, [])
    # then
    assert hashes.crc32 == "e8b7be43"


def test_hexdigests_can_be_taken_midway_and_hashing_goes_on() -> None:
    # given
    hasher = MultiHasher()
    hasher.update(SAFETENSORS[:1000])
    # when
    midway = hasher.hexdigests()
    hasher.update(SAFETENSORS[1000:])
    # then
    assert midway.sha256 == hashlib.sha256(SAFETENSORS[:1000]).hexdigest()
    assert hasher.hexdigests() == _expected(SAFETENSORS, safetensors=True)


@pytest.mark.parametrize("chunk_size", [1024, 65536, 8 * 1024 * 1024])
def test_hash_file_matches_the_streaming_hasher(tmp_path: Path, chunk_size: int) -> None:
    # given
    path = write_bytes(tmp_path / "model.safetensors", SAFETENSORS)
    # when
    hashes = hash_file(path, chunk_size=chunk_size)
    # then
    assert hashes == _expected(SAFETENSORS, safetensors=True)


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="needs coreutils sha256sum")
def test_sha256_matches_sha256sum(tmp_path: Path) -> None:
    # given
    path = write_bytes(tmp_path / "model.safetensors", SAFETENSORS)
    # when
    out = subprocess.run(["sha256sum", str(path)], capture_output=True, check=True, text=True)
    # then
    assert hash_file(path).sha256 == out.stdout.split()[0]


@pytest.mark.parametrize("offset", [0, 5, HEADER_END + 3, WINDOW_END - 10, len(SAFETENSORS)])
def test_resume_from_a_partial_file_gives_the_same_final_hashes(
    tmp_path: Path, offset: int
) -> None:
    # given
    path = write_bytes(tmp_path / "part", SAFETENSORS[:offset])
    # when
    hasher = MultiHasher.resume_from(path, offset, chunk_size=4096)
    hasher.update(SAFETENSORS[offset:])
    # then
    assert hasher.size == len(SAFETENSORS)
    assert hasher.hexdigests() == _expected(SAFETENSORS, safetensors=True)


def test_resume_from_refuses_an_offset_past_the_end_of_the_file(tmp_path: Path) -> None:
    # given
    path = write_bytes(tmp_path / "part", b"abc")
    # when / then
    with pytest.raises(ValueError, match="has only 3 bytes"):
        MultiHasher.resume_from(path, 10)


def test_hash_types_name_every_lookup_field() -> None:
    # given
    hashes = _feed(SAFETENSORS, [])
    # when
    values = {name: hashes.get(name) for name in HASH_TYPES}
    # then
    assert values["autov2"] == hashes.sha256[:10]
    assert hashes.get("AutoV2") == values["autov2"]
    assert all(isinstance(v, str) for v in values.values())


def _hash_in_child(content: bytes, results: multiprocessing.queues.Queue[str]) -> None:
    results.put(_feed(content, [], parallel=True).sha256)


def test_two_threaded_hashing_works_in_a_forked_child() -> None:
    # given: the parent has started the hashing threads, which a fork does not copy
    content = _random_bytes(1024 * 1024, seed=9)
    _feed(content, [], parallel=True)
    context = multiprocessing.get_context("fork")
    results: multiprocessing.queues.Queue[str] = context.Queue()
    # when
    child = context.Process(target=_hash_in_child, args=(content, results))
    child.start()
    child.join(timeout=60)
    if child.is_alive():  # hung: do not leave it behind
        child.kill()
        child.join()
    # then
    assert child.exitcode == 0
    assert results.get(timeout=5) == hashlib.sha256(content).hexdigest()
