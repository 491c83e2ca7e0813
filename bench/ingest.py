"""Ingest benchmark: upload a large safetensors file through the HTTP API, end to end.

    python bench/ingest.py --size 2G

Writes a valid safetensors file (a few LoRA-named tensors and one big U8 tensor) without
holding it in memory, starts gunicorn with a throw-away PostgreSQL database, and uploads the
file the way a client does: POST /api/v1/uploads (no sha256: hashing is the server's job),
one streaming PATCH with the whole body, POST .../complete (hashes, inspection, storage).
The reference is ``sha256sum`` of the same file in the same run, page cache warm for both.
Prints ``ingest: server X s, sha256sum Y s, ratio X/Y (target <= 1.5)`` and the worker's
peak RSS (target < 300 MB).
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import BenchEnv, Server, bench_env, create_user_and_token, parse_size

CHUNK = 1024 * 1024
RATIO_TARGET = 1.5
RSS_TARGET_MB = 300


def write_safetensors(path: Path, size: int, *, rank: int = 8) -> int:
    """Write a valid LoRA-like safetensors file of exactly ``size`` bytes (or the minimum).

    Small F16 ``lora_down``/``lora_up``/``alpha`` tensors come first, then one U8 tensor takes
    the rest. The data is a repeated random block, written 1 MiB at a time.
    """
    small: list[tuple[str, str, list[int]]] = []
    for block in range(2):
        base = f"lora_unet_down_blocks_0_attentions_{block}_proj_in"
        small += [
            (f"{base}.lora_down.weight", "F16", [rank, 320]),
            (f"{base}.lora_up.weight", "F16", [320, rank]),
            (f"{base}.alpha", "F16", []),
        ]

    def nbytes(dtype: str, shape: list[int]) -> int:
        n = 1
        for dim in shape:
            n *= dim
        return n * (2 if dtype == "F16" else 1)

    def header_for(big: int) -> bytes:
        entries: dict[str, object] = {
            "__metadata__": {
                "ss_network_module": "networks.lora",
                "ss_network_dim": str(rank),
                "ss_network_alpha": str(rank),
                "bench": "atelier",
            }
        }
        offset = 0
        for name, dtype, shape in small:
            end = offset + nbytes(dtype, shape)
            entries[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, end]}
            offset = end
        entries["bench_padding.weight"] = {
            "dtype": "U8",
            "shape": [big],
            "data_offsets": [offset, offset + big],
        }
        raw = json.dumps(entries, separators=(",", ":")).encode()
        return raw + b" " * (-len(raw) % 8)

    small_bytes = sum(nbytes(d, s) for _, d, s in small)
    header = header_for(1)
    big = max(1, size - 8 - len(header) - small_bytes)
    header = header_for(big)
    # The header's length may change with the digits of ``big``; settle it.
    big = max(1, size - 8 - len(header) - small_bytes)
    header = header_for(big)
    block = os.urandom(CHUNK)
    alpha = struct.pack("<e", float(rank))
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(header)))
        fh.write(header)
        for name, dtype, shape in small:
            fh.write(alpha if name.endswith(".alpha") else block[: nbytes(dtype, shape)])
        left = big
        while left > 0:
            n = min(CHUNK, left)
            fh.write(block[:n] if n < CHUNK else block)
            left -= n
    return path.stat().st_size


class FileBody:
    """A request body that streams a file in 1 MiB reads and has a known length.

    ``requests`` sends an object with ``__len__`` and ``__iter__`` with a Content-Length and
    no chunked encoding; a plain file object would be sent 8 KiB at a time by http.client.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[bytes]:
        with open(self.path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                yield chunk


@dataclass(frozen=True)
class UploadTiming:
    upload_id: str
    sha256: str
    create_s: float
    patch_s: float
    complete_s: float
    inspection: dict

    @property
    def total_s(self) -> float:
        return self.create_s + self.patch_s + self.complete_s


def api_upload(base_url: str, token: str, path: Path) -> UploadTiming:
    """Upload ``path`` through the API: create, one streaming PATCH, complete."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    size = path.stat().st_size
    t0 = time.perf_counter()
    created = session.post(
        f"{base_url}/api/v1/uploads", json={"filename": path.name, "size": size}, timeout=60
    )
    created.raise_for_status()
    upload_id = created.json()["id"]
    t1 = time.perf_counter()
    patched = session.patch(
        f"{base_url}/api/v1/uploads/{upload_id}",
        data=FileBody(path),
        headers={"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
        timeout=1800,
    )
    patched.raise_for_status()
    if patched.json()["offset"] != size:
        raise RuntimeError(f"PATCH stored {patched.json()['offset']} of {size} bytes")
    t2 = time.perf_counter()
    done = session.post(f"{base_url}/api/v1/uploads/{upload_id}/complete", timeout=1800)
    if done.status_code != 200:
        raise RuntimeError(f"complete failed: {done.status_code} {done.text[:2000]}")
    t3 = time.perf_counter()
    body = done.json()
    return UploadTiming(upload_id, body["sha256"], t1 - t0, t2 - t1, t3 - t2, body["inspection"])


def warm_up(base_url: str, token: str, workdir: Path) -> None:
    """Two tiny uploads first, so that neither worker is timed while importing lazily."""
    small = workdir / "warm-up.safetensors"
    write_safetensors(small, 64 * 1024)
    for _ in range(2):
        api_upload(base_url, token, small)
    small.unlink()


def warm_cache(path: Path) -> None:
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(8 * CHUNK)
        while fh.readinto(buf):
            pass


def time_sha256sum(path: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(["sha256sum", str(path)], check=True, capture_output=True, text=True)
    return time.perf_counter() - t0, out.stdout.split()[0]


def time_openssl(path: Path) -> float | None:
    t0 = time.perf_counter()
    try:
        subprocess.run(["openssl", "dgst", "-sha256", str(path)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return time.perf_counter() - t0


PROFILE_CONF = """
import cProfile, os
_state = {}
def pre_request(worker, req):
    if req.method in ("PATCH", "POST"):
        _state["p"] = cProfile.Profile()
        _state["p"].enable()
def post_request(worker, req, environ, resp):
    prof = _state.pop("p", None)
    if prof is not None:
        prof.disable()
        name = req.path.rstrip("/").rsplit("/", 1)[-1][:12]
        prof.dump_stats(os.path.join(%r, f"{req.method}-{name}-{os.getpid()}.prof"))
"""


def run(size: int, bench: BenchEnv, profile_dir: Path | None = None) -> dict[str, float]:
    model_path = bench.workdir / "bench-lora.safetensors"
    t0 = time.perf_counter()
    actual = write_safetensors(model_path, size)
    print(f"wrote {model_path.name}: {actual} bytes in {time.perf_counter() - t0:.1f} s")
    token = create_user_and_token(bench)
    extra: tuple[str, ...] = ()
    if profile_dir is not None:  # cProfile each POST/PATCH in the worker (main thread only)
        profile_dir.mkdir(parents=True, exist_ok=True)
        conf = bench.workdir / "gunicorn_profile.py"
        conf.write_text(PROFILE_CONF % str(profile_dir.resolve()))
        extra = ("--config", str(conf))
    with Server(bench, extra_args=extra) as server:
        warm_up(server.base_url, token, bench.workdir)
        warm_cache(model_path)
        ref_s, ref_sha = time_sha256sum(model_path)
        ssl_s = time_openssl(model_path)
        timing = api_upload(server.base_url, token, model_path)
        rss = server.peak_rss_mb()
    model_path.unlink(missing_ok=True)
    if timing.sha256 != ref_sha:
        raise RuntimeError(f"server sha256 {timing.sha256} != sha256sum {ref_sha}")
    ratio = timing.total_s / ref_s
    mb = actual / 1024**2
    print(
        f"ingest phases: create {timing.create_s:.3f} s, PATCH (receive+write+hash) "
        f"{timing.patch_s:.2f} s ({mb / timing.patch_s:.0f} MiB/s), complete "
        f"(digest+inspect+store) {timing.complete_s:.2f} s; kind={timing.inspection.get('kind')}"
    )
    print(
        f"ingest: server {timing.total_s:.2f} s, sha256sum {ref_s:.2f} s, "
        f"ratio {ratio:.2f} (target <= {RATIO_TARGET})"
    )
    print(f"ingest: worker peak RSS {rss:.0f} MB (target < {RSS_TARGET_MB} MB)")
    if ssl_s is not None:  # context only: OpenSSL's SHA-256 uses the CPU's SHA extensions
        print(
            f"ingest (context): openssl dgst -sha256 {ssl_s:.2f} s, server/openssl "
            f"{timing.total_s / ssl_s:.2f}"
        )
    return {"server_s": timing.total_s, "sha256sum_s": ref_s, "ratio": ratio, "rss_mb": rss}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="2G", help="file size: 2G, 512M, 4M, ...")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="folder for cProfile dumps of each upload request in the worker",
    )
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    print(f"== ingest --size {args.size} ({size} bytes)")
    with bench_env("ingest") as bench:
        run(size, bench, args.profile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
