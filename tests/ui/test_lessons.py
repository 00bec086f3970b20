"""Lessons as files (ui.lesson_files), the class's guesses (ui.guesses) and the reveal's comparisons
(ui.reveal): the shipped lessons load, bad files get messages naming the file and the step,
guesses are counts only and bounded, the teacher's code guards them."""
from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest

from core import explainers
from core.lens_types import HeadLens, LensGrid
from ui import guesses, lesson_files, reveal
from ui.lesson_files import BANDS, KNOCKOUT, LessonError, load_lessons, parse_lesson

GOOD_STEP = """
  - title: One step
    tab: sentiment
    inputs: {text: "The film was not good."}
    view: attention
"""


def lesson_text(steps: str = GOOD_STEP, head: str = "title: A lesson\n") -> str:
    return f"---\n{head}steps:{steps}---\nIntro text.\n"


def test_the_shipped_lessons_load():
    lessons, problems = load_lessons()
    assert problems == []
    ids = {lesson.id: lesson for lesson in lessons}
    assert {"attention", "decide", "parts"} <= set(ids)
    assert ids["attention"].title == "What is attention?"
    assert ids["decide"].title == "When does the model decide?"
    assert ids["parts"].title == "Which part matters?"
    kinds = {s.predict.kind for lesson in lessons for s in lesson.steps if s.predict}
    assert {"word", "layer", "knockout", "choice"} <= kinds
    views = {s.link.view for s in ids["attention"].steps}
    assert {"attention", "attention_steps"} <= views  # the attention views and step by step
    assert {s.link.view for s in ids["decide"].steps} == {"lens"}
    assert {"asr", "generation"} <= {s.link.tab for s in ids["decide"].steps}  # Whisper tiny.en ships offline
    parts = {s.link.view for s in ids["parts"].steps}
    assert {"attributions", "ablate", "faithfulness"} <= parts
    if any(e.name == "patch" for e in explainers.EXPLAINERS):  # patching, where the app has it
        assert "patch" in parts


def test_markdown_and_yaml_lessons(tmp_path):
    (tmp_path / "one.md").write_text(lesson_text())
    (tmp_path / "two.yaml").write_text("title: Two\nsteps:" + GOOD_STEP)
    lessons, problems = load_lessons(tmp_path)
    assert problems == [] and [lesson.id for lesson in lessons] == ["one", "two"]
    assert lessons[0].intro == "Intro text."
    step = lessons[0].steps[0]
    assert (step.link.tab, step.link.view, step.link.input("text")) == ("sentiment", "attention", "The film was not good.")


@pytest.mark.parametrize(("steps", "words"), [
    (GOOD_STEP.replace("tab: sentiment", "tab: poetry"), ["step 1 (One step)", "unknown tab 'poetry'"]),
    (GOOD_STEP.replace("view: attention", "view: xray"), ["step 1 (One step)", "unknown view 'xray'"]),
    (GOOD_STEP + "    controls: {colour: red}\n", ["step 1", "'colour'"]),
    (GOOD_STEP + "    controls: {layer: lots}\n", ["step 1", "layer should be a whole number"]),
    (GOOD_STEP + "    colour: red\n", ["step 1", "unknown field 'colour'"]),
    (GOOD_STEP + "    predict: {kind: telepathy}\n", ["step 1", "unknown predict kind 'telepathy'"]),
    (GOOD_STEP + "    predict: {kind: knockout}\n", ["step 1", "needs the heads"]),
    (GOOD_STEP + "    predict: {kind: choice, choices: [only one]}\n", ["step 1", "2 to 8 choices"]),
    (GOOD_STEP + "    predict: {kind: choice, choices: [a, b], answer: c}\n", ["step 1", "answer 'c' is not one of"]),
    (GOOD_STEP.replace("tab: sentiment", "tab: explorer") + "    predict: {kind: layer}\n", ["step 1", "layer lens"]),
    (GOOD_STEP + GOOD_STEP.replace("title: One step", "title: Second") + "    old: 1\n", ["step 2 (Second)", "unknown field 'old'"]),
    (GOOD_STEP.replace("title: One step\n    ", ""), ["step 1", "title is missing"]),
    (GOOD_STEP.replace("{text: \"The film was not good.\"}", "{text: " + "x" * 5001 + "}"), ["step 1", "limit for this box is 5,000"]),
    (" []\n", ["1 to 30 steps"]),
])
def test_bad_lessons_name_the_file_and_the_step(tmp_path, steps, words):
    (tmp_path / "bad.md").write_text(lesson_text(steps))
    (tmp_path / "good.md").write_text(lesson_text())
    lessons, problems = load_lessons(tmp_path)
    assert [lesson.id for lesson in lessons] == ["good"]  # the other lessons still load
    assert len(problems) == 1 and problems[0].startswith(f"{tmp_path.name}/bad.md")
    for word in words:
        assert word in problems[0]


