"""Text generation (GPT-2 family): continuation, next-token choices per step, attention,
embeddings, and the attribution of one generated token to the tokens before it.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

from core import registry
from core.results import AttentionMaps, Attribution, Embeddings, TokenChoices
from demos import adapters as A
from demos.explain import subjects as st
from demos.explain.attribution import attention_rollout, integrate_targets, stack_hidden, stored_dtype
from demos.inputs.text import (
    as_attribution,
    baseline_ids,
    model_max_length,
    piece_texts,
    token_attribution,
    token_labels,
)
from demos.runtime import loading
from demos.runtime.compute import How, attribution_compute, task_compute

TASK = "generation"
MAX_NEW_TOKENS = registry.get(TASK).constant("MAX_NEW_TOKENS")
TOP_SHOWN = registry.get(TASK).constant("TOP_SHOWN")  # candidates shown per step (not the sampling top-k)
EMPTY_PROMPT = "Please enter some text to continue."
EXAMPLES = registry.examples(TASK)
_sampling_lock = threading.Lock()  # seeded sampling uses the global RNG: one at a time


@dataclass
class GenerationResult:
    """Prompt + continuation and what the model saw on the way.

    ids: (n,) prompt ids (n_prompt, possibly left-truncated) then the `steps` generated ids.
    tokens: (n,) raw token strings; pieces: (steps,) decoded text of each generated token.
    choices: top-TOP_SHOWN candidates per step of the *processed* distribution the token was
    drawn from (after temperature / top-k / top-p when sampling; the plain softmax when greedy).
    chosen_rank: (steps,) 1-based rank of the emitted token in that distribution.
    model_prob: (steps,) P(token | prefix) under the unprocessed model (generate's raw logits).
    attention: (layers, heads, n, n) over `tokens`; embeddings: (layers+1, n, d), groups prompt/generated.
    """

    prompt: str
    text: str  # exactly what the text-generation pipeline returns: prompt + continuation
    continuation: str
    model_id: str
    ids: tuple[int, ...]
    n_prompt: int
    tokens: list[str]
    pieces: list[str]
    choices: TokenChoices
    chosen_rank: np.ndarray
    model_prob: np.ndarray
    attention: AttentionMaps
    embeddings: Embeddings
    decoding: str
    notice: str

    @property
    def steps(self) -> int:
        return len(self.ids) - self.n_prompt


def load(model_id: str | None = None) -> loading.Loaded:
    m = loading.load(TASK, model_id)
    _keep_last_block_output(m.model)
    return m


def _keep_last_block_output(model: torch.nn.Module) -> None:
    """A stack whose final part changes the width (OPT with word_embed_proj_dim != hidden_size, e.g. opt-350m:
    final_layer_norm then project_out 1024 -> 512) makes transformers' last hidden state narrower than the
    others, so the states cannot be stacked. Such a model keeps the last block's output as its last hidden
    state instead (config.tie_last_hidden_states = False); the architecture table then says it is not normed
    (demos.adapters), so the lens runs the final norm and project_out on it as on every other layer."""
    try:
        adapter = A.adapter_for(model)
    except A.UnknownArchitecture:  # no table entry: nothing to say about its final part
        return
    final = [A.resolve(model, path) for path in A.stack_of(adapter).final]
    if any(isinstance(f, torch.nn.Linear) and f.in_features != f.out_features for f in final):
        model.config.tie_last_hidden_states = False


def pad_id(m: loading.Loaded) -> int:
    """Id used for the attribution baseline and padding: pad, else eos (GPT-2 has no pad token)."""
    tok, gen = m.processor, m.model.generation_config
    for value in (tok.pad_token_id, tok.eos_token_id, gen.pad_token_id, gen.eos_token_id):
        if isinstance(value, int):
            return value
    raise RuntimeError("The tokenizer has neither a pad nor an end-of-text token.")


def generate(
    prompt: str,
    max_new_tokens: int = 20,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 50,
    top_p: float = 1.0,
    seed: int = 0,
    model_id: str | None = None,
) -> GenerationResult:
    """Continue `prompt`; greedy by default. Validates and normalises the settings (sampling
    settings are ignored when greedy, so greedy results share one cache entry)."""
    if prompt is None or not str(prompt).strip():
        raise ValueError(EMPTY_PROMPT)
    n = int(max_new_tokens)
    if not 1 <= n <= MAX_NEW_TOKENS:
        raise ValueError(f"Max new tokens must be between 1 and {MAX_NEW_TOKENS}.")
    if not do_sample:
        temperature, top_k, top_p, seed = 1.0, 50, 1.0, 0
    temperature, top_k, top_p, seed = float(temperature), int(top_k), float(top_p), int(seed)
    if not 0.0 < temperature <= 5.0:
        raise ValueError("Temperature must be above 0 and at most 5.")
    if top_k < 0:
        raise ValueError("Top-k must be 0 (off) or a positive number of tokens.")
    if not 0.0 < top_p <= 1.0:
        raise ValueError("Top-p must be above 0 and at most 1.")
    if seed < 0:
        raise ValueError("The seed must be a non-negative whole number.")
    return _generate(str(prompt), n, bool(do_sample), temperature, top_k, top_p, seed, model_id)


@task_compute(TASK, memo_size=8, gpu_seconds=30)
def _generate(
    prompt: str,
    max_new_tokens: int,
    do_sample: bool,
    temperature: float,
    top_k: int,
    top_p: float,
    seed: int,
    model_id: str | None,
) -> GenerationResult:
    m = load(model_id)
    ids, n_original = _encode_prompt(m, prompt, max_new_tokens)
    sampling = (
        dict(do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p) if do_sample else dict(do_sample=False)
    )
    out = _run_generate(m, ids, max_new_tokens, sampling, seed if do_sample else None)
    seq = out.sequences[:, : ids.shape[1] + len(out.scores)]  # (1, n)
    new_ids = seq[0, ids.shape[1] :].tolist()
    choices, ranks = _step_choices(m.processor, out.scores, new_ids)
    continuation = m.processor.decode(new_ids, skip_special_tokens=True)
    logits, cache = out.logits, out.cache
    steps, states = list(out.attentions), list(out.hidden_states)
    del out  # from here on `steps` holds generate's maps alone: each step is freed once copied
    attention, hidden = _sequence_views(m, steps, states, cache, seq)  # what one pass over seq gives
    n_prompt = ids.shape[1]
    logp = torch.log_softmax(torch.cat(logits)[: len(new_ids)].float(), dim=-1)  # (steps, vocab) raw model logits
    model_prob = logp.gather(1, seq[0, n_prompt:, None]).exp()[:, 0].cpu().numpy()
    tokens = token_labels(m.processor, seq[0].tolist())
    return GenerationResult(
        prompt=prompt,
        text=prompt + continuation,
        continuation=continuation,
        model_id=m.model_id,
        ids=tuple(seq[0].tolist()),
        n_prompt=n_prompt,
        tokens=tokens,
        pieces=piece_texts(m.processor, new_ids, seq[0, :n_prompt].tolist()),
        choices=choices,
        chosen_rank=ranks,
        model_prob=model_prob,
        attention=AttentionMaps(attention, tokens, tokens, "causal self"),
        embeddings=Embeddings(stack_hidden(hidden), tokens, ["prompt"] * n_prompt + ["generated"] * len(new_ids)),
        decoding=_describe_decoding(do_sample, temperature, top_k, top_p, seed),
        notice=_notice(n_original, n_prompt, max_new_tokens, len(new_ids)),
    )


def _encode_prompt(m: loading.Loaded, prompt: str, max_new_tokens: int) -> tuple[torch.Tensor, int]:
    """(1, n_prompt) ids on the model's device and the untruncated length.

    Prompts longer than the model's limit minus `max_new_tokens` keep their LAST tokens (what the
    continuation follows), like the pipeline's `handle_long_generation="hole"`.
    """
    keep = model_max_length(m.processor, m.model) - max_new_tokens
    if keep <= 0:
        raise ValueError("Max new tokens leaves no room for the prompt in this model.")
    ids = m.processor(prompt, return_tensors="pt")["input_ids"]
    if ids.shape[1] == 0:
        raise ValueError(EMPTY_PROMPT)
    return ids[:, -keep:].to(m.device), int(ids.shape[1])


def _run_generate(m: loading.Loaded, ids: torch.Tensor, max_new_tokens: int, sampling: dict, seed: int | None):
    """model.generate with per-step processed scores, raw logits, attentions and hidden states (the
    views come from generate's own steps, not from a second pass); seeded sampling in a forked RNG
    under a lock."""
    kwargs = dict(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        output_scores=True,
        output_logits=True,
        output_attentions=True,
        output_hidden_states=True,
        return_dict_in_generate=True,
        pad_token_id=pad_id(m),
        **sampling,
    )
    with torch.inference_mode():
        if seed is None:
            return m.model.generate(**kwargs)
        devices = [m.device] if m.device.type == "cuda" else []
        with _sampling_lock, torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return m.model.generate(**kwargs)


def _sequence_views(
    m: loading.Loaded, steps: list, states: list, cache, seq: torch.Tensor
) -> tuple[np.ndarray, list[torch.Tensor]]:
    """(layers, heads, n, n) attention and per layer + 1 (1, n, d) hidden states of `seq` (1, n).

    steps / states: generate's per-step attentions / hidden states (steps x layers x (1, heads, q, k)
    / (1, q, d)), rows n_prompt, 1, ..., 1. They already ran every token but the last one; one
    cached step on the last token adds its row. Equal (to float rounding) to one forward pass over
    `seq`, at the cost of one token instead of n tokens plus the LM head over all of them.
    The rows go straight into one zero-padded (causal) array in the dtype the result keeps
    (`stored_dtype`), and `steps` is emptied as it goes: the prompt's float32 maps are freed
    after their copy, so the peak is one float32 step plus the stored array, not three copies.
    """
    n = seq.shape[1]
    with torch.inference_mode():
        last = m.model.base_model(
            input_ids=seq[:, -1:],
            cache=cache,
            attention_mask=torch.ones_like(seq),
            output_attentions=True,
            output_hidden_states=True,
        )
    steps.append(last.attentions)
    states.append(last.hidden_states)
    layers, heads = len(last.attentions), last.attentions[0].shape[1]
    weights = torch.zeros((layers, heads, n, n), dtype=stored_dtype(layers * heads * n * n), device=seq.device)
    row = 0
    while steps:
        step = steps.pop(0)
        q, k = step[0].shape[-2:]
        for layer, a in enumerate(step):
            weights[layer, :, row : row + q, :k] = a[0]
        row += q
    hidden = [torch.cat([step[layer] for step in states], dim=1) for layer in range(len(states[0]))]
    return weights.cpu().numpy(), hidden


def _step_choices(tok, scores: tuple[torch.Tensor, ...], new_ids: list[int]) -> tuple[TokenChoices, np.ndarray]:
    """Top candidates of each step's processed distribution. scores: steps x (1, vocab) logits."""
    probs = torch.softmax(torch.stack([s[0] for s in scores]).float(), dim=-1)  # (steps, vocab)
    k = min(TOP_SHOWN, probs.shape[-1])
    top_p, top_i = probs.topk(k, dim=-1)  # (steps, k)
    chosen = torch.tensor(new_ids, device=probs.device)
    chosen_prob = probs.gather(1, chosen[:, None])[:, 0]
    ranks = (probs > chosen_prob[:, None]).sum(-1) + 1  # ties count in the chosen token's favour
    choices = TokenChoices(
        tokens=[token_labels(tok, row) for row in top_i.tolist()],
        probs=top_p.cpu().numpy(),
        chosen=token_labels(tok, new_ids),
        chosen_prob=chosen_prob.cpu().numpy(),
    )
    return choices, ranks.cpu().numpy()


