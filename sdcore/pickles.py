"""Scan pickle checkpoints (.ckpt, .pt, .pth, .bin) for dangerous imports, never unpickling.

Loading a pickle runs whatever callables it imports, so this module only *reads* the
opcodes with `pickletools.genops` and lists every import the pickle would make:
``GLOBAL`` and ``INST`` carry "module name" in their argument; ``STACK_GLOBAL`` takes the two
strings on top of the stack, which may come from the memo (``BINGET``), so a small model of
the unpickler's stack and memo resolves them. The extension registry (``EXT1/2/4``) imports
too, and is always refused.

Three layouts are read: the torch zip format (every ``*.pkl`` member, e.g.
``archive/data.pkl``), torch's legacy format (five pickles one after the other, then raw
storage bytes) and a plain pickle. Every import is classified against an allow-list of
what Stable Diffusion checkpoints legitimately use; anything else is dangerous, known bad
names (``os.system``, ``builtins.eval``...) or not.
"""

from __future__ import annotations

import _compat_pickle
import io
import os
import pickletools
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

from sdcore.errors import UnsafePickleError

__all__ = [
    "MAX_PICKLE_BYTES",
    "PickleScan",
    "assert_safe_pickle",
    "classify_import",
    "scan_pickle_bytes",
    "scan_pickle_file",
]

MAX_PICKLE_BYTES = 256 * 1024 * 1024
"""Most bytes of pickle opcodes read from one pickle (a zip member or a raw file)."""

_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_TORCH_LEGACY_PICKLES = 5  # magic, protocol, sys info, the object, storage keys

_TORCH_STORAGES = frozenset(
    f"{kind}Storage"
    for kind in (
        "Double",
        "Float",
        "Half",
        "BFloat16",
        "Long",
        "Int",
        "Short",
        "Char",
        "Byte",
        "Bool",
        "ComplexFloat",
        "ComplexDouble",
        "QUInt8",
        "QInt8",
        "QInt32",
        "QUInt4x2",
        "QUInt2x4",
        "Untyped",
    )
)
_TORCH_DTYPES = frozenset(
    {
        "float16",
        "float32",
        "float64",
        "bfloat16",
        "half",
        "float",
        "double",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "bool",
        "complex64",
        "complex128",
        "float8_e4m3fn",
        "float8_e5m2",
    }
)

