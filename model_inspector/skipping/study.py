"""Claim (iv): does skipping the layers of maximal expansion or pruning hurt unequally, and more than random layers?

* :func:`strategy_blocks` — the top-k expansion and pruning blocks of calibration profiles (block ``l`` makes the
  change ``dH_l = H_l - H_(l-1)``; the first block has no ``dH``);
* :func:`plan_conditions` — the conditions: none; the top-1 and top-k expansion and pruning blocks; ``n_random``
  seeded draws of 1 and of k random blocks; a sweep that skips every single block in turn;
* :func:`summarize` — one row per condition: n, the score (accuracy from the four letters' log-likelihoods, or the
  next-token loss) with its 95 % CI, its change against no skip with a paired test, where a strategy condition
  falls among the random draws of its size, and, over the sweep, the rank correlations between each block's damage,
  its ``dH`` and its depth (is the damage about the strategy, or about the layer's position?).

Scores are per item and condition (``[item, condition]``): higher is better (``correct``: 1/0; ``logp``: the log
probability of the right letter among the four, nats; ``-nll``: minus the mean next-token loss, nats/token).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from ..errors import UserError

__all__ = ["Condition", "strategy_blocks", "plan_conditions", "summarize", "sweep_correlations", "plot_study"]


@dataclass(frozen=True)
class Condition:
    """A set of skipped blocks: ``name`` (``none``, ``expansion_top1``, ``random3_07``, ``sweep_12``...), ``kind``
    (none, expansion, pruning, random, sweep) and ``blocks`` (sorted 0-based block indices)."""

    name: str
    kind: str
    blocks: tuple


def strategy_blocks(profiles, *, k: int = 3, exclude_edges: int = 0) -> dict:
    """The expansion and pruning blocks of ``profiles`` ``[sample, layer]`` (entropies, nats; one profile per
    calibration item): ``{"expansion": [block, ...], "pruning": [...], "dH": [layer-1] mean dH of the transitions
    (transition j ends at block j + 1), "n": samples}``, most extreme first, at most ``k`` each, only positive
    (negative) mean dH counted. ``exclude_edges``: leave out the transitions into the first ``exclude_edges``
    blocks after block 0 and into the last ``exclude_edges`` blocks."""
    from ..strategies import find_strategy_layers

    p = np.asarray(profiles, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 3:
        raise UserError(f"calibration profiles must be [sample, layer] with at least 3 layers (got {p.shape})")
    res = find_strategy_layers(p[:, None, :], k=k, n_boot=200, seed=0, exclude_edges=max(1, exclude_edges))
    overall = res.classes["overall"]
    variant = "interior" if exclude_edges else "all"
    out = {"dH": overall.mean_dh.tolist(), "n": overall.n, "variant": variant}
    for kind in ("expansion", "pruning"):
        out[kind] = [int(s.layer) for s in overall.top(variant, kind)][:k]
    return out


def plan_conditions(n_layers: int, expansion, pruning, *, k: int = 3, n_random: int = 20, seed: int = 0,
                    sweep: bool = True, candidates=None) -> list[Condition]:
    """The skip conditions of a study (see the module). Random draws pick distinct blocks among ``candidates``
    (default: blocks 1..L-1, those with a dH), seeded by ``seed``; a draw equal to a strategy set is kept (it is a
    draw)."""
    cand = list(range(1, n_layers) if candidates is None else candidates)
    out = [Condition("none", "none", ())]
    for kind, blocks in (("expansion", list(expansion)), ("pruning", list(pruning))):
        if blocks:
            out.append(Condition(f"{kind}_top1", kind, (blocks[0],)))
        if len(blocks) >= 2 and k >= 2:
            out.append(Condition(f"{kind}_top{min(k, len(blocks))}", kind, tuple(sorted(blocks[:k]))))
    rng = np.random.default_rng(seed)
    for size in sorted({1, k}):
        if size > len(cand):
            continue
        for d in range(n_random):
            out.append(Condition(f"random{size}_{d:02d}", "random", tuple(sorted(rng.choice(cand, size, replace=False)
                                                                                  .tolist()))))
    if sweep:
        out += [Condition(f"sweep_{b}", "sweep", (b,)) for b in range(n_layers)]
    return out


def _wilson(successes: int, n: int) -> tuple[float, float]:
    ci = stats.binomtest(int(successes), int(n)).proportion_ci(0.95, method="wilson")
    return float(ci.low), float(ci.high)


def _mcnemar(a, b) -> float:
    """Exact McNemar p-value of paired 0/1 outcomes (two-sided): the discordant pairs are a fair coin under H0."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    worse, better = int(np.sum(a & ~b)), int(np.sum(~a & b))
    return 1.0 if worse + better == 0 else float(stats.binomtest(min(worse, better), worse + better, 0.5).pvalue)


def _paired(diff) -> tuple[float, float, float]:
    """Mean of paired differences, half-width of its 95 % t interval, and the two-sided p-value (t-test)."""
    diff = np.asarray(diff, dtype=np.float64)
    n = len(diff)
    if n < 2 or np.allclose(diff, diff[0]):
        return float(diff.mean()), 0.0, (1.0 if np.allclose(diff, 0) else 0.0)
    se = diff.std(ddof=1) / np.sqrt(n)
    return float(diff.mean()), float(stats.t.ppf(0.975, n - 1) * se), float(stats.ttest_1samp(diff, 0).pvalue)


