#!/usr/bin/env bash
# `make demo`: the whole product on one machine, every part a real process.
#
#  1. migrate (SQLite under var/ unless DATABASE_URL says otherwise) and seed: demo accounts
#     with credits, the atelier-shapes SD 1.x base model (published), a public dataset;
#  2. start the site (gunicorn), a Celery worker (embedded filesystem broker unless
#     CELERY_BROKER_URL says otherwise) and a Flower SuperLink;
#  3. two data owners, each on "their machine" (var/demo/owner-N): a private dataset, then
#     `atelier login`, `atelier node init | add-dataset | register | publish | start`;
#  4. the trainer launches a small federated LoRA job with DP-SGD through the REST API and the
#     demo follows it round by round until it is published and the owners are paid; it prints
#     the concept score (the fraction of 36 fixed trigger-prompt images drawn orange, the
#     owners' concept) of the base before the job and of base + the published LoRA after it,
#     and writes both as PNG grids under var/demo/concept;
#  5. it keeps serving until Ctrl-C, which (like any failing step) stops every process it
#     started, SuperNodes' ClientApps included. Running it again reuses accounts, nodes and
#     listings, and launches a new job.
#
# Environment: ATELIER_PORT (site, 8000), DEMO_SUPERLINK_PORT (9099), DEMO_NODE_PORTS
# ("9094 9095"), ATELIER_VAR_DIR (var), DEMO_ROUNDS (2), DEMO_EPSILON (8), DEMO_IMAGES (256
# images per owner: with batch 32, DP at epsilon 8 leaves the signal; 16 drowned it),
# DEMO_EXIT_AFTER_JOB=1 (stop everything and exit with the job's status once it is finished),
# DEMO_FAMILY=sdxl (the job trains on the tiny SDXL base, random weights, instead of the SD 1.x
# shapes base; the owners' listings allow SD 1.x, SD 2.x and SDXL bases),
# DEMO_INSECURE=1 (no TLS and no SuperNode authentication between the nodes and the SuperLink;
# by default the demo makes a CA and the SuperLink's certificate under var/demo/certs, and the
# SuperLink admits only node keys the site registered there).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"

BIN="$ROOT/.venv/bin"
PY="$BIN/python"
export PATH="$BIN:$PATH"
VAR="${ATELIER_VAR_DIR:-var}"
mkdir -p "$VAR"
VAR="$(cd "$VAR" && pwd)"
export ATELIER_VAR_DIR="$VAR"
LOG="$VAR/log"
DEMO="$VAR/demo"
PIDS="$DEMO/pids"
mkdir -p "$LOG" "$DEMO"

PORT="${ATELIER_PORT:-8000}"
LINK_PORT="${DEMO_SUPERLINK_PORT:-9099}"
read -r -a NODE_PORTS <<<"${DEMO_NODE_PORTS:-9094 9095}"
SITE="http://127.0.0.1:${PORT}"
PASSWORD="atelier-demo-pass"  # demo_seed's DEMO_PASSWORD
OWNERS=(owner1 owner2)
IMAGES="${DEMO_IMAGES:-256}"

export DJANGO_DEBUG="${DJANGO_DEBUG:-1}"
# Wallet top-ups go through the demo payment provider (approves at once, no money moves): named
# here explicitly, as the site refuses it otherwise (and with DEBUG off).
export ATELIER_PAYMENT_PROVIDER="${ATELIER_PAYMENT_PROVIDER:-demo}"
export ATELIER_HTTPS="${ATELIER_HTTPS:-0}"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export FLWR_TELEMETRY_ENABLED=0  # Flower's usage telemetry: nothing to send from a demo
if [ -z "${SECRET_KEY:-}" ]; then
  [ -s "$VAR/secret_key" ] || $PY -c "import secrets; print(secrets.token_urlsafe(50))" >"$VAR/secret_key"
  SECRET_KEY="$(cat "$VAR/secret_key")"
  export SECRET_KEY
