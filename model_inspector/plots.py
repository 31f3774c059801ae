"""Plots (matplotlib, headless): class profiles against relative depth, token x layer heatmaps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_class_profiles", "plot_token_heatmap", "save_figure"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


_FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def save_figure(fig, path: str | Path, formats=("png",)) -> list[Path]:
    """Save ``fig`` as ``path`` with each suffix in ``formats``, atomically; returns the written paths."""
    import io

    from .storage import atomic_write_bytes

    path = Path(path)
    out = []
    for fmt in formats:
        base = path.name[: -len(path.suffix)] if path.suffix.lower() in _FIGURE_SUFFIXES else path.name
        p = path.with_name(f"{base}.{fmt}")
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=150, bbox_inches="tight")
        atomic_write_bytes(p, buf.getvalue())
        out.append(p)
    _plt().close(fig)
    return out


BAND_NOTE = "line: class mean; band: ±1 std across samples"


def plot_class_profiles(profiles: np.ndarray, labels, *, title: str = "", ylabel: str = "entropy [nats]",
                        ax=None, class_names: dict | None = None):
    """Mean profile per class against relative depth ``(layer + 1) / L`` with a ±1 std band.

    ``profiles``: ``[sample, layer]``; ``labels``: ``[sample]``; ``class_names`` maps a label (as a
    string) to its legend name (``{"0": "incorrect", "1": "correct"}``). Returns the figure."""
    plt = _plt()
    profiles = np.asarray(profiles, dtype=float)
    labels = np.asarray(labels)
    n_layers = profiles.shape[1]
    depth = (np.arange(n_layers) + 1) / n_layers
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for i, cls in enumerate(np.unique(labels)):
        sel = profiles[labels == cls]
        mu, sd = sel.mean(0), sel.std(0)
        color = plt.cm.tab10(i % 10)
        name = (class_names or {}).get(str(cls), str(cls))
        ax.plot(depth, mu, color=color, lw=2, label=f"{name} (n={len(sel)})")
        ax.fill_between(depth, mu - sd, mu + sd, color=color, alpha=0.18, lw=0)
    ax.set_xlabel("relative depth (layer + 1) / L")
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8, title=BAND_NOTE, title_fontsize=7, loc="upper left",
              bbox_to_anchor=(1.01, 1.0))  # outside the data
    if title:
        ax.set_title(title, fontsize=10)
    return fig if fig is not None else ax.figure


def plot_token_heatmap(entropy: np.ndarray, tokens=None, top_tokens=None, *, title: str = "",
                       cbar_label: str = "entropy [nats]"):
    """Heatmap of one generation's profile, ``entropy [token, layer]``; ``tokens`` label the rows
    (generated tokens); ``top_tokens[token][layer]`` (strings), if given, annotate each cell with
    the lens's top token there. The layer axis is relative depth ``(layer + 1) / L``, as in the
    profile plots."""
    plt = _plt()
    entropy = np.asarray(entropy, dtype=float)
    t, n_layers = entropy.shape
    fig, ax = plt.subplots(figsize=(max(7, 0.75 * n_layers + 2.5), max(3, 0.5 * t + 1.8)))  # 8 pt text fits a cell
    im = ax.imshow(entropy, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xlabel("relative depth (layer + 1) / L  (layer index below)")
    ax.set_ylabel("generated token")
    ticks = list(range(0, n_layers, max(1, n_layers // 10)))
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{(j + 1) / n_layers:.2f}\n{j}" for j in ticks], fontsize=7)
    if tokens is not None:
        ax.set_yticks(range(t))
        ax.set_yticklabels([repr(s)[1:-1][:14] for s in tokens], fontsize=8)
    if top_tokens is not None:
        vmax = np.nanmax(entropy)
        for i in range(t):
            for j in range(n_layers):
                ax.text(j, i, str(top_tokens[i][j]).strip()[:6], ha="center", va="center", fontsize=8,
                        color="white" if entropy[i, j] < 0.6 * vmax else "black")
    fig.colorbar(im, ax=ax, label=cbar_label)
    ax.set_title((title + "\n" if title else "") + "cell text: the lens's most probable token at that layer",
                 fontsize=9)
    return fig
