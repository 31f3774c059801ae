"""The built-in metric kinds, each with its float64 reference (p = softmax(logits) over the V vocabulary entries):

* ``entropy`` (Shannon): ``H = -sum p log p`` (nats, not normalised by log V).
* ``renyi_a`` (Rényi, order a >= 0): ``log(sum p^a) / (1 - a)``; a = 0 is the log of the support size (entries whose
  logit is not ``-inf``), a = 1 is Shannon, a = inf (``min_entropy``) is the limit ``-log max p``.
* ``moment_k`` (k > 0): ``mean(p^k) = sum p^k / V`` (no unit).
* ``entropy_thresholded``: entries with ``p > mean(p) - std(p)`` (population std over the V entries, mean = 1/V)
  are kept and renormalised; Shannon entropy of that distribution (nats). ``moment_thresholded_k``: mean of ``p^k``
  over the kept entries (no unit). With real models this threshold is almost always negative (``std(p) > 1/V`` for
  any peaked distribution), so nothing is removed and the metric equals Shannon (measured: 240 SmolLM2 rows, equal
  to 1e-6); it is kept because the paper defines it. One shared second pass serves both kinds.
* ``entropy_top_p_P`` (nucleus entropy, 0 < P <= 1): the Shannon entropy (nats) of the smallest set of most
  probable tokens whose mass reaches P, renormalised (the set top-p sampling draws from). Streamed by two refining
  histogram passes over log p (bins of 1.2e-5 nats at the end), so it matches a full sort to about 1e-5 nats.
* ``kl_final``: ``KL(p_layer || p_last_layer)`` in nats, the layer axis being the second-to-last axis of the chunks
  (``[..., layer, vocab]``).

Rényi orders with ``0 < |a - 1| < 0.1`` are accumulated in float64 (in float32 the formula cancels: its error grows
like 3e-7 / |a - 1| nats), and for ``|a - 1| < 1e-6`` the value is interpolated linearly between Shannon and the
order ``1 ± 1e-6`` (the curve is smooth there), so that every order stays within 1e-4 nats of a float64 computation.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .registry import MetricKind, Needs, SecondPass, fmt_param, register_metric
from .stream import Stats, chunk_iter

__all__ = ["THRESHOLD_PASS", "NUCLEUS_PASS"]

_fmt = fmt_param

#: Rényi orders closer than this to 1 are accumulated in float64.
_NEAR = 0.1
#: ... and closer than this, interpolated between Shannon and the order 1 +- _TINY.
_TINY = 1e-6


def _near_one(a) -> bool:
    return a is not None and not math.isinf(a) and 0 < abs(a - 1) < _NEAR


def _renyi_near_one(a: float, stats: Stats) -> torch.Tensor:
    def direct(order):
        return stats.log_sum_p64(order) / (1 - order)

    if abs(a - 1) >= _TINY:
        return direct(a).float()
    ref = 1 + math.copysign(_TINY, a - 1)
    shannon = stats.shannon().double()
    return (shannon + (a - 1) / (ref - 1) * (direct(ref) - shannon)).float()


#: Bins of each histogram pass of the nucleus entropy, and the log p range of the first pass.
_NUCLEUS_BINS = 4096
_NUCLEUS_FLOOR = -200.0


def _nucleus_entropy(chunks, log_z: torch.Tensor, top_p: float) -> torch.Tensor:
    """Entropy (nats) of the renormalised smallest most-probable set of mass >= ``top_p``.

    Two passes over the chunks, each a histogram of log p (``_NUCLEUS_BINS`` bins) inside the bin
    where the cumulative mass (from the most probable tokens down) crosses ``top_p``: the first over
    ``[_NUCLEUS_FLOOR, 0]``, the second inside that bin (width 1.2e-5 nats). The crossing bin's
    tokens are then nearly equiprobable and are counted whole until the mass reaches ``top_p``."""
    shape = log_z.shape
    lz = log_z.reshape(-1).double()
    rows, nb = lz.shape[0], _NUCLEUS_BINS
    lo = torch.full_like(lz, _NUCLEUS_FLOOR)
    hi = torch.zeros_like(lz)
    ar = torch.arange(rows, device=lz.device)
    for level in range(2):
        above_m = torch.zeros_like(lz)  # mass and sum p log p of the tokens above the range
        above_h = torch.zeros_like(lz)
        width = (hi - lo) / nb
        hm = torch.zeros(rows, nb, dtype=torch.float64, device=lz.device)
        hh, hc = torch.zeros_like(hm), torch.zeros_like(hm)
        for x in chunk_iter(chunks):
            logp = x.reshape(rows, -1).double() - lz[:, None]
            p = torch.exp(logp)
            top = logp >= hi[:, None] if level else torch.zeros_like(logp, dtype=torch.bool)
            inside = (logp >= lo[:, None]) & ~top
            if level:
                above_m += torch.where(top, p, 0).sum(-1)
                above_h += torch.where(top & (p > 0), p * logp, 0).sum(-1)
            b = ((logp - lo[:, None]) / width[:, None]).floor().clamp_(0, nb - 1).long()
            hm.scatter_add_(1, b, torch.where(inside, p, 0))
            hh.scatter_add_(1, b, torch.where(inside & (p > 0), p * logp, 0))
            hc.scatter_add_(1, b, inside.double())
        # cumulative mass from the top bin down; the crossing bin is the highest j with cum[j] >= top_p
        cum_m = above_m[:, None] + hm.flip(-1).cumsum(-1).flip(-1)
        cum_h = above_h[:, None] + hh.flip(-1).cumsum(-1).flip(-1)
        reach = cum_m >= top_p - 1e-12
        j = torch.where(reach.any(-1), nb - 1 - reach.flip(-1).int().argmax(-1), torch.zeros_like(ar))
        nxt = (j + 1).clamp(max=nb - 1)
        above_m = torch.where(j + 1 < nb, cum_m[ar, nxt], above_m)
        above_h = torch.where(j + 1 < nb, cum_h[ar, nxt], above_h)
        lo, hi = lo + j * width, lo + (j + 1) * width
    m, h, c = hm[ar, j], hh[ar, j], hc[ar, j].clamp(min=1)
    need = (top_p - above_m).clamp(min=0)
    k = torch.minimum(torch.ceil(need / (m / c).clamp(min=1e-300) - 1e-9), c)  # whole tokens of the crossing bin
    mass = above_m + k * m / c
    plogp = above_h + k * h / c
    return (-plogp / mass + torch.log(mass)).float().reshape(shape)



class _ThresholdSums:
    """The thresholded pass's sums ``[...]`` over the kept entries: ``mass`` (sum p), ``plogp`` (sum p log p),
    ``count`` and ``pk[k]`` (sum p^k) for each requested power ``k``."""

    def __init__(self, mass, plogp, count, pk):
        self.mass, self.plogp, self.count, self.pk = mass, plogp, count, pk


def _threshold_pass(chunks, stats: Stats, powers) -> _ThresholdSums:
    """One pass over the chunks for every thresholded metric (``powers``: the moments' powers; ``None`` stands
    for the entropy, which needs only the mass sums)."""
    vocab_size = stats.vocab_size
    log_z = stats.log_z
    # mean(p^2) - 1/V^2 cancels: in float32 a near-uniform distribution's variance came out 10 % off (0.14 nats in
    # the thresholded entropy, found by check_metric), so sum p^2 is accumulated in float64
    mean_p2 = torch.exp(stats.log_sum_p64(2.0)) / vocab_size
    var = (mean_p2 - 1.0 / vocab_size**2).clamp_min(0.0)
    thr = (1.0 / vocab_size - var.sqrt()).to(log_z.dtype)
    powers = [k for k in powers if k is not None]
    mass = torch.zeros_like(log_z)
    plogp = torch.zeros_like(log_z)
    count = torch.zeros_like(log_z)
    pk = {k: torch.zeros_like(log_z) for k in powers}
    for x in chunk_iter(chunks):
        logp = x.float() - log_z.unsqueeze(-1)
        p = torch.exp(logp)
        keep = p > thr.unsqueeze(-1)
        zero = torch.zeros_like(p)
        mass += torch.where(keep, p, zero).sum(-1)
        plogp += torch.where(keep & (p > 0), p * logp, zero).sum(-1)
        count += keep.sum(-1).float()
        for k in powers:
            pk[k] += torch.where(keep, p**k, zero).sum(-1)
    return _ThresholdSums(mass, plogp, count, pk)


#: the second pass the thresholded kinds share
THRESHOLD_PASS = SecondPass("threshold", _threshold_pass)
#: the nucleus entropy's histogram passes (one run per requested mass)
NUCLEUS_PASS = SecondPass("nucleus", lambda chunks, stats, ps: {p: _nucleus_entropy(chunks, stats.log_z, p) for p in ps})

# ------------------------------------------------------------------------------------- built-in metrics
def _renyi_needs(a):
    if a == 0:
        return Needs(count=True)
    if math.isinf(a):
        return Needs()
    if _near_one(a):
        if abs(a - 1) < _TINY:
            return Needs(orders64=frozenset({1 + math.copysign(_TINY, a - 1)}), t=True)
        return Needs(orders64=frozenset({a}))
    return Needs(orders=frozenset({a}))


def _renyi(stats: Stats, a):
    if a == 0:
        return torch.log(stats.count)
    if math.isinf(a):
        return stats.log_s
    if _near_one(a):
        return _renyi_near_one(a, stats)
    return stats.log_sum_p(a) / (1 - a)


def _moment(stats: Stats, k):
    if k == 1:
        return torch.full_like(stats.log_s, 1.0 / stats.vocab_size)
    return torch.exp(stats.log_sum_p(k)) / stats.vocab_size



# ------------------------------------------------------------------------------------- float64 references
def _probs(logits):
    x = np.asarray(logits, dtype=np.float64)
    m = np.max(x, -1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    p = np.exp(x - m)
    p /= p.sum(-1, keepdims=True)
    return x, p


def _plogp(p):
    return np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)


def _ref_shannon(logits, _):
    return -_plogp(_probs(logits)[1]).sum(-1)


def _ref_renyi(logits, a):
    x, p = _probs(logits)
    if a == 0:
        return np.log((x > -np.inf).sum(-1))
    if math.isinf(a):
        return -np.log(p.max(-1))
    if a == 1:
        return -_plogp(p).sum(-1)
    return np.log((np.where(p > 0, p, 0.0) ** a).sum(-1)) / (1 - a)


def _ref_moment(logits, k):
    return (_probs(logits)[1] ** k).mean(-1)


def _ref_kept(logits):
    p = _probs(logits)[1]
    return p, p > 1.0 / p.shape[-1] - p.std(-1, keepdims=True)


def _ref_thresholded_entropy(logits, _):
    p, keep = _ref_kept(logits)
    q = np.where(keep, p, 0.0)
    return -_plogp(q / q.sum(-1, keepdims=True)).sum(-1)


def _ref_thresholded_moment(logits, k):
    p, keep = _ref_kept(logits)
    return np.where(keep, p**k, 0.0).sum(-1) / keep.sum(-1)


def _ref_nucleus(logits, top_p):
    p = _probs(logits)[1]
    flat = p.reshape(-1, p.shape[-1])
    out = np.empty(len(flat))
    for i, row in enumerate(flat):
        q = np.sort(row)[::-1]
        n = int(np.searchsorted(np.cumsum(q), top_p - 1e-12) + 1)
        q = q[:n] / q[:n].sum()
        out[i] = -_plogp(q).sum()
    return out.reshape(p.shape[:-1])


def _ref_kl_final(logits, _):
    x, p = _probs(logits)
    logp = np.log(np.where(p > 0, p, 1.0))
    return np.where(p > 0, p * (logp - logp[..., -1:, :]), 0.0).sum(-1)


def _power_check(k):
    return None if k is not None and k > 0 and not math.isinf(k) else f"moment power must be a finite number > 0 (got {k!r})"


register_metric(MetricKind(
    "shannon", aliases={"entropy": None}, key=lambda p: "entropy", definition=lambda p: "-sum p log p",
    needs=lambda p: Needs(t=True), finalize=lambda st, p: st.shannon(), reference=_ref_shannon))
register_metric(MetricKind(
    "renyi", param="alpha", aliases={"min_entropy": math.inf},
    check=lambda a: None if a is not None and a >= 0 else f"Rényi alpha must be a number >= 0 (got {a!r})",
    key=lambda a: f"renyi_{_fmt(a)}",
    definition=lambda a: "-log max p (the limit of log(sum p^a) / (1 - a) as a -> inf)" if math.isinf(a)
    else f"log(sum p^{_fmt(a)}) / (1 - {_fmt(a)})",
    canonical=lambda a: ("shannon", None) if a == 1 else None, needs=_renyi_needs, finalize=_renyi,
    reference=_ref_renyi, examples=(0.0, 0.5, 0.95, 0.9999999, 1.0000001, 2.0, 5.0, math.inf)))
register_metric(MetricKind(
    "moment", param="power", unit="", check=_power_check, key=lambda k: f"moment_{_fmt(k)}",
    definition=lambda k: f"mean over vocab of p^{_fmt(k)}",
    needs=lambda k: Needs() if k == 1 else Needs(orders=frozenset({k})), finalize=_moment, reference=_ref_moment,
    examples=(1.0, 2.0, 3.0)))
register_metric(MetricKind(
    "shannon_thresholded", aliases={"entropy_thresholded": None, "thresholded_entropy": None},
    key=lambda p: "entropy_thresholded",
    definition=lambda p: "Shannon entropy of p restricted to p > mean(p) - std(p), renormalised (usually nothing "
                         "is removed: the threshold is negative for peaked p)",
    needs=lambda p: Needs(orders64=frozenset({2.0})), second_pass=THRESHOLD_PASS,
    finalize=lambda sums, p: -sums.plogp / sums.mass + torch.log(sums.mass), reference=_ref_thresholded_entropy))
register_metric(MetricKind(
    "moment_thresholded", param="power", unit="", check=_power_check, key=lambda k: f"moment_thresholded_{_fmt(k)}",
    definition=lambda k: f"mean of p^{_fmt(k)} over entries with p > mean(p) - std(p)",
    needs=lambda k: Needs(orders64=frozenset({2.0})), second_pass=THRESHOLD_PASS,
    finalize=lambda sums, k: sums.pk[k] / sums.count, reference=_ref_thresholded_moment, examples=(2.0, 3.0)))
register_metric(MetricKind(
    "shannon_top_p", param="p", aliases={"entropy_top_p": None},
    check=lambda p: None if p is not None and 0 < p <= 1 else f"top-p mass must be a number in (0, 1] (got {p!r})",
    key=lambda p: f"entropy_top_p_{_fmt(p)}",
    definition=lambda p: f"Shannon entropy of the smallest most-probable set of mass >= {_fmt(p)}, renormalised "
                         "(nucleus)", second_pass=NUCLEUS_PASS, finalize=lambda result, p: result[p],
    reference=_ref_nucleus, examples=(0.5, 0.9, 1.0)))
register_metric(MetricKind(
    "kl_final", key=lambda p: "kl_final", definition=lambda p: "KL(p_layer || p_last_layer)",
    needs=lambda p: Needs(kl=True), finalize=lambda st, p: st.kl_last(), reference=_ref_kl_final))