fi
# Tasks go to a Celery worker: through Redis when CELERY_BROKER_URL says so, else through the
# embedded filesystem broker under var/.
export CELERY_BROKER_URL="${CELERY_BROKER_URL:-filesystem://}"
# The coordinator (Celery) drives runs on this SuperLink; the ServerApp and the nodes reach the
# site at ATELIER_SITE_URL.
export ATELIER_SITE_URL="$SITE"
export ATELIER_SUPERLINK="127.0.0.1:${LINK_PORT}"
CERTS="$DEMO/certs"
if [ "${DEMO_INSECURE:-0}" = 1 ]; then
  export ATELIER_SUPERLINK_INSECURE=1 ATELIER_SUPERLINK_NODE_AUTH=0
  LINK_SECURITY=(--insecure)
  NODE_SECURITY=(--insecure)
else
  # TLS with the demo's own CA, and SuperNode authentication: the site registers each node's
  # key on the SuperLink (Control API) when the node registers, and removes it when revoked.
  export ATELIER_SUPERLINK_INSECURE=0 ATELIER_SUPERLINK_NODE_AUTH=1
  export ATELIER_SUPERLINK_ROOT_CERTIFICATES="$CERTS/ca.crt"
  LINK_SECURITY=(--ssl-ca-certfile "$CERTS/ca.crt" --ssl-certfile "$CERTS/server.crt"
    --ssl-keyfile "$CERTS/server.key" --enable-supernode-auth)
  NODE_SECURITY=(--root-certificates "$CERTS/ca.crt")
fi
export ATELIER_FLWR_HOME="$VAR/flwr" ATELIER_FEDERATION_DIR="$VAR/federation"
# Two cores and two nodes on one machine: one torch thread per process.
export OMP_NUM_THREADS=1 ATELIER_TORCH_THREADS=1

helper() { $PY scripts/demo_helpers.py "$@"; }
step() { printf '==> [%3d s] %s\n' "$SECONDS" "$*"; }
# shown() ARGS...: the arguments as one would type them (quoted where needed).
shown() {
  local out="" arg
  for arg in "$@"; do
    if [[ "$arg" =~ ^[A-Za-z0-9_./:=@,+-]+$ ]]; then out+=" $arg"; else out+=" '$arg'"; fi
  done
  echo "${out# }"
}

cleanup() {
  local code=$?
  trap - EXIT
  trap '' INT TERM  # a second Ctrl-C does not cut the cleanup short
  echo; step "stopping every process the demo started"
  helper stop "$PIDS" || true
  wait 2>/dev/null || true
  exit "$code"
}
on_signal() { exit 130; }

# A demo that was killed (kill -9, a closed terminal) may have left its processes behind.
helper stop "$PIDS"
if ! helper ports-free "$PORT" "$LINK_PORT" "${NODE_PORTS[@]}"; then
  echo "Free those ports or pick others: ATELIER_PORT, DEMO_SUPERLINK_PORT, DEMO_NODE_PORTS." >&2
  exit 1
fi
trap cleanup EXIT
trap on_signal INT TERM

# start NAME LOGFILE COMMAND...: in a session of its own (Ctrl-C reaches only this script,
# whose cleanup stops them and their descendants), remembered in the pid file.
start() {
  local name=$1 log=$2
  shift 2
  setsid "$@" >"$log" 2>&1 </dev/null &
  helper record "$PIDS" $! "$name"
  LAST_PID=$!
}

if [ "${DEMO_INSECURE:-0}" != 1 ]; then
  step "TLS for the SuperLink: the demo's CA and the SuperLink's certificate in $CERTS"
  [ -s "$CERTS/server.crt" ] || $PY manage.py superlink certs "$CERTS" | sed 's/^/    /'
