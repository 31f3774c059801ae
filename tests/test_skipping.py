"""Skipping blocks: the replay engine against the hook reference, on every tiny architecture and SmolLM2."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

from model_inspector import ModelInspector
from model_inspector.errors import UserError
from model_inspector.experiments.mmlu import mmlu_prompt
from model_inspector.skipping import (
    SkipUnsupported,
    check_replay,
    letter_form,
    letter_logprobs,
    next_token_loss,
    validate_conditions,
)
from model_inspector.skipping.replay import _capture
from model_inspector.skipping.scores import _pad, _rows
from model_inspector.testing import ARCHS, char_tokenizer, tiny_model

#: short multiple-choice prompts of different lengths (the char tokenizer: one token per character)
PROMPTS = [
    "Q: 2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer: ",
    "Which is red?\nAnswer: ",
    "Subject: colours.\n\nQuestion: which one is a long answer here?\nAnswer: ",
    "Hi\nAnswer: ",
]
TOL = 1e-4  # nats


def _inspector(arch: str, **overrides) -> ModelInspector:
    return ModelInspector(tiny_model(arch, **overrides), char_tokenizer())


def _conditions(n: int) -> list[tuple[int, ...]]:
    """No skip, every single block (the first and the last included), two blocks, all but one."""
    return [(), *[(j,) for j in range(n)], (0, n - 1), tuple(range(1, n))]


def _own_letter_logprobs(mi: ModelInspector, prompts, ids) -> np.ndarray:
    """The model's own log-softmax at the last prompt position, one unpadded forward per prompt: [prompt, letter]."""
    out = []
    for p in prompts:
        enc = mi.encode([p])
        with torch.no_grad():
            logits = mi.model(**enc, use_cache=False).logits[0, -1].float()
        out.append(torch.log_softmax(logits, -1)[list(ids)].numpy())
    return np.stack(out)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_replay_equals_hook_reference_and_the_models_own_logits(arch):
    mi = _inspector(arch)
    conds = _conditions(mi.n_layers)
    eng = letter_logprobs(mi, PROMPTS, conds, batch_size=4)
    ref = letter_logprobs(mi, PROMPTS, conds, batch_size=4, method="hooks")
    assert eng.logprob.shape == (len(PROMPTS), len(conds), 4) and eng.logprob.dtype == np.float32
    assert np.abs(eng.logprob - ref.logprob).max() <= TOL
    own = _own_letter_logprobs(mi, PROMPTS, eng.letter_ids)
    assert np.abs(eng.logprob[:, 0] - own).max() <= TOL
    # every skip changes the letters' log-probabilities (the comparison above is not vacuous)
    assert (np.abs(eng.logprob[:, 1:] - eng.logprob[:, :1]).max(axis=(0, 2)) > 1e-3).all()
    loss_eng = next_token_loss(mi, PROMPTS, conds, batch_size=4)
    loss_ref = next_token_loss(mi, PROMPTS, conds, batch_size=4, method="hooks")
    assert np.abs(loss_eng.nll - loss_ref.nll).max() <= TOL
    assert (loss_eng.nll > 0).all()


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_batching_padding_and_stacking_do_not_change_results(arch):
    mi = _inspector(arch)
    conds = _conditions(mi.n_layers)
    lengths = [len(r) for r in _rows(mi, PROMPTS)]
    assert len(set(lengths)) == len(PROMPTS)  # a batch of 4 is left padded
    one = letter_logprobs(mi, PROMPTS, conds, batch_size=1)
    four = letter_logprobs(mi, PROMPTS, conds, batch_size=4)
    assert np.abs(one.logprob - four.logprob).max() <= TOL
    assert check_replay(mi).stack_note == ""
    stacked = letter_logprobs(mi, PROMPTS, conds, batch_size=4, stack=3)
    assert np.abs(stacked.logprob - four.logprob).max() <= TOL
    l1 = next_token_loss(mi, PROMPTS, conds, batch_size=1)
    l4 = next_token_loss(mi, PROMPTS, conds, batch_size=4, stack=2)
    assert np.abs(l1.nll - l4.nll).max() <= TOL


def test_per_layer_masks_are_replayed_with_their_own_block():
    """Gemma-3 with sliding (window 16) and full layers: each block's own captured mask is used."""
    mi = _inspector("gemma3_text", layer_types=["sliding_attention", "full_attention", "sliding_attention"])
    enc = _pad(mi, _rows(mi, PROMPTS))
    cap = _capture(mi, enc)
    masks = [c.kwargs["attention_mask"] for c in cap.calls]
    assert not torch.equal(masks[0], masks[1]) and torch.equal(masks[0], masks[2])
    conds = _conditions(mi.n_layers)
    eng = letter_logprobs(mi, PROMPTS, conds)
    ref = letter_logprobs(mi, PROMPTS, conds, method="hooks")
    assert np.abs(eng.logprob - ref.logprob).max() <= TOL


