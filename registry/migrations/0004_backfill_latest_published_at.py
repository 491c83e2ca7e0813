"""Fill ``Model.latest_published_at`` from the versions (data only; reversible)."""

from django.db import migrations
from django.db.models import Max, Q


def backfill(apps, schema_editor):  # type: ignore[no-untyped-def]
    Model = apps.get_model("registry", "Model")
    rows = Model.objects.annotate(
        latest=Max("versions__published_at", filter=Q(versions__status="published"))
    ).filter(latest__isnull=False)
    for model in rows.iterator():
        Model.objects.filter(pk=model.pk).update(latest_published_at=model.latest)


def clear(apps, schema_editor):  # type: ignore[no-untyped-def]
    apps.get_model("registry", "Model").objects.update(latest_published_at=None)


class Migration(migrations.Migration):
    dependencies = [("registry", "0003_model_latest_published_at")]
    operations = [migrations.RunPython(backfill, clear)]