def _describe_decoding(do_sample: bool, temperature: float, top_k: int, top_p: float, seed: int) -> str:
    if not do_sample:
        return "greedy (always the most probable next token)"
    k = "off" if top_k == 0 else str(top_k)
    return f"sampling (temperature {temperature:g}, top-k {k}, top-p {top_p:g}, seed {seed})"


def _notice(n_original: int, n_prompt: int, max_new_tokens: int, steps: int) -> str:
    parts = []
    if n_prompt < n_original:
        parts.append(
            f"The prompt was {n_original} tokens; only its last {n_prompt} were used, so that the "
            f"{max_new_tokens} new tokens fit in the limit of {n_prompt + max_new_tokens} tokens."
        )
    if steps < max_new_tokens:
        parts.append(f"Generation stopped after {steps} tokens at the end-of-text token.")
    return " ".join(parts)


@attribution_compute(TASK)
def attribute(
    ids: tuple[int, ...],
    position: int,
    how: How = How(),
) -> Attribution:
    """Attribute P(ids[position] | ids[:position]) to each of the `position` tokens before it.

    ids: (n,) a full sequence (GenerationResult.ids); baseline: the prefix with every ordinary
    token replaced by the pad/eos id (special tokens kept). Scores: (position,).
    """
    if not 1 <= int(position) < len(ids):
        raise ValueError(f"Position must be between 1 and {len(ids) - 1}.")
    m = load(how.model_id)
    position = int(position)
    prefix = torch.tensor([ids[:position]], device=m.device)  # (1, position)
    target_id = int(ids[position])
    base = baseline_ids(prefix, set(m.processor.all_special_ids), pad_id(m))

    def prob_of_next(batch_ids: torch.Tensor) -> torch.Tensor:
        logits = m.model(input_ids=batch_ids).logits[:, -1]  # (batch, vocab)
        return torch.softmax(logits.float(), dim=-1)[:, target_id]

    target = f"“{m.processor.decode([target_id])}” at position {position}"
    tokens = token_labels(m.processor, list(ids[:position]))
    return token_attribution(m.model, prob_of_next, prefix, base, tokens, target, (), how)


