"""Property-based fuzzing (hypothesis, bounded) of the pure functions that parse or render what
users type or upload: candidate parsing, token HTML and labels, image and audio decoding."""
from __future__ import annotations

import contextlib
import html
import io
import os
import re
import tempfile
from html.parser import HTMLParser

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from demos.clip import MAX_CANDIDATES, parse_candidates
from demos.inputs import audio
from demos.inputs.images import load_image
from viz.tokens import axis_labels, clean_token, highlight_html, span_html

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
NASTY = st.text(alphabet=st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "&amp;&lt;", "\"'`", "\x00\x1b[31m\u202e", "a,b\nc", "Ġ▁Ċ</w>"]
)


class _Html(HTMLParser):
    """Collects tags, attributes and the text of each span.xray-tok / mark."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.tokens, self.titles, self.text, self.mark = [], [], [], [], []
        self._in = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "span" and attrs.get("class") == "xray-tok":
            self._in = "tok"
            self.tokens.append("")
            self.titles.append(attrs.get("title"))
        elif tag == "mark":
            self._in = "mark"

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        self.text.append(data)
        if self._in == "tok":
            self.tokens[-1] += data
        elif self._in == "mark":
            self.mark.append(data)


def parse(markup: str) -> _Html:
    p = _Html()
    p.feed(markup)
    p.close()
    return p


@FAST
@given(st.one_of(st.none(), NASTY, st.lists(NASTY, max_size=80), st.text(alphabet=" ,\n\r\tab", max_size=60)))
def test_parse_candidates_gives_clean_unique_candidates_or_a_clear_error(value):
    try:
        out = parse_candidates(value)
    except ValueError as exc:
        assert re.fullmatch(r"Please enter at least one candidate description \(one per line, or separated by commas\)\."
                            rf"|\d+ candidate descriptions given; the limit is {MAX_CANDIDATES}\.", str(exc))
        return
    assert 1 <= len(out) <= MAX_CANDIDATES and len(set(out)) == len(out)
    for c in out:
        assert c == c.strip() and c
        if isinstance(value, str):
            assert "\n" not in c and "," not in c and c in value


@FAST
@given(st.lists(NASTY, max_size=12), st.data())
def test_highlight_html_escapes_every_token_one_span_each(tokens, data):
    scores = data.draw(st.lists(st.floats(-1e6, 1e6), min_size=len(tokens), max_size=len(tokens)))
    title = data.draw(NASTY)
    out = highlight_html(tokens, scores, title)
    p = parse(out)
    assert set(p.tags) <= {"div", "span"}  # nothing from the input became markup
    assert p.tokens == [clean_token(t) for t in tokens]
    assert p.titles == [f"{t}: {s:+.4f}" for t, s in zip(tokens, scores)]
    if title:
        assert title in "".join(p.text)


@FAST
@given(NASTY, st.integers(-5, 50), st.integers(-5, 50))
def test_span_html_marks_the_span_and_keeps_the_text(text, start, end):
    p = parse(span_html(text, start, end))
    assert set(p.tags) <= {"div", "mark"}
    norm = lambda s: s.replace("\r\n", "\n").replace("\r", "\n")  # noqa: E731 - the HTML parser's newlines
    assert norm("".join(p.text)) == norm(text)
    lo = min(max(0, start), len(text))
    assert norm("".join(p.mark)) == norm(text[lo:max(lo, end)])


@FAST
@given(st.lists(NASTY, max_size=20))
def test_clean_token_and_axis_labels_are_readable_and_escaped(tokens):
    labels = axis_labels(tokens)
    assert len(labels) == len(tokens) and len(set(labels)) == len(labels)
    for i, (token, label) in enumerate(zip(tokens, labels)):
        shown = clean_token(token)
        assert shown.strip() and "Ġ" not in shown and "▁" not in shown
        assert "<" not in label and ">" not in label
        assert label.startswith(f"{i}:") and html.unescape(label.split(":", 1)[1]) == shown


@pytest.fixture(scope="module")
def gpt2_tokenizer(tiny_models):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_models["generation"])


@FAST
@given(text=NASTY)
def test_tokenizer_tokens_of_any_text_render_escaped(gpt2_tokenizer, text):
    tokens = gpt2_tokenizer.convert_ids_to_tokens(gpt2_tokenizer(text)["input_ids"])
    p = parse(highlight_html(tokens, np.linspace(-1, 1, len(tokens))))
    assert set(p.tags) <= {"div", "span"} and p.tokens == [clean_token(t) for t in tokens]
    assert gpt2_tokenizer.convert_tokens_to_string(tokens) == text  # byte-level BPE loses nothing


def _is_rgb(img) -> bool:
    return img.mode == "RGB" and img.width >= 1 and img.height >= 1 and np.asarray(img).dtype == np.uint8


MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"\xff\xd8\xff\xe0", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"BM", b"II*\x00"]


@SLOW
@given(st.sampled_from(MAGIC), st.binary(max_size=600))
def test_load_image_on_random_bytes_gives_rgb_or_value_error(magic, payload):
    fd, path = tempfile.mkstemp(suffix=".png")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(magic + payload)
        try:
            img = load_image(path)
        except ValueError:
            return
        assert _is_rgb(img)
    finally:
        os.unlink(path)


def _real_image(fmt: str, mode: str, size: tuple[int, int]) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format=fmt)
    return buf.getvalue()


@SLOW
@given(st.sampled_from([("PNG", "RGBA"), ("PNG", "I;16"), ("GIF", "P"), ("JPEG", "CMYK"), ("PNG", "LA")]), st.data())
def test_load_image_on_damaged_real_files_gives_rgb_or_value_error(kind, data):
    raw = bytearray(_real_image(kind[0], kind[1], (9, 7)))
    for _ in range(data.draw(st.integers(1, 6))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    fd, path = tempfile.mkstemp(suffix=".img")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(bytes(raw[:cut]))
        with contextlib.suppress(ValueError):
            assert _is_rgb(load_image(path))
    finally:
        os.unlink(path)


DTYPES = st.sampled_from([np.bool_, np.uint8, np.int8, np.uint16, np.int16, np.int32, np.int64, np.uint64,
                          np.float16, np.float32, np.float64, np.complex64])


@FAST
@given(hnp.arrays(DTYPES, hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=6)))
def test_load_image_on_arrays_of_any_dtype_and_shape(arr):
    try:
        img = load_image(arr)
    except ValueError:
        return
    assert _is_rgb(img) and (img.height, img.width) == arr.shape[:2]


@pytest.mark.slow  # 40 resamplings of arrays up to 1200 x 1200 x 1200 at odd rates: about 6 s
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    hnp.arrays(st.sampled_from([np.int16, np.uint8, np.int32, np.float32, np.float64, np.bool_]),
               hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=1200)),
    st.one_of(st.sampled_from([-16_000, 0, 1, 999, 8_000, 16_000, 22_050, 44_100, 48_000, 384_001]), st.integers(4_000, 400_000)),
)
def test_audio_normalise_gives_mono_float32_16k_or_value_error(samples, rate):
    try:
        clip = audio.normalise((rate, samples))
    except ValueError:
        return
    assert clip.rate == 16_000 and clip.samples.dtype == np.float32 and clip.samples.ndim == 1
    assert len(clip.samples) >= 1 and np.isfinite(clip.samples).all()
