"""Download benchmark: a published file through the registry vs ``python -m http.server``.

    python bench/download.py --size 2G

Uploads a large safetensors file through the API, publishes it with the catalogue services,
then downloads it N times through ``/api/download/models/{id}`` (302 to the signed
``/files/...`` URL, served by gunicorn with sendfile), and N times from ``python -m
http.server`` serving the same bytes from their folder, with the same client (``curl -o
/dev/null`` by default, or ``requests`` streaming 1 MiB chunks). Prints both throughputs and
the ratio registry/http.server (target >= 0.8).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import (
    PYTHON,
    BenchEnv,
    Server,
    bench_env,
    create_user_and_token,
    free_port,
    parse_size,
)
from ingest import api_upload, warm_cache, write_safetensors

RATIO_TARGET = 0.8
CHUNK = 1024 * 1024


def publish(bench: BenchEnv, upload_id: str, username: str = "bench") -> int:
    """Create a public model and a published version holding the upload; return its id."""
    out = bench.shell(
        "from django.contrib.auth import get_user_model\n"
        "from registry.models import Upload\n"
        "from registry.services.catalog import FileSpec, model_create, version_create, "
        "version_publish\n"
        f"u = get_user_model().objects.get(username={username!r})\n"
        "m = model_create(owner=u, name='Bench LoRA', kind='lora')\n"
        f"up = Upload.objects.get(pk={upload_id!r})\n"
        "v = version_create(model=m, user=u, name='v1', files=[FileSpec(upload=up)])\n"
        "v = version_publish(version=v, user=u)\n"
        "print('VERSION=%d' % v.pk)\n"
    )
    for line in out.splitlines():
        if line.startswith("VERSION="):
            return int(line.removeprefix("VERSION="))
    raise RuntimeError(f"no version id in output: {out!r}")


def fetch_curl(url: str, token: str | None) -> tuple[int, float]:
    cmd = ["curl", "-sS", "-L", "--fail", "-o", "/dev/null", "-w", "%{size_download} %{time_total}"]
    if token:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    out = subprocess.run([*cmd, url], check=True, capture_output=True, text=True).stdout.split()
    return int(out[0]), float(out[1])


def fetch_requests(url: str, token: str | None) -> tuple[int, float]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    t0 = time.perf_counter()
    got = 0
    with requests.get(url, headers=headers, stream=True, timeout=600) as response:
        response.raise_for_status()
        for chunk in response.iter_content(CHUNK):
            got += len(chunk)
    return got, time.perf_counter() - t0


def measure(url: str, token: str | None, size: int, repeat: int, client: str) -> list[float]:
    """Throughputs in MiB/s of ``repeat`` full downloads (after one untimed warm-up)."""
    fetch = fetch_curl if client == "curl" else fetch_requests
    speeds = []
    for i in range(repeat + 1):
        got, seconds = fetch(url, token)
        if got != size:
            raise RuntimeError(f"downloaded {got} bytes from {url}, expected {size}")
        if i:  # the first run is a warm-up
            speeds.append(size / 1024**2 / seconds)
    return speeds


def http_server(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "http.server",
            str(port),
            "--bind",
            "127.0.0.1",
            "--directory",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            requests.get(base + "/", timeout=1)
            return proc, base
        except requests.RequestException:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("python -m http.server did not start")


def run(size: int, repeat: int, client: str, bench: BenchEnv) -> dict[str, float]:
    folder = bench.workdir / "files"
    folder.mkdir()
    path = folder / "bench-lora.safetensors"
    actual = write_safetensors(path, size)
    token = create_user_and_token(bench)
    with Server(bench) as server:
        upload = api_upload(server.base_url, token, path)
        version_id = publish(bench, upload.upload_id)
        url = f"{server.base_url}/api/download/models/{version_id}"
        redirect = requests.get(
            url, headers={"Authorization": f"Bearer {token}"}, allow_redirects=False, timeout=30
        )
        if redirect.status_code != 302:
            raise RuntimeError(f"expected 302 from {url}, got {redirect.status_code}")
        warm_cache(path)
        registry = measure(url, token, actual, repeat, client)
        rss = server.peak_rss_mb()
    proc, base = http_server(folder)
    try:
        reference = measure(f"{base}/{path.name}", None, actual, repeat, client)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    path.unlink(missing_ok=True)
    reg, ref = statistics.median(registry), statistics.median(reference)
    ratio = reg / ref
    runs = ", ".join(f"{s:.0f}" for s in registry)
    ref_runs = ", ".join(f"{s:.0f}" for s in reference)
    print(f"download runs ({client}, MiB/s): registry [{runs}], http.server [{ref_runs}]")
    print(
        f"download: registry {reg:.0f} MiB/s, http.server {ref:.0f} MiB/s, "
        f"ratio {ratio:.2f} (target >= {RATIO_TARGET}); worker peak RSS {rss:.0f} MB"
    )
    return {"registry_mib_s": reg, "reference_mib_s": ref, "ratio": ratio, "rss_mb": rss}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="2G", help="file size: 2G, 512M, 4M, ...")
    parser.add_argument("--repeat", type=int, default=3, help="timed downloads per server")
    parser.add_argument("--client", choices=("curl", "requests"), default="curl")
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    print(f"== download --size {args.size} ({size} bytes) x{args.repeat} with {args.client}")
    with bench_env("download") as bench:
        run(size, args.repeat, args.client, bench)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
