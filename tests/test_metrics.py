"""Streamed vocabulary metrics against direct float64 computations."""

import math

import numpy as np
import pytest
import torch

from model_inspector.metrics import (
    kl_divergence,
    metrics_from_logits,
    parse_metric,
    parse_metrics,
    top_k_from_chunks,
)
from model_inspector.profiling import window_bounds, window_mean

ALL = ["shannon", "renyi:0", "renyi:0.5", "renyi:2", "renyi:5", "renyi:inf", "moment:2", "moment:3",
       "entropy_thresholded", "moment_thresholded:2", "kl_final"]


def direct(logits: np.ndarray) -> dict:
    """float64 reference of every metric; logits [..., L, V] with the layer axis at -2."""
    x = logits.astype(np.float64)
    m = np.max(x, -1, keepdims=True)
    p = np.exp(x - m)
    p /= p.sum(-1, keepdims=True)
    logp = np.where(p > 0, np.log(np.where(p > 0, p, 1)), 0.0)
    v = x.shape[-1]
    out = {"entropy": -(p * logp).sum(-1), "renyi_0": np.log((x > -np.inf).sum(-1)),
           "renyi_inf": -np.log(p.max(-1))}
    for a in (0.5, 2, 5):
        out[f"renyi_{a:g}"] = np.log((p**a).sum(-1)) / (1 - a)
    for k in (2, 3):
        out[f"moment_{k}"] = (p**k).mean(-1)
    thr = 1.0 / v - p.std(-1, keepdims=True)
    keep = p > thr
    q = np.where(keep, p, 0)
    q = q / q.sum(-1, keepdims=True)
    out["entropy_thresholded"] = -(np.where(q > 0, q * np.log(np.where(q > 0, q, 1)), 0)).sum(-1)
    out["moment_thresholded_2"] = np.where(keep, p**2, 0).sum(-1) / keep.sum(-1)
    ref = logp[..., -1:, :]
    out["kl_final"] = (p * (logp - ref)).sum(-1)
    return out


def check(logits: torch.Tensor, budget: int, atol=2e-4, rtol=2e-4, keys=None):
    got = metrics_from_logits(logits, ALL, budget_bytes=budget)
    want = direct(logits.double().numpy())
    for k in keys or want:
        np.testing.assert_allclose(got[k].numpy(), want[k], atol=atol, rtol=rtol, err_msg=k)


@pytest.mark.parametrize("budget", [10**9, 2000])  # one chunk; many chunks of a few entries
def test_random_logits(budget):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 257, generator=g) * 4
    check(logits, budget)


def test_uniform_and_one_hot():
    v = 300
    uniform = torch.zeros(1, 2, v)
    got = metrics_from_logits(uniform, ALL, budget_bytes=4000)
    for key in ("entropy", "renyi_0", "renyi_0.5", "renyi_5", "renyi_inf"):
        np.testing.assert_allclose(got[key].numpy(), math.log(v), rtol=1e-5, err_msg=key)
    np.testing.assert_allclose(got["kl_final"].numpy(), 0, atol=1e-6)
    one_hot = torch.full((1, 2, v), -math.inf)
    one_hot[..., 7] = 3.0
    got = metrics_from_logits(one_hot, ALL, budget_bytes=4000)
    for key in ("entropy", "renyi_0", "renyi_0.5", "renyi_5", "renyi_inf", "entropy_thresholded"):
        np.testing.assert_allclose(got[key].numpy(), 0, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(got["moment_2"].numpy(), 1 / v, rtol=1e-5)


def test_minus_inf_entries():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 100, generator=g) * 3
    logits[..., ::3] = -math.inf  # the same entries masked in every layer: KL stays finite
    check(logits, 1500)
    got = metrics_from_logits(logits, ["renyi:0"])
    np.testing.assert_allclose(got["renyi_0"].numpy(), math.log(66))


def test_fp16_and_bf16_inputs_match_fp32():
    g = torch.Generator().manual_seed(2)
    logits = (torch.randn(2, 3, 500, generator=g) * 30).half()  # large magnitudes
    logits[0, 0, :10] = -math.inf
    for dt in (torch.float16, torch.bfloat16):
        low = logits.to(dt)
        got = metrics_from_logits(low, ALL, budget_bytes=5000)
        want = metrics_from_logits(low.float(), ALL)
        for k in want:
            assert torch.isfinite(got[k]).all(), k
            np.testing.assert_allclose(got[k].numpy(), want[k].numpy(), atol=1e-4, rtol=1e-4, err_msg=k)


