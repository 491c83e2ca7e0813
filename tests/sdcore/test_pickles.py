"""Pickle scanning: imports listed and classified, and nothing ever unpickled."""

from __future__ import annotations

import _compat_pickle
import builtins
import collections
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from picklescan import scanner as picklescan_scanner

from sdcore.errors import UnsafePickleError
from sdcore.pickles import (
    assert_safe_pickle,
    classify_import,
    scan_pickle_bytes,
    scan_pickle_file,
)
from tests.sdcore.fixtures import write_bytes


class _RunsCommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


class _Evals:
    def __init__(self, source: str) -> None:
        self.source = source

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (builtins.eval, (self.source,))


def _touch_command(marker: Path) -> str:
    return f"touch {marker}"


def _state_dict() -> collections.OrderedDict[str, torch.Tensor]:
    return collections.OrderedDict(
        {
            "model.diffusion_model.conv.weight": torch.zeros(4, 4, dtype=torch.float16),
            "model.diffusion_model.conv.bias": torch.ones(4, dtype=torch.float32),
            "cond_stage_model.emb": torch.zeros(2, 3, dtype=torch.bfloat16),
        }
    )


def _replace_member(path: Path, suffix: str, content: bytes) -> None:
    with zipfile.ZipFile(path) as src:
        members = [(info, src.read(info)) for info in src.infolist()]
    with zipfile.ZipFile(path, "w") as dst:
        for info, data in members:
            dst.writestr(info, content if info.filename.endswith(suffix) else data)


# --- legitimate checkpoints --------------------------------------------------------------


def test_torch_zip_state_dict_is_safe(tmp_path: Path) -> None:
    # given
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": _state_dict(), "global_step": 10}, path)
    # when
    scan = scan_pickle_file(path)
    # then
    assert scan.safe and scan.format == "zip"
    assert ("torch._utils", "_rebuild_tensor_v2") in scan.globals
    assert ("collections", "OrderedDict") in scan.globals
    assert ("torch", "HalfStorage") in scan.globals
    assert scan.dangerous == []


def test_torch_legacy_format_is_scanned_through_all_its_pickles(tmp_path: Path) -> None:
    # given
    path = tmp_path / "model.pt"
    torch.save(_state_dict(), path, _use_new_zipfile_serialization=False)
    # when
    scan = scan_pickle_file(path)
    # then
    assert scan.safe and scan.format == "pickle"
    assert ("torch._utils", "_rebuild_tensor_v2") in scan.globals


def test_numpy_arrays_and_scalars_are_safe(tmp_path: Path) -> None:
    # given
    content = pickle.dumps({"arr": np.zeros(3, np.float32), "score": np.float64(0.5)}, protocol=2)
    # when
    scan = scan_pickle_bytes(content)
    # then
    assert scan.safe, scan.dangerous
    assert any(name == "_reconstruct" for _mod, name in scan.globals)


def test_assert_safe_pickle_returns_the_scan_of_a_safe_file(tmp_path: Path) -> None:
    # given
    path = tmp_path / "emb.pt"
    torch.save({"string_to_param": {"*": torch.zeros(2, 768)}}, path)
    # when
    scan = assert_safe_pickle(path)
    # then
    assert scan.safe


def test_lightning_checkpoint_callback_is_allowed() -> None:
    # given
    content = b"\x80\x02cpytorch_lightning.callbacks.model_checkpoint\nModelCheckpoint\nq\x00."
    # when
    scan = scan_pickle_bytes(content)
    # then
    assert scan.safe


# --- malicious pickles -------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_os_system_is_refused_in_every_protocol(tmp_path: Path, protocol: int) -> None:
    # given
    marker = tmp_path / "pwned"
    path = write_bytes(
        tmp_path / "evil.ckpt", pickle.dumps(_RunsCommand(_touch_command(marker)), protocol)
    )
    # when
    with pytest.raises(UnsafePickleError) as info:
        assert_safe_pickle(path)
    # then
    assert info.value.code == "pickle_dangerous_import"
    assert f"{os.system.__module__}.system" in info.value.message
    assert not marker.exists()


