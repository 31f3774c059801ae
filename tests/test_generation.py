"""Generation invariants: batched == single, cached == uncached original, greedy == model.generate."""

import numpy as np
import pytest
import torch
from tiny_models import tiny_model

from model_inspector import ModelInspector
from model_inspector.reference import reference_profile
from model_inspector.run.batching import plan_batches, prompt_seed

PROMPTS = ["Hello world", "A much longer prompt, with padding.", "x", "Once upon a time"]
ARCHS = ["gpt2", "llama", "gemma2", "opt", "bloom"]


@pytest.fixture(scope="module", params=ARCHS)
def mi(request, tok):
    return ModelInspector(tiny_model(request.param), tok)


def test_batched_equals_single(mi):
    batched = mi.profile(PROMPTS, max_len=6, batch_size=4, metrics=["shannon", "renyi:2"])
    single = mi.profile(PROMPTS, max_len=6, batch_size=1, metrics=["shannon", "renyi:2"])
    np.testing.assert_allclose(batched.entropy, single.entropy, atol=1e-4)
    np.testing.assert_allclose(batched.renyi_2, single.renyi_2, atol=1e-4)
    assert (batched.token_ids == single.token_ids).all()
    assert batched.entropy.shape == (4, 6, mi.n_layers)


def test_cached_equals_uncached_original(mi, tok):
    prof = mi.profile(PROMPTS, max_len=6, batch_size=4)
    for i, p in enumerate(PROMPTS):
        ref, ids, res = reference_profile(mi.model, tok, mi.lens, p, max_len=6, keep_residuals=True)
        np.testing.assert_allclose(prof.entropy[i], ref, atol=1e-4)
        assert (prof.token_ids[i] == ids).all()


def test_greedy_text_equals_model_generate(mi, tok):
    prof = mi.profile(PROMPTS, max_len=6, batch_size=4)
    for i, p in enumerate(PROMPTS):
        enc = mi.encode([p])
        out = mi.model.generate(**enc, max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None)
        assert out[0, enc["input_ids"].shape[1]:].tolist() == prof.token_ids[i].tolist()
        assert tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True) == prof.texts[i]


def test_last_layer_is_model_output_entropy(mi, tok):
    prof = mi.profile(PROMPTS[:1], max_len=4)
    enc = mi.encode(PROMPTS[:1])
    ids = torch.cat([enc["input_ids"], torch.as_tensor(prof.token_ids)], 1)
    with torch.no_grad():
        logits = mi.model(input_ids=ids).logits[0, enc["input_ids"].shape[1] - 1 : -1].double()
    logp = torch.log_softmax(logits, -1)
    want = -(logp.exp() * logp).sum(-1).numpy()
    np.testing.assert_allclose(prof.entropy[0, :, -1], want, atol=1e-4)


def test_sampling_is_seeded_and_pure_multinomial(mi, tok):
    a = mi.profile(PROMPTS, max_len=5, sample=True, temperature=2.5, seed=7, batch_size=2)
    b = mi.profile(PROMPTS, max_len=5, sample=True, temperature=2.5, seed=7, batch_size=2)
    c = mi.profile(PROMPTS, max_len=5, sample=True, temperature=2.5, seed=8, batch_size=2)
    assert (a.token_ids == b.token_ids).all() and np.array_equal(a.entropy, b.entropy)
    assert not (a.token_ids == c.token_ids).all()
    # each prompt draws what torch.multinomial on softmax(logits / T) draws from its own seed, in any batch
    for i in (0, 3):
        torch.manual_seed(prompt_seed(7, i))
        _, ids, _ = reference_profile(mi.model, tok, mi.lens, PROMPTS[i], max_len=5, sample=True, temperature=2.5)
        assert a.token_ids[i].tolist() == ids.tolist()


def test_resumed_batches_draw_the_same(mi):
    whole = mi.profile(PROMPTS, max_len=4, sample=True, seed=3, batch_size=2)
    second = mi.profile(PROMPTS[2:], max_len=4, sample=True, seed=3, batch_size=2, first_index=2)
    assert (whole.token_ids[2:] == second.token_ids).all()
    np.testing.assert_allclose(whole.entropy[2:], second.entropy, atol=1e-5)


