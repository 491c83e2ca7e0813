"""The ``atelier`` command and a small typed HTTP client of the site's API.

This package imports no Django: it speaks HTTP to the site (see :mod:`client.http`).
"""

__version__ = "0.1.0"
