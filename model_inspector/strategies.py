"""Expansion and pruning layers (claim (i) of Entropy-Lens v3): where the entropy rises or falls most.

The entropy difference between consecutive layers, ``dH_l = H_l - H_(l-1)`` (nats for entropies), is read
as a proxy for two token-prediction strategies: **expansion** (``dH > 0``: the lens spreads over more
candidates) and **pruning** (``dH < 0``: fewer). Transition ``j`` goes from layer ``j`` to layer ``j + 1``
and is reported by the layer it ends at, ``layer = j + 1``, and that layer's relative depth
``(layer + 1) / L`` (the project's convention for profiles: the last layer is at depth 1).

Per class (and for all samples together, ``"overall"``): each sample's dH is averaged over its valid
tokens (NaN tokens, after an early stop, are ignored), then over the class's samples. The top-k
expansion transitions are those with the largest positive class-mean dH, the top-k pruning ones the
most negative; ties go to the shallower transition. Each comes with a percentile bootstrap 95 % CI of
its class-mean dH (``n_boot`` resamples of the samples, seeded) and two stabilities: the fraction of
samples whose own rank-r transition is the same one (rank 1: the sample's argmax, argmin for pruning),
and the fraction of bootstrap resamples whose rank-r transition is the same one. Both variants are
computed: ``"all"`` transitions and ``"interior"`` (no transition touching the first or last
``exclude_edges`` layers; the last layer's sharp drop usually dominates ``"all"``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import UserError

__all__ = ["ClassStrategies", "StrategyLayer", "StrategyResult", "entropy_differences", "find_strategy_layers",
           "plot_strategies", "strategies_from_results", "strategy_table", "write_strategies"]

OVERALL = "overall"
VARIANTS = ("all", "interior")
KINDS = ("expansion", "pruning")
BANDS = {"std": "±1 std across samples", "ci": "bootstrap 95 % CI of the mean"}


def entropy_differences(profiles) -> np.ndarray:
    """``dH[..., j] = H[..., j + 1] - H[..., j]``: float64 ``[sample, token, layer - 1]`` from profiles
    ``[sample, token, layer]`` (nats; NaN where a token is missing stays NaN). Transition ``j`` ends at
    layer ``j + 1``; summed over transitions, dH telescopes to ``H_last - H_first`` per token."""
    H = np.asarray(profiles, dtype=np.float64)
    if H.ndim != 3:
        raise UserError(f"profiles must be [sample, token, layer] (3 axes); got shape {H.shape}")
    if H.shape[2] < 2:
        raise UserError(f"profiles need at least 2 layers for a difference; got {H.shape[2]}")
    return np.diff(H, axis=2)


@dataclass(frozen=True)
class StrategyLayer:
    """One top transition of a class: ``kind`` (expansion / pruning), ``variant`` (all / interior),
    ``rank`` (1 = strongest), ``transition`` j (layer j -> j + 1), ``layer`` = j + 1, ``relative_depth``
    = (layer + 1) / L, the class-mean dH and its bootstrap 95 % CI (metric units, nats for entropies),
    ``sample_stability`` and ``bootstrap_stability`` in [0, 1] (NaN with fewer than 2 samples)."""

    kind: str
    variant: str
    rank: int
    transition: int
    layer: int
    relative_depth: float
    mean_dh: float
    ci_low: float
    ci_high: float
    sample_stability: float
    bootstrap_stability: float


@dataclass
class ClassStrategies:
    """One class's dH statistics. Arrays are ``[transition]`` (length L - 1, transition j ends at layer
    j + 1): ``mean_dh`` (class mean of the samples' token means), ``std_dh`` (std across samples,
    ddof 1), ``ci_low`` / ``ci_high`` (bootstrap 95 % CI of the mean). ``n``: samples used; ``n_dropped``:
    samples without any valid token; ``layers``: the top transitions; ``notes``: what could not be found."""

    name: str
    n: int
    n_dropped: int
    mean_dh: np.ndarray
    std_dh: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    layers: list[StrategyLayer] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self):
        shapes = {k: np.shape(getattr(self, k)) for k in ("mean_dh", "std_dh", "ci_low", "ci_high")}
        if len(set(shapes.values())) != 1 or len(shapes["mean_dh"]) != 1:
            raise ValueError(f"class {self.name!r}: [transition] arrays of unequal shapes {shapes}")

    def top(self, variant: str, kind: str) -> list[StrategyLayer]:
        """The top transitions of ``kind`` in ``variant``, rank 1 first (possibly fewer than k, or none)."""
        return [s for s in self.layers if s.variant == variant and s.kind == kind]


@dataclass
class StrategyResult:
    """Expansion and pruning layers of every class (``"overall"`` first). ``n_layers`` = L; ``variants``
    computed (``interior`` needs L >= 2 * exclude_edges + 2); ``aggregation``: ``token`` (generated tokens)
    or ``window`` (a formats file's window means, treated like tokens)."""

    classes: dict[str, ClassStrategies]
    n_layers: int
    k: int
    n_boot: int
    seed: int
    exclude_edges: int
    variants: tuple[str, ...] = VARIANTS
    metric: str = "entropy"
    unit: str = "nats"
    aggregation: str = "token"
    label: str | None = None
    model: str = ""

    def __post_init__(self):
        for c in self.classes.values():
            if len(c.mean_dh) != self.n_layers - 1:
                raise ValueError(f"class {c.name!r} has {len(c.mean_dh)} transitions for {self.n_layers} layers")

    @property
    def layer(self) -> np.ndarray:
        """``[transition]``: the layer each transition ends at (j + 1)."""
        return np.arange(1, self.n_layers)

    @property
    def relative_depth(self) -> np.ndarray:
        """``[transition]``: relative depth (layer + 1) / L of the layer each transition ends at."""
        return (self.layer + 1) / self.n_layers


def _allowed(n_layers: int, variant: str, edges: int) -> np.ndarray:
    """Transition indices of ``variant``: interior drops those touching layers < edges or > L - 1 - edges."""
    j = np.arange(n_layers - 1)
    return j if variant == "all" else j[(j >= edges) & (j + 1 <= n_layers - 1 - edges)]


def _ranked(values: np.ndarray, kind: str) -> np.ndarray:
    """Column order along the last axis, strongest first (stable: ties go to the lower index)."""
    return np.argsort(-values if kind == "expansion" else values, axis=-1, kind="stable")


def _analyse(name: str, X: np.ndarray, n_dropped: int, n_layers: int, variants, *, k: int, n_boot: int,
             seed: int, edges: int) -> ClassStrategies:
    """``X``: ``[sample, transition]`` token-mean dH of the class's valid samples."""
    n, nt = X.shape
    nan = np.full(nt, np.nan)
    notes = []
    if n == 0:
        return ClassStrategies(name, 0, n_dropped, nan, nan.copy(), nan.copy(), nan.copy(),
                               notes=["no sample with a valid token: nothing to report"])
    mean = X.mean(0)
    std, lo, hi, boot = nan.copy(), nan.copy(), nan.copy(), None
    if n < 2:
        notes.append(f"only {n} sample: no spread, CI or stability (need at least 2)")
    else:
        std = X.std(0, ddof=1)
        counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=n_boot)  # [boot, sample]
        boot = counts @ X / n  # [boot, transition]: the resampled class means
        lo, hi = np.percentile(boot, [2.5, 97.5], axis=0)
    layers = []
    for variant in variants:
        idx = _allowed(n_layers, variant, edges)
        for kind in KINDS:
            sign = 1 if kind == "expansion" else -1
            order = idx[_ranked(mean[idx], kind)]
            order = order[sign * mean[order] > 0]
            if len(order) < k:
                word = "positive" if kind == "expansion" else "negative"
                notes.append(f"{variant}: {len(order)} transition(s) with a {word} mean dH, so "
                             f"{'no' if not len(order) else 'only ' + str(len(order))} {kind} layer(s) of the {k} asked")
            for r, j in enumerate(order[:k]):
                s_stab = b_stab = np.nan
                if boot is not None:
                    s_stab = float(np.mean(idx[_ranked(X[:, idx], kind)[:, r]] == j))
                    b_stab = float(np.mean(idx[_ranked(boot[:, idx], kind)[:, r]] == j))
                layers.append(StrategyLayer(kind, variant, r + 1, int(j), int(j) + 1, float((j + 2) / n_layers),
                                            float(mean[j]), float(lo[j]), float(hi[j]), s_stab, b_stab))
    return ClassStrategies(name, n, n_dropped, mean, std, lo, hi, layers, notes)


