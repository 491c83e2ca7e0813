"""Reading and validating safetensors headers without touching the tensors."""

from __future__ import annotations

import contextlib
import io
import json
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from sdcore.errors import HeaderError, SdcoreError
from sdcore.safetensors_header import (
    DTYPE_BITS,
    MAX_HEADER_BYTES,
    header_size_from_prefix,
    parse_header_bytes,
    read_header,
)
from tests.sdcore.fixtures import raw_file_bytes, safetensors_bytes, write_bytes

ONE_U8 = {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}


def _error(content: bytes, **kwargs: int) -> HeaderError:
    with pytest.raises(HeaderError) as info:
        parse_header_bytes(content, len(content), **kwargs)
    return info.value


def _tensor_error(entry: object, data: bytes = b"x") -> HeaderError:
    return _error(raw_file_bytes({"weight": entry}, data))


# --- valid files -------------------------------------------------------------------------


def test_reads_a_file_written_by_the_safetensors_package(tmp_path: Path) -> None:
    # given
    path = tmp_path / "model.safetensors"
    save_file(
        {"a": np.zeros((2, 3), np.float32), "b": np.ones((4,), np.float16)},
        str(path),
        metadata={"format": "pt", "ss_network_dim": "8"},
    )
    # when
    header = read_header(path)
    # then
    assert set(header.tensors) == {"a", "b"}
    assert header.tensors["a"].dtype == "F32"
    assert header.tensors["a"].shape == (2, 3)
    assert header.tensors["a"].nbytes == 24
    assert header.tensors["a"].numel == 6
    assert header.metadata == {"format": "pt", "ss_network_dim": "8"}
    assert header.total_size == path.stat().st_size


def test_data_offset_points_at_the_first_tensor_bytes(tmp_path: Path) -> None:
    # given
    path = tmp_path / "w.safetensors"
    values = np.arange(5, dtype=np.int32)
    save_file({"w": values}, str(path))
    # when
    header = read_header(path)
    # then
    raw = path.read_bytes()
    info = header.tensors["w"]
    start = header.data_offset + info.start
    assert raw[start : header.data_offset + info.end] == values.tobytes()
    assert header.data_offset == 8 + header.header_size


def test_reads_every_dtype_the_safetensors_package_writes(tmp_path: Path) -> None:
    # given
    arrays: dict[str, np.ndarray] = {
        name: np.zeros((3,), dtype)
        for name, dtype in {
            "f64": np.float64,
            "f32": np.float32,
            "f16": np.float16,
            "i64": np.int64,
            "i32": np.int32,
            "i16": np.int16,
            "i8": np.int8,
            "u8": np.uint8,
            "u16": np.uint16,
            "u32": np.uint32,
            "u64": np.uint64,
            "bool": np.bool_,
        }.items()
    }
    path = tmp_path / "all.safetensors"
    save_file(arrays, str(path))
    # when
    header = read_header(path)
    # then
    assert {t.dtype for t in header.tensors.values()} == {
        "F64", "F32", "F16", "I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64", "BOOL"
    }  # fmt: skip


def test_reads_from_a_seekable_file_object_at_its_position() -> None:
    # given
    content = safetensors_bytes({"w": ("F32", (2,))})
    stream = io.BytesIO(b"JUNK" + content)
    stream.seek(4)
    # when
    header = read_header(stream)
    # then
    assert header.total_size == len(content)


def test_reads_from_a_stream_that_cannot_seek_and_returns_short_reads() -> None:
    # given
    content = safetensors_bytes({"w": ("F32", (2,))})

    class Pipe(io.BytesIO):
        def seekable(self) -> bool:
            return False

        def read(self, size: int | None = -1) -> bytes:
            return super().read(min(3, size) if size is not None and size >= 0 else 3)

    # when
    header = read_header(Pipe(content))
    # then
    assert header.tensors["w"].shape == (2,)


def test_parses_a_header_from_the_first_bytes_only() -> None:
    # given
    content = safetensors_bytes({"w": ("F32", (1000,))})
    n = struct.unpack("<Q", content[:8])[0]
    # when
    header = parse_header_bytes(content[: 8 + n], len(content))
    # then
    assert header.tensors["w"].end == 4000


def test_accepts_an_empty_header_object() -> None:
    # given
    content = raw_file_bytes(b"{}")
    # when
    header = parse_header_bytes(content, len(content))
    # then
    assert header.tensors == {}
    assert header.total_size == len(content)


