"""One checklist every registered metric passes (like scikit-learn's ``check_estimator``).

:func:`check_metric` streams logits of several shapes and distributions (random, peaked, near uniform, with ``-inf``
entries) through the engine, in one chunk and in many small ones, and compares each example parameter of the kind
with its float64 ``reference``.
"""

from __future__ import annotations

import numpy as np
import torch

from .registry import REGISTRY, Metric, MetricKind, parse_metrics
from .stream import metrics_from_logits

__all__ = ["check_metric", "check_all_metrics", "example_logits"]


def example_logits(seed: int = 0) -> dict[str, torch.Tensor]:
    """Logits ``[3, 4, 257]`` (the layer axis is -2) of the distributions every metric is checked on."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(3, 4, 257, generator=g, dtype=torch.float64)
    peaked = base.clone()
    peaked[..., 7] += 25.0
    masked = base * 4
    masked[..., 200:] = -torch.inf  # the same entries for every layer (KL stays finite)
    return {"random": (base * 4).float(), "peaked": peaked.float(), "near_uniform": (base * 1e-3).float(),
            "masked": masked.float()}


def check_metric(kind: str | MetricKind, params=None, *, budgets=(10**9, 2000), seed: int = 0) -> int:
    """Check ``kind`` for each of ``params`` (default: its ``examples``) against its float64 reference on every
    :func:`example_logits` distribution and memory budget (one chunk; many chunks of a few entries). Raises
    ``AssertionError`` naming the metric, the distribution and the worst deviation; returns the number of checks."""
    spec = REGISTRY[kind] if isinstance(kind, str) else kind
    if spec.reference is None:
        raise AssertionError(f"metric kind {spec.name!r} has no float64 reference to be checked against")
    params = spec.examples if params is None else params
    n = 0
    for name, logits in example_logits(seed).items():
        x = logits.double().numpy()
        for param in params:
            metric = Metric(spec.name, param)
            (metric,) = parse_metrics([metric])
            want = np.asarray(metric.spec.reference(x, metric.param), dtype=np.float64)
            for budget in budgets:
                got = metrics_from_logits(logits, (metric,), budget_bytes=budget)[metric.key].double().numpy()
                finite = np.isfinite(want)
                if not (np.array_equal(finite, np.isfinite(got)) and np.allclose(
                        got[finite], want[finite], atol=spec.atol, rtol=spec.atol)):
                    worst = float(np.max(np.abs(np.nan_to_num(got - want)))) if got.shape == want.shape else float("nan")
                    raise AssertionError(f"metric {metric.key} ({spec.name}, param {param!r}) on {name} logits, budget "
                                         f"{budget} B: max |stream - float64 reference| = {worst:.3g} > {spec.atol:g}")
                n += 1
    return n


def check_all_metrics() -> dict[str, int]:
    """:func:`check_metric` for every registered kind: ``{kind: checks passed}``."""
    return {name: check_metric(name) for name in list(REGISTRY)}