def find_strategy_layers(profiles, labels=None, *, k: int = 3, n_boot: int = 1000, seed: int = 0,
                         exclude_edges: int = 1, metric: str = "entropy", unit: str = "nats",
                         aggregation: str = "token", label: str | None = None, model: str = "") -> StrategyResult:
    """Expansion and pruning layers per class and overall.

    ``profiles``: float ``[sample, token, layer]`` (nats for entropies; NaN where a token is missing);
    ``labels``: ``[sample]`` class of each sample, or None (overall only). ``k``: top transitions per kind;
    ``n_boot``: bootstrap resamples (seeded by ``seed``) for the 95 % CI and the bootstrap stability;
    ``exclude_edges``: layers dropped at each end for the ``interior`` variant (0: ``all`` only).
    ``metric``, ``unit``, ``aggregation``, ``label``, ``model`` only describe the input for tables and plots.
    Layers are reported as the layer a transition ends at, with relative depth (layer + 1) / L."""
    for name, v, low in (("k", k, 1), ("n_boot", n_boot, 1), ("exclude_edges", exclude_edges, 0)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < low:
            raise UserError(f"{name} must be an integer >= {low} (got {v!r})")
    dH = entropy_differences(profiles)
    n_layers = dH.shape[2] + 1
    with warnings.catch_warnings():  # samples whose tokens are all missing stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        X = np.nanmean(dH, axis=1)  # [sample, transition]
    valid = np.isfinite(X).all(axis=1)
    variants = ["all"]
    if exclude_edges and len(_allowed(n_layers, "interior", exclude_edges)):
        variants.append("interior")
    groups = {OVERALL: np.ones(len(X), dtype=bool)}
    if labels is not None:
        labels = np.asarray([str(v) for v in labels])
        if labels.shape != (len(X),):
            raise UserError(f"{labels.size} labels for {len(X)} samples: give one label per sample")
        if OVERALL in labels:
            raise UserError(f"a class is called {OVERALL!r}, the name of all samples together: rename it")
        groups.update({c: labels == c for c in np.unique(labels)})
    classes = {c: _analyse(c, X[sel & valid], int((sel & ~valid).sum()), n_layers, variants, k=k, n_boot=n_boot,
                           seed=seed, edges=exclude_edges) for c, sel in groups.items()}
    if exclude_edges and "interior" not in variants:
        classes[OVERALL].notes.append(f"{n_layers} layers: too few for the interior variant "
                                      f"(needs {2 * exclude_edges + 2} with exclude_edges={exclude_edges})")
    return StrategyResult(classes, n_layers, k, n_boot, seed, exclude_edges, tuple(variants), metric, unit,
                          aggregation, label, model)


TABLE_COLUMNS = ["class", "n_samples", "n_dropped", "variant", "kind", "rank", "from_layer", "layer", "relative_depth",
                 "mean_dH", "ci95_low", "ci95_high", "std_dH", "sample_stability", "bootstrap_stability", "unit",
                 "metric", "aggregation", "n_boot", "seed", "note"]


def strategy_table(result: StrategyResult):
    """One row per class x variant x kind x rank (``pandas.DataFrame``, columns ``TABLE_COLUMNS``): ``layer``
    is where the transition ends (``from_layer`` = layer - 1), ``relative_depth`` = (layer + 1) / L; ``mean_dH``,
    its bootstrap 95 % CI and ``std_dH`` (across samples) are in ``unit``. A kind with no transition of its
    sign gets one row with an empty rank and the reason in ``note``."""
    import pandas as pd

    rows = []
    for c in result.classes.values():
        base = {"class": c.name, "n_samples": c.n, "n_dropped": c.n_dropped, "unit": result.unit,
                "metric": result.metric, "aggregation": result.aggregation, "n_boot": result.n_boot, "seed": result.seed}
        note = "; ".join(n for n in c.notes if not n.startswith(tuple(f"{v}: " for v in VARIANTS)))
        for variant in result.variants:
            for kind in KINDS:
                top = c.top(variant, kind)
                for s in top:
                    rows.append(base | {"variant": variant, "kind": kind, "rank": s.rank, "from_layer": s.transition,
                                        "layer": s.layer, "relative_depth": s.relative_depth, "mean_dH": s.mean_dh,
                                        "ci95_low": s.ci_low, "ci95_high": s.ci_high,
                                        "std_dH": float(c.std_dh[s.transition]), "sample_stability": s.sample_stability,
                                        "bootstrap_stability": s.bootstrap_stability, "note": note or None})
                if not top:
                    why = [n for n in c.notes if n.startswith(f"{variant}: ") and kind in n]
                    rows.append(base | {"variant": variant, "kind": kind, "note": "; ".join(why or [note])})
    df = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    for col in ("rank", "from_layer", "layer"):
        df[col] = df[col].astype("Int64")
    df["note"] = df["note"].astype("string")  # missing (no note) stays <NA>, also when no row has one
    return df


def write_strategies(result: StrategyResult, csv_path, record: dict | None = None) -> Path:
    """Write :func:`strategy_table` (plus the constant columns of ``record``: the results file's identity...) as
    CSV, atomically; returns the path."""
    from .storage import atomic_write_bytes

    path = Path(csv_path)
    atomic_write_bytes(path, strategy_table(result).assign(**(record or {})).to_csv(index=False).encode())
    return path


def plot_strategies(result: StrategyResult, *, band: str = "std", title: str | None = None, ax=None):
    """Class-mean dH against relative depth (layer + 1) / L of the layer each transition ends at, one line
    per class (``overall`` dashed, without band, when there are classes) with a band: ``band="std"`` ±1 std
    across samples, ``"ci"`` the bootstrap 95 % CI of the mean. A zero line; the top-1 expansion (▲) and
    pruning (▼) transitions marked, filled for the interior variant, hollow for all transitions; the legend
    outside the axes. Returns the figure."""
    from .plots import _plt

    if band not in BANDS:
        raise UserError(f"band must be one of {', '.join(BANDS)} (got {band!r})")
    plt = _plt()
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(7.6, 4.2))
    x = result.relative_depth
    names = [c for c in result.classes if c != OVERALL] or [OVERALL]
    if len(result.classes) > 1:
        o = result.classes[OVERALL]
        ax.plot(x, o.mean_dh, color="black", lw=1.2, ls="--", label=f"{OVERALL} (n={o.n}, no band)")
    for i, name in enumerate(names):
        c, color = result.classes[name], plt.cm.tab10(i % 10)
        ax.plot(x, c.mean_dh, color=color, lw=2, label=f"{name} (n={c.n})")
        lo, hi = (c.mean_dh - c.std_dh, c.mean_dh + c.std_dh) if band == "std" else (c.ci_low, c.ci_high)
        ax.fill_between(x, lo, hi, color=color, alpha=0.18, lw=0)
        for variant in result.variants:
            for kind, marker in zip(KINDS, ("^", "v")):
                for s in c.top(variant, kind)[:1]:
                    ax.plot(s.relative_depth, s.mean_dh, marker=marker, ms=9, ls="none", mec=color, mew=1.5,
                            mfc=color if variant == "interior" else "none")
    ax.axhline(0, color="grey", lw=0.8)
    for variant in result.variants:  # legend keys for the markers
        for kind, marker in zip(KINDS, ("^", "v")):
            ax.plot([], [], marker=marker, ls="none", color="grey", mfc="grey" if variant == "interior" else "none",
                    label=f"top {kind}, {'interior (edges excluded)' if variant == 'interior' else 'all transitions'}")
    unit = f" [{result.unit}]" if result.unit else ""
    ax.set_xlabel("relative depth (layer + 1) / L of the layer a transition ends at")
    ax.set_ylabel(f"mean dH = H_l - H_(l-1){unit}")
    ax.set_xlim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8,
              title=f"line: class mean of per-sample\n{result.aggregation} means; band: {BANDS[band]}", title_fontsize=7)
    n = result.classes[OVERALL].n
    ax.set_title(title or f"{result.model + ': ' if result.model else ''}{result.metric} differences between layers"
                 f"{f' by {result.label}' if result.label else ''}, n={n} samples", fontsize=9)
    return fig if fig is not None else ax.figure


