"""OPT whose word embeddings are narrower than its blocks (facebook/opt-350m: word_embed_proj_dim 512, hidden 1024;
here 16 and 32): project_in widens the embeddings before block 0 and project_out narrows the last state, so
transformers' last hidden state is narrower than the others. Generation, the layer lens and attention step by
step still work, against a fresh copy of the model loaded here with transformers' own class."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers as T

from demos import adapters as A
from demos import generation
from demos.explain import lens as lens_mod
from demos.explain.attention_steps import attention_steps
from demos.explain.attribution import stack_hidden
from tests.demos.explain.family_models import PROMPT, _copy_processor, serving

HIDDEN, EMBED = 32, 16


@pytest.fixture(scope="module")
def folder(tiny_models, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("tiny-opt-widths")
    tok = T.AutoTokenizer.from_pretrained(tiny_models["generation"])
    torch.manual_seed(0)
    model = T.OPTForCausalLM(T.OPTConfig(
        num_hidden_layers=2, hidden_size=HIDDEN, num_attention_heads=4, ffn_dim=64, vocab_size=len(tok),
        max_position_embeddings=256, word_embed_proj_dim=EMBED, bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id, attn_implementation="eager")).eval()
    assert model.model.decoder.project_in is not None and model.model.decoder.project_out is not None
    model.config.xray_tiny = True
    model.save_pretrained(out)
    _copy_processor(tiny_models["generation"], out)
    return str(out)


@pytest.fixture(scope="module")
def result(folder):
    with serving("generation", folder):
        yield generation.generate(PROMPT, max_new_tokens=4, model_id=folder)


@pytest.fixture(scope="module")
def reference(folder, result):
    """A fresh copy (its hidden_states[-1] is transformers' default: normed and projected, 16 wide), the plain
    forward pass over the whole generated sequence and the last block's own output (a hook)."""
    model = T.OPTForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    seen = {}
    hook = model.model.decoder.layers[-1].register_forward_hook(lambda _m, _a, out: seen.setdefault("h", out))
    try:
        with torch.no_grad():
            out = model(torch.tensor([result.ids]), output_hidden_states=True, output_attentions=True)
    finally:
        hook.remove()
    last = seen["h"][0] if isinstance(seen["h"], tuple) else seen["h"]
    return model, out, last


def test_transformers_last_state_is_narrower_so_it_cannot_be_stacked(reference):
    _, out, _ = reference
    assert [h.shape[-1] for h in out.hidden_states] == [HIDDEN, HIDDEN, EMBED]
    with pytest.raises(ValueError, match=r"different widths \[16, 32\]"):
        stack_hidden(out.hidden_states)


def test_generation_keeps_every_state_at_the_block_width(folder, result, reference):
    model, out, last = reference
    with torch.no_grad():
        expected = model.generate(torch.tensor([result.ids[: result.n_prompt]]), max_new_tokens=4, do_sample=False,
                                  pad_token_id=model.config.pad_token_id)
    assert list(result.ids) == expected[0].tolist()[: len(result.ids)]
    states = result.embeddings.vectors
    assert states.shape == (3, len(result.ids), HIDDEN)
    for layer in range(2):  # the inputs of blocks 0 and 1 (block 0's is after project_in)
        np.testing.assert_allclose(states[layer], out.hidden_states[layer][0].numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(states[2], last[0].numpy(), rtol=1e-4, atol=1e-5)  # the last block's output


def test_the_lens_runs_the_final_norm_and_project_out_on_every_layer(folder, result, reference):
    model, out, _ = reference
    with serving("generation", folder):
        grid = lens_mod.lens("generation", result)
        assert grid.top_probs.shape[0] == 3 and "project_out" in grid.head
        last = lens_mod.head_logits("generation", result, 2)
        middle = lens_mod.head_logits("generation", result, 1)
    np.testing.assert_allclose(last, out.logits[0].numpy(), rtol=1e-4, atol=1e-4)  # the lens ends at the model's logits
    decoder = model.model.decoder
    with torch.no_grad():
        expected = model.lm_head(decoder.project_out(decoder.final_layer_norm(out.hidden_states[1][0])))
    np.testing.assert_allclose(middle, expected.numpy(), rtol=1e-4, atol=1e-4)


def test_the_table_follows_the_choice_of_last_state(folder, reference):
    """The fresh copy stores the normed, projected state last; the app's copy keeps the last block's output."""
    model, _, _ = reference
    assert A.stack_of(A.adapter_for(model)).last_hidden_normed
    with serving("generation", folder):
        app_model = generation.load(folder).model
    assert app_model.config.tie_last_hidden_states is False
    assert not A.stack_of(A.adapter_for(app_model)).last_hidden_normed


@pytest.mark.parametrize(("layer", "head"), [(0, 0), (1, 3)])
def test_attention_step_by_step_equals_the_models_attention(folder, result, reference, layer, head):
    _, out, _ = reference
    query = len(result.ids) - 1
    with serving("generation", folder):
        s = attention_steps("generation", result, layer, head, query, "self")
    row = out.attentions[layer][0, head, query].numpy()
    np.testing.assert_allclose(s.softmax, row, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s.model_row, row, rtol=1e-5, atol=1e-6)
