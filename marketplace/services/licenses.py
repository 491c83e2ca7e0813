"""License rules along the lineage: what a version may be published or sold with."""

from __future__ import annotations

from core.errors import ApplicationError
from marketplace.models import COMMERCIAL_LEVELS, License
from marketplace.selectors import licenses_by_code, listing_for, version_ancestors
from registry.models import ModelVersion


class LicenseConflictError(ApplicationError):
    status_code = 400
    code = "license_conflict"


def _refuse(ancestor: str, clause: str, message: str) -> None:
    raise LicenseConflictError(message, details={"ancestor": ancestor, "clause": clause})


def license_check(*, version: ModelVersion, for_sale: bool | None = None) -> None:
    """Refuse when the version's license or sale breaks a clause of an ancestor's license.

    ``for_sale`` None reads it from the version's active listing (price > 0).
    """
    catalogue = licenses_by_code()
    own: License | None = None
    if version.license_code:
        own = catalogue.get(version.license_code)
        if own is None:
            raise ApplicationError(
                f"Unknown license {version.license_code!r}; choose one of: "
                f"{', '.join(sorted(catalogue))}.",
                code="unknown_license",
            )
    if for_sale is None:
        listing = listing_for(version)
        for_sale = bool(listing is not None and listing.price > 0)
    for ancestor in version_ancestors(version):
        parent = catalogue.get(ancestor.target.license_code)
        if parent is None:
            continue
        label = ancestor.label
        if not parent.derivatives_allowed:
            _refuse(
                label,
                "derivatives_allowed",
                f"{label} is licensed {parent.code}, which forbids derivatives.",
            )
        if not parent.different_license_allowed and version.license_code != parent.code:
            _refuse(
                label,
                "different_license_allowed",
                f"{label} is licensed {parent.code}, which requires derivatives to keep "
                f"the same license (this version has {version.license_code or 'none'}).",
            )
        if for_sale and parent.commercial_use != "sell":
            _refuse(
                label,
                "commercial_use",
                f"{label} is licensed {parent.code}, which forbids selling derivatives "
                f"(commercial use: {parent.commercial_use}).",
            )
        if own is not None and (
            COMMERCIAL_LEVELS.index(own.commercial_use)
            > COMMERCIAL_LEVELS.index(parent.commercial_use)
        ):
            _refuse(
                label,
                "commercial_use",
                f"{label} is licensed {parent.code}, which allows commercial use only up "
                f"to {parent.commercial_use!r}; {own.code} grants {own.commercial_use!r}.",
            )


def publish_check(version: ModelVersion) -> None:
    """The hook the registry runs before publishing a version."""
    license_check(version=version)
