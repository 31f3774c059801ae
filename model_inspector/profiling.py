"""Typed results of profiling: :class:`Profile` (generated tokens) and :class:`PromptProfile`."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import UserError

__all__ = ["Profile", "PromptProfile", "window_bounds", "window_mean"]


def window_bounds(n_tokens: int, num_windows: int) -> list[tuple[int, int]]:
    """Contiguous near-equal windows over ``n_tokens`` (as ``numpy.array_split``: the first
    ``n_tokens % num_windows`` windows hold one token more). Raises ``ValueError`` when
    ``num_windows < 1`` or ``num_windows > n_tokens``."""
    if not isinstance(num_windows, (int, np.integer)) or num_windows < 1:
        raise UserError(f"num_windows must be an integer >= 1 (got {num_windows!r})")
    if num_windows > n_tokens:
        raise UserError(
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


def _check(name: str, arr, shape: tuple) -> None:
    if arr is None:
        return
    got = tuple(arr.shape)
    if len(got) != len(shape) or any(s is not None and g != s for g, s in zip(got, shape)):
        raise ValueError(f"{name} has shape {got}, expected {tuple('*' if s is None else s for s in shape)}")


@dataclass
class Profile:
    """Entropy-lens profiles of generated tokens.

    Axis order ``[prompt, token, layer]``:

    * ``metrics[key]``: float32 ``[P, T, L]``, one entry per requested metric (``entropy`` is the
      Shannon entropy in nats). Token ``t`` is the distribution that produced generated token ``t``;
      entries after an early EOS stop are NaN.
    * ``token_ids``: int64 ``[P, T]`` generated ids (-1 after an early stop).
    * ``n_tokens``: int64 ``[P]`` valid generated tokens per prompt.
    * ``texts``: the generated text only (not the prompt), one per prompt.
    * ``residuals`` (optional): float32 ``[P, T, L, d_model]`` last-position block outputs.
    * ``top_ids`` / ``top_logprobs`` (optional): ``[P, T, L, k]`` top decoded tokens per layer
      (log-probabilities in nats).
    """

    prompts: list
    texts: list
    token_ids: np.ndarray
    n_tokens: np.ndarray
    metrics: dict = field(default_factory=dict)
    definitions: dict = field(default_factory=dict)
    residuals: np.ndarray | None = None
    top_ids: np.ndarray | None = None
    top_logprobs: np.ndarray | None = None

    def __post_init__(self):
        p = len(self.prompts)
        if len(self.texts) != p:
            raise ValueError(f"{len(self.texts)} texts for {p} prompts")
        _check("token_ids", self.token_ids, (p, None))
        t = self.token_ids.shape[1]
        _check("n_tokens", self.n_tokens, (p,))
        layers = None
        for k, v in self.metrics.items():
            _check(f"metrics[{k!r}]", v, (p, t, layers))
            layers = v.shape[2]
        _check("residuals", self.residuals, (p, t, layers, None))
        _check("top_ids", self.top_ids, (p, t, layers, None))
        _check("top_logprobs", self.top_logprobs, (p, t, layers, None))

    def __getattr__(self, name):
        metrics = self.__dict__.get("metrics") or {}
        if name in metrics:
            return metrics[name]
        raise AttributeError(f"Profile has no attribute or metric {name!r} (metrics: {', '.join(metrics)})")

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def entropy(self) -> np.ndarray:
        """Shannon entropy in nats, ``[prompt, token, layer]``."""
        if "entropy" not in self.metrics:
            raise AttributeError("Shannon entropy was not requested (metrics=('shannon', ...))")
        return self.metrics["entropy"]

    @property
    def n_layers(self) -> int:
        return next(iter(self.metrics.values())).shape[2]

    def __repr__(self) -> str:
        p, t, n_layers = self.metrics[next(iter(self.metrics))].shape if self.metrics else (len(self.prompts), 0, 0)
        extra = [name for name in ("residuals", "top_ids") if getattr(self, name, None) is not None]
        return (f"Profile({p} prompts x {t} tokens x {n_layers} layers [prompt, token, layer]; metrics "
                f"{', '.join(self.metrics)}; {int(np.sum(self.n_tokens))} generated tokens"
                f"{'; with ' + ', '.join(extra) if extra else ''})")

    def mean_profile(self, key: str = "entropy") -> np.ndarray:
        """Mean over valid generated tokens: ``[prompt, layer]``."""
        return self.windows(key, 1)[:, 0, :]

    def windows(self, key: str = "entropy", num_windows: int = 1) -> np.ndarray:
        """Window means over generated tokens: ``[prompt, window, layer]`` (see ``window_mean``)."""
        return window_mean(self.metrics[key], num_windows, axis=1)

    def take(self, order) -> Profile:
        """The prompts at positions ``order`` (an index array ``[P']``), every array reordered alike."""
        order = np.asarray(order, dtype=np.int64)

        def pick(a):
            return None if a is None else a[order]

        return Profile(prompts=[self.prompts[i] for i in order], texts=[self.texts[i] for i in order],
                       token_ids=self.token_ids[order], n_tokens=self.n_tokens[order],
                       metrics={k: v[order] for k, v in self.metrics.items()}, definitions=dict(self.definitions),
                       residuals=pick(self.residuals), top_ids=pick(self.top_ids),
                       top_logprobs=pick(self.top_logprobs))

    @classmethod
    def concat(cls, parts: list["Profile"]) -> "Profile":
        """Concatenate along the prompt axis (all parts must share metrics, T and L)."""
        if not parts:
            raise ValueError("nothing to concatenate")

        def cat(name):
            vals = [getattr(p, name) for p in parts]
            return None if vals[0] is None else np.concatenate(vals, axis=0)

        return cls(
            prompts=[x for p in parts for x in p.prompts],
            texts=[x for p in parts for x in p.texts],
            token_ids=cat("token_ids"),
            n_tokens=cat("n_tokens"),
            metrics={k: np.concatenate([p.metrics[k] for p in parts], 0) for k in parts[0].metrics},
            definitions=dict(parts[0].definitions),
            residuals=cat("residuals"),
            top_ids=cat("top_ids"),
            top_logprobs=cat("top_logprobs"),
        )


@dataclass
class PromptProfile:
    """Lens metrics at every prompt position (one forward pass, no generation).

    ``metrics[key]``: float32 ``[prompt, position, layer]``, right-padded with NaN past each
    prompt's length; ``token_ids``: int64 ``[prompt, position]`` (-1 padding); ``n_positions``:
    ``[prompt]``. Position ``i`` is the distribution predicting token ``i + 1``.
    """

    prompts: list
    token_ids: np.ndarray
    n_positions: np.ndarray
    metrics: dict = field(default_factory=dict)

    def __post_init__(self):
        p = len(self.prompts)
        _check("token_ids", self.token_ids, (p, None))
        _check("n_positions", self.n_positions, (p,))
        for k, v in self.metrics.items():
            _check(f"metrics[{k!r}]", v, (p, self.token_ids.shape[1], None))

    def __repr__(self) -> str:
        return (f"PromptProfile({len(self.prompts)} prompts x {self.token_ids.shape[1]} positions "
                f"[prompt, position, layer]; metrics {', '.join(self.metrics)})")

    @property
    def entropy(self) -> np.ndarray:
        return self.metrics["entropy"]
