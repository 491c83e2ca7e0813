"""The registry's REST API (``/api/v1/``), one module per resource: models (with versions and
files), datasets, uploads, conversions, users. Views parse input, call one selector or
service, and render with :mod:`registry.serializers`; every error has the one JSON shape of
:mod:`core.errors`.
"""
