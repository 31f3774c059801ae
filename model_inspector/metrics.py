"""Metrics of next-token distributions, streamed over the vocabulary.

Every metric here is computed from *logits* (unnormalised log-probabilities) that arrive in
vocabulary chunks, so that a full ``[rows, vocab]`` block never has to exist at once. All
accumulation is done in float32 with a running log-sum-exp; entropies are in **nats**.

Definitions (p = softmax(logits) over the V vocabulary entries):

* ``entropy`` (Shannon): ``H = -sum p log p``.
* ``renyi_a`` (Rényi, order a >= 0): ``log(sum p^a) / (1 - a)``; a = 0 is the log of the support
  size (entries whose logit is not ``-inf``), a = 1 is Shannon, a = inf is ``-log max p``.
* ``moment_k`` (k > 0): ``mean(p^k) = sum p^k / V`` (no unit).
* ``entropy_thresholded``: entries with ``p > mean(p) - std(p)`` (population std over the V
  entries, mean = 1/V) are kept and renormalised; Shannon entropy of that distribution (nats).
* ``moment_thresholded_k``: mean of ``p^k`` over the kept entries (no unit).
  With real models this threshold is almost always negative (``std(p) > 1/V`` for any peaked
  distribution), so nothing is removed and the metric equals Shannon (measured: 240 SmolLM2 rows,
  equal to 1e-6); it is kept because the paper defines it.
* ``entropy_top_p_P`` (nucleus entropy, 0 < P <= 1): the Shannon entropy (nats) of the smallest set
  of most probable tokens whose mass reaches P, renormalised (the set top-p sampling draws from).
  Streamed by two refining histogram passes over log p (bins of 1.2e-5 nats at the end), so it
  matches a full sort to about 1e-5 nats.
* ``kl_final``: ``KL(p_layer || p_last_layer)`` in nats, the layer axis being the second-to-last
  axis of the chunks (``[..., layer, vocab]``).

Rényi orders with ``0 < |a - 1| < 0.1`` are accumulated in float64 (in float32 the formula cancels:
its error grows like 3e-7 / |a - 1| nats), and for ``|a - 1| < 1e-6`` the value is interpolated
linearly between Shannon and the order ``1 ± 1e-6`` (the curve is smooth there), so that every
order stays within 1e-4 nats of a float64 computation.

The streamed identities: with running max ``m``, ``s = sum exp(x - m)``,
``t = sum exp(x - m) (x - m)`` and ``s_a = sum exp(a (x - m))``:
``log Z = m + log s``, ``H = log s - t / s``, ``log sum p^a = log s_a - a log s``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

__all__ = [
    "Metric",
    "parse_metric",
    "parse_metrics",
    "stream_metrics",
    "metrics_from_logits",
    "kl_divergence",
    "top_k_from_chunks",
    "window_mean",
    "window_bounds",
    "DEFAULT_BUDGET_BYTES",
]

#: Default memory budget (bytes) for the temporaries of one vocabulary chunk.
DEFAULT_BUDGET_BYTES = 256 * 2**20

_KINDS = ("shannon", "renyi", "moment", "shannon_thresholded", "moment_thresholded", "shannon_top_p", "kl_final")
_ALIASES = {
    "entropy": ("shannon", None),
    "shannon": ("shannon", None),
    "min_entropy": ("renyi", math.inf),
    "kl_final": ("kl_final", None),
    "entropy_thresholded": ("shannon_thresholded", None),
    "shannon_thresholded": ("shannon_thresholded", None),
    "thresholded_entropy": ("shannon_thresholded", None),
}


def _fmt(x: float) -> str:
    """Exact and short: whole numbers without ``.0`` (``2``), others as ``repr`` (``0.1234561``)."""
    if math.isinf(x):
        return "inf"
    x = float(x)
    return str(int(x)) if x.is_integer() and abs(x) < 1e16 else repr(x)


@dataclass(frozen=True)
class Metric:
    """One per-distribution metric. ``key`` is its name in results (``entropy``, ``renyi_0.5``...)."""

    kind: str
    param: float | None = None

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"unknown metric kind {self.kind!r}; choose one of {', '.join(_KINDS)}")
        if self.kind == "renyi":
            if self.param is None or not (self.param >= 0):
                raise ValueError(f"Rényi alpha must be a number >= 0 (got {self.param!r})")
        if self.kind in ("moment", "moment_thresholded"):
            if self.param is None or not (self.param > 0) or math.isinf(self.param):
                raise ValueError(f"moment power must be a finite number > 0 (got {self.param!r})")
        if self.kind == "shannon_top_p":
            if self.param is None or not (0 < self.param <= 1):
                raise ValueError(f"top-p mass must be a number in (0, 1] (got {self.param!r})")

    @property
    def key(self) -> str:
        if self.kind == "shannon" or (self.kind == "renyi" and self.param == 1):
            return "entropy"
        if self.kind == "renyi":
            return f"renyi_{_fmt(self.param)}"
        if self.kind == "moment":
            return f"moment_{_fmt(self.param)}"
        if self.kind == "shannon_thresholded":
            return "entropy_thresholded"
        if self.kind == "moment_thresholded":
            return f"moment_thresholded_{_fmt(self.param)}"
        if self.kind == "shannon_top_p":
            return f"entropy_top_p_{_fmt(self.param)}"
        return "kl_final"

    @property
    def unit(self) -> str:
        return "" if self.kind.startswith("moment") else "nats"

    @property
    def definition(self) -> str:
        return {
            "shannon": "-sum p log p",
            "renyi": f"log(sum p^{_fmt(self.param or 0)}) / (1 - {_fmt(self.param or 0)})",
            "moment": f"mean over vocab of p^{_fmt(self.param or 0)}",
            "shannon_thresholded": "Shannon entropy of p restricted to p > mean(p) - std(p), renormalised "
                                   "(usually nothing is removed: the threshold is negative for peaked p)",
            "shannon_top_p": f"Shannon entropy of the smallest most-probable set of mass >= {_fmt(self.param or 0)}"
                             ", renormalised (nucleus)",
            "moment_thresholded": f"mean of p^{_fmt(self.param or 0)} over entries with p > mean(p) - std(p)",
            "kl_final": "KL(p_layer || p_last_layer)",
        }[self.kind] + (f" [{self.unit}]" if self.unit else "")


def parse_metric(spec) -> Metric:
    """Parse ``"shannon"``, ``"renyi:0.5"``, ``("renyi", 0.5)``, ``"moment:2"``, ``"kl_final"``...

    Raises ``ValueError`` with the accepted forms when ``spec`` is not understood.
    """
    if isinstance(spec, Metric):
        return spec
    if isinstance(spec, (tuple, list)) and len(spec) == 2:
        name, param = spec
    elif isinstance(spec, str):
        name, _, param = spec.strip().partition(":")
        param = param or None
    else:
        raise ValueError(f"cannot read metric {spec!r}: use e.g. 'shannon', 'renyi:0.5', ('moment', 2)")
    name = str(name).strip().lower()
    if name in _ALIASES and param is None:
        kind, p = _ALIASES[name]
        return Metric(kind, p)
    if name in ("renyi", "moment", "moment_thresholded", "entropy_top_p"):
        if param is None:
            raise ValueError(f"metric {name!r} needs a parameter, e.g. '{name}:2'")
        try:
            value = float(param)
        except (TypeError, ValueError):
            raise ValueError(f"metric {name!r}: parameter {param!r} is not a number") from None
        if name == "renyi" and value == 1:
            return Metric("shannon")
        return Metric("shannon_top_p" if name == "entropy_top_p" else name, value)
    raise ValueError(
        f"unknown metric {spec!r}: use shannon, renyi:ALPHA, moment:K, entropy_thresholded, "
        "moment_thresholded:K, entropy_top_p:P, min_entropy or kl_final"
    )


def parse_metrics(specs) -> tuple[Metric, ...]:
    """Parse a sequence of metric specs (a single string is one spec); repeats of the same metric
    are dropped, two different metrics that would share a results key are refused."""
    if isinstance(specs, (str, Metric)):
        specs = [specs]
    out: list[Metric] = []
    for s in specs:
        m = parse_metric(s)
        clash = next((o for o in out if o.key == m.key and o != m), None)
        if clash is not None:
            raise ValueError(f"metrics {clash} and {m} would share the results key {m.key!r}; keep one")
        if m not in out:
            out.append(m)
    if not out:
        raise ValueError("no metric requested")
    return tuple(out)


_NEG = -1e30  # stands for -inf inside the streamed sums


def _chunk_stats(x: torch.Tensor, orders: tuple, need_count: bool, need_kl: bool, need_t: bool):
    """Statistics of one chunk ``x [..., c]`` relative to its own max ``mc``:
    ``s = sum e``, ``t = sum e z``, ``sa[a] = sum exp(a z)``, ``count`` (finite entries) and, with
    ``need_kl``, ``u = sum e (x - x_last)`` (the layer axis is -2), where ``z = x - mc`` and
    ``e = exp(z)``. -inf entries are clamped to a large negative number, so that every product
    stays 0 instead of NaN (0 * -inf). A pure function: ``torch.compile`` fuses it into one pass."""
    x = x if x.dtype == torch.float64 else x.float()
    mc = x.amax(-1, keepdim=True)
    mc = torch.where(torch.isinf(mc), torch.zeros_like(mc), mc)
    z = (x - mc).clamp_(min=_NEG)
    e = torch.exp(z)
    out = {"m": mc.squeeze(-1), "s": e.sum(-1)}
    if need_t:
        out["t"] = (e * z).sum(-1)
    out["sa"] = [(z * a).exp_().sum(-1) for a in orders]
    if need_count:
        out["count"] = (x > -math.inf).sum(-1).float()
    if need_kl:
        zx = z + mc  # x with -inf clamped
        out["u"] = (e * (zx - zx[..., -1:, :])).sum(-1)
    return out


_COMPILED: dict = {}


def _compiled_chunk_stats():
    if "fn" not in _COMPILED:
        _COMPILED["fn"] = torch.compile(_chunk_stats, dynamic=True)
    return _COMPILED["fn"]


class _Stream:
    """Running log-sum-exp statistics of logits chunks ``[..., c]`` (float32), merged chunk by
    chunk (each chunk's statistics are taken relative to its own max, then rescaled)."""

    def __init__(self, orders: Sequence[float], need_count: bool, need_kl: bool, need_t: bool, compile: bool = False):
        self.orders = tuple(orders)
        self.need_count, self.need_kl, self.need_t = need_count, need_kl, need_t
        self.fn = _compiled_chunk_stats() if compile else _chunk_stats
        self.m = None

    def update(self, x: torch.Tensor) -> None:
        """Fold in a chunk ``x [..., c]``."""
        c = self.fn(x, self.orders, self.need_count, self.need_kl, self.need_t)
        mc = torch.where(c["s"] > 0, c["m"], torch.full_like(c["m"], -math.inf))  # all -inf chunk: no weight
        if self.m is None:
            zeros = torch.zeros_like(mc)
            self.m = torch.full_like(mc, -math.inf)
            self.s, self.t, self.u = zeros, zeros.clone(), zeros.clone()
            self.sa = [zeros.clone() for _ in self.orders]
            self.count = zeros.clone()
        m_new = torch.maximum(self.m, mc)
        ref = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)

        def rescale(m):  # exp(m - ref), 0 for an empty (-inf) side
            return torch.where(torch.isinf(m), torch.zeros_like(m), torch.exp(m - ref))

        def shift(m):  # m - ref, 0 for an empty side
            return torch.where(torch.isinf(m), torch.zeros_like(m), m - ref)

        k_old, k_new = rescale(self.m), rescale(mc)
        if self.need_t:  # t relative to ref: (t + (m - ref) s) exp(m - ref)
            self.t = (self.t + shift(self.m) * self.s) * k_old + (c["t"] + shift(mc) * c["s"]) * k_new
        for i, a in enumerate(self.orders):
            self.sa[i] = self.sa[i] * k_old**a + c["sa"][i] * k_new**a
        if self.need_kl:
            self.u = self.u * k_old + c["u"] * k_new
        if self.need_count:
            self.count = self.count + c["count"]
        self.s = self.s * k_old + c["s"] * k_new
        self.m = m_new

    @property
    def log_s(self) -> torch.Tensor:
        return torch.log(self.s)

    @property
    def log_z(self) -> torch.Tensor:
        return self.m + self.log_s


