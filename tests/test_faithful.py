"""Where the paper's numbers depend on a detail: the BOS policy and the meaning of the intervention hooks."""

import copy

import numpy as np
import pytest
import torch
from tiny_models import ARCHS, char_tokenizer, tiny_model

from model_inspector import ModelInspector
from model_inspector.architecture import PREPEND_BOS, default_prepend_bos


def _tokenizer(kind):
    """Char tokenizers that behave like GPT-2's (no BOS added), Llama's (BOS added) and Qwen's (no BOS token)."""
    from tokenizers import processors

    tok = char_tokenizer()
    if kind == "llama":
        tok._tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    if kind == "qwen":
        tok.bos_token = None
    return tok


@pytest.mark.parametrize("model_type, tok_kind, auto_adds", [
    ("gpt2", "gpt2", True), ("llama", "llama", True), ("qwen2", "qwen", False), ("gpt_neox", "gpt2", False),
])
def test_bos_policy(model_type, tok_kind, auto_adds):
    tok = _tokenizer(tok_kind)
    mi = ModelInspector(tiny_model(model_type), tok)
    bos = 1 if tok.bos_token_id is not None else 2  # no BOS token: TransformerLens uses EOS
    ids = {p: mi.encode(["abc"], prepend_bos=p)["input_ids"][0].tolist() for p in ("auto", "always", "never")}
    assert ids["always"] == [bos] + ids["never"] and ids["never"][0] != bos
    assert ids["auto"] == (ids["always"] if auto_adds else ids["never"])
    assert mi.prepend_bos("auto") is auto_adds and default_prepend_bos(mi.model) is auto_adds
    # the profiles follow the ids: one more position with BOS, and other numbers
    a = mi.profile_prompt(["abc"], prepend_bos="always")
    n = mi.profile_prompt(["abc"], prepend_bos="never")
    assert a.n_positions[0] == n.n_positions[0] + 1
    assert not np.array_equal(mi.profile(["abc"], max_len=2, prepend_bos="always").entropy,
                              mi.profile(["abc"], max_len=2, prepend_bos="never").entropy)
    # an empty prompt is the BOS token alone whatever the policy
    assert mi.encode([""], prepend_bos="never")["input_ids"][0].tolist() == [1 if tok.bos_token_id else 2]
    with pytest.raises(ValueError, match="prepend_bos must be one of"):
        mi.profile(["abc"], max_len=2, prepend_bos="sometimes")


def test_bos_table_is_transformerlens_default():
    assert set(PREPEND_BOS.values()) == {False}  # only exceptions to TransformerLens's default True are listed
    assert default_prepend_bos(tiny_model("bloom").config) is False
    assert default_prepend_bos(tiny_model("gemma2").config) is True


#: Independent of the library: the attention / MLP output projections of each tiny architecture,
#: whose zero weights remove that part's contribution to the residual stream.
OUT_PROJ = {
    "gpt2": ("attn.c_proj", "mlp.c_proj"), "gpt_neox": ("attention.dense", "mlp.dense_4h_to_h"),
    "opt": ("self_attn.out_proj", "fc2"), "llama": ("self_attn.o_proj", "mlp.down_proj"),
    "mistral": ("self_attn.o_proj", "mlp.down_proj"), "qwen2": ("self_attn.o_proj", "mlp.down_proj"),
    "qwen3": ("self_attn.o_proj", "mlp.down_proj"), "phi": ("self_attn.dense", "mlp.fc2"),
    "phi3": ("self_attn.o_proj", "mlp.down_proj"), "gemma": ("self_attn.o_proj", "mlp.down_proj"),
    "gemma2": ("self_attn.o_proj", "mlp.down_proj"), "gemma3_text": ("self_attn.o_proj", "mlp.down_proj"),
    "bloom": ("self_attention.dense", "mlp.dense_4h_to_h"), "falcon": ("self_attention.dense", "mlp.dense_4h_to_h"),
}


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("hook, side", [("hook_attn_out", 0), ("hook_mlp_out", 1)])
def test_scaling_by_zero_removes_the_contribution(arch, hook, side, tok):
    model = tiny_model(arch)
    with torch.no_grad():  # make each part's contribution large next to the (sharpened) embeddings
        for blk in ModelInspector(model, tok).lens.blocks:
            for name in OUT_PROJ[arch]:
                blk.get_submodule(name).weight.mul_(20.0)
    mi = ModelInspector(model, tok)
    block = 1
    mi.add_scale_activations_layer(block, hook, 0.0)
    hooked = mi.profile(["Hello there", "x"], max_len=3, keep_residuals=True)
    mi.undo_all_scalings()
    ablated = copy.deepcopy(model)
    blk = ablated.get_submodule(mi.lens.block_path)[block]
    lin = blk.get_submodule(OUT_PROJ[arch][side])
    with torch.no_grad():
        lin.weight.zero_()
        if getattr(lin, "bias", None) is not None:
            lin.bias.zero_()
    want = ModelInspector(ablated, tok).profile(["Hello there", "x"], max_len=3)
    np.testing.assert_allclose(hooked.entropy, want.entropy, atol=1e-5)
    assert (hooked.token_ids == want.token_ids).all()
    plain = mi.profile(["Hello there", "x"], max_len=3, keep_residuals=True)
    assert np.abs(plain.residuals - hooked.residuals).max() > 1e-2  # the intervention did something


def test_sandwich_norm_hooks_scale_after_the_post_norm(tok):
    mi = ModelInspector(tiny_model("gemma3_text"), tok)
    assert mi.residual_writers() == {"hook_attn_out": "post_attention_layernorm",
                                     "hook_mlp_out": "post_feedforward_layernorm"}
    plain = mi.profile(["Hello there"], max_len=3).entropy
    mi.add_scale_activations_layer(1, "hook_attn_out", 2.0)
    doubled = mi.profile(["Hello there"], max_len=3).entropy
    assert np.abs(doubled - plain).max() > 1e-3  # a raw self_attn scale would be undone by the norm (~1e-6)
    assert ModelInspector(tiny_model("llama"), tok).residual_writers() == {"hook_attn_out": "self_attn",
                                                                         "hook_mlp_out": "mlp"}
