"""Encoder explorer (sentence-transformers/all-MiniLM-L6-v2, a 6-layer BERT): attention and token
embeddings of any sentences, and mean-pooled sentence embeddings compared by cosine similarity.

One forward pass over the padded batch of sentences gives every view. Padding is masked out of
attention, so each sentence's tokens see only that sentence; their rows are cut out per sentence.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from core import registry
from core.results import AttentionMaps, Embeddings
from demos.explain import subjects as st
from demos.explain.attribution import attention_rollout, stack_attentions, stack_hidden
from demos.inputs.text import model_max_length
from demos.runtime import loading
from demos.runtime.compute import task_compute

TASK = "explorer"
MAX_SENTENCES = 12
EXAMPLES = registry.examples(TASK)


@dataclass
class ExplorerResult:
    """One forward pass over S sentences.

    attention: per sentence, AttentionMaps (layers, heads, n_i, n_i) over its n_i tokens;
    embeddings: (layers+1, N, d) hidden states of all N = sum(n_i) tokens, grouped by sentence;
    sentence_vectors: (S, d) mean of the last hidden layer over each sentence's tokens (special
    tokens included, as sentence-transformers' mean pooling does); similarity: (S, S) cosine.
    `shown` is the sentence whose attention the tab displays.
    """

    sentences: list[str]
    model_id: str
    attention: list[AttentionMaps]
    embeddings: Embeddings
    sentence_vectors: np.ndarray
    similarity: np.ndarray
    notice: str
    shown: int = 0

    def most_similar(self) -> tuple[int, int, float] | None:
        """(i, j, cosine) of the most similar pair of different sentences, or None for one sentence."""
        s = len(self.sentences)
        if s < 2:
            return None
        masked = self.similarity + np.diag(np.full(s, -np.inf))
        i, j = np.unravel_index(int(np.argmax(masked)), masked.shape)
        return int(min(i, j)), int(max(i, j)), float(self.similarity[i, j])


def load(model_id: str | None = None) -> loading.Loaded:
    return loading.load(TASK, model_id)


def split_sentences(text: str) -> list[str]:
    """Non-empty lines of `text`, stripped; at most MAX_SENTENCES."""
    sentences = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not sentences:
        raise ValueError("Please enter at least one sentence (one per line).")
    if len(sentences) > MAX_SENTENCES:
        raise ValueError(f"Please enter at most {MAX_SENTENCES} sentences (you gave {len(sentences)}).")
    return sentences


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(S, n, d) token states and (S, n) mask -> (S, d) mean over the unmasked tokens."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    """(S, d) -> (S, S) cosine similarity; symmetric with ones on the diagonal."""
    unit = vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
    sim = unit @ unit.T
    sim = (sim + sim.T) / 2
    np.fill_diagonal(sim, 1.0)
    return sim


@dataclass
class SentencePass:
    """One padded forward pass over sentences with attentions and hidden states: the batch, the
    model output, each sentence's token count before truncation (`full`) and in the batch
    (`lengths`), (n, d) mean-pooled last hidden states, the model's token limit."""

    batch: Any
    out: Any
    full: list[int]
    lengths: list[int]
    pooled: np.ndarray
    limit: int

    def notice(self, rows: Sequence[int]) -> str:
        """Which of these sentences (numbered from 1 among `rows`) were cut, or ''."""
        cut = [k + 1 for k, row in enumerate(rows) if self.full[row] > self.lengths[row]]
        return (
            f"Sentence(s) {', '.join(map(str, cut))} were cut to the model's limit of {self.limit} tokens."
            if cut
            else ""
        )


def forward_sentences(m: loading.Loaded, sentences: list[str]) -> SentencePass:
    tok = m.processor
    limit = model_max_length(tok, m.model)
    full = [len(ids) for ids in tok(sentences, truncation=False)["input_ids"]]
    batch = tok(sentences, padding=True, truncation=True, max_length=limit, return_tensors="pt").to(m.device)
    with torch.inference_mode():
        out = m.model(**batch, output_attentions=True, output_hidden_states=True)
    mask = batch["attention_mask"]
    pooled = mean_pool(out.hidden_states[-1].float(), mask).cpu().numpy()
    return SentencePass(batch, out, full, mask.sum(1).tolist(), pooled, limit)


@task_compute(TASK, memo_size=8, gpu_seconds=20, batched=lambda: explore_many)
def analyse(text: str, model_id: str | None = None) -> ExplorerResult:
    """Embed the sentences of `text` (one per line) in one forward pass with attentions."""
    sentences = split_sentences(text)
    m = load(model_id)
    tok = m.processor
    run = forward_sentences(m, sentences)
    batch, out, lengths, pooled = run.batch, run.out, run.lengths, run.pooled
    attention, states, labels, groups = [], [], [], []
    for i, n in enumerate(lengths):
        tokens = tok.convert_ids_to_tokens(batch["input_ids"][i, :n].tolist())
        weights = stack_attentions(out.attentions, batch_index=i, compact=False)[:, :, :n, :n]  # (L, H, n, n)
        attention.append(AttentionMaps(weights, tokens, tokens, "self"))
        states.append(stack_hidden(out.hidden_states, batch_index=i)[:, :n])  # (L+1, n, d)
        labels += tokens
        groups += [f"sentence {i + 1}"] * n
    notice = run.notice(range(len(sentences)))
    return ExplorerResult(
        sentences=sentences,
        model_id=m.model_id,
        attention=attention,
        embeddings=Embeddings(np.concatenate(states, axis=1), labels, groups),
        sentence_vectors=pooled,
        similarity=cosine_matrix(pooled),
        notice=notice,
    )


