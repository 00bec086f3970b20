"""Lessons as files: reading and checking `lessons/*.md` (Markdown with YAML front matter) and
`lessons/*.yaml`. Pure (no gradio): `ui.lessons` shows them.

A lesson is a title, an optional summary and a list of steps. Each step opens one view of one tab
with its inputs, exactly as a link does (`ui.links`: the same names, the same checks), and says
what to read there:

    ---
    title: What is attention?
    summary: One sentence, seen through the model's attention.
    steps:
      - title: Who looks at whom
        tab: sentiment
        inputs: {text: "The film was not good."}
        view: attention
        controls: {layer: 1, head: average}
        teacher: Each row is one word looking at the others...
        question: Which word does "not" look at most?
        look_for: The bright cells of the row of "not".
        predict: {kind: word}          # optional: guess first, then the view opens
    ---
    Anything below the front matter is the lesson's introduction (Markdown).

Predict kinds: `word` (which word matters most: the sentiment tab's attribution), `layer` (in
which layers the answer appears: the layer lens), `knockout` (does knocking out `controls.heads`
change the answer?) and `choice` (your own `choices`, with an optional `answer`).
A bad file gets a message naming the file and the step; the other lessons still load.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from core import registry
from ui import links

FOLDER = links.ROOT / "lessons"
MAX_FILE_BYTES = 64_000
MAX_TEXT = 4000  # characters of one teacher text, question or hint
MAX_STEPS = 30
LESSON_KEYS = {"title", "summary", "steps"}
STEP_KEYS = {"title", "tab", "view", "inputs", "model", "controls", "teacher", "question", "look_for", "predict"}
PREDICT_KEYS = {"kind", "prompt", "choices", "answer"}
BANDS = ("early layers", "middle layers", "late layers", "only the last layer")
KNOCKOUT = ("Yes: the answer changes", "No: the answer stays")
WORD_TASKS = ("sentiment",)  # where `word` compares the guess with the answer's attribution
PROMPTS = {
    "word": "Which word matters most for the model's answer?",
    "layer": "In which layers does the model's final answer first appear (and stay)?",
    "knockout": "Does knocking out {heads} change the model's answer?",
    "choice": "What do you expect?",
}


@dataclass(frozen=True)
class Predict:
    """Guess first: `choices` offered (for `word`: the words of the step's text), the prompt, and
    for `choice` the expected `answer` ('' = no single right answer)."""

    kind: str
    prompt: str
    choices: tuple[str, ...]
    answer: str = ""


@dataclass(frozen=True)
class Step:
    title: str
    link: links.Link
    teacher: str = ""
    question: str = ""
    look_for: str = ""
    predict: Predict | None = None


@dataclass(frozen=True)
class Lesson:
    id: str  # the file name without its suffix (what ?lesson= names)
    title: str
    file: str  # e.g. lessons/attention.md (for messages)
    steps: tuple[Step, ...]
    summary: str = ""
    intro: str = ""


class LessonError(ValueError):
    """A lesson file that cannot be used; the message names the file (and the step)."""


def split_front_matter(text: str, name: str) -> tuple[Any, str]:
    """(YAML data, Markdown body) of a lesson file (`.md`: front matter between '---' lines)."""
    if name.endswith((".yaml", ".yml")):
        return _yaml(text, name), ""
    match = re.match(r"\A---[ \t]*\r?\n(.*?)^---[ \t]*\r?$\n?(.*)\Z", text, re.S | re.M)
    if not match:
        raise LessonError(f"{name}: a lesson in Markdown starts with YAML front matter between two '---' lines.")
    return _yaml(match.group(1), name), match.group(2).strip()


def _yaml(text: str, name: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise LessonError(f"{name}: the YAML cannot be read{where}: {problem}.") from None


def _text(value: Any, where: str, what: str, required: bool = False) -> str:
    if value is None or value == "":
        if required:
            raise LessonError(f"{where}: the {what} is missing.")
        return ""
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise LessonError(f"{where}: the {what} should be text.")
    text = str(value).strip()
    if len(text) > MAX_TEXT:
        raise LessonError(f"{where}: the {what} is {len(text):,} characters long; at most {MAX_TEXT:,}.")
    return text


def _mapping(value: Any, where: str, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise LessonError(f"{where}: {what} should be a mapping (name: value).")
    return value


def _unknown(found: dict, allowed: set[str], where: str, what: str) -> None:
    extra = sorted(str(k) for k in found if k not in allowed)
    if extra:
        raise LessonError(
            f"{where}: unknown {what} {', '.join(map(repr, extra))}; allowed: {', '.join(sorted(allowed))}."
        )


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return "" if value is None else str(value)


def step_link(raw: dict, where: str, models: links.ModelChoices | None) -> links.Link:
    """The step's view as a checked link: every name and value as a link would carry it."""
    if not raw.get("tab"):
        raise LessonError(f"{where}: the tab is missing; tabs: {', '.join(links.tabs())}.")
    query = {"tab": raw["tab"]}
    if raw.get("view"):
        query["view"] = raw["view"]
    for part in ("inputs", "controls"):
        for name, value in _mapping(raw.get(part), where, part).items():
            if name in ("tab", "view", "model", "presenter"):
                raise LessonError(f"{where}: {name!r} goes at the step's top level, not under {part}.")
            query[str(name)] = _query_value(value)
    if raw.get("model"):
        query["model"] = str(raw["model"])
    try:
        return links.parse({k: _query_value(v) for k, v in query.items()}, models)
    except links.LinkError as exc:
        raise LessonError(f"{where}: {exc}") from None


def words_of(text: str, limit: int = 12) -> tuple[str, ...]:
    """The distinct words of a text, in order (what a `word` guess offers)."""
    found = re.findall(r"[^\W_]+(?:'[^\W_]+)?", text or "")
    return tuple(dict.fromkeys(found))[:limit]


def _predict(raw: Any, link: links.Link, where: str) -> Predict | None:
    if raw is None:
        return None
    raw = _mapping(raw, where, "predict")
    _unknown(raw, PREDICT_KEYS, where, "predict field")
    kind = raw.get("kind")
    prompt = _text(raw.get("prompt"), where, "predict prompt")
    if kind == "word":
        if link.tab not in WORD_TASKS or not words_of(link.input("text", "")):
            raise LessonError(
                f"{where}: predict kind 'word' needs the {' or '.join(WORD_TASKS)} tab with a text in its inputs."
            )
        return Predict("word", prompt or PROMPTS["word"], words_of(link.input("text")))
    if kind == "layer":
        if link.tab not in registry.KEYS or not registry.get(link.tab).lens:
            lens_tabs = ", ".join(t.key for t in registry.TASKS if t.lens)
            raise LessonError(f"{where}: predict kind 'layer' needs a tab with a layer lens ({lens_tabs}).")
        return Predict("layer", prompt or PROMPTS["layer"], BANDS)
    if kind == "knockout":
        heads = link.control("heads")
        if not heads:
            raise LessonError(
                f"{where}: predict kind 'knockout' needs the heads to knock out "
                "(view: ablate, controls: {heads: L1H0})."
            )
        return Predict("knockout", prompt or PROMPTS["knockout"].format(heads=heads), KNOCKOUT)
    if kind == "choice":
        return _choice(raw, prompt, where)
    raise LessonError(f"{where}: unknown predict kind {kind!r}; kinds: word, layer, knockout, choice.")


def _choice(raw: dict, prompt: str, where: str) -> Predict:
    choices = raw.get("choices")
    if not isinstance(choices, list) or not 2 <= len(choices) <= 8:
        raise LessonError(f"{where}: predict kind 'choice' needs a list of 2 to 8 choices.")
    texts = tuple(_text(c, where, "choice", required=True)[:120] for c in choices)
    if len(set(texts)) != len(texts):
        raise LessonError(f"{where}: the choices should all differ.")
    answer = _text(raw.get("answer"), where, "answer")
    if answer and answer not in texts:
        raise LessonError(f"{where}: the answer {answer!r} is not one of the choices.")
    return Predict("choice", prompt or PROMPTS["choice"], texts, answer)


def parse_step(raw: Any, where: str, models: links.ModelChoices | None = None) -> Step:
    raw = _mapping(raw, where, "a step")
    _unknown(raw, STEP_KEYS, where, "field")
    link = step_link(raw, where, models)
    return Step(
        title=_text(raw.get("title"), where, "title", required=True),
        link=link,
        teacher=_text(raw.get("teacher"), where, "teacher's text"),
        question=_text(raw.get("question"), where, "question"),
        look_for=_text(raw.get("look_for"), where, "look_for hint"),
        predict=_predict(raw.get("predict"), link, where),
    )


def parse_lesson(text: str, name: str, models: links.ModelChoices | None = None) -> Lesson:
    """One lesson from a file's text; `name` as shown in messages (e.g. lessons/attention.md)."""
    data, body = split_front_matter(text, name)
    data = _mapping(data, name, "the lesson")
    _unknown(data, LESSON_KEYS, name, "field")
    stem = Path(name).stem
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,60}", stem):
        raise LessonError(f"{name}: a lesson file's name uses lower-case letters, digits, '-' and '_' only.")
    steps = data.get("steps")
    if not isinstance(steps, list) or not 1 <= len(steps) <= MAX_STEPS:
        raise LessonError(f"{name}: a lesson needs a list of 1 to {MAX_STEPS} steps.")
    parsed = []
    for number, raw in enumerate(steps, start=1):
        title = raw.get("title") if isinstance(raw, dict) else None
        where = f"{name}, step {number}" + (f" ({str(title)[:60]})" if title else "")
        parsed.append(parse_step(raw, where, models))
    title = _text(data.get("title"), name, "title", required=True)
    return Lesson(stem, title, name, tuple(parsed), _text(data.get("summary"), name, "summary"), body[:MAX_TEXT])


