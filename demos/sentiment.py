"""Sentiment (DistilBERT SST-2): class probabilities, attention, embeddings and token attributions."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from core import registry
from core.results import AttentionMaps, Attribution, Embeddings
from demos.explain import subjects as st
from demos.explain.attribution import attention_rollout, stack_attentions, stack_hidden
from demos.inputs.text import Encoded, encode, pad_baseline, pad_id, pad_right, token_attributions, truncation_notice
from demos.runtime import loading
from demos.runtime.compute import How, attribution_compute, task_compute

TASK = "sentiment"
EXAMPLES = registry.examples(TASK)


@dataclass
class SentimentResult:
    """One forward pass. probs: (classes,) aligned with labels; attention over `tokens`."""

    text: str
    model_id: str
    labels: list[str]
    probs: np.ndarray
    attention: AttentionMaps
    embeddings: Embeddings
    notice: str

    @property
    def predicted(self) -> str:
        return self.labels[int(np.argmax(self.probs))]

    @property
    def tokens(self) -> list[str]:
        return self.attention.query_tokens

    def class_probs(self) -> dict[str, float]:
        """Every class with its probability, in the model's label order."""
        return {label: float(p) for label, p in zip(self.labels, self.probs)}



def load(model_id: str | None = None) -> loading.Loaded:
    return loading.load(TASK, model_id)


def _encode(m: loading.Loaded, text: str) -> Encoded:
    return encode(m.processor, m.model, text)


@task_compute(TASK, memo_size=8, gpu_seconds=20, batched=lambda: analyse_many)
def analyse(text: str, model_id: str | None = None) -> SentimentResult:
    """Classify `text` in one forward pass that also returns attentions and hidden states."""
    m = load(model_id)
    enc = _encode(m, text)
    with torch.inference_mode():
        out = m.model(input_ids=enc.ids, attention_mask=enc.mask, output_attentions=True, output_hidden_states=True)
    probs = torch.softmax(out.logits[0].float(), dim=-1).cpu().numpy()
    labels = [m.model.config.id2label[i] for i in range(probs.shape[0])]
    return SentimentResult(
        text=text,
        model_id=m.model_id,
        labels=labels,
        probs=probs,
        attention=AttentionMaps(stack_attentions(out.attentions), enc.tokens, enc.tokens, "self"),
        embeddings=Embeddings(stack_hidden(out.hidden_states), enc.tokens),
        notice=truncation_notice(enc),
    )


@attribution_compute(TASK, batched=lambda: attribute_many)
def attribute(
    text: str,
    target: str | None = None,
    how: How = How(),
) -> Attribution:
    """Per-token attribution of P(target | text); target defaults to the predicted class."""
    return attribute_many([(text, target)], how)[0]


def attribute_many(whats: Sequence[tuple[str, str | None]], how: How) -> list[Attribution]:
    """`attribute(text, target)` of every (text, target) in `whats` in one batched run (concurrent
    students' requests, gathered by `demos.runtime.gather`): the texts padded right to the longest,
    each with its own target class and baseline. One Attribution per pair, in order."""
    m = load(how.model_id)
    label2id = {v: k for k, v in m.model.config.id2label.items()}
    encs = [_encode(m, text) for text, _ in whats]
    targets = [analyse(text, how.model_id).predicted if target is None else target for text, target in whats]
    for target in targets:
        if target not in label2id:
            raise ValueError(f"Unknown class {target!r}; choose one of {sorted(label2id)}.")
    target_ids = torch.tensor([int(label2id[t]) for t in targets], device=encs[0].ids.device)

    def prob_of_target(ids: torch.Tensor, mask: torch.Tensor, target_id: torch.Tensor) -> torch.Tensor:
        logits = m.model(input_ids=ids, attention_mask=mask).logits
        return torch.softmax(logits.float(), dim=-1).gather(1, target_id[:, None])[:, 0]

    bases = [pad_baseline(e.ids, m.processor) for e in encs]
    tokens = [e.tokens for e in encs]
    return token_attributions(
        m.model, prob_of_target, [e.ids for e in encs], bases, tokens, targets, pad_id(m.processor), (target_ids,), how
    )


def subject(result: SentimentResult, target: object = None, contrast: object = None):
    """What the explainers explain (demos.explain.subjects.Subject): P(class `target`, default the
    predicted one); units: the text's tokens."""

    m = load(result.model_id)
    answer, label2id = st.class_answer(m, result, target)
    enc = encode(m.processor, m.model, result.text)
    w = result.attention.weights
    s = st.Subject(
        task=TASK, model=m.model, inputs={"input_ids": enc.ids, "attention_mask": enc.mask}, unit_key="input_ids",
        units=st.token_units(enc.tokens, st.special_mask(m.processor, enc.ids[0].tolist()), "the padding token"),
        replacement=torch.full_like(enc.ids, m.processor.pad_token_id),
        run=lambda kw: m.model(input_ids=kw["input_ids"], attention_mask=kw["attention_mask"]),
        outcome_probs=lambda out: torch.softmax(out.logits.float(), dim=-1),
        outcome_label=lambda i: m.model.config.id2label[i],
        answer=answer,
        embedding_layer=m.model.get_input_embeddings(),
        attention=lambda: w[-1].mean(0)[0],
        rollout=lambda: attention_rollout(w)[0],
    )
    return st.finish(s, contrast, label2id.get, len(label2id))


@loading.one_at_a_time(TASK)
def analyse_many(texts: Sequence[str], model_id: str | None = None) -> list[SentimentResult]:
    """Classify every text of `texts` in one forward pass; one `SentimentResult` per text, equal
    to `analyse(text, model_id)`: probs (classes,), attention (layers, heads, n_i, n_i),
    embeddings (layers+1, n_i, d) over that text's own n_i tokens."""
    if not texts:
        return []
    m = load(model_id)
    encs: list[Encoded] = [_encode(m, t) for t in texts]
    ids, mask, lengths = pad_right([e.ids for e in encs], pad_id(m.processor))
    with torch.inference_mode():
        out = m.model(input_ids=ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
    probs = torch.softmax(out.logits.float(), dim=-1).cpu().numpy()  # (B, classes)
    labels = [m.model.config.id2label[i] for i in range(probs.shape[1])]
    results = []
    for i, (text, enc, n) in enumerate(zip(texts, encs, lengths)):
        weights = stack_attentions(out.attentions, batch_index=i, compact=False)[:, :, :n, :n]
        states = stack_hidden(out.hidden_states, batch_index=i)[:, :n]
        results.append(
            SentimentResult(
                text=text,
                model_id=m.model_id,
                labels=list(labels),
                probs=probs[i],
                attention=AttentionMaps(np.ascontiguousarray(weights), enc.tokens, enc.tokens, "self"),
                embeddings=Embeddings(np.ascontiguousarray(states), enc.tokens),
                notice=truncation_notice(enc),
            )
        )
    return results