fi
step "migrating (${DATABASE_URL:-SQLite at $VAR/atelier.sqlite3})"
$PY manage.py migrate --noinput >"$LOG/migrate.log"
# Model files an older demo stored under var/media move to the private folder (var/blobs).
$PY manage.py blobs_move_private >>"$LOG/migrate.log"
step "demo accounts with credits, the atelier-shapes base model (published), a public dataset"
$PY manage.py demo_seed --password "$PASSWORD" --family "${DEMO_FAMILY:-sd1}" | tee "$LOG/seed.log"

step "starting the site on $SITE, a Celery worker and a Flower SuperLink on 127.0.0.1:$LINK_PORT"
start web "$LOG/web.log" $PY -m gunicorn config.wsgi --bind "127.0.0.1:${PORT}" --workers 2 \
  --threads 4 --timeout 300 --access-logfile "$LOG/web-access.log" --error-logfile -
WEB_PID=$LAST_PID
start celery "$LOG/celery.log" $PY -m celery -A config worker -P solo -l INFO
CELERY_PID=$LAST_PID
mkdir -p "$DEMO/superlink"
start superlink "$LOG/superlink.log" env -C "$DEMO/superlink" flower-superlink \
  "${LINK_SECURITY[@]}" --host 127.0.0.1 --port "$LINK_PORT" \
  --database "$DEMO/superlink/state.db" --disable-runtime-dependency-installation
LINK_PID=$LAST_PID
helper wait-port "$PORT" "$WEB_PID" "$LOG/web.log" --url "$SITE/"
helper wait-port "$LINK_PORT" "$LINK_PID" "$LOG/superlink.log"
kill -0 "$CELERY_PID" 2>/dev/null || { tail -n 40 "$LOG/celery.log"; exit 1; }
if [ "${DEMO_INSECURE:-0}" != 1 ]; then
  # Nodes registered by an earlier demo (or whose key an earlier SuperLink held): their keys on
  # this SuperLink match the site's again.
  $PY manage.py superlink nodes --sync >"$LOG/superlink-nodes.log" 2>&1 \
    || { tail -n 20 "$LOG/superlink-nodes.log"; exit 1; }
fi

# owner N: the owner's commands on their own machine (folder), output in var/log/owner-N.log.
for index in 1 2; do
  owner="${OWNERS[$((index - 1))]}"
  home="$DEMO/owner-$index"
  node_dir="$home/node"
  data="$home/data-$IMAGES"  # another size is another dataset (added and published anew)
  olog="$LOG/owner-$index.log"
  export ATELIER_CONFIG="$home/atelier-config.json"  # this owner's `atelier login`
  mkdir -p "$home"
  : >>"$olog"
  cli() {
    echo "    \$ atelier $(shown "$@")"
    echo "\$ atelier $(shown "$@")" >>"$olog"
    if ! atelier "$@" >>"$olog" 2>&1; then
      echo "    failed; the end of $olog:"; tail -n 20 "$olog" | sed 's/^/    | /'
      return 1
    fi
  }
  step "data owner $owner, on the machine $home"
  helper dataset "$data" --seed "$((10 + index))" --images "$IMAGES"
  if me="$(atelier whoami --site "$SITE" 2>/dev/null)"; then
    echo "    logged in as $me"
  else
    echo "$PASSWORD" | cli login --site "$SITE" --username "$owner" --password-stdin
  fi
  [ -f "$node_dir/node.key" ] || cli node init --node-dir "$node_dir"
  # The node's own budget for the dataset, over all jobs: epsilon 400 and delta 1e-3 (the
  # node's ledger adds up each job's epsilon and delta); each job may spend 8 and 1e-5.
  if ! helper added "$node_dir" "$data" 400 1e-3; then
    cli node add-dataset "$data" --epsilon 400 --delta 1e-3 --trigger atlr --resolution 64 \
      --node-dir "$node_dir"
  fi
  if ! helper registered "$node_dir" "$SITE"; then
    rm -f "$node_dir/registration.json"
    cli node register --name "laptop of $owner" --site "$SITE" --node-dir "$node_dir" || {
      echo "    registering a new key instead"
      cli node init --force --node-dir "$node_dir"
      cli node register --name "laptop of $owner" --site "$SITE" --node-dir "$node_dir"
    }
  fi
  if ! helper published "$node_dir" "$data" "$SITE"; then
    cli node publish "$data" --name "Orange shapes of $owner" --site "$SITE" \
      --description "$IMAGES generated scenes of orange shapes, captioned with the trigger atlr." \
      --price-per-example 1 --epsilon-per-job 8 --delta 1e-5 --approval auto \
      --families sd1,sd2,sdxl --node-dir "$node_dir"
    tail -n 1 "$olog" | sed 's/^/    /'
  fi
  if [ "${DEMO_INSECURE:-0}" != 1 ]; then
    helper admitted "$node_dir" "$SITE"
  fi
  port="${NODE_PORTS[$((index - 1))]}"
  echo "    \$ atelier node start --superlink 127.0.0.1:$LINK_PORT $(shown "${NODE_SECURITY[@]}") --port $port (log: $LOG/node-$index.log)"
  start "node-$index" "$LOG/node-$index.log" atelier node start --node-dir "$node_dir" \
    --superlink "127.0.0.1:$LINK_PORT" "${NODE_SECURITY[@]}" --port "$port"
  helper wait-port "$port" "$LAST_PID" "$LOG/node-$index.log"