@pytest.mark.parametrize(("text", "words"), [
    ("no front matter at all", ["starts with YAML front matter"]),
    ("---\ntitle: [unclosed\n---\n", ["YAML cannot be read", "line"]),
    ("---\n- a list\n---\n", ["should be a mapping"]),
    (lesson_text(head="title: A\ncolour: red\n"), ["unknown field 'colour'"]),
    (lesson_text(head=""), ["title is missing"]),
])
def test_bad_files(text, words):
    with pytest.raises(LessonError) as info:
        parse_lesson(text, "lessons/x.md")
    assert str(info.value).startswith("lessons/x.md")
    for word in words:
        assert word in str(info.value)


def test_a_bad_file_name_and_a_duplicate(tmp_path):
    (tmp_path / "Bad Name.md").write_text(lesson_text())
    (tmp_path / "twin.md").write_text(lesson_text())
    (tmp_path / "twin.yaml").write_text("title: Twin\nsteps:" + GOOD_STEP)
    lessons, problems = load_lessons(tmp_path)
    assert [lesson.id for lesson in lessons] == ["twin"]
    assert any("Bad Name.md" in p and "lower-case" in p for p in problems)
    assert any("twin.yaml" in p and "also named 'twin'" in p for p in problems)


def test_predict_kinds_offer_their_choices():
    lesson = parse_lesson(lesson_text(GOOD_STEP + "    predict: {kind: word}\n"), "lessons/w.md")
    assert lesson.steps[0].predict.choices == ("The", "film", "was", "not", "good")
    lens = GOOD_STEP.replace("view: attention", "view: lens") + "    predict: {kind: layer}\n"
    assert parse_lesson(lesson_text(lens), "lessons/l.md").steps[0].predict.choices == BANDS
    knock = GOOD_STEP.replace("view: attention", "view: ablate\n    controls: {heads: L1H0}") + "    predict: {kind: knockout}\n"
    predict = parse_lesson(lesson_text(knock), "lessons/k.md").steps[0].predict
    assert predict.choices == KNOCKOUT and "L1H0" in predict.prompt


def test_layer_bands():
    assert [lesson_files.band(layer, 6) for layer in range(7)] == [BANDS[0], BANDS[0], BANDS[0], BANDS[1], BANDS[1], BANDS[2], BANDS[3]]
    assert lesson_files.band(0, 0) == BANDS[3]


# ---- the class's guesses --------------------------------------------------------------------------


def test_guesses_are_counts_only():
    book = guesses.GuessBook()
    offered = ("yes", "no")
    for choice in ("yes", "yes", "no"):
        assert book.record("attention", 1, choice, offered)
    assert book.counts("attention") == {1: {"yes": 2, "no": 1}}
    assert book.counts("other") == {}
    assert set(vars(book)) == {"max_steps", "max_choices", "max_count", "_counts", "_lock"}  # nothing else is kept
    with pytest.raises(ValueError, match="offered"):
        book.record("attention", 1, "my name is Ada", offered)  # no free text