def load_lessons(folder: Path = FOLDER, models: links.ModelChoices | None = None) -> tuple[list[Lesson], list[str]]:
    """(lessons that load, in file-name order; a message for each file that does not)."""
    lessons, problems = [], []
    files = (
        sorted(p for p in folder.glob("*") if p.suffix in (".md", ".yaml", ".yml") and p.name.lower() != "readme.md")
        if folder.is_dir()
        else []
    )
    for path in files:
        name = f"{folder.name}/{path.name}"
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                raise LessonError(f"{name}: the file is larger than {MAX_FILE_BYTES:,} bytes.")
            lessons.append(parse_lesson(path.read_text(encoding="utf-8"), name, models))
        except (LessonError, UnicodeDecodeError) as exc:
            problems.append(str(exc) if isinstance(exc, LessonError) else f"{name}: not UTF-8 text.")
    kept: dict[str, Lesson] = {}
    for lesson in lessons:
        if lesson.id in kept:
            problems.append(
                f"{lesson.file}: another lesson file is also named {lesson.id!r}; "
                f"the first one ({kept[lesson.id].file}) is used."
            )
        kept.setdefault(lesson.id, lesson)
    return list(kept.values()), problems


def band(layer: int, last: int) -> str:
    """Which of BANDS the layer `layer` of 0..`last` falls in (the last layer alone is its own band)."""
    if last <= 0 or layer >= last:
        return BANDS[3]
    fraction = layer / last
    return BANDS[0] if fraction <= 1 / 3 else BANDS[1] if fraction <= 2 / 3 else BANDS[2]


def choices_of(step: Step) -> Sequence[str]:
    return step.predict.choices if step.predict else ()
