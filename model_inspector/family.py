"""Model-family clustering (paper, section 3): profiles sampled from the BOS token, aligned on relative depth,
embedded with t-SNE / PCA (the separation score that makes the claim a number is
:func:`model_inspector.evaluation.separation_score`). The experiment that samples the profiles into a results file is
:mod:`model_inspector.experiments.family`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .errors import UserError

__all__ = ["sample_profiles", "cached_profiles", "resample_depth", "align_profiles", "embed", "plot_family_profiles",
           "plot_embedding", "pca_axis_labels"]


def sample_profiles(inspector, n_samples: int = 64, n_tokens: int = 32, temperature: float = 0.7,
                    batch_size: int = 16, seed: int = 42, metric: str = "entropy") -> np.ndarray:
    """``[n_samples, L]``: mean entropy (nats) over ``n_tokens`` tokens sampled at ``temperature``
    from a prompt made of the BOS token alone (the paper: 64 x 32 at 0.7)."""
    if n_samples < 1 or n_tokens < 1:
        raise UserError(f"n_samples and n_tokens must be >= 1 (got {n_samples}, {n_tokens})")
    prof = inspector.profile([""] * n_samples, max_len=n_tokens, sample=True, temperature=temperature, seed=seed,
                             batch_size=batch_size, metrics=["shannon"] if metric == "entropy" else [metric])
    return prof.mean_profile(metric)


def cached_profiles(name: str, compute: Callable[[], np.ndarray], cache_dir: str | Path, tag: str) -> np.ndarray:
    """Profiles ``[N, L]`` of model ``name`` from ``cache_dir/<name>_<tag>.csv``, computed by
    ``compute()`` and written (CSV: one row per sample, columns ``layer_0..``) when absent."""
    path = Path(cache_dir) / f"{Path(name).name}_{tag}.csv"
    if path.exists():
        return pd.read_csv(path).to_numpy(dtype=np.float64)
    arr = np.asarray(compute(), dtype=np.float64)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pd.DataFrame(arr, columns=[f"layer_{i}" for i in range(arr.shape[1])]).to_csv(tmp, index=False)
    tmp.replace(path)
    return arr


def resample_depth(profiles: np.ndarray, n_points: int = 48, method: str = "interpolate") -> np.ndarray:
    """Put profiles ``[..., L]`` on a common grid of ``n_points`` entries.

    ``interpolate``: linear interpolation on relative depth ``(l + 1) / L`` (grid ``(i + 1) / n``),
    so models of different depth line up; ``zero_pad``: the original's padding with zeros up to
    ``n_points`` layers (the padding length leaks the depth into the features)."""
    profiles = np.asarray(profiles, dtype=np.float64)
    n_layers = profiles.shape[-1]
    if method == "zero_pad":
        if n_layers > n_points:
            raise UserError(f"cannot zero-pad {n_layers} layers to {n_points}")
        pad = [(0, 0)] * (profiles.ndim - 1) + [(0, n_points - n_layers)]
        return np.pad(profiles, pad)
    if method != "interpolate":
        raise UserError(f"unknown method {method!r}; use interpolate or zero_pad")
    src = (np.arange(n_layers) + 1) / n_layers
    grid = (np.arange(n_points) + 1) / n_points
    flat = profiles.reshape(-1, n_layers)
    out = np.stack([np.interp(grid, src, row) for row in flat])
    return out.reshape(profiles.shape[:-1] + (n_points,))


def align_profiles(by_model: dict, n_points: int | None = None, method: str = "interpolate"):
    """Stack ``{model: [N_m, L_m]}`` into ``X [sum N_m, n_points]`` and the model of each row."""
    if n_points is None:
        n_points = max(np.asarray(p).shape[-1] for p in by_model.values())
    X = np.concatenate([resample_depth(p, n_points, method) for p in by_model.values()])
    models = np.concatenate([[m] * len(p) for m, p in by_model.items()])
    return X, models


def embed(X: np.ndarray, method: str = "tsne", perplexity: float = 20, seed: int = 42, max_iter: int = 300):
    """2-D embedding ``[N, 2]``: t-SNE (PCA init, as the paper) or PCA (scikit-learn)."""
    X = np.asarray(X, dtype=np.float64)
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(X)
    if method != "tsne":
        raise UserError(f"unknown method {method!r}; use tsne or pca")
    from sklearn.manifold import TSNE

    perp = min(perplexity, max(1.0, (len(X) - 1) / 3))
    return TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed, max_iter=max(250, max_iter)).fit_transform(X)


def plot_family_profiles(by_model: dict, families: dict, *, ylabel: str = "entropy [nats]"):
    """One panel per family: each model's mean profile (± std band) against relative depth."""
    from .plots import _plt

    plt = _plt()
    fams = sorted(set(families[m] for m in by_model))
    fig, axes = plt.subplots(1, len(fams), figsize=(4.2 * len(fams), 3.4), sharey=True, squeeze=False)
    for ax, fam in zip(axes[0], fams):
        models = [m for m in by_model if families[m] == fam]
        for i, m in enumerate(models):
            p = np.asarray(by_model[m])
            depth = (np.arange(p.shape[1]) + 1) / p.shape[1]
            mu, sd = p.mean(0), p.std(0)
            color = plt.cm.viridis(i / max(1, len(models) - 1) * 0.85)
            ax.plot(depth, mu, color=color, lw=2, label=f"{Path(m).name} (L={p.shape[1]})")
            ax.fill_between(depth, mu - sd, mu + sd, color=color, alpha=0.15, lw=0)  # ±1 std across samples
        ax.set_title(f"{fam}  (line: mean, band: ±1 std)", fontsize=9)
        ax.set_xlabel("relative depth (layer + 1) / L")
        ax.set_xlim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize=7)
    axes[0][0].set_ylabel(ylabel)
    fig.tight_layout()
    return fig