def test_loss_counts_tokens_and_truncates():
    mi = _inspector("llama")
    texts = ["abcdefgh", "hello world, a longer text"]
    full = next_token_loss(mi, texts, [(), (1,)])
    lengths = [len(r) for r in _rows(mi, texts)]
    assert full.n_tokens.tolist() == [n - 1 for n in lengths]
    cut = next_token_loss(mi, texts, [(), (1,)], max_tokens=5)
    assert cut.n_tokens.tolist() == [4, 4]
    assert not np.allclose(cut.nll[1], full.nll[1])
    expected = (full.nll * full.n_tokens[:, None]).sum(0) / full.n_tokens.sum()
    assert np.allclose(full.mean(), expected) and full.mean().shape == (2,)


# ----------------------------------------------------------------------------- refusals
class _Block(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.lin = nn.Linear(d, d)
        self.calls = 0

    def forward(self, h, attention_mask=None, extra=None, state=None, counting=False):
        self.calls += 1
        out = h + torch.tanh(self.lin(h))
        if extra is not None:
            out = out + extra
        return out + 1e-2 * self.calls if counting else out


class _Toy(nn.Module):
    """A small causal-LM-shaped model whose forward breaks one replay assumption (``mode``)."""

    def __init__(self, mode: str, n: int = 3, d: int = 16, vocab: int = 100):
        super().__init__()
        self.mode = mode
        self.config = PretrainedConfig(num_hidden_layers=n, hidden_size=d, vocab_size=vocab)
        torch.manual_seed(0)
        self.embed = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(_Block(d) for _ in range(n))
        self.norm = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)

    def get_output_embeddings(self):
        return self.lm_head

    def forward(self, input_ids, attention_mask=None, use_cache=None):
        h, first, shared = self.embed(input_ids), None, {}
        for j, block in enumerate(self.layers):
            kw = {}
            if self.mode == "output" and j == 2:
                kw["extra"] = first
            if self.mode == "dict":
                kw["state"] = shared
            if self.mode == "cache":
                kw["state"] = SimpleNamespace(get_seq_length=lambda: 0)
            if self.mode == "stateful":
                kw["counting"] = j == 1
            h = block(h, attention_mask=attention_mask, **kw)
            if self.mode == "twice" and j == 0:
                h = block(h, attention_mask=attention_mask)
            first = h if j == 0 else first
            if self.mode == "between":
                h = h * 1.5
        return SimpleNamespace(logits=self.lm_head(self.norm(h)))


@pytest.mark.parametrize("mode, words", [
    ("output", "receives the output of block 0 as argument 'extra'"),
    ("dict", "receives a dict as argument 'state'"),
    ("cache", "receives a cache"),
    ("stateful", "does not reproduce the model's logits"),
    ("between", "changes the hidden state between blocks 0 and 1"),
    ("twice", "order [0, 0, 1, 2]"),
])
def test_ill_defined_skips_are_refused_with_one_line(mode, words):
    mi = ModelInspector(_Toy(mode), char_tokenizer())
    with pytest.raises(SkipUnsupported) as err:
        letter_logprobs(mi, PROMPTS[:2], [(), (1,)])
    msg = str(err.value)
    assert words in msg and "\n" not in msg and msg.startswith("cannot skip blocks of _Toy: ")


def test_shared_kv_of_a_real_architecture_is_refused():
    """Gemma-4 with KV sharing: later blocks read keys/values that earlier blocks store in a shared dict."""
    cfg = AutoConfig.for_model("gemma4_text", **dict(ARCHS["gemma3_text"], num_hidden_layers=4, num_kv_shared_layers=2,
                                                     layer_types=["sliding_attention", "full_attention"] * 2,
                                                     bos_token_id=1, eos_token_id=2, pad_token_id=0))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    mi = ModelInspector(model, char_tokenizer())  # the lens itself resolves and reproduces the logits
    with pytest.raises(SkipUnsupported, match="receives a KVSharingDict as argument 'shared_kv_states'"):
        letter_logprobs(mi, PROMPTS[:2], [(), (1,)])


def test_plain_toy_is_accepted_and_training_mode_is_refused():
    mi = ModelInspector(_Toy("plain"), char_tokenizer())
    eng = letter_logprobs(mi, PROMPTS[:2], [(), (1,)])
    ref = letter_logprobs(mi, PROMPTS[:2], [(), (1,)], method="hooks")
    assert np.abs(eng.logprob - ref.logprob).max() <= TOL
    mi.model.train()
    with pytest.raises(SkipUnsupported, match="training mode"):
        letter_logprobs(mi, PROMPTS[:2], [(1,)])


@pytest.mark.parametrize("conditions, words", [
    ([(3,)], "block 3 is outside the model's blocks 0..2"),
    ([(0,), (-1,)], "condition 1: block -1 is outside"),
    ([(1, 1)], "lists a block twice"),
    ([("a",)], "must be integers"),
    ([3], "condition 0 must be a tuple"),
    ([], "no conditions given"),
])
def test_conditions_are_validated(conditions, words):
    with pytest.raises(UserError, match=words):
        validate_conditions(conditions, 3)