def test_sampled_draws_do_not_depend_on_the_batching(mi):
    """A prompt's tokens depend on its seed and index only: not on its batch, its neighbours or the order."""
    runs = [mi.profile(PROMPTS, max_len=5, sample=True, seed=11, batch_size=bs, batch_order=order)
            for bs, order in ((4, "length"), (1, "given"), (3, "given"), (2, "length"))]
    for r in runs[1:]:
        assert (r.token_ids == runs[0].token_ids).all()
        np.testing.assert_allclose(r.entropy, runs[0].entropy, atol=1e-4)
    rev = mi.profile(PROMPTS[::-1], max_len=5, sample=True, seed=11, batch_size=2, indices=[3, 2, 1, 0])
    assert (rev.token_ids[::-1] == runs[0].token_ids).all()


def test_length_order_returns_prompts_in_order(mi):
    by_len = mi.profile(PROMPTS, max_len=3, batch_size=2, keep_top_tokens=2, keep_residuals=True)
    given = mi.profile(PROMPTS, max_len=3, batch_size=2, batch_order="given", keep_top_tokens=2, keep_residuals=True)
    assert by_len.prompts == PROMPTS and by_len.texts == given.texts
    assert (by_len.token_ids == given.token_ids).all() and (by_len.top_ids == given.top_ids).all()
    np.testing.assert_allclose(by_len.entropy, given.entropy, atol=1e-4)
    np.testing.assert_allclose(by_len.residuals, given.residuals, atol=1e-4)


def test_plan_batches_sorts_within_windows():
    lengths = [5, 1, 9, 3, 7, 2, 8, 4, 6]
    given = plan_batches(lengths, 2, order="given")
    assert [b.tolist() for b in given] == [[0, 1], [2, 3], [4, 5], [6, 7], [8]]
    by_len = plan_batches(lengths, 2, order="length", window=2)  # windows of 4 prompts
    assert [b.tolist() for b in by_len] == [[2, 0], [3, 1], [6, 4], [7, 5], [8]]
    whole = plan_batches(lengths, 4, order="length", window=100)
    assert [b.tolist() for b in whole] == [[2, 6, 4, 8], [0, 7, 3, 5], [1]]
    padded = sum(max(lengths[i] for i in b) * len(b) for b in whole)
    assert padded < sum(max(lengths[i] for i in b) * len(b) for b in plan_batches(lengths, 4, order="given"))
    with pytest.raises(Exception, match="batch order must be one of"):
        plan_batches(lengths, 2, order="random")


def test_residuals_and_compat_api(mi):
    text, acts = mi.generate_with_activations("Hello", max_len=5, verbose=False)
    assert acts.shape == (5, mi.n_layers, mi.d_model)
    assert text.startswith("Hello")
    ent = mi.calculate_entropy(acts, num_windows=5)
    prof = mi.profile(["Hello"], max_len=5)
    np.testing.assert_allclose(ent, prof.entropy[0], atol=1e-5)
    np.testing.assert_allclose(mi.calculate_entropy(acts, num_windows=1), prof.entropy[0].mean(0, keepdims=True),
                               atol=1e-5)
    assert mi.calculate_entropy(acts, num_windows=2).shape == (2, mi.n_layers)  # 5 tokens: windows of 3 and 2
    batched = mi.calculate_entropy_batched(np.stack([acts, acts]), num_windows=5)
    np.testing.assert_allclose(batched[1], ent, atol=1e-6)
    r1 = mi.calculate_renyi_entropy(acts, 1, num_windows=5)
    np.testing.assert_allclose(r1, ent, atol=1e-6)
    assert (mi.calculate_renyi_entropy(acts, 2, num_windows=5) <= ent + 1e-5).all()
    assert mi.calculate_moment(acts, 2, num_windows=5).shape == (5, mi.n_layers)
    assert mi.calculate_entropy_thresholded(acts, num_windows=1).shape == (1, mi.n_layers)
    assert mi.calculate_moment_thresholded(acts, 2, num_windows=1).shape == (1, mi.n_layers)
    logits = mi.decode_activations(acts)
    assert logits.shape == (5, mi.n_layers, mi.d_vocab)
    anchored = mi.calculate_anchored_renyi_entropy(acts, anchors=list(range(mi.d_vocab)), alpha=1, num_windows=5)
    np.testing.assert_allclose(anchored, ent, atol=1e-4)  # all tokens as anchors = the plain entropy
    two = mi.calculate_anchored_renyi_entropy(acts, anchors=[5, 9], alpha=2)
    assert (two <= np.log(2) + 1e-6).all()
    with pytest.raises(ValueError, match="anchors"):
        mi.calculate_anchored_renyi_entropy(acts, anchors=[])
    with pytest.raises(ValueError, match="larger than the number of tokens"):
        mi.calculate_entropy(acts, num_windows=6)


