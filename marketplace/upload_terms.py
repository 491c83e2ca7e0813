"""The license and price section of the registry's upload form (``registry.forms.UploadTerms``),
installed by ``apps.py``: the sell page's :class:`~marketplace.forms.ListingForm` rules (a
price on a license that forbids selling asks "Sell anyway") and its one service,
:func:`~marketplace.services.listings.listing_terms_set`, applied to the new draft."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.contrib.auth.models import User

from marketplace.forms import ListingForm
from marketplace.selectors import licenses_by_code
from marketplace.services.listings import listing_terms_set
from registry.forms import UploadTerms
from registry.models import ModelVersion


class UploadListingForm(ListingForm):
    """The sell form inside the upload form: no price means free (0)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        price = self.fields["price"]
        price.required = False
        price.initial = 0
        price.help_text = (
            "0 makes it free to download. The price can change later; the license is fixed "
            "once published."
        )

    def clean_price(self) -> int:
        return self.cleaned_data.get("price") or 0


def _form(data: Mapping[str, Any] | None) -> UploadListingForm:
    return UploadListingForm(data, licenses=licenses_by_code().values(), locked=False)


def _save(version: ModelVersion, user: User, data: dict[str, Any]) -> None:
    if not data.get("license_code") and not data.get("price"):
        return
    listing_terms_set(
        seller=user, version=version, license_code=data["license_code"], price=data["price"]
    )


# Which field of a license-and-price form an error from the listing services belongs to
# (the sell page's too).
LISTING_ERROR_FIELDS = {
    "bad_price": "price",
    "bad_early_access": "price",
    "license_locked": "license_code",
    "unknown_license": "license_code",
    "license_conflict": "license_code",
}

UPLOAD_TERMS = UploadTerms(form=_form, save=_save, error_fields=LISTING_ERROR_FIELDS)
