"""The marketplace REST API, one module per resource: ``wallet``, ``listings``, ``purchases``
(and the library), ``licenses``, ``reviews``, ``payouts``, ``reports``; ``common`` holds what
they share (re-exported here for the federated API, which uses the same field and header)."""

from marketplace.api.common import IDEMPOTENCY_KEY, WholeNumberField

__all__ = ["IDEMPOTENCY_KEY", "WholeNumberField"]
