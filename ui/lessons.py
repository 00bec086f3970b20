"""Lessons: the "Lessons" tab (the lessons of `lessons/`, a start button, the teacher's view of the
class's guesses) and the lesson panel (a sidebar on the right) that walks a student through a lesson step by
step, opening each step's view with its inputs (as a link does: `ui.share`).

A step that asks for a guess first shows its question and the answers to pick from; the view opens
when the guess is locked in, and the panel then says what the model did and how the guess compares
(`ui.reveal`). Guesses are counted per step, anonymously (`ui.guesses`); only the counts are kept,
in memory, and only a teacher with the code set by the app's owner (XRAY_TEACHER_CODE) sees them.
Which steps a student has answered is kept in that student's session state only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr
from gradio.context import Context

from ui import guesses, reveal, share
from ui.common import guarded, help_note, md_escape
from ui.lesson_files import Lesson, Step, load_lessons
from viz.lessons import guesses_figure

INTRO = """
## Lessons
A lesson walks the class through a few views, one step at a time: each step opens a tab on the
right view with its inputs and asks a question. Some steps ask you to **guess first**; the view opens
once your guess is locked in, and the lesson tells you how your guess compares with what the model did.

Pick a lesson and press **Start**. The lesson stays in a panel on the right while you scroll
through the views (the arrow at its top folds it away); *Next step* moves on. Your guesses are counted for the \
teacher anonymously (no names,
nothing but the counts, and only while the app runs).
"""
FORMAT = """
**Write your own lesson:** a Markdown file in the `lessons/` folder, with YAML front matter: a `title`
and a list of `steps`, each with a `tab`, `inputs`, the `view` to open, optional `controls` (layer, head,
words...), the teacher's text (`teacher`), a `question`, what to look for (`look_for`) and, to ask for
a guess first, `predict` (kind `word`, `layer`, `knockout` or `choice`). See `lessons/attention.md`.
Lessons are read when the app starts.
"""
MAX_WRONG_CODES = 5  # per session: then the teacher view stays shut for that session


def catalog() -> tuple[list[Lesson], list[str]]:
    """The lessons and the problems of the lesson files, read once per page build."""
    root = Context.root_block
    if getattr(root, "_xray_lessons", None) is None:
        found = load_lessons(models=share.model_choices)
        if root is not None:
            root._xray_lessons = found
        return found
    return root._xray_lessons


def outline(lesson: Lesson | None) -> str:
    """Markdown: the lesson's summary, its steps, and the link that opens it."""
    if lesson is None:
        return "No lesson to show."
    lines = [f"### {lesson.title}", lesson.summary, lesson.intro, "", "**Steps**"]
    for i, step in enumerate(lesson.steps, start=1):
        guess = " · *guess first*" if step.predict else ""
        lines.append(f"{i}. **{step.title}** ({step.link.tab}{', ' + step.link.view if step.link.view else ''}){guess}")
    lines += ["", f"Link to this lesson: `?lesson={lesson.id}` (add it to the app's address)."]
    return "\n".join(line for line in lines if line is not None)


@dataclass
class LessonsTab:
    """The tab: the list, start, outline, file problems, and the teacher's view."""

    choice: gr.Dropdown
    start: gr.Button
    outline: gr.Markdown
    code: gr.Textbox
    show: gr.Button
    counts: gr.Markdown
    plot: gr.Plot
    wrong: gr.State


def build() -> None:
    """Build the Lessons tab inside the current `gr.Tab` (its events are bound by `bind`)."""
    lessons, problems = catalog()
    gr.Markdown(INTRO)
    if problems:
        gr.Markdown(
            "**Some lesson files could not be used:**\n\n" + "\n".join(f"- {md_escape(p)}" for p in problems),
            elem_classes=["xray-lesson-problems"],
        )
    with gr.Row():
        choice = gr.Dropdown(
            [(lesson.title, lesson.id) for lesson in lessons],
            value=lessons[0].id if lessons else None,
            label="Lesson",
            scale=3,
        )
        start = gr.Button("Start this lesson", variant="primary", scale=1, interactive=bool(lessons))
    shown = gr.Markdown(outline(lessons[0] if lessons else None))
    help_note(FORMAT)
    with gr.Accordion("Teacher view: the class's guesses", open=False):
        if not guesses.teacher_code():
            gr.Markdown(guesses.TEACHER_OFF)
        with gr.Row():
            code = gr.Textbox(
                label="Teacher code", type="password", max_lines=1, max_length=guesses.MAX_CODE_CHARS, scale=3
            )
            show = gr.Button("Show the class's guesses", scale=1)
        counts = gr.Markdown()
        plot = gr.Plot(label="The class's guesses", visible=False)
    Context.root_block._xray_lessons_tab = LessonsTab(choice, start, shown, code, show, counts, plot, gr.State(0))


