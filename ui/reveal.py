"""Predict, then reveal: what the model actually did in a lesson step, and how a student's guess
compares. Runs the step's answer and explanation on the configured backend with the arguments the
tab itself uses, so the answers and explanations the tab computes are shared (memo), not repeated.
No gradio: `ui.lessons` shows the text (Markdown, model output escaped).
"""
from __future__ import annotations

import re
from typing import Any

from core.lens_types import HeadLens, LensGrid
from core.words import is_special, sum_by_word
from demos.runtime import settings
from scale import backend
from ui import links
from ui.common import md_escape
from ui.kit import TOLERANCE
from ui.lesson_files import KNOCKOUT, Step, band

GENERATION_TOKENS = 20  # the Generation tab's default number of new tokens
RANDOM_NOTE = ("*This tab runs a stand-in model with random weights (see the warning beside its answer): the "
               "comparison shows how the lesson works, not what a trained model does.*")


def model_of(link: links.Link) -> str:
    return link.model or settings.current().choices(link.tab)[0]


def answer_args(link: links.Link) -> tuple:
    """The arguments the tab's answer event passes to its compute function, for a step's inputs."""
    get, model = link.input, model_of(link)

    def example(name: str) -> str:
        return links.examples("image" if name == "image" else "audio")[get(name)] if get(name) else None

    table = {
        "generation": lambda: (get("text", ""), int(get("tokens", GENERATION_TOKENS)), False, 1.0, 50, 1.0, 0, model),
        "qa": lambda: (get("question", ""), get("context", ""), model),
        "image": lambda: (example("image"), model),
        "asr": lambda: (example("audio"), model),
        "clip": lambda: ([example("image")], get("texts", ""), model),
    }
    return table[link.tab]() if link.tab in table else ((get("text") or "").strip(), model)


def _plain(word: str) -> str:
    return re.sub(r"[\W_]+", "", word.lower())


def word_truth(link: links.Link, result: Any) -> list[tuple[str, float]]:
    """The step's words ranked by |attribution| (the sentiment tab's own integrated gradients, sub-word
    pieces summed into words; special tokens and punctuation left out)."""
    attr = backend.call(link.tab, "attribution", result.text, None, "integrated_gradients", 32, result.model_id,
                        tolerance=TOLERANCE)
    labels, scores = sum_by_word(attr.tokens, attr.scores)
    ranked = [(w, float(s)) for w, s in zip(labels, scores) if not is_special(w) and _plain(w)]
    return sorted(ranked, key=lambda ws: -abs(ws[1]))


def word_text(guess: str, ranked: list[tuple[str, float]]) -> tuple[str, bool]:
    if not ranked:
        return "The attribution found no word to rank.", False
    plain = [_plain(w) for w, _ in ranked]
    order = " · ".join(f"**{md_escape(w)}** {s:+.2g}" for w, s in ranked[:5])
    line = f"The attribution ranks the words (+ pushes toward the answer, − away): {order}."
    if _plain(guess) == plain[0]:
        return line + " Your guess matches.", True
    if _plain(guess) in plain:
        return (
            line + f" Your word **{md_escape(guess)}** comes {plain.index(_plain(guess)) + 1} of {len(plain)}.",
            False,
        )
    return line + f" Your word **{md_escape(guess)}** got no score of its own (a special token or punctuation).", False


def commit(lens: Any) -> tuple[int | None, int, str]:
    """(first layer from which the answer stays the lens's top choice, the last layer, the answer)."""
    last = lens.n_layers - 1
    if isinstance(lens, HeadLens):
        tops = [row[0] if row else "" for row in lens.top_labels]
        first = None
        for layer in range(last, -1, -1):
            if tops[layer] != lens.final_label:
                break
            first = layer
        return first, last, lens.final_label
    assert isinstance(lens, LensGrid)
    wanted = [j for j, g in enumerate(lens.groups) if g == "generated"] or range(len(lens.targets))
    column = next((j for j in wanted if lens.targets[j] and not is_special(lens.targets[j])), None)
    if column is None:
        return None, last, ""
    return lens.commit_layer(column), last, lens.targets[column]


def layer_text(guess: str, lens: Any) -> tuple[str, bool]:
    first, last, answer = commit(lens)
    shown = md_escape(answer.strip() or answer)
    if first is None:
        return (
            f"The answer **{shown}** is not the lens's top choice at the last layer (the model chose it "
            "by beam search or sampling), so no layer can be named."
        ), False
    truth = band(first, last)
    line = (
        f"The answer **{shown}** is the lens's top choice from layer {first} on (layers 0, the embeddings, "
        f"to {last}): **{truth}**."
    )
    return line + (" Your guess matches." if guess == truth else f" You guessed *{guess}*."), guess == truth


def knockout_text(guess: str, ablation: Any, heads: str) -> tuple[str, bool]:
    changed = ablation.top_after != ablation.top_before
    before, after = md_escape(str(ablation.top_before)), md_escape(str(ablation.top_after))
    line = (
        f"Knocking out **{md_escape(heads)}** changes the answer from **{before}** to **{after}**."
        if changed
        else f"Knocking out **{md_escape(heads)}**, the answer stays **{before}**."
    )
    line += f" (Score {ablation.score_before:.3f} → {ablation.score_after:.3f}.)"
    right = guess == KNOCKOUT[0 if changed else 1]
    return line + (" Your guess matches." if right else " Not what you guessed."), right


def compare(step: Step, guess: str) -> str:
    """Markdown: what the model did, and whether the guess matches (with the random-weights warning
    when the tab runs a stand-in model: then the comparison means nothing)."""
    predict = step.predict
    if predict is None:
        return ""
    if predict.kind == "choice":
        if not predict.answer:
            return f"You guessed *{guess}*. There is no single right answer here: compare with the view."
        ok = guess == predict.answer
        return f"The expected answer: **{predict.answer}**. " + (
            "Your guess matches." if ok else f"You guessed *{guess}*."
        )
    link = step.link
    result = backend.call(link.tab, "answer", *answer_args(link))
    if predict.kind == "word":
        text, _ = word_text(guess, word_truth(link, result))
    elif predict.kind == "layer":
        text, _ = layer_text(guess, backend.call(link.tab, "lens", result, item=0))
    else:
        heads = str(link.control("heads"))
        text, _ = knockout_text(guess, backend.call(link.tab, "ablate", result, heads=heads, target=None), heads)
    info = backend.call(link.tab, "model_info", model_of(link))
    return text if info.pretrained else text + "\n\n" + RANDOM_NOTE
