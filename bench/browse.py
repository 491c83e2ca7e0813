"""Browse benchmark: SQL queries per page and latency under load on a large catalogue.

    python bench/browse.py --models 100000 --versions 300000

Bulk-loads owners, tags, models (with their search vectors), published versions and files
(a few shared blobs) straight into a throw-away PostgreSQL database with COPY, then:

(a) counts SQL queries per page, in process with ``CaptureQueriesContext``, for the list and
    search endpoints (the REST/Civitai list ``/api/v1/models`` and the browse page: ``/`` with
    a query, ``/models/`` without; a bare ``/`` is the visitors' landing page) at
    page sizes 10, 50 and 100 (target: the same count at every size, at most 6);
(b) runs a bounded load generator (threads, one ``requests.Session`` each, fixed concurrency
    and duration, loopback only) against gunicorn with 2 sync workers for list page 1, list
    page 50, a search and a model page, and prints p50/p95/p99 and each endpoint's p50 as a
    ratio to a trivial static file (``/static/atelier.css``) measured under the same load.

An endpoint that does not exist (404) is reported as missing, not counted as a failure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import ROOT, BenchEnv, Server, bench_env

MAX_QUERIES = 6
SLOW_QUERY_S = 0.1  # a query slower than this is printed, to look at with EXPLAIN
PAGE_SIZES = (10, 50, 100)
SEARCH_WORD = "portrait"
WORDS = (
    "portrait anime realistic landscape cyberpunk watercolor pixel fantasy noir cinematic "
    "sketch photo studio vintage neon forest castle dragon robot city ocean mountain "
    "flower kitten samurai knight wizard galaxy desert winter summer autumn retro"
).split()
KINDS = ("checkpoint", "lora", "lora", "lora", "embedding", "vae", "lycoris")
FAMILIES = ("sd1", "sdxl", "sdxl", "sd2", "flux")


# --------------------------------------------------------------------------- data


def _rows_for(
    model: Any, values: Callable[[int], dict[str, Any]], count: int, start: int = 1
) -> tuple[list[str], Iterable[tuple[Any, ...]]]:
    """Columns of ``model``'s table and rows: explicit values, else each field's default.

    Fields another part of the project adds later get their defaults, so the loader keeps
    working as the schema grows (a new NOT NULL column without a default would need a line).
    """
    from django.db.models import JSONField

    fields = [f for f in model._meta.concrete_fields]
    columns = [f.column for f in fields]

    def rows() -> Iterable[tuple[Any, ...]]:
        from psycopg.types.json import Jsonb

        defaults = {f.attname: f.get_default() for f in fields}
        for i in range(start, start + count):
            given = values(i)
            row = []
            for f in fields:
                value = given.get(f.attname, defaults[f.attname])
                if isinstance(f, JSONField) and value is not None:
                    value = Jsonb(value)
                row.append(value)
            yield tuple(row)

    return columns, rows()


def _copy(cursor: Any, model: Any, values: Callable[[int], dict[str, Any]], count: int) -> None:
    columns, rows = _rows_for(model, values, count)
    table = model._meta.db_table
    cols = ", ".join(f'"{c}"' for c in columns)
    with cursor.copy(f'COPY "{table}" ({cols}) FROM STDIN') as copy:
        for row in rows:
            copy.write_row(row)


def _reset_sequence(cursor: Any, model: Any) -> None:
    table = model._meta.db_table
    pk = model._meta.pk.column
    cursor.execute(
        f"SELECT setval(pg_get_serial_sequence('\"{table}\"', '{pk}'), "
        f'(SELECT max("{pk}") FROM "{table}"))'
    )


def generate(models: int, versions: int, *, seed: int = 0) -> dict[str, int]:
    """Fill the catalogue with COPY; returns the row counts."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from registry.models import Blob, Model, ModelFile, ModelVersion, Tag

    rng = random.Random(seed)
    User = get_user_model()
    owners = max(1, models // 20)
    tags = len(WORDS) * 4
    blobs = 8
    now = datetime(2026, 11, 22, tzinfo=UTC)
    name_words = [tuple(rng.sample(WORDS, 3)) for _ in range(997)]

    connection.ensure_connection()
    raw = connection.connection
    with raw.cursor() as cur:
        _copy(
            cur,
            User,
            lambda i: {
                "id": i,
                "username": f"creator{i}",
                "email": f"creator{i}@example.test",
                "password": "!",
                "is_active": True,
                "date_joined": now,
            },
            owners,
        )
        _copy(
            cur,
            Tag,
            lambda i: {
                "id": i,
                "name": f"{WORDS[(i - 1) % len(WORDS)]}"
                f"{'' if i <= len(WORDS) else (i - 1) // len(WORDS)}",
            },
            tags,
        )

        def blob_row(i: int) -> dict[str, Any]:
            sha = f"{i:064x}"
            return {
                "sha256": sha,
                "size": 1024 * i,
                "storage_name": f"blobs/sha256/{sha}",
                "autov1": sha[:8],
                "autov2": sha[:10],
                "autov3": sha[:12],
                "crc32": sha[:8],
                "blake3": sha,
                "created_at": now,
            }

        _copy(cur, Blob, blob_row, blobs)

        def model_row(i: int) -> dict[str, Any]:
            words = name_words[i % len(name_words)]
            name = f"{words[0].title()} {words[1].title()} {i}"
            created = now - timedelta(minutes=i)
            return {
                "id": i,
                "owner_id": 1 + i % owners,
                "name": name,
                "slug": f"{words[0]}-{words[1]}-{i}",
                "kind": KINDS[i % len(KINDS)],
                "description": f"A {words[2]} model for {words[0]} images.",
                "description_html": f"<p>A {words[2]} model for {words[0]} images.</p>",
                "visibility": "public",
                "is_removed": False,
                "download_count": (i * 7919) % 100000,
                "rating_avg": (i % 50) / 10,
                "rating_count": i % 300,
                "search_vector": None,
                # every model gets a published version below, published at this instant
                "latest_published_at": now - timedelta(minutes=i, seconds=1),
                "created_at": created,
                "updated_at": created,
            }

        _copy(cur, Model, model_row, models)
        through = Model.tags.through
        cols = (through._meta.get_field("model").column, through._meta.get_field("tag").column)
        with cur.copy(
            f'COPY "{through._meta.db_table}" ("{cols[0]}", "{cols[1]}") FROM STDIN'
        ) as copy:
            for i in range(1, models + 1):
                for t in {1 + (i * k * 31) % tags for k in (1, 2, 3)}:
                    copy.write_row((i, t))

        def version_row(i: int) -> dict[str, Any]:
            model_id = 1 + (i - 1) % models
            number = 1 + (i - 1) // models
            published = now - timedelta(minutes=model_id, seconds=number)
            return {
                "id": i,
                "model_id": model_id,
                "name": f"v{number}",
                "description": "",
                "description_html": "",
                "base_model": FAMILIES[model_id % len(FAMILIES)],
                "trigger_words": [],
                "layout": "single",
                "status": "published",
                "license_code": "",
                "training_metadata": {},
                "download_count": i % 1000,
                "published_at": published,
                "created_at": published,
            }

        _copy(cur, ModelVersion, version_row, versions)

        def file_row(i: int) -> dict[str, Any]:
            return {
                "id": i,
                "version_id": i,
                "blob_id": f"{1 + i % blobs:064x}",
                "path": f"model-{i}.safetensors",
                "format": "safetensors",
                "is_primary": True,
                "detected_kind": "lora",
                "architecture": "sd1",
                "lora_rank": 16,
                "lora_alpha": 8.0,
                "header_metadata": {},
                "pickle_globals": [],
                "created_at": now,
            }

        _copy(cur, ModelFile, file_row, versions)
        for model in (User, Tag, Model, ModelVersion, ModelFile):
            _reset_sequence(cur, model)
        # The same document model_search_vector_update builds: name (A), tags (B), description.
        cur.execute(
            f"""
            UPDATE "{Model._meta.db_table}" AS m SET search_vector =
                setweight(to_tsvector(coalesce(m.name, '')), 'A')
                || setweight(to_tsvector(coalesce(t.names, '')), 'B')
                || setweight(to_tsvector(coalesce(m.description, '')), 'C')
            FROM (
                SELECT mt."{cols[0]}" AS model_id, string_agg(tag.name, ' ') AS names
                FROM "{through._meta.db_table}" mt
                JOIN "{Tag._meta.db_table}" tag ON tag.id = mt."{cols[1]}"
                GROUP BY mt."{cols[0]}"
            ) AS t
            WHERE t.model_id = m.id
            """
        )
    raw.commit()
    old_autocommit = raw.autocommit
    raw.autocommit = True
    with raw.cursor() as cur:
        cur.execute("VACUUM ANALYZE")
    raw.autocommit = old_autocommit
    return {
        "owners": owners,
        "tags": tags,
        "models": models,
        "versions": versions,
        "files": versions,
        "blobs": blobs,
    }


# --------------------------------------------------------------------------- (a) queries


@dataclass(frozen=True)
class Endpoint:
    label: str
    path: str  # with {size} for the page size


LIST_ENDPOINTS = (
    Endpoint("api list", "/api/v1/models?page_size={size}&limit={size}"),
    Endpoint(
        "api search",
        f"/api/v1/models?page_size={{size}}&limit={{size}}&q={SEARCH_WORD}&query={SEARCH_WORD}",
    ),
    Endpoint("browse list", "/?page_size={size}&limit={size}"),
    Endpoint("browse search", "/?page_size={size}&limit={size}&q=" + SEARCH_WORD),
)


def _items_in(response: Any) -> str:
    if "json" not in response.get("Content-Type", ""):
        return "html"
    try:
        body = json.loads(response.content)
    except ValueError:
        return "?"
    if isinstance(body, list):
        return str(len(body))
    for key in ("items", "results", "models", "data"):
        if isinstance(body, dict) and isinstance(body.get(key), list):
            return str(len(body[key]))
    return "?"


def count_queries() -> list[str]:
    """Query counts per endpoint and page size, in process; returns the printed lines."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    lines = []
    for endpoint in LIST_ENDPOINTS:
        counts: list[int] = []
        notes: list[str] = []
        status = 0
        slowest: tuple[float, str] = (0.0, "")
        for size in PAGE_SIZES:
            with CaptureQueriesContext(connection) as ctx:
                response = client.get(endpoint.path.format(size=size))
            status = response.status_code
            if status == 404:
                break
            counts.append(len(ctx.captured_queries))
            notes.append(f"{size}:{_items_in(response)} items/HTTP {status}")
            for query in ctx.captured_queries:
                seconds = float(query.get("time") or 0)
                if seconds > slowest[0]:
                    slowest = (seconds, query["sql"])
        if status == 404:
            line = f"queries {endpoint.label:14s} missing (404 at {endpoint.path.split('?')[0]})"
        else:
            constant = len(set(counts)) == 1
            ok = constant and max(counts) <= MAX_QUERIES
            line = (
                f"queries {endpoint.label:14s} page sizes {PAGE_SIZES}: {counts} "
                f"({'constant' if constant else 'GROWS WITH PAGE SIZE'}; target constant and "
                f"<= {MAX_QUERIES}: {'ok' if ok else 'MISSED'}) [{', '.join(notes)}]"
            )
        if slowest[0] >= SLOW_QUERY_S:
            line += f"\n    slowest query {slowest[0] * 1000:.0f} ms: {slowest[1][:600]}"
        print(line)
        lines.append(line)
    lines.append(_count_model_page(client))
    return lines


def _count_model_page(client: Any) -> str:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    match = re.search(r'href="(/models?/[^"#?]+)"', client.get("/models/").content.decode())
    if match is None:
        line = "queries model page     missing (no model link on the browse page)"
    else:
        with CaptureQueriesContext(connection) as ctx:
            t0 = time.perf_counter()
            status = client.get(match.group(1)).status_code
            seconds = time.perf_counter() - t0
        slow = max(ctx.captured_queries, key=lambda q: float(q.get("time") or 0), default=None)
        line = (
            f"queries model page     {len(ctx.captured_queries)} queries, HTTP {status}, "
            f"{seconds * 1000:.0f} ms in process ({match.group(1)})"
        )
        if slow is not None and float(slow.get("time") or 0) >= SLOW_QUERY_S:
            line += f"\n    slowest query {float(slow['time']) * 1000:.0f} ms: {slow['sql'][:600]}"
    print(line)
    return line


# --------------------------------------------------------------------------- (b) latency


@dataclass
class LoadResult:
    label: str
    path: str
    latencies_ms: list[float]
    errors: int
    seconds: float

    def pct(self, p: float) -> float:
        data = sorted(self.latencies_ms)
        if not data:
            return float("nan")
        index = min(len(data) - 1, max(0, round(p / 100 * len(data)) - 1))
        return data[index]

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0


def load(base_url: str, label: str, path: str, *, concurrency: int, duration: float) -> LoadResult:
    """``concurrency`` threads, each with its own session, GET ``path`` until time is up."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + duration

    def worker() -> None:
        session = requests.Session()
        mine: list[float] = []
        failed = 0
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                response = session.get(base_url + path, timeout=60)
                response.content  # noqa: B018  # read the whole body
                ok = response.status_code < 400
            except requests.RequestException:
                ok = False
            if ok:
                mine.append((time.perf_counter() - t0) * 1000)
            else:
                failed += 1
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return LoadResult(label, path, latencies, errors[0], time.perf_counter() - started)


def _model_page(base_url: str) -> str | None:
    """A model page: the first model link on the browse page, else the API detail."""
    try:
        html = requests.get(base_url + "/models/", timeout=30).text
    except requests.RequestException:
        return None
    match = re.search(r'href="(/models?/[^"#?]+)"', html)
    if match:
        return match.group(1)
    for candidate in ("/api/v1/models/1", "/models/1"):
        if requests.get(base_url + candidate, timeout=30).status_code == 200:
            return candidate
    return None


def latency(bench: BenchEnv, *, concurrency: int, duration: float) -> list[str]:
    lines = []
    with Server(bench, workers=2) as server:
        base = server.base_url
        api_present = requests.get(base + "/api/v1/models", timeout=60).status_code != 404
        list_prefix = "/api/v1/models" if api_present else "/"
        targets = [
            ("static (reference)", "/static/atelier.css"),
            ("list page 1", f"{list_prefix}?page=1"),
            ("list page 50", f"{list_prefix}?page=50"),
            ("search", f"{list_prefix}?q={SEARCH_WORD}&query={SEARCH_WORD}"),
        ]
        if api_present:
            targets.append(("browse page", "/models/"))
        model_page = _model_page(base)
        targets.append(("model page", model_page or ""))
        reference: float | None = None
        for label, path in targets:
            if not path:
                line = f"latency {label:18s} missing (no model page link or detail endpoint)"
                print(line)
                lines.append(line)
                continue
            status = requests.get(base + path, timeout=60).status_code
            if status == 404:
                line = f"latency {label:18s} missing (404 at {path})"
                print(line)
                lines.append(line)
                continue
            result = load(base, label, path, concurrency=concurrency, duration=duration)
            p50 = result.pct(50)
            if reference is None:
                reference = p50
            line = (
                f"latency {label:18s} {path:40s} p50 {p50:7.1f} ms  p95 {result.pct(95):7.1f} ms"
                f"  p99 {result.pct(99):7.1f} ms  {result.rps:6.1f} req/s  errors "
                f"{result.errors}  p50 ratio to static {p50 / reference:.1f}"
            )
            print(line)
            lines.append(line)
        print(
            f"latency: gunicorn 2 sync workers, {concurrency} client threads, {duration:.0f} s "
            f"per endpoint; worker peak RSS {server.peak_rss_mb():.0f} MB"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=100_000)
    parser.add_argument("--versions", type=int, default=300_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per endpoint")
    parser.add_argument("--keep-db", action="store_true", help="keep the database afterwards")
    parser.add_argument("--no-load", action="store_true", help="skip the latency part")
    args = parser.parse_args(argv)
    print(f"== browse --models {args.models} --versions {args.versions}")
    with bench_env("browse", keep=args.keep_db) as bench:
        os.environ.update(bench.env)
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()
        from django.db import connection

        t0 = time.perf_counter()
        counts = generate(args.models, max(args.versions, args.models))
        print(f"generated {counts} in {time.perf_counter() - t0:.1f} s")
        count_queries()
        connection.close()
        if not args.no_load:
            latency(bench, concurrency=args.concurrency, duration=args.duration)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