def test_scaling_hooks_replace_and_undo(mi):
    base = mi.profile(["Hello"], max_len=3).entropy
    mi.add_scale_activations_layer(0, "hook_resid_post", 0.0)
    zeroed = mi.profile(["Hello"], max_len=3).entropy
    mi.add_scale_activations_layer(0, "hook_resid_post", 1.0)  # replaces, does not stack
    np.testing.assert_allclose(mi.profile(["Hello"], max_len=3).entropy, base, atol=1e-6)
    mi.add_scale_activations_layer(1, "hook_resid_post", 0.0)
    mi.undo_scaling_at_layer(1)
    np.testing.assert_allclose(mi.profile(["Hello"], max_len=3).entropy, base, atol=1e-6)
    mi.add_scale_activations_layer(0, "hook_resid_post", 0.0)
    mi.add_scale_activations_layer(1, "hook_mlp_out", 2.0)
    mi.undo_all_scalings()
    assert not mi._scalings
    np.testing.assert_allclose(mi.profile(["Hello"], max_len=3).entropy, base, atol=1e-6)
    assert not np.allclose(zeroed, base)


def test_stop_at_eos_pads_with_nan(mi):
    from tiny_models import char_tokenizer

    free = mi.profile(["ab", "c"], max_len=5)
    eos_tok = char_tokenizer()
    eos_tok.eos_token = eos_tok.convert_ids_to_tokens(int(free.token_ids[0, 1]))  # row 0 stops at step 2
    stopping = ModelInspector(mi.model, eos_tok, verify=False)
    prof = stopping.profile(["ab", "c"], max_len=5, stop_at_eos=True)
    for i in range(2):
        hits = np.flatnonzero(free.token_ids[i] == eos_tok.eos_token_id)
        n = hits[0] + 1 if hits.size else 5
        assert prof.n_tokens[i] == n
        assert np.isnan(prof.entropy[i, n:]).all() and not np.isnan(prof.entropy[i, :n]).any()
        assert (prof.token_ids[i, n:] == -1).all()
        np.testing.assert_allclose(prof.entropy[i, :n], free.entropy[i, :n], atol=1e-5)
    assert prof.n_tokens[0] <= 2


def test_invalid_generation_arguments(mi):
    with pytest.raises(ValueError, match="max_len"):
        mi.profile(["a"], max_len=0)
    with pytest.raises(ValueError, match="temperature"):
        mi.profile(["a"], max_len=2, sample=True, temperature=0)
    with pytest.raises(ValueError, match="batch_size"):
        mi.profile(["a"], max_len=2, batch_size=0)


def test_empty_prompt_is_bos(mi, tok):
    prof = mi.profile([""], max_len=3)
    assert prof.entropy.shape == (1, 3, mi.n_layers)


def test_batch_order_flag_offers_the_library_orders():
    from model_inspector.options import ArgumentParser, add_flags, option
    from model_inspector.run.batching import BATCH_ORDERS

    p = ArgumentParser()
    add_flags(p, ["batch_order"])
    action = next(a for a in p._actions if a.dest == "batch_order")
    assert tuple(option("batch_order").constraint.choices) == BATCH_ORDERS and action.default == BATCH_ORDERS[0]
    assert action.metavar == "{length,given}"


def test_prompt_profiles_do_not_depend_on_left_padding(tok):
    """GPT-2 has absolute positions: a padded batch must give each prompt the profile it gets alone."""
    from model_inspector import ModelInspector
    from model_inspector.testing import tiny_model

    mi = ModelInspector(tiny_model("gpt2"), tok)
    both = mi.profile_prompt(["a long prompt here", "hi"])
    alone = mi.profile_prompt(["hi"])
    n = int(alone.n_positions[0])
    np.testing.assert_allclose(both.entropy[1, :n], alone.entropy[0, :n], atol=1e-5)
