"""What the federated API's modules share: the schema tag, the owner's dataset lookup."""

from __future__ import annotations

from rest_framework.request import Request

from core.errors import NotFoundError
from federated import selectors
from federated.models import DatasetTerms

TAGS = ["federated"]


def owned_terms(request: Request, dataset_version_id: int) -> DatasetTerms:
    """The private dataset version's terms, if ``request``'s user owns it (or is staff)."""
    terms = selectors.federated_terms_for(dataset_version_id=dataset_version_id, user=request.user)
    user = request.user
    if terms is None or not (user.pk == terms.dataset_version.dataset.owner_id or user.is_staff):
        raise NotFoundError("No such dataset of yours.", code="dataset_not_found")
    return terms
