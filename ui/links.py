"""Links to a view: what a link may carry, checked like any other input; pure (no gradio, no torch).

A link reopens the app on one tab, one inner view, with the same inputs, model and controls, and
runs the answer again. It carries no result: only short query parameters, e.g.

    ?tab=sentiment&text=The%20film%20was%20not%20good.&view=lens
    ?tab=generation&text=The%20capital%20of%20France%20is&view=attention&layer=2&head=average&words=1
    ?lesson=attention&lesson_step=2&presenter=1

`parse(query)` turns query parameters into a `Link` or raises `LinkError` (a ValueError: the tab
shows its message), `encode(link)` gives the query string back. The tab modules mark the
components a link fills with `tag(component, name)`; `ui.share` finds them and applies a link.
"""
from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from core import explainers, registry

TAG = "xray_link"  # the attribute `tag` sets on a component: which link parameter it holds
GROUP = "inside"  # the view key of the "Inside the model" tab (every explainer view sits in it)
LINK_MAX_CHARS = 6000  # a whole link, encoded: servers refuse request lines much longer than this
PAGES = ("guide", "lessons")  # tabs that are no task
ROOT = Path(__file__).resolve().parent.parent


class LinkError(ValueError):
    """A link (or a lesson step) that cannot be opened; the message says why and what is allowed."""


def tag(component: Any, name: str) -> Any:
    """Mark `component` as holding the link parameter `name` (an input, the model, a control)."""
    setattr(component, TAG, name)
    return component


def tag_of(component: Any) -> str:
    return getattr(component, TAG, "")


@dataclass(frozen=True)
class Field:
    """One input of a tab in a link: `text` (at most `limit` characters, the limit of its box),
    `int` (between `low` and `high`) or `example` (the file name of one of the app's examples:
    a link carries no file)."""

    name: str
    kind: str = "text"
    limit: int = 5000
    low: int = 0
    high: int = 0


def _max_new() -> int:
    return int(registry.get("generation").constant("MAX_NEW_TOKENS"))


INPUTS: dict[str, tuple[Field, ...]] = {
    "generation": (Field("text"), Field("tokens", "int", low=1, high=_max_new())),
    "sentiment": (Field("text"),),
    "qa": (Field("question", limit=2000), Field("context", limit=20000)),
    "translation": (Field("text"),),
    "image": (Field("image", "example"),),
    "asr": (Field("audio", "example"),),
    "clip": (Field("image", "example"), Field("texts", limit=10000)),
    "explorer": (Field("text"),),
}

# Inner tab title -> its short key in links (the same key on every task that has the view).
VIEW_KEYS: dict[str, str] = {
    "Next-token choices": "choices",
    "Attributions": "attributions",
    "Attention": "attention",
    "Embeddings": "embeddings",
    "Compare two prompts": "compare",
    "Compare two texts": "compare",
    "Start & end": "start-end",
    "Alignment (cross-attention)": "alignment",
    "Encoder attention": "encoder-attention",
    "Decoder attention": "decoder-attention",
    "Attention rollout": "rollout",
    "Class-token attention": "class-attention",
    "Pixel attribution": "pixels",
    "Patch embeddings": "embeddings",
    "Spectrogram": "spectrogram",
    "Alignment": "alignment",
    "Words": "words",
    "Token probabilities": "probabilities",
    "Similarity matrix": "similarity",
    "Where the model looks": "relevance",
    "Which words matter": "attributions",
    "Shared embedding space": "embeddings",
    "Sentence similarity": "similarity",
    "Token embeddings": "embeddings",
    "Inside the model": GROUP,
}

