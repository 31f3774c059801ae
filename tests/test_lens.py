"""The lens is exact at every layer of 14 architectures, against the model's own forward."""

import numpy as np
import pytest
import torch
from tiny_models import ARCHS, tiny_model
from torch import nn

from model_inspector import LensResolutionError, LogitLens, ModelInspector
from model_inspector.architecture import find_blocks

PROMPTS = ["Hello world", "A longer prompt, with padding."]


def own_entropy_truncated(model, lens, input_ids, attention_mask, layer):
    """Independent computation: run the model's own forward with only blocks[:layer+1] kept, so its
    own final norm, head and logit transforms decode block `layer`'s output. float64 entropy. Positions count real
    tokens only (left padding), as ``generate`` numbers them and as the profiles do."""
    parent_path, _, attr = lens.block_path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    full = getattr(parent, attr)
    setattr(parent, attr, nn.ModuleList(list(full)[: layer + 1]))
    try:
        with torch.no_grad():
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
            logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                           use_cache=False).logits
    finally:
        setattr(parent, attr, full)
    logp = torch.log_softmax(logits.double(), -1)
    return -(logp.exp() * logp).sum(-1)  # [batch, seq]


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_every_layer_exact(arch, tok):
    model = tiny_model(arch)
    mi = ModelInspector(model, tok)
    assert mi.lens.check_deviation <= 1e-4
    pp = mi.profile_prompt(PROMPTS, metrics=["shannon"])
    enc = mi.encode(PROMPTS)
    mask = enc["attention_mask"].bool()
    worst = 0.0
    for layer in range(mi.n_layers):
        want = own_entropy_truncated(model, mi.lens, enc["input_ids"], enc["attention_mask"], layer)
        for i in range(len(PROMPTS)):
            got = pp.entropy[i, : pp.n_positions[i], layer]
            worst = max(worst, float(np.abs(got - want[i][mask[i]].numpy()).max()))
    assert worst < 1e-4, f"{arch}: worst deviation {worst:.2e} nats"
    alone = mi.profile_prompt(PROMPTS[:1], metrics=["shannon"])  # no padding: the same numbers as in the batch
    n = alone.n_positions[0]
    assert n == pp.n_positions[0] and np.abs(alone.entropy[0, :n] - pp.entropy[0, :n]).max() < 1e-4


def test_softcap_is_applied(tok):
    lens = LogitLens(tiny_model("gemma2"))
    assert lens.post_head == ["softcap(2)"]
    resid = torch.randn(4, lens.d_model) * 50
    assert lens.logits(resid).abs().max() <= 2.0 + 1e-5


def test_config_hint_that_the_model_does_not_apply_is_ignored(tok):
    model = tiny_model("llama")
    model.config.logits_scaling = 4.0  # a Granite-style hint the model's forward does not apply
    lens = LogitLens(model)
    assert lens.post_head == [] and lens.check_deviation <= 1e-4


def _patched_logits(model, fn):
    orig_forward = model.forward

    def forward(*a, **k):
        out = orig_forward(*a, **k)
        out.logits = fn(out.logits)
        return out

    model.forward = forward
    return model


@pytest.mark.parametrize("fn, name", [
    (lambda x: x * 3.0, "scale(3)"),
    (lambda x: 7.0 * torch.tanh(x / 7.0), "softcap(7)"),
    (lambda x: 5.0 * torch.tanh(x * 0.5), "5*tanh(0.5*x)"),  # a scale of 2.5 before a soft-cap of 5
])
def test_logit_transform_is_discovered_without_a_config_name(fn, name, tok):
    model = _patched_logits(tiny_model("llama"), fn)
    lens = LogitLens(model)
    assert lens.post_head == [name]
    resid = torch.randn(3, 5, lens.d_model) * 40  # far beyond the probe's logits
    with torch.no_grad():
        want = fn(model.lm_head(model.model.norm(resid)))
    torch.testing.assert_close(lens.logits(resid), want, atol=1e-4, rtol=1e-5)


def test_recurrent_gemma_soft_cap_is_found(tok):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model("recurrent_gemma", vocab_size=100, hidden_size=32, num_hidden_layers=3,
                               num_attention_heads=4, intermediate_size=64, lru_width=32, attention_window_size=16,
                               head_dim=8, block_types=["recurrent", "attention", "recurrent"], logits_soft_cap=3.0,
                               bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    mi = ModelInspector(model, tok)
    assert mi.lens.post_head == ["softcap(3)"] and mi.lens.check_deviation <= 1e-4
    prof = mi.profile(["abc"], max_len=3)
    assert np.isfinite(prof.entropy).all() and prof.entropy.shape == (1, 3, 3)


def test_opt_project_out_is_resolved():
    lens = LogitLens(tiny_model("opt"))
    assert [n for n, _ in lens.post_block] == ["model.decoder.final_layer_norm", "model.decoder.project_out"]


def test_unresolvable_blocks_error():
    model = tiny_model("llama")
    model.config.num_hidden_layers = 7
    with pytest.raises(LensResolutionError, match="num_hidden_layers=7"):
        find_blocks(model)


def test_unknown_transform_is_caught():
    model = _patched_logits(tiny_model("llama"), lambda x: x ** 3)  # not elementwise-affine nor a soft-cap
    with pytest.raises(LensResolutionError, match="none of identity, scale or soft-cap"):
        LogitLens(model)


def test_top_k_per_layer(tok):
    mi = ModelInspector(tiny_model("llama"), tok)
    prof = mi.profile(["abc"], max_len=3, top_k=4)
    assert prof.top_ids.shape == (1, 3, mi.n_layers, 4)
    # the last layer's top-1 is the greedy token
    assert (prof.top_ids[0, :, -1, 0] == prof.token_ids[0]).all()
    assert np.all(np.diff(prof.top_logprobs, axis=-1) <= 1e-6)