def test_the_book_is_bounded_and_thread_safe():
    book = guesses.GuessBook(max_steps=3, max_count=5)
    assert all(book.record("l", step, "a", ("a", "b")) for step in range(3))
    assert not book.record("l", 99, "a", ("a", "b"))  # a step beyond the bound is not counted
    assert len(book) == 3
    threads = [threading.Thread(target=lambda: [book.record("l", 0, "b", ("a", "b")) for _ in range(50)]) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert book.counts("l")[0]["b"] == 5  # capped


def test_the_teacher_code():
    assert not guesses.code_ok("anything", {})  # no code set: the teacher view is off
    assert guesses.teacher_code({}) == "" and "XRAY_TEACHER_CODE" in guesses.TEACHER_OFF
    env = {"XRAY_TEACHER_CODE": " owl-42 "}
    assert guesses.code_ok("owl-42", env) and guesses.code_ok(" owl-42\n", env)
    assert not guesses.code_ok("owl-43", env) and not guesses.code_ok("", env) and not guesses.code_ok(None, env)
    assert not guesses.code_ok("x" * 10_000, env)


# ---- reveal: how a guess compares --------------------------------------------------------------------


def test_word_comparison():
    ranked = [("not", 0.6), ("good.", -0.3), ("film", 0.1)]
    text, ok = reveal.word_text("not", ranked)
    assert ok and text.index("**not**") < text.index("**film**") and "matches" in text
    text, ok = reveal.word_text("good", ranked)  # punctuation of a byte-level word does not count
    assert not ok and "comes 2 of 3" in text
    assert "<b>" not in reveal.word_text("x", [("<b>", 1.0)])[0]  # model text escaped


def _grid(tops, target="Paris"):
    return LensGrid(task="generation", model_id="m", layer_labels=[str(i) for i in range(len(tops))],
                    positions=["is", "Paris"], targets=[target, ""], top_tokens=[[t, ""] for t in tops],
                    top_probs=np.zeros((len(tops), 2)), top5_tokens=[], top5_probs=np.zeros((len(tops), 2, 5)),
                    chosen_probs=np.zeros((len(tops), 2)), groups=["generated", "next"], head="lm_head", caption="")


def test_layer_comparison():
    text, ok = reveal.layer_text(BANDS[2], _grid(["the", "a", "Rome", "Paris", "Paris", "Paris", "Paris"][:6]))
    assert ok and "from layer 3 on" in text or "late" in text
    first, last, answer = reveal.commit(_grid(["x", "x", "x", "x", "Paris"]))
    assert (first, last, answer) == (4, 4, "Paris")
    text, ok = reveal.layer_text(BANDS[0], _grid(["x", "x", "x", "x", "Paris"]))
    assert not ok and BANDS[3] in text
    never = reveal.layer_text(BANDS[0], _grid(["x", "y", "z"]))[0]
    assert "no layer can be named" in never
    head = HeadLens(task="sentiment", model_id="m", layer_labels=["0", "1", "2"], head="classifier",
                    top_labels=[["NEG"], ["POS"], ["POS"]], top_probs=np.zeros((3, 1)), final_label="POS",
                    final_probs=np.zeros(3), caption="")
    assert reveal.commit(head) == (1, 2, "POS")


def test_knockout_comparison():
    same = SimpleNamespace(top_before="POSITIVE", top_after="POSITIVE", score_before=0.9, score_after=0.8)
    text, ok = reveal.knockout_text(KNOCKOUT[1], same, "L1H0")
    assert ok and "stays" in text
    flipped = SimpleNamespace(top_before="POSITIVE", top_after="NEGATIVE", score_before=0.6, score_after=0.3)
    assert reveal.knockout_text(KNOCKOUT[1], flipped, "L1H0")[1] is False