@dataclass
class LessonBar:
    """The panel that walks through the lesson a student started (hidden until then)."""

    group: gr.Sidebar
    head: gr.Markdown
    teacher: gr.Markdown
    question: gr.Markdown
    guess: gr.Radio
    lock: gr.Button
    reveal: gr.Markdown
    back: gr.Button
    next: gr.Button
    leave: gr.Button
    state: gr.State

    @classmethod
    def build(cls) -> LessonBar:
        """A sidebar on the right: it stays in sight beside the view while the page scrolls."""
        with gr.Sidebar(
            label="Lesson", open=False, visible=False, width=440, position="right", elem_classes=["xray-lesson"]
        ) as group:
            head = gr.Markdown(elem_classes=["xray-lesson-head"])
            teacher = gr.Markdown()
            question = gr.Markdown(elem_classes=["xray-lesson-question"])
            guess = gr.Radio([], label="Your guess", visible=False)
            lock = gr.Button("Lock in my guess and open the view", variant="primary", visible=False)
            answer = gr.Markdown(elem_classes=["xray-lesson-reveal"])
            with gr.Row():
                back = gr.Button("← Previous", size="sm", min_width=90)
                nxt = gr.Button("Next step →", size="sm", variant="primary", min_width=110)
                leave = gr.Button("Leave", size="sm", min_width=70)
        return cls(group, head, teacher, question, guess, lock, answer, back, nxt, leave, gr.State({}))

    @property
    def outputs(self) -> list:
        return [
            self.group,
            self.head,
            self.teacher,
            self.question,
            self.guess,
            self.lock,
            self.reveal,
            self.back,
            self.next,
            self.state,
        ]


def _lesson(lesson_id: str) -> Lesson:
    found = {lesson.id: lesson for lesson in catalog()[0]}
    if lesson_id not in found:
        raise gr.Error("Pick one of the lessons first.")
    return found[lesson_id]


def _panel(bar: LessonBar, lesson: Lesson, index: int, st: dict, where: str) -> dict:
    """The panel's texts for step `index`; the guess widgets when the step asks for a guess not made yet."""
    step = lesson.steps[index]
    guessed = st.get("guesses", {}).get(index)
    waiting = step.predict is not None and guessed is None
    last = index == len(lesson.steps) - 1
    question = f"**Question:** {step.question}" if step.question else ""
    if waiting:
        question += f"\n\n**Guess first:** {step.predict.prompt} The view opens when you lock in your guess."
    else:
        question += f"\n\n*The view, open on the left:* **{md_escape(where)}**"
        question += f"\n\n*Look for:* {step.look_for}" if step.look_for else ""
    return {
        bar.group: gr.Sidebar(visible=True, open=True),
        bar.head: f"**Lesson: {lesson.title}** · step {index + 1} of {len(lesson.steps)} · **{step.title}**",
        bar.teacher: step.teacher,
        bar.question: question,
        bar.guess: gr.Radio(
            list(step.predict.choices) if step.predict else [],
            value=guessed,
            visible=step.predict is not None,
            interactive=waiting,
            label="Your guess" if waiting else "Your guess (locked in)",
        ),
        bar.lock: gr.Button(visible=waiting),
        bar.reveal: st.get("reveals", {}).get(index, "") if not waiting else "",
        bar.back: gr.Button(interactive=index > 0),
        bar.next: gr.Button("Finish the lesson" if last else "Next step →"),
        bar.state: {**st, "lesson": lesson.id, "step": index},
    }


def show_step(bar: LessonBar, wiring: share.Wiring, lesson: Lesson, index: int, st: dict) -> dict:
    """The panel for step `index`, and the step's view opened (unless it still waits for a guess)."""
    index = max(0, min(index, len(lesson.steps) - 1))
    out = _panel(bar, lesson, index, st, wiring.where(lesson.steps[index].link))
    step = lesson.steps[index]
    if step.predict is None or index in st.get("guesses", {}):
        out.update(wiring.updates(step.link))
    return out


def _fresh(st: Any, lesson_id: str) -> dict:
    """The session's lesson state, kept when it is the same lesson (its guesses stay locked in)."""
    st = st if isinstance(st, dict) else {}
    return st if st.get("lesson") == lesson_id else {"lesson": lesson_id, "step": 0, "guesses": {}, "reveals": {}}


def open_link(bar: LessonBar, wiring: share.Wiring, link: Any, st: Any) -> dict:
    """A lesson link (?lesson=...&lesson_step=...): the lesson opened at that step (counted from 1)."""
    lesson = _lesson(link.lesson)
    return show_step(bar, wiring, lesson, link.lesson_step - 1, _fresh(st, lesson.id))


def _lock(bar: LessonBar, wiring: share.Wiring, st: dict, guess: Any) -> dict:
    """Count the guess (once per step and session), then open the view."""
    lesson, index = _lesson(st.get("lesson", "")), int(st.get("step", 0))
    step = lesson.steps[index]
    if step.predict is None or guess not in step.predict.choices:
        raise gr.Error("Pick one of the answers first.")
    if index not in st.get("guesses", {}):
        guesses.BOOK.record(lesson.id, index, guess, step.predict.choices)
    st = {**st, "guesses": {**st.get("guesses", {}), index: guess}}
    out = show_step(bar, wiring, lesson, index, st)
    out[bar.reveal] = f"Your guess: **{md_escape(str(guess))}**. Working out what the model did…"
    return out