def summarize(conditions: list[Condition], score, *, correct=None, unit: str = "nats") -> list[dict]:
    """One row per condition. ``score``: ``[item, condition]`` (higher is better, see the module); ``correct``:
    ``[item, condition]`` 0/1 for an accuracy (MMLU), or ``None``. Against ``none`` (the first condition): the
    paired change of the score (mean, 95 % CI, p) and of the accuracy (McNemar exact p); strategy conditions also
    get their place among the random draws of the same size (``p_vs_random``: ``(1 + the draws whose score change
    is at least as negative, i.e. as damaging) / (1 + n_random)``, an empirical p-value for "more damaging than
    random blocks of the same number"; ``n_random``)."""
    score = np.asarray(score, dtype=np.float64)
    n, m = score.shape
    if m != len(conditions) or conditions[0].kind != "none":
        raise UserError("the first condition must be 'none' and score must be [item, condition]")
    rows = []
    for j, c in enumerate(conditions):
        d, hw, p = _paired(score[:, j] - score[:, 0])
        row = {"condition": c.name, "kind": c.kind, "blocks": " ".join(map(str, c.blocks)) or "-", "n_items": n,
               "score": float(score[:, j].mean()), "score_change": d, "score_change_ci95": hw, "p_score": p,
               "unit": unit}
        if correct is not None:
            ok = np.asarray(correct)[:, j].astype(bool)
            lo, hi = _wilson(int(ok.sum()), n)
            row.update(accuracy=float(ok.mean()), accuracy_ci_low=lo, accuracy_ci_high=hi,
                       accuracy_change=float(ok.mean() - np.asarray(correct)[:, 0].mean()),
                       p_accuracy=_mcnemar(np.asarray(correct)[:, 0], ok))
        rows.append(row)
    by_size: dict[int, list[float]] = {}
    for c, r in zip(conditions, rows):
        if c.kind == "random":
            by_size.setdefault(len(c.blocks), []).append(r["score_change"])
    for c, r in zip(conditions, rows):
        draws = by_size.get(len(c.blocks))
        if c.kind in ("expansion", "pruning") and draws:
            r["p_vs_random"] = float((1 + np.sum(np.asarray(draws) <= r["score_change"])) / (1 + len(draws)))
            r["n_random"] = len(draws)
            r["random_mean_change"] = float(np.mean(draws))
            r["random_std_change"] = float(np.std(draws))
    return rows


def _partial_spearman(x, y, z) -> float:
    """Spearman correlation of x and y with z's rank partialled out."""
    rx, ry, rz = (stats.rankdata(v) for v in (x, y, z))
    r = np.corrcoef([rx, ry, rz])
    num = r[0, 1] - r[0, 2] * r[1, 2]
    den = np.sqrt(max(1e-12, (1 - r[0, 2] ** 2) * (1 - r[1, 2] ** 2)))
    return float(num / den)


def sweep_correlations(rows: list[dict], dH, n_layers: int) -> dict:
    """Over the single-block sweep (blocks 1..L-1, which have a dH): Spearman's rho (with p) of each block's damage
    (minus its score change) with its dH and with its depth, of dH with depth, and the partial rho of damage and dH
    given depth. ``n`` blocks."""
    damage = {int(r["blocks"]): -r["score_change"] for r in rows if r["kind"] == "sweep"}
    blocks = [b for b in range(1, n_layers) if b in damage]
    if len(blocks) < 4:
        return {"n": len(blocks)}
    dmg = np.array([damage[b] for b in blocks])
    dh = np.array([dH[b - 1] for b in blocks])
    depth = (np.array(blocks) + 1) / n_layers
    out = {"n": len(blocks)}
    for name, (a, b) in {"damage_vs_dH": (dmg, dh), "damage_vs_abs_dH": (dmg, np.abs(dh)),
                         "damage_vs_depth": (dmg, depth), "dH_vs_depth": (dh, depth)}.items():
        rho, p = stats.spearmanr(a, b)
        out[name] = float(rho)
        out[name + "_p"] = float(p)
    out["damage_vs_abs_dH_given_depth"] = _partial_spearman(dmg, np.abs(dh), depth)
    return out


def plot_study(rows: list[dict], dH, n_layers: int, *, title: str, score_label: str):
    """Damage of each single-block skip (minus the score change) against relative depth, with dH on a second axis
    and the strategy conditions' blocks marked; a legend outside the data."""
    from ..plots import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.6, 3.8))
    sweep = sorted((int(r["blocks"]), -r["score_change"], r["score_change_ci95"]) for r in rows if r["kind"] == "sweep")
    if sweep:
        b, dmg, hw = map(np.array, zip(*sweep))
        ax.errorbar((b + 1) / n_layers, dmg, yerr=hw, fmt="o-", ms=3, lw=1.2, color="#4e79a7", capsize=2,
                    label="damage of skipping one block (±95 % CI)")
    ax.axhline(0, color="#888", lw=0.8)
    ax.set_xlabel("relative depth of the skipped block (block + 1) / L")
    ax.set_ylabel(f"damage: drop in\n{score_label}")
    ax2 = ax.twinx()
    ax2.plot((np.arange(1, n_layers) + 1) / n_layers, dH, color="#e15759", lw=1, ls="--", label="calibration dH (nats)")
    ax2.set_ylabel("dH = H_l - H_(l-1) [nats]", color="#e15759")
    for r in rows:
        if r["kind"] in ("expansion", "pruning") and r["condition"].endswith("top1"):
            blk = int(r["blocks"])
            ax.axvline((blk + 1) / n_layers, color="#59a14f" if r["kind"] == "expansion" else "#b07aa1", lw=1.5,
                       alpha=0.7, label=f"top {r['kind']} block {blk}")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.12, 1.0))
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