@attribution_compute(TASK)
def attribute_all(
    ids: tuple[int, ...],
    first: int,
    how: How = How(),
) -> list[Attribution]:
    """Attribute every token from position `first` on: for each p in first..n-1, P(ids[p] | ids[:p]) to the p
    tokens before it (scores (p,)), as `attribute(ids, p)` would, in one batched pass.

    A causal model's output at position p-1 reads only ids[:p], so every target is read from ONE sequence
    ids[:-1] (its baseline: ordinary tokens replaced by the pad/eos id, as `attribute`'s); each interpolation
    point runs forward once for all targets (demos.explain.attribution.integrate_targets)."""
    n = len(ids)
    if not 1 <= int(first) < n:
        raise ValueError(f"Position must be between 1 and {n - 1}.")
    first = int(first)
    m = load(how.model_id)
    seq = torch.tensor([ids[:-1]], device=m.device)  # (1, n-1)
    base = baseline_ids(seq, set(m.processor.all_special_ids), pad_id(m))
    embed = m.model.get_input_embeddings()
    where = torch.arange(first - 1, n - 1, device=m.device)  # the positions whose next token is explained
    targets = torch.tensor(ids[first:], device=m.device)

    def probs(e: torch.Tensor) -> torch.Tensor:  # (b, n-1, D) -> (b, K): P(ids[p] | ids[:p]) for each p
        logits = m.model(inputs_embeds=e, logits_to_keep=where).logits  # (b, K, V)
        picked = targets.view(1, -1, 1).expand(e.shape[0], -1, 1)
        return torch.softmax(logits.float(), dim=-1).gather(-1, picked)[..., 0]

    with torch.no_grad():
        x, b = embed(seq), embed(base)
    with loading.fused_attention(m.model):  # the probabilities never read attention weights
        got = integrate_targets(probs, x, b, how.method, int(how.steps), how.progress, how.tolerance)
    labels = token_labels(m.processor, list(ids[:-1]))
    return [
        as_attribution(g, g.attrs[0, :p].sum(dim=-1), labels[:p], f"“{m.processor.decode([ids[p]])}” at position {p}",
                       how.method)
        for p, g in zip(range(first, n), got)
    ]


