"""The view kit every tab is built from: the model line and random-weights warning carried by a
result, the attribution view (controls + summary + shaded tokens + bars + export), and the
chaining rule for explanations (they run only when the main step succeeded).

Handlers return `{component: value}` dicts (Gradio's own idiom), so a view adds its outputs
without anyone counting positions in a tuple.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from core import registry
from core.explainers import METHODS
from core.results import ModelInfo
from core.words import sum_by_word
from demos.runtime import priority, settings
from scale import backend
from ui import session, share
from ui.common import RedrawView, guarded, help_note, md_escape
from ui.export import attribution_export
from ui.links import tag
from viz.bars import attribution_bars
from viz.tokens import highlight_html

RANDOM_WARNING = (
    "⚠️ **This tab runs a model with RANDOM weights** (no trained model is on this machine and the "
    "Hugging Face Hub cannot be reached). The mechanics are real (attention, attributions, "
    "embeddings), but the answer means nothing. Run `" + settings.PREPARE_COMMAND + "` while "
    "online to keep the real models for offline use."
)


def model_line(info: ModelInfo) -> str:
    """Markdown: which model runs, whether its weights are pretrained, device and precision.
    Local folders are named, never shown as server paths."""
    kind = "pretrained weights" if info.pretrained else "RANDOM weights (an offline stand-in, not a trained model)"
    src = settings.display_name(info.model_id)
    if info.source != info.model_id:
        src += f" -> {settings.display_name(info.source)}"
    return f"Model: `{src}` · {kind} · {info.device} · {info.dtype}"


def notice(info: ModelInfo, text: str = "") -> str:
    """The notice shown beside the answer: a loud warning first when the weights are random."""
    parts = [] if info.pretrained else [RANDOM_WARNING]
    if text:
        parts.append(text)
    return "\n\n".join(parts)


def answer_header(task: str, model_id: str | None, text: str, info: gr.Markdown, box: gr.Markdown) -> dict:
    """{model line, notice} values of a fresh result (the model is described by whichever
    backend served it, once per backend, task and model: not one more round trip per answer)."""
    described = _described(task, model_id)
    return {info: model_line(described), box: notice(described, text)}


def _described(task: str, model_id: str | None) -> Any:
    """The serving backend's ModelInfo of `task`'s model, asked once per backend, configuration,
    task and model (static while they are: id, source, trained or random weights, device, dtype).
    Kept on the settings object, so a new configuration asks again; a failed call is not kept."""
    served_by, known = backend.current(), vars(settings.current()).setdefault("_xray_described", {})
    key = (served_by, task, model_id)
    if key not in known:
        if len(known) >= 64:
            known.clear()
        known[key] = served_by.call(task, "model_info", model_id)
    return known[key]


class TaskCompute:
    """A task's compute module as the UI sees it: its functions run on the configured backend
    (in this process, or the Ray Serve model tier), its constants are read as they are.

        compute = task_compute(spec.key); compute.analyse(text, model_id)
    """

    def __init__(self, task: str) -> None:
        self._task = task
        spec = registry.get(task)
        examples = registry.examples(task)
        self._constants = {"TASK": task, "EXAMPLES": examples, **dict(spec.constants)}
        if task == "clip":
            self._constants["EXAMPLE_TEXTS"] = examples[0]
            self._constants["RELEVANCE_METHODS"] = dict(spec.constant("RELEVANCE_METHODS"))

    def __getattr__(self, name: str) -> Any:
        """An UPPER_CASE name: the task's constant (core.registry); any other: its compute function,
        called on the configured backend (the compute module is not imported in this process)."""
        if name.isupper():
            if name not in self._constants:
                raise AttributeError(f"The {self._task} task has no constant {name!r} (core.registry constants).")
            return self._constants[name]
        if name.startswith("_"):
            raise AttributeError(name)
        task = self._task

        def call(*args: Any, **kwargs: Any) -> Any:
            return session.remember(backend.call(task, name, *args, **kwargs), task, name, args, kwargs)

        call.__name__ = name
        return call


def task_compute(task: str) -> TaskCompute:
    return TaskCompute(task)


def tab_compute(module_name: str) -> TaskCompute:
    """The compute functions of the tab module `module_name` (`ui.speech` -> the asr task's)."""
    return TaskCompute(registry.by_demo(module_name.rsplit(".", 1)[-1]).key)


def result_state() -> gr.State:
    """The gr.State holding a tab's last result: a small result as it is (the memo's own object:
    Gradio stores what a handler returns without copying, and results are never modified), a
    large one as its recipe (`ui.session.ResultRef`: `guarded` stores it and gives handlers the
    result back). Gradio deletes it XRAY_STATE_TTL_S seconds (default 900) after the session last
    stored a result, and the sweeper (`ui.session`) ends sessions idle that long."""
    state = gr.State(time_to_live=session.ttl_seconds())
    state.xray_result = True  # guarded() stores ui.session.keep(value) here
    return state


def label_value(labels: list[str], probs, k: int | None = None) -> dict[str, float]:
    """gr.Label value: classes with their probabilities (the top `k` when given)."""
    pairs = sorted(zip(labels, (float(p) for p in probs)), key=lambda lp: -lp[1])
    return dict(pairs[:k] if k else pairs)


def attribution_controls(default_steps: int = 32) -> tuple[gr.Radio, gr.Slider, gr.Checkbox]:
    """Method, step count (the ceiling when adaptive) and the adaptive switch."""
    with gr.Row():
        method = gr.Radio(
            [(m.label, k) for k, m in METHODS.items()], value="integrated_gradients", label="Attribution method"
        )
        steps = gr.Slider(4, 256, value=default_steps, step=4, label="Integration steps (more = more exact, slower)")
        adaptive = gr.Checkbox(
            value=True,
            label=f"Stop early once |delta| ≤ {TOLERANCE} (the steps above are the most it may use)",
        )
    return method, steps, adaptive


WORDS_LABEL = "Whole words (each word's sub-word pieces summed)"
TOLERANCE = 0.01  # convergence delta, in units of the explained probability
INSTANT = "gradient_x_input"  # the first view while integrated gradients run
# Every explanation event (attributions, lens, steps, interventions) queues in one group, one at a
# time, apart from the answers: a class's explanations never hold up anybody's answer.
EXPLANATION_QUEUE = dict(concurrency_id="explanations", concurrency_limit=1)
VIEWS_QUEUE = dict(concurrency_id="views", concurrency_limit=1)  # drawing figures: its own queue, beside answers'


@dataclass
class Figures:
    """A tab's own figures, drawn with its views after the answer: `draw(result) -> {component: value}`."""

    outputs: list
    draw: Callable[[Any], dict]

    def values(self, result: Any) -> dict:
        return self.draw(result)


def draw_views(main: Any, state: gr.State, task: str, *views: Any) -> Any:
    """Draw `views` (attention, embeddings, explainer tabs: anything with `outputs` and
    `values(result)`) from the tab's result right after its answer is shown, as the event
    `<task api>_views`. The answer's own event returns the answer alone, so in a busy class an
    answer never waits for other students' figures (plotly figures and their JSON cost several
    times the model's forward pass on short inputs); figures have their own queue group, and they
    are drawn once no answer is computing (at most `VIEWS_WAIT` later: `AnswerFirst`)."""
    outputs = [c for view in views for c in view.outputs]
    link = share.AfterViews.build(outputs)  # what a link sets once the views are drawn (ui.share)

    @guarded
    def draw(result, pending=None):
        if result is None:
            return {c: gr.skip() for c in outputs}
        priority.answer_first.yield_to_answers(priority.VIEWS_WAIT)  # other students' answers first (in this process)
        out: dict = {}
        for view in views:
            out.update(view.values(result))
        linked = link.apply(pending, out)
        out.update(linked)
        for view in views:  # a link's layer and head: its figure drawn here, not left to the controls' change events
            if isinstance(view, RedrawView) and any(c in linked for c in view.controls):
                out[view.plot] = view.figure(result, *(share.value_of(out[c]) for c in view.controls))
        return out

    return main.success(draw, [state, link.pending], outputs + link.outputs, api_name=api(task, "views"), **VIEWS_QUEUE)


def tolerance(adaptive: Any) -> float | None:
    return TOLERANCE if adaptive in (True, "true", "True", 1) else None


def attribution_summary(attr) -> str:
    """Markdown line: what was explained, with the completeness check for integrating methods."""
    label = METHODS[attr.method].label if attr.method in METHODS else attr.method
    line = f"**{md_escape(label)}** toward **{md_escape(attr.target)}**"
    if attr.delta is not None:
        gap = (
            "n/a"
            if attr.output_value is None or attr.baseline_value is None
            else f"{attr.output_value - attr.baseline_value:+.4g}"
        )
        line += (
            f" · {attr.steps} steps{cost(attr)} · sum of attributions {float(attr.scores.sum()):+.4g}"
            f" vs f(input) − f(baseline) = {gap} · convergence delta {attr.delta:.2e}"
        )
    else:
        line += cost(attr)
    return line


def cost(attr) -> str:
    """' · 1.2 s' what the attribution cost to compute, and how many students' requests shared that pass."""
    if attr.seconds is None:
        return ""
    shared = f" (one pass for {attr.together} requests at once)" if attr.together > 1 else ""
    return f" · {attr.seconds:.1f} s{shared}"


@dataclass
class AttributionView:
    """One token attribution: summary line, tokens shaded by score, bar chart."""

    summary: gr.Markdown
    html: gr.HTML
    plot: gr.Plot

    @classmethod
    def build(cls, plot_label: str = "Attribution per token") -> AttributionView:
        return cls(gr.Markdown(), gr.HTML(), gr.Plot(label=plot_label))

    @property
    def outputs(self) -> list:
        return [self.summary, self.html, self.plot]

    def values(self, attr, title: str | None = None, words: bool = False) -> dict:
        """The attribution per token, or with `words` per whole word (each word's pieces summed: the
        total stays the same; core.words); the title says which."""
        title = title or f"Attribution toward {attr.target}"
        tokens, scores = attr.tokens, attr.scores
        if words:
            tokens, scores = sum_by_word(tokens, scores)
            title += " · whole words (sub-word scores summed)"
        return {
            self.summary: attribution_summary(attr),
            self.html: highlight_html(tokens, scores, title),
            self.plot: attribution_bars(tokens, scores, title),
        }


@dataclass
class AttributionPanel:
    """A whole attribution tab body: help, task-specific choice widgets (given by the tab),
    method/steps/adaptive controls, 'Explain again', one or more AttributionViews and the CSV export.

    `run(result, *choices, method, steps, tolerance, progress) -> list[Attribution]` is the tab's
    call into its compute module; everything else is shared.
    """

    method: gr.Radio
    steps: gr.Slider
    adaptive: gr.Checkbox
    button: gr.Button
    views: list[AttributionView]
    export: gr.State
    words: Any = None  # whole words instead of sub-word tokens (display only: the export keeps the tokens)

    @classmethod
    def build(
        cls,
        help_text: str,
        headings: list[str] | None = None,
        button: str = "Explain again",
        plot_label: str = "Attribution per token",
    ) -> AttributionPanel:
        help_note(help_text)
        method, steps, adaptive = attribution_controls()
        words = tag(gr.Checkbox(value=False, label=WORDS_LABEL), "words")
        explain_btn = gr.Button(button)
        views = []
        for heading in headings or [""]:
            if heading:
                gr.Markdown(f"### {heading}")
            views.append(AttributionView.build(plot_label))
        return cls(method, steps, adaptive, explain_btn, views, attribution_export(), words)

    @property
    def outputs(self) -> list:
        return [c for v in self.views for c in v.outputs] + [self.export]

    def bind(
        self,
        main: Any,
        state: gr.State,
        choices: list,
        run: Callable[..., list],
        task: str,
        missing: str,
        rerun: tuple = (),
        api_name: str = "",
    ) -> None:
        """Chain `task`'s attribution after `main` (only when it succeeded) and on the button (and on
        the extra triggers `rerun`, e.g. a choice widget's `.input`), queued by `attribution_queue`;
        its endpoint `api_name` (default `<task api>_attribution`)."""
        first_view, explain_result = self._handlers(run, missing)
        inputs = [state, *choices, self.method, self.steps, self.adaptive, self.words]
        queue = attribution_queue(task)
        main.success(first_view, inputs, self.outputs, api_visibility="private", **queue).success(
            explain_result, inputs, self.outputs, api_name=api_name or api(task, "attribution"), **queue
        )
        gr.on([self.button.click, *rerun], explain_result, inputs, self.outputs, api_visibility="private", **queue)
        self.words.change(
            guarded(self._regroup), [self.export, self.words], self.outputs, api_visibility="private", queue=False
        )

    def _handlers(self, run: Callable[..., list], missing: str) -> tuple[Callable, Callable]:
        """The handlers `bind` attaches: the instant first view and the attribution asked for, both by `run`."""
        shown = self._shown

        @guarded
        def explain_result(result, *values, progress=gr.Progress()):
            if result is None:
                raise gr.Error(missing)
            *picked, method_value, steps_value, adaptive_value, words = values
            return shown(
                run(
                    result,
                    *picked,
                    method=method_value,
                    steps=int(steps_value),
                    tolerance=tolerance(adaptive_value),
                    progress=lambda frac, msg: progress(frac, desc=msg),
                ),
                words,
            )

        @guarded
        def first_view(result, *values):
            """Gradient x input (one backward pass): shown at once while integrated gradients run."""
            *picked, method_value, _, _, words = values
            if result is None or not METHODS[method_value].integrates:
                return {c: gr.skip() for c in self.outputs}
            return shown(
                run(result, *picked, method=INSTANT, steps=1, tolerance=None, progress=lambda frac, msg: None), words
            )

        return first_view, explain_result

    def _shown(self, attrs: list, words: Any = False) -> dict:
        out: dict = {self.export: attrs if len(attrs) > 1 else attrs[0]}
        for view, attr in zip(self.views, attrs):
            out.update(view.values(attr, words=bool(words)))
        return out

    def _regroup(self, attrs: Any, words: Any) -> dict:
        """Tokens <-> whole words from the attribution already shown (no new computation)."""
        if attrs is None:
            return {c: gr.skip() for c in self.outputs}
        return self._shown(attrs if isinstance(attrs, list) else [attrs], words)


def api(task: str, view: str = "") -> str:
    """The API name of a task's view: `sentiment`, `sentiment_attribution`, `sentiment_lens`."""
    return registry.get(task).api_name(view)


def attribution_queue(task: str) -> dict:
    """How a tab's attribution events are queued: with every other explanation, one at a time, or,
    for a task whose attributions gather across students (`TaskSpec.attribute_batch`), in a group of
    their own with room for a whole batch to meet (the task's lock still runs one pass at a time)."""
    from demos.runtime.gather import attributions_batch

    if attributions_batch(task):
        return dict(concurrency_id=f"{api(task, 'attribution')}_batch", concurrency_limit=gathering_room())
    return EXPLANATION_QUEUE


def answer_queue(task: str) -> dict:
    """How a tab's answer event is queued: its API name, and for a task whose answers are gathered
    into micro-batches (`TaskSpec.batch`) room for a whole batch to wait together (otherwise
    the app's default, 2 at a time, would never let more than 2 answers meet)."""
    from demos.runtime.gather import batches

    return {"api_name": api(task), **({"concurrency_limit": gathering_room()} if batches(task) else {})}


def gathering_room() -> int:
    """Events of a gathered kind (answers, attributions) let in at once: a pass running and a whole batch
    waiting for the next one, 2 x `XRAY_BATCH_SIZE`. With room for one batch only, the events still
    inside a running pass keep their places, so the next pass could take only what is left: passes
    of 4 and 4 attributions, or 1 and 7 answers, in a class of 30 (1.5 s for 4 attributions at full
    size against 2.15 s for 8)."""
    from demos.runtime.gather import batch_size

    return 2 * batch_size()