def pca_axis_labels(X: np.ndarray, seed: int = 42) -> list[str]:
    """``["PC1 (61.0 % of variance)", "PC2 (...)"]`` for the PCA of ``X [N, features]``."""
    from sklearn.decomposition import PCA

    ratio = PCA(n_components=2, random_state=seed).fit(np.asarray(X, dtype=np.float64)).explained_variance_ratio_
    return [f"PC{i + 1} ({100 * r:.1f} % of variance)" for i, r in enumerate(ratio)]


def _marker_area(sizes, value=None):
    """Marker areas (points^2) growing with the log of the parameter count over the models' range, so that 0.135 B
    and 0.27 B look different (20 to 160); ``value``: the area of one size on that scale."""
    if sizes is None:
        return None
    sizes = np.asarray(sizes, dtype=float)
    lo, hi = np.log(sizes.min()), np.log(sizes.max())
    x = np.log(sizes if value is None else value)
    return 20 + 140 * ((x - lo) / (hi - lo) if hi > lo else 0.5)


def plot_embedding(emb: np.ndarray, families, sizes=None, *, title: str = "t-SNE of entropy profiles", ax=None,
                   axis_labels=("t-SNE 1 (no unit)", "t-SNE 2 (no unit)")):
    """Scatter ``emb [N, 2]`` coloured by family; ``sizes`` (parameters in billions) scale the markers,
    with a size key. ``axis_labels``: e.g. :func:`pca_axis_labels` for a PCA. Draws on ``ax`` when
    given (returns its figure)."""
    from .plots import _plt

    plt = _plt()
    families = np.asarray(families)
    fig, ax = plt.subplots(figsize=(5.6, 4.6)) if ax is None else (ax.figure, ax)
    area = _marker_area(sizes)
    s = 20 if area is None else area
    for i, fam in enumerate(sorted(set(families))):
        sel = families == fam
        ax.scatter(emb[sel, 0], emb[sel, 1], s=s if np.isscalar(s) else s[sel], color=plt.cm.tab10(i % 10),
                   alpha=0.7, edgecolor="white", linewidth=0.4, label=fam)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(axis_labels[0], fontsize=8)
    ax.set_ylabel(axis_labels[1], fontsize=8)
    fam_legend = ax.legend(frameon=False, fontsize=8, title="family", title_fontsize=8, loc="upper left",
                           bbox_to_anchor=(1.01, 1.0))  # outside the data
    if sizes is not None:
        ax.add_artist(fam_legend)
        sizes = np.asarray(sizes, dtype=float)
        keys = sorted(set(np.round(sizes, 3)))[:: max(1, len(set(np.round(sizes, 3))) // 3)]
        handles = [ax.scatter([], [], s=float(_marker_area(sizes, v)), color="grey", alpha=0.6) for v in keys]
        ax.legend(handles, [f"{v:g} B" for v in keys], frameon=False, fontsize=7, title="parameters",
                  title_fontsize=7, loc="lower left", bbox_to_anchor=(1.01, 0.0))
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def depth_agreement(by_model: dict, families: dict, *, n_points: int = 48, n_boot: int = 200, seed: int = 0):
    """How well the mean profiles of models of different depths agree once put on relative depth (claim ii).

    ``by_model``: ``{model: profiles [sample, layer]}`` (entropies, nats); ``families``: ``{model: family}``.
    Each model's mean profile is interpolated on ``n_points`` relative depths; per model pair: the Pearson r of the
    two curves (shape), its 95 % bootstrap CI over each model's samples, and their RMSE in nats (level). Returns a
    DataFrame, one row per pair, with ``same_family``."""
    import itertools

    rng = np.random.default_rng(seed)
    curves, boots = {}, {}
    for m, p in by_model.items():
        p = np.asarray(p, dtype=np.float64)
        curves[m] = resample_depth(p.mean(0), n_points)
        idx = rng.integers(0, len(p), (n_boot, len(p)))
        boots[m] = resample_depth(p[idx].mean(1), n_points)  # [boot, grid]
    rows = []
    for a, b in itertools.combinations(sorted(by_model), 2):
        r = float(np.corrcoef(curves[a], curves[b])[0, 1])
        rb = np.array([np.corrcoef(x, y)[0, 1] for x, y in zip(boots[a], boots[b])])
        rows.append({"model_a": a, "model_b": b, "family_a": families[a], "family_b": families[b],
                     "same_family": families[a] == families[b], "layers_a": np.asarray(by_model[a]).shape[1],
                     "layers_b": np.asarray(by_model[b]).shape[1], "n_a": len(by_model[a]), "n_b": len(by_model[b]),
                     "pearson_r": r, "r_ci_low": float(np.nanpercentile(rb, 2.5)),
                     "r_ci_high": float(np.nanpercentile(rb, 97.5)),
                     "rmse_nats": float(np.sqrt(np.mean((curves[a] - curves[b]) ** 2)))})
    return pd.DataFrame(rows)


def agreement_summary(pairs, families: dict) -> dict:
    """Within- against between-family agreement of :func:`depth_agreement`'s pairs, and what cannot be said:
    ``one_model_families`` (families with a single model: their depth invariance is untestable here)."""
    counts: dict = {}
    for f in families.values():
        counts[f] = counts.get(f, 0) + 1
    out = {"n_models": len(families), "n_families": len(counts),
           "one_model_families": sorted(f for f, c in counts.items() if c == 1)}
    for name, sel in (("within", pairs["same_family"]), ("between", ~pairs["same_family"])) if len(pairs) else ():
        r = pairs.loc[sel, "pearson_r"]
        out[f"{name}_pairs"] = int(len(r))
        out[f"{name}_r_mean"] = float(r.mean()) if len(r) else None
        out[f"{name}_r_std"] = float(r.std(ddof=0)) if len(r) else None
    if out.get("within_pairs") and out.get("between_pairs"):
        from scipy.stats import mannwhitneyu

        w = pairs.loc[pairs["same_family"], "pearson_r"]
        b = pairs.loc[~pairs["same_family"], "pearson_r"]
        out["p_within_gt_between"] = float(mannwhitneyu(w, b, alternative="greater").pvalue)
    return out
