"""Validators shared by API serializers, web forms and services.

:func:`refuse_invisible_characters` keeps names, titles, slugs and tags to what a reader sees.
It refuses control characters (Unicode category Cc: NUL, newlines, escape...), format
characters (Cf: bidirectional overrides and isolates such as U+202E that reverse the text
shown, zero-width spaces and joiners U+200B-U+200D, U+2060, U+FEFF...), line and paragraph
separators (Zl, Zp), private-use and surrogate code points (Co, Cs), and the "filler" letters
that render as nothing (U+115F, U+1160, U+3164, U+FFA0). Such characters let one name pass
for another ("safe-model<U+202E>gnp.exe" shows as "safe-modelexe.png") or look empty.

It raises Django's ``ValidationError``, which DRF fields and Django forms both report on the
field; services call :func:`invisible_character` and raise their own error.
"""

from __future__ import annotations

import unicodedata

from django.core.exceptions import ValidationError

REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Zl", "Zp"})
INVISIBLE_LETTERS = frozenset({"\u115f", "\u1160", "\u3164", "\uffa0"})


def invisible_character(value: str) -> str | None:
    """The first refused character of ``value``, or None."""
    for char in value:
        if char in INVISIBLE_LETTERS or unicodedata.category(char) in REFUSED_CATEGORIES:
            return char
    return None


def invisible_character_message(char: str) -> str:
    name = unicodedata.name(char, "a control character")
    return f"Must not contain invisible or control characters (found U+{ord(char):04X}, {name})."


def refuse_invisible_characters(value: str) -> None:
    """A field validator (DRF and Django forms): refuse the characters described above."""
    char = invisible_character(str(value))
    if char is not None:
        raise ValidationError(
            invisible_character_message(char),
            code="invisible_characters",
            params={"codepoint": f"U+{ord(char):04X}"},
        )