def test_accepts_zero_sized_tensors_and_scalars() -> None:
    # given
    content = safetensors_bytes({"empty": ("F32", (0, 4)), "scalar": ("F16", ())})
    # when
    header = parse_header_bytes(content, len(content))
    # then
    assert header.tensors["empty"].nbytes == 0
    assert header.tensors["scalar"].numel == 1


def test_accepts_sub_byte_dtypes_that_fill_whole_bytes() -> None:
    # given
    content = safetensors_bytes({"packed": ("F4", (2, 4))})
    # when
    header = parse_header_bytes(content, len(content))
    # then
    assert header.tensors["packed"].nbytes == 4


def test_accepts_null_metadata_as_the_reference_implementation_does() -> None:
    # given
    content = raw_file_bytes({"__metadata__": None, "w": ONE_U8}, b"x")
    # when
    header = parse_header_bytes(content, len(content))
    # then
    assert header.metadata == {}


def test_knows_every_dtype_of_the_format() -> None:
    # given / when / then
    assert {"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "U16", "U32"} <= set(
        DTYPE_BITS
    )
    assert {"U64", "BOOL", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "C64"} <= set(
        DTYPE_BITS
    )


# --- refusals: the length and the bytes --------------------------------------------------


def test_refuses_a_file_shorter_than_the_length_field(tmp_path: Path) -> None:
    # given
    path = write_bytes(tmp_path / "short.safetensors", b"\x01\x00\x00")
    # when
    with pytest.raises(HeaderError) as info:
        read_header(path)
    # then
    assert info.value.code == "header_truncated"
    assert "too short" in info.value.message


def test_refuses_a_header_length_of_zero() -> None:
    # given / when
    error = _error(struct.pack("<Q", 0) + b"{}")
    # then
    assert error.code == "header_size_zero"
    assert "0" in str(error)


def test_refuses_a_header_of_100_mib_by_default() -> None:
    # given
    prefix = struct.pack("<Q", MAX_HEADER_BYTES)
    # when
    with pytest.raises(HeaderError) as info:
        parse_header_bytes(prefix, None)
    # then
    assert info.value.code == "header_too_large"
    assert str(MAX_HEADER_BYTES) in info.value.message


def test_refuses_a_header_over_a_given_bound() -> None:
    # given
    content = raw_file_bytes({"w": ONE_U8}, b"x")
    # when
    error = _error(content, max_header_bytes=16)
    # then
    assert error.code == "header_too_large"


def test_refuses_a_header_length_past_the_end_of_the_file(tmp_path: Path) -> None:
    # given
    path = write_bytes(tmp_path / "cut.safetensors", struct.pack("<Q", 1000) + b'{"a":1}')
    # when
    with pytest.raises(HeaderError) as info:
        read_header(path)
    # then
    assert info.value.code == "header_past_end"
    assert "past the end" in info.value.message


class _NoSeek(io.BytesIO):
    def seekable(self) -> bool:
        return False


def test_refuses_a_stream_that_ends_inside_the_header() -> None:
    # given
    stream = _NoSeek(struct.pack("<Q", 100) + b'{"a"')
    # when
    with pytest.raises(HeaderError) as info:
        read_header(stream)
    # then
    assert info.value.code == "header_truncated"
    assert "ends inside" in info.value.message


def test_tells_the_caller_when_a_prefix_stops_inside_the_header() -> None:
    # given
    content = safetensors_bytes({"w": ("F32", (2,))})
    # when
    with pytest.raises(HeaderError) as info:
        parse_header_bytes(content[:20], None)
    # then
    assert info.value.code == "header_incomplete"
    assert info.value.details["need"] > 20


def test_refuses_a_header_that_is_not_utf8() -> None:
    # given / when
    error = _error(raw_file_bytes(b'{"\xff": 1}'))
    # then
    assert error.code == "header_not_utf8"
    assert "UTF-8" in error.message


def test_refuses_a_header_that_does_not_start_with_a_brace() -> None:
    # given / when
    error = _error(raw_file_bytes(b' {"w": 1}'))
    # then
    assert error.code == "header_bad_start"
    assert "'{'" in error.message


def test_refuses_a_header_that_is_not_json() -> None:
    # given / when
    error = _error(raw_file_bytes(b'{"w": [1, 2'))
    # then
    assert error.code == "header_invalid_json"
    assert "not valid JSON" in error.message


def test_refuses_nan_in_the_header() -> None:
    # given / when
    error = _error(raw_file_bytes(b'{"w": NaN}'))
    # then
    assert error.code == "header_invalid_json"


