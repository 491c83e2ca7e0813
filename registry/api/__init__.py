"""The registry's REST API (``/api/v1/``): models, versions, files, datasets and creators.

Uploads live in :mod:`registry.api_uploads`. Views parse input, call one selector or service,
and render with :mod:`registry.serializers`; every error has the one JSON shape of
:mod:`core.errors`.
"""