# Each task's own inner views (the explainer views are added from core.explainers).
TASK_VIEWS: dict[str, tuple[str, ...]] = {
    "generation": ("choices", "attributions", "attention", "embeddings", "compare"),
    "sentiment": ("attributions", "attention", "embeddings", "compare"),
    "qa": ("start-end", "attributions", "attention", "embeddings"),
    "translation": ("alignment", "attributions", "encoder-attention", "decoder-attention", "embeddings"),
    "image": ("rollout", "class-attention", "pixels", "embeddings"),
    "asr": ("spectrogram", "alignment", "words", "probabilities", "encoder-attention"),
    "clip": ("similarity", "relevance", "attributions", "embeddings"),
    "explorer": ("similarity", "attention", "embeddings"),
}
# Views with layer and head controls, and those that can sum sub-word tokens into whole words.
ATTENTION_VIEWS = frozenset({"attention", "alignment", "encoder-attention", "decoder-attention", "class-attention"})
WORD_VIEWS: dict[str, frozenset[str]] = {
    "generation": frozenset({"attention", "attributions"}),
    "sentiment": frozenset({"attention", "attributions"}),
    "qa": frozenset({"attention", "attributions"}),
    "translation": frozenset({"alignment", "encoder-attention", "decoder-attention", "attributions"}),
    "clip": frozenset({"attributions"}),
    "explorer": frozenset({"attention"}),
}


@dataclass(frozen=True)
class Control:
    """A control a link may set: kind 'int' (low..high), 'float', 'str' (at most `limit` characters),
    'bool', 'head' (a number or 'average') or one of `choices`."""

    kind: str
    low: int = 0
    high: int = 9999
    limit: int = 200
    choices: tuple[str, ...] = ()


CONTROLS: dict[str, Control] = {
    "layer": Control("int", 0, 999),
    "head": Control("head", 0, 999),
    "words": Control("bool"),
    "query": Control("int", -1, 99999),
    "kind": Control("str", limit=40),
    "heads": Control("str"),
    "target": Control("str"),
    "contrast": Control("str"),
    "method": Control("choice", choices=tuple(explainers.METHODS)),
    "steps": Control("int", 4, 256),
    "step": Control("int", 0, 999),
    "token": Control("str", limit=100),
}
# Explainer parameters that no link sets (set by the app, or, like the lens's window `start`, chosen on the
# page after the answer: a link opens the lens at the answer's part).
_NOT_CONTROLS = {"model_id", "item", "top_k", "points", "seed", "progress", "start"}


def tabs() -> tuple[str, ...]:
    return ("guide", *registry.KEYS, "lessons")


def views(tab: str) -> tuple[str, ...]:
    """Every view key of `tab`: its own inner views, then 'inside' and the explainer names."""
    if tab not in registry.KEYS:
        return ()
    named = tuple(e.name for e in explainers.for_task(tab))
    return TASK_VIEWS.get(tab, ()) + ((GROUP, *named) if named else ())


def controls(tab: str, view: str) -> dict[str, Control]:
    """The controls a link may set on `view` of `tab`."""
    out: dict[str, Control] = {}
    if view in ATTENTION_VIEWS and view in TASK_VIEWS.get(tab, ()):
        out.update(layer=CONTROLS["layer"], head=CONTROLS["head"])
    if view in WORD_VIEWS.get(tab, ()):
        out["words"] = CONTROLS["words"]
    spec = next((e for e in explainers.for_task(tab) if e.name == view), None) if tab in registry.KEYS else None
    for param in spec.params if spec else ():
        if param.name in _NOT_CONTROLS:
            continue
        out[param.name] = CONTROLS.get(param.name) or Control(_kind(param.type), -9999)
    if spec and spec.name == "attention_steps":
        out["kind"] = Control("choice", choices=registry.get(tab).attention_kinds)
    return out


def _kind(annotation: str) -> str:
    """The control kind of an explainer parameter from its declared type ('int | None' -> int)."""
    return "int" if "int" in annotation else "float" if "float" in annotation else "str"


def examples(kind: str) -> dict[str, str]:
    """File name -> absolute path of the app's example images or audio clips (what a link may name)."""
    folder = ROOT / "assets" / ("images" if kind == "image" else "audio")
    suffixes = {".png", ".jpg", ".jpeg", ".webp", ".gif"} if kind == "image" else {".wav", ".flac", ".ogg", ".mp3"}
    return {p.name: str(p) for p in sorted(folder.glob("*")) if p.suffix.lower() in suffixes} if folder.is_dir() else {}


