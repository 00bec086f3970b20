"""Generation demo on a tiny GPT-2: text equals the pipeline's, choices, attention and attributions are sound."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import pipeline

from demos import generation
from tests import reference

PROMPT = "The cat sat on the mat and"


@pytest.fixture(scope="module")
def pipe(tiny_models):
    return pipeline("text-generation", model=str(tiny_models["generation"]))


@pytest.mark.parametrize("prompt", [PROMPT, "Hello", "  Once upon a time, in a village by the sea,", "a\nb <b>x</b>"])
@pytest.mark.parametrize("n", [1, 25])
def test_greedy_text_equals_the_text_generation_pipeline(pipe, prompt, n):
    result = generation.generate(prompt, n)
    assert result.text == pipe(prompt, max_new_tokens=n, do_sample=False)[0]["generated_text"]
    assert result.text == result.prompt + result.continuation and result.prompt == prompt
    assert 1 <= result.steps <= n and len(result.ids) == len(result.tokens) == result.n_prompt + result.steps


def test_long_prompt_keeps_its_end_like_the_pipelines_hole_mode(pipe):
    prompt = " ".join(f"word{i}" for i in range(600))
    result = generation.generate(prompt, 10)
    expected = pipe(prompt, max_new_tokens=10, do_sample=False, handle_long_generation="hole")[0]["generated_text"]
    assert result.text == expected
    assert "only its last" in result.notice
    assert result.n_prompt + 10 == 256 and len(result.ids) <= 256  # tiny model's limit


def test_greedy_choices_are_argmax_and_probabilities_sum_below_one():
    result = generation.generate(PROMPT, 12)
    c = result.choices
    assert c.probs.shape == (result.steps, generation.TOP_SHOWN) and len(c.tokens) == len(c.chosen) == result.steps
    assert np.all(c.probs.sum(1) <= 1 + 1e-6) and np.all(np.diff(c.probs, axis=1) <= 1e-7)
    assert c.chosen == [row[0] for row in c.tokens] and np.all(result.chosen_rank == 1)
    np.testing.assert_allclose(c.chosen_prob, c.probs[:, 0], rtol=1e-6)
    # greedy: the processed distribution is the model's own, which the final forward pass recomputes
    np.testing.assert_allclose(result.model_prob, c.chosen_prob, rtol=1e-3, atol=1e-6)


def test_sampling_probabilities_are_those_of_the_processed_distribution():
    result = generation.generate(PROMPT, 15, True, 0.7, 5, 1.0, 3)
    c = result.choices
    np.testing.assert_allclose(c.probs[:, :5].sum(1), 1.0, atol=1e-5)  # top-k=5 keeps 5 tokens
    assert np.all(c.probs[:, 5:] == 0) and np.all(result.chosen_rank <= 5)
    for step, rank in enumerate(result.chosen_rank):
        assert c.tokens[step][rank - 1] == c.chosen[step] or c.probs[step, rank - 1] == pytest.approx(c.chosen_prob[step])


def test_seeded_sampling_is_reproducible_and_leaves_the_global_rng_alone():
    before = torch.random.get_rng_state()
    run = generation._generate.fn  # bypass the cache: really sample twice
    a = run(PROMPT, 10, True, 1.5, 0, 1.0, 11, None)
    b = run(PROMPT, 10, True, 1.5, 0, 1.0, 11, None)
    assert a.ids == b.ids and a.text == b.text
    others = {run(PROMPT, 10, True, 1.5, 0, 1.0, s, None).ids for s in (12, 13)}
    assert len(others | {a.ids}) > 1
    assert torch.equal(before, torch.random.get_rng_state())
    assert generation.generate(PROMPT, 10, True, 1.5, 0, 1.0, 11).ids == a.ids


def test_attention_rows_sum_to_one_over_the_whole_sequence():
    result = generation.generate(PROMPT, 9)
    w, n = result.attention.weights, len(result.tokens)
    assert w.shape[2:] == (n, n) and result.attention.query_tokens == result.tokens
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-4)
    assert np.all(np.triu(w, k=1) == 0)  # causal: no looking ahead
    emb = result.embeddings
    assert emb.vectors.shape[:2] == (w.shape[0] + 1, n)
    assert emb.groups == ["prompt"] * result.n_prompt + ["generated"] * result.steps


@pytest.mark.parametrize("step", [0, 4])
def test_attribution_covers_the_prefix_and_is_complete(step):
    result = generation.generate(PROMPT, 6)
    pos = result.n_prompt + step
    attr = generation.attribute(result.ids, pos, "integrated_gradients", 64)
    assert len(attr.scores) == len(attr.tokens) == pos and attr.tokens == result.tokens[:pos]
    ref = reference.generation(result, step)  # the prefix and its all-end-of-text baseline, forward by hand
    f_x, f_b = ref.value(), ref.value(ref.baseline)
    assert attr.baseline_value == pytest.approx(f_b, rel=1e-4)
    reference.complete(float(attr.scores.sum()), f_x - f_b)
    assert attr.output_value == pytest.approx(float(result.model_prob[step]), rel=1e-3)
    gxi = generation.attribute(result.ids, pos, "gradient_x_input")
    assert len(gxi.scores) == pos and gxi.delta is None


def test_bad_inputs_get_clear_messages():
    with pytest.raises(ValueError, match="Please enter some text to continue"):
        generation.generate("   ", 5)
    with pytest.raises(ValueError, match="between 1 and 100"):
        generation.generate(PROMPT, 101)
    with pytest.raises(ValueError, match="Temperature"):
        generation.generate(PROMPT, 5, True, 0.0)
    with pytest.raises(ValueError, match="Position"):
        generation.attribute((1, 2, 3), 0)


@pytest.mark.slow
def test_api_generates_like_the_pipeline_and_rejects_empty_prompt(serve, pipe):
    from tests.conftest import tab_app

    client = serve(tab_app("ui.generation"))
    text = client.predict(PROMPT, 8, api_name="/generate")[0]
    assert text == pipe(PROMPT, max_new_tokens=8, do_sample=False)[0]["generated_text"]
    sampled = client.predict(PROMPT, 8, True, 0.9, 20, 0.95, 5, api_name="/generate")[0]
    assert sampled == generation.generate(PROMPT, 8, True, 0.9, 20, 0.95, 5).text
    with pytest.raises(ValueError, match="Please enter some text to continue"):
        client.predict("  ", 8, api_name="/generate")


@pytest.mark.slow
def test_compare_shows_both_greedy_continuations(serve):
    from tests.conftest import tab_app

    client = serve(tab_app("ui.generation"))
    a, b = "The cat sat on", "The dog sat on"
    html_a, html_b, _, _ = client.predict(a, b, 5, api_name="/generate_compare")
    for html_out, prompt in ((html_a, a), (html_b, b)):
        r = generation.generate(prompt, 5)
        assert html_out.count('class="xray-tok"') == r.steps
        assert prompt in html_out


def test_byte_level_tokens_are_readable_never_replacement_characters(tiny_models):
    """A character split over two byte-level tokens shows as hex bytes in labels, and the
    continuation pieces never contain '�' (the completing token carries the character)."""
    from core.tokens import byte_level_label
    from demos.inputs.text import piece_texts, token_labels

    tok = generation.load().processor
    text = "naïve café – “quoted” 😀"
    ids = tok(text)["input_ids"]
    labels = token_labels(tok, ids)
    assert all("\ufffd" not in label and "Ġ" not in label for label in labels)
    raw_pieces = [tok.decode([i]) for i in ids]
    split = [i for i, p in enumerate(raw_pieces) if "\ufffd" in p]
    assert split, "the tiny tokenizer must split at least one character for this test to mean anything"
    assert all("‹" in labels[i] for i in split)  # the bytes of a split character, as hex
    pieces = piece_texts(tok, ids)
    assert "".join(pieces) == tok.decode(ids) and all("\ufffd" not in p for p in pieces)
    assert byte_level_label("Ġcaf" + "Ã©") == "␣café" and byte_level_label("âĢ") == "‹E2 80›"
    result = generation.generate("The emoji 😀 means", 3)
    assert all("\ufffd" not in t for t in result.tokens + result.pieces)


def test_compare_follows_the_model_picker(monkeypatch):
    """'Compare two prompts' takes the model picker as an input and continues both prompts with it."""
    import functools

    import gradio as gr

    from demos.runtime import settings
    from tests.handlers import call
    from ui import generation as tab

    with gr.Blocks() as demo:
        tab.build()
    fns = {f.api_name: f for f in demo.fns.values() if f.api_name}
    picker = fns["generate"].inputs[-1]
    assert isinstance(picker, gr.Dropdown) and picker.label == "Model"
    assert fns["generate_compare"].inputs[-1] is picker
    seen, real = [], generation.generate

    @functools.wraps(real)  # the backend serves the compute module's own functions only
    def spy(*args, **kwargs):
        seen.append(kwargs["model_id"] if "model_id" in kwargs else args[7])
        return real(*args, **kwargs)

    monkeypatch.setattr(generation, "generate", spy)
    chosen = settings.current().choices("generation")[0]
    html_a, html_b, _, _ = call(fns["generate_compare"], "The cat sat on", "The dog sat on", 3, chosen)
    assert seen == [chosen, chosen]
    assert "The cat sat on" in html_a and "The dog sat on" in html_b


def test_every_example_sets_every_control_so_sampling_never_sticks():
    """Issue #27: after the sampling example, the plain "The quick brown fox" example was still
    sampled. Every example (both lists) sets the prompt, max new tokens, the sample checkbox and
    all four sampling settings; the plain ones are greedy with the controls' own defaults; and a
    run with a plain example's values is greedy, whatever was set before."""
    import gradio as gr

    from ui import generation as tab

    with gr.Blocks() as demo:
        tab.build()
    fns = {f.api_name: f for f in demo.fns.values() if f.api_name}
    run_inputs = fns["generate"].inputs[:-1]  # prompt, max new, sample, temperature, top-k, top-p, seed (not the model)
    datasets = [b for b in demo.blocks.values() if isinstance(b, gr.Dataset)]
    assert len(datasets) == 2
    for dataset in datasets:
        assert [c._id for c in dataset._components] == [c._id for c in run_inputs], dataset.label
    sample_box = run_inputs[2]
    assert isinstance(sample_box, gr.Checkbox)
    greedy, _, sampled, _ = tab.example_rows()
    assert [row[0] for row in greedy] == list(generation.EXAMPLES)
    for row in greedy:
        assert row[1:] == [tab.MAX_NEW_DEFAULT, False, *tab.SAMPLING_DEFAULTS]
    assert [c.value for c in run_inputs[3:]] == list(tab.SAMPLING_DEFAULTS)  # the defaults ARE the controls' start values
    assert sampled[0][2] is True
    # what the examples put in the controls runs as they say: sampled, then greedy again
    s = generation.generate(*sampled[0])
    g = generation.generate(*greedy[0])
    assert "sampl" in s.decoding.lower() and "greedy" in g.decoding.lower()
    assert g.text == generation.generate(greedy[0][0], tab.MAX_NEW_DEFAULT).text
