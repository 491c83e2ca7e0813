"""Canaries: distinctive captioned images, each put in one owner's dataset with probability 1/2.

A canary is unlike the owners' data and unlike every other canary: two or three figures of
the shapes palette (:mod:`sdcore.shapes`), of random colours, shapes, sizes and places, on a
random background colour, captioned with a made-up word of its own
(``"a zoqvi canary, a green circle and a red triangle on a blue background"``). Canary ``i``
of seed ``s`` depends only on ``(s, i)``; which canaries go in is a separate fair coin per
canary (``include_seed``), as the one-run audit requires (Steinke, Nasr and Jagielski 2023).

:func:`insert_canaries` writes the owner's dataset (its own images + the included canaries,
shuffled names so that position says nothing) and a separate folder of ALL canaries (in and
out) for the attack; the auditor keeps the coins (:class:`CanarySet`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from federated.engine import constants
from sdcore.shapes import COLOURS, SHAPES, draw_shape

__all__ = ["Canary", "CanarySet", "insert_canaries", "make_canaries"]

_LETTERS = "bcdfghjklmnpqrstvwxz"
_VOWELS = "aeiouy"
_COLOUR_NAMES = tuple(COLOURS)


@dataclass(frozen=True)
class Canary:
    index: int
    caption: str
    image: Image.Image


def _word(rng: np.random.Generator) -> str:
    return "".join(
        (_LETTERS if i % 2 == 0 else _VOWELS)[
            int(rng.integers(len(_LETTERS if i % 2 == 0 else _VOWELS)))
        ]
        for i in range(5)
    )


def make_canaries(n: int, *, seed: int = 0, resolution: int = 64) -> list[Canary]:
    """``n`` distinct canaries; canary ``i`` depends only on ``(seed, i)``."""
    if n < 1:
        raise ValueError("at least one canary is needed")
    if resolution < 16 or resolution % 8:
        raise ValueError("resolution must be a multiple of 8, at least 16")
    out: list[Canary] = []
    words: set[str] = set()
    for index in range(n):
        rng = np.random.default_rng([seed, index, 0xCA7A])
        word = _word(rng)
        while word in words:  # each canary its own word
            word = _word(rng)
        words.add(word)
        background = _COLOUR_NAMES[int(rng.integers(len(_COLOUR_NAMES)))]
        image = Image.new("RGB", (resolution, resolution), COLOURS[background])
        draw = ImageDraw.Draw(image)
        named: list[str] = []
        for _ in range(int(rng.integers(2, 4))):
            colour = background
            while colour == background:
                colour = _COLOUR_NAMES[int(rng.integers(len(_COLOUR_NAMES)))]
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            radius = float(rng.uniform(0.12, 0.25)) * resolution
            cx, cy = rng.uniform(radius, resolution - radius, size=2)
            draw_shape(draw, shape, float(cx), float(cy), radius, COLOURS[colour])
            named.append(f"a {colour} {shape}")
        caption = f"a {word} canary, {' and '.join(named)} on a {background} background"
        out.append(Canary(index, caption, image))
    return out


@dataclass(frozen=True)
class CanarySet:
    """Where the canaries are and which went in (the auditor's secret)."""

    all_dir: Path  # every canary, ``canary-00000.png`` + caption, in and out
    members: tuple[bool, ...]  # members[i]: canary i is in the owner's dataset

    @property
    def count(self) -> int:
        return len(self.members)

    def to_dict(self) -> dict[str, object]:
        return {"all_dir": str(self.all_dir), "members": [int(m) for m in self.members]}


def _save(image: Image.Image, caption: str, path: Path) -> None:
    image.save(path, format="PNG")
    path.with_suffix(constants.CAPTION_EXTENSION).write_text(caption + "\n", encoding="utf-8")


def insert_canaries(
    dataset: Path,
    out_dir: Path,
    canaries: list[Canary],
    *,
    include_seed: int,
    probability: float = 0.5,
) -> tuple[Path, CanarySet]:
    """Copy the kohya folder ``dataset`` to ``out_dir / "data"`` with each canary added with
    ``probability`` (an independent coin each, from ``include_seed``); all canaries also go to
    ``out_dir / "canaries"``. Returns the new dataset folder and the :class:`CanarySet`.
    """
    if not 0 < probability < 1:
        raise ValueError("probability must be strictly between 0 and 1")
    dataset, out_dir = Path(dataset), Path(out_dir)
    data_dir = out_dir / "data"
    all_dir = out_dir / "canaries"
    for folder in (data_dir, all_dir):
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
    coins = np.random.default_rng([include_seed, 0x1C01]).random(len(canaries)) < probability
    items: list[tuple[Path, Image.Image | None, str]] = []
    for png in sorted(dataset.glob("*.png")):
        caption = png.with_suffix(constants.CAPTION_EXTENSION).read_text(encoding="utf-8").strip()
        items.append((png, None, caption))
    for canary, member in zip(canaries, coins, strict=True):
        _save(canary.image, canary.caption, all_dir / f"canary-{canary.index:05d}.png")
        if member:
            items.append((Path(), canary.image, canary.caption))
    # Names in a random order: the file name says nothing about which files are canaries.
    order = np.random.default_rng([include_seed, 0x0D0E]).permutation(len(items))
    for name_index, item_index in enumerate(order):
        source, image, caption = items[int(item_index)]
        target = data_dir / f"{name_index:05d}.png"
        if image is None:
            shutil.copyfile(source, target)
            target.with_suffix(constants.CAPTION_EXTENSION).write_text(
                caption + "\n", encoding="utf-8"
            )
        else:
            _save(image, caption, target)
    members = tuple(bool(c) for c in coins)
    (out_dir / "members.json").write_text(
        json.dumps({"members": [int(m) for m in members]}) + "\n", encoding="utf-8"
    )
    return data_dir, CanarySet(all_dir, members)