def test_kl_between_two_distributions():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(5, 64, generator=g), torch.randn(5, 64, generator=g)
    pa, pb = torch.softmax(a.double(), -1), torch.softmax(b.double(), -1)
    want = (pa * (pa.log() - pb.log())).sum(-1)
    np.testing.assert_allclose(kl_divergence(a, b, budget_bytes=300).numpy(), want.numpy(), rtol=1e-4)


def test_top_k_streamed():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 1000, generator=g)
    chunks = [x[..., i : i + 64] for i in range(0, 1000, 64)]
    ids, logp = top_k_from_chunks(chunks, 5)
    want_v, want_i = torch.log_softmax(x, -1).topk(5, -1)
    assert torch.equal(ids, want_i)
    np.testing.assert_allclose(logp.numpy(), want_v.numpy(), atol=1e-5)


def test_renyi_one_is_shannon_and_aliases():
    assert parse_metric("renyi:1").key == "entropy"
    assert parse_metric(("renyi", 0.5)).key == "renyi_0.5"
    assert parse_metric("min_entropy").key == "renyi_inf"


@pytest.mark.parametrize("bad, msg", [("renyi:-1", "alpha"), ("moment:0", "power"), ("foo", "unknown metric"),
                                      ("renyi", "needs a parameter"), ("renyi:x", "not a number")])
def test_invalid_metric_arguments(bad, msg):
    with pytest.raises(ValueError, match=msg):
        parse_metric(bad)


def test_top_k_invalid():
    with pytest.raises(ValueError, match="k must be"):
        top_k_from_chunks([torch.zeros(2, 3)], 0)


def test_windows():
    assert window_bounds(10, 3) == [(0, 4), (4, 7), (7, 10)]
    x = np.arange(10, dtype=float)[:, None] * np.ones((1, 2))
    np.testing.assert_allclose(window_mean(x, 3)[:, 0], [1.5, 5.0, 8.0])
    np.testing.assert_allclose(window_mean(x, 10), x)
    with pytest.raises(ValueError, match="num_windows must be"):
        window_mean(x, 0)
    with pytest.raises(ValueError, match="larger than the number of tokens"):
        window_mean(x, 11)
    y = x.copy()
    y[8:] = np.nan  # tokens after an early stop are ignored
    np.testing.assert_allclose(window_mean(y, 1)[0, 0], 3.5)


def _renyi64(logits, a):
    """Rényi entropy in float64; for |a - 1| < 1e-5 the cumulant series H - t var/2 + t^2 k3/6 (t = a - 1),
    where the direct formula itself loses digits."""
    logp = torch.log_softmax(logits.double(), -1)
    p = logp.exp()
    t = a - 1
    if abs(t) < 1e-5:
        h = -(p * logp).sum(-1)
        mu = -h
        var = (p * (logp - mu[..., None]) ** 2).sum(-1)
        k3 = (p * (logp - mu[..., None]) ** 3).sum(-1)
        return h - t * var / 2 - t**2 * k3 / 6
    return torch.logsumexp(a * logp, -1) / (1 - a)


@pytest.mark.parametrize("alpha", [0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999, 0.999999, 1 - 1e-7, 1 - 1e-9, 1 + 1e-9,
                                   1 + 1e-7, 1.000001, 1.00001, 1.0001, 1.001, 1.01, 1.09, 1.1, 1.5, 2.0])
def test_renyi_near_one_is_stable(alpha):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(6, 5000, generator=g) * torch.tensor([0.5, 2, 4, 8, 12, 20])[:, None]
    key = parse_metric(("renyi", alpha)).key
    got = metrics_from_logits(x, [("renyi", alpha)], budget_bytes=6 * 700 * 20)[key]
    want = _renyi64(x, alpha)
    err = float((got.double() - want).abs().max())
    assert err < 1e-4, f"alpha={alpha!r}: {err:.2e} nats from float64"


