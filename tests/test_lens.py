"""The lens is exact at every layer of 14 architectures, against the model's own forward."""

import numpy as np
import pytest
import torch
from torch import nn

from model_inspector import LensResolutionError, LogitLens, ModelInspector
from model_inspector.lens import find_blocks
from tiny_models import ARCHS, tiny_model

PROMPTS = ["Hello world", "A longer prompt, with padding."]


def own_entropy_truncated(model, lens, input_ids, attention_mask, layer):
    """Independent computation: run the model's own forward with only blocks[:layer+1] kept, so its
    own final norm, head and logit transforms decode block `layer`'s output. float64 entropy."""
    parent_path, _, attr = lens.block_path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    full = getattr(parent, attr)
    setattr(parent, attr, nn.ModuleList(list(full)[: layer + 1]))
    try:
        with torch.no_grad():
            logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
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
    from model_inspector.generation import encode_prompts

    enc = encode_prompts(tok, PROMPTS)
    mask = enc["attention_mask"].bool()
    worst = 0.0
    for layer in range(mi.n_layers):
        want = own_entropy_truncated(model, mi.lens, enc["input_ids"], enc["attention_mask"], layer)
        for i in range(len(PROMPTS)):
            got = pp.entropy[i, : pp.n_positions[i], layer]
            worst = max(worst, float(np.abs(got - want[i][mask[i]].numpy()).max()))
    assert worst < 1e-4, f"{arch}: worst deviation {worst:.2e} nats"


def test_softcap_is_applied(tok):
    lens = LogitLens(tiny_model("gemma2"))
    assert lens.post_head == ["softcap(2)"]
    resid = torch.randn(4, lens.d_model) * 50
    assert lens.logits(resid).abs().max() <= 2.0 + 1e-5


def test_post_head_scales_from_config(tok):
    model = tiny_model("llama")
    model.config.logits_scaling = 4.0  # Granite-style: the lens must divide; the model does not -> mismatch
    with pytest.raises(LensResolutionError, match="does not reproduce"):
        LogitLens(model)


def test_opt_project_out_is_resolved():
    lens = LogitLens(tiny_model("opt"))
    assert [n for n, _ in lens.post_block] == ["model.decoder.final_layer_norm", "model.decoder.project_out"]


def test_unresolvable_blocks_error():
    model = tiny_model("llama")
    model.config.num_hidden_layers = 7
    with pytest.raises(LensResolutionError, match="num_hidden_layers=7"):
        find_blocks(model)


def test_unknown_transform_is_caught():
    model = tiny_model("llama")

    class Scaled(nn.Module):  # a head whose output the model rescales in code we do not know
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    orig_forward = model.forward

    def forward(*a, **k):
        out = orig_forward(*a, **k)
        out.logits = out.logits * 3.0
        return out

    model.forward = forward
    with pytest.raises(LensResolutionError, match="unrecognised transform"):
        LogitLens(model)


def test_top_k_per_layer(tok):
    mi = ModelInspector(tiny_model("llama"), tok)
    prof = mi.profile(["abc"], max_len=3, top_k=4)
    assert prof.top_ids.shape == (1, 3, mi.n_layers, 4)
    # the last layer's top-1 is the greedy token
    assert (prof.top_ids[0, :, -1, 0] == prof.token_ids[0]).all()
    assert np.all(np.diff(prof.top_logprobs, axis=-1) <= 1e-6)
