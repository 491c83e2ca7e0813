"""Forms of the registry's pages: the browse filters and the upload form."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib.auth.models import User

from core.validators import refuse_invisible_characters
from registry.filters import tag_names
from registry.models import BaseModelFamily, ModelKind, ModelVersion, Visibility
from registry.selectors.models import MODEL_SORTS, PRICE_FILTERS, ModelFilters
from registry.services.catalog import MAX_TAGS

# The API's sorts; relevance (the default) ranks a search and is newest first without one.
SORT_CHOICES = [
    ("relevance", "Best match"),
    ("newest", "Newest"),
    ("downloads", "Most downloaded"),
    ("rating", "Top rated"),
    ("price_low", "Price: low to high"),
    ("price_high", "Price: high to low"),
]
PRICE_CHOICES = [("", "Free and paid"), ("free", "Free"), ("paid", "Paid")]
assert {value for value, _ in PRICE_CHOICES if value} == set(PRICE_FILTERS)
assert {value for value, _ in SORT_CHOICES} == set(MODEL_SORTS)


def split_words(text: str) -> list[str]:
    """Comma-separated (or one per line) words, stripped, without empties or duplicates."""
    words: list[str] = []
    for part in text.replace("\n", ",").split(","):
        word = part.strip()
        if word and word not in words:
            words.append(word)
    return words


class BrowseForm(forms.Form):
    q = forms.CharField(required=False, max_length=200, label="Search")
    kind = forms.ChoiceField(
        required=False, choices=[("", "Any kind"), *ModelKind.choices], label="Kind"
    )
    base = forms.ChoiceField(
        required=False,
        choices=[("", "Any base model"), *BaseModelFamily.choices],
        label="Base model",
    )
    tag = forms.CharField(required=False, max_length=64, label="Tag")
    price = forms.ChoiceField(required=False, choices=PRICE_CHOICES, label="Price")
    sort = forms.ChoiceField(required=False, choices=SORT_CHOICES, label="Sort")

    def filters(self) -> ModelFilters:
        """The filters asked for, as the API's (:func:`registry.filters.model_filters`) but
        under the page's names; invalid values are dropped rather than failing the page."""
        self.is_valid()  # cleaned_data then holds the fields that were valid
        data: dict[str, Any] = self.cleaned_data
        kind, base = data.get("kind") or "", data.get("base") or ""
        return ModelFilters(
            q=data.get("q") or "",
            kinds=(kind,) if kind else (),
            base_models=(base,) if base else (),
            tags=tuple(tag_names([data.get("tag") or ""])),
            price=data.get("price") or "",
            sort=data.get("sort") or "",
        )


class MultipleImageInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleImageField(forms.FileField):
    """Several image files (a list, possibly empty); the service checks each image."""

    def __init__(self, **kwargs: Any) -> None:
        attrs = {"accept": "image/png,image/jpeg,image/webp"}
        kwargs.setdefault("widget", MultipleImageInput(attrs=attrs))
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def clean(self, data: Any, initial: Any = None) -> list[Any]:
        files = data if isinstance(data, list | tuple) else [data]
        return [super(MultipleImageField, self).clean(f, initial) for f in files if f]


class ModelUploadForm(forms.Form):
    """A new model with its first version and one file.

    With JavaScript, the file goes through the resumable upload API first and the form
    carries only ``upload_id``; without it, the file comes in the form itself.
    """

    name = forms.CharField(max_length=200, validators=[refuse_invisible_characters])
    kind = forms.ChoiceField(choices=ModelKind.choices, initial=ModelKind.LORA)
    description = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 5}), help_text="Markdown."
    )
    tags = forms.CharField(required=False, max_length=1000, help_text="Comma-separated.")
    visibility = forms.ChoiceField(choices=Visibility.choices, initial=Visibility.PUBLIC)
    version_name = forms.CharField(
        max_length=100,
        initial="v1",
        label="Version name",
        validators=[refuse_invisible_characters],
    )
    trigger_words = forms.CharField(
        required=False, max_length=2000, help_text="Comma-separated.", label="Trigger words"
    )
    base_model = forms.ChoiceField(
        required=False,
        choices=[("", "Detect from the file"), *BaseModelFamily.choices],
        label="Base model",
        help_text="What it was trained on or for; detected from the file's tensors if not set.",
    )
    base_model_name = forms.CharField(
        required=False,
        max_length=40,
        label="Base model name",
        help_text="As Civitai names it (SDXL 1.0, Pony, Illustrious, NoobAI...); detected from "
        "the file's metadata and names if not set.",
        validators=[refuse_invisible_characters],
    )
    file = forms.FileField(
        required=False,
        help_text=".safetensors (preferred), .ckpt/.pt/.bin (scanned, never unpickled).",
    )
    upload_id = forms.UUIDField(required=False, widget=forms.HiddenInput)
    images = MultipleImageField(
        label="Images",
        help_text="PNG, JPEG or WebP, in the order to show them; the first is the cover. "
        "Buyers see them before they pay; checkpoints and LoRAs get rendered ones if none.",
    )

    def clean_tags(self) -> list[str]:
        tags = split_words(self.cleaned_data.get("tags", ""))
        for tag in tags:
            refuse_invisible_characters(tag)
        if len(tags) > MAX_TAGS:
            raise forms.ValidationError(f"At most {MAX_TAGS} tags ({len(tags)} given).")
        return tags

    def clean_trigger_words(self) -> list[str]:
        return split_words(self.cleaned_data.get("trigger_words", ""))

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if not cleaned.get("file") and not cleaned.get("upload_id") and "file" not in self.errors:
            self.add_error("file", "Choose a file to upload.")
        return cleaned


# --- the upload form's terms: license and price, filled in by the marketplace ---------------


@dataclass(frozen=True)
class UploadTerms:
    """A section the upload form adds for terms the registry does not own (the marketplace's
    license and price): ``form`` builds its form from the POST data (or ``None``), ``save``
    applies its cleaned data to the new draft version inside the upload's transaction and
    raises ``ApplicationError`` when the terms are refused; ``error_fields`` says which field
    an error code belongs to. The marketplace installs it when its app loads."""

    form: Callable[[Mapping[str, Any] | None], forms.Form]
    save: Callable[[ModelVersion, User, dict[str, Any]], None]
    error_fields: Mapping[str, str]


_upload_terms: UploadTerms | None = None


def set_upload_terms(terms: UploadTerms) -> None:
    global _upload_terms
    _upload_terms = terms


def upload_terms() -> UploadTerms | None:
    return _upload_terms
