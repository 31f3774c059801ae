"""Entropy-Lens: entropy profiles of frozen transformer language models through the logit lens.

* :mod:`model_inspector.lens` — resolve and apply the lens of any HF causal LM (:class:`LogitLens`).
* :mod:`model_inspector.metrics` — streamed vocabulary metrics (entropy, Rényi, moments, KL, top-k).
* :mod:`model_inspector.generation` — KV-cached, batched generation that profiles as it goes.
* :mod:`model_inspector.profile` — typed results ``[prompt, token, layer]``.
* :class:`ModelInspector` — the user-facing object.
"""

from .inspector import ModelInspector
from .lens import LensResolutionError, LogitLens
from .metrics import Metric, kl_divergence, metrics_from_logits, parse_metric, parse_metrics, window_mean
from .profile import Profile, PromptProfile

__version__ = "0.1.0"

__all__ = [
    "ModelInspector",
    "LogitLens",
    "LensResolutionError",
    "Metric",
    "parse_metric",
    "parse_metrics",
    "metrics_from_logits",
    "kl_divergence",
    "window_mean",
    "Profile",
    "PromptProfile",
    "__version__",
]