def _chunk_iter(chunks) -> Iterator[torch.Tensor]:
    return iter(chunks() if callable(chunks) else chunks)


def stream_metrics(
    chunks: Callable[[], Iterable[torch.Tensor]] | Iterable[torch.Tensor],
    metrics,
    vocab_size: int,
    *,
    compile: bool = False,
) -> dict[str, torch.Tensor]:
    """Compute ``metrics`` from logits that arrive in vocabulary chunks.

    ``chunks``: an iterable of float tensors ``[..., c_i]`` (same leading axes, chunk widths summing
    to ``vocab_size``) or a zero-argument callable returning a fresh such iterable. A callable is
    required for the thresholded metrics, which need a second pass over the vocabulary.
    ``compile=True`` fuses each chunk's reduction with ``torch.compile`` (one pass over the chunk;
    about 9x faster on CPU, after a compilation of some seconds).
    Returns ``{metric.key: tensor [...]}`` in float32 (entropies in nats).
    """
    metrics = parse_metrics(metrics)
    near = {m.param for m in metrics if m.kind == "renyi" and _near_one(m.param)}
    orders = sorted(
        {
            m.param
            for m in metrics
            if m.kind in ("renyi", "moment") and m.param not in (0, 1) and not math.isinf(m.param)
        } - near
    )
    thr = [m for m in metrics if m.kind in ("shannon_thresholded", "moment_thresholded")]
    nucleus = [m for m in metrics if m.kind == "shannon_top_p"]
    if thr and 2.0 not in orders:
        orders = sorted(set(orders) | {2.0})
    st = _Stream(
        orders,
        need_count=any(m.kind == "renyi" and m.param == 0 for m in metrics),
        need_kl=any(m.kind == "kl_final" for m in metrics),
        need_t=any(m.kind == "shannon" for m in metrics) or any(abs(a - 1) < _TINY for a in near),
        compile=compile,
    )
    # orders near 1 in float64; those within _TINY of 1 use the order 1 +- _TINY (interpolated below)
    orders64 = sorted({a if abs(a - 1) >= _TINY else 1 + math.copysign(_TINY, a - 1) for a in near})
    st64 = _Stream(orders64, need_count=False, need_kl=False, need_t=False) if orders64 else None
    n_seen = 0
    for x in _chunk_iter(chunks):
        n_seen += x.shape[-1]
        st.update(x)
        if st64 is not None:
            st64.update(x.double())
        del x  # free this chunk before the next one is computed
    if st.m is None:
        raise ValueError("no logits were given (empty chunk iterator)")
    if n_seen != vocab_size:
        raise ValueError(f"chunks covered {n_seen} vocabulary entries, expected {vocab_size}")
    log_s = st.log_s
    idx = {a: i for i, a in enumerate(orders)}
    out: dict[str, torch.Tensor] = {}
    for m in metrics:
        if m.kind == "shannon":
            out[m.key] = log_s - st.t / st.s
        elif m.kind == "renyi" and m.param in near:
            out[m.key] = _renyi_near_one(m.param, st, st64, orders64)
        elif m.kind == "renyi":
            a = m.param
            if a == 0:
                out[m.key] = torch.log(st.count)
            elif math.isinf(a):
                out[m.key] = log_s
            else:
                out[m.key] = (torch.log(st.sa[idx[a]]) - a * log_s) / (1 - a)
        elif m.kind == "moment":
            k = m.param
            if k == 1:
                out[m.key] = torch.full_like(log_s, 1.0 / vocab_size)
            else:
                out[m.key] = torch.exp(torch.log(st.sa[idx[k]]) - k * log_s) / vocab_size
        elif m.kind == "kl_final":
            log_z = st.log_z
            kl = (st.u / st.s - log_z + log_z[..., -1:]).clamp_min(0.0)
            out[m.key] = torch.where(kl > 1e29, torch.full_like(kl, math.inf), kl)
    if thr:
        out.update(_thresholded(chunks, thr, st, idx[2.0], vocab_size))
    for m in nucleus:
        out[m.key] = _nucleus_entropy(chunks, st.log_z, m.param)
    return out


