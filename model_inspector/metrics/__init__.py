"""Metrics of next-token distributions, streamed over the vocabulary.

* :mod:`.registry` — :class:`MetricKind` (everything about a kind of metric), :func:`register_metric`, the spec
  parser (:func:`parse_metrics`) and each tuple's :class:`MetricPlan`;
* :mod:`.stream` — the streaming engine: running log-sum-exp statistics over vocabulary chunks in reused buffers
  (:func:`stream_metrics`, :func:`metrics_from_logits`), top lens tokens from the same pass;
* :mod:`.builtin` — the built-in kinds (Shannon, Rényi, moments, thresholded, nucleus, KL to the last layer), each
  with its float64 reference;
* :mod:`.check` — :func:`check_metric`, the checklist every registered kind passes.

Entropies are in nats. The definitions are in :mod:`.builtin`.
"""

from . import builtin  # noqa: F401 - registers the built-in kinds
from .check import check_all_metrics, check_metric
from .registry import (
    REGISTRY,
    Metric,
    MetricKind,
    MetricPlan,
    Needs,
    SecondPass,
    metric_plan,
    parse_metric,
    parse_metrics,
    register_metric,
    unregister_metric,
)
from .stream import (
    CHUNK_ALIGN,
    DEFAULT_BUDGET_BYTES,
    TOP_IDS,
    TOP_LOGPROBS,
    Stats,
    Workspace,
    chunk_size_for,
    kl_divergence,
    metrics_from_logits,
    stream_metrics,
    top_k_from_chunks,
)

__all__ = ["REGISTRY", "Metric", "MetricKind", "MetricPlan", "Needs", "SecondPass", "metric_plan", "parse_metric",
           "parse_metrics", "register_metric", "unregister_metric", "CHUNK_ALIGN", "DEFAULT_BUDGET_BYTES", "TOP_IDS",
           "TOP_LOGPROBS", "Stats", "Workspace", "chunk_size_for", "kl_divergence", "metrics_from_logits",
           "stream_metrics", "top_k_from_chunks", "check_metric", "check_all_metrics"]
