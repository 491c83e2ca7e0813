"""The studio's REST API under ``/api/v1/`` (routes in ``urls.py``): ``generations``."""
