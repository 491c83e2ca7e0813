#!/usr/bin/env bash
# Back up Atelier: the PostgreSQL database (pg_dump, custom format), the private blob store
# (BLOB_ROOT: model and dataset files) and public media (MEDIA_ROOT: images), into a new
# dated folder with a SHA-256 manifest.
#
#   DATABASE_URL=postgres://user@host:5432/atelier BLOB_ROOT=/srv/atelier/blobs \
#   MEDIA_ROOT=/srv/atelier/media scripts/backup.sh /backups  -> /backups/atelier-<stamp>/
#
# The folder holds: db.dump (pg_restore format), blobs/ (a copy of BLOB_ROOT), media/ (a copy
# of MEDIA_ROOT: sample images, previews), blobs.tsv (sha256, size and storage name of every
# Blob row) and MANIFEST.sha256 (the SHA-256 of every file above, for `sha256sum -c`). With
# S3-compatible storage, copy the buckets instead (see docs/backups.md). See scripts/restore.sh.
set -euo pipefail

DEST_ROOT="${1:-${BACKUP_DIR:-var/backups}}"
: "${DATABASE_URL:?set DATABASE_URL (postgres://...)}"
MEDIA_ROOT="${MEDIA_ROOT:-var/media}"
BLOB_ROOT="${BLOB_ROOT:-var/blobs}"
case "$DATABASE_URL" in
  postgres://*|postgresql://*) ;;
  *) echo "backup: DATABASE_URL must be a PostgreSQL URL" >&2; exit 2 ;;
esac

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
dest="$DEST_ROOT/atelier-$stamp"
if [ -e "$dest" ]; then echo "backup: $dest already exists" >&2; exit 1; fi
mkdir -p "$dest.partial"
trap 'rm -rf "$dest.partial"' EXIT

# 1. The database, in one consistent snapshot (pg_dump runs in one transaction).
pg_dump --format=custom --no-owner --no-privileges --file="$dest.partial/db.dump" "$DATABASE_URL"

# 2. The blob rows as of the dump, to check the copy against.
psql "$DATABASE_URL" -X -q -A -t -F $'\t' \
  -c "SELECT sha256, size, storage_name FROM registry_blob ORDER BY sha256" \
  > "$dest.partial/blobs.tsv"

# 3. The files. Blobs are content-addressed and never rewritten, so a copy taken after the
#    dump holds every blob the dump refers to (blobs added meanwhile are harmless extras).
mkdir -p "$dest.partial/media" "$dest.partial/blobs"
if [ -d "$MEDIA_ROOT" ]; then
  cp -a "$MEDIA_ROOT/." "$dest.partial/media/"
fi
if [ -d "$BLOB_ROOT" ]; then
  cp -a "$BLOB_ROOT/." "$dest.partial/blobs/"
fi

# 4. Every blob of the dump must be there, with the right bytes.
missing=0
while IFS=$'\t' read -r sha size name; do
  [ -n "$sha" ] || continue
  file="$dest.partial/blobs/$name"
  if [ ! -f "$file" ]; then
    echo "backup: blob $sha missing ($name under $BLOB_ROOT; if it is still under MEDIA_ROOT," \
      "run manage.py blobs_move_private)" >&2
    missing=1; continue
  fi
  actual="$(sha256sum "$file" | cut -d' ' -f1)"
  if [ "$actual" != "$sha" ]; then echo "backup: blob $sha has other bytes" >&2; missing=1; fi
done < "$dest.partial/blobs.tsv"
if [ "$missing" -ne 0 ]; then echo "backup: incomplete, not kept" >&2; exit 1; fi

# 5. The manifest, then publish the folder under its final name.
(cd "$dest.partial" && find . -type f ! -name MANIFEST.sha256 -print0 | sort -z \
  | xargs -0 -r sha256sum > MANIFEST.sha256)
mv "$dest.partial" "$dest"
trap - EXIT
echo "backup: $dest ($(wc -l < "$dest/blobs.tsv") blobs, $(du -sh "$dest" | cut -f1))"