done
unset ATELIER_CONFIG

step "the trainer launches a federated LoRA job with DP-SGD through the API"
job_status=0
rm -f "$DEMO/last-job.json"
echo "$PASSWORD" | $PY scripts/demo_job.py --site "$SITE" --username trainer --password-stdin \
  --owners "$(IFS=,; echo "${OWNERS[*]}")" --rounds "${DEMO_ROUNDS:-2}" \
  --epsilon "${DEMO_EPSILON:-8}" --summary "$DEMO/last-job.json" --concept "$DEMO/concept" \
  --family "${DEMO_FAMILY:-sd1}" \
  2>&1 | tee "$LOG/job.log" \
  || job_status=$?  # pipefail: demo_job.py's status

job_lines="$($PY - "$DEMO/last-job.json" 2>/dev/null <<'PY' || true
import json, sys
s = json.load(open(sys.argv[1]))
print(f"  Job:           {s['job_url']}  ({s['job']['state']}, {s['seconds']:.0f} s; each round's")
print(f"                 sample grid on the job page; API {s['api_url']})")
if s.get("model_url"):
    print(f"  LoRA:          {s['model_url']}")
    print("                 (its page shows sample images: the base alone and base + LoRA)")
c = s.get("concept")
if c:
    b, a = c["before"], c["after"]
    print(f"  Concept score: {b['score']:.2f} before the job (base), {a['score']:.2f} after "
          f"(base + LoRA): figures drawn {b['colour']} in 36 fixed trigger-prompt images")
    print(f"  Images:        {c['grids']['side_by_side']}  (base | base + LoRA)")
PY
)"
cat <<INFO

Atelier is running.
  Site:          $SITE/
$job_lines
  Admin:         $SITE/admin/          (admin / $PASSWORD)
  API docs:      $SITE/api/docs/
  Earnings:      $SITE/earnings/       (log in as owner1 or owner2)
  Logins:        admin, creator, buyer, owner1, owner2, trainer; password $PASSWORD
                 (the trainer has credits to launch jobs, the buyer to buy)
  Owners:        $DEMO/owner-1, $DEMO/owner-2 (private data, node keys, privacy ledgers)
  Logs:          $LOG/web.log, web-access.log, celery.log, superlink.log,
                 node-1.log, node-2.log, owner-1.log, owner-2.log, job.log, seed.log
INFO
if [ "${DEMO_EXIT_AFTER_JOB:-0}" = 1 ]; then
  exit "$job_status"
fi
echo "Press Ctrl-C to stop."
wait -n || true
step "a process of the demo exited on its own; see the logs in $LOG" >&2
exit 1
