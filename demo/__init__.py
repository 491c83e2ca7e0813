"""The local demo's own app: ``manage.py demo_seed`` (``scripts/demo.sh`` runs it)."""
