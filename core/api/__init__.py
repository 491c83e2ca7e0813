"""Core's REST API under ``/api/v1/auth/`` (routes in ``urls.py``): API tokens and whoami."""
