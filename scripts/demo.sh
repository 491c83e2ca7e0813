#!/usr/bin/env bash
# `make demo`: migrate, build and publish the tiny base model and demo content, serve the site.
# Embedded defaults: SQLite and files under var/, tasks run in-process. Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
mkdir -p var/log
export DJANGO_DEBUG="${DJANGO_DEBUG:-1}"
export ATELIER_HTTPS="${ATELIER_HTTPS:-0}"
export HF_HUB_OFFLINE=1
if [ -z "${SECRET_KEY:-}" ]; then
  [ -s var/secret_key ] || $PY -c "import secrets; print(secrets.token_urlsafe(50))" > var/secret_key
  SECRET_KEY="$(cat var/secret_key)"
  export SECRET_KEY
fi
PORT="${ATELIER_PORT:-8000}"
# Tasks go to a Celery worker: through Redis when CELERY_BROKER_URL says so, else through the
# embedded filesystem broker under var/.
export CELERY_BROKER_URL="${CELERY_BROKER_URL:-filesystem://}"

echo "==> migrating (${DATABASE_URL:-SQLite at var/atelier.sqlite3})"
$PY manage.py migrate --noinput >var/log/migrate.log
echo "==> building and publishing the tiny base model and demo content"
$PY manage.py demo_seed | tee var/log/seed.log

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo; echo "==> stopping"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

$PY -m gunicorn config.wsgi --bind "127.0.0.1:${PORT}" --workers 2 --threads 4 \
  --access-logfile var/log/web-access.log --error-logfile var/log/web.log &
pids+=($!)
$PY -m celery -A config worker -P solo -l INFO >var/log/celery.log 2>&1 &
pids+=($!)
for _ in $(seq 1 60); do
  curl -fs "http://127.0.0.1:${PORT}/" >/dev/null 2>&1 && break
  sleep 0.5
done

cat <<INFO

Atelier is running.
  Site:        http://127.0.0.1:${PORT}/
  Admin:       http://127.0.0.1:${PORT}/admin/
  API docs:    http://127.0.0.1:${PORT}/api/docs/
  Logins:      see the accounts printed above (var/log/seed.log)
  Logs:        var/log/web.log, var/log/web-access.log, var/log/celery.log
Press Ctrl-C to stop.
INFO
wait
