"""The marketplace REST API, one module per resource: ``wallet``, ``listings``, ``purchases``
(and the library), ``licenses``, ``reviews``, ``payouts``, ``reports``; ``common`` holds what
they share (the federated API uses its field and header too)."""
