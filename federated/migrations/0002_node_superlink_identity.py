"""The SuperLink's identity of a node (Flower node authentication): its node id, and when its
key was unregistered after revocation."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("federated", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="node",
            name="superlink_node_id",
            field=models.CharField(blank=True, default="", max_length=20),
        ),
        migrations.AddField(
            model_name="node",
            name="superlink_unregistered_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddConstraint(
            model_name="node",
            constraint=models.UniqueConstraint(
                condition=models.Q(revoked_at__isnull=True) & ~models.Q(superlink_node_id=""),
                fields=("superlink_node_id",),
                name="node_active_superlink_id_unique",
            ),
        ),
    ]