def test_metric_keys_are_exact_and_unique():
    a, b = parse_metric("renyi:0.1234561"), parse_metric("renyi:0.1234562")
    assert a.key == "renyi_0.1234561" and b.key == "renyi_0.1234562"
    assert [m.key for m in parse_metrics(["renyi:0.5", "renyi:2", "renyi:inf", "moment:3"])] == [
        "renyi_0.5", "renyi_2", "renyi_inf", "moment_3"]
    got = metrics_from_logits(torch.randn(2, 50), ["renyi:0.1234561", "renyi:0.1234562"])
    assert set(got) == {"renyi_0.1234561", "renyi_0.1234562"}
    assert len(parse_metrics(["shannon", "renyi:1", "entropy"])) == 1  # one metric named three ways


def test_two_metrics_with_one_key_are_refused(monkeypatch):
    from model_inspector.metrics import Metric

    monkeypatch.setattr(Metric, "key", property(lambda self: "same"))
    with pytest.raises(ValueError, match="share the results key 'same'"):
        parse_metrics(["renyi:0.5", "renyi:2"])


def _nucleus64(logits, top_p):
    logp = torch.log_softmax(logits.double(), -1)
    srt, _ = logp.sort(-1, descending=True)
    p = srt.exp()
    cum = p.cumsum(-1)
    n = (cum < top_p - 1e-12).sum(-1, keepdim=True) + 1  # smallest prefix whose mass reaches top_p
    keep = torch.arange(p.shape[-1]) < n
    mass = torch.where(keep, p, 0).sum(-1)
    q = torch.where(keep, p / mass[..., None], 0)
    return -(torch.where(keep, q * q.clamp_min(1e-300).log(), 0)).sum(-1)


@pytest.mark.parametrize("top_p", [0.1, 0.5, 0.9, 0.99, 1.0])
def test_nucleus_entropy_matches_a_full_sort(top_p):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 3000, generator=g) * torch.tensor([0.1, 0.5, 1, 2, 4, 8, 16, 40])[:, None]
    x[0, :7] = 30.0  # seven equal tokens hold nearly all the mass: ties at the crossing
    key = parse_metric(f"entropy_top_p:{top_p}").key
    got = metrics_from_logits(x, [f"entropy_top_p:{top_p}"], budget_bytes=8 * 500 * 20)[key]
    np.testing.assert_allclose(got.numpy(), _nucleus64(x, top_p).numpy(), atol=1e-4)
    full = metrics_from_logits(x, ["shannon"])["entropy"]
    assert (got <= full + 1e-4).all()


def test_thresholded_entropy_is_usually_inactive():
    """The paper's threshold mean(p) - std(p) is negative for peaked p: nothing is removed."""
    x = torch.randn(4, 2000) * 6
    got = metrics_from_logits(x, ["shannon", "entropy_thresholded"])
    np.testing.assert_allclose(got["entropy_thresholded"].numpy(), got["entropy"].numpy(), atol=1e-5)


def test_chunk_width_is_aligned_and_within_the_budget():
    from model_inspector.metrics import CHUNK_ALIGN, chunk_size_for

    budget = 256 * 2**20
    assert chunk_size_for(30, 49152, budget) == 49152  # batch 1: one product for all layers
    w = chunk_size_for(960, 49152, budget)
    assert w == 13824 and w % CHUNK_ALIGN == 0 and 960 * w * 4 * 5 <= budget < 960 * (w + CHUNK_ALIGN) * 4 * 5
    assert chunk_size_for(10**6, 49152, budget) == 13  # narrower than the alignment: as the budget allows
    with pytest.raises(ValueError, match="budget_bytes must be > 0"):
        chunk_size_for(1, 10, 0)


def test_every_registered_metric_matches_its_reference():
    """The registry-wide checklist (like scikit-learn's check_estimator): each kind's example parameters on random,
    peaked, near-uniform and masked logits, in one chunk and in many, against the kind's float64 reference."""
    from model_inspector.metrics import REGISTRY, check_all_metrics

    counts = check_all_metrics()
    assert set(counts) == set(REGISTRY) and min(counts.values()) >= 8


def test_the_checklist_catches_a_wrong_metric():
    from model_inspector.metrics import MetricKind, Needs, check_metric, register_metric, unregister_metric

    wrong = MetricKind("half_entropy", key=lambda p: "half_entropy", definition=lambda p: "H / 2",
                       needs=lambda p: Needs(t=True), finalize=lambda st, p: st.shannon() / 2,
                       reference=lambda logits, p: direct(logits[..., None, :])["entropy"][..., 0])
    register_metric(wrong)
    try:
        with pytest.raises(AssertionError, match="half_entropy"):
            check_metric("half_entropy")
    finally:
        unregister_metric("half_entropy")