SAFE_IMPORTS: frozenset[tuple[str, str]] = frozenset(
    {
        ("collections", "OrderedDict"),
        ("collections", "defaultdict"),
        ("torch._utils", "_rebuild_tensor"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch._utils", "_rebuild_parameter_with_state"),
        ("torch._utils", "_rebuild_device_tensor_from_numpy"),
        ("torch._utils", "_rebuild_qtensor"),
        ("torch", "Size"),
        ("torch", "device"),
        ("torch.nn.modules.container", "ParameterDict"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "dtype"),
        ("numpy", "ndarray"),
        ("_codecs", "encode"),
        ("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint"),
        ("lightning.pytorch.callbacks.model_checkpoint", "ModelCheckpoint"),
    }
    | {("torch", name) for name in _TORCH_STORAGES | _TORCH_DTYPES}
    | {
        (module, name)
        for module in ("builtins", "__builtin__")
        for name in (
            "set",
            "frozenset",
            "dict",
            "list",
            "tuple",
            "bytearray",
            "bytes",
            "complex",
            "int",
            "float",
            "bool",
            "str",
            "slice",
            "range",
        )
    }
)
"""(module, name) pairs that Stable Diffusion checkpoints import and that cannot run code."""

_DANGEROUS_MODULES = frozenset(
    {
        "os",
        "posix",
        "nt",
        "subprocess",
        "runpy",
        "webbrowser",
        "socket",
        "sys",
        "shutil",
        "pty",
        "importlib",
        "pickle",
        "_pickle",
        "marshal",
        "ctypes",
        "code",
        "codeop",
        "commands",
        "multiprocessing",
        "asyncio",
        "threading",
        "requests",
        "urllib",
        "http",
        "ftplib",
        "telnetlib",
        "smtplib",
        "tempfile",
        "pathlib",
        "io",
        "zipimport",
        "pip",
        "setuptools",
        "operator",
        "functools",
        "types",
        "torch.storage",
        "torch.hub",
        "torch.jit",
        "timeit",
        "pdb",
        "bdb",
        "profile",
        "cProfile",
        "trace",
    }
)
_DANGEROUS_BUILTINS = frozenset(
    {
        "eval",
        "exec",
        "compile",
        "getattr",
        "setattr",
        "delattr",
        "__import__",
        "open",
        "input",
        "breakpoint",
        "globals",
        "locals",
        "vars",
        "memoryview",
        "type",
        "object",
        "super",
        "help",
        "exit",
        "quit",
    }
)


@dataclass
class PickleScan:
    """What a pickle file would import if loaded.

    ``safe`` is True when every import is on the allow-list and every pickle was read to
    its end (a malformed pickle is never called safe). ``globals`` lists each import once,
    in order of appearance; ``dangerous`` the ones that are not allowed.
    """

    safe: bool
    globals: list[tuple[str, str]]
    dangerous: list[tuple[str, str]]
    format: str  # "zip" | "pickle"
    errors: list[str] = field(default_factory=list)
    pickles: list[str] = field(default_factory=list)  # zip members (or "<file>") scanned


def classify_import(module: str, name: str) -> str:
    """``"safe"``, ``"dangerous"`` (a known way to run code) or ``"unknown"`` (also refused)."""
    if (module, name) in SAFE_IMPORTS:
        return "safe"
    top = module.split(".", 1)[0]
    if module in ("builtins", "__builtin__") and name in _DANGEROUS_BUILTINS:
        return "dangerous"
    if module in _DANGEROUS_MODULES or top in _DANGEROUS_MODULES:
        return "dangerous"
    return "unknown"


def scan_pickle_file(
    path: str | os.PathLike[str], *, max_pickle_bytes: int = MAX_PICKLE_BYTES
) -> PickleScan:
    """List the imports of a torch zip checkpoint, a legacy torch file or a raw pickle."""
    with open(path, "rb") as fh:
        is_zip = fh.read(4) == b"PK\x03\x04"
        fh.seek(0)
        if is_zip:
            return _scan_zip(fh, max_pickle_bytes)
        scan = _Collector()
        _scan_stream(fh, scan, "<file>", max_pickle_bytes)
        return scan.result("pickle")


def scan_pickle_bytes(data: bytes, *, max_pickle_bytes: int = MAX_PICKLE_BYTES) -> PickleScan:
    """`scan_pickle_file` for bytes held in memory."""
    if data[:4] == b"PK\x03\x04":
        return _scan_zip(io.BytesIO(data), max_pickle_bytes)
    scan = _Collector()
    _scan_stream(io.BytesIO(data), scan, "<bytes>", max_pickle_bytes)
    return scan.result("pickle")


def assert_safe_pickle(
    path: str | os.PathLike[str], *, max_pickle_bytes: int = MAX_PICKLE_BYTES
) -> PickleScan:
    """Scan and return the result, or raise `UnsafePickleError` naming the first problem.

    Codes: ``pickle_dangerous_import`` (a known way to run code, e.g. ``os.system``),
    ``pickle_unknown_import`` (not on the allow-list), ``pickle_malformed`` (unreadable),
    ``pickle_missing`` (a zip without any ``.pkl`` member).
    """
    scan = scan_pickle_file(path, max_pickle_bytes=max_pickle_bytes)
    if scan.dangerous:
        known = [imp for imp in scan.dangerous if classify_import(*imp) == "dangerous"]
        first = known[0] if known else scan.dangerous[0]
        names = ", ".join(f"{m}.{n}" for m, n in scan.dangerous[:10])
        more = "" if len(scan.dangerous) <= 10 else f" and {len(scan.dangerous) - 10} more"
        if known:
            message = (
                f"refused: the pickle imports {first[0]}.{first[1]}, which can run code "
                f"(not allowed: {names}{more})"
            )
            code = "pickle_dangerous_import"
        else:
            message = (
                f"refused: the pickle imports {first[0]}.{first[1]}, which is not on the "
                f"allow-list of what checkpoints use (not allowed: {names}{more})"
            )
            code = "pickle_unknown_import"
        raise UnsafePickleError(
            message,
            code=code,
            details={"imports": [f"{m}.{n}" for m, n in scan.dangerous]},
        )
    if scan.errors:
        code = "pickle_missing" if not scan.pickles else "pickle_malformed"
        raise UnsafePickleError(
            f"refused: the file cannot be scanned safely: {scan.errors[0]}",
            code=code,
            details={"errors": scan.errors},
        )
    return scan


# --- scanning ----------------------------------------------------------------------------


class _Collector:
    def __init__(self) -> None:
        self.globals: list[tuple[str, str]] = []
        self._seen: set[tuple[str, str]] = set()
        self.errors: list[str] = []
        self.pickles: list[str] = []

    def add(self, module: str, name: str) -> None:
        key = _python3_name(module, name)
        if key not in self._seen:
            self._seen.add(key)
            self.globals.append(key)

    def result(self, fmt: str) -> PickleScan:
        dangerous = [g for g in self.globals if classify_import(*g) != "safe"]
        return PickleScan(
            safe=not dangerous and not self.errors,
            globals=list(self.globals),
            dangerous=dangerous,
            format=fmt,
            errors=list(self.errors),
            pickles=list(self.pickles),
        )


def _python3_name(module: str, name: str) -> tuple[str, str]:
    """The name Python 3's unpickler imports for a Python 2 one (``__builtin__.eval``...)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        mapped: tuple[str, str] = _compat_pickle.NAME_MAPPING[(module, name)]
        return mapped
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _scan_zip(fh: IO[bytes], max_pickle_bytes: int) -> PickleScan:
    scan = _Collector()
    try:
        archive = zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        scan.errors.append(f"not a readable zip archive: {exc}")
        return scan.result("zip")
    with archive:
        members = [i for i in archive.infolist() if i.filename.endswith(".pkl")]
        if not members:
            scan.errors.append("the zip holds no pickle (no member named *.pkl)")
        for info in members:
            if info.file_size > max_pickle_bytes:
                scan.pickles.append(info.filename)
                scan.errors.append(
                    f"{info.filename}: {info.file_size} bytes is over the limit of "
                    f"{max_pickle_bytes} bytes"
                )
                continue
            try:
                with archive.open(info) as member:
                    _scan_stream(member, scan, info.filename, max_pickle_bytes)
            except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as exc:
                scan.errors.append(f"{info.filename}: cannot read the member: {exc}")
    return scan.result("zip")


class _Reader:
    """What `pickletools.genops` reads from: a bound on the bytes read, a position, a peek."""

    def __init__(self, inner: IO[bytes], limit: int) -> None:
        self._inner = inner
        self._left = limit
        self._pos = 0
        self._pushback = b""

    def tell(self) -> int:
        return self._pos

    def _take(self, data: bytes) -> bytes:
        if len(data) > self._left:
            raise ValueError(f"the pickle is larger than the scan limit at byte {self._pos}")
        self._left -= len(data)
        self._pos += len(data)
        return data

    def read(self, size: int = -1) -> bytes:
        want = self._left + 1 if size is None or size < 0 else min(size, self._left + 1)
        head, self._pushback = self._pushback[:want], self._pushback[want:]
        rest = self._inner.read(want - len(head)) if want > len(head) else b""
        return self._take(head + rest)

    def readline(self, size: int = -1) -> bytes:
        if self._pushback:
            head, self._pushback = self._pushback, b""
            if head.endswith(b"\n"):
                return self._take(head)
        else:
            head = b""
        want = self._left + 2 - len(head)
        return self._take(head + self._inner.readline(max(want, 1)))

    def peek(self) -> bytes:
        """The next byte without consuming it (empty at the end)."""
        if not self._pushback:
            self._pushback = self._inner.read(1)
        return self._pushback[:1]


def _scan_stream(fh: IO[bytes], scan: _Collector, label: str, max_pickle_bytes: int) -> None:
    """Scan the first pickle, and the rest of torch's legacy sequence of pickles."""
    reader = _Reader(fh, max_pickle_bytes)
    scan.pickles.append(label)
    ok, first_int = _scan_one(reader, scan, label)
    if not ok:
        return
    if first_int == _TORCH_LEGACY_MAGIC:
        for _ in range(_TORCH_LEGACY_PICKLES - 1):
            ok, _value = _scan_one(reader, scan, label)
            if not ok:
                return
        return
    # torch.load reads only the first pickle of a plain file, but a caller could call
    # pickle.load again: scan any pickle that follows too (imports met before a parse
    # error count as well, since the unpickler would have run them already).
    while reader.peek() == b"\x80":
        ok, _value = _scan_one(reader, scan, label, record_errors=False)
        if not ok:
            return


_MARK = object()
_UNKNOWN = object()
_STRING_OPS = frozenset(
    {
        "STRING",
        "BINSTRING",
        "SHORT_BINSTRING",
        "UNICODE",
        "BINUNICODE",
        "SHORT_BINUNICODE",
        "BINUNICODE8",
    }
)


def _scan_one(
    reader: _Reader, scan: _Collector, label: str, *, record_errors: bool = True
) -> tuple[bool, object]:
    """Read one pickle to its STOP, recording imports. Returns (read to the end, first int)."""
    stack: list[object] = []
    memo: dict[int, object] = {}
    first_int: object = None
    try:
        for opcode, arg, pos in _genops(reader):
            name = opcode.name
            if first_int is None and name in ("LONG1", "LONG4", "INT", "BININT", "LONG"):
                first_int = arg
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                scan.add(module, attr)
            elif name == "STACK_GLOBAL":
                attr_obj = stack.pop() if stack else _UNKNOWN
                module_obj = stack.pop() if stack else _UNKNOWN
                if isinstance(module_obj, str) and isinstance(attr_obj, str):
                    scan.add(module_obj, attr_obj)
                else:
                    scan.add("<unresolved>", f"STACK_GLOBAL at byte {pos}")
                stack.append(_UNKNOWN)
                continue
            elif name in ("EXT1", "EXT2", "EXT4"):
                scan.add("copyreg", f"extension code {arg}")
            _simulate(opcode, arg, stack, memo)
            if name == "STOP":
                return True, first_int
    except Exception as exc:  # any failure to parse hostile bytes means "malformed"
        if record_errors:
            scan.errors.append(f"{label}: malformed pickle: {exc}")
        return False, first_int
    if record_errors:
        scan.errors.append(f"{label}: the pickle ends without a STOP opcode")
    return False, first_int


def _genops(reader: _Reader) -> Iterator[tuple[pickletools.OpcodeInfo, object, int]]:
    # genops only calls read, readline and tell, which _Reader provides.
    for opcode, arg, pos in pickletools.genops(reader):  # type: ignore[arg-type]
        yield opcode, arg, pos if pos is not None else -1


def _simulate(
    opcode: pickletools.OpcodeInfo, arg: object, stack: list[object], memo: dict[int, object]
) -> None:
    """Model the unpickler's stack and memo just enough to resolve STACK_GLOBAL."""
    name = opcode.name
    if name == "MARK":
        stack.append(_MARK)
        return
    if name in _STRING_OPS:
        stack.append(arg if isinstance(arg, str) else _UNKNOWN)
        return
    if name in ("GET", "BINGET", "LONG_BINGET"):
        stack.append(memo.get(_int_arg(arg), _UNKNOWN))
        return
    if name in ("PUT", "BINPUT", "LONG_BINPUT"):
        memo[_int_arg(arg)] = stack[-1] if stack else _UNKNOWN
        return
    if name == "MEMOIZE":
        memo[len(memo)] = stack[-1] if stack else _UNKNOWN
        return
    if name == "POP":
        if stack:
            stack.pop()
        return
    before = opcode.stack_before
    if pickletools.markobject in before:
        # Everything down to the mark goes, then whatever sits below the mark.
        while stack:
            if stack.pop() is _MARK:
                break
        below = before.index(pickletools.markobject)
        for _ in range(below):
            if stack:
                stack.pop()
    else:
        for _ in range(len(before)):
            if stack:
                stack.pop()
    stack.extend(_UNKNOWN for _ in opcode.stack_after)


def _int_arg(arg: object) -> int:
    if isinstance(arg, int):
        return arg
    return int(str(arg))
