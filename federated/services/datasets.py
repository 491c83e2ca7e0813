"""Private datasets listed from a node: the registry's dataset and version (manifest only, never
images) plus the terms on which jobs may train on them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction

from core.errors import AccessDeniedError, ApplicationError, ConflictError, NotFoundError
from federated.models import ApprovalMode, DatasetTerms, Node, TrainingUse
from registry.models import BaseModelFamily, Dataset, DatasetKind, Visibility
from registry.services.catalog import dataset_create, dataset_version_create_private

TERMS_FIELDS = (
    "price_per_example_round",
    "price_per_job",
    "allowed_families",
    "allowed_uses",
    "commercial_use",
    "epsilon_per_job",
    "delta",
    "epsilon_lifetime",
    "approval",
    "require_dp",
)
DEFAULT_FAMILIES = (BaseModelFamily.SD1, BaseModelFamily.SD2)
DEFAULT_DELTA = 1e-5
# Without an explicit lifetime budget a dataset allows this many jobs at the per-job budget.
DEFAULT_LIFETIME_JOBS = 4
MAX_EPSILON = 1000.0


def _bad(field: str, message: str) -> ApplicationError:
    return ApplicationError(f"{field}: {message}", code=f"bad_{field}", details={"field": field})


def _credits(value: object, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _bad(field, "must be a whole number of credits, 0 or more.")
    return value


def _number(value: object, field: str, *, low: float, high: float, low_open: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(field, "must be a number.")
    number = float(value)
    too_low = number <= low if low_open else number < low
    if not math.isfinite(number) or too_low or number > high:
        bound = f"more than {low:g}" if low_open else f"at least {low:g}"
        raise _bad(field, f"must be {bound} and at most {high:g}.")
    return number


def _choices(value: object, field: str, choices: Sequence[str]) -> list[str]:
    if not isinstance(value, list | tuple) or not value:
        raise _bad(field, f"must be a non-empty list of: {', '.join(choices)}.")
    out: list[str] = []
    for item in value:
        if item not in choices:
            raise _bad(field, f"{item!r} is not one of: {', '.join(choices)}.")
        if item not in out:
            out.append(str(item))
    return out


def _bool(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise _bad(field, "must be true or false.")
    return value


def terms_clean(values: Mapping[str, Any], current: DatasetTerms | None = None) -> dict[str, Any]:
    """Validated terms: ``values`` over the current terms (or the defaults)."""
    unknown = sorted(set(values) - set(TERMS_FIELDS))
    if unknown:
        raise ApplicationError(
            f"Unknown terms: {', '.join(unknown)}.", code="bad_terms", details={"unknown": unknown}
        )
    base: dict[str, Any] = (
        {f: getattr(current, f) for f in TERMS_FIELDS}
        if current is not None
        else {
            "price_per_example_round": 0,
            "price_per_job": 0,
            "allowed_families": list(DEFAULT_FAMILIES),
            "allowed_uses": list(TrainingUse.values),
            "commercial_use": False,
            "delta": DEFAULT_DELTA,
            "approval": ApprovalMode.AUTO,
            "require_dp": True,
        }
    )
    merged = {**base, **values}
    if values.get("allowed_uses") in ([], ()):  # no restriction given: every use
        merged["allowed_uses"] = list(TrainingUse.values)
    if "epsilon_per_job" not in merged:
        raise _bad("epsilon_per_job", "is required (the privacy budget of one job).")
    if current is None and "epsilon_lifetime" not in values:
        merged["epsilon_lifetime"] = float(merged["epsilon_per_job"]) * DEFAULT_LIFETIME_JOBS
    out = {
        "price_per_example_round": _credits(
            merged["price_per_example_round"], "price_per_example_round"
        ),
        "price_per_job": _credits(merged["price_per_job"], "price_per_job"),
        "allowed_families": _choices(
            merged["allowed_families"], "allowed_families", BaseModelFamily.values
        ),
        "allowed_uses": _choices(merged["allowed_uses"], "allowed_uses", TrainingUse.values),
        "commercial_use": _bool(merged["commercial_use"], "commercial_use"),
        "epsilon_per_job": _number(
            merged["epsilon_per_job"], "epsilon_per_job", low=0, high=MAX_EPSILON
        ),
        "delta": _number(merged["delta"], "delta", low=0, high=0.1),
        "epsilon_lifetime": _number(
            merged["epsilon_lifetime"], "epsilon_lifetime", low=0, high=MAX_EPSILON * 100
        ),
        "approval": merged["approval"],
        "require_dp": _bool(merged["require_dp"], "require_dp"),
    }
    if out["approval"] not in ApprovalMode.values:
        raise _bad("approval", f"must be one of: {', '.join(ApprovalMode.values)}.")
    if out["price_per_example_round"] and out["price_per_job"]:
        raise ApplicationError(
            "Price per example and round, or per job: not both.",
            code="bad_pricing",
            details={"field": "price_per_job"},
        )
    if out["epsilon_lifetime"] < out["epsilon_per_job"]:
        raise _bad("epsilon_lifetime", "must be at least epsilon_per_job.")
    return out


def _owned_node(owner: User, node_id: int) -> Node:
    node = Node.objects.filter(pk=node_id, owner_id=owner.pk).first()
    if node is None:
        raise NotFoundError("No such node of yours.", code="node_not_found")
    if node.revoked_at is not None:
        raise ApplicationError("That node was revoked; register it again.", code="node_revoked")
    return node


def _next_version_name(dataset: Dataset) -> str:
    names = set(dataset.versions.values_list("name", flat=True))
    n = len(names) + 1
    while f"v{n}" in names:
        n += 1
    return f"v{n}"


@transaction.atomic
def federated_dataset_create(
    *,
    owner: User,
    node_id: int,
    name: str,
    manifest: dict[str, Any],
    terms: Mapping[str, Any],
    description: str = "",
    tags: Sequence[str] = (),
    visibility: str = Visibility.PUBLIC,
    dataset_id: int | None = None,
) -> DatasetTerms:
    """List a private dataset served by ``node_id``: a new dataset (or a new version of the
    owner's private ``dataset_id``) holding the node's manifest, with its terms."""
    node = _owned_node(owner, node_id)
    cleaned = terms_clean(terms)
    digest = str(manifest.get("manifest_hash", "")).lower() if isinstance(manifest, dict) else ""
    listed = DatasetTerms.objects.filter(
        dataset_version__manifest_hash=digest,
        dataset_version__dataset__owner_id=owner.pk,
        dataset_version__dataset__is_removed=False,
    ).first()
    if digest and listed is not None:
        raise ConflictError(
            "You already listed a dataset with this manifest.",
            code="already_listed",
            details={"dataset_version_id": listed.dataset_version_id},
        )
    if dataset_id is None:
        dataset = dataset_create(
            owner=owner,
            name=name,
            kind=DatasetKind.PRIVATE,
            description=description,
            tags=tags,
            visibility=visibility,
        )
    else:
        found = Dataset.objects.filter(pk=dataset_id, owner_id=owner.pk).first()
        if found is None:
            raise NotFoundError("No such dataset of yours.", code="dataset_not_found")
        dataset = found
    version = dataset_version_create_private(
        dataset=dataset,
        user=owner,
        name=_next_version_name(dataset),
        manifest={**manifest, "manifest_hash": digest} if digest else manifest,
    )
    return DatasetTerms.objects.create(dataset_version=version, node=node, **cleaned)


@transaction.atomic
def dataset_terms_update(
    *,
    terms: DatasetTerms,
    user: User,
    changes: Mapping[str, Any],
    node_id: int | None = None,
) -> DatasetTerms:
    """Change a dataset's terms (its owner only). Jobs already launched keep their terms."""
    terms = (
        DatasetTerms.objects.select_for_update()
        .select_related("dataset_version__dataset")
        .get(pk=terms.pk)
    )
    if terms.dataset_version.dataset.owner_id != user.pk:
        raise AccessDeniedError("Only the dataset's owner can change its terms.", code="not_owner")
    cleaned = terms_clean(changes, current=terms)
    for field, value in cleaned.items():
        setattr(terms, field, value)
    if node_id is not None:
        terms.node = _owned_node(user, node_id)
    terms.save()
    return terms