def test_refuses_a_deeply_nested_header_without_crashing() -> None:
    # given / when
    error = _error(raw_file_bytes(b"{" + b'"a":[' * 100_000))
    # then
    assert error.code == "header_invalid_json"


def test_refuses_a_duplicate_tensor_name() -> None:
    # given
    entry = json.dumps(ONE_U8)
    content = raw_file_bytes(f'{{"w": {entry}, "w": {entry}}}', b"x")
    # when
    error = _error(content)
    # then
    assert error.code == "header_duplicate_key"
    assert "'w'" in error.message


def test_refuses_a_duplicate_key_inside_a_tensor_entry() -> None:
    # given
    content = raw_file_bytes(
        '{"w": {"dtype": "U8", "dtype": "F32", "shape": [1], "data_offsets": [0, 1]}}', b"x"
    )
    # when
    error = _error(content)
    # then
    assert error.code == "header_duplicate_key"
    assert "'dtype'" in error.message


# --- refusals: metadata and tensor entries ------------------------------------------------


def test_refuses_metadata_that_is_not_an_object() -> None:
    # given / when
    error = _error(raw_file_bytes({"__metadata__": ["a"], "w": ONE_U8}, b"x"))
    # then
    assert error.code == "metadata_invalid"
    assert "__metadata__" in error.message


def test_refuses_metadata_values_that_are_not_strings() -> None:
    # given / when
    error = _error(raw_file_bytes({"__metadata__": {"ss_network_dim": 8}, "w": ONE_U8}, b"x"))
    # then
    assert error.code == "metadata_invalid"
    assert "ss_network_dim" in error.message


def test_refuses_a_tensor_entry_that_is_not_an_object() -> None:
    # given / when
    error = _tensor_error([1, 2, 3])
    # then
    assert error.code == "tensor_entry_invalid"
    assert "'weight'" in error.message
    assert error.details["tensor"] == "weight"


def test_refuses_a_tensor_entry_missing_a_field() -> None:
    # given / when
    error = _tensor_error({"dtype": "U8", "shape": [1]})
    # then
    assert error.code == "tensor_entry_invalid"
    assert "missing data_offsets" in error.message


def test_refuses_a_tensor_entry_with_an_unknown_field() -> None:
    # given / when
    error = _tensor_error({**ONE_U8, "stride": [1]})
    # then
    assert error.code == "tensor_entry_invalid"
    assert "unexpected stride" in error.message


def test_refuses_an_unknown_dtype() -> None:
    # given / when
    error = _tensor_error({**ONE_U8, "dtype": "F128"})
    # then
    assert error.code == "tensor_dtype_unknown"
    assert "F128" in error.message and "'weight'" in error.message


@pytest.mark.parametrize(
    "shape",
    [[-1], [1.0], [True], "1", [[1]], [1] * 65, [2**40, 2**40]],
    ids=["negative", "float", "bool", "string", "nested", "too-many-dims", "overflow"],
)
def test_refuses_a_bad_shape(shape: object) -> None:
    # given / when
    error = _tensor_error({**ONE_U8, "shape": shape})
    # then
    assert error.code == "tensor_shape_invalid"
    assert "'weight'" in error.message


@pytest.mark.parametrize(
    "offsets",
    [[0], [0, 1, 2], [-1, 0], [0, True], [0, "1"], {"start": 0}],
    ids=["one", "three", "negative", "bool", "string", "object"],
)
def test_refuses_bad_data_offsets(offsets: object) -> None:
    # given / when
    error = _tensor_error({**ONE_U8, "data_offsets": offsets})
    # then
    assert error.code == "tensor_offsets_invalid"
    assert "data_offsets" in error.message


def test_refuses_offsets_whose_start_is_after_their_end() -> None:
    # given / when
    error = _tensor_error({"dtype": "U8", "shape": [0], "data_offsets": [1, 0]})
    # then
    assert error.code == "tensor_offsets_invalid"
    assert "after end" in error.message


