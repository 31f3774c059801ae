"""k-NN evaluation of saved entropy profiles (paper's evaluation): k = 29 (Euclidean) on the mean
profile in stratified 10-fold CV (shuffled, seed 42), macro one-vs-rest ROC-AUC against a stratified
dummy baseline, paired t-test over folds. Writes FILE_tm_overall.csv (and FILE_tm_subject.csv with
--by_subject), prints a table and saves FILE_profiles.png (mean profile per class).

--label prompt: the class is the first word of each sample's prompt label (continuation, counting,
semantic); --label correct: MMLU correctness; any other per-sample key of the file is used as is.

Reads this library's files and the original code's (raw `activations`: the entropies are recomputed
with the model named in the file, --bs activations at a time).

Results files are read by the restricted unpickler: no code in a file runs (--trust_pickle lifts that for files
you wrote yourself; .npz files hold no pickle at all).

Example:
  python3 run_tests.py results/gemma-2-2b-it_tinystories_100.pkl --bs 8 --label "prompt"
  python3 run_tests.py results/gemma-2-2b-it_mmlu_base.pkl --bs 8
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..cli import load_inspector
from ..errors import UserError
from ..options import ArgumentParser, Flag, Integer, Option, Text, add_flags, group, option, parse_checked

OVERALL_COLUMNS = ["model_roc_auc", "baseline_roc_auc", "improvement", "p_value", "significant",
                   "model_auc_by_fold", "baseline_auc_by_fold", "correct"]


#: this command's own options (the shared ones are declared in :mod:`model_inspector.options`)
OPTIONS = (
    Option("bs", 8, "batch size when entropies are recomputed from raw activations", Integer(min=1), group="evaluate"),
    Option("by_subject", False, "also evaluate each MMLU subject (k=25, distance weights)", Flag(), group="evaluate",
           switch=True),
    Option("model", None, "model for files with raw activations (default: the file's)", Text(), group="evaluate"),
)
SHARED = ["label", "num_windows", "metric", "k", "folds", "no_plot", "out_dir", "trust_pickle"] + [
    o.name for o in group("model")]


def build_parser():
    p = ArgumentParser(description=__doc__)
    p.add_argument("file", help="results file (.pkl from the experiment scripts, or .npz)")
    add_flags(p, SHARED, {"label": "correct"}, extra=OPTIONS)
    return p


def parse_args(argv=None):
    return parse_checked(build_parser(), argv, [option(n) for n in SHARED] + list(OPTIONS))


def labels_of(data, label: str) -> np.ndarray:
    """Class labels for ``--label`` (``data``: :class:`~model_inspector.results.Results` or the paper's
    dict). ``prompt``: the first word of each prompt label."""
    from ..results import Results

    res = Results.from_dict(data) if isinstance(data, dict) else data
    if label not in res:
        raise UserError(f"unknown label {label!r}; this file has: {', '.join(res.keys())} (choose one with --label)")
    values = res[label]
    if label == "prompt":
        return np.array([str(v).split("_")[0] for v in values])
    return np.array([v if isinstance(v, (str, int, np.integer, bool, np.bool_)) else str(v) for v in values])


def ensure_entropy(data: dict, args) -> None:
    """Original-format files hold raw activations [T, L, d]: recompute Shannon entropies [T, L]."""
    from ..errors import ResultsFileError
    from ..results import Results

    if args.metric is None:  # the default: entropy, else the file's first metric
        keys = Results.from_dict(data).metric_keys if isinstance(data, dict) else data.metric_keys
        args.metric = "entropy" if "entropy" in keys or not keys else keys[0]
    if args.metric in data:
        return
    if "activations" not in data:
        raise ResultsFileError(f"{args.file}: no '{args.metric}' profiles and no raw activations")
    name = args.model or (data.get("model") or [None])[0]
    if not name:
        raise UserError("the file names no model; pass --model")
    mi = load_inspector(argparse.Namespace(**{**vars(args), "model": name}))  # the scripts' loading path
    acts = data["activations"]
    out = []
    for i in range(0, len(acts), args.bs):
        import torch

        batch = torch.as_tensor(np.stack([np.asarray(a, dtype=np.float32) for a in acts[i : i + args.bs]]))
        out.extend(mi.lens.metrics(batch.to(mi.device), ["shannon"])["entropy"].cpu().numpy())
    data["entropy"] = out


def evaluate(data: dict, args) -> tuple:
    """``(overall DataFrame, per-subject DataFrame or None, features X, labels y)``."""
    import pandas as pd

    from ..evaluation import InsufficientDataError, evaluate_knn, features_from_results

    y = labels_of(data, args.label)  # check the label before any (slow) recomputation
    ensure_entropy(data, args)
    X = features_from_results(data, args.metric, args.num_windows)
    res = evaluate_knn(X, y, k=args.k, n_splits=args.folds)
    pos = res["classes"][-1]
    balance = "|".join(f"{c}:{n / res['n_samples']:.3f}" for c, n in zip(res["classes"], res["class_counts"]))
    # binary: the fraction of positive labels (the paper's column); more classes: the class balance
    res["correct"] = float(np.mean(y.astype(str) == str(pos))) if len(res["classes"]) == 2 else balance
    overall = pd.DataFrame([{c: res[c] for c in OVERALL_COLUMNS} | {
        "label": args.label, "k": args.k, "k_used": res["k_used"], "folds": args.folds, "n_samples": res["n_samples"],
        "classes": "|".join(res["classes"]), "class_balance": balance, "chance_accuracy": max(res["class_counts"]) /
        res["n_samples"], "model_accuracy": res["model_accuracy"], "baseline_accuracy": res["baseline_accuracy"]}])
    subject = None
    if args.by_subject:
        if "subject" not in data:
            raise UserError("--by_subject: this file has no 'subject' labels (MMLU files do)")
        rows = []
        subjects = np.array(data["subject"])
        for s in sorted(set(subjects)):
            sel = subjects == s
            counts = np.unique(y[sel], return_counts=True)[1]
            row = {"subject": s, "n_samples": int(sel.sum()), "correct": float(np.mean(y[sel].astype(str) == str(pos)))}
            folds = int(min(args.folds, counts.min())) if len(counts) > 1 else 0
            if folds < 2:
                row["note"] = "skipped: a class has fewer than 2 samples"
            else:
                try:
                    r = evaluate_knn(X[sel], y[sel], k=25, n_splits=folds, weights="distance")
                    row.update({c: r[c] for c in OVERALL_COLUMNS if c != "correct"}, folds=folds)
                except InsufficientDataError as exc:
                    row["note"] = f"skipped: {exc}"
            rows.append(row)
        subject = pd.DataFrame(rows)
    return overall, subject, X, y


def main(argv=None) -> int:
    args = parse_args(argv)
    import pandas as pd

    from ..storage import preflight_output
    from ..results import Results
    from ..errors import ResultsFileError

    src = Path(args.file)
    stem = str(Path(args.out_dir) / src.stem if args.out_dir else src.with_suffix(""))
    preflight_output(f"{stem}_tm_overall.csv")  # before any (slow) work
    data = Results.load(args.file, trust=args.trust_pickle)
    if len(data) == 0:
        raise ResultsFileError(f"{args.file} holds no samples")
    overall, subject, X, y = evaluate(data, args)
    overall.to_csv(f"{stem}_tm_overall.csv", index=False)
    r = overall.iloc[0]
    print(f"{args.file}: {r['n_samples']} samples, label '{args.label}' ({r['class_balance']}), {args.folds}-fold CV")
    if r["k_used"] < args.k:
        print(f"  note: k reduced from {args.k} to {r['k_used']}: the training folds hold too few samples "
              "(lower -k/--k or profile more samples)")
    print(f"  k-NN (k={r['k_used']}) ROC-AUC   {r['model_roc_auc']:.3f}   accuracy {r['model_accuracy']:.3f} "
          f"(chance {r['chance_accuracy']:.3f})")
    print(f"  stratified baseline ROC-AUC {r['baseline_roc_auc']:.3f}   accuracy {r['baseline_accuracy']:.3f}")
    print(f"  improvement {r['improvement']:+.3f}, paired t-test p = {r['p_value']:.2e} "
          f"({'significant' if r['significant'] else 'not significant'} at 0.05)")
    if len(r["classes"].split("|")) == 2:
        print(f"  fraction of '{r['classes'].split('|')[-1]}' labels: {float(r['correct']):.3f}")
    print(f"  wrote {stem}_tm_overall.csv")
    if subject is not None:
        subject.to_csv(f"{stem}_tm_subject.csv", index=False)
        with pd.option_context("display.width", 160, "display.max_rows", 100):
            cols = [c for c in ("subject", "n_samples", "correct", "model_roc_auc", "baseline_roc_auc", "p_value", "note")
                    if c in subject]
            print(subject[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"  wrote {stem}_tm_subject.csv")
    if not args.no_plot:
        from model_inspector.plots import plot_class_profiles, save_figure

        L = X.shape[1] // (args.num_windows or 1)
        names = {"0": "incorrect", "1": "correct"} if args.label == "correct" else None
        fig = plot_class_profiles(X[:, :L] if args.num_windows else X, y, class_names=names,
                                  title=f"{Path(args.file).name}: mean {args.metric} profile by {args.label}")
        for p in save_figure(fig, f"{stem}_profiles.png"):
            print(f"  wrote {p}")
    return 0

