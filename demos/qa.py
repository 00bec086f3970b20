"""Extractive question answering (DistilBERT SQuAD) by hand: best span, its score, start/end
probabilities, attention, embeddings and attributions for the start and the end of the answer.

transformers 5 removed the question-answering pipeline; this module does what it did:
tokenise (question, context) with offsets, keep only context tokens as candidates, take the
span start <= end (at most MAX_ANSWER_TOKENS long) maximising start_logit + end_logit, score it
P(start) * P(end), and cut the answer out of the context by the character offsets.
Contexts longer than the model's limit are truncated ("only_second") with a visible notice.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from core import registry
from core.results import AttentionMaps, Attribution, Embeddings
from demos.explain import subjects as st
from demos.explain.attribution import attention_rollout, softmax_np, stack_attentions, stack_hidden
from demos.inputs.text import model_max_length, pad_baseline, token_attribution
from demos.runtime import loading
from demos.runtime.compute import How, attribution_compute, task_compute

TASK = "qa"
MAX_ANSWER_TOKENS = registry.get(TASK).constant("MAX_ANSWER_TOKENS")
MIN_CONTEXT_TOKENS = 32  # room the question must leave for the context
STRIDE = 128  # tokens shared by consecutive windows of a long context (the old pipeline's doc_stride)
MASKED = -10000.0  # logit given to tokens that cannot be part of the answer (as the old pipeline)
ENDS = registry.get(TASK).constant("ENDS")

EXAMPLES = registry.examples(TASK)


@dataclass
class QAEncoded:
    """Tokenised (question, context). ids/mask: (1, n) on the model's device.

    offsets: (n, 2) character offsets into the context for context tokens (0, 0 otherwise);
    segment: (n,) 0 = question, 1 = context, -1 = special token;
    candidates: (n,) bool, tokens allowed in the softmax (context tokens and [CLS], as the old pipeline).
    """

    ids: torch.Tensor
    mask: torch.Tensor
    extra: dict[str, torch.Tensor]
    tokens: list[str]
    offsets: np.ndarray
    segment: np.ndarray
    candidates: np.ndarray
    n_context_full: int
    limit: int
    window: int = 0
    n_windows: int = 1

    @property
    def context_mask(self) -> np.ndarray:
        return self.segment == 1

    @property
    def n_context(self) -> int:
        return int(self.context_mask.sum())


@dataclass
class QAResult:
    """One forward pass. start_probs/end_probs: (n,) over `tokens`, each summing to 1.

    start_index/end_index: token indices of the answer span (inclusive);
    char_start/char_end: the answer is context[char_start:char_end].
    """

    question: str
    context: str
    model_id: str
    answer: str
    score: float
    start_index: int
    end_index: int
    char_start: int
    char_end: int
    start_probs: np.ndarray
    end_probs: np.ndarray
    segment: np.ndarray
    attention: AttentionMaps
    embeddings: Embeddings
    notice: str
    window: int = 0  # which window of the context the answer (and every view) comes from
    n_windows: int = 1
    window_chars: tuple[int, int] = (0, 0)  # the context characters that window covers

    @property
    def tokens(self) -> list[str]:
        return self.attention.query_tokens


def load(model_id: str | None = None) -> loading.Loaded:
    return loading.load(TASK, model_id)


def _require(text: str | None, what: str) -> str:
    if text is None or not str(text).strip():
        raise ValueError(f"Please enter a {what}.")
    return str(text).strip()


def _windows(m: loading.Loaded, question: str, context: str):
    """The (question, context) pair cut into overlapping windows of the model's length: every
    window holds the whole question and a part of the context; consecutive parts share STRIDE
    tokens (fewer when the question leaves little room), so no answer is cut at a border."""
    tok = m.processor
    limit = model_max_length(tok, m.model)
    n_question = len(tok(question, add_special_tokens=False, verbose=False)["input_ids"])
    room = limit - tok.num_special_tokens_to_add(pair=True) - n_question
    if room < MIN_CONTEXT_TOKENS:
        raise ValueError(
            f"The question is too long: {n_question} tokens. The model reads at most {limit} tokens for "
            f"question and context together; keep the question under {room + n_question - MIN_CONTEXT_TOKENS} tokens."
        )
    batch = tok(
        question, context, truncation="only_second", max_length=limit, stride=min(STRIDE, room // 2),
        return_overflowing_tokens=True, return_offsets_mapping=True, padding="longest", return_tensors="pt",
    )
    return batch, limit


def encode(m: loading.Loaded, question: str, context: str, window: int = 0) -> QAEncoded:
    """Tokenise the pair; `window` picks one of the overlapping windows of a long context."""
    tok = m.processor
    batch, limit = _windows(m, question, context)
    n_windows = int(batch["input_ids"].shape[0])
    if not 0 <= window < n_windows:
        raise ValueError(f"Window {window} does not exist; the context has {n_windows}.")
    keep = batch["attention_mask"][window].bool()
    ids = batch["input_ids"][window][keep][None]  # (1, n) without the padding of shorter windows
    segment = np.array([-1 if s is None else s for s in batch.sequence_ids(window)])[keep.numpy()]
    candidates = segment == 1
    if tok.cls_token_id is not None:
        candidates |= ids[0].numpy() == tok.cls_token_id
    device = m.device
    accepted = {"token_type_ids"} & set(tok.model_input_names)
    return QAEncoded(
        ids=ids.to(device),
        mask=torch.ones_like(ids).to(device),
        extra={k: batch[k][window][keep][None].to(device) for k in accepted if k in batch},
        tokens=tok.convert_ids_to_tokens(ids[0].tolist()),
        offsets=batch["offset_mapping"][window][keep].numpy(),
        segment=segment,
        candidates=candidates,
        n_context_full=len(tok(context, add_special_tokens=False, verbose=False)["input_ids"]),
        limit=limit,
        window=window,
        n_windows=n_windows,
    )


def encode_result(m: loading.Loaded, result: QAResult) -> QAEncoded:
    """The exact encoding of the window `result` was answered from."""
    return encode(m, result.question, result.context, result.window)


WINDOWS_WITH_MAPS = 2  # up to this many windows, one pass gives every window's maps (the chosen one's are kept)


def _window_pass(m: loading.Loaded, batch: Any, maps: bool) -> Any:
    """One batched forward pass over every window (with attentions and hidden states when `maps`)."""
    accepted = {"token_type_ids", "attention_mask"} & set(m.processor.model_input_names) | {"attention_mask"}
    with torch.inference_mode():
        return m.model(
            input_ids=batch["input_ids"].to(m.device),
            **{k: batch[k].to(m.device) for k in accepted if k in batch},
            output_attentions=maps,
            output_hidden_states=maps,
        )


def _best_of(m: loading.Loaded, batch: Any, out: Any) -> int:
    """The window whose best span has the highest P(start) x P(end)."""
    scores = []
    for w in range(batch["input_ids"].shape[0]):
        keep = batch["attention_mask"][w].bool().numpy()
        segment = np.array([-1 if s is None else s for s in batch.sequence_ids(w)])[keep]
        ids = batch["input_ids"][w].numpy()[keep]
        cands = (segment == 1) | (ids == m.processor.cls_token_id)
        start, end = out.start_logits[w].float().cpu().numpy()[keep], out.end_logits[w].float().cpu().numpy()[keep]
        s, e = best_span(start, end, segment == 1)
        scores.append(masked_probs(start, cands)[s] * masked_probs(end, cands)[e])
    return int(np.argmax(scores))


def best_window(m: loading.Loaded, question: str, context: str) -> int:
    """The window whose best span has the highest P(start) x P(end) (one batched pass without
    attentions; only long contexts have more than one window)."""
    batch, _ = _windows(m, question, context)
    if batch["input_ids"].shape[0] == 1:
        return 0
    return _best_of(m, batch, _window_pass(m, batch, maps=False))


def _answer_pass(m: loading.Loaded, question: str, context: str) -> tuple[QAEncoded, Any]:
    """The chosen window's encoding and its forward pass with attentions and hidden states: one pass for a context
    of one window; for up to WINDOWS_WITH_MAPS windows, ONE batched pass over all of them with their maps (the
    chosen window's rows kept, its padding cut); beyond, a pass to choose and a pass over the chosen window."""
    batch, _ = _windows(m, question, context)
    n = int(batch["input_ids"].shape[0])
    if 1 < n <= WINDOWS_WITH_MAPS:
        out = _window_pass(m, batch, maps=True)
        w = _best_of(m, batch, out)
        keep = batch["attention_mask"][w].bool().to(m.device)
        out = SimpleNamespace(
            start_logits=out.start_logits[w : w + 1, keep],
            end_logits=out.end_logits[w : w + 1, keep],
            attentions=[a[w : w + 1][:, :, keep][:, :, :, keep] for a in out.attentions],
            hidden_states=[h[w : w + 1, keep] for h in out.hidden_states],
        )
        return encode(m, question, context, w), out
    enc = encode(m, question, context, 0 if n == 1 else _best_of(m, batch, _window_pass(m, batch, maps=False)))
    with torch.inference_mode():
        out = m.model(
            input_ids=enc.ids, attention_mask=enc.mask, **enc.extra, output_attentions=True, output_hidden_states=True
        )
    return enc, out


def best_span(
    start_logits: np.ndarray, end_logits: np.ndarray, allowed: np.ndarray, max_len: int = MAX_ANSWER_TOKENS
) -> tuple[int, int]:
    """(s, e) maximising start_logits[s] + end_logits[e] with s <= e < s + max_len, both allowed.

    start_logits, end_logits, allowed: (n,). Vectorised over the (n, n) table of spans.
    """
    if not allowed.any():
        raise ValueError("There is no context token to take an answer from.")
    n = start_logits.shape[0]
    s_idx, e_idx = np.indices((n, n))
    valid = (e_idx >= s_idx) & (e_idx - s_idx < max_len) & allowed[:, None] & allowed[None, :]
    table = np.where(valid, start_logits[:, None].astype(np.float64) + end_logits[None, :], -np.inf)
    s, e = np.unravel_index(int(np.argmax(table)), table.shape)
    return int(s), int(e)


def masked_probs(logits: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """(n,) softmax with non-candidate tokens (question, [SEP]) given MASKED logits, as the old pipeline."""
    return softmax_np(np.where(candidates, logits.astype(np.float64), MASKED)).astype(np.float64)


def _window_chars(enc: QAEncoded) -> tuple[int, int]:
    spans = enc.offsets[enc.context_mask]
    return int(spans[0, 0]), int(spans[-1, 1])


def _notice(enc: QAEncoded, context: str) -> str:
    if enc.n_windows == 1:
        return ""
    a, b = _window_chars(enc)
    return (
        f"The context is longer than the model reads at once ({enc.n_context_full} tokens; at most {enc.limit} "
        f"with the question), so it was read whole in {enc.n_windows} overlapping windows. The best answer came "
        f"from window {enc.window + 1} (characters {a:,}–{b:,} of {len(context):,}); the views below show that window."
    )


def _groups(enc: QAEncoded, s: int, e: int) -> list[str]:
    names = {0: "question", 1: "context", -1: "special"}
    return ["answer" if s <= i <= e else names[int(g)] for i, g in enumerate(enc.segment)]


@task_compute(TASK, memo_size=8, gpu_seconds=20)
def answer(question: str, context: str, model_id: str | None = None) -> QAResult:
    """Answer `question` from `context` in one forward pass that also returns attentions and hidden states (a
    long context: the best of its windows, `_answer_pass`)."""
    question, context = _require(question, "question"), _require(context, "context")
    m = load(model_id)
    enc, out = _answer_pass(m, question, context)
    start_logits = out.start_logits[0].float().cpu().numpy()
    end_logits = out.end_logits[0].float().cpu().numpy()
    s, e = best_span(start_logits, end_logits, enc.context_mask)
    start_probs, end_probs = masked_probs(start_logits, enc.candidates), masked_probs(end_logits, enc.candidates)
    c0, c1 = int(enc.offsets[s, 0]), int(enc.offsets[e, 1])
    return QAResult(
        question=question,
        context=context,
        model_id=m.model_id,
        answer=context[c0:c1],
        score=float(start_probs[s] * end_probs[e]),
        start_index=s,
        end_index=e,
        char_start=c0,
        char_end=c1,
        start_probs=start_probs,
        end_probs=end_probs,
        segment=enc.segment,
        attention=AttentionMaps(stack_attentions(out.attentions), enc.tokens, enc.tokens, "self"),
        embeddings=Embeddings(stack_hidden(out.hidden_states), enc.tokens, _groups(enc, s, e)),
        notice=_notice(enc, context),
        window=enc.window,
        n_windows=enc.n_windows,
        window_chars=_window_chars(enc),
    )


def _prob_fn(m: loading.Loaded, enc: QAEncoded, which: str, index: int):
    """score_fn(ids, mask, *extra) -> (batch,) P(which = index) under the masked softmax."""
    keep = torch.as_tensor(enc.candidates, device=m.device)
    names = list(enc.extra)

    def prob(ids: torch.Tensor, mask: torch.Tensor, *extra: Any) -> torch.Tensor:
        batch = ids.shape[0]
        kwargs = {k: v.expand(batch, -1) for k, v in zip(names, extra)}
        out = m.model(input_ids=ids, attention_mask=mask.expand(batch, -1), **kwargs)
        logits = (out.start_logits if which == "start" else out.end_logits).float()
        logits = torch.where(keep, logits, torch.full_like(logits, MASKED))
        return torch.softmax(logits, dim=-1)[:, index]

    return prob


@attribution_compute(TASK)
def attribute(
    question: str,
    context: str,
    which: str = "start",
    how: How = How(),
) -> Attribution:
    """Per-token attribution of P(start = s) or P(end = e) for the answer span (s, e) of `answer()`."""
    if which not in ENDS:
        raise ValueError(f"Unknown answer end {which!r}; choose one of {ENDS}.")
    result = answer(question, context, how.model_id)
    m = load(how.model_id)
    enc = encode_result(m, result)
    index = result.start_index if which == "start" else result.end_index
    tok = m.processor
    base = pad_baseline(enc.ids, tok)
    target = f"{which} of the answer at token {index} ({enc.tokens[index]})"
    return token_attribution(
        m.model,
        _prob_fn(m, enc, which, index),
        enc.ids,
        base,
        enc.tokens,
        target,
        (enc.mask, *enc.extra.values()),
        how,
    )


def subject(result: QAResult, target: Any = None, contrast: Any = None):
    """What the explainers explain (demos.explain.subjects.Subject): P(start) * P(end) of the answer span
    among every valid span (target unused; no contrast); units: the window's tokens."""

    m = load(result.model_id)
    enc = encode_result(m, result)
    n = enc.ids.shape[1]
    allowed = enc.context_mask
    s_idx, e_idx = np.nonzero(
        np.triu(np.ones((n, n), dtype=bool))
        & ~np.triu(np.ones((n, n), dtype=bool), MAX_ANSWER_TOKENS)
        & allowed[:, None]
        & allowed[None, :]
    )
    spans = list(zip(s_idx.tolist(), e_idx.tolist()))
    starts, ends = torch.as_tensor(s_idx, device=m.device), torch.as_tensor(e_idx, device=m.device)
    keep = torch.as_tensor(enc.candidates, device=m.device)
    names = list(enc.extra)

    def probs(out: Any) -> torch.Tensor:  # (b, spans): P(start = s) * P(end = e), masked softmaxes as answer()
        def soft(logits: torch.Tensor) -> torch.Tensor:
            return torch.softmax(torch.where(keep, logits.float(), torch.full_like(logits.float(), MASKED)), dim=-1)

        return soft(out.start_logits)[:, starts] * soft(out.end_logits)[:, ends]

    def label(i: int) -> str:
        a, b = spans[i]
        return result.context[int(enc.offsets[a, 0]) : int(enc.offsets[b, 1])]

    w = result.attention.weights
    rows = slice(result.start_index, result.end_index + 1)
    s = st.Subject(
        task=TASK,
        model=m.model,
        inputs={"input_ids": enc.ids, "attention_mask": enc.mask, **enc.extra},
        unit_key="input_ids",
        units=st.token_units(enc.tokens, st.special_mask(m.processor, enc.ids[0].tolist()), "the padding token"),
        replacement=torch.full_like(enc.ids, m.processor.pad_token_id),
        run=lambda kw: m.model(
            input_ids=kw["input_ids"], attention_mask=kw["attention_mask"], **{k: kw[k] for k in names}
        ),
        outcome_probs=probs,
        outcome_label=label,
        answer=spans.index((result.start_index, result.end_index)),
        embedding_layer=m.model.get_input_embeddings(),
        attention=lambda: w[-1].mean(0)[rows].mean(0),
        rollout=lambda: attention_rollout(w)[rows].mean(0),
    )
    return st.finish(s, contrast, lambda text: None, len(spans), allow_contrast=False)