def subject(result: GenerationResult, target: object = None, contrast: object = None):
    """What the explainers explain (demos.explain.subjects.Subject): P(token at generated step `target`,
    default 0 | its prefix), teacher forced over result.ids; units: the prefix's tokens."""

    m = load(result.model_id)
    step = st.step_index(target, result.steps)
    pos = result.n_prompt + step
    ids = torch.tensor([result.ids[:pos]], device=m.device)  # (1, pos)
    tok = m.processor
    w = result.attention.weights[:, :, :pos, :pos]  # causal: the prefix's own attention
    s = st.Subject(
        task=TASK,
        model=m.model,
        inputs={"input_ids": ids},
        unit_key="input_ids",
        units=st.token_units(
            result.tokens[:pos], st.special_mask(tok, list(result.ids[:pos])), "the end-of-text token"
        ),
        replacement=torch.full_like(ids, pad_id(m)),
        run=lambda kw: m.model(input_ids=kw["input_ids"], use_cache=False),  # one pass: no cache to fill
        outcome_probs=st.last_logits_probs,
        outcome_label=lambda i: tok.decode([i]),
        answer=int(result.ids[pos]),
        embedding_layer=m.model.get_input_embeddings(),
        attention=lambda: w[-1].mean(0)[pos - 1],
        rollout=lambda: attention_rollout(w)[pos - 1],
    )
    return st.finish(s, contrast, st.vocab_lookup(tok), m.model.config.vocab_size)
