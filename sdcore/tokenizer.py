"""An offline CLIP tokenizer for the tiny model (nothing is downloaded).

The vocabulary is CLIP's byte-level alphabet (the 256 byte characters, the same with the
end-of-word marker ``</w>``), a few merges that only combine tokens already in the vocabulary,
then ``<|startoftext|>`` and ``<|endoftext|>`` as the last two ids, as in CLIP (so the end token
is ``vocab_size - 1``, which the single-file loader relies on).

Pitfall with transformers 5: ``CLIPTokenizer(vocab_file=..., merges_file=...)`` silently ignores
both files and builds a 3-token vocabulary. Always write the files and go through
``CLIPTokenizer.from_pretrained(folder)``.
"""

from __future__ import annotations

import json
import tempfile
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

__all__ = [
    "BOS_TOKEN",
    "EOS_TOKEN",
    "MODEL_MAX_LENGTH",
    "build_offline_tokenizer",
    "offline_vocab_size",
    "write_offline_tokenizer_files",
]

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
MODEL_MAX_LENGTH = 77
END_OF_WORD = "</w>"

# Whole words whose BPE merges are added, so common caption words become single tokens.
# Changing this list changes the vocabulary, hence the tiny model's text-encoder shape.
_MERGED_WORDS: tuple[str, ...] = (
    "a",
    "an",
    "the",
    "of",
    "in",
    "on",
    "with",
    "photo",
    "red",
    "green",
    "blue",
    "circle",
    "square",
    "triangle",
    "style",
    "sks",
    "shape",
)


@cache
def _bytes_to_unicode() -> tuple[str, ...]:
    """CLIP's (GPT-2's) reversible map from the 256 byte values to printable characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return tuple(chr(c) for c in codes)


@cache
def _vocab_and_merges() -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    alphabet = _bytes_to_unicode()
    tokens: list[str] = list(alphabet) + [c + END_OF_WORD for c in alphabet]
    known = set(tokens)
    merges: list[tuple[str, str]] = []
    for word in _MERGED_WORDS:
        # Merge left to right: ((w o) r) d</w> ... so every merge uses tokens already known.
        parts = list(word[:-1]) + [word[-1] + END_OF_WORD]
        current = parts[0]
        for nxt in parts[1:]:
            merged = current + nxt
            if merged not in known:
                merges.append((current, nxt))
                tokens.append(merged)
                known.add(merged)
            current = merged
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return tuple(tokens), tuple(merges)


def offline_vocab_size() -> int:
    """Number of tokens of the offline tokenizer (the tiny text encoder's ``vocab_size``)."""
    return len(_vocab_and_merges()[0])


def write_offline_tokenizer_files(folder: Path) -> Path:
    """Write ``vocab.json``, ``merges.txt`` and configs into ``folder``; return ``folder``."""
    tokens, merges = _vocab_and_merges()
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {token: index for index, token in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MODEL_MAX_LENGTH,
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "unk_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return folder


def build_offline_tokenizer() -> CLIPTokenizer:
    """A ``CLIPTokenizer`` built from the offline vocabulary (no network, deterministic)."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory(prefix="atelier-tok-") as tmp:
        folder = write_offline_tokenizer_files(Path(tmp))
        tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    if len(tokenizer) != offline_vocab_size():
        raise RuntimeError(
            f"offline tokenizer has {len(tokenizer)} tokens, expected {offline_vocab_size()}: "
            "the transformers CLIPTokenizer ignored the vocabulary files"
        )
    tokenizer.model_max_length = MODEL_MAX_LENGTH
    return tokenizer
