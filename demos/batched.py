"""Forward-only requests of many users in ONE padded forward pass (the model tier's micro-batches).

`analyse_many(texts)` gives, for each text, the same `SentimentResult` that
`demos.sentiment.analyse(text)` gives; `explore_many(texts)` the same `ExplorerResult` as
`demos.explorer.analyse(text)`. Every item is tokenised exactly as a single run tokenises it,
padded on the right to the longest item of the batch, and run with an attention mask, so padded
keys get zero attention weight; each item's rows, columns and positions are then cut back to its
own length. Results equal single runs up to float rounding (matrix products of another shape).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from core import registry
from core.results import AttentionMaps, Embeddings
from demos import explorer, loading, sentiment
from demos.explain import stack_attentions, stack_hidden
from demos.text_common import Encoded, truncation_notice


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


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


@loading.one_at_a_time(sentiment.TASK)
def analyse_many(texts: Sequence[str], model_id: str | None = None) -> list[sentiment.SentimentResult]:
    """Classify every text of `texts` in one forward pass; one `SentimentResult` per text, equal
    to `sentiment.analyse(text, model_id)`: probs (classes,), attention (layers, heads, n_i, n_i),
    embeddings (layers+1, n_i, d) over that text's own n_i tokens."""
    if not texts:
        return []
    m = sentiment.load(model_id)
    encs: list[Encoded] = [sentiment._encode(m, t) for t in texts]
    ids, mask, lengths = pad_right([e.ids for e in encs], _pad_id(m.processor))
    with torch.inference_mode():
        out = m.model(input_ids=ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
    probs = torch.softmax(out.logits.float(), dim=-1).cpu().numpy()  # (B, classes)
    labels = [m.model.config.id2label[i] for i in range(probs.shape[1])]
    results = []
    for i, (text, enc, n) in enumerate(zip(texts, encs, lengths)):
        weights = stack_attentions(out.attentions, batch_index=i, compact=False)[:, :, :n, :n]
        states = stack_hidden(out.hidden_states, batch_index=i)[:, :n]
        results.append(
            sentiment.SentimentResult(
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


@loading.one_at_a_time(explorer.TASK)
def explore_many(texts: Sequence[str], model_id: str | None = None) -> list[explorer.ExplorerResult]:
    """Run the sentences of every text (one per line) in one forward pass; one `ExplorerResult`
    per text, equal to `explorer.analyse(text, model_id)`. Raises ValueError as a single run
    does when any text has no sentence or too many (the caller runs such items singly)."""
    if not texts:
        return []
    groups = [explorer.split_sentences(t) for t in texts]
    m = explorer.load(model_id)
    tok = m.processor
    run = explorer.forward_sentences(m, [s for g in groups for s in g])
    batch, out, lengths, pooled = run.batch, run.out, run.lengths, run.pooled
    results, start = [], 0
    for sentences in groups:
        rows = range(start, start + len(sentences))
        attention, states, labels, kinds = [], [], [], []
        for k, row in enumerate(rows):
            n = lengths[row]
            tokens = tok.convert_ids_to_tokens(batch["input_ids"][row, :n].tolist())
            attention.append(AttentionMaps(stack_attentions(out.attentions, batch_index=row, compact=False)[:, :, :n, :n], tokens, tokens, "self"))
            states.append(stack_hidden(out.hidden_states, batch_index=row)[:, :n])
            labels += tokens
            kinds += [f"sentence {k + 1}"] * n
        notice = run.notice(rows)
        vectors = pooled[start : start + len(sentences)]
        results.append(
            explorer.ExplorerResult(
                sentences=sentences,
                model_id=m.model_id,
                attention=attention,
                embeddings=Embeddings(np.concatenate(states, axis=1), labels, kinds),
                sentence_vectors=vectors,
                similarity=explorer.cosine_matrix(vectors),
                notice=notice,
            )
        )
        start += len(sentences)
    return results


# task key -> (the single-run function name it batches, the batched function), from the registry
BATCHED = {spec.key: (spec.run, globals()[spec.batch]) for spec in registry.TASKS if spec.batch}
