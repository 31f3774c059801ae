"""Entropy-Lens: entropy profiles of frozen transformer language models through the logit lens.

* :mod:`model_inspector.lens` — decode residual states through the model's own final norm and head (:class:`LogitLens`).
* :mod:`model_inspector.architecture` — per-architecture knowledge (blocks, logit transforms, residual writers, BOS).
* :mod:`model_inspector.metrics` — the metric registry and streamed vocabulary statistics.
* :mod:`model_inspector.generation` — KV-cached, batched generation that profiles as it goes.
* :mod:`model_inspector.profiling` — typed results ``[prompt, token, layer]``.
* :mod:`model_inspector.experiments` — the experiments (plugins); :mod:`model_inspector.run` — the runner.
* :mod:`model_inspector.loading` — model loading (the original's ``model_manager``).
* :class:`ModelInspector` — the user-facing object.

Names are imported on first use, so ``import model_inspector`` (and every ``--help``) stays fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

#: public name -> module that defines it
_LAZY = {
    "ModelInspector": "inspector",
    "LogitLens": "lens",
    "LensSpec": "architecture",
    "LensResolutionError": "errors",
    "Metric": "metrics",
    "MetricKind": "metrics",
    "register_metric": "metrics",
    "parse_metric": "metrics",
    "parse_metrics": "metrics",
    "metrics_from_logits": "metrics",
    "kl_divergence": "metrics",
    "window_mean": "profiling",
    "Profile": "profiling",
    "PromptProfile": "profiling",
    "DecodeConfig": "decoding",
    "Results": "results",
    "UserError": "errors",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'model_inspector' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
