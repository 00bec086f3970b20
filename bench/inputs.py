"""Inputs shared by every section: the example texts, images and audio shipped with the app,
texts of an exact token count and speech clips of a given length."""
from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
IMAGE = ROOT / "assets" / "images" / "chelsea_cat.jpg"
AUDIO = sorted((ROOT / "assets" / "audio").glob("*.wav"))
TEXT = "This movie was an absolute delight: warm, funny and beautifully acted."
QUESTION = "When was the Eiffel Tower completed?"
CONTEXT = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
    "It is named after the engineer Gustave Eiffel, whose company designed and built the tower "
    "for the 1889 World's Fair. Construction began in January 1887 and the tower was completed "
    "in March 1889."
)
SOURCE = "The house is small, but the garden is beautiful."
PROMPT = "Once upon a time, in a small village by the sea,"
SENTENCES = [
    "A man is playing a guitar.",
    "Someone is strumming a guitar on stage.",
    "The stock market fell sharply today.",
]
LABELS = ["a photo of a cat", "a photo of an astronaut", "a cup of coffee", "a rocket on a launch pad"]
FILLER = (
    "the film was long and the story moved slowly but the actors gave warm and honest performances "
    "while the music and the pictures of the old city made every scene feel alive and new "
)


def text_of_tokens(tokenizer, n_tokens: int) -> str:
    """A text that the tokenizer turns into exactly `n_tokens` ids (specials included) when it can
    (re-tokenising decoded text may shift by a token; the caller records the real count)."""
    specials = tokenizer.num_special_tokens_to_add(pair=False)
    words = FILLER * (n_tokens // 8 + 4)
    ids = tokenizer(words, add_special_tokens=False)["input_ids"][: max(1, n_tokens - specials)]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    for _ in range(4):  # decoding and re-encoding can merge or split a token: nudge the length
        got = len(tokenizer(text)["input_ids"])
        if got == n_tokens:
            break
        ids = ids[: len(ids) - (got - n_tokens)] if got > n_tokens else ids + ids[: n_tokens - got]
        text = tokenizer.decode(ids, skip_special_tokens=True)
    return text


def speech(seconds: float, rate: int = 16_000) -> tuple[int, np.ndarray]:
    """(rate, int16 samples) of `seconds` of real speech: the example clips one after another."""
    import soundfile as sf

    clips = [sf.read(str(p), dtype="int16")[0] for p in AUDIO]
    clips = [c if c.ndim == 1 else c[:, 0] for c in clips]
    need = int(round(seconds * rate))
    out = np.concatenate(clips * (need // sum(len(c) for c in clips) + 1))[:need]
    return rate, np.ascontiguousarray(out)
