from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("federated", "0002_node_superlink_identity"),
    ]

    operations = [
        migrations.AddField(
            model_name="jobround",
            name="sample_grid",
            field=models.ImageField(blank=True, upload_to="job-grids/%Y/%m/"),
        ),
    ]
