"""Bad input on every tab: one row per (tab, input). Each is refused with its exact message (or
handled with a visible notice), nothing crashes, and a good request right after still works.

The fast part calls each tab's real event handler (the guarded function Gradio runs, taken from
the built Blocks); the slow part goes through a server with gradio_client.
Image and audio fixtures are generated in a temporary folder.
"""
from __future__ import annotations

import importlib
import re
import struct
import zlib

import gradio as gr
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from demos import generation
from demos.inputs import audio, images
from demos.runtime import settings
from tests.cases import CASES, CAT, QA_CONTEXT
from tests.handlers import call as call_handler
from tests.handlers import split_notice
from ui.common import MAX_INPUT_CHARS

TABS = [c.tab for c in CASES.values()]
CONTEXT = QA_CONTEXT

EMPTY_TEXT = "Please enter some text."
NO_IMAGE = "Please upload an image."
NO_AUDIO = "Please record or upload some audio."
NO_CANDIDATES = "Please enter at least one candidate description (one per line, or separated by commas)."
BOMB = "The image declares more pixels than can be decoded safely; the limit is 36 megapixels."


@pytest.fixture(scope="module")
def api():
    """api_name -> the BlockFunction of every tab (handler `.fn`)."""
    fns = {}
    for module in TABS:
        with gr.Blocks() as demo:
            importlib.import_module(module).build()
        fns.update({f.api_name: f for f in demo.fns.values() if f.api_name})
    return fns


def model(task: str) -> str:
    return settings.current().choices(task)[0]


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height RGB pixels (the data is tiny)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """name -> path of generated image and audio files, good and bad."""
    d = tmp_path_factory.mktemp("bad-input")
    out = {}

    def put(name, data=None, save=None):
        path = d / name
        if save is not None:
            save(path)
        else:
            path.write_bytes(data)
        out[name] = str(path)

    put("zero.png", b"")
    put("text.png", b"this is a text file named .png")
    put("random.jpg", np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    put("bomb.png", _png_header(100_000, 100_000))
    put("big_header.png", _png_header(7000, 7000))
    put("huge_file.png", b"\0" * (images.MAX_BYTES + 1024))
    put("rgba.png", save=lambda p: Image.new("RGBA", (40, 30), (255, 0, 0, 40)).save(p))
    put("truncated.png", (d / "rgba.png").read_bytes()[:60])
    put("cmyk.jpg", save=lambda p: Image.new("CMYK", (40, 30), (0, 80, 160, 0)).save(p))
    put("i16.png", save=lambda p: Image.fromarray((np.arange(1200, dtype=np.uint16) * 50).reshape(30, 40)).save(p))
    put("palette_t.png", save=lambda p: Image.new("P", (40, 30), 0).save(p, transparency=0))
    put("anim.gif", save=lambda p: Image.new("RGB", (40, 30), "red").save(
        p, save_all=True, append_images=[Image.new("RGB", (40, 30), "blue")], duration=100, loop=0))
    put("one_pixel.png", save=lambda p: Image.new("RGB", (1, 1), "red").save(p))
    put("zero.wav", b"")
    put("text.wav", b"RIFF but not really a wave file")
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000) * 32767).astype(np.int16)
    put("tone8k.wav", save=lambda p: sf.write(p, tone, 8000))
    put("truncated.wav", (d / "tone8k.wav").read_bytes()[:30])
    return out


def call(api, name: str, *args):
    return call_handler(api[name], *args)


def refused(api, name: str, *args) -> str:
    with pytest.raises(gr.Error) as info:
        call(api, name, *args)
    return info.value.message


# ---------------------------------------------------------------- refusals: (api, args, message)
def _text_rows():
    rows = []
    for label, value in [("empty", ""), ("whitespace", "  \n\t "), ("none", None), ("only controls", "\x00\x1b\u202e")]:
        rows += [
            (f"generate {label}", "generate", lambda f, v=value: (v, 5, False, 1.0, 50, 1.0, 0, model("generation")), generation.EMPTY_PROMPT),
            (f"sentiment {label}", "sentiment", lambda f, v=value: (v, model("sentiment")), EMPTY_TEXT),
            (f"qa question {label}", "qa", lambda f, v=value: (v, CONTEXT, model("qa")), "Please enter a question."),
            (f"qa context {label}", "qa", lambda f, v=value: ("Where is it?", v, model("qa")), "Please enter a context."),
            (f"translate {label}", "translate", lambda f, v=value: (v, model("translation")), EMPTY_TEXT),
            (f"clip texts {label}", "clip_match", lambda f, v=value: (f["rgba.png"], v, [], model("clip")), NO_CANDIDATES),
        ]
    too_long = "a" * (MAX_INPUT_CHARS + 1)
    rows.append(("sentiment over the character limit", "sentiment", lambda f: (too_long, model("sentiment")),
                 f"The text is {MAX_INPUT_CHARS + 1:,} characters long; the limit is {MAX_INPUT_CHARS:,}."))
    rows.append(("qa question too long", "qa", lambda f: ("the " * 600, CONTEXT, model("qa")), _question_too_long))
    return rows


