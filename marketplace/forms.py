"""Forms of the marketplace pages; they only parse input, the services decide."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from django import forms

from marketplace.models import CommercialUse, License, ReportReason

MAX_TOP_UP = 1_000_000
MAX_PRICE = 1_000_000_000


def new_key() -> str:
    return uuid.uuid4().hex


class TopUpForm(forms.Form):
    amount = forms.IntegerField(
        min_value=1,
        max_value=MAX_TOP_UP,
        label="Credits",
        help_text="The demo provider approves at once.",
    )
    idempotency_key = forms.CharField(widget=forms.HiddenInput, max_length=200)


class PayoutForm(forms.Form):
    amount = forms.IntegerField(min_value=1, label="Credits to pay out")


class StatementForm(forms.Form):
    from_ = forms.DateField(
        label="From", widget=forms.DateInput(attrs={"type": "date"}), input_formats=["%Y-%m-%d"]
    )
    to = forms.DateField(
        label="To", widget=forms.DateInput(attrs={"type": "date"}), input_formats=["%Y-%m-%d"]
    )

    def add_prefix(self, field_name: str) -> str:  # the query string says ?from=...
        return "from" if field_name == "from_" else field_name

    def clean(self) -> dict[str, object]:
        data = super().clean() or {}
        start, end = data.get("from_"), data.get("to")
        if start and end and start > end:
            self.add_error("to", "'to' must be on or after 'from'.")
        return data


class PurchaseConfirmForm(forms.Form):
    idempotency_key = forms.CharField(widget=forms.HiddenInput, max_length=200)


class ReviewForm(forms.Form):
    rating = forms.TypedChoiceField(
        choices=[("", "Choose a rating"), *((i, f"{i} ★") for i in range(5, 0, -1))], coerce=int
    )
    text = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        required=False,
        max_length=5000,
        label="Your review",
    )


class ReportForm(forms.Form):
    reason = forms.ChoiceField(choices=ReportReason.choices, widget=forms.RadioSelect)
    text = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 5}), max_length=5000, label="What is wrong?"
    )


class ListingForm(forms.Form):
    """A model version's license and price (the owner's sell page).

    A price on a version whose own license does not allow selling it is a confirm step: the
    first save answers with an error on the price and a "Sell anyway" box; ticking it saves.
    """

    license_code = forms.ChoiceField(label="License", required=False)
    price = forms.IntegerField(
        min_value=0,
        max_value=MAX_PRICE,
        label="Price (credits)",
        help_text="0 makes it free to download.",
    )
    sell_anyway = forms.BooleanField(
        required=False,
        widget=forms.HiddenInput,
        label="Sell anyway: I hold the rights to sell this version",
    )

    def __init__(
        self, *args: Any, licenses: Iterable[License], locked: bool, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.licenses = {lic.code: lic for lic in licenses}
        field = self.fields["license_code"]
        field.choices = [  # type: ignore[attr-defined]  # a ChoiceField; typed as Field
            ("", "No license stated"),
            *((lic.code, f"{lic.name} ({lic.code})") for lic in self.licenses.values()),
        ]
        if locked:
            field.disabled = True
            field.help_text = "A published version keeps its license."

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        lic = self.licenses.get(data.get("license_code") or "")
        price = data.get("price") or 0
        if lic is None or price <= 0 or lic.commercial_use == CommercialUse.SELL:
            return data
        if not data.get("sell_anyway"):
            self.fields["sell_anyway"].widget = forms.CheckboxInput()
            self.add_error(
                "price",
                f"Its license {lic.code} says “{lic.get_commercial_use_display()}”: it does "
                "not allow selling the model. Choose a license that allows selling, set the "
                "price to 0, or tick “Sell anyway” and save again.",
            )
        return data
