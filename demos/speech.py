"""Speech recognition (Whisper): transcript, log-mel spectrogram, cross-attention alignment of
every output token over time, word time spans by dynamic time warping, token probabilities and
a summary of the encoder's self-attention.

The encoder runs once (with its self-attentions); `generate` (beam search, as the ASR pipeline
does) reuses its output to find the tokens; ONE teacher-forced decoder pass over those tokens with
`output_attentions=True` then gives the cross-attentions and the probability of every output token.
(Handing generate the encoder output gives the same tokens as letting it run the encoder itself, without
running the encoder again.)
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutput

from core import registry
from core.results import AttentionMaps
from demos.explain import subjects as st
from demos.explain.attribution import stack_hidden
from demos.inputs import audio
from demos.inputs.text import token_labels
from demos.runtime import loading
from demos.runtime.compute import task_compute

TASK = "asr"
ASSETS = Path(__file__).resolve().parent.parent / "assets" / "audio"
EXAMPLES = registry.examples(TASK)
NUM_BEAMS = 5  # what transformers' ASR pipeline uses for Whisper (after OpenAI's implementation)
MAX_NEW_TOKENS = 256  # the pipeline's length when the checkpoint's generation config sets none
ENCODER_BINS = 100  # encoder self-attention is averaged into at most this many time bins per axis


@dataclass
class WordSpan:
    """One word: its text, [start, end) in seconds, the output-token indices it merges, mean prob."""

    word: str
    start: float
    end: float
    tokens: list[int]
    probability: float


@dataclass
class SpeechResult:
    """Everything shown for one clip (all cropped to the audio's real length).

    mel: (mel_bins, mel_frames) log-mel input features; mel_step: seconds per mel frame.
    tokens: (T,) output tokens as the model wrote them (including a final end-of-text);
    token_probs: (T,) probability the model gave each of them (raw model distribution).
    cross: (layers, heads, T, F) cross-attention of every output token over the F encoder frames
    of the audio, rows renormalised over the audio; frame_step: seconds per encoder frame.
    alignment: (T, F) the matrix DTW runs on (alignment heads, normalised, median filtered, mean);
    path: (steps, 2) DTW path of (token, frame) pairs, monotone in both.
    encoder: (layers, heads, B, B) encoder self-attention averaged into B <= ENCODER_BINS time bins.
    encoder_hidden: (enc_layers+1, P, d) float32 encoder hidden states over all P positions of the
    window (index 0 = embeddings, last = encoder output after its final layer norm);
    decoder_hidden: (dec_layers+1, len(prompt) + T - 1, d) float32 decoder hidden states over the
    decoder inputs (prompt + tokens[:-1]); the last one already carries the decoder's final layer norm.
    """

    text: str
    model_id: str
    notice: str
    duration: float
    prompt: list[str]
    mel: np.ndarray
    mel_step: float
    tokens: list[str]
    token_ids: list[int]
    token_probs: np.ndarray
    cross: AttentionMaps
    frame_step: float
    alignment_heads: list[tuple[int, int]]
    alignment: np.ndarray
    path: np.ndarray
    words: list[WordSpan]
    encoder: AttentionMaps
    input_features: np.ndarray | None = None  # (1, mel_bins, frames) float32: the model's whole input window
    encoder_hidden: np.ndarray | None = None
    decoder_hidden: np.ndarray | None = None


def load(model_id: str | None = None) -> loading.Loaded:
    return loading.load(TASK, model_id)


def window_seconds(m: loading.Loaded) -> float:
    """Length of the audio window the model hears at once (30 s for real Whisper)."""
    fe = m.processor.feature_extractor
    return fe.n_samples / fe.sampling_rate


def frame_seconds(m: loading.Loaded) -> float:
    """Seconds per encoder frame: the window over the encoder's positions (20 ms for Whisper)."""
    return window_seconds(m) / m.model.config.max_source_positions


def transcribe(audio_value, model_id: str | None = None) -> SpeechResult:
    """Normalise any `(rate, samples)` audio, keep one model window, and analyse it."""
    m = load(model_id)
    clip = audio.normalise(audio_value, m.processor.feature_extractor.sampling_rate)
    clip, notice = audio.limit(clip, window_seconds(m))
    return replace(analyse(clip, model_id), notice=notice)  # the memoised result is never mutated


@task_compute(TASK, memo_size=4, gpu_seconds=60)
def analyse(clip: audio.Clip, model_id: str | None = None) -> SpeechResult:
    """Transcribe `clip` (at most one window long) and compute every view from one forward pass."""
    m = load(model_id)
    fe, tok = m.processor.feature_extractor, m.processor.tokenizer
    feats = fe(clip.samples, sampling_rate=clip.rate, return_tensors="pt", return_attention_mask=True)
    features = feats["input_features"].to(m.device, m.dtype)  # (1, mel_bins, mel_frames)
    mask = feats["attention_mask"].to(m.device)
    with torch.inference_mode():
        # encoder once, for all three uses
        enc = m.model.get_encoder()(features, output_attentions=True, output_hidden_states=True)
        hidden = BaseModelOutput(last_hidden_state=enc.last_hidden_state)
        gen = m.model.generate(
            encoder_outputs=hidden,
            attention_mask=mask,
            return_dict_in_generate=True,
            **pipeline_generate_kwargs(m.model.generation_config, tok.pad_token_id),
        )
        sequence = gen.sequences[:1]  # (1, prompt + T)
        out = m.model(
            encoder_outputs=hidden,
            decoder_input_ids=sequence[:, :-1],
            output_attentions=True,
            output_hidden_states=True,
        )
    ids = sequence[0].tolist()
    n_prompt = prompt_length(ids, m.model.generation_config)
    out_ids = ids[n_prompt:]
    n_frames = min(int(np.ceil(clip.seconds / frame_seconds(m))), m.model.config.max_source_positions)

    rows = slice(n_prompt - 1, None)  # position i predicts token i + 1
    probs = torch.softmax(out.logits[0, rows].float(), dim=-1)
    token_probs = probs[torch.arange(len(out_ids)), torch.tensor(out_ids, dtype=torch.long)].cpu().numpy()
    # (L, H, n_dec, F)
    cross_all = crop_renormalise(torch.stack([a[0] for a in out.cross_attentions]).float(), n_frames)
    heads = alignment_heads(m.model)
    matrix = alignment_matrix(cross_all, heads, m.model.config.median_filter_width)[rows]  # (T, F)
    path = dtw(-matrix) if len(out_ids) else np.zeros((0, 2), dtype=int)
    tokens = token_labels(tok, out_ids)
    step = frame_seconds(m)
    frame_labels = [f"{i * step:.2f}s" for i in range(n_frames)]
    mel_frames = min(int(np.ceil(len(clip.samples) / fe.hop_length)), features.shape[-1])
    return SpeechResult(
        text=tok.decode(out_ids, skip_special_tokens=True).strip(),
        model_id=m.model_id,
        notice="",
        duration=clip.seconds,
        prompt=token_labels(tok, ids[:n_prompt]),
        mel=features[0, :, :mel_frames].float().cpu().numpy(),
        mel_step=fe.hop_length / fe.sampling_rate,
        tokens=tokens,
        token_ids=out_ids,
        token_probs=token_probs,
        cross=AttentionMaps(cross_all[:, :, rows].cpu().numpy(), tokens, frame_labels, "cross"),
        frame_step=step,
        alignment_heads=heads,
        alignment=matrix,
        path=path,
        words=word_spans(out_ids, set(tok.all_special_ids), token_probs, path, step, tok, clip.seconds),
        encoder=encoder_summary(enc.attentions, n_frames, step),
        input_features=features.float().cpu().numpy(),
        encoder_hidden=stack_hidden(enc.hidden_states),
        decoder_hidden=stack_hidden(out.decoder_hidden_states),
    )


def pipeline_generate_kwargs(generation_config, pad_token_id: int | None) -> dict:
    """The generation settings the ASR pipeline adds to a Whisper checkpoint's own, so that the
    transcript is the pipeline's: 5 beams, 256 new tokens and the tokenizer's pad id, each only
    where the checkpoint's generation config does not set it (no 256 when it sets `max_length`, e.g.
    Whisper's 448). Without this a config that sets no length stops at generate's default of 20."""
    chosen = generation_config.to_diff_dict()
    defaults = {"num_beams": NUM_BEAMS, "max_new_tokens": MAX_NEW_TOKENS, "pad_token_id": pad_token_id}
    return {
        key: value
        for key, value in defaults.items()
        if key not in chosen and value is not None and not (key == "max_new_tokens" and "max_length" in chosen)
    }


def prompt_length(ids: list[int], generation_config) -> int:
    """Number of leading decoder-prompt tokens (start of transcript, language, task, no-timestamps)."""
    prompt_ids = {generation_config.decoder_start_token_id, getattr(generation_config, "no_timestamps_token_id", None)}
    prompt_ids |= set((getattr(generation_config, "lang_to_id", None) or {}).values())
    prompt_ids |= set((getattr(generation_config, "task_to_id", None) or {}).values())
    n = 0
    while n < len(ids) and ids[n] in prompt_ids:
        n += 1
    return max(n, 1)


def crop_renormalise(weights: torch.Tensor, n_frames: int) -> torch.Tensor:
    """(..., q, k) attention -> (..., q, n_frames): keys cut to the real audio, rows summing to 1.

    Equal to a softmax over the audio frames only (what OpenAI's word timing does)."""
    cropped = weights[..., :n_frames]
    return cropped / cropped.sum(dim=-1, keepdim=True).clamp_min(1e-12)


def alignment_heads(model) -> list[tuple[int, int]]:
    """(layer, head) pairs used for timing: the checkpoint's `alignment_heads` when it has them,
    else every head of the upper half of the decoder (OpenAI's default)."""
    given = getattr(model.generation_config, "alignment_heads", None)
    if given:
        return [(int(layer), int(h)) for layer, h in given]
    cfg = model.config
    return [
        (layer, h)
        for layer in range(cfg.decoder_layers // 2, cfg.decoder_layers)
        for h in range(cfg.decoder_attention_heads)
    ]


def alignment_matrix(cross: torch.Tensor, heads: list[tuple[int, int]], filter_width: int) -> np.ndarray:
    """(layers, heads, n_dec, F) -> (n_dec, F): chosen heads, each frame column standardised over
    the decoder positions, median-filtered along time, then averaged over heads."""
    from scipy.ndimage import median_filter

    w = torch.stack([cross[layer, h] for layer, h in heads]).double().cpu().numpy()  # (A, n_dec, F)
    w = (w - w.mean(axis=-2, keepdims=True)) / (w.std(axis=-2, keepdims=True) + 1e-10)
    width = int(filter_width or 1)
    if width > 1 and w.shape[-1] > width // 2:
        w = median_filter(w, size=(1, 1, width), mode="mirror")
    return w.mean(axis=0)


def dtw(cost: np.ndarray) -> np.ndarray:
    """Dynamic time warping through `cost` (N, M) from (0, 0) to (N-1, M-1) with steps down,
    right or diagonal. Returns the path (steps, 2) of (row, column) pairs, monotone in both."""
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    trace = np.zeros((n + 1, m + 1), dtype=np.int8)
    for i in range(1, n + 1):  # row by row; within a row, a cumulative pass for the "right" steps
        diag_up = np.minimum(acc[i - 1, :-1], acc[i - 1, 1:])  # best of (i-1, j-1) and (i-1, j)
        choice = np.where(acc[i - 1, :-1] <= acc[i - 1, 1:], 0, 1)
        for j in range(1, m + 1):
            left = acc[i, j - 1]
            if diag_up[j - 1] <= left:
                acc[i, j], trace[i, j] = cost[i - 1, j - 1] + diag_up[j - 1], choice[j - 1]
            else:
                acc[i, j], trace[i, j] = cost[i - 1, j - 1] + left, 2
    i, j, path = n, m, []
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        t = trace[i, j]
        i, j = (i - 1, j - 1) if t == 0 else (i - 1, j) if t == 1 else (i, j - 1)
    return np.array(path[::-1], dtype=int)


def token_starts(path: np.ndarray, n_tokens: int, n_frames: int) -> np.ndarray:
    """(n_tokens + 1,) frame where the DTW path enters each token's row, then the end frame."""
    starts = np.full(n_tokens + 1, n_frames, dtype=int)
    for row, col in path[::-1]:
        starts[row] = col
    return starts


def word_spans(ids, special, probs, path, step, tokenizer, duration: float) -> list[WordSpan]:
    """Merge sub-word tokens into words and give each word [start of its first token, start of
    the next word or end-of-text). A word starts at a token whose own piece (the tokenizer's,
    not a display label) begins with a space marker: 'Ġ' (byte-level BPE) or '▁' (SentencePiece)."""
    if len(path) == 0:
        return []
    n_frames = int(path[-1, 1]) + 1
    starts = np.minimum(token_starts(path, len(ids), n_frames) * step, duration)
    pieces = tokenizer.convert_ids_to_tokens(list(ids))
    groups: list[list[int]] = []
    for i, (piece, token_id) in enumerate(zip(pieces, ids)):
        if token_id in special:
            continue
        if not groups or str(piece).startswith(("Ġ", "▁")) or groups[-1][-1] != i - 1:
            groups.append([i])
        else:
            groups[-1].append(i)
    spans = []
    for g in groups:
        text = tokenizer.decode([ids[i] for i in g]).strip()
        if text:
            spans.append(WordSpan(text, float(starts[g[0]]), float(starts[g[-1] + 1]), g, float(np.mean(probs[g]))))
    return spans


def encoder_summary(attentions, n_frames: int, step: float) -> AttentionMaps:
    """Encoder self-attention over the audio, averaged into time bins.

    attentions: per layer (1, heads, P, P). Queries and keys are cut to the n_frames of audio,
    rows renormalised; bins average over queries and sum over keys, so rows still sum to 1.
    Bins hold the same whole number of frames (the last may hold fewer), so no bin looks
    brighter only for being wider. Returns (layers, heads, B, B), B = ceil(n_frames / width) <= ENCODER_BINS."""
    width = int(np.ceil(n_frames / ENCODER_BINS))
    edges = np.append(np.arange(0, n_frames, width), n_frames)
    index = torch.as_tensor(edges)
    counts = (index[1:] - index[:-1]).float()
    pooled = []
    for layer in attentions:
        w = crop_renormalise(layer[0, :, :n_frames, :].float(), n_frames)  # (H, F, F)
        w = _bin_sums(w, index, dim=1) / counts[:, None]  # (H, B, F): mean over each query bin
        pooled.append(_bin_sums(w, index, dim=2).cpu().numpy())  # (H, B, B): sum over each key bin
    labels = [f"{a * step:.2f}s" for a in edges[:-1]]
    return AttentionMaps(np.stack(pooled), labels, labels, "encoder self")


def _bin_sums(x: torch.Tensor, edges: torch.Tensor, dim: int) -> torch.Tensor:
    """Sums of `x` over the index ranges [edges[i], edges[i+1]) along `dim` (via a cumulative sum)."""
    zero = torch.zeros_like(x.narrow(dim, 0, 1))
    cs = torch.cat([zero, x.double().cumsum(dim)], dim=dim)
    return (cs.index_select(dim, edges[1:]) - cs.index_select(dim, edges[:-1])).float()


def subject(result: SpeechResult, target: object = None, contrast: object = None):
    """What the explainers explain (demos.explain.subjects.Subject): P(transcript token at step `target`,
    default 0), teacher forced; units: the audio's encoder frames."""

    m = load(result.model_id)
    fe, tok = m.processor.feature_extractor, m.processor.tokenizer
    feats = torch.from_numpy(result.input_features).to(m.device, m.dtype)
    step = st.step_index(target, len(result.token_ids))
    prompt = tok.convert_tokens_to_ids(result.prompt)
    decoder_in = torch.tensor([prompt + list(result.token_ids[:step])], device=m.device)
    silence = fe(np.zeros(fe.n_samples, dtype=np.float32), sampling_rate=fe.sampling_rate, return_tensors="pt")[
        "input_features"
    ]
    ratio = feats.shape[-1] // m.model.config.max_source_positions
    return st.step_subject(
        TASK,
        m,
        tok,
        step,
        int(result.token_ids[step]),
        result.cross.weights,
        contrast,  # over the audio's encoder frames
        "the transcript reaches the audio through cross-attention",
        inputs={"input_features": feats, "decoder_input_ids": decoder_in},
        unit_key="input_features",
        units=st.frame_units(result.cross.key_tokens, ratio, feats.shape[-1]),
        replacement=silence.to(m.device, m.dtype),
        run=lambda kw: m.model(
            input_features=kw["input_features"], decoder_input_ids=kw["decoder_input_ids"], use_cache=False
        ),
    )
