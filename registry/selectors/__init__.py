"""Every read of the registry beyond a plain get, one module per entity: ``models``,
``versions``, ``datasets``, ``creators``. The API and the pages both read through them.

The names below are re-exported for the callers that import them from the package.
"""

from registry.selectors.datasets import dataset_version_for
from registry.selectors.models import listed_models, visible_models
from registry.selectors.versions import files_by_hash, visible_versions

__all__ = [
    "dataset_version_for",
    "files_by_hash",
    "listed_models",
    "visible_models",
    "visible_versions",
]