#: Rényi orders closer than this to 1 are accumulated in float64.
_NEAR = 0.1
#: ... and closer than this, interpolated between Shannon and the order 1 +- _TINY.
_TINY = 1e-6


def _near_one(a) -> bool:
    return a is not None and not math.isinf(a) and 0 < abs(a - 1) < _NEAR


def _renyi_near_one(a: float, st: _Stream, st64: _Stream, orders64: list) -> torch.Tensor:
    def direct(order):
        i = orders64.index(order)
        return (torch.log(st64.sa[i]) - order * st64.log_s) / (1 - order)

    if abs(a - 1) >= _TINY:
        return direct(a).float()
    ref = 1 + math.copysign(_TINY, a - 1)
    shannon = (st.log_s - st.t / st.s).double()
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
    if not callable(chunks):
        raise ValueError("entropy_top_p needs `chunks` as a callable (more passes over the vocabulary)")
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
        for x in _chunk_iter(chunks):
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


def _thresholded(chunks, metrics, st: _Stream, i2: int, vocab_size: int) -> dict[str, torch.Tensor]:
    if not callable(chunks):
        raise ValueError("thresholded metrics need `chunks` as a callable (two passes over the vocabulary)")
    log_z = st.log_z
    mean_p2 = torch.exp(torch.log(st.sa[i2]) - 2 * st.log_s) / vocab_size
    var = (mean_p2 - 1.0 / vocab_size**2).clamp_min(0.0)
    thr = 1.0 / vocab_size - var.sqrt()
    powers = sorted({m.param for m in metrics if m.kind == "moment_thresholded"})
    mass = torch.zeros_like(log_z)
    plogp = torch.zeros_like(log_z)
    count = torch.zeros_like(log_z)
    pk = [torch.zeros_like(log_z) for _ in powers]
    for x in _chunk_iter(chunks):
        logp = x.float() - log_z.unsqueeze(-1)
        p = torch.exp(logp)
        keep = p > thr.unsqueeze(-1)
        zero = torch.zeros_like(p)
        mass += torch.where(keep, p, zero).sum(-1)
        plogp += torch.where(keep & (p > 0), p * logp, zero).sum(-1)
        count += keep.sum(-1).float()
        for i, k in enumerate(powers):
            pk[i] += torch.where(keep, p**k, zero).sum(-1)
    out = {}
    for m in metrics:
        if m.kind == "shannon_thresholded":
            out[m.key] = -plogp / mass + torch.log(mass)
        else:
            out[m.key] = pk[powers.index(m.param)] / count
    return out


