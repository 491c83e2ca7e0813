"""ModelVersion.base_model_name: the base model as Civitai names it ("Pony", "SDXL 1.0"...),
filled for existing versions from their training metadata and names (issue #20)."""

from django.db import migrations, models


def backfill(apps, schema_editor):  # type: ignore[no-untyped-def]
    from sdcore.detect import civitai_base_model

    ModelVersion = apps.get_model("registry", "ModelVersion")
    rows = ModelVersion.objects.select_related("model").only(
        "pk", "base_model", "training_metadata", "name", "model__name"
    )
    changed = []
    for version in rows.iterator(chunk_size=2000):
        metadata = version.training_metadata if isinstance(version.training_metadata, dict) else {}
        meta = {str(k): str(v) for k, v in metadata.items()}
        version.base_model_name = civitai_base_model(
            version.base_model, meta, (version.model.name, version.name)
        )
        changed.append(version)
        if len(changed) >= 2000:
            ModelVersion.objects.bulk_update(changed, ["base_model_name"])
            changed = []
    if changed:
        ModelVersion.objects.bulk_update(changed, ["base_model_name"])


class Migration(migrations.Migration):
    dependencies = [("registry", "0007_trigger_word_trigram_index")]

    operations = [
        migrations.AddField(
            model_name="modelversion",
            name="base_model_name",
            field=models.CharField(blank=True, default="", max_length=40),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
