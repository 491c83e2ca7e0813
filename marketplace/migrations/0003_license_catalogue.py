"""The license catalogue, with stable identifiers and Civitai's permission flags."""

from django.db import migrations

LICENSES = [
    # code, name, url, credit_required, commercial_use, derivatives, different_license
    ("creativeml-openrail-m", "CreativeML OpenRAIL-M",
     "https://huggingface.co/spaces/CompVis/stable-diffusion-license",
     False, "sell", True, True),
    ("creativeml-openrail-pp-m", "CreativeML OpenRAIL++-M",
     "https://github.com/Stability-AI/generative-models/blob/main/model_licenses/LICENSE-SDXL1.0",
     False, "sell", True, True),
    ("cc-by-4.0", "Creative Commons Attribution 4.0",
     "https://creativecommons.org/licenses/by/4.0/", True, "sell", True, True),
    ("cc-by-nc-4.0", "Creative Commons Attribution-NonCommercial 4.0",
     "https://creativecommons.org/licenses/by-nc/4.0/", True, "none", True, True),
    ("cc-by-sa-4.0", "Creative Commons Attribution-ShareAlike 4.0",
     "https://creativecommons.org/licenses/by-sa/4.0/", True, "sell", True, False),
    ("apache-2.0", "Apache License 2.0", "https://www.apache.org/licenses/LICENSE-2.0",
     True, "sell", True, True),
    ("mit", "MIT License", "https://opensource.org/licenses/MIT", True, "sell", True, True),
    ("custom", "Custom (no commercial use, no derivatives unless the author agrees)", "",
     True, "none", False, False),
]


def load(apps, schema_editor):  # type: ignore[no-untyped-def]
    License = apps.get_model("marketplace", "License")
    for code, name, url, credit, commercial, derivatives, different in LICENSES:
        License.objects.update_or_create(
            code=code,
            defaults={
                "name": name,
                "url": url,
                "credit_required": credit,
                "commercial_use": commercial,
                "derivatives_allowed": derivatives,
                "different_license_allowed": different,
            },
        )


def unload(apps, schema_editor):  # type: ignore[no-untyped-def]
    License = apps.get_model("marketplace", "License")
    License.objects.filter(code__in=[row[0] for row in LICENSES]).delete()


class Migration(migrations.Migration):
    dependencies = [("marketplace", "0002_ledger_triggers")]

    operations = [migrations.RunPython(load, unload)]