@dataclass(frozen=True)
class Link:
    """A validated link. inputs / controls: (name, value) pairs in a fixed order; an example input
    holds the example's file name (`path(name)` gives the file)."""

    tab: str = ""
    view: str = ""
    inputs: tuple[tuple[str, Any], ...] = ()
    model: str = ""  # the model's allow-listed id ('' = the tab's default)
    controls: tuple[tuple[str, Any], ...] = ()
    presenter: bool | None = None
    lesson: str = ""
    lesson_step: int = 0
    shown_model: str = field(default="", compare=False)  # the model as the link names it

    def input(self, name: str, default: Any = None) -> Any:
        return dict(self.inputs).get(name, default)

    def control(self, name: str, default: Any = None) -> Any:
        return dict(self.controls).get(name, default)

    @property
    def empty(self) -> bool:
        return not (self.tab or self.lesson or self.presenter is not None)


ModelChoices = Callable[[str], Sequence[tuple[str, str]]]  # task -> [(shown name, id)]
LESSON_PARAMS = ("lesson", "lesson_step", "presenter")


def parse(query: Mapping[str, Any], models: ModelChoices | None = None, lessons: Sequence[str] | None = None) -> Link:
    """A `Link` from query parameters, or LinkError saying what is wrong (an unknown tab, view,
    model or parameter, a text longer than its box, a number out of range)."""
    query = {str(k): "" if v is None else str(v) for k, v in query.items()}
    if not query:
        return Link()
    if sum(len(k) + len(v) for k, v in query.items()) > LINK_MAX_CHARS:
        raise LinkError(
            f"This link is too long (over {LINK_MAX_CHARS:,} characters); a link carries at most {LINK_MAX_CHARS:,}."
        )
    presenter = _flag("presenter", query.pop("presenter")) if "presenter" in query else None
    if "lesson" in query or "lesson_step" in query:
        return _lesson_link(query, presenter, lessons)
    tab = query.pop("tab", "")
    if not tab:
        if query:
            raise LinkError(f"This link has no tab; it should start with ?tab= and one of: {', '.join(tabs())}.")
        return Link(presenter=presenter)
    if tab not in tabs():
        raise LinkError(f"This link names an unknown tab {_shown(tab)}; the tabs are: {', '.join(tabs())}.")
    view = query.pop("view", "")
    if view and view not in views(tab):
        known = ", ".join(views(tab)) or "none (this tab has no inner views)"
        raise LinkError(f"This link names an unknown view {_shown(view)} of the {tab} tab; its views are: {known}.")
    given = {
        name: query.pop(name)
        for name in [f.name for f in INPUTS.get(tab, ())] + list(controls(tab, view))
        if name in query
    }
    given = {name: value for name, value in given.items() if value != ""}  # an empty part is an absent one
    inputs = tuple((f.name, _input(f, given[f.name])) for f in INPUTS.get(tab, ()) if f.name in given)
    model, shown_model = _model(tab, query.pop("model", ""), models)
    allowed = controls(tab, view)
    picked = tuple((name, _control(name, allowed[name], given[name])) for name in allowed if name in given)
    if query:
        raise LinkError(_unknown_parts(tab, view, query, allowed))
    return Link(tab, view, inputs, model, picked, presenter, shown_model=shown_model)


def _lesson_link(query: dict, presenter: bool | None, lessons: Sequence[str] | None) -> Link:
    extra = sorted(set(query) - set(LESSON_PARAMS))
    if extra:
        raise LinkError(
            f"A lesson link carries only {', '.join(LESSON_PARAMS)}; this one also has {', '.join(map(_shown, extra))}."
        )
    lesson = query.get("lesson", "")
    if not lesson:
        raise LinkError("This link has a lesson step but no lesson (?lesson=...).")
    if lessons is not None and lesson not in lessons:
        known = ", ".join(lessons) or "none"
        raise LinkError(f"This link names an unknown lesson {_shown(lesson)}; the lessons are: {known}.")
    step = _int("lesson_step", query.get("lesson_step") or "1", 1, 999)
    return Link(presenter=presenter, lesson=lesson, lesson_step=step)


def _shown(value: str) -> str:
    """A value of the link quoted for a message, cut short and HTML-escaped (Gradio renders an error's
    message as sanitised HTML: a crafted link's markup stays text)."""
    return html.escape(repr(value if len(value) <= 40 else value[:40] + "…"), quote=False)


