#!/usr/bin/env bash
# Restore a backup made by scripts/backup.sh into an EMPTY database and EMPTY blob and media
# folders.
#
#   DATABASE_URL=postgres://user@host:5432/atelier_new BLOB_ROOT=/srv/atelier/blobs \
#   MEDIA_ROOT=/srv/atelier/media scripts/restore.sh /backups/atelier-20260101T120000Z
#
# Refuses a database that has any table in the public schema and a blob or media folder that
# holds anything: a restore never mixes with live data. A backup made before blobs had their
# own folder (blobs under media/blobs/) is restored with its blobs into BLOB_ROOT. Checks the manifest first, restores,
# then looks every blob up by its SHA-256 through the registry and reads its bytes back
# (manage.py blobs_verify). Create the database first (createdb), with the same owner.
set -euo pipefail

SRC="${1:?usage: scripts/restore.sh BACKUP_FOLDER}"
: "${DATABASE_URL:?set DATABASE_URL (postgres://...) of an empty database}"
: "${MEDIA_ROOT:?set MEDIA_ROOT to an empty or new folder}"
: "${BLOB_ROOT:?set BLOB_ROOT to an empty or new folder, outside MEDIA_ROOT}"
PYTHON="${PYTHON:-$(dirname "$0")/../.venv/bin/python}"

for f in db.dump blobs.tsv MANIFEST.sha256; do
  [ -f "$SRC/$f" ] || { echo "restore: $SRC/$f is missing" >&2; exit 2; }
done

tables="$(psql "$DATABASE_URL" -X -q -A -t \
  -c "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")"
if [ "$tables" != "0" ]; then
  echo "restore: refusing: the target database is not empty ($tables tables)" >&2; exit 3
fi
for folder in "$MEDIA_ROOT" "$BLOB_ROOT"; do
  if [ -e "$folder" ] && [ -n "$(ls -A "$folder")" ]; then
    echo "restore: refusing: $folder is not empty" >&2; exit 3
  fi
done

echo "restore: checking the manifest"
(cd "$SRC" && sha256sum --quiet -c MANIFEST.sha256) || {
  echo "restore: the backup is damaged (manifest mismatch)" >&2; exit 4; }

echo "restore: database"
pg_restore --no-owner --no-privileges --exit-on-error -d "$DATABASE_URL" "$SRC/db.dump"

echo "restore: files"
mkdir -p "$MEDIA_ROOT" "$BLOB_ROOT"
cp -a "$SRC/media/." "$MEDIA_ROOT/"
if [ -d "$SRC/blobs" ]; then
  cp -a "$SRC/blobs/." "$BLOB_ROOT/"
elif [ -d "$MEDIA_ROOT/blobs" ]; then  # an older backup: blobs were under media/
  mv "$MEDIA_ROOT/blobs" "$BLOB_ROOT/blobs"
fi

echo "restore: every blob by hash"
if [ -x "$PYTHON" ]; then
  DATABASE_URL="$DATABASE_URL" MEDIA_ROOT="$MEDIA_ROOT" BLOB_ROOT="$BLOB_ROOT" \
    "$PYTHON" "$(dirname "$0")/../manage.py" blobs_verify --expect "$SRC/blobs.tsv"
else
  echo "restore: no Python at $PYTHON; run manage.py blobs_verify yourself" >&2
fi
echo "restore: done"
