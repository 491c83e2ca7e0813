"""Every write of the studio: generations (``generations``) and the worker's local files
(``files``)."""
