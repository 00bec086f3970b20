"""Whole words from sub-word tokens: pure functions (no torch, no gradio).

Tokenizers cut words into pieces, each with its own attribution score and attention row; a class
reads words. Three conventions mark where a word starts or ends:

* byte-level BPE (GPT-2, Whisper, SmolLM2): a piece that starts a word begins with 'Ġ' (shown by
  `core.tokens.byte_level_label` as '␣'); CLIP marks the *end* of a word with '</w>' (shown '␣'
  at the end);
* WordPiece (BERT, DistilBERT): a piece that continues a word begins with '##';
* SentencePiece (Marian, T5, Llama): a piece that starts a word begins with '▁'.

A word is what these markers delimit (for byte-level BPE and SentencePiece that is the text
between two spaces, so "good." is one word; WordPiece splits punctuation off by itself). Special
tokens ([CLS], </s>, <|endoftext|>...) and newlines are words of their own. Groups are runs of
consecutive tokens covering every token once, so scores summed per word add up to the same total.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

_SPECIAL = re.compile(r"^(\[[A-Za-z_]+\]|<\|[^|]*\|>|</?[a-z_]{1,12}>)$")
_NEWLINES = {"↵", "Ċ", "\n", "<0x0A>"}
_START = ("Ġ", "␣", "▁")  # a piece beginning a word (byte-level BPE as stored and as shown, SentencePiece)
_END = ("</w>",)  # CLIP: a piece ending a word


def is_special(token: str) -> bool:
    """[CLS], [SEP], <s>, </s>, <pad>, <|endoftext|>, <|en|>, ... (never merged into a word)."""
    return bool(_SPECIAL.match(token))


def convention(tokens: Sequence[str]) -> str:
    """'wordpiece', 'sentencepiece', 'end' (CLIP's end-of-word marks), 'start' (byte-level BPE)
    or 'none' (no marker: every token is a word)."""
    plain = [t for t in tokens if not is_special(t) and len(t) > 1]
    if any(t.startswith("##") for t in plain):
        return "wordpiece"
    if any(t.startswith("▁") for t in plain):
        return "sentencepiece"
    if any(t.endswith("</w>") or (t.endswith("␣") and not t.startswith("␣")) for t in plain):
        return "end"
    if any(t.startswith(("Ġ", "␣")) for t in plain):
        return "start"
    return "none"


def _alone(token: str) -> bool:
    """A token that is a word of its own whatever the convention."""
    return is_special(token) or token in _NEWLINES or not token.strip()


def _starts_word(token: str, kind: str) -> bool:
    if kind == "wordpiece":
        return not token.startswith("##")
    if kind in ("sentencepiece", "start"):
        return token.startswith(_START)
    return kind == "none"


def word_groups(tokens: Sequence[str]) -> list[list[int]]:
    """The tokens' indices grouped into words: consecutive runs, in order, covering every index once."""
    kind = convention(tokens)
    groups: list[list[int]] = []
    open_word = False  # whether the last group may take the next piece
    for i, token in enumerate(tokens):
        if _alone(token):
            groups.append([i])
            open_word = False
            continue
        if open_word and not _starts_word(token, kind):
            groups[-1].append(i)
        else:
            groups.append([i])
        open_word = not (kind == "end" and (token.endswith(_END) or token.endswith("␣")))
        if kind == "sentencepiece" and token == "▁":
            open_word = True  # a lone '▁' begins the word the next pieces spell
    return groups


def _piece_text(token: str, first: bool) -> str:
    if token.startswith("##") and not first:
        token = token[2:]
    for mark in _END:
        token = token.removesuffix(mark)
    if first:
        token = token.lstrip("".join(_START))
    return token.removesuffix("␣")


def word_labels(tokens: Sequence[str], groups: Sequence[Sequence[int]]) -> list[str]:
    """Each word's text: its pieces joined without their markers ('play', '##ing' -> 'playing')."""
    labels = []
    for group in groups:
        if len(group) == 1 and _alone(tokens[group[0]]):
            labels.append(tokens[group[0]])
            continue
        text = "".join(_piece_text(tokens[i], k == 0) for k, i in enumerate(group))
        labels.append(text or tokens[group[0]])
    return labels


def _starts(groups: Sequence[Sequence[int]]) -> np.ndarray:
    return np.array([g[0] for g in groups], dtype=int)


def sum_by_word(tokens: Sequence[str], scores: Sequence[float]) -> tuple[list[str], np.ndarray]:
    """(word labels, per-word scores): each word's score is the sum of its pieces' scores, so the
    words' total equals the tokens' total. scores: (n,)."""
    values = np.asarray(scores, dtype=np.float64)
    if len(tokens) != values.shape[0]:
        raise ValueError(f"{len(tokens)} tokens but {values.shape[0]} scores")
    if not len(tokens):
        return [], values
    groups = word_groups(tokens)
    return word_labels(tokens, groups), np.add.reduceat(values, _starts(groups))


def word_attention(
    matrix: np.ndarray, query_tokens: Sequence[str], key_tokens: Sequence[str]
) -> tuple[np.ndarray, list[str], list[str]]:
    """One attention map (q, k) over words: attention *to* a word is the sum over its pieces, attention
    *from* a word the mean over its pieces (Clark et al. 2019), so every row still adds up to 1."""
    m = np.asarray(matrix, dtype=np.float32)
    q_groups, k_groups = word_groups(query_tokens), word_groups(key_tokens)
    summed = np.add.reduceat(m, _starts(k_groups), axis=1)
    sizes = np.array([len(g) for g in q_groups], dtype=np.float32)[:, None]
    rows = np.add.reduceat(summed, _starts(q_groups), axis=0) / sizes
    return rows, word_labels(query_tokens, q_groups), word_labels(key_tokens, k_groups)