IMAGE_BAD = [
    ("none", None, NO_IMAGE),
    ("zero.png", "zero.png", "The image file is empty (0 bytes)."),
    ("text file named .png", "text.png", images.UNREADABLE),
    ("random bytes .jpg", "random.jpg", images.UNREADABLE),
    ("truncated png", "truncated.png", images.UNREADABLE),
    ("bomb 100000x100000", "bomb.png", BOMB),
    ("header 7000x7000", "big_header.png", "Image is 7000x7000 pixels; the limit is 36 megapixels."),
    ("file over 20 MB", "huge_file.png", "The image file is 20.0 MB; the limit is 20 MB."),
]


class _QuestionTooLong(str):
    """The expected message, with the token count of the tiny tokenizer filled in on comparison."""

    def __eq__(self, other):
        from demos import qa

        n = len(qa.load().processor("the " * 600, add_special_tokens=False)["input_ids"])
        return other == (
            f"The question is too long: {n} tokens. The model reads at most 512 tokens for question and context "
            "together; keep the question under 477 tokens."
        )

    __hash__ = str.__hash__


_question_too_long = _QuestionTooLong("The question is too long")


def _image_rows():
    rows = []
    for label, name, message in IMAGE_BAD:
        rows.append((f"image {label}", "classify_image", lambda f, n=name: (n and f[n], model("image")), message))
        rows.append((f"clip image {label}", "clip_match", lambda f, n=name: (n and f[n], "a cat", [], model("clip")), message))
    many = "\n".join(f"thing {i}" for i in range(300))
    rows.append(("clip 300 candidates", "clip_match", lambda f: (f["rgba.png"], many, [], model("clip")),
                 "300 candidate descriptions given; the limit is 64."))
    rows.append(("clip blank candidates", "clip_match", lambda f: (f["rgba.png"], " \n , ,\n", [], model("clip")), NO_CANDIDATES))
    rows.append(("clip 17 images", "clip_match", lambda f: (f["rgba.png"], "a cat", [f["rgba.png"]] * 16, model("clip")),
                 "17 images given; the limit is 16."))
    return rows


def _audio_rows():
    silent = (16_000, np.zeros(16_000, np.int16))
    return [
        ("speech none", "transcribe", lambda f: (None, model("asr")), NO_AUDIO),
        ("speech zero-length", "transcribe", lambda f: ((16_000, np.zeros(0, np.int16)), model("asr")),
         "The audio is empty (zero samples). Please record or upload a clip with speech."),
        ("speech silent", "transcribe", lambda f: (silent, model("asr")),
         "The audio is silent (no sound above -80 dBFS). Check the microphone or choose another file."),
        ("speech NaN", "transcribe", lambda f: ((16_000, np.full(16_000, np.nan, np.float32)), model("asr")),
         "The audio contains invalid values (NaN or infinity); please use another recording."),
        ("speech 10 ms", "transcribe", lambda f: ((16_000, np.full(160, 3000, np.int16)), model("asr")),
         "The audio is too short (10 ms); please give at least 0.1 s of speech."),
        ("speech rate 1 MHz", "transcribe", lambda f: ((1_000_000, np.ones(200_000, np.float32) * 0.1), model("asr")),
         "Sample rate 1,000,000 Hz is not supported; use 1,000 to 384,000 Hz."),
        ("speech zero-byte wav", "transcribe", lambda f: (f["zero.wav"], model("asr")), "The audio file is empty (0 bytes)."),
        ("speech corrupt wav", "transcribe", lambda f: (f["text.wav"], model("asr")), audio.UNREADABLE),
        ("speech truncated wav", "transcribe", lambda f: (f["truncated.wav"], model("asr")), audio.UNREADABLE),
    ]


REFUSALS = _text_rows() + _image_rows() + _audio_rows()


