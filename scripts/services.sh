#!/usr/bin/env bash
# What the suite needs from the system, installed if missing (Debian packages; root), then
# PostgreSQL and Redis started on loopback if they are not answering (idempotent).
# `make test` runs this, so the README's command works on a fresh machine, as CI does.
set -euo pipefail

need=()
command -v pg_isready >/dev/null || need+=(postgresql postgresql-client)
command -v redis-server >/dev/null || need+=(redis-server)
[ -x /usr/bin/chromium ] || need+=(chromium)  # browser journeys (Playwright drives it)
command -v wrk >/dev/null || need+=(wrk)  # the load smoke test
command -v node >/dev/null || need+=(nodejs)  # the upload page's JavaScript test
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "services: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "services: the suite needs these Debian packages: ${need[*]}" \
      "(sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
fi

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }

if ! pg_up; then
  echo "services: starting PostgreSQL"
  if command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  else
    echo "services: PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1
  fi
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
fi
pg_up || { echo "services: PostgreSQL did not start" >&2; exit 1; }

if ! redis_up; then
  echo "services: starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 30); do redis_up && break; sleep 0.5; done
fi
redis_up || { echo "services: Redis did not start" >&2; exit 1; }
echo "services: PostgreSQL and Redis are up"