def _stack(values: list, metric: str) -> np.ndarray:
    """Per-sample ``[T, L]`` arrays -> ``[sample, T, L]``, NaN-padding shorter T; all must share L."""
    arrs = [np.asarray(v, dtype=np.float64) for v in values]
    if any(a.ndim != 2 for a in arrs):
        raise UserError(f"{metric!r} holds no [token, layer] profiles; pick a profile column with --metric")
    widths = {a.shape[1] for a in arrs}
    if len(widths) > 1:
        raise UserError(f"{metric!r} profiles have different layer counts {sorted(widths)}: one model per file")
    out = np.full((len(arrs), max(a.shape[0] for a in arrs), widths.pop()), np.nan)
    for i, a in enumerate(arrs):
        out[i, : a.shape[0]] = a
    return out


def strategies_from_results(res, *, metric: str | None = None, label: str | None = None, k: int = 3,
                            n_boot: int = 1000, seed: int = 0, exclude_edges: int = 1) -> StrategyResult:
    """:func:`find_strategy_layers` on a :class:`~model_inspector.results.Results`: ``metric`` is a profile
    column (default ``entropy``, else the file's first); ``label="prompt"`` classes samples by the first word
    of their prompt label (the TinyStories task class), any other per-sample column is used as is, None gives
    ``overall`` only. A formats file's ``[window, layer]`` window means are treated like tokens
    (``aggregation="window"``)."""
    if len(res) == 0:
        raise UserError("the results hold no samples")
    metrics = res.metric_keys
    if metric is None:
        if not metrics:
            raise UserError(f"no [token, layer] profile column in this file; it has: {', '.join(res.keys())}")
        metric = "entropy" if "entropy" in metrics else metrics[0]
    if metric not in metrics:
        raise UserError(f"unknown metric {metric!r}; this file's profile columns: {', '.join(metrics) or 'none'} "
                        "(choose one with --metric)")
    labels = None
    if label is not None:
        if label not in res.label_keys:
            raise UserError(f"unknown label {label!r}; this file's per-sample labels: "
                            f"{', '.join(res.label_keys) or 'none'} (choose one with --label)")
        labels = [str(v).split("_")[0] if label == "prompt" else v for v in res[label]]
    meta = res.metadata or {}
    windows = meta.get("layout") == "format_records" or "num_windows" in meta
    model = (meta.get("identity") or {}).get("model") or meta.get("model_id") or \
        (str(res["model"][0]) if "model" in res and len(res["model"]) else "")
    return find_strategy_layers(_stack(res[metric], metric), labels, k=k, n_boot=n_boot, seed=seed,
                                exclude_edges=exclude_edges, metric=metric,
                                unit="" if metric.startswith("moment") else "nats",
                                aggregation="window" if windows else "token", label=label, model=model)