@pytest.mark.parametrize("label, name, make_args, message", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_bad_input_gets_its_clear_message(api, files, label, name, make_args, message):
    assert refused(api, name, *make_args(files)) == message


# ---------------------------------------------------------------- accepted: odd but valid input
ODD_TEXTS = {
    "controls": "hello\x00world\x1b[31m \u202eevil",
    "emoji": "I love pizza 🍕🎉 and my family 👩‍👩‍👧",
    "combining": "Cafe\u0301 Zalgo: Z\u0335\u0321a\u0336l\u0337g\u0338o",
    "rtl": "مرحبا بالعالم and שלום עולם",
    "markup": "<script>alert(1)</script> &amp; <b>bold</b>",
}


def _odd_rows():
    rows = []
    for label, text in ODD_TEXTS.items():
        rows += [
            (f"generate {label}", "generate", "generation", (text, 3, False, 1.0, 50, 1.0, 0)),
            (f"sentiment {label}", "sentiment", "sentiment", (text,)),
            (f"qa context {label}", "qa", "qa", ("What is it?", text)),
            (f"translate {label}", "translate", "translation", (text,)),
            (f"clip texts {label}", "clip_match", "clip", (CAT, f"{text}\na cat", [])),
        ]
    return rows


ODD = _odd_rows()


@pytest.mark.parametrize("label, name, task, args", ODD, ids=[r[0] for r in ODD])
def test_odd_text_is_answered_without_invisible_controls(api, label, name, task, args):
    with pytest.warns(UserWarning, match="invisible control character") if "controls" in label else _no_warning():
        out = call(api, name, *args, model(task))
    shown = str(out[0])
    assert out[0] is not None and shown
    assert "\x00" not in shown and "\u202e" not in shown and "\x1b" not in shown


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("name", ["rgba.png", "cmyk.jpg", "i16.png", "palette_t.png", "anim.gif", "one_pixel.png"])
def test_odd_image_modes_are_classified_and_matched(api, files, name):
    labels = call(api, "classify_image", files[name], model("image"))[0]
    assert len(labels) == 5 and sum(labels.values()) <= 1.0 + 1e-6
    probs = call(api, "clip_match", files[name], "a cat\na dog", [], model("clip"))[0]
    assert set(probs) == {"a cat", "a dog"} and sum(probs.values()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    "texts, expected",
    [("a cat", ["a cat"]), ("a cat\na cat, a cat ", ["a cat"]), ("\n".join(f"t{i}" for i in range(64)), [f"t{i}" for i in range(64)])],
    ids=["one", "duplicates", "64 (the limit)"],
)
def test_clip_candidate_counts(api, texts, expected):
    probs = call(api, "clip_match", CAT, texts, [], model("clip"))[0]  # gr.Label value: most probable first
    assert sorted(probs) == sorted(expected) and sum(probs.values()) == pytest.approx(1.0, abs=1e-5)


LONG = "word " * 3000


@pytest.mark.parametrize(
    "name, args, notice_index, notice",
    [
        ("generate", (LONG, 5, False, 1.0, 50, 1.0, 0), 2,
         r"The prompt was \d+ tokens; only its last 251 were used, so that the 5 new tokens fit in the limit of 256 tokens\."),
        ("sentiment", (LONG,), 2, r"Input was \d+ tokens; only the first 512 \(the model's limit\) were used\."),
        ("qa", ("Where?", LONG), 5, r"The context is longer than the model reads at once \(\d+ tokens; at most 512 with the "
         r"question\), so it was read whole in \d+ overlapping windows\. The best answer came from window \d+ \(characters "
         r"[\d,]+–[\d,]+ of 14,999\); the views below show that window\."),
        ("translate", (LONG,), 2, r"Input was \d+ tokens; only the first 512 \(the model's limit\) were used\."),
        ("clip_match", (CAT, "cat " * 300, []), 2, r"1 candidate\(s\) longer than 77 tokens were cut to the model's limit\."),
    ],
)
def test_text_past_the_model_limit_is_truncated_with_a_notice(api, name, args, notice_index, notice):
    task = {"generate": "generation", "translate": "translation", "clip_match": "clip"}.get(name, name)
    out = call(api, name, *args, model(task))
    random, text = split_notice(out[notice_index])
    assert random  # the tests run tiny random models: the warning comes first, the truncation notice after
    assert re.fullmatch(notice, text), text


def test_audio_at_any_rate_and_layout_becomes_mono_16k():
    t = np.arange(48_000) / 48_000
    tone = 0.4 * np.sin(2 * np.pi * 300 * t)
    for rate in (8_000, 22_050, 44_100, 48_000, 7_919):
        n = rate  # one second
        x = (tone[:n] * 32767).astype(np.int16)
        for samples in (x, np.stack([x, x], 1), np.stack([x, x])):  # mono, (n, 2), channels-first
            clip_ = audio.normalise((rate, samples))
            assert clip_.rate == 16_000 and clip_.samples.dtype == np.float32 and clip_.samples.ndim == 1
            assert abs(len(clip_.samples) - 16_000) <= 2
            assert np.abs(clip_.samples).max() == pytest.approx(0.4, abs=0.02)


def test_audio_files_and_long_audio_are_transcribed(api, files):
    text, notice = call(api, "transcribe", files["tone8k.wav"], model("asr"))[:2]
    assert isinstance(text, str) and "Heard 1.00 s" in notice
    long = (np.sin(np.arange(16_000 * 40) / 7) * 8000).astype(np.int16)
    random, notice = split_notice(call(api, "transcribe", (16_000, long), model("asr"))[1])
    assert random and notice.startswith("The clip is 40.0 s long; the model listens to one")


def test_bad_inputs_leave_every_tab_working(api, files):
    """Every refusal above, then one good request per tab."""
    for _, name, make_args, message in REFUSALS:
        assert refused(api, name, *make_args(files)) == message
    assert call(api, "sentiment", "A warm and funny film.", model("sentiment"))[0]
    assert call(api, "generate", "The quick brown fox", 3, False, 1.0, 50, 1.0, 0, model("generation"))[0].startswith("The quick brown fox")
    assert call(api, "qa", "When was it completed?", CONTEXT, model("qa"))[0]
    assert call(api, "translate", "The house is small.", model("translation"))[0]
    assert len(call(api, "classify_image", CAT, model("image"))[0]) == 5
    assert set(call(api, "clip_match", CAT, "a cat\na dog", [], model("clip"))[0]) == {"a cat", "a dog"}


GOOD = {c.api: (key, c.good_args) for key, c in CASES.items()}  # api name -> task, a good request (before the model)


def test_every_registered_task_has_a_good_request():
    from core import registry

    assert {spec.api_name() for spec in registry.TASKS} == set(GOOD)


@pytest.mark.parametrize("name", list(GOOD))
def test_random_weights_are_flagged_beside_the_answer(api, name):
    """The tests run tiny RANDOM models: every tab says so in the notice next to its answer, and
    its model line names the weights."""
    from demos.runtime import loading
    from ui.kit import RANDOM_WARNING

    task, args = GOOD[name]
    block = api[name]
    out = dict(zip(block.outputs, call(api, name, *args, model(task))))
    notices = [v for c, v in out.items() if isinstance(c, gr.Markdown) and isinstance(v, str) and RANDOM_WARNING in v]
    lines = [v for c, v in out.items() if isinstance(c, gr.Markdown) and isinstance(v, str) and v.startswith("Model: ")]
    assert not loading.load(task, model(task)).pretrained
    assert len(notices) == 1 and notices[0].startswith(RANDOM_WARNING)
    assert len(lines) == 1 and "RANDOM weights" in lines[0]


# ---------------------------------------------------------------- through a server
@pytest.mark.slow
def test_messages_arrive_through_gradio_client(serve, files):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    def build():
        with gr.Blocks() as demo:
            for module in ("ui.sentiment", "ui.image", "ui.clip", "ui.speech"):
                with gr.Tab(module):
                    importlib.import_module(module).build()
        return demo

    client = serve(build)
    with pytest.raises(AppError, match=EMPTY_TEXT):
        client.predict("  \t", api_name="/sentiment")
    with pytest.raises(AppError, match="300 candidate descriptions given; the limit is 64."):
        client.predict(handle_file(files["rgba.png"]), "\n".join(map(str, range(300))), api_name="/clip_match")
    with pytest.raises(AppError, match=NO_AUDIO):
        client.predict(None, api_name="/transcribe")
    for name, message in [("text.png", images.UNREADABLE), ("bomb.png", BOMB), ("zero.png", "The image file is empty (0 bytes).")]:
        with pytest.raises(AppError) as info:
            client.predict(handle_file(files[name]), api_name="/classify_image")
        assert str(info.value) == message
        with pytest.raises(AppError) as info:
            client.predict(handle_file(files[name]), "a cat", api_name="/clip_match")
        assert str(info.value) == message
    for name in ("text.wav", "truncated.wav"):
        with pytest.raises(AppError) as info:
            client.predict(handle_file(files[name]), api_name="/transcribe")
        assert str(info.value) == audio.UNREADABLE
    # good requests right after
    assert client.predict("A warm and funny film.", api_name="/sentiment")[0]["label"] in {"POSITIVE", "NEGATIVE"}
    assert len(client.predict(handle_file(files["anim.gif"]), api_name="/classify_image")[0]["confidences"]) == 5
    assert client.predict(handle_file(CAT), "a cat\na dog", api_name="/clip_match")[0]["label"] in {"a cat", "a dog"}
    assert isinstance(client.predict(handle_file(files["tone8k.wav"]), api_name="/transcribe")[0], str)