def test_builtins_eval_is_refused(tmp_path: Path) -> None:
    # given
    marker = tmp_path / "pwned"
    source = f"__import__('os').system('touch {marker}')"
    path = write_bytes(tmp_path / "evil.pt", pickle.dumps(_Evals(source), protocol=4))
    # when
    with pytest.raises(UnsafePickleError) as info:
        assert_safe_pickle(path)
    # then
    assert "refused: the pickle imports builtins.eval" in info.value.message
    assert not marker.exists()


def test_stack_global_resolved_through_the_memo() -> None:
    # given: "os" is memoized, a decoy string is pushed and popped, then BINGET brings "os" back
    content = (
        b"\x80\x04"
        b"\x8c\x02os" b"q\x00" b"0"  # push "os", BINPUT 0, POP
        b"\x8c\x0bcollections" b"0"  # decoy string, POP
        b"h\x00" b"\x8c\x06system" b"\x93"  # BINGET 0, "system", STACK_GLOBAL
        b"\x8c\x04echo\x85R."  # ("echo",), REDUCE, STOP
    )  # fmt: skip
    # when
    scan = scan_pickle_bytes(content)
    # then
    assert ("os", "system") in scan.dangerous
    assert ("collections", "system") not in scan.globals


def test_stack_global_resolved_through_memoize() -> None:
    # given
    content = (
        b"\x80\x04"
        b"\x8c\x08builtins\x94" b"0"  # "builtins", MEMOIZE (index 0), POP
        b"\x8c\x04exec\x94" b"0"  # "exec", MEMOIZE (index 1), POP
        b"h\x00h\x01\x93"  # BINGET 0, BINGET 1, STACK_GLOBAL
        b"\x8c\x01x\x85R."
    )  # fmt: skip
    # when
    scan = scan_pickle_bytes(content)
    # then
    assert scan.dangerous == [("builtins", "exec")]


def test_stack_global_with_arguments_that_are_not_strings_is_refused() -> None:
    # given
    content = b"\x80\x04K\x01K\x02\x93."  # two ints, STACK_GLOBAL
    # when
    scan = scan_pickle_bytes(content)
    # then
    assert not scan.safe
    assert scan.dangerous[0][0] == "<unresolved>"


def test_inst_opcode_import_is_refused() -> None:
    # given
    content = b"(S'echo'\nios\nsystem\n."
    # when
    scan = scan_pickle_bytes(content)
    # then
    assert ("os", "system") in scan.dangerous


def test_extension_registry_import_is_refused() -> None:
    # given
    content = b"\x80\x02\x82\x01)R."  # EXT1 1, empty tuple, REDUCE
    # when
    scan = scan_pickle_bytes(content)
    # then
    assert not scan.safe
    assert scan.dangerous[0][0] == "copyreg"


def test_malicious_data_pkl_inside_a_torch_zip_is_refused(tmp_path: Path) -> None:
    # given
    marker = tmp_path / "pwned"
    path = tmp_path / "model.ckpt"
    torch.save(_state_dict(), path)
    _replace_member(path, "data.pkl", pickle.dumps(_RunsCommand(_touch_command(marker)), 2))
    # when
    with pytest.raises(UnsafePickleError) as info:
        assert_safe_pickle(path)
    # then
    assert "system" in info.value.message
    assert not marker.exists()


def test_every_pkl_member_of_a_zip_is_scanned(tmp_path: Path) -> None:
    # given
    path = tmp_path / "model.ckpt"
    torch.save(_state_dict(), path)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("model/extra.pkl", pickle.dumps(_Evals("1"), protocol=2))
    # when
    scan = scan_pickle_file(path)
    # then
    assert ("builtins", "eval") in scan.dangerous
    assert len(scan.pickles) == 2


def test_a_second_pickle_after_the_first_is_scanned_too() -> None:
    # given
    content = pickle.dumps({"a": 1}, 2) + pickle.dumps(_Evals("1"), 2)
    # when
    scan = scan_pickle_bytes(content)
    # then
    assert ("builtins", "eval") in scan.dangerous


def test_unknown_import_is_refused_as_not_allow_listed() -> None:
    # given
    content = b"\x80\x02cmypackage.models\nThing\nq\x00)R."
    # when
    scan = scan_pickle_bytes(content)
    # then
    assert scan.dangerous == [("mypackage.models", "Thing")]
    assert classify_import("mypackage.models", "Thing") == "unknown"


