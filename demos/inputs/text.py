"""Helpers shared by the text tasks: tokenising with a visible truncation notice, and token
attribution through the input-embedding layer with integrated gradients.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from core.results import Attribution
from core.tokens import byte_level_label
from demos.explain.attribution import Attributed, run_attribution, run_attributions
from demos.runtime.compute import How
from demos.runtime.loading import fused_attention


@dataclass
class Encoded:
    """Tokenised input. ids: (1, n) on the model's device; tokens: n strings; truncated: cut to the model's limit."""

    ids: torch.Tensor
    mask: torch.Tensor
    tokens: list[str]
    truncated: bool
    n_original: int


def model_max_length(tokenizer: Any, model: Any, fallback: int = 512) -> int:
    """Longest input the model accepts: the smaller of tokenizer and position-embedding limits."""
    limits = [fallback]
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
        limits.append(tok_max)
    for name in ("max_position_embeddings", "n_positions", "max_source_positions"):
        value = getattr(model.config, name, None)
        if isinstance(value, int) and value > 0:
            limits.append(value)
            break
    return min(limits)


def encode(
    tokenizer: Any, model: Any, text: str, text_pair: str | None = None, max_length: int | None = None
) -> Encoded:
    """Tokenise `text` (and `text_pair`) truncated to the model's limit, on the model's device."""
    limit = max_length or model_max_length(tokenizer, model)
    batch = tokenizer(text, text_pair, truncation=True, max_length=limit, return_tensors="pt")
    device = next(model.parameters()).device
    ids = batch["input_ids"].to(device)
    n = ids.shape[1]
    if n >= limit:  # possibly cut: count the whole input once (only long inputs pay this)
        n = len(tokenizer(text, text_pair, truncation=False, verbose=False)["input_ids"])
    return Encoded(
        ids=ids,
        mask=batch["attention_mask"].to(device),
        tokens=token_labels(tokenizer, ids[0].tolist()),
        truncated=n > ids.shape[1],
        n_original=n,
    )


def is_byte_level(tokenizer: Any) -> bool:
    """Whether `tokenizer` stores tokens as byte-level BPE (GPT-2, Whisper, CLIP)."""
    tok = getattr(tokenizer, "tokenizer", tokenizer)  # a processor wraps its tokenizer
    backend = getattr(tok, "backend_tokenizer", None)
    return backend is not None and type(backend.decoder).__name__ == "ByteLevel"


def token_labels(tokenizer: Any, ids: list[int]) -> list[str]:
    """Readable labels of `ids`: byte-level tokens as text, with the bytes of a character split
    over two tokens shown as hex (core.tokens); other tokenizers' pieces as they are."""
    tok = getattr(tokenizer, "tokenizer", tokenizer)
    raw = tok.convert_ids_to_tokens(list(ids))
    return [byte_level_label(t) for t in raw] if is_byte_level(tok) else raw