def _unknown_parts(tab: str, view: str, rest: Mapping[str, str], allowed: Mapping[str, Control]) -> str:
    may = ["tab", "view", *(f.name for f in INPUTS.get(tab, ())), "model", *allowed, "presenter"]
    where = f"the {view} view of the {tab} tab" if view else f"the {tab} tab"
    return (
        f"This link has parts {', '.join(map(_shown, sorted(rest)))} that {where} does not take; "
        f"it takes: {', '.join(may)}."
    )


def _flag(name: str, value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off", ""):
        return False
    raise LinkError(f"The link's {name} should be 1 or 0, not {_shown(value)}.")


def _int(name: str, value: str, low: int, high: int) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise LinkError(f"The link's {name} should be a whole number, not {_shown(value)}.") from None
    if not low <= number <= high:
        raise LinkError(f"The link's {name} is {number}; it should be between {low} and {high}.")
    return number


def _input(spec: Field, value: str) -> Any:
    if spec.kind == "int":
        return _int(spec.name, value, spec.low, spec.high)
    if spec.kind == "example":
        known = examples(spec.name if spec.name == "image" else "audio")
        if value not in known:
            raise LinkError(
                f"A link can only name one of the app's example files as its {spec.name} "
                f"({', '.join(known) or 'none'}), not {_shown(value)}."
            )
        return value
    if len(value) > spec.limit:
        raise LinkError(
            f"The {spec.name} in this link is {len(value):,} characters long; "
            f"the limit for this box is {spec.limit:,} characters."
        )
    return value


def _model(tab: str, value: str, models: ModelChoices | None) -> tuple[str, str]:
    """(allow-listed id, name as shown) of the link's model; ('', '') for the tab's default."""
    if not value:
        return "", ""
    if tab not in registry.KEYS:
        raise LinkError(f"The {tab} tab has no model to choose.")
    if models is None:
        return value, value
    named = list(models(tab))
    for shown, model_id in named:
        if value == shown or (value == model_id and not Path(model_id).is_absolute()):  # never a server path
            return model_id, shown
    allowed = ", ".join(shown for shown, _ in named)
    raise LinkError(f"That model is not allowed for the {tab} task; choose one of: {allowed}.")


def _control(name: str, spec: Control, value: str) -> Any:
    if spec.kind == "bool":
        return _flag(name, value)
    if spec.kind == "int":
        return _int(name, value, spec.low, spec.high)
    if spec.kind == "float":
        try:
            return float(value)
        except ValueError:
            raise LinkError(f"The link's {name} should be a number, not {_shown(value)}.") from None
    if spec.kind == "head":
        return "average" if value.strip().lower() in ("average", "mean", "") else _int(name, value, spec.low, spec.high)
    if spec.kind == "choice" and value not in spec.choices:
        raise LinkError(f"The link's {name} should be one of {', '.join(spec.choices)}, not {_shown(value)}.")
    if len(value) > spec.limit:
        raise LinkError(f"The link's {name} is {len(value):,} characters long; at most {spec.limit:,}.")
    return value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def query(link: Link) -> dict[str, str]:
    """The link's query parameters, in a fixed order (shortest form: defaults left out)."""
    out: dict[str, str] = {}
    if link.lesson:
        out["lesson"] = link.lesson
        if link.lesson_step > 1:
            out["lesson_step"] = str(link.lesson_step)
    if link.tab:
        out["tab"] = link.tab
    if link.view:
        out["view"] = link.view
    out.update((name, _text(value)) for name, value in link.inputs)
    if link.model:
        out["model"] = link.shown_model or link.model
    out.update((name, _text(value)) for name, value in link.controls)
    if link.presenter:
        out["presenter"] = "1"
    return out


def encode(link: Link) -> str:
    """'?tab=...&...' ('' for an empty link); LinkError when it would exceed LINK_MAX_CHARS."""
    params = query(link)
    if not params:
        return ""
    text = "?" + urlencode(params, quote_via=quote, safe="")
    if len(text) > LINK_MAX_CHARS:
        raise LinkError(
            f"The inputs of this view are too long for a link ({len(text):,} characters; a link holds at most "
            f"{LINK_MAX_CHARS:,}). Shorten the text, or share it another way."
        )
    return text
