from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("federated", "0003_jobround_sample_grid"),
    ]

    operations = [
        migrations.AddField(
            model_name="federatedjob",
            name="release_check",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AddField(
            model_name="jobdataset",
            name="release_vetoed",
            field=models.BooleanField(default=False),
        ),
        migrations.AlterField(
            model_name="federatedjob",
            name="state",
            field=models.CharField(
                choices=[
                    ("draft", "Draft"),
                    ("awaiting_approval", "Awaiting approval"),
                    ("queued", "Queued"),
                    ("running", "Running"),
                    ("publishing", "Publishing"),
                    ("completed", "Completed"),
                    ("failed", "Failed"),
                    ("cancelled", "Cancelled"),
                    ("withheld", "Withheld (a data owner vetoed the release)"),
                ],
                db_index=True,
                default="draft",
                max_length=20,
            ),
        ),
    ]