def metrics_from_logits(
    logits: torch.Tensor, metrics, *, budget_bytes: int = DEFAULT_BUDGET_BYTES
) -> dict[str, torch.Tensor]:
    """Metrics of full logits ``[..., vocab]`` (any float dtype), chunked under ``budget_bytes``.

    Returns ``{key: tensor [...]}`` in float32. For ``kl_final`` the layer axis is ``-2``.
    """
    vocab = logits.shape[-1]
    rows = max(1, logits[..., 0].numel())
    size = chunk_size_for(rows, vocab, budget_bytes)
    return stream_metrics(lambda: (logits[..., i : i + size] for i in range(0, vocab, size)), metrics, vocab)


def chunk_size_for(rows: int, vocab: int, budget_bytes: int, n_temporaries: int = 5) -> int:
    """Vocabulary chunk width so that ``rows * width * 4 bytes * n_temporaries <= budget_bytes``."""
    if budget_bytes <= 0:
        raise ValueError(f"budget_bytes must be > 0 (got {budget_bytes})")
    width = budget_bytes // max(1, rows * 4 * n_temporaries)
    return int(min(vocab, max(1, width)))


def kl_divergence(
    logits_p: torch.Tensor, logits_q: torch.Tensor, *, budget_bytes: int = DEFAULT_BUDGET_BYTES
) -> torch.Tensor:
    """``KL(softmax(logits_p) || softmax(logits_q))`` in nats over the last axis, chunked.

    ``logits_p`` and ``logits_q``: ``[..., vocab]`` with equal shapes. Returns float32 ``[...]``.
    """
    if logits_p.shape != logits_q.shape:
        raise ValueError(f"shapes differ: {tuple(logits_p.shape)} vs {tuple(logits_q.shape)}")
    both = torch.stack([logits_p, logits_q], dim=-2)  # [..., 2, vocab]; layer axis -2, last = q
    return metrics_from_logits(both, ["kl_final"], budget_bytes=budget_bytes)["kl_final"][..., 0]