def piece_texts(tokenizer: Any, ids: list[int], before: list[int] = ()) -> list[str]:
    """The text each of `ids` adds when decoded after `before` (streaming decode): a token holding
    the first bytes of a split character adds '' and the token completing it adds the character,
    so no piece shows '�'."""
    out, context = [], list(before)
    previous = tokenizer.decode(context, skip_special_tokens=True)
    for i in ids:
        context.append(int(i))
        text = tokenizer.decode(context, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # an unfinished character: wait for the rest
            out.append("")
            continue
        out.append(text[len(previous) :] if text.startswith(previous) else tokenizer.decode([i]))
        previous = text
    return out


def baseline_ids(ids: torch.Tensor, special_ids: set[int], pad_id: int) -> torch.Tensor:
    """(1, n) baseline: every ordinary token replaced by `pad_id`, special tokens kept."""
    base = torch.full_like(ids, pad_id)
    for i, tok in enumerate(ids[0].tolist()):
        if tok in special_ids:
            base[0, i] = tok
    return base


def pad_baseline(ids: torch.Tensor, tokenizer: Any) -> torch.Tensor:
    """(1, n) integrated-gradients baseline: ordinary tokens -> the tokenizer's pad token, the
    structural special tokens ([CLS], [SEP], <s>, </s>, language codes) kept. [UNK] and [MASK]
    stand for words of the input, so they are replaced like any word."""
    pad = tokenizer.pad_token_id
    words = {pad, getattr(tokenizer, "unk_token_id", None), getattr(tokenizer, "mask_token_id", None)}
    return baseline_ids(ids, set(tokenizer.all_special_ids) - words, pad)


def token_attribution(
    model: Any,
    score_fn: Callable[..., torch.Tensor],
    ids: torch.Tensor,
    base: torch.Tensor,
    tokens: list[str],
    target: str,
    extra_args: tuple = (),
    how: How = How(),
) -> Attribution:
    """Attribute `score_fn(ids, *extra_args) -> (batch,)` to each token of `ids` (1, n).

    Attributions are taken at the model's input-embedding layer and summed over its hidden size;
    f(input) and f(baseline) come with them so completeness can be checked. With `tolerance`,
    integration stops at the first step count whose |delta| is at most that (see run_attribution).
    how: method, steps, progress and tolerance (demos.runtime.compute.How).
    """
    with fused_attention(model):  # the score never reads attention weights
        got = run_attribution(
            score_fn,
            ids,
            base,
            how.method,
            int(how.steps),
            layer=model.get_input_embeddings(),
            extra=extra_args,
            tolerance=how.tolerance,
            progress=how.progress,
        )
    return as_attribution(got, got.attrs.sum(dim=-1)[0], tokens, target, how.method)


def token_attributions(
    model: Any,
    score_fn: Callable[..., torch.Tensor],
    rows: Sequence[torch.Tensor],
    bases: Sequence[torch.Tensor],
    tokens: Sequence[list[str]],
    targets: Sequence[str],
    pad: int,
    extra: tuple = (),
    how: How = How(),
) -> list[Attribution]:
    """`token_attribution` of S inputs in one batched run: `rows` and `bases` (1, n_i) ids and their
    baselines, padded right with `pad` to the longest; `score_fn(ids, mask, *extra) -> (batch,)` gets the
    padding mask (S, n) and `extra` (tensors of S rows, e.g. each input's target). Padding is the same
    in an input and its baseline, so it gets no attribution; each input's scores are cut to its own n_i."""
    ids, mask, lengths = pad_right(rows, pad)
    base, _, _ = pad_right(bases, pad)
    with fused_attention(model):
        got = run_attributions(
            score_fn,
            ids,
            base,
            how.method,
            int(how.steps),
            layer=model.get_input_embeddings(),
            extra=(mask, *extra),
            tolerance=how.tolerance,
            progress=how.progress,
        )
    return [
        as_attribution(g, g.attrs.sum(dim=-1)[0, :n], list(toks), target, how.method)
        for g, n, toks, target in zip(got, lengths, tokens, targets)
    ]


def as_attribution(got: Attributed, scores: torch.Tensor, tokens: list[str], target: str, method: str) -> Attribution:
    """The plain result of one `run_attribution`, with `scores` already reduced to tokens/pixels."""
    return Attribution(
        tokens=tokens,
        scores=np.asarray(scores.float().cpu().numpy(), dtype=np.float32),
        target=target,
        method=method,
        steps=got.steps,
        delta=got.delta,
        output_value=got.output_value,
        baseline_value=got.baseline_value,
        seconds=got.seconds,
        together=got.together,
    )


def truncation_notice(enc: Encoded, limit_name: str = "the model's limit") -> str:
    """A plain sentence for the UI when the input was cut, else ''."""
    if not enc.truncated:
        return ""
    return f"Input was {enc.n_original} tokens; only the first {len(enc.tokens)} ({limit_name}) were used."


def pad_right(rows: Sequence[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """(1, n_i) id rows -> ids (B, n_max) padded with `pad_id`, mask (B, n_max), lengths n_i."""
    lengths = [int(r.shape[1]) for r in rows]
    width = max(lengths)
    ids = torch.full((len(rows), width), int(pad_id), dtype=rows[0].dtype, device=rows[0].device)
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=rows[0].device)
    for i, (row, n) in enumerate(zip(rows, lengths)):
        ids[i, :n] = row[0]
        mask[i, :n] = 1
    return ids, mask, lengths


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
