"""Every read of the registry beyond a plain get, one module per entity: ``models``,
``versions``, ``datasets``, ``creators``. The API and the pages both read through them; import
from the entity's module."""
