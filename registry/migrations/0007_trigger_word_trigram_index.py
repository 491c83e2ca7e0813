"""A trigram GIN index for site search's trigger-word match, on PostgreSQL only (SQLite has
no GIN; there the match scans, as it did before).

Search looks a trigger word up as ``UPPER(trigger_words::text) LIKE UPPER('%word%')`` (Django's
``icontains`` on the JSON list, ``registry.selectors.models``); the index is on that very
expression, so the planner can use it. File-hash prefixes need nothing new: the file's
``blob_id`` already has a ``varchar_pattern_ops`` index (Django's ``_like`` index of a
foreign key to a ``CharField`` key), which ``LIKE 'abc%'`` uses.
"""

from django.db import migrations

INDEX = "version_trigger_words_trgm"


def create_index(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {INDEX} ON registry_modelversion "
            "USING gin ((UPPER(trigger_words::text)) gin_trgm_ops)"
        )


def drop_index(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [("registry", "0006_sample_image_order_pairs")]
    operations = [migrations.RunPython(create_index, drop_index)]
