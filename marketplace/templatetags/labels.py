"""Labels people read instead of codes: a fee in basis points as a percentage, a base-model
family code as its name ("sd1" -> "SD 1.x"), a version's Civitai base-model name ("Pony").
One place, used by every page that shows them."""

from __future__ import annotations

from decimal import Decimal

from django import template

from registry.models import BaseModelFamily

register = template.Library()

BPS_PER_PERCENT = 100


@register.filter
def bps_percent(value: object) -> str:
    """``1000`` -> ``"10%"``, ``250`` -> ``"2.5%"``, ``1`` -> ``"0.01%"``; not a number: ``""``."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return ""
    try:
        bps = int(value)
    except ValueError:
        return ""
    percent = Decimal(bps) / BPS_PER_PERCENT
    text = format(percent.normalize(), "f") if percent else "0"
    return f"{text}%"


@register.filter
def base_model_label(value: object) -> str:
    """The family's display name; an unknown or empty code reads "Unknown".

    Given a version (anything with ``base_model`` and ``base_model_name``), its Civitai name
    when that says more than the family (``Pony``, ``Illustrious``, ``NoobAI``, a creator's own
    name), else the family's name: ``version|base_model_label``.
    """
    if hasattr(value, "base_model") and not isinstance(value, str):
        family = str(getattr(value, "base_model", "") or "unknown")
        name = str(getattr(value, "base_model_name", "") or "").strip()
        if name and _names_more_than_family(name, family):
            return name
        value = family
    try:
        return str(BaseModelFamily(str(value or "unknown")).label)
    except ValueError:
        return str(BaseModelFamily.UNKNOWN.label)


def _names_more_than_family(name: str, family: str) -> bool:
    """Whether a Civitai name adds to the family: not the family's default name ("SDXL 1.0"
    for sdxl) and not another family's name (a stale name after the family changed)."""
    from sdcore.detect import CIVITAI_BASE_MODELS

    own = CIVITAI_BASE_MODELS.get(family, ())
    if own and name == own[0]:
        return False
    others = {n for f, names in CIVITAI_BASE_MODELS.items() if f != family for n in names}
    return name not in others


@register.filter
def base_model_labels(codes: object) -> str:
    """A list of family codes as their names, comma-separated (``["sd1", "sdxl"]`` ->
    ``"SD 1.x, SDXL"``); anything but a list or tuple reads as one code."""
    items = codes if isinstance(codes, list | tuple) else [codes]
    return ", ".join(base_model_label(code) for code in items)