def subject(result: ExplorerResult, target: object = None, contrast: object = None):
    """What the explainers explain (demos.explain.subjects.Subject): the cosine of the first sentence's and
    sentence `target`'s (default 1) mean-pooled vectors; units: the first sentence's token embeddings."""

    m = load(result.model_id)
    tok = m.processor
    other = 1 if target is None else int(target)
    if len(result.sentences) < 2 or not 1 <= other < len(result.sentences):
        raise ValueError("Enter at least two sentences: the first is compared with another one (index 1 or more).")
    limit = model_max_length(tok, m.model)
    a, b = (
        tok(result.sentences[i], truncation=True, max_length=limit, return_tensors="pt").to(m.device)
        for i in (0, other)
    )
    embed = m.model.get_input_embeddings()

    def run(kw: dict) -> torch.Tensor:  # (b, 1) cosine of the mean-pooled last hidden states
        n = kw["inputs_embeds"].shape[0]
        ha = m.model(inputs_embeds=kw["inputs_embeds"], attention_mask=kw["attention_mask"]).last_hidden_state
        hb = m.model(
            input_ids=b["input_ids"].expand(n, -1), attention_mask=b["attention_mask"].expand(n, -1)
        ).last_hidden_state
        va, vb = mean_pool(ha.float(), kw["attention_mask"]), mean_pool(hb.float(), b["attention_mask"].expand(n, -1))
        return torch.nn.functional.cosine_similarity(va, vb, dim=-1)[:, None]

    with torch.no_grad():
        x, pad = embed(a["input_ids"]), embed(torch.full_like(a["input_ids"], tok.pad_token_id))
    w = result.attention[0].weights
    s = st.Subject(
        task=TASK,
        model=m.model,
        inputs={"inputs_embeds": x, "attention_mask": a["attention_mask"]},
        unit_key="inputs_embeds",
        units=st.embed_units(
            tok.convert_ids_to_tokens(a["input_ids"][0].tolist()),
            st.special_mask(tok, a["input_ids"][0].tolist()),
            "the padding token",
        ),
        replacement=pad,
        run=run,
        outcome_probs=lambda out: out,
        outcome_label=lambda i: f"sentences 1 and {other + 1}",  # "cosine similarity of sentences 1 and 2"
        answer=0,
        default_score="cosine_similarity",
        value_name="cosine similarity",
        attention=lambda: w[-1].mean(0).mean(0),  # every query row: the sentence vector pools them all
        rollout=lambda: attention_rollout(w).mean(0),
    )
    return st.finish(s, contrast, lambda text: None, 1, allow_contrast=False)


@loading.one_at_a_time(TASK)
def explore_many(texts: Sequence[str], model_id: str | None = None) -> list[ExplorerResult]:
    """Run the sentences of every text (one per line) in one forward pass; one `ExplorerResult`
    per text, equal to `analyse(text, model_id)`. Raises ValueError as a single run
    does when any text has no sentence or too many (the caller runs such items singly)."""
    if not texts:
        return []
    groups = [split_sentences(t) for t in texts]
    m = load(model_id)
    tok = m.processor
    run = forward_sentences(m, [s for g in groups for s in g])
    batch, out, lengths, pooled = run.batch, run.out, run.lengths, run.pooled
    results, start = [], 0
    for sentences in groups:
        rows = range(start, start + len(sentences))
        attention, states, labels, kinds = [], [], [], []
        for k, row in enumerate(rows):
            n = lengths[row]
            tokens = tok.convert_ids_to_tokens(batch["input_ids"][row, :n].tolist())
            attention.append(
                AttentionMaps(
                    stack_attentions(out.attentions, batch_index=row, compact=False)[:, :, :n, :n],
                    tokens,
                    tokens,
                    "self",
                )
            )
            states.append(stack_hidden(out.hidden_states, batch_index=row)[:, :n])
            labels += tokens
            kinds += [f"sentence {k + 1}"] * n
        notice = run.notice(rows)
        vectors = pooled[start : start + len(sentences)]
        results.append(
            ExplorerResult(
                sentences=sentences,
                model_id=m.model_id,
                attention=attention,
                embeddings=Embeddings(np.concatenate(states, axis=1), labels, kinds),
                sentence_vectors=vectors,
                similarity=cosine_matrix(vectors),
                notice=notice,
            )
        )
        start += len(sentences)
    return results