def top_k_from_chunks(chunks: Iterable[torch.Tensor], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` entries of logits arriving in vocabulary chunks ``[..., c]``.

    Returns ``(ids [..., k] int64, log_probs [..., k] float32)``, most probable first.
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1 (got {k!r})")
    best_v = best_i = None
    st = _Stream((), need_count=False, need_kl=False, need_t=False)
    offset = 0
    for x in chunks:
        x = x.float()
        st.update(x)
        kk = min(k, x.shape[-1])
        v, i = x.topk(kk, dim=-1)
        i = i + offset
        offset += x.shape[-1]
        if best_v is not None:
            v, i = torch.cat([best_v, v], -1), torch.cat([best_i, i], -1)
        kk = min(k, v.shape[-1])
        v, order = v.topk(kk, dim=-1)
        best_v, best_i = v, i.gather(-1, order)
    if best_v is None:
        raise ValueError("no logits were given (empty chunk iterator)")
    return best_i, best_v - st.log_z.unsqueeze(-1)


def window_bounds(n_tokens: int, num_windows: int) -> list[tuple[int, int]]:
    """Contiguous near-equal windows over ``n_tokens`` (as ``numpy.array_split``: the first
    ``n_tokens % num_windows`` windows hold one token more). Raises ``ValueError`` when
    ``num_windows < 1`` or ``num_windows > n_tokens``."""
    if not isinstance(num_windows, (int, np.integer)) or num_windows < 1:
        raise ValueError(f"num_windows must be an integer >= 1 (got {num_windows!r})")
    if num_windows > n_tokens:
        raise ValueError(
            f"num_windows={num_windows} is larger than the number of tokens ({n_tokens}); "
            f"use at most {n_tokens}"
        )
    base, extra = divmod(n_tokens, num_windows)
    bounds, start = [], 0
    for w in range(num_windows):
        end = start + base + (1 if w < extra else 0)
        bounds.append((start, end))
        start = end
    return bounds


def window_mean(values, num_windows: int, axis: int = 0):
    """Average ``values`` over ``num_windows`` contiguous token windows along ``axis``.

    ``values``: array or tensor whose ``axis`` is the token axis (e.g. ``[T, L]`` → ``[W, L]``;
    ``[P, T, L]`` with ``axis=1`` → ``[P, W, L]``). NaN entries (tokens after an early stop) are
    ignored. Returns the same kind (numpy or torch) as given.
    """
    is_torch = isinstance(values, torch.Tensor)
    arr = values.detach().cpu().numpy() if is_torch else np.asarray(values)
    n = arr.shape[axis]
    parts = []
    for a, b in window_bounds(n, num_windows):
        sl = np.take(arr, np.arange(a, b), axis=axis)
        with warnings.catch_warnings():  # all-NaN windows (rows stopped early) stay NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            parts.append(np.nanmean(sl, axis=axis))
    out = np.stack(parts, axis=axis)
    return torch.from_numpy(out) if is_torch else out
