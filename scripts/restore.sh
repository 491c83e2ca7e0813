#!/usr/bin/env bash
# Restore a backup made by scripts/backup.sh into an EMPTY database and an EMPTY media folder.
#
#   DATABASE_URL=postgres://user@host:5432/atelier_new MEDIA_ROOT=/srv/atelier/media \
#     scripts/restore.sh /backups/atelier-20260101T120000Z
#
# Refuses a database that has any table in the public schema and a media folder that holds
# anything: a restore never mixes with live data. Checks the manifest first, restores,
# then looks every blob up by its SHA-256 through the registry and reads its bytes back
# (manage.py blobs_verify). Create the database first (createdb), with the same owner.
set -euo pipefail

SRC="${1:?usage: scripts/restore.sh BACKUP_FOLDER}"
: "${DATABASE_URL:?set DATABASE_URL (postgres://...) of an empty database}"
: "${MEDIA_ROOT:?set MEDIA_ROOT to an empty or new folder}"
PYTHON="${PYTHON:-$(dirname "$0")/../.venv/bin/python}"

for f in db.dump blobs.tsv MANIFEST.sha256; do
  [ -f "$SRC/$f" ] || { echo "restore: $SRC/$f is missing" >&2; exit 2; }
done

tables="$(psql "$DATABASE_URL" -X -q -A -t \
  -c "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")"
if [ "$tables" != "0" ]; then
  echo "restore: refusing: the target database is not empty ($tables tables)" >&2; exit 3
fi
if [ -e "$MEDIA_ROOT" ] && [ -n "$(ls -A "$MEDIA_ROOT")" ]; then
  echo "restore: refusing: $MEDIA_ROOT is not empty" >&2; exit 3
fi

echo "restore: checking the manifest"
(cd "$SRC" && sha256sum --quiet -c MANIFEST.sha256) || {
  echo "restore: the backup is damaged (manifest mismatch)" >&2; exit 4; }

echo "restore: database"
pg_restore --no-owner --no-privileges --exit-on-error -d "$DATABASE_URL" "$SRC/db.dump"

echo "restore: files"
mkdir -p "$MEDIA_ROOT"
cp -a "$SRC/media/." "$MEDIA_ROOT/"

echo "restore: every blob by hash"
if [ -x "$PYTHON" ]; then
  DATABASE_URL="$DATABASE_URL" MEDIA_ROOT="$MEDIA_ROOT" \
    "$PYTHON" "$(dirname "$0")/../manage.py" blobs_verify --expect "$SRC/blobs.tsv"
else
  echo "restore: no Python at $PYTHON; run manage.py blobs_verify yourself" >&2
fi
echo "restore: done"
