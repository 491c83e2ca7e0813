#!/usr/bin/env bash
# Run the registry benchmarks at their default sizes; append everything to a log.
#   bench/run_all.sh [LOG]        (default: var/bench-registry.log, git-ignored)
# Needs PostgreSQL (BENCH_PG_URL, default postgres://postgres@127.0.0.1:5432/postgres) and
# about 5 GB free under $BENCH_TMP (default: the system temp folder) for the 2 GB files.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
LOG="${1:-var/bench-registry.log}"
mkdir -p "$(dirname "$LOG")"
{
  echo "### $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -n) $(nproc) cores, $(git rev-parse --short HEAD 2>/dev/null || echo no-git)"
  "$PY" bench/ingest.py --size 2G
  "$PY" bench/download.py --size 2G
  "$PY" bench/browse.py --models 100000 --versions 300000
  # Federated job through the site vs the same `flwr run` by hand (needs Redis: BENCH_REDIS_URL).
  HF_HUB_OFFLINE=1 "$PY" bench/coordinator.py --out var/bench-coordinator.json
  if command -v wrk >/dev/null; then "$PY" bench/load.py --seconds 35; fi
} 2>&1 | tee -a "$LOG"
