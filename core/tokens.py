"""Readable labels for byte-level BPE tokens (GPT-2, Whisper, CLIP): pure string functions.

Byte-level tokenizers store each token as bytes mapped to printable characters ('Ġ' = space,
'Ã©' = é). A character of several bytes may be split over two tokens; decoding such a token on
its own gives '�'. Here a token becomes its real text ('␣' for a leading space, '↵' for a
newline), and the bytes of a split character are shown as hex, e.g. 'â€' -> '‹E2 80›', so the
reader sees that the token carries part of a character.
"""
from __future__ import annotations

import re
from functools import lru_cache


@lru_cache(maxsize=1)
def byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's bytes_to_unicode table: printable character -> byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(bs, cs)}


_ESCAPED = re.compile(r"(?:\\x[0-9a-f]{2})+")


def byte_level_label(token: str) -> str:
    """A byte-level token as readable text (see the module docstring); other tokens unchanged."""
    word_end = token.endswith("</w>")  # CLIP marks the end of a word
    core = token[: -len("</w>")] if word_end else token
    table = byte_decoder()
    if not core or any(ch not in table for ch in core):
        return token
    text = bytes(table[ch] for ch in core).decode("utf-8", errors="backslashreplace")
    text = _ESCAPED.sub(
        lambda m: "‹" + " ".join(m.group(0)[i + 2 : i + 4].upper() for i in range(0, len(m.group(0)), 4)) + "›", text
    )
    text = text.replace("\n", "↵")
    if text.startswith(" "):
        text = "␣" + text[1:]
    return text + ("␣" if word_end else "")


_SPACE_MARKERS = ("Ġ", "▁")  # byte-level BPE (GPT-2, Whisper, CLIP) and SentencePiece (Marian) spaces


def outcome_text(label: str) -> str:
    """An outcome as people read it in a sentence or title: a token carrying a tokenizer's space
    marker ('ĠThe', '▁Haus') or a decoded leading space (' The') gets the app's visible space
    instead ('␣The', '␣Haus'); a byte-level
    token is decoded ('Ġcaf' + 'Ã©' -> '␣café'); anything else (class names, descriptions,
    sentences) is left as it is."""
    label = str(label)
    if label.startswith(" ") and label.strip():  # a decoded token: its leading space made visible
        return "␣" + label[1:]
    if not label.startswith(_SPACE_MARKERS) and "Ċ" not in label:
        return label
    if label.startswith("▁"):
        return "␣" + label[1:].replace("▁", "␣")
    decoded = byte_level_label(label)  # unchanged when it is not byte-level text
    return decoded if decoded != label else "␣" + label[1:]