def test_conditions_are_sorted_tuples():
    assert validate_conditions([(), [2, 0], (np.int64(1),)], 3) == [(), (0, 2), (1,)]


# ----------------------------------------------------------------------------- letter form
def test_letter_form_of_the_character_tokenizer():
    mi = _inspector("llama")
    form, fed, ids = letter_form(mi, PROMPTS)
    tok = mi.tokenizer
    assert (form.text, form.space_moved) == ("A", False) and fed == PROMPTS
    assert ids == tuple(tok.convert_tokens_to_ids(list("ABCD")))
    with pytest.raises(UserError, match="not single tokens") as err:
        letter_form(mi, PROMPTS, letters=["A1", "B1"])
    assert "\n" not in str(err.value)


def _mmlu_prompts(shared_data, n: int, per_subject: bool = False) -> tuple[list[str], list[int]]:
    rows = [json.loads(line) for line in (shared_data / "mmlu_test.jsonl").read_text().splitlines()[:2000]]
    if per_subject:
        firsts = {}
        for r in rows:
            firsts.setdefault(r["subject"], r)
        rows = list(firsts.values())
    rows = rows[:n]
    return [mmlu_prompt(r["question"], r["choices"], r["subject"]) for r in rows], [r["answer"] for r in rows]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "gemma-3-270m"])
def test_letter_form_of_real_tokenizers(name, shared_data, request):
    mi = (request.getfixturevalue("smollm2") if name.startswith("smollm2")
          else ModelInspector(name, device="cpu", dtype="float32"))
    prompts, _ = _mmlu_prompts(shared_data, 8, per_subject=True)
    assert all(p.endswith("Answer: ") for p in prompts)
    form, fed, ids = letter_form(mi, prompts)
    assert (form.text, form.space_moved) == (" A", True)
    assert fed == [p[:-1] for p in prompts]
    assert [mi.tokenizer.decode([i]) for i in ids] == [" A", " B", " C", " D"]
    # the rule's first form does not hold: "A" after "Answer: " does not add one token to the prompt's tokens
    base, with_a = _rows(mi, [prompts[0], prompts[0] + "A"])
    assert with_a[:-1] != base or len(with_a) != len(base) + 1


@pytest.mark.slow
def test_smollm2_single_block_sweep_equals_hooks_and_costs_less(shared_data, smollm2):
    mi = smollm2
    prompts, _ = _mmlu_prompts(shared_data, 4)
    conds = [(j,) for j in range(mi.n_layers)]
    check_replay(mi)  # once per model, before timing
    calls = [0]
    handles = [b.register_forward_hook(lambda *a: calls.__setitem__(0, calls[0] + 1)) for b in mi.lens.blocks]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # compare work, not two threads fighting over a shared machine's cores
    try:
        t0 = time.perf_counter()
        eng = letter_logprobs(mi, prompts, conds, batch_size=4)
        t1 = time.perf_counter()
        n_eng = calls[0]
        ref = letter_logprobs(mi, prompts, conds, batch_size=4, method="hooks")
        t2 = time.perf_counter()
    finally:
        torch.set_num_threads(threads)
        for h in handles:
            h.remove()
    L = mi.n_layers
    assert n_eng == L * (L + 1) // 2 and calls[0] - n_eng == L * L
    assert np.abs(eng.logprob - ref.logprob).max() <= TOL
    assert (t1 - t0) < 1.0 * (t2 - t1), f"replay {t1 - t0:.1f} s vs hooks {t2 - t1:.1f} s"


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_a_skip_equals_the_model_with_that_block_deleted(arch, tok):
    """The replay's skip against a manual forward of a copy of the model without the block (removed from its
    ModuleList, the config told)."""
    import copy

    from model_inspector import ModelInspector

    model = tiny_model(arch, max_position_embeddings=256)
    mi = ModelInspector(model, tok)
    prompts = ["Q: 1+1? A:", "Which is red? A:"]
    got = letter_logprobs(mi, prompts, [(1,)]).logprob[:, 0]
    cut = copy.deepcopy(model)
    blocks = mi.lens.block_path.split(".")
    parent = cut.get_submodule(".".join(blocks[:-1])) if len(blocks) > 1 else cut
    layers = getattr(parent, blocks[-1])
    del layers[1]
    cfg = cut.config
    for name in ("num_hidden_layers", "n_layer"):
        if hasattr(cfg, name):
            setattr(cfg, name, len(layers))
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = cfg.layer_types[:1] + cfg.layer_types[2:]
    for i, blk in enumerate(layers):  # attention layers that carry their index (cache slots, sliding windows)
        for mod in blk.modules():
            if hasattr(mod, "layer_idx"):
                mod.layer_idx = i
    ref = ModelInspector(cut, tok)
    want = letter_logprobs(ref, prompts, [()]).logprob[:, 0]
    np.testing.assert_allclose(got, want, atol=1e-4)
