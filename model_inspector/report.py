"""The reproduction report: one row per claim of the paper and per model, with the paper's figure, ours (with n
and its spread), the controls, and a verdict in words: **reproduced**, **not reproduced at this scale**, or
**explained by a control**. Written as ``report.md`` and ``report.html`` (every text escaped; the figures are the
steps' own PNGs) beside the outputs of :func:`model_inspector.reproduce.reproduce`.

How a verdict is decided (also printed in the report):

* identification (task, format, correctness): the paper's feature must beat the stratified baseline (paired t-test
  over folds, p < 0.05) and the label permutations (empirical p < 0.05), and stay significant with folds grouped by
  story where the experiment groups its prompts; a control (prompt length alone, the last layer alone, the same
  prompts through random weights) that is itself significant and not significantly below the feature *explains*
  the result; a significant result under the paper's range is "not reproduced at this scale";
* (i) expansion and pruning: a top expansion (dH > 0) and a top pruning (dH < 0) transition whose 95 % CIs exclude
  0 and whose bootstrap stability is at least 0.8; the random-weights run showing the same top transitions with at
  least half the |dH| explains them;
* (ii) family and depth: within-family agreement above between-family agreement (Mann-Whitney p < 0.05); with one
  model per family it cannot be tested;
* (iv) skipping: the top expansion blocks' damage above the top pruning blocks' (paired p < 0.05) reproduces it;
  if the expansion blocks are no more damaging than random blocks of the same number (empirical p >= 0.05), random
  blocks explain it.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

__all__ = ["write_report", "verdicts", "VERDICTS"]

VERDICTS = ("reproduced", "not reproduced at this scale", "explained by a control")


def _paper() -> dict:
    from importlib import resources

    with resources.files("model_inspector").joinpath("data/paper_claims.json").open() as fh:
        data = json.load(fh)
    return {"source": data["source"], **{c["id"]: c for c in data["claims"]}}


def _csv(pattern_dir: Path, pattern: str):
    import pandas as pd

    hits = sorted(pattern_dir.glob(pattern), key=lambda p: p.stat().st_mtime)
    return pd.read_csv(hits[-1]) if hits else None


def _f(v, nd=3) -> str:
    try:
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{float(v):.{nd}f}"
    except (TypeError, ValueError):
        return str(v)


def _p(v) -> str:
    return "n/a" if v is None else f"{float(v):.2g}"


def paper_range(label: str, metadata: dict):
    """The paper's ROC-AUC range for an evaluation by ``label`` of a file (task classes of TinyStories, formats),
    or ``None`` where the paper gives none."""
    dataset = (metadata.get("identity") or {}).get("dataset") or (metadata.get("config") or {}).get("dataset")
    claims = _paper()
    if dataset == "tinystories" and label in ("prompt", "task"):
        return claims["iii-task"]["range"]
    if label == "format":
        return claims["iii-format"]["range"]
    return None


# ------------------------------------------------------------------------------------------------ verdicts
def identification(rows, paper_range=None, what="ROC-AUC") -> dict:
    """The verdict of an identification experiment from its controls table (``evaluate --controls`` rows)."""
    if rows is None or not len(rows):
        return {"verdict": "not reproduced at this scale", "ours": "not evaluable at this size", "controls": ""}
    by = {r["feature"]: r for r in rows.to_dict("records")}
    prof = by["profile"]
    ours = (f"{what} {_f(prof['roc_auc'])} ± {_f(prof['roc_auc_std'])} (std over {prof['folds']} folds; n = "
            f"{prof['n_samples']}; baseline {_f(prof['baseline_roc_auc'])}, p = {_p(prof['p_vs_baseline'])})")
    ctl, explained = [], []
    names = {"last_layer": "last layer alone", "no_last_layer": "without the last layer",
             "prompt_length": "prompt length alone", "control_file": "random weights", "profile_grouped":
             "folds grouped by story"}
    for key, name in names.items():
        r = by.get(key)
        if r is None:
            continue
        ctl.append(f"{name} {_f(r['roc_auc'])} ± {_f(r['roc_auc_std'])} ({r['vs_baseline']} than the baseline, p "
                   f"{_p(r['p_vs_baseline'])}"
                   + (f", vs feature {r.get('vs_reference')}, p {_p(r.get('p_vs_reference'))}"
                      if isinstance(r.get("p_vs_reference"), float) and not math.isnan(r["p_vs_reference"]) else "")
                   + ")")
        if key in ("last_layer", "prompt_length", "control_file") and r["significant"] and r["vs_baseline"] == "higher":
            p_ref = r.get("p_vs_reference")
            if r.get("vs_reference") in ("higher", "equal") or (isinstance(p_ref, float) and p_ref >= 0.05):
                explained.append(f"{name} reaches {_f(r['roc_auc'])} against the feature's {_f(prof['roc_auc'])}")
    perm = by.get("label_permutations")
    if perm is not None:
        ctl.append(f"{int(perm['n_permutations'])} label permutations {_f(perm['roc_auc'])} (95th percentile "
                   f"{_f(perm['roc_auc_p95'])}; empirical p {_p(perm['p_reference_vs_permutations'])})")
    grouped = by.get("profile_grouped")
    out = {"ours": ours, "controls": "; ".join(ctl), "value": prof["roc_auc"]}
    beats_baseline = bool(prof["significant"] and prof["vs_baseline"] == "higher")
    beats_perm = perm is None or perm["p_reference_vs_permutations"] < 0.05
    if not (beats_baseline and beats_perm):  # say which test it fails
        failed = []
        if not beats_baseline:
            failed.append(f"the baseline (p {_p(prof['p_vs_baseline'])})")
        if not beats_perm:
            failed.append(f"the permuted labels (empirical p {_p(perm['p_reference_vs_permutations'])})")
        out["verdict"], out["why"] = VERDICTS[1], f"not significantly better than {' or '.join(failed)} at this size"
    elif explained:
        out["verdict"], out["why"] = VERDICTS[2], "; ".join(explained)
    elif grouped is not None and not grouped["significant"]:
        out["verdict"], out["why"] = VERDICTS[2], (f"with folds grouped by story it falls to "
                                                    f"{_f(grouped['roc_auc'])} (p {_p(grouped['p_vs_baseline'])}): "
                                                    "the same stories on both sides of a fold carry it")
    elif paper_range and prof["roc_auc"] < paper_range[0]:
        out["verdict"], out["why"] = VERDICTS[1], (f"significant, but {_f(prof['roc_auc'])} is under the paper's "
                                                    f"{paper_range[0]}-{paper_range[1]}")
    else:
        out["verdict"], out["why"] = VERDICTS[0], "above the baseline and the permutations, not matched by a control"
    return out


def expansion_pruning(strat, control) -> dict:
    """Claim (i) from a ``strategies`` CSV of the model and of its random-weights run (class ``overall``)."""
    if strat is None:
        return {"verdict": VERDICTS[1], "ours": "not evaluated", "controls": ""}

    def top(df, kind, variant="interior"):
        sel = df[(df["class"] == "overall") & (df["kind"] == kind) & (df["variant"] == variant) & (df["rank"] == 1)]
        return None if sel.empty or sel["layer"].isna().all() else sel.iloc[0]

    e, p = top(strat, "expansion"), top(strat, "pruning")
    parts = []
    for name, r in (("expansion", e), ("pruning", p)):
        if r is None:
            parts.append(f"no {name} transition")
        else:
            parts.append(f"{name}: layer {int(r['layer'])} (depth {_f(r['relative_depth'], 2)}), mean dH "
                         f"{float(r['mean_dH']):+.3f} nats [95% CI {float(r['ci95_low']):+.3f}, "
                         f"{float(r['ci95_high']):+.3f}]"
                         f", stability {_f(r['bootstrap_stability'], 2)} (bootstrap) / {_f(r['sample_stability'], 2)} "
                         "(samples)")
    n = next((int(r["n_samples"]) for r in (e, p) if r is not None), 0)
    out = {"ours": "; ".join(parts) + f" (interior transitions; n = {n} samples)", "controls": ""}
    ok = all(r is not None and (r["ci95_low"] > 0 if k == "expansion" else r["ci95_high"] < 0)
             and r["bootstrap_stability"] >= 0.8 for k, r in (("expansion", e), ("pruning", p)))
    same = []
    if control is not None:
        ce, cp = top(control, "expansion"), top(control, "pruning")
        out["controls"] = "random weights: " + "; ".join(
            f"{k} layer {int(r['layer'])}, dH {float(r['mean_dH']):+.2g} nats [95% CI {float(r['ci95_low']):+.2g}, "
            f"{float(r['ci95_high']):+.2g}]" if r is not None else f"no {k}"
            for k, r in (("expansion", ce), ("pruning", cp)))
        for real, ctl in ((e, ce), (p, cp)):
            if real is not None and ctl is not None and int(real["layer"]) == int(ctl["layer"]) and abs(
                    float(ctl["mean_dH"])) >= 0.5 * abs(float(real["mean_dH"])):
                same.append(int(real["layer"]))
    if not ok:
        out["verdict"], out["why"] = VERDICTS[1], "a phase is missing, its CI includes 0 or it is unstable"
    elif same:
        out["verdict"], out["why"] = VERDICTS[2], (f"random weights show the same transition(s) at layer(s) {same} "
                                                    "with at least half the |dH|: the architecture, not training")
    else:
        out["verdict"], out["why"] = VERDICTS[0], "stable expansion and pruning transitions, unlike random weights"
    return out


def families(csv) -> dict:
    """Claim (ii) from ``family_agreement.csv``."""
    if csv is None or not len(csv):
        return {"verdict": VERDICTS[1], "ours": "one model: nothing to compare", "controls": "",
                "why": "profile at least two models (two sizes of one family to test depth rescaling)"}
    within, between = csv[csv["same_family"]], csv[~csv["same_family"]]
    ours = "; ".join(f"{r['model_a']} (L={r['layers_a']}) vs {r['model_b']} (L={r['layers_b']}): r {r['pearson_r']:+.3f} "
                     f"[95% CI {r['r_ci_low']:+.3f}, {r['r_ci_high']:+.3f}], RMSE {r['rmse_nats']:.3f} nats"
                     for _, r in csv.iterrows())
    out = {"ours": ours, "controls": "between-family pairs are the comparison"}
    if within.empty:
        out["verdict"], out["why"] = VERDICTS[1], ("one model per family: depth-rescaling invariance within a family "
                                                   "cannot be tested (profile two sizes of one family)")
    else:
        from scipy.stats import mannwhitneyu

        p = mannwhitneyu(within["pearson_r"], between["pearson_r"], alternative="greater").pvalue if len(between) else 1
        good = within["pearson_r"].mean() > (between["pearson_r"].mean() if len(between) else -1) and p < 0.05
        out["verdict"] = VERDICTS[0] if good else VERDICTS[1]
        out["why"] = f"within-family r {within['pearson_r'].mean():+.3f} vs between {between['pearson_r'].mean():+.3f} (p {_p(p)})"
    return out


def skipping(summary) -> dict:
    """Claim (iv) from a skip-layers ``_summary.json``."""
    if not summary:
        return {"verdict": VERDICTS[1], "ours": "not evaluated", "controls": ""}
    comp, conds = summary.get("comparison") or {}, {c["condition"]: c for c in summary["conditions"]}
    none = conds.get("none", {})
    acc = (f", accuracy {_f(none['accuracy'])} [95% CI {_f(none['accuracy_ci_low'])}, {_f(none['accuracy_ci_high'])}]"
           if "accuracy" in none else "")
    parts = [f"no skip: {summary['score']} {_f(none.get('score'))}{acc} (n = {summary['n_items']} items)"]
    for name in (comp.get("expansion"), comp.get("pruning")):
        c = conds.get(name)
        if c:
            parts.append(f"{name} (blocks {c['blocks']}): change {c['score_change']:+.3f} ± {c['score_change_ci95']:.3f}"
                         + (f", accuracy {c['accuracy_change']:+.3f} (McNemar p {_p(c.get('p_accuracy'))})"
                            if "accuracy_change" in c else "")
                         + (f", {c['n_random']} random draws of as many blocks {c['random_mean_change']:+.3f} ± "
                            f"{c['random_std_change']:.3f} (std), empirical p vs random {_p(c['p_vs_random'])}"
                            if "p_vs_random" in c else ""))
    sw = summary.get("sweep") or {}
    ctl = (f"sweep of {sw['n']} blocks: rho(damage, |dH|) {sw['damage_vs_abs_dH']:+.2f} (p {_p(sw['damage_vs_abs_dH_p'])}),"
           f" rho(damage, depth) {sw['damage_vs_depth']:+.2f} (p {_p(sw['damage_vs_depth_p'])}), partial rho(damage, "
           f"|dH| given depth) {sw['damage_vs_abs_dH_given_depth']:+.2f}") if sw.get("n", 0) >= 4 else ""
    out = {"ours": "; ".join(parts), "controls": ctl}
    if not comp:
        out["verdict"], out["why"] = VERDICTS[1], "no expansion or no pruning set to compare"
        return out
    d, p = comp["score_diff"], comp["p_score"]
    exp = conds.get(comp["expansion"], {})
    if d < 0 and p < 0.05:
        if exp.get("p_vs_random", 0) >= 0.05:
            out["verdict"], out["why"] = VERDICTS[2], (f"expansion hurts more than pruning ({d:+.3f}, p {_p(p)}), but "
                                                        "no more than random blocks of the same number")
        else:
            out["verdict"], out["why"] = VERDICTS[0], f"expansion blocks hurt more than pruning blocks ({d:+.3f}, p {_p(p)})"
    else:
        out["verdict"] = VERDICTS[1]
        out["why"] = (f"expansion minus pruning {d:+.3f} ± {comp['score_diff_ci95']:.3f} (p {_p(p)}, n = "
                      f"{comp['n_items']}): " + ("pruning hurts more" if d > 0 and p < 0.05 else "no difference shown"))
    return out


def verdicts(out_dir: str | Path, manifest: dict) -> list[dict]:
    """One row per claim and model: ``claim``, ``model``, ``paper``, ``ours``, ``controls``, ``verdict``, ``why``."""
    out_dir = Path(out_dir)
    ev = out_dir / "evaluations"
    paper = _paper()
    rows = []

    def add(claim, model, paper_text, result):
        rows.append({"claim": claim, "model": model, "paper": paper_text, **result})

    for model, steps in manifest["models"].items():
        if "tasks" in steps:
            stem = Path(steps["tasks"]["results"]).stem
            ctl = _csv(ev, f"{stem}_tm_prompt_k*_controls.csv")
            rng = paper["iii-task"]["range"]
            add("(iii) task identification", model, f"ROC-AUC {rng[0]}-{rng[1]} ({paper['iii-task']['models']})",
                identification(ctl, rng))
        if "strategies" in steps:
            real = _csv(ev, f"{Path(steps['strategies']['results']).stem}_strategies_prompt.csv")
            ctrl = _csv(ev, f"{Path(steps['strategies']['control']).stem}_strategies_prompt.csv")
            add("(i) expansion and pruning", model, paper["i"]["statement"], expansion_pruning(real, ctrl))
        if "formats" in steps:
            stem = Path(steps["formats"]["results"]).stem
            ctl = _csv(ev, f"{stem}_tm_format_k*_controls.csv")
            rng = paper["iii-format"]["range"]
            add("(iii) format identification", model, f"ROC-AUC {rng[0]}-{rng[1]}", identification(ctl, rng))
        if "mmlu" in steps:
            for grading, f in steps["mmlu"]["results"].items():
                ctl = _csv(ev, f"{Path(f).stem}_tm_correct_k*_controls.csv")
                add(f"correctness prediction (MMLU, {grading} grading)", model, "profiles predict answer correctness",
                    identification(ctl))
        if "skip" in steps:
            p = Path(steps["skip"]["summary"])
            add("(iv) layer skipping", model, paper["iv"]["statement"],
                skipping(json.loads(p.read_text()) if p.exists() else None))
    if "family_across" in manifest or any("family" in s for s in manifest["models"].values()):
        import pandas as pd

        p = Path(manifest.get("family_across", {}).get("csv", ev / "family_agreement.csv"))
        add("(ii) family, depth rescaling", ", ".join(manifest["models"]), paper["ii"]["statement"],
            families(pd.read_csv(p) if p.exists() else None))
    return rows


# ------------------------------------------------------------------------------------------------ writing
def _machine() -> str:
    import os
    import platform

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average {load[0]:.2f} / "
            f"{load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min) when the report was written")


def write_report(out_dir: str | Path, manifest: dict) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into ``out_dir``; returns their paths."""
    from .reproduce import paper_scale_estimate
    from .storage import atomic_write_bytes

    out_dir = Path(out_dir)
    rows = verdicts(out_dir, manifest)
    est = paper_scale_estimate(manifest)
    paper = _paper()
    times = {m: {k: v["seconds"] for k, v in s.items()} for m, s in manifest["models"].items()}
    figures = sorted(str(p.relative_to(out_dir)) for p in (out_dir / "evaluations").glob("*.png"))
    figures += sorted(str(p.relative_to(out_dir)) for p in (out_dir / "results").glob("*_sweep.png"))
    errors = [f"{m} {step}: {e}" for m, s in manifest["models"].items() for step, v in s.items() for e in v.get("errors", [])]
    md = [f"# Reproduction report: Entropy-Lens ({paper['source']})", "",
          f"Scale **{manifest['scale']}** ({', '.join(f'{k}={v}' for k, v in manifest['sizes'].items())}); models "
          f"{', '.join(manifest['models'])}; run {manifest['started']} to {manifest.get('finished', '?')} on "
          f"{_machine()}. Entropies in nats.", "", "## Claims", "",
          "| claim | model | the paper | ours | controls | verdict |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        cells = [r["claim"], r["model"], r["paper"], r["ours"], r["controls"] or "-",
                 f"**{r['verdict']}**: {r.get('why', '')}"]
        md.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    keys = sorted({k for t in times.values() for k in t})
    md += ["", "## Time", "", "| model | " + " | ".join(keys) + " | total |", "| --- |" + " --- |" * (len(keys) + 1)]
    for m, t in times.items():
        md.append(f"| {m} | " + " | ".join(f"{t.get(k, 0):.0f} s" for k in keys) + f" | {sum(t.values()):.0f} s |")
    md += ["", "Estimated at the paper's scale from these rates (per generated token; per item for skip-layers): " +
           "; ".join(f"{m}: {e['total'] / 3600:.1f} h" for m, e in est.items()), ""]
    if errors:
        md += ["## Steps that could not be evaluated at this size", ""] + [f"- {e}" for e in errors] + [""]
    md += ["## How verdicts are decided", "", (__doc__.split("How a verdict is decided (also printed in the report):")[1]
                                              .strip()), "", "## Figures", ""] + [f"![{f}]({f})" for f in figures]
    md += ["", "## Commands", "", "```"] + [c for s in manifest["models"].values() for v in s.values()
                                           for c in v["commands"]] + manifest.get("family_across", {}).get("commands", []) + ["```", ""]
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    atomic_write_bytes(md_path, "\n".join(md).encode())
    esc = html.escape
    body = [f"<h1>{esc(md[0][2:])}</h1>", f"<p>{esc(md[2].replace('**', ''))}</p>", "<h2>Claims</h2><div class='wide'><table><thead><tr>"
            + "".join(f"<th>{h}</th>" for h in ("claim", "model", "the paper", "ours", "controls", "verdict"))
            + "</tr></thead><tbody>"]
    for r in rows:
        cls = {VERDICTS[0]: "ok", VERDICTS[1]: "no", VERDICTS[2]: "ctl"}[r["verdict"]]
        body.append("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in (r["claim"], r["model"], r["paper"], r["ours"],
                                                                          r["controls"] or "-"))
                    + f"<td class='{cls}'><b>{esc(r['verdict'])}</b>: {esc(r.get('why', ''))}</td></tr>")
    body.append("</tbody></table></div><h2>Time</h2><table><tbody>")
    for m, t in times.items():
        body.append(f"<tr><td>{esc(m)}</td>" + "".join(f"<td>{esc(k)}: {t[k]:.0f} s</td>" for k in t)
                    + f"<td>total {sum(t.values()):.0f} s; paper scale about {est[m]['total'] / 3600:.1f} h</td></tr>")
    body.append("</tbody></table>")
    if errors:
        body.append("<h2>Steps that could not be evaluated at this size</h2><ul>" + "".join(
            f"<li>{esc(e)}</li>" for e in errors) + "</ul>")
    rules = [" ".join(item.split()).replace("*", "")
             for item in ("\n" + md[md.index("## How verdicts are decided") + 2]).split("\n* ") if item.strip()]
    body.append("<h2>How verdicts are decided</h2><ul>" + "".join(f"<li>{esc(r)}</li>" for r in rules) + "</ul>")
    body.append("<h2>Figures</h2>" + "".join(f"<figure><img src='{esc(f, quote=True)}' alt='{esc(f, quote=True)}'>"
                                            f"<figcaption>{esc(f)}</figcaption></figure>" for f in figures))
    style = ("body{font:14px/1.45 system-ui,sans-serif;margin:16px;max-width:1400px;color:#1d2430}table{border-collapse:"
             "collapse;width:100%}td,th{border:1px solid #dde1e7;padding:4px 6px;vertical-align:top;text-align:left;"
             "overflow-wrap:break-word}.wide{overflow-x:auto}.wide td:nth-child(3),.wide td:nth-child(6){min-width:9em}th{background:#f3f4f6}td.ok{background:#e6f4ea}td.no{background:#fff6d6}td.ctl"
             "{background:#fde8e8}img{max-width:100%}figure{display:inline-block;max-width:48%;margin:4px}pre{white-"
             "space:pre-wrap}")
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(md[0][2:])}</title><style>{style}"
            f"</style></head><body>{''.join(body)}</body></html>")
    atomic_write_bytes(html_path, page.encode())
    return md_path, html_path