def test_unknown_import_error_names_it(tmp_path: Path) -> None:
    # given
    path = write_bytes(tmp_path / "m.ckpt", b"\x80\x02cmypackage.models\nThing\nq\x00)R.")
    # when
    with pytest.raises(UnsafePickleError) as info:
        assert_safe_pickle(path)
    # then
    assert info.value.code == "pickle_unknown_import"
    assert "mypackage.models.Thing" in info.value.message


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("os", "system"),
        ("posix", "system"),
        ("nt", "system"),
        ("subprocess", "Popen"),
        ("builtins", "getattr"),
        ("builtins", "__import__"),
        ("__builtin__", "open"),
        ("runpy", "run_path"),
        ("webbrowser", "open"),
        ("socket", "socket"),
        ("sys", "modules"),
        ("shutil", "rmtree"),
        ("pty", "spawn"),
        ("importlib", "import_module"),
    ],
)
def test_known_dangerous_imports_are_classified_dangerous(module: str, name: str) -> None:
    # given / when / then
    assert classify_import(module, name) == "dangerous"


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("collections", "OrderedDict"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch", "FloatStorage"),
        ("torch", "BFloat16Storage"),
        ("torch", "Size"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
        ("builtins", "set"),
    ],
)
def test_what_checkpoints_use_is_classified_safe(module: str, name: str) -> None:
    # given / when / then
    assert classify_import(module, name) == "safe"


# --- files that cannot be scanned --------------------------------------------------------


def test_malformed_pickle_is_refused(tmp_path: Path) -> None:
    # given
    path = write_bytes(tmp_path / "bad.ckpt", b"\x80\x02\xff\xff\xff")
    # when
    with pytest.raises(UnsafePickleError) as info:
        assert_safe_pickle(path)
    # then
    assert info.value.code == "pickle_malformed"
    assert "malformed" in info.value.message


def test_pickle_without_stop_is_not_safe() -> None:
    # given
    content = b"\x80\x02}q\x00"
    # when
    scan = scan_pickle_bytes(content)
    # then
    assert not scan.safe
    assert scan.errors


def test_zip_without_any_pickle_is_refused(tmp_path: Path) -> None:
    # given
    path = tmp_path / "model.ckpt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model/data/0", b"\x00" * 16)
    # when
    with pytest.raises(UnsafePickleError) as info:
        assert_safe_pickle(path)
    # then
    assert info.value.code == "pickle_missing"
    assert "no pickle" in info.value.message


def test_a_pickle_over_the_size_limit_is_not_read_past_it() -> None:
    # given: BINBYTES8 declaring 2**40 bytes
    content = b"\x80\x04\x8e" + (2**40).to_bytes(8, "little") + b"\x00" * 64
    # when
    scan = scan_pickle_bytes(content, max_pickle_bytes=1024)
    # then
    assert not scan.safe
    assert scan.errors


def _python3(module: str, name: str) -> tuple[str, str]:
    mapped: tuple[str, str] = _compat_pickle.NAME_MAPPING.get(
        (module, name), (_compat_pickle.IMPORT_MAPPING.get(module, module), name)
    )
    return mapped


def test_finds_every_import_that_picklescan_finds(tmp_path: Path) -> None:
    # given: an independent scanner, over legitimate and malicious files
    samples = {
        "zip.ckpt": None,
        "legacy.pt": None,
        **{f"evil{p}.pkl": pickle.dumps(_RunsCommand("true"), p) for p in range(6)},
        "eval.pkl": pickle.dumps(_Evals("1"), 4),
        "numpy.pkl": pickle.dumps(np.zeros(2), 4),
    }
    torch.save(_state_dict(), tmp_path / "zip.ckpt")
    torch.save(_state_dict(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    for name, content in samples.items():
        if content is not None:
            write_bytes(tmp_path / name, content)
    for name in samples:
        # when
        theirs = {
            _python3(g.module, g.name)
            for g in picklescan_scanner.scan_file_path(str(tmp_path / name)).globals
        }
        ours = set(scan_pickle_file(tmp_path / name).globals)
        # then
        assert theirs <= ours, name