def test_refuses_offsets_that_do_not_match_shape_and_dtype() -> None:
    # given / when
    error = _tensor_error({"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}, bytes(4))
    # then
    assert error.code == "tensor_size_mismatch"
    assert "needs 8" in error.message


def test_refuses_a_sub_byte_tensor_that_does_not_fill_whole_bytes() -> None:
    # given / when
    error = _tensor_error({"dtype": "F4", "shape": [3], "data_offsets": [0, 1]})
    # then
    assert error.code == "tensor_size_mismatch"
    assert "whole number of bytes" in error.message


# --- refusals: the layout of the data section ---------------------------------------------


def test_refuses_a_gap_between_tensors() -> None:
    # given
    header = {
        "a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
        "b": {"dtype": "U8", "shape": [1], "data_offsets": [2, 3]},
    }
    # when
    error = _error(raw_file_bytes(header, b"xyz"))
    # then
    assert error.code == "tensor_gap"
    assert "'b'" in error.message


def test_refuses_data_that_does_not_start_at_zero() -> None:
    # given / when
    error = _tensor_error({"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}, b"xy")
    # then
    assert error.code == "tensor_gap"


def test_refuses_overlapping_tensors() -> None:
    # given
    header = {
        "a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
        "b": {"dtype": "U8", "shape": [2], "data_offsets": [1, 3]},
    }
    # when
    error = _error(raw_file_bytes(header, b"xyz"))
    # then
    assert error.code == "tensor_overlap"
    assert "'b'" in error.message


def test_refuses_a_tensor_past_the_end_of_a_truncated_file(tmp_path: Path) -> None:
    # given
    content = safetensors_bytes({"a": ("F32", (4,)), "b": ("F32", (4,))})
    path = write_bytes(tmp_path / "cut.safetensors", content[:-4])
    # when
    with pytest.raises(HeaderError) as info:
        read_header(path)
    # then
    assert info.value.code == "tensor_out_of_range"
    assert "'b'" in info.value.message and "truncated" in info.value.message


def test_refuses_bytes_trailing_after_the_last_tensor(tmp_path: Path) -> None:
    # given
    path = write_bytes(tmp_path / "long.safetensors", safetensors_bytes({"a": ("U8", (4,))}) + b"!")
    # when
    with pytest.raises(HeaderError) as info:
        read_header(path)
    # then
    assert info.value.code == "trailing_data"
    assert "1 bytes are trailing" in info.value.message


def test_checks_offsets_among_themselves_when_the_size_is_unknown() -> None:
    # given
    content = raw_file_bytes(
        {
            "a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
            "b": {"dtype": "U8", "shape": [2], "data_offsets": [1, 3]},
        }
    )
    # when
    with pytest.raises(HeaderError) as info:
        parse_header_bytes(content, None)
    # then
    assert info.value.code == "tensor_overlap"


def test_header_error_is_an_sdcore_error_whose_str_is_the_message() -> None:
    # given
    error = _error(struct.pack("<Q", 0))
    # when / then
    assert isinstance(error, SdcoreError)
    assert str(error) == error.message


def test_reading_a_huge_declared_shape_allocates_nothing_big() -> None:
    # given
    content = raw_file_bytes({"w": {**ONE_U8, "shape": [2**31, 2**31, 2**31]}}, b"x")
    tracemalloc.start()
    # when
    try:
        with pytest.raises(HeaderError):
            parse_header_bytes(content, len(content))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # then
    assert peak < 1024 * 1024


def test_length_helper_reads_the_little_endian_header_size() -> None:
    # given / when / then
    assert header_size_from_prefix(struct.pack("<Q", 1234) + b"{") == 1234


# --- fuzzing ----------------------------------------------------------------------------

_VALID = safetensors_bytes(
    {"a.weight": ("F16", (2, 3)), "b.bias": ("F32", (3,)), "c": ("U8", ())},
    metadata={"format": "pt"},
)


@settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048), st.one_of(st.none(), st.integers(0, 2**64)))
def test_random_bytes_raise_nothing_but_header_error(data: bytes, size: int | None) -> None:
    # given / when / then
    with contextlib.suppress(HeaderError):
        parse_header_bytes(data, size)


@settings(max_examples=150, deadline=2000)
@given(st.data())
def test_mutated_valid_headers_raise_nothing_but_header_error(data: st.DataObject) -> None:
    # given
    content = bytearray(_VALID)
    for _ in range(data.draw(st.integers(1, 8))):
        index = data.draw(st.integers(0, len(content) - 1))
        content[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(content)))
    mutated = bytes(content[:cut])
    # when / then
    try:
        header = parse_header_bytes(mutated, data.draw(st.sampled_from([None, len(mutated)])))
    except HeaderError:
        return
    assert all(t.end >= t.start for t in header.tensors.values())


@settings(max_examples=60, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.text(max_size=8),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
            max_leaves=10,
        ),
        max_size=5,
    )
)
def test_arbitrary_json_objects_raise_nothing_but_header_error(obj: dict[str, object]) -> None:
    # given
    content = raw_file_bytes(json.dumps(obj), bytes(16))
    # when / then
    with contextlib.suppress(HeaderError):
        parse_header_bytes(content, len(content))
