"""Labels people read instead of codes: a fee in basis points as a percentage, a base-model
family code as its name ("sd1" -> "SD 1.x"). One place, used by every page that shows them."""

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
def base_model_label(code: object) -> str:
    """The family's display name; an unknown or empty code reads "Unknown"."""
    try:
        return str(BaseModelFamily(str(code or "unknown")).label)
    except ValueError:
        return str(BaseModelFamily.UNKNOWN.label)


@register.filter
def base_model_labels(codes: object) -> str:
    """A list of family codes as their names, comma-separated (``["sd1", "sdxl"]`` ->
    ``"SD 1.x, SDXL"``); anything but a list or tuple reads as one code."""
    items = codes if isinstance(codes, list | tuple) else [codes]
    return ", ".join(base_model_label(code) for code in items)