def _reveal(bar: LessonBar, st: dict) -> dict:
    """What the model did and how the guess compares (computed on the backend: may take seconds)."""
    lesson, index = _lesson(st.get("lesson", "")), int(st.get("step", 0))
    step: Step = lesson.steps[index]
    guess = st.get("guesses", {}).get(index)
    if step.predict is None or guess is None:
        return {}
    text = f"Your guess: **{md_escape(str(guess))}**. " + reveal.compare(step, str(guess))
    return {bar.reveal: text, bar.state: {**st, "reveals": {**st.get("reveals", {}), index: text}}}


def _counts(tab: LessonsTab, lesson_id: str, code: str, wrong: int) -> dict:
    """The teacher's view: every guess step of the lesson with its counts (behind the code)."""
    if not guesses.teacher_code():
        return {tab.counts: guesses.TEACHER_OFF, tab.plot: gr.Plot(visible=False)}
    if int(wrong or 0) >= MAX_WRONG_CODES:
        return {
            tab.counts: "Too many wrong codes in this session: reload the page to try again.",
            tab.plot: gr.Plot(visible=False),
        }
    if not guesses.code_ok(code):
        return {
            tab.counts: "That is not the teacher code.",
            tab.wrong: int(wrong or 0) + 1,
            tab.plot: gr.Plot(visible=False),
        }
    lesson, counted = _lesson(lesson_id), guesses.BOOK.counts(lesson_id)
    rows = [
        (f"Step {i + 1}: {s.title}", s.predict.choices, counted.get(i, {}))
        for i, s in enumerate(lesson.steps)
        if s.predict
    ]
    if not rows:
        return {tab.counts: "This lesson asks for no guesses.", tab.plot: gr.Plot(visible=False)}
    total = sum(sum(c.values()) for *_, c in rows)
    line = f"**{lesson.title}**: {total} guesses so far (counts only; they vanish when the app stops)."
    return {
        tab.counts: line,
        tab.wrong: 0,
        tab.plot: gr.Plot(guesses_figure(rows, f"The class's guesses · {lesson.title}"), visible=True),
    }


def _step_by(bar: LessonBar, wiring: share.Wiring, tab: LessonsTab, delta: int):
    """The handler of *Previous* (`delta` -1) or *Next step* (+1); past the last step the lesson ends."""

    @guarded
    def move(st):
        if not st:
            return {bar.group: gr.Sidebar(visible=False)}
        lesson = _lesson(st.get("lesson", ""))
        if delta > 0 and int(st.get("step", 0)) >= len(lesson.steps) - 1:
            done = f"**You finished the lesson “{lesson.title}”.** Pick another one, or go back to any step.\n\n"
            return {
                bar.group: gr.Sidebar(visible=False),
                bar.state: {},
                tab.outline: done + outline(lesson),
                wiring.top: gr.Tabs(selected="lessons"),
            }
        return show_step(bar, wiring, lesson, int(st.get("step", 0)) + delta, st)

    return move


def bind(bar: LessonBar, wiring: share.Wiring) -> None:
    """The events of the Lessons tab and of the lesson panel (once the whole page is built)."""
    tab: LessonsTab = Context.root_block._xray_lessons_tab
    wiring.lesson_names = [lesson.id for lesson in catalog()[0]]
    outputs = bar.outputs + wiring.outputs
    # queued: a refusal shows its message; no spinner on the hundreds of components a step may set (Wiring.quiet: a
    # step's own model run shows its progress where it runs)
    quick = dict(concurrency_limit=None, api_visibility="private", **wiring.quiet)

    tab.choice.change(
        lambda lesson_id: outline(_lesson(lesson_id)) if lesson_id else "", tab.choice, tab.outline, **quick
    )
    tab.start.click(
        guarded(lambda lesson_id, st: show_step(bar, wiring, _lesson(lesson_id), 0, _fresh(st, lesson_id))),
        [tab.choice, bar.state],
        outputs,
        **quick,
    )
    bar.back.click(_step_by(bar, wiring, tab, -1), bar.state, outputs, **quick)
    bar.next.click(_step_by(bar, wiring, tab, 1), bar.state, outputs + [tab.outline], **quick)
    bar.leave.click(
        lambda: {bar.group: gr.Sidebar(visible=False), bar.state: {}}, None, [bar.group, bar.state], **quick
    )
    bar.lock.click(
        guarded(lambda st, guess: _lock(bar, wiring, st, guess)), [bar.state, bar.guess], outputs, **quick
    ).success(
        guarded(lambda st: _reveal(bar, st)),
        bar.state,
        [bar.reveal, bar.state],
        api_visibility="private",
        concurrency_id="explanations",
        concurrency_limit=1,
    )
    tab.show.click(
        guarded(lambda lesson_id, code, wrong: _counts(tab, lesson_id, code, wrong)),
        [tab.choice, tab.code, tab.wrong],
        [tab.counts, tab.plot, tab.wrong],
        **quick,
    )
    share.bind_load(wiring, bar.state, bar.outputs, lambda link, st: open_link(bar, wiring, link, st))
